//! The block kernels of the fast attention path (`topkit::kernels::attention`).
//!
//! - `exp_poly` against f64 `exp` over a dense grid: max relative error 2e-7 on
//!   `[EXP_POLY_MIN, EXP_POLY_MAX]` (measured 1.2e-7; printed by the test), exact at 0, 0
//!   below the range, NaN for NaN.
//! - The generic kernels against naive f64 formulas (scores, dense tile, softmax rows) and a
//!   naive sort (block selection, over several blocks, with ties, NaN and infinities), with
//!   the tolerances stated at each test; lane-major scores are the tile transposed, bit for bit.
//! - Arch kernels against the generic ones, one macro per op, instantiated for every arch
//!   module this build has (x86-64 AVX-512 in std builds): the candidate masks and the
//!   selected slots must be identical; float results within the stated tolerance (FMA and the
//!   vector `exp`).

// The arch macros are instantiated only in builds that have an arch module.
#![cfg_attr(
    not(all(feature = "std", target_arch = "x86_64")),
    allow(unused_macros, unused_imports)
)]

use proptest::collection::vec;
use proptest::prelude::*;
use topkit::kernels::attention::{
    self as attn, ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, AttnTopkWork,
};
use topkit::kernels::{
    AttnScoresArgs, AttnSoftmaxArgs, AttnTile, AttnTopkArgs, EXP_POLY_MAX, EXP_POLY_MIN, exp_poly,
    exp_poly_slice,
};

/// Max relative error of `f` against f64 `exp` over `n` evenly spaced points of `[lo, hi]`.
fn exp_rel_error(f: impl Fn(&mut [f32]), lo: f32, hi: f32, n: usize) -> f64 {
    let xs: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect();
    let mut ys = xs.clone();
    f(&mut ys);
    xs.iter()
        .zip(&ys)
        .map(|(&x, &y)| {
            let want = (x as f64).exp();
            ((y as f64 - want) / want).abs()
        })
        .fold(0.0, f64::max)
}

#[test]
fn exp_poly_accuracy() {
    let err = exp_rel_error(exp_poly_slice, EXP_POLY_MIN, EXP_POLY_MAX, 2_000_001);
    // The softmax range, more densely.
    let err_soft = exp_rel_error(exp_poly_slice, -30.0, 0.0, 2_000_001);
    eprintln!("exp_poly max relative error: {err:.3e} (softmax range [-30, 0]: {err_soft:.3e})");
    assert!(err <= 2e-7 && err_soft <= 2e-7, "{err} {err_soft}");
    assert_eq!(exp_poly(0.0), 1.0);
    assert_eq!(exp_poly(EXP_POLY_MIN - 0.01), 0.0);
    assert_eq!(exp_poly(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_poly(f32::INFINITY), f32::INFINITY);
    assert!(exp_poly(f32::NAN).is_nan());
}

/// A random block: `hd`, transposed queries for `lanes` lanes, `nk` key rows and value rows
/// with row stride `stride >= hd`.
#[derive(Debug, Clone)]
struct Block {
    hd: usize,
    lanes: usize,
    nk: usize,
    stride: usize,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    vis: Vec<u16>,
}

fn block() -> impl Strategy<Value = Block> {
    (1usize..=40, 1usize..=16, 1usize..=16, 0usize..=5).prop_flat_map(|(hd, lanes, nk, pad)| {
        let stride = hd + pad;
        (
            vec(-1.0f32..1.0, lanes * hd),
            vec(-1.0f32..1.0, nk * stride),
            vec(-1.0f32..1.0, nk * stride),
            vec(any::<u16>(), nk),
        )
            .prop_map(move |(q, k, v, vis)| Block {
                hd,
                lanes,
                nk,
                stride,
                q,
                k,
                v,
                vis,
            })
    })
}

impl Block {
    fn qt(&self) -> Vec<f32> {
        let mut qt = vec![0f32; self.hd * ATTN_LANES];
        attn::attn_transpose_queries(&self.q, self.hd, self.lanes, self.hd, &mut qt);
        qt
    }

    fn vis(&self) -> [u16; ATTN_TILE] {
        let lanes = if self.lanes == 16 {
            u16::MAX
        } else {
            (1 << self.lanes) - 1
        };
        core::array::from_fn(|j| self.vis.get(j).map_or(0, |&m| m & lanes))
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }
}

/// A score for the selection tests: small integers (ties), continuous values, a wide range,
/// and the special values.
fn score() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => (-4i8..=4).prop_map(|v| v as f32),
        6 => -3.0f32..3.0,
        2 => -1e30f32..1e30,
        1 => Just(f32::NAN),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::INFINITY),
        1 => Just(-0.0f32),
        1 => Just(0.0f32),
    ]
}

