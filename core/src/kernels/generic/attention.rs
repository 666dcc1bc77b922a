//! Block kernels of the fast attention path ([`crate::model::attention`] with
//! [`crate::kernels::Kernels::Fast`]): the portable (generic) versions, which run on every target and
//! are the reference that the arch versions (`x86_avx512_attn_*`) are tested against.
//!
//! The blocks: up to [`ATTN_LANES`] queries (lanes) of one chunk and one head against a tile
//! of up to [`ATTN_TILE`] consecutive keys. The queries of a block are transposed once
//! (`qt[d * ATTN_LANES + lane]`), so that the scores of one key for every lane are one vector
//! (`s[j * ATTN_LANES + lane]`), and every per-query state (running maximum, sum, threshold)
//! is a vector over the lanes. The top-k path ([`attn_topk_block`]) works on blocks of
//! [`ATTN_KEY_BLOCK`] keys stored lane-major instead ([`attn_scores_rows`]: each query's
//! scores contiguous). Lanes never mix: a lane's results do not depend on the other lanes of
//! its block (so not on the chunk size).
//!
//! The exponential is [`exp_poly`], a documented polynomial (Cephes `expf`), the same in the
//! micromath and std builds.
//!
//! The kernels keep only a few tile-sized arrays on the stack (at most [`ATTN_BLOCK`] f32);
//! the block buffers that grow with the head width, the key block and `k` (transposed
//! queries, accumulators, lane-major scores, candidates) are the caller's, sliced from the
//! memory plan's scratch ([`crate::model::attention::fast_scratch_bytes`]).

use super::act::exp_poly;
use super::q8::quantize_i8;
pub use crate::kernels::args::{
    ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_MAX_HEAD_DIM, ATTN_SELECT_MAX_K, ATTN_TILE,
};
use crate::kernels::args::{
    AttnScoresArgs, AttnSoftmaxArgs, AttnTile, AttnTopkArgs, KvRows, KvRowsMut, kv_int8_group,
};
use half::slice::HalfFloatSliceExt;

/// Transposes the head slice of up to [`ATTN_LANES`] query rows into `qt` (`hd x ATTN_LANES`,
/// `qt[d * ATTN_LANES + lane]`), zeros for missing lanes. `q` row `lane` starts at
/// `lane * stride`; `hd <= ATTN_MAX_HEAD_DIM`.
pub fn attn_transpose_queries(q: &[f32], stride: usize, lanes: usize, hd: usize, qt: &mut [f32]) {
    let qt = &mut qt[..hd * ATTN_LANES];
    qt.fill(0.0);
    for l in 0..lanes.min(ATTN_LANES) {
        let row = &q[l * stride..][..hd];
        for (d, &x) in row.iter().enumerate() {
            qt[d * ATTN_LANES + l] = x;
        }
    }
}

/// Scores of a tile: `s[j * ATTN_LANES + lane] = (sum_d qt[d][lane] * k_j[d]) * scale` for
/// the `nk <= ATTN_TILE` key rows `k_j = k[j * stride..][..hd]`, summed in increasing `d`.
/// Entries of keys `j >= nk` are left as they are.
pub fn attn_scores_tile(a: &AttnScoresArgs<'_>, s: &mut [f32; ATTN_BLOCK]) {
    for j in 0..a.nk.min(ATTN_TILE) {
        let mut acc = [0f32; ATTN_LANES];
        for (d, &kd) in a.key(j).iter().enumerate() {
            let q = &a.qt[d * ATTN_LANES..][..ATTN_LANES];
            for l in 0..ATTN_LANES {
                acc[l] += q[l] * kd;
            }
        }
        for l in 0..ATTN_LANES {
            s[j * ATTN_LANES + l] = acc[l] * a.scale;
        }
    }
}

