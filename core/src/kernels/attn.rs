//! Block kernels of the fast attention path ([`crate::attention`] with
//! [`super::Kernels::Fast`]): the portable (generic) versions, which run on every target and
//! are the reference that the arch versions (`x86_avx512_attn_*`) are tested against.
//!
//! The blocks: up to [`ATTN_LANES`] queries (lanes) of one chunk and one head against a tile
//! of up to [`ATTN_TILE`] consecutive keys. The queries of a block are transposed once
//! (`qt[d * ATTN_LANES + lane]`), so that the scores of one key for every lane are one vector
//! (`s[j * ATTN_LANES + lane]`), and every per-query state (running maximum, sum, threshold)
//! is a vector over the lanes. Lanes never mix: a lane's results do not depend on the other
//! lanes of its block (so not on the chunk size).
//!
//! The exponential is [`exp_poly`], a documented polynomial (Cephes `expf`), the same in the
//! micromath and std builds.

/// Queries per block (lanes of a vector).
pub const ATTN_LANES: usize = 16;
/// Keys per tile.
pub const ATTN_TILE: usize = 16;
/// Largest head width the fast path takes (its block buffers live on the stack:
/// `2 * ATTN_LANES * ATTN_MAX_HEAD_DIM` f32, 16 KiB); wider heads run the reference path.
pub const ATTN_MAX_HEAD_DIM: usize = 128;
/// Scores of one block: `ATTN_TILE` keys x `ATTN_LANES` lanes.
pub const ATTN_BLOCK: usize = ATTN_TILE * ATTN_LANES;
/// Capacity up to which the top-k slots are kept sorted ([`attn_insert_sorted`]); larger
/// `k` use the heap of [`crate::topk::TopK`].
pub const ATTN_SORTED_MAX_K: usize = 32;

/// Below this `exp_poly` returns 0 (`ln` of the smallest normal f32 is -87.3365).
pub const EXP_POLY_MIN: f32 = -87.336_54;
/// Above this `exp_poly` returns `+inf`.
pub const EXP_POLY_MAX: f32 = 88.37;