/// The selection order of two scores: score descending (`-0` ties `0`), NaN below everything.
fn better(a: f32, b: f32) -> core::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => core::cmp::Ordering::Equal,
        (true, false) => core::cmp::Ordering::Less,
        (false, true) => core::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap(),
    }
}

/// One lane's block of keys for [`attn::attn_topk_block`]: `nt` tiles of scores and their
/// visibility masks (mostly all visible).
#[derive(Debug, Clone)]
struct KeyBlock {
    row: Vec<f32>,
    vis: Vec<u16>,
}

fn key_block() -> impl Strategy<Value = KeyBlock> {
    let scores = prop_oneof![
        // One kind of score for the whole block: continuous values need several rounds of
        // narrowing, equal ones none.
        2 => vec(-3.0f32..3.0, ATTN_KEY_BLOCK),
        1 => vec((-2i8..=2).prop_map(|v| v as f32), ATTN_KEY_BLOCK),
        1 => vec(Just(0.5f32), ATTN_KEY_BLOCK),
        3 => vec(score(), ATTN_KEY_BLOCK),
    ];
    (
        1usize..=ATTN_KEY_BLOCK / ATTN_TILE,
        scores,
        vec(
            prop_oneof![3 => Just(u16::MAX), 1 => any::<u16>()],
            ATTN_KEY_BLOCK / ATTN_TILE,
        ),
    )
        .prop_map(|(nt, row, vis)| KeyBlock {
            row: row[..nt * ATTN_TILE].to_vec(),
            vis: vis[..nt].to_vec(),
        })
}

