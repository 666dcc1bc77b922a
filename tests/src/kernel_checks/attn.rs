//! The attention kernels: tiles of a block of `ATTN_LANES` queries against `ATTN_TILE` keys,
//! the softmax of the kept slots, and the top-k selection over blocks of keys.

use super::tol::{Tol, assert_all_close, assert_close, bits, dot_bound, mag};
use topkit::kernels::attention::{
    self as attn, ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, AttnTopkWork,
};
use topkit::kernels::{AttnScoresArgs, AttnSoftmaxArgs, AttnTile, AttnTopkArgs};

/// Transposed queries, keys and values for the attention tiles.
#[derive(Clone, Debug)]
pub struct AttnKeys {
    /// Head width.
    pub hd: usize,
    /// Keys in the tile (0 to `ATTN_TILE`).
    pub nk: usize,
    /// Row stride of keys and values (`>= hd`).
    pub stride: usize,
    /// Queries, transposed: `qt[d * ATTN_LANES + lane]`.
    pub qt: Vec<f32>,
    /// Key rows.
    pub k: Vec<f32>,
    /// Value rows.
    pub v: Vec<f32>,
    /// Per key, the lanes that see it.
    pub vis: [u16; ATTN_TILE],
    /// Score scale.
    pub scale: f32,
}

impl AttnKeys {
    /// The generic scores, key-major (`s[key * ATTN_LANES + lane]`).
    pub fn scores(&self) -> [f32; ATTN_BLOCK] {
        let mut s = [0f32; ATTN_BLOCK];
        attn::attn_scores_tile(&self.args(), &mut s);
        s
    }

    /// The kernels' view of the queries and keys.
    pub fn args(&self) -> AttnScoresArgs<'_> {
        AttnScoresArgs {
            qt: &self.qt,
            hd: self.hd,
            k: &self.k,
            stride: self.stride,
            nk: self.nk,
            scale: self.scale,
        }
    }

    /// The kernels' view of a key-major score tile of these keys.
    pub fn tile<'a>(&'a self, s: &'a [f32; ATTN_BLOCK]) -> AttnTile<'a> {
        AttnTile {
            s,
            vis: &self.vis,
            nk: self.nk,
        }
    }

    /// The [`Tol::Bound`] bound of a score: `(hd + 2) * EPS * sum_d |q_d k_d| * scale`.
    fn score_bound(&self, key: usize, lane: usize) -> f64 {
        let q = (0..self.hd).map(|d| self.qt[d * ATTN_LANES + lane]);
        let k = self.k[key * self.stride..][..self.hd].iter().copied();
        dot_bound(self.hd, 2.0, mag(q, k) * self.scale as f64)
    }
}