pub(crate) const LOG2E: f32 = core::f32::consts::LOG2_E;
/// ln 2 split in two (Cody-Waite): `LN2_HI` has 9 significant bits, so `n * LN2_HI` is exact
/// for `|n| <= 2^15`.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` minimax coefficients: `e^r ~ 1 + r + r^2 (P0 r^5 + ... + P5)` on
/// `|r| <= ln(2) / 2`.
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_2e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` by range reduction and a degree-7 polynomial (Cephes `expf`): `x = n ln 2 + r`,
/// `|r| <= ln(2)/2`, `e^x = 2^n (1 + r + r^2 P(r))`.
///
/// Domain: results are 0 for `x < EXP_POLY_MIN` (and `-inf`), `+inf` above `EXP_POLY_MAX`.
/// Measured max relative error on `[EXP_POLY_MIN, EXP_POLY_MAX]` against f64: 8.1e-8
/// (under 1 ulp; 1.2e-7 for the AVX-512 version with FMA; `tests/tests/attn_kernels.rs`
/// asserts 2e-7 over 2 million points), and `exp_poly(0) == 1` exactly. NaN gives NaN. Pure f32 arithmetic (no FMA), so bit-identical on every target.
#[inline]
pub fn exp_poly(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_POLY_MIN {
        return 0.0;
    }
    if x > EXP_POLY_MAX {
        return f32::INFINITY;
    }
    // Round to nearest (even) by the 1.5 * 2^23 trick: |x log2 e| < 128.
    const ROUND: f32 = 12_582_912.0;
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = EXP_P[0];
    for &c in &EXP_P[1..] {
        p = p * r + c;
    }
    let y = p * (r * r) + r + 1.0;
    // 2^n for n in [-126, 127]: n >= round(-87.34 log2 e) = -126 and <= 127.
    let two_n = f32::from_bits(((n as i32 + 127) as u32) << 23);
    y * two_n
}

/// `e^x` in place over a slice, element by element ([`exp_poly`]).
pub fn exp_poly_slice(x: &mut [f32]) {
    for v in x {
        *v = exp_poly(*v);
    }
}

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
pub fn attn_scores_tile(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    s: &mut [f32; ATTN_BLOCK],
) {
    for j in 0..nk.min(ATTN_TILE) {
        let kr = &k[j * stride..][..hd];
        let mut acc = [0f32; ATTN_LANES];
        for (d, &kd) in kr.iter().enumerate() {
            let q = &qt[d * ATTN_LANES..][..ATTN_LANES];
            for l in 0..ATTN_LANES {
                acc[l] += q[l] * kd;
            }
        }
        for l in 0..ATTN_LANES {
            s[j * ATTN_LANES + l] = acc[l] * scale;
        }
    }
}

/// Online-softmax state of the lanes of a dense block.
pub struct AttnDenseState {
    /// Running maximum per lane (`-inf` before the first visible key).
    pub max: [f32; ATTN_LANES],
    /// Running sum of `e^(s - max)` per lane.
    pub sum: [f32; ATTN_LANES],
    /// Weighted value sums, `acc[lane * hd + d]` (relative to `max`).
    pub acc: [f32; ATTN_LANES * ATTN_MAX_HEAD_DIM],
}

impl AttnDenseState {
    /// The empty state (no key seen by any lane).
    pub fn new() -> Self {
        AttnDenseState {
            max: [f32::NEG_INFINITY; ATTN_LANES],
            sum: [0.0; ATTN_LANES],
            acc: [0.0; ATTN_LANES * ATTN_MAX_HEAD_DIM],
        }
    }
}

impl Default for AttnDenseState {
    fn default() -> Self {
        Self::new()
    }
}

/// One tile of the blocked online softmax: for each lane, the tile's maximum over the keys it
/// sees (`vis[j]` bit `lane`) becomes the running maximum if larger (rescaling the sum and
/// the accumulator by `e^(old - new)`), then each visible key adds `w = e^(s - max)` to the
/// sum and `w * v_j` to the accumulator (`v_j = v[j * stride..][..hd]`, keys in increasing
/// order). Keys a lane does not see never touch it.
pub fn attn_dense_tile(
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
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
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    thr: &[f32; ATTN_LANES],
    open: u16,
    cand: &mut [u16; ATTN_TILE],
) -> u16 {
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

/// Inserts `(x, j)` into the slots `scores[..len]`, `idx[..len]` kept sorted best first
/// (score descending; on equal scores the lower index first), with capacity
/// `k = min(scores.len(), idx.len())`, and returns the new length. `j` must be larger than
/// every kept index (keys stream in increasing order), so it goes after equal scores; when
/// the slots are full it replaces the last (worst) pair if `x` is larger, else nothing
/// changes. A NaN score goes last when it is inserted (later pairs may land after it).
pub fn attn_insert_sorted(
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    x: f32,
    j: u16,
) -> usize {
    let k = scores.len().min(idx.len());
    let len = len.min(k);
    if k == 0 {
        return 0;
    }
    // Kept scores below x form a suffix of the sorted slots: x goes just before it (NaN x:
    // last). Counted rather than scanned, so that kept NaN scores place x as the vector
    // kernels do. Full slots with nothing below x: x is not kept.
    let p = len - scores[..len].iter().filter(|&&s| s < x).count();
    if p == k {
        return len;
    }
    let end = if len == k { k - 1 } else { len };
    scores.copy_within(p..end, p + 1);
    idx.copy_within(p..end, p + 1);
    scores[p] = x;
    idx[p] = j;
    end + 1
}

/// The sorted-slot top-k update of a tile for every lane (`k <= ATTN_SORTED_MAX_K`): each
/// candidate `cand[j]` bit `lane` offers `(s[j][lane], t0 + j)` to lane `lane`'s slots
/// (`scores[lane * k..][..k]`, `idx[lane * k..][..k]`, length `lens[lane]`) by
/// [`attn_insert_sorted`], keys in increasing order; a lane whose slots are full gets its
/// worst kept score as threshold `thr[lane]` and leaves `open`.
#[allow(clippy::too_many_arguments)]
pub fn attn_topk_tile(
    s: &[f32; ATTN_BLOCK],
    cand: &[u16; ATTN_TILE],
    t0: u16,
    k: usize,
    scores: &mut [f32],
    idx: &mut [u16],
    lens: &mut [u32],
    thr: &mut [f32; ATTN_LANES],
    open: &mut u16,
) {
    for (j, &cj) in cand.iter().enumerate() {
        let mut cm = cj;
        while cm != 0 {
            let l = cm.trailing_zeros() as usize;
            cm &= cm - 1;
            let (ls, li) = (&mut scores[l * k..][..k], &mut idx[l * k..][..k]);
            let len = attn_insert_sorted(
                ls,
                li,
                lens[l] as usize,
                s[j * ATTN_LANES + l],
                t0 + j as u16,
            );
            lens[l] = len as u32;
            if len == k {
                thr[l] = ls[k - 1];
                *open &= !(1 << l);
            }
        }
    }
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

// The fast path's choice: the AVX-512 kernels in std builds on x86-64 (each falls back to the
// generic one when the CPU lacks AVX-512F), the simd128 score and dense tiles on wasm, the
// generic ones elsewhere.
#[cfg(not(all(feature = "std", target_arch = "x86_64")))]
pub(crate) use self::{
    attn_candidates as candidates_fast, attn_softmax_rows as softmax_rows_fast,
    attn_topk_tile as topk_tile_fast,
};
#[cfg(not(any(
    all(feature = "std", target_arch = "x86_64"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub(crate) use self::{attn_dense_tile as dense_tile_fast, attn_scores_tile as scores_tile_fast};
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use super::wasm_simd128::{
    wasm_simd128_attn_dense_tile as dense_tile_fast,
    wasm_simd128_attn_scores_tile as scores_tile_fast,
};
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub(crate) use super::x86_attention::{
    x86_avx512_attn_candidates as candidates_fast, x86_avx512_attn_dense_tile as dense_tile_fast,
    x86_avx512_attn_scores_tile as scores_tile_fast,
    x86_avx512_attn_softmax_rows as softmax_rows_fast, x86_avx512_attn_topk_tile as topk_tile_fast,
};