type TopkBlockFn = fn(&AttnTopkArgs<'_>, &mut [f32], &mut [u16], usize, &mut AttnTopkWork) -> usize;

/// Work buffers of exactly the size a block of `b` needs with `k` slots
/// ([`AttnTopkWork::words`]), so that a kernel writing past them fails the test.
fn work_for(b: &KeyBlock, k: usize) -> Vec<f32> {
    vec![0f32; AttnTopkWork::words(k, b.vis.len() * ATTN_TILE)]
}

/// Runs `f` over `blocks` (block `b` holds keys `b * ATTN_KEY_BLOCK..`) keeping `k` slots, and
/// checks the slots after each block against a sort of every visible key so far.
fn check_topk_block(blocks: &[KeyBlock], k: usize, f: TopkBlockFn) -> Result<(), TestCaseError> {
    let (mut s, mut ix, mut len) = (vec![0f32; k], vec![0u16; k], 0);
    let mut seen: Vec<(f32, u16)> = Vec::new();
    for (bi, b) in blocks.iter().enumerate() {
        let kb0 = bi * ATTN_KEY_BLOCK;
        for (t, &v) in b.vis.iter().enumerate() {
            for j in (0..ATTN_TILE).filter(|&j| v >> j & 1 != 0) {
                seen.push((b.row[t * ATTN_TILE + j], (kb0 + t * ATTN_TILE + j) as u16));
            }
        }
        let mut words = work_for(b, k);
        let mut work = AttnTopkWork::new(&mut words);
        len = f(
            &AttnTopkArgs {
                row: &b.row,
                vis: &b.vis,
                kb0,
                k,
            },
            &mut s,
            &mut ix,
            len,
            &mut work,
        );
        let mut want = seen.clone();
        want.sort_by(|a, b| better(b.0, a.0).then(a.1.cmp(&b.1)));
        want.truncate(k);
        want.sort_by_key(|p| p.1);
        prop_assert_eq!(len, want.len());
        let got: Vec<(u32, u16)> = (0..len).map(|i| (s[i].to_bits(), ix[i])).collect();
        let want: Vec<(u32, u16)> = want.iter().map(|p| (p.0.to_bits(), p.1)).collect();
        prop_assert_eq!(got, want);
    }
    Ok(())
}

proptest! {
    /// Generic scores: within `(hd + 2) * EPS * sum_d |q_d k_d| * scale` of the f64 formula.
    #[test]
    fn generic_scores_match_f64(b in block()) {
        let mut s = [0f32; ATTN_BLOCK];
        attn::attn_scores_tile(&AttnScoresArgs { qt: &b.qt(), hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut s);
        for j in 0..b.nk {
            for l in 0..b.lanes {
                let (mut want, mut mag) = (0f64, 0f64);
                for d in 0..b.hd {
                    let p = b.q[l * b.hd + d] as f64 * b.k[j * b.stride + d] as f64;
                    want += p;
                    mag += p.abs();
                }
                let sc = b.scale() as f64;
                let tol = (b.hd as f64 + 2.0) * f32::EPSILON as f64 * mag * sc + 1e-30;
                let got = s[j * ATTN_LANES + l] as f64;
                prop_assert!((got - want * sc).abs() <= tol, "{} vs {}", got, want * sc);
            }
        }
    }

    /// Generic dense tile, run over two tiles (the second with shifted scores, so that some
    /// lanes rescale): each lane's normalised output within 1e-6 of the f64 softmax over the
    /// keys it sees (values in [-1, 1]).
    #[test]
    fn generic_dense_tile_matches_f64(b in block(), shift in -3.0f32..3.0) {
        let hd = b.hd;
        let mut acc = vec![0f32; ATTN_LANES * hd];
        let mut st = AttnDenseState::new(&mut acc);
        let mut tiles = Vec::new();
        for t in 0..2 {
            let mut s = [0f32; ATTN_BLOCK];
            attn::attn_scores_tile(&AttnScoresArgs { qt: &b.qt(), hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut s);
            let vis = b.vis().map(|m| if t == 0 { m } else { m.rotate_left(3) });
            if t == 1 {
                s.iter_mut().for_each(|x| *x += shift);
            }
            attn::attn_dense_tile(&AttnTile { s: &s, vis: &vis, nk: b.nk }, &b.v, b.stride, hd, &mut st);
            tiles.push((s, vis));
        }
        for l in 0..b.lanes {
            let mut ws = Vec::new();
            for (s, vis) in &tiles {
                for j in 0..b.nk {
                    if vis[j] >> l & 1 != 0 {
                        ws.push((s[j * ATTN_LANES + l] as f64, &b.v[j * b.stride..][..hd]));
                    }
                }
            }
            if ws.is_empty() {
                prop_assert_eq!(st.sum[l], 0.0);
                continue;
            }
            let m = ws.iter().map(|w| w.0).fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = ws.iter().map(|w| (w.0 - m).exp()).sum();
            for d in 0..hd {
                let want: f64 = ws.iter().map(|w| (w.0 - m).exp() * w.1[d] as f64).sum::<f64>() / z;
                let got = st.acc[l * hd + d] as f64 / st.sum[l] as f64;
                prop_assert!((got - want).abs() <= 1e-6, "lane {} dim {}: {} vs {}", l, d, got, want);
            }
        }
    }

    /// Generic lane-major scores: the key-major tile transposed, bit for bit.
    #[test]
    fn generic_scores_rows_are_the_tile_transposed(b in block(), rs in 16usize..20) {
        let qt = b.qt();
        let mut s = [0f32; ATTN_BLOCK];
        attn::attn_scores_tile(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut s);
        let mut rows = vec![f32::NAN; ATTN_LANES * rs];
        attn::attn_scores_rows(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut rows, rs);
        for l in 0..ATTN_LANES {
            for j in 0..rs {
                let want = if j < b.nk { s[j * ATTN_LANES + l].to_bits() } else { f32::NAN.to_bits() };
                prop_assert_eq!(rows[l * rs + j].to_bits(), want, "lane {} key {}", l, j);
            }
        }
    }

    /// The rank order: a > b for non-NaN scores (-0 ties +0), NaN below everything, and the
    /// inverse on non-NaN scores.
    #[test]
    fn rank_is_the_score_order(a in score(), b in score()) {
        let (ra, rb) = (attn::attn_rank(a), attn::attn_rank(b));
        prop_assert_eq!(ra.cmp(&rb), better(a, b));
        if !a.is_nan() {
            prop_assert_eq!(attn::attn_rank_score(ra).to_bits(), (a + 0.0).to_bits());
            prop_assert!(ra > attn::ATTN_RANK_NAN);
        }
    }

    /// Generic block selection against a sort of every visible key seen so far, over several
    /// blocks: the best k (score descending, NaN last, then the lower key), in key order.
    #[test]
    fn generic_topk_block_matches_a_sort(blocks in vec(key_block(), 1..5), k in 1usize..=32) {
        check_topk_block(&blocks, k, attn::attn_topk_block)?;
    }
    /// Generic softmax rows within 1e-6 of the f64 formula (values in [-1, 1]).
    #[test]
    fn generic_softmax_rows_match_f64(
        (hd, n, sc, ix, v) in (1usize..=40, 0usize..=40).prop_flat_map(|(hd, n)| (
            Just(hd), Just(n), vec(-20.0f32..20.0, n), vec(0u16..50, n), vec(-1.0f32..1.0, 50 * hd)))
    ) {
        let mut out = vec![f32::NAN; hd];
        attn::attn_softmax_rows(&sc, &ix, &v, hd, hd, &mut out);
        let m = sc.iter().map(|&x| x as f64).fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = sc.iter().map(|&x| (x as f64 - m).exp()).sum();
        for d in 0..hd {
            let want = if n == 0 { 0.0 } else {
                sc.iter().zip(&ix).map(|(&x, &j)| (x as f64 - m).exp() * v[j as usize * hd + d] as f64).sum::<f64>() / z
            };
            prop_assert!((out[d] as f64 - want).abs() <= 1e-6, "{} vs {}", out[d], want);
        }
    }
}

/// `exp` over a slice: the arch kernel `$f` within 3e-7 relative of `exp_poly` (each is within
/// 1.2e-7 of the truth as measured; the FMA moves the last bit), the same 0 below the range,
/// `exp(0) == 1`, and its own max error against f64 within 2e-7.
macro_rules! test_exp {
    ($name:ident, $f:path) => {
        #[test]
        fn $name() {
            let err = exp_rel_error($f, EXP_POLY_MIN, EXP_POLY_MAX, 2_000_001);
            eprintln!("{} max relative error: {err:.3e}", stringify!($f));
            assert!(err <= 2e-7, "{err}");
            let mut x = vec![0.0, -1e-3, -0.5, -3.0, -87.0, -88.0, f32::NEG_INFINITY, 5.0];
            let want: Vec<f32> = x.iter().map(|&v| exp_poly(v)).collect();
            $f(&mut x);
            assert_eq!(x[0], 1.0);
            for (&g, &w) in x.iter().zip(&want) {
                assert!((g - w).abs() <= 3e-7 * w, "{g} vs {w}");
            }
        }
    };
}

/// Tile scores: the arch kernel `$f` within `(hd + 2) * EPS * sum|q_d k_d| * scale` of the
/// generic one (the same order of terms, fused).
macro_rules! test_scores_tile {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(b in block()) {
                let qt = b.qt();
                let (mut want, mut got) = ([0f32; ATTN_BLOCK], [0f32; ATTN_BLOCK]);
                attn::attn_scores_tile(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut want);
                $f(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut got);
                for j in 0..b.nk {
                    for l in 0..ATTN_LANES {
                        let mag: f64 = (0..b.hd).map(|d| (qt[d * ATTN_LANES + l] as f64 * b.k[j * b.stride + d] as f64).abs()).sum();
                        let tol = (b.hd as f64 + 2.0) * f32::EPSILON as f64 * mag * b.scale() as f64 + 1e-30;
                        let (g, w) = (got[j * ATTN_LANES + l], want[j * ATTN_LANES + l]);
                        prop_assert!((g as f64 - w as f64).abs() <= tol, "{} vs {}", g, w);
                    }
                }
            }
        }
    };
}

/// Dense tile: the arch kernel `$f` (two tiles, the second rescaling) gives each lane's
/// normalised output within 1e-6 of the generic one, the same running maximum, and a sum
/// within 1e-6 relative.
macro_rules! test_dense_tile {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(b in block(), shift in -3.0f32..3.0) {
                let qt = b.qt();
                let (mut wa, mut ga) = (vec![0f32; ATTN_LANES * b.hd], vec![0f32; ATTN_LANES * b.hd]);
                let (mut want, mut got) = (AttnDenseState::new(&mut wa), AttnDenseState::new(&mut ga));
                for t in 0..2 {
                    let mut s = [0f32; ATTN_BLOCK];
                    attn::attn_scores_tile(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut s);
                    // The second tile: shifted scores (a new maximum in some lanes), other lanes.
                    let vis = b.vis().map(|m| if t == 0 { m } else { m.rotate_left(3) });
                    if t == 1 {
                        s.iter_mut().for_each(|x| *x += shift);
                    }
                    attn::attn_dense_tile(&AttnTile { s: &s, vis: &vis, nk: b.nk }, &b.v, b.stride, b.hd, &mut want);
                    $f(&AttnTile { s: &s, vis: &vis, nk: b.nk }, &b.v, b.stride, b.hd, &mut got);
                }
                for l in 0..ATTN_LANES {
                    prop_assert_eq!(got.max[l].to_bits(), want.max[l].to_bits());
                    prop_assert!((got.sum[l] - want.sum[l]).abs() <= 1e-6 * want.sum[l], "{} vs {}", got.sum[l], want.sum[l]);
                    if want.sum[l] > 0.0 {
                        for d in 0..b.hd {
                            let g = got.acc[l * b.hd + d] / got.sum[l];
                            let w = want.acc[l * b.hd + d] / want.sum[l];
                            prop_assert!((g - w).abs() <= 1e-6, "lane {} dim {}: {} vs {}", l, d, g, w);
                        }
                    }
                }
            }
        }
    };
}