/// Online-softmax state of the lanes of a dense block.
pub struct AttnDenseState<'a> {
    /// Running maximum per lane (`-inf` before the first visible key).
    pub max: [f32; ATTN_LANES],
    /// Running sum of `e^(s - max)` per lane.
    pub sum: [f32; ATTN_LANES],
    /// Weighted value sums, `acc[lane * hd + d]` (relative to `max`): `ATTN_LANES * hd` f32
    /// or more.
    pub acc: &'a mut [f32],
}

impl<'a> AttnDenseState<'a> {
    /// The empty state (no key seen by any lane) over the accumulators `acc` (`ATTN_LANES *
    /// hd` f32 for heads of `hd`), which it zeroes.
    pub fn new(acc: &'a mut [f32]) -> Self {
        acc.fill(0.0);
        AttnDenseState {
            max: [f32::NEG_INFINITY; ATTN_LANES],
            sum: [0.0; ATTN_LANES],
            acc,
        }
    }
}

/// One tile of the blocked online softmax: for each lane, the tile's maximum over the keys it
/// sees (`vis[j]` bit `lane`) becomes the running maximum if larger (rescaling the sum and
/// the accumulator by `e^(old - new)`), then each visible key adds `w = e^(s - max)` to the
/// sum and `w * v_j` to the accumulator (`v_j = v[j * stride..][..hd]`, keys in increasing
/// order). Keys a lane does not see never touch it.
pub fn attn_dense_tile(
    t: &AttnTile<'_>,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    let &AttnTile { s, vis, nk } = t;
    let nk = nk.min(ATTN_TILE);
    for l in 0..ATTN_LANES {
        let seen = |j: usize| vis[j] >> l & 1 != 0;
        let mut bm = f32::NEG_INFINITY;
        for j in (0..nk).filter(|&j| seen(j)) {
            let x = s[j * ATTN_LANES + l];
            if x > bm {
                bm = x;
            }
        }
        let acc = &mut st.acc[l * hd..][..hd];
        if bm > st.max[l] {
            // e^(-inf) = 0: the first visible key resets the (zero) sum and accumulator.
            let c = exp_poly(st.max[l] - bm);
            st.sum[l] *= c;
            acc.iter_mut().for_each(|a| *a *= c);
            st.max[l] = bm;
        }
        for j in (0..nk).filter(|&j| seen(j)) {
            let w = exp_poly(s[j * ATTN_LANES + l] - st.max[l]);
            st.sum[l] += w;
            for (a, &x) in acc.iter_mut().zip(&v[j * stride..][..hd]) {
                *a += w * x;
            }
        }
    }
}

/// Top-k candidates of a tile: `cand[j]` has bit `lane` when lane `lane` sees key `j`
/// (`vis[j]`) and either has free slots (`open` bit `lane`) or scores it above its threshold
/// (`s > thr[lane]`, strictly: a later key loses ties). Returns the OR of `cand[..nk]`;
/// `cand[j]` for `j >= nk` is 0.
pub fn attn_candidates(
    t: &AttnTile<'_>,
    thr: &[f32; ATTN_LANES],
    open: u16,
    cand: &mut [u16; ATTN_TILE],
) -> u16 {
    let &AttnTile { s, vis, nk } = t;
    let mut any = 0;
    for j in 0..ATTN_TILE {
        let mut m = 0u16;
        if j < nk {
            for l in 0..ATTN_LANES {
                if s[j * ATTN_LANES + l] > thr[l] {
                    m |= 1 << l;
                }
            }
            m = vis[j] & (m | open);
        }
        cand[j] = m;
        any |= m;
    }
    any
}

/// Scores of a tile, lane-major: `rows[lane * rs + j]` is what [`attn_scores_tile`] puts in
/// `s[j * ATTN_LANES + lane]` (the same sum, the same bits) for the `nk <= ATTN_TILE` keys and
/// all [`ATTN_LANES`] lanes; entries of keys `j >= nk` are left as they are. `rows` holds
/// `ATTN_LANES` rows of stride `rs >= ATTN_TILE`.
pub fn attn_scores_rows(a: &AttnScoresArgs<'_>, rows: &mut [f32], rs: usize) {
    let nk = a.nk.min(ATTN_TILE);
    let mut s = [0f32; ATTN_BLOCK];
    attn_scores_tile(a, &mut s);
    for l in 0..ATTN_LANES {
        let row = &mut rows[l * rs..][..nk];
        for (j, r) in row.iter_mut().enumerate() {
            *r = s[j * ATTN_LANES + l];
        }
    }
}