/// A key-major score tile kernel: `attn_scores_tile`'s signature.
pub trait ScoresTileFn: Fn(&AttnScoresArgs<'_>, &mut [f32; ATTN_BLOCK]) {}
impl<F: Fn(&AttnScoresArgs<'_>, &mut [f32; ATTN_BLOCK])> ScoresTileFn for F {}

/// A top-k block selection kernel: `attn_topk_block`'s signature.
pub trait TopkBlockFn:
    Fn(&AttnTopkArgs<'_>, &mut [f32], &mut [u16], usize, &mut AttnTopkWork<'_>) -> usize
{
}
impl<F> TopkBlockFn for F where
    F: Fn(&AttnTopkArgs<'_>, &mut [f32], &mut [u16], usize, &mut AttnTopkWork<'_>) -> usize
{
}

/// `attn_scores_tile`: `f` within `tol` ([`Tol::Bound`]: `(hd + 2) * EPS * sum_d |q_d k_d| *
/// scale`) of the generic scores, entries past `nk` untouched.
pub fn attn_scores_tile(c: &AttnKeys, f: impl ScoresTileFn, tol: Tol) {
    let (mut want, mut got) = ([f32::NAN; ATTN_BLOCK], [f32::NAN; ATTN_BLOCK]);
    attn::attn_scores_tile(&c.args(), &mut want);
    f(&c.args(), &mut got);
    for j in 0..ATTN_TILE {
        for l in 0..ATTN_LANES {
            let (g, w) = (got[j * ATTN_LANES + l], want[j * ATTN_LANES + l]);
            let at = || format!("hd {} nk {} key {j} lane {l}", c.hd, c.nk);
            if j < c.nk {
                assert_close(g, w, tol, c.score_bound(j, l), at);
            } else {
                assert_eq!(g.to_bits(), w.to_bits(), "{}: past nk", at());
            }
        }
    }
}

/// `attn_scores_rows` of a tile over rows of `rs`, `(keys, rs)`: `f` within `tol` (as
/// [`attn_scores_tile`]) of the generic rows, bit for bit its own key-major `tile` kernel
/// transposed, and nothing written past `nk`.
pub fn attn_scores_rows(
    c: &(AttnKeys, usize),
    f: impl Fn(&AttnScoresArgs<'_>, &mut [f32], usize),
    tile: impl ScoresTileFn,
    tol: Tol,
) {
    let (b, rs) = (&c.0, c.1);
    let mut want = vec![f32::NAN; ATTN_LANES * rs];
    let mut got = want.clone();
    attn::attn_scores_rows(&b.args(), &mut want, rs);
    f(&b.args(), &mut got, rs);
    let mut own = [0f32; ATTN_BLOCK];
    tile(&b.args(), &mut own);
    for l in 0..ATTN_LANES {
        for j in 0..rs {
            let (g, w) = (got[l * rs + j], want[l * rs + j]);
            let at = || format!("hd {} nk {} rs {rs} lane {l} key {j}", b.hd, b.nk);
            if j >= b.nk {
                assert!(g.is_nan(), "{}: written past nk", at());
                continue;
            }
            let tile = own[j * ATTN_LANES + l].to_bits();
            assert_eq!(g.to_bits(), tile, "{}: not its tile kernel's bits", at());
            assert_close(g, w, tol, b.score_bound(j, l), at);
        }
    }
}

/// One tile of scores and values for the dense (softmax-weighted) sums.
#[derive(Clone, Debug)]
pub struct DenseTile {
    /// Scores, key-major.
    pub s: Vec<f32>,
    /// Per key, the lanes that see it.
    pub vis: [u16; ATTN_TILE],
    /// Keys in the tile.
    pub nk: usize,
    /// Value rows.
    pub v: Vec<f32>,
    /// Row stride of the values.
    pub stride: usize,
}

/// Tiles in a row of heads of `hd`, from the empty state.
#[derive(Clone, Debug)]
pub struct DenseCase {
    /// Head width.
    pub hd: usize,
    /// The tiles, in order.
    pub tiles: Vec<DenseTile>,
}

/// `attn_dense_tile` over the tiles in a row (later ones rescale): after each tile, `f`
/// leaves the generic state. [`Tol::Bits`]: the bits of the maxima, sums and accumulators;
/// [`Tol::Abs`]`(e)`: the same maxima, sums within `e` relative, each lane's normalised output
/// (accumulator / sum) within `e`.
pub fn attn_dense_tile(
    c: &DenseCase,
    f: impl Fn(&AttnTile<'_>, &[f32], usize, usize, &mut AttnDenseState<'_>),
    tol: Tol,
) {
    let hd = c.hd;
    let (mut wa, mut ga) = (vec![0f32; ATTN_LANES * hd], vec![0f32; ATTN_LANES * hd]);
    let (mut want, mut got) = (AttnDenseState::new(&mut wa), AttnDenseState::new(&mut ga));
    for (i, t) in c.tiles.iter().enumerate() {
        let s: &[f32; ATTN_BLOCK] = t.s.as_slice().try_into().unwrap();
        let tile = AttnTile {
            s,
            vis: &t.vis,
            nk: t.nk,
        };
        attn::attn_dense_tile(&tile, &t.v, t.stride, hd, &mut want);
        f(&tile, &t.v, t.stride, hd, &mut got);
        let at = format!("hd {hd} tile {i}");
        let n = ATTN_LANES * hd;
        assert_eq!(bits(&got.max), bits(&want.max), "{at}: max");
        match tol {
            Tol::Bits => {
                assert_eq!(bits(&got.sum), bits(&want.sum), "{at}: sum");
                assert_eq!(bits(&got.acc[..n]), bits(&want.acc[..n]), "{at}: acc");
            }
            Tol::Abs(e) => {
                for l in 0..ATTN_LANES {
                    let (gs, ws) = (got.sum[l], want.sum[l]);
                    assert_close(gs, ws, Tol::Rel(e), 0.0, || format!("{at} lane {l}: sum"));
                    if ws > 0.0 {
                        for d in 0..hd {
                            let g = got.acc[l * hd + d] / gs;
                            let w = want.acc[l * hd + d] / ws;
                            assert_close(g, w, tol, 0.0, || format!("{at} lane {l} dim {d}"));
                        }
                    }
                }
            }
            _ => panic!("attn_dense_tile takes Tol::Bits or Tol::Abs"),
        }
    }
}

/// `attn_candidates` on a tile's scores with per-lane thresholds and a mask of the lanes whose
/// slots are not full yet, `(keys, thr, open)`: `f` gives the generic masks.
pub fn attn_candidates(
    c: &(AttnKeys, [f32; ATTN_LANES], u16),
    f: impl Fn(&AttnTile<'_>, &[f32; ATTN_LANES], u16, &mut [u16; ATTN_TILE]) -> u16,
) {
    let (b, thr, open) = c;
    let s = b.scores();
    let (mut want, mut got) = ([0u16; ATTN_TILE], [1u16; ATTN_TILE]);
    let a = attn::attn_candidates(&b.tile(&s), thr, *open, &mut want);
    let g = f(&b.tile(&s), thr, *open, &mut got);
    assert_eq!((g, got), (a, want));
}

/// The kept slots of one or a block of lanes (`k` per lane, `lens[l]` of them used) and the
/// values.
#[derive(Clone, Debug)]
pub struct SlotsCase {
    /// Head width.
    pub hd: usize,
    /// Slots per lane.
    pub k: usize,
    /// Row stride of the values.
    pub stride: usize,
    /// Row stride of the output (`>= hd`).
    pub os: usize,
    /// Used slots per lane (a lane per entry, up to `ATTN_LANES`).
    pub lens: Vec<u32>,
    /// Slot scores, `k` per lane.
    pub sc: Vec<f32>,
    /// Slot key indices, `k` per lane.
    pub ix: Vec<u16>,
    /// Value rows.
    pub v: Vec<f32>,
}

/// `attn_softmax_lanes`: `f` within `tol` of the generic one on every lane of `lens` (zeros
/// for an empty one), nothing else written, and each lane the bits of the `rows` kernel (its
/// arch's `attn_softmax_rows`) on its slots: attention relies on it, the lanes kernel must not
/// depend on `k`.
pub fn attn_softmax_lanes(
    c: &SlotsCase,
    f: impl Fn(&AttnSoftmaxArgs<'_>, &mut [f32], usize),
    rows: impl Fn(&[f32], &[u16], &[f32], usize, usize, &mut [f32]),
    tol: Tol,
) {
    let (hd, k, os, st) = (c.hd, c.k, c.os, c.stride);
    let (mut want, mut got) = (
        vec![f32::NAN; ATTN_LANES * os],
        vec![f32::NAN; ATTN_LANES * os],
    );
    let args = AttnSoftmaxArgs {
        scores: &c.sc,
        idx: &c.ix,
        lens: &c.lens,
        k,
        v: &c.v,
        stride: st,
        hd,
    };
    attn::attn_softmax_lanes(&args, &mut want, os);
    f(&args, &mut got, os);
    for l in 0..ATTN_LANES {
        for d in 0..os {
            let (g, w) = (got[l * os + d], want[l * os + d]);
            let at = || format!("hd {hd} k {k} lane {l} dim {d}");
            if l >= c.lens.len() || d >= hd {
                assert!(g.is_nan(), "{}: written", at());
            } else {
                assert_close(g, w, tol, 0.0, at);
            }
        }
    }
    for (l, &n) in c.lens.iter().enumerate() {
        let n = n as usize;
        let mut one = vec![f32::NAN; hd];
        rows(
            &c.sc[l * k..][..n],
            &c.ix[l * k..][..n],
            &c.v,
            st,
            hd,
            &mut one,
        );
        let lane = &got[l * os..][..hd];
        assert_eq!(
            bits(lane),
            bits(&one),
            "hd {hd} k {k} lane {l}: rows kernel"
        );
    }
}

/// `attn_softmax_rows` on each lane's slots: `f` within `tol` of the generic one.
pub fn attn_softmax_rows(
    c: &SlotsCase,
    f: impl Fn(&[f32], &[u16], &[f32], usize, usize, &mut [f32]),
    tol: Tol,
) {
    let (hd, k, st) = (c.hd, c.k, c.stride);
    for (l, &n) in c.lens.iter().enumerate() {
        let (sc, ix) = (&c.sc[l * k..][..n as usize], &c.ix[l * k..][..n as usize]);
        let (mut want, mut got) = (vec![f32::NAN; hd], vec![f32::NAN; hd]);
        attn::attn_softmax_rows(sc, ix, &c.v, st, hd, &mut want);
        f(sc, ix, &c.v, st, hd, &mut got);
        assert_all_close(&got, &want, tol, |_| 0.0);
    }
}

/// One lane's block of keys for `attn_topk_block`: `vis.len()` tiles of scores and their
/// visibility masks.
#[derive(Debug, Clone)]
pub struct KeyBlock {
    /// Scores, `vis.len() * ATTN_TILE`.
    pub row: Vec<f32>,
    /// Per tile, the keys the lane sees.
    pub vis: Vec<u16>,
}

/// The selection order of two scores: score descending (`-0` ties `0`), NaN below everything.
pub fn better(a: f32, b: f32) -> core::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => core::cmp::Ordering::Equal,
        (true, false) => core::cmp::Ordering::Less,
        (false, true) => core::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap(),
    }
}

/// Work buffers of exactly the size a block of `b` needs with `k` slots
/// ([`AttnTopkWork::words`]), so that a kernel writing past them fails the test, holding what
/// the previous block left in `prev` (the attention reuses one buffer for every block).
fn work_for(b: &KeyBlock, k: usize, prev: &[f32]) -> Vec<f32> {
    let mut words = vec![0f32; AttnTopkWork::words(k, b.vis.len() * ATTN_TILE)];
    let n = words.len().min(prev.len());
    words[..n].copy_from_slice(&prev[..n]);
    words
}

/// The slots (score bits, key index) after each block of `(blocks, k)` (block `b` holds keys
/// `b * ATTN_KEY_BLOCK..`) from the selection kernel `f` keeping `k`.
fn topk_run(c: &(Vec<KeyBlock>, usize), f: &impl TopkBlockFn) -> Vec<Vec<(u32, u16)>> {
    let (mut s, mut ix, mut len) = (vec![0f32; c.1], vec![0u16; c.1], 0);
    let (mut after, mut prev) = (Vec::new(), Vec::new());
    for (bi, b) in c.0.iter().enumerate() {
        let mut words = work_for(b, c.1, &prev);
        let mut work = AttnTopkWork::new(&mut words);
        let kb0 = bi * ATTN_KEY_BLOCK;
        let args = AttnTopkArgs {
            row: &b.row,
            vis: &b.vis,
            kb0,
            k: c.1,
        };
        len = f(&args, &mut s, &mut ix, len, &mut work);
        after.push((0..len).map(|i| (s[i].to_bits(), ix[i])).collect());
        prev = words;
    }
    after
}

/// The selection kernel `f` keeps after each block the best `k` of every visible key so far
/// (score descending, NaN last, then the lower key), in key order: a sort says which.
pub fn attn_topk_matches_a_sort(c: &(Vec<KeyBlock>, usize), f: impl TopkBlockFn) {
    let got = topk_run(c, &f);
    let mut seen: Vec<(f32, u16)> = Vec::new();
    for (bi, (b, got)) in c.0.iter().zip(got).enumerate() {
        let kb0 = bi * ATTN_KEY_BLOCK;
        for (t, &v) in b.vis.iter().enumerate() {
            for j in (0..ATTN_TILE).filter(|&j| v >> j & 1 != 0) {
                seen.push((b.row[t * ATTN_TILE + j], (kb0 + t * ATTN_TILE + j) as u16));
            }
        }
        let mut want = seen.clone();
        want.sort_by(|a, b| better(b.0, a.0).then(a.1.cmp(&b.1)));
        want.truncate(c.1);
        want.sort_by_key(|p| p.1);
        let want: Vec<(u32, u16)> = want.iter().map(|p| (p.0.to_bits(), p.1)).collect();
        assert_eq!(got, want, "k {} block {bi}", c.1);
    }
}

/// `attn_topk_block`: `f` leaves the generic slots (score bits, key indices) and lengths after
/// every block, and those of a sort ([`attn_topk_matches_a_sort`]).
pub fn attn_topk_block(c: &(Vec<KeyBlock>, usize), f: impl TopkBlockFn) {
    let (got, want) = (topk_run(c, &f), topk_run(c, &attn::attn_topk_block));
    for (bi, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "k {} block {bi}", c.1);
    }
    attn_topk_matches_a_sort(c, f);
}