/// Candidates: the arch kernel `$f` gives the masks of the generic one.
macro_rules! test_candidates {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(b in block(), thr in vec(prop_oneof![-1.0f32..1.0, Just(f32::NEG_INFINITY)], 16), open in any::<u16>()) {
                let mut s = [0f32; ATTN_BLOCK];
                attn::attn_scores_tile(&AttnScoresArgs { qt: &b.qt(), hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut s);
                let thr: [f32; ATTN_LANES] = core::array::from_fn(|l| thr[l]);
                let (mut want, mut got) = ([0u16; ATTN_TILE], [1u16; ATTN_TILE]);
                let a = attn::attn_candidates(&AttnTile { s: &s, vis: &b.vis(), nk: b.nk }, &thr, open, &mut want);
                let g = $f(&AttnTile { s: &s, vis: &b.vis(), nk: b.nk }, &thr, open, &mut got);
                prop_assert_eq!(a, g);
                prop_assert_eq!(want, got);
            }
        }
    };
}

/// Softmax rows: the arch kernel `$f` within 1e-6 of the generic one (values in [-1, 1]).
macro_rules! test_softmax_rows {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(
                (hd, sc, ix, v) in (1usize..=40, 0usize..=40).prop_flat_map(|(hd, n)| (
                    Just(hd), vec(-20.0f32..20.0, n), vec(0u16..50, n), vec(-1.0f32..1.0, 50 * hd)))
            ) {
                let (mut want, mut got) = (vec![f32::NAN; hd], vec![f32::NAN; hd]);
                attn::attn_softmax_rows(&sc, &ix, &v, hd, hd, &mut want);
                $f(&sc, &ix, &v, hd, hd, &mut got);
                for d in 0..hd {
                    prop_assert!((got[d] - want[d]).abs() <= 1e-6, "{} vs {}", got[d], want[d]);
                }
            }
        }
    };
}