/// Rank of a NaN score in [`attn_rank`]: below every other score.
pub const ATTN_RANK_NAN: i32 = i32::MIN + 1;

/// The order of the top-k selection as an integer: `attn_rank(a) > attn_rank(b)` exactly when
/// score `a` ranks above `b`. For non-NaN scores that is `a > b` (so `-0.0` and `0.0` tie: the
/// sign of zero is dropped first); NaN ranks below everything else ([`ATTN_RANK_NAN`]), `-inf`
/// just above it. The map is the IEEE bit pattern with the magnitude bits of negative numbers
/// flipped, so it is monotone and has an inverse on non-NaN scores ([`attn_rank_score`]).
#[inline]
pub fn attn_rank(x: f32) -> i32 {
    if x.is_nan() {
        return ATTN_RANK_NAN;
    }
    let b = (x + 0.0).to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

/// The score of a rank of a non-NaN score (`attn_rank_score(attn_rank(x)) == x + 0.0`).
#[inline]
pub fn attn_rank_score(r: i32) -> f32 {
    f32::from_bits((r ^ (((r >> 31) as u32) >> 1) as i32) as u32)
}

/// A lower bound (as an [`attn_rank`]) on the `k`-th best visible score of a block
/// (`k <= ATTN_SELECT_MAX_K`), from the two best visible non-NaN scores of each of the 16
/// groups of keys `j = g (mod 16)`: every group has two (for `k <= 16`, one) scores at least
/// its second (first) best, so the smallest of the 16 is at most the `k`-th best of the block.
/// [`ATTN_RANK_NAN`] (no bound) when some group has too few visible non-NaN keys.
fn block_bound(row: &[f32], vis: &[u16], k: usize) -> i32 {
    let mut m1 = [f32::NEG_INFINITY; ATTN_TILE];
    let mut m2 = [f32::NEG_INFINITY; ATTN_TILE];
    for (t, &v) in vis.iter().enumerate() {
        for g in (0..ATTN_TILE).filter(|&g| v >> g & 1 != 0) {
            let x = row[t * ATTN_TILE + g];
            if x > m1[g] {
                m2[g] = m1[g];
                m1[g] = x;
            } else if x > m2[g] {
                m2[g] = x;
            }
        }
    }
    let m = if k <= ATTN_TILE { &m1 } else { &m2 };
    let b = m
        .iter()
        .fold(f32::INFINITY, |b, &x| if x < b { x } else { b });
    if b > f32::NEG_INFINITY {
        attn_rank(b)
    } else {
        ATTN_RANK_NAN
    }
}

/// Length of each buffer of an [`AttnTopkWork`] for slots of `k` and blocks of `key_block`
/// keys: the most candidates [`attn_topk_block`] gathers for one lane (`min(k,
/// ATTN_SELECT_MAX_K)` kept slots and one block of keys) and a vector of slack (the vector
/// kernels store whole vectors).
pub const fn attn_cand_cap(k: usize, key_block: usize) -> usize {
    let k = if k < ATTN_SELECT_MAX_K {
        k
    } else {
        ATTN_SELECT_MAX_K
    };
    k + key_block + ATTN_TILE
}

/// Working buffers of [`attn_topk_block`] (one lane's candidates: four buffers of the same
/// length, [`attn_cand_cap`]), made once per call of the fast path rather than once per lane
/// and block, over words of the caller's scratch.
pub struct AttnTopkWork<'a> {
    /// Candidate scores.
    pub(crate) s: &'a mut [f32],
    /// Candidate key indices.
    pub(crate) j: &'a mut [i32],
    /// Candidate ranks ([`attn_rank`]).
    pub(crate) r: &'a mut [i32],
    /// Working set of the selection.
    pub(crate) w: &'a mut [i32],
}