/// Lane-major scores: the arch kernel `$f` within the scores tolerance of the generic one, and
/// its own key-major tile `$tile` transposed bit for bit.
macro_rules! test_scores_rows {
    ($name:ident, $f:path, $tile:path) => {
        proptest! {
            #[test]
            fn $name(b in block(), rs in 16usize..20) {
                let qt = b.qt();
                let (mut want, mut got) = (vec![f32::NAN; ATTN_LANES * rs], vec![f32::NAN; ATTN_LANES * rs]);
                attn::attn_scores_rows(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut want, rs);
                $f(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut got, rs);
                let mut tile = [0f32; ATTN_BLOCK];
                $tile(&AttnScoresArgs { qt: &qt, hd: b.hd, k: &b.k, stride: b.stride, nk: b.nk, scale: b.scale() }, &mut tile);
                for l in 0..ATTN_LANES {
                    for j in 0..rs {
                        let (g, w) = (got[l * rs + j], want[l * rs + j]);
                        if j >= b.nk {
                            prop_assert!(g.is_nan(), "key {} >= nk written", j);
                            continue;
                        }
                        prop_assert_eq!(g.to_bits(), tile[j * ATTN_LANES + l].to_bits());
                        let mag: f64 = (0..b.hd).map(|d| (qt[d * ATTN_LANES + l] as f64 * b.k[j * b.stride + d] as f64).abs()).sum();
                        let tol = (b.hd as f64 + 2.0) * f32::EPSILON as f64 * mag * b.scale() as f64 + 1e-30;
                        prop_assert!((g as f64 - w as f64).abs() <= tol, "{} vs {}", g, w);
                    }
                }
            }
        }
    };
}