impl<'a> AttnTopkWork<'a> {
    /// f32 words of the buffers for slots of `k` and blocks of `key_block` keys: `4 *
    /// attn_cand_cap(k, key_block)`.
    pub const fn words(k: usize, key_block: usize) -> usize {
        4 * attn_cand_cap(k, key_block)
    }

    /// The four buffers over `words` (a quarter each, [`AttnTopkWork::words`] for slots of `k`
    /// and blocks of `key_block` keys).
    pub fn new(words: &'a mut [f32]) -> Self {
        let cap = words.len() / 4;
        let (s, rest) = words.split_at_mut(cap);
        let rest: &mut [i32] = bytemuck::cast_slice_mut(rest);
        let (j, rest) = rest.split_at_mut(cap);
        let (r, w) = rest.split_at_mut(cap);
        AttnTopkWork {
            s,
            j,
            r,
            w: &mut w[..cap],
        }
    }

    /// Candidates each buffer holds.
    pub fn capacity(&self) -> usize {
        self.s.len()
    }
}

/// Merges a block of keys into one lane's top-k slots. `row[t * ATTN_TILE + j]` is the lane's
/// score of key `kb0 + t * ATTN_TILE + j`, visible when bit `j` of `vis[t]` is set (at most
/// `ATTN_KEY_BLOCK / ATTN_TILE` tiles; `row` holds `ATTN_TILE` entries per tile of `vis`).
/// The slots `scores[..len]`, `idx[..len]` hold the lane's best keys so far (all below `kb0`)
/// in increasing key order; afterwards they hold the best `min(k, len + visible)` of those and
/// the block's visible keys, again in increasing key order, and the new length is returned.
///
/// "Best": larger [`attn_rank`] (score descending, NaN last), then the lower key index.
/// Capacity `k = min(k, ATTN_SELECT_MAX_K, scores.len(), idx.len())`. Key indices are stored
/// as `u16` (the caller keeps them below [`crate::model::attention::MAX_KEYS`]). `work` holds
/// `k + 16 * vis.len()` candidates or more ([`AttnTopkWork::words`]).
///
/// Candidates are the old slots and visible keys whose rank reaches a lower bound on the
/// `k`-th best (the `k`-th best kept when the slots are full, and the block's group bound);
/// with more than `k` of them, the `k`-th largest rank `t` is found by `select_nth_unstable`
/// and the kept ones are the ranks above `t` and the first (lowest keys) of those equal to `t`.
pub fn attn_topk_block(
    a: &AttnTopkArgs<'_>,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut AttnTopkWork,
) -> usize {
    let &AttnTopkArgs { row, vis, kb0, .. } = a;
    let (k, nt, len) = topk_block_sizes(a, scores, idx, len);
    let (row, vis) = (&row[..nt * ATTN_TILE], &vis[..nt]);
    if k == 0 {
        return 0;
    }
    let bound = full_slots_bound(&scores[..len], k, block_bound(row, vis, k));
    // Candidates in increasing key order: the old slots, then the block.
    let AttnTopkWork { s, j: ci, r, .. } = work;
    let mut n = 0;
    let old = scores[..len]
        .iter()
        .zip(&idx[..len])
        .map(|(&x, &j)| (x, j as usize));
    let new = vis.iter().enumerate().flat_map(|(t, &v)| {
        (0..ATTN_TILE)
            .filter(move |&j| v >> j & 1 != 0)
            .map(move |j| (row[t * ATTN_TILE + j], kb0 + t * ATTN_TILE + j))
    });
    for (x, j) in old.chain(new) {
        let rank = attn_rank(x);
        if rank >= bound {
            s[n] = x;
            ci[n] = j as i32;
            r[n] = rank;
            n += 1;
        }
    }
    keep_best(work, n, k, scores, idx)
}

/// The sizes an [`attn_topk_block`] call (or an arch kernel of it) works with: `(k, tiles,
/// len)`, the capacity `k` (at most [`ATTN_SELECT_MAX_K`] and the slots' lengths), the whole
/// tiles of `row` that `vis` covers (at most one key block) and the slots in use (at most `k`).
pub(crate) fn topk_block_sizes(
    a: &AttnTopkArgs<'_>,
    scores: &[f32],
    idx: &[u16],
    len: usize,
) -> (usize, usize, usize) {
    let &AttnTopkArgs { row, vis, k, .. } = a;
    let k = k.min(ATTN_SELECT_MAX_K).min(scores.len()).min(idx.len());
    let nt = vis
        .len()
        .min(row.len() / ATTN_TILE)
        .min(ATTN_KEY_BLOCK / ATTN_TILE);
    (k, nt, len.min(k))
}

/// `bound` raised to the rank of the worst of the slots `old` when they are full (`k` of
/// them): a candidate must reach it.
pub(crate) fn full_slots_bound(old: &[f32], k: usize, bound: i32) -> i32 {
    if old.len() < k {
        return bound;
    }
    let worst = old.iter().map(|&x| attn_rank(x)).min();
    bound.max(worst.unwrap_or(ATTN_RANK_NAN))
}

/// The last step of [`attn_topk_block`] (and of the simd128 kernel, which gathers its
/// candidates by vector compares): of the `n` candidates in `work` (`s`, `j`, `r`, in
/// increasing key order), the best `min(n, k)` into `scores`, `idx`, still in key order: the
/// ranks above the `k`-th largest rank `t` and the first of those equal to `t`. Returns how
/// many.
pub(crate) fn keep_best(
    work: &mut AttnTopkWork<'_>,
    n: usize,
    k: usize,
    scores: &mut [f32],
    idx: &mut [u16],
) -> usize {
    let AttnTopkWork { s, j: ci, r, w } = work;
    let mut o = 0;
    let mut keep = |i: usize| {
        scores[o] = s[i];
        idx[o] = ci[i] as u16;
        o += 1;
    };
    if n <= k {
        (0..n).for_each(&mut keep);
        return n;
    }
    w[..n].copy_from_slice(&r[..n]);
    let (_, &mut t, _) = w[..n].select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let mut ties = k - r[..n].iter().filter(|&&x| x > t).count();
    for (i, &ri) in r[..n].iter().enumerate() {
        if ri > t {
            keep(i);
        } else if ri == t && ties > 0 {
            ties -= 1;
            keep(i);
        }
    }
    k
}