/// Softmax of a block's lanes: the arch kernel `$f` within 1e-6 of the generic one (values in
/// [-1, 1]), every lane written (zeros for an empty one), nothing else; and each lane the bits
/// of the arch kernel `$rows` on its slots (attention relies on it: the lanes kernel must not
/// depend on `k`).
macro_rules! test_softmax_lanes {
    ($name:ident, $f:path, $rows:path) => {
        proptest! {
            #[test]
            fn $name(
                (hd, k, lens, sc, ix, v) in (1usize..=40, 1usize..=40).prop_flat_map(|(hd, k)| (
                    Just(hd), Just(k), vec(0u32..=k as u32, 1..=16), vec(-20.0f32..20.0, 16 * k),
                    vec(0u16..50, 16 * k), vec(-1.0f32..1.0, 50 * hd))),
                pad in 0usize..3,
            ) {
                let os = hd + pad;
                let (mut want, mut got) = (vec![f32::NAN; 16 * os], vec![f32::NAN; 16 * os]);
                attn::attn_softmax_lanes(&AttnSoftmaxArgs { scores: &sc, idx: &ix, lens: &lens, k, v: &v, stride: hd, hd }, &mut want, os);
                $f(&AttnSoftmaxArgs { scores: &sc, idx: &ix, lens: &lens, k, v: &v, stride: hd, hd }, &mut got, os);
                for l in 0..16 {
                    for d in 0..os {
                        let (g, w) = (got[l * os + d], want[l * os + d]);
                        if l >= lens.len() || d >= hd {
                            prop_assert!(g.is_nan(), "lane {} dim {} written", l, d);
                        } else {
                            prop_assert!((g - w).abs() <= 1e-6, "lane {} dim {}: {} vs {}", l, d, g, w);
                        }
                    }
                }
                for (l, &n) in lens.iter().enumerate() {
                    let n = n as usize;
                    let mut one = vec![f32::NAN; hd];
                    $rows(&sc[l * k..][..n], &ix[l * k..][..n], &v, hd, hd, &mut one);
                    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    prop_assert_eq!(bits(&got[l * os..][..hd]), bits(&one));
                }
            }
        }
    };
}