/// Softmax over the kept scores, weighting the value rows they name:
/// `out = sum_i e^(s_i - m) v[idx_i * stride..][..hd] / sum_i e^(s_i - m)` with `m` the
/// largest score, rows in slot order. Zeros when `scores` is empty.
pub fn attn_softmax_rows(
    scores: &[f32],
    idx: &[u16],
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
) {
    let out = &mut out[..hd];
    out.fill(0.0);
    if scores.is_empty() {
        return;
    }
    let m = scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sum = 0.0;
    for (&x, &j) in scores.iter().zip(idx) {
        let w = exp_poly(x - m);
        sum += w;
        for (o, &vx) in out.iter_mut().zip(&v[j as usize * stride..][..hd]) {
            *o += w * vx;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// [`attn_softmax_rows`] for up to [`ATTN_LANES`] queries: query `l` has the kept slots
/// `scores[l * k..][..lens[l]]`, `idx[l * k..][..lens[l]]` (`lens[l] <= k`) and its output
/// at `out[l * out_stride..][..hd]` (zeros when it kept nothing).
pub fn attn_softmax_lanes(a: &AttnSoftmaxArgs<'_>, out: &mut [f32], out_stride: usize) {
    for l in 0..a.lanes() {
        let (scores, idx) = a.slots(l);
        let out = &mut out[l * out_stride..][..a.hd];
        attn_softmax_rows(scores, idx, a.v, a.stride, a.hd, out);
    }
}

/// Dequantizes `n` head rows of `hd` values into `out` (`n * hd` f32, row `r` at `r * hd`):
/// row `r` is the head row at offset `o + r * stride` of `rows` ([`KvRows`]; `o` and `stride`
/// multiples of `hd`). f32 rows are copied, f16 rows converted exactly, int8 values give
/// `scale * (q as f32)` with their group's scale (one rounding). This is how the attention reads a stored cache: one
/// tile of rows at a time.
pub fn kv_rows_to_f32(
    rows: &KvRows<'_>,
    o: usize,
    stride: usize,
    n: usize,
    hd: usize,
    out: &mut [f32],
) {
    for (r, dst) in out.chunks_exact_mut(hd).take(n).enumerate() {
        let a = o + r * stride;
        match rows {
            KvRows::F32(x) => dst.copy_from_slice(&x[a..a + hd]),
            // Exact either way; std builds convert with F16C when the CPU has it.
            KvRows::F16(x) => x[a..a + hd].convert_to_f32_slice(dst),
            KvRows::Int8 { q, scales } => {
                let g = kv_int8_group(hd);
                let groups = dst.chunks_exact_mut(g).zip(q[a..a + hd].chunks_exact(g));
                for (i, (dg, qg)) in groups.enumerate() {
                    let s = scales[a / g + i];
                    for (d, &v) in dg.iter_mut().zip(qg) {
                        *d = s * v as f32;
                    }
                }
            }
        }
    }
}

/// Stores `x` (whole head rows of `hd` f32) into `dst` from offset `o` (a multiple of `hd`):
/// f32 copied, f16 rounded to nearest even, int8 quantized per group of
/// `g = kv_int8_group(hd)` values by [`quantize_i8`] (`scale = max|x| / 127`, value
/// `i` of `dst` with the scale `scales[i / g]`).
pub fn kv_store_rows(x: &[f32], hd: usize, dst: &mut KvRowsMut<'_>, o: usize) {
    match dst {
        KvRowsMut::F32(d) => d[o..o + x.len()].copy_from_slice(x),
        KvRowsMut::F16(d) => d[o..o + x.len()].convert_from_f32_slice(x),
        KvRowsMut::Int8 { q, scales } => {
            let g = kv_int8_group(hd);
            let q = &mut q[o..o + x.len()];
            for (i, (xg, qg)) in x.chunks_exact(g).zip(q.chunks_exact_mut(g)).enumerate() {
                scales[o / g + i] = quantize_i8(xg, qg);
            }
        }
    }
}

/// [`attn_softmax_rows`] over stored value rows ([`KvRows`]): the kept slots `(scores, idx)`
/// weight the head rows at `o + idx * stride` of `v`, each dequantized by [`kv_rows_to_f32`]
/// into `row` (`hd` f32 or more) just before it is added; the same sums in the same order as
/// [`attn_softmax_rows`] over the dequantized rows. Zeros when `scores` is empty.
pub fn attn_softmax_kv_rows(
    (scores, idx): (&[f32], &[u16]),
    (v, o, stride): (&KvRows<'_>, usize, usize),
    hd: usize,
    row: &mut [f32],
    out: &mut [f32],
) {
    let out = &mut out[..hd];
    out.fill(0.0);
    if scores.is_empty() {
        return;
    }
    let row = &mut row[..hd];
    let m = scores
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sum = 0.0;
    for (&x, &j) in scores.iter().zip(idx) {
        let w = exp_poly(x - m);
        sum += w;
        kv_rows_to_f32(v, o + j as usize * stride, stride, 1, hd, row);
        for (o, &vx) in out.iter_mut().zip(row.iter()) {
            *o += w * vx;
        }
    }
    let inv = 1.0 / sum;
    out.iter_mut().for_each(|o| *o *= inv);
}