/// Block selection: the arch kernel `$f` leaves the slots (score bits, key indices) and
/// lengths of the generic one after every block, and both match a sort.
macro_rules! test_topk_block {
    ($name:ident, $f:path) => {
        proptest! {
            #[test]
            fn $name(blocks in vec(key_block(), 1..5), k in 1usize..=32) {
                check_topk_block(&blocks, k, $f)?;
                let mut w = (vec![0f32; k], vec![0u16; k], 0usize);
                let mut g = w.clone();
                for (bi, b) in blocks.iter().enumerate() {
                    let kb0 = bi * ATTN_KEY_BLOCK;
                    let (mut wb, mut gb) = (work_for(b, k), work_for(b, k));
                    let (mut ww, mut gw) = (AttnTopkWork::new(&mut wb), AttnTopkWork::new(&mut gb));
                    w.2 = attn::attn_topk_block(&AttnTopkArgs { row: &b.row, vis: &b.vis, kb0, k }, &mut w.0, &mut w.1, w.2, &mut ww);
                    g.2 = $f(&AttnTopkArgs { row: &b.row, vis: &b.vis, kb0, k }, &mut g.0, &mut g.1, g.2, &mut gw);
                    prop_assert_eq!(g.2, w.2);
                    prop_assert_eq!(&g.1[..g.2], &w.1[..w.2]);
                    let bits = |s: &[f32]| s.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    prop_assert_eq!(bits(&g.0[..g.2]), bits(&w.0[..w.2]));
                }
            }
        }
    };
}

#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx512 {
    use super::*;
    use topkit::kernels;
    // On a CPU without AVX-512F the kernels fall back to the generic ones; say so.
    #[test]
    fn reports_whether_the_cpu_has_avx512() {
        eprintln!(
            "AVX-512F/BW/VL available: {}",
            kernels::x86_avx512_attn_available()
        );
    }
    test_exp!(exp, kernels::x86_avx512_exp_f32);
    test_scores_tile!(scores_tile, kernels::x86_avx512_attn_scores_tile);
    test_dense_tile!(dense_tile, kernels::x86_avx512_attn_dense_tile);
    test_candidates!(candidates, kernels::x86_avx512_attn_candidates);
    test_softmax_rows!(softmax_rows, kernels::x86_avx512_attn_softmax_rows);
    test_softmax_lanes!(
        softmax_lanes,
        kernels::x86_avx512_attn_softmax_lanes,
        kernels::x86_avx512_attn_softmax_rows
    );
    test_scores_rows!(
        scores_rows,
        kernels::x86_avx512_attn_scores_rows,
        kernels::x86_avx512_attn_scores_tile
    );
    test_topk_block!(topk_block, kernels::x86_avx512_attn_topk_block);
}
