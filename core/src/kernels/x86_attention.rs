//! x86-64 AVX-512 (F, BW, VL) block kernels of the fast attention path, compiled in std builds
//! and chosen at run time (`is_x86_feature_detected!`). Each overlays a kernel of
//! [`super::attn`] (the generic one runs when the CPU lacks AVX-512F, BW, VL or POPCNT) and is
//! tested against it (`tests/tests/attn_kernels.rs`):
//!
//! - scores: 16 lanes (queries) per vector, one fused multiply-add per dimension and key, in
//!   the same (increasing `d`) order as the generic kernel: differs by the FMA rounding only;
//!   the lane-major scores of the top-k path are the same bits, transposed in registers;
//! - `exp`: the same polynomial as [`super::exp_poly`] with FMA and `vscalefps`;
//! - dense tile and softmax rows: FMA accumulation; lanes that do not see a key get weight 0,
//!   which adds exactly nothing for finite values; the softmax of a block's lanes gives the
//!   bits of the per-row kernel;
//! - candidates and the block top-k: the same masks and slots as the generic kernels
//!   (compares and data movement only). The block top-k filters a query's scores by a lower
//!   bound on its k-th best with vector compares and compress (register form), then finds the
//!   k-th best candidate by counting against 16 thresholds at once ([`kth_rank`]).

use core::arch::x86_64::*;

use super::attn::{
    self as generic, ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_MAX_HEAD_DIM, ATTN_RANK_NAN,
    ATTN_SELECT_MAX_K, ATTN_TILE, AttnDenseState, AttnTopkWork, EXP_P, EXP_POLY_MAX, EXP_POLY_MIN,
    LN2_HI, LN2_LO, LOG2E,
};

/// Whether this CPU runs the kernels of this module (AVX-512F, BW and VL for the u16 slot
/// indices, POPCNT for mask counts). Cached by std.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("popcnt")
}

/// Mask of the first `n` (at most 16) lanes.
#[inline]
fn lanes_mask(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

/// [`generic::exp_poly`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let min = _mm512_set1_ps(EXP_POLY_MIN);
    let max = _mm512_set1_ps(EXP_POLY_MAX);
    // False for NaN, -inf and below the range: those lanes become 0 (NaN restored below).
    let live = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, min);
    let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, max);
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let xc = _mm512_max_ps(_mm512_min_ps(x, max), min);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(xc, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), xc);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        p,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    let y = _mm512_maskz_mov_ps(live, _mm512_scalef_ps(y, n));
    let y = _mm512_mask_mov_ps(y, over, _mm512_set1_ps(f32::INFINITY));
    _mm512_mask_mov_ps(y, nan, x)
}

#[target_feature(enable = "avx512f")]
fn exp_slice_avx512(x: &mut [f32]) {
    for c in x.chunks_mut(16) {
        let m = lanes_mask(c.len());
        // SAFETY: the mask covers exactly the c.len() elements of c; masked-off lanes are
        // neither read nor written.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, c.as_ptr());
            _mm512_mask_storeu_ps(c.as_mut_ptr(), m, exp16(v));
        }
    }
}

/// AVX-512 [`generic::exp_poly_slice`]: within 2 ulp of it (FMA in the polynomial).
pub fn x86_avx512_exp_f32(x: &mut [f32]) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { exp_slice_avx512(x) }
    } else {
        generic::exp_poly_slice(x)
    }
}

/// Scores of keys `j0..j0 + U` of a tile for all 16 lanes: `U` independent FMA chains.
#[inline]
#[target_feature(enable = "avx512f")]
fn scores_keys<const U: usize>(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    j0: usize,
    scale: __m512,
    s: &mut [f32; ATTN_BLOCK],
) {
    let qt = &qt[..hd * ATTN_LANES];
    // A plain loop: `core::array::from_fn` with a closure was not inlined here (a call per
    // key, about 5% of the fast attention's time).
    let mut rows: [&[f32]; U] = [&[]; U];
    for (u, r) in rows.iter_mut().enumerate() {
        *r = &k[(j0 + u) * stride..][..hd];
    }
    let mut acc = [_mm512_setzero_ps(); U];
    for (d, q) in qt.chunks_exact(ATTN_LANES).enumerate() {
        // SAFETY: q has exactly 16 elements.
        let q = unsafe { _mm512_loadu_ps(q.as_ptr()) };
        for u in 0..U {
            acc[u] = _mm512_fmadd_ps(q, _mm512_set1_ps(rows[u][d]), acc[u]);
        }
    }
    for (u, a) in acc.iter().enumerate() {
        let o = &mut s[(j0 + u) * ATTN_LANES..][..ATTN_LANES];
        // SAFETY: o has exactly 16 elements.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_mul_ps(*a, scale)) };
    }
}

#[target_feature(enable = "avx512f")]
fn scores_tile_avx512(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    s: &mut [f32; ATTN_BLOCK],
) {
    let nk = nk.min(ATTN_TILE);
    let sc = _mm512_set1_ps(scale);
    let mut j = 0;
    while j + 8 <= nk {
        scores_keys::<8>(qt, hd, k, stride, j, sc, s);
        j += 8;
    }
    while j + 4 <= nk {
        scores_keys::<4>(qt, hd, k, stride, j, sc, s);
        j += 4;
    }
    while j < nk {
        scores_keys::<1>(qt, hd, k, stride, j, sc, s);
        j += 1;
    }
}

/// AVX-512 [`generic::attn_scores_tile`] (same arguments and order of terms, fused).
pub fn x86_avx512_attn_scores_tile(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    s: &mut [f32; ATTN_BLOCK],
) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { scores_tile_avx512(qt, hd, k, stride, nk, scale, s) }
    } else {
        generic::attn_scores_tile(qt, hd, k, stride, nk, scale, s)
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load16(x: &[f32]) -> __m512 {
    let x = &x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store16(x: &mut [f32], v: __m512) {
    let x = &mut x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
}

/// `row[..] *= c`, 16 at a time with a masked tail.
#[inline]
#[target_feature(enable = "avx512f")]
fn scale_row(row: &mut [f32], c: f32) {
    let c = _mm512_set1_ps(c);
    for ch in row.chunks_mut(16) {
        let m = lanes_mask(ch.len());
        // SAFETY: the mask covers exactly ch's elements.
        unsafe {
            let v = _mm512_maskz_loadu_ps(m, ch.as_ptr());
            _mm512_mask_storeu_ps(ch.as_mut_ptr(), m, _mm512_mul_ps(v, c));
        }
    }
}

/// Value sums of lanes `l0..l0 + U`, dimensions `dc..dc + 16` (mask `dm`): `acc_l += w[j][l]
/// * v_j` over the keys of `keys` (a bit per key), one FMA chain per lane.
#[inline]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
fn accumulate_lanes<const U: usize>(
    w: &[f32; ATTN_BLOCK],
    keys: u16,
    v: &[f32],
    stride: usize,
    hd: usize,
    l0: usize,
    dc: usize,
    acc: &mut [f32],
) {
    let dm = lanes_mask(hd - dc);
    let width = (hd - dc).min(16);
    let mut a = [_mm512_setzero_ps(); U];
    for (u, au) in a.iter_mut().enumerate() {
        let row = &acc[(l0 + u) * hd + dc..][..width];
        // SAFETY: dm covers exactly row's `width` elements.
        *au = unsafe { _mm512_maskz_loadu_ps(dm, row.as_ptr()) };
    }
    let mut ks = keys;
    while ks != 0 {
        let j = ks.trailing_zeros() as usize;
        ks &= ks - 1;
        let vr = &v[j * stride + dc..][..width];
        // SAFETY: dm covers exactly vr's `width` elements.
        let vj = unsafe { _mm512_maskz_loadu_ps(dm, vr.as_ptr()) };
        let wj = &w[j * ATTN_LANES + l0..][..U];
        for u in 0..U {
            a[u] = _mm512_fmadd_ps(_mm512_set1_ps(wj[u]), vj, a[u]);
        }
    }
    for (u, au) in a.iter().enumerate() {
        let row = &mut acc[(l0 + u) * hd + dc..][..width];
        // SAFETY: dm covers exactly row's `width` elements.
        unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr(), dm, *au) };
    }
}

#[target_feature(enable = "avx512f")]
fn dense_tile_avx512(
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    let nk = nk.min(ATTN_TILE);
    let mut bm = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut seen = 0u16;
    let mut keys = 0u16;
    for j in 0..nk {
        if vis[j] != 0 {
            keys |= 1 << j;
            seen |= vis[j];
            let sj = load16(&s[j * ATTN_LANES..]);
            bm = _mm512_mask_max_ps(bm, vis[j], bm, sj);
        }
    }
    if keys == 0 {
        return;
    }
    let m_old = load16(&st.max);
    let grow = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(bm, m_old);
    let m = _mm512_mask_mov_ps(m_old, grow, bm);
    let mut sum = load16(&st.sum);
    if grow != 0 {
        // e^(-inf) = 0: a lane's first visible key resets its (zero) sum and accumulator.
        let c = _mm512_mask_mov_ps(_mm512_set1_ps(1.0), grow, exp16(_mm512_sub_ps(m_old, m)));
        sum = _mm512_mul_ps(sum, c);
        let mut cs = [0f32; ATTN_LANES];
        store16(&mut cs, c);
        let mut g = grow;
        while g != 0 {
            let l = g.trailing_zeros() as usize;
            g &= g - 1;
            scale_row(&mut st.acc[l * hd..][..hd], cs[l]);
        }
        store16(&mut st.max, m);
    }
    let mut w = [0f32; ATTN_BLOCK];
    let mut ks = keys;
    while ks != 0 {
        let j = ks.trailing_zeros() as usize;
        ks &= ks - 1;
        let sj = load16(&s[j * ATTN_LANES..]);
        let wj = _mm512_maskz_mov_ps(vis[j], exp16(_mm512_sub_ps(sj, m)));
        sum = _mm512_add_ps(sum, wj);
        store16(&mut w[j * ATTN_LANES..], wj);
    }
    store16(&mut st.sum, sum);
    let nl = 16 - seen.leading_zeros() as usize;
    let acc = &mut st.acc[..];
    for dc in (0..hd).step_by(16) {
        let mut l = 0;
        while l + 8 <= nl {
            accumulate_lanes::<8>(&w, keys, v, stride, hd, l, dc, acc);
            l += 8;
        }
        while l + 4 <= nl {
            accumulate_lanes::<4>(&w, keys, v, stride, hd, l, dc, acc);
            l += 4;
        }
        while l < nl {
            accumulate_lanes::<1>(&w, keys, v, stride, hd, l, dc, acc);
            l += 1;
        }
    }
}

/// AVX-512 [`generic::attn_dense_tile`] (`hd <= ATTN_MAX_HEAD_DIM`).
pub fn x86_avx512_attn_dense_tile(
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { dense_tile_avx512(s, vis, nk, v, stride, hd, st) }
    } else {
        generic::attn_dense_tile(s, vis, nk, v, stride, hd, st)
    }
}

#[target_feature(enable = "avx512f")]
fn candidates_avx512(
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    thr: &[f32; ATTN_LANES],
    open: u16,
    cand: &mut [u16; ATTN_TILE],
) -> u16 {
    let t = load16(thr);
    let mut any = 0;
    for j in 0..ATTN_TILE {
        let m = if j < nk && vis[j] != 0 {
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(load16(&s[j * ATTN_LANES..]), t);
            vis[j] & (gt | open)
        } else {
            0
        };
        cand[j] = m;
        any |= m;
    }
    any
}

/// AVX-512 [`generic::attn_candidates`]: the same masks.
pub fn x86_avx512_attn_candidates(
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    thr: &[f32; ATTN_LANES],
    open: u16,
    cand: &mut [u16; ATTN_TILE],
) -> u16 {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { candidates_avx512(s, vis, nk, thr, open, cand) }
    } else {
        generic::attn_candidates(s, vis, nk, thr, open, cand)
    }
}

/// `acc[c] += sum_i w[i] * v_i[16 c..]` over the rows `v_i = v[idx[i] * stride..][..hd]`
/// (`C` vectors of 16 dimensions, `hd <= 16 C`; masked loads past `hd`, or `FULL`: `hd == 16 C`
/// and plain loads, which fold into the FMAs), `U` rows in flight, each with its own
/// accumulators (so that the FMA latency is hidden for narrow heads). Panics (as slicing
/// would) when a row is not inside `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn weighted_rows<const C: usize, const U: usize, const FULL: bool>(
    w: &[f32],
    idx: &[u16],
    v: &[f32],
    stride: usize,
    hd: usize,
    acc: &mut [__m512; C],
) {
    let n = w.len().min(idx.len());
    let (w, idx) = (&w[..n], &idx[..n]);
    // Every row is checked once here, so that the loop below is loads and FMAs only.
    let last = idx.iter().fold(0, |m, &j| m.max(j)) as usize;
    let v = &v[..last * stride + hd];
    let masks: [__mmask16; C] = core::array::from_fn(|c| lanes_mask(hd.saturating_sub(c * 16)));
    let mut a = [[_mm512_setzero_ps(); C]; U];
    let row = |i: usize| v.as_ptr().wrapping_add(idx[i] as usize * stride);
    // SAFETY (of the loads below): row r starts at idx * stride <= last * stride and v holds hd
    // elements past that; the mask keeps the load below hd, and FULL says hd == 16 C.
    let load = |r: *const f32, c: usize| unsafe {
        if FULL {
            _mm512_loadu_ps(r.wrapping_add(c * 16))
        } else {
            _mm512_maskz_loadu_ps(masks[c], r.wrapping_add(c * 16))
        }
    };
    let full = n - n % U;
    // Fixed trip counts (full groups of U rows, then single rows), so that the accumulators
    // stay in registers.
    for g in (0..full).step_by(U) {
        for (u, au) in a.iter_mut().enumerate() {
            let (wv, r) = (_mm512_set1_ps(w[g + u]), row(g + u));
            for (c, ac) in au.iter_mut().enumerate() {
                *ac = _mm512_fmadd_ps(wv, load(r, c), *ac);
            }
        }
    }
    for (i, &wi) in w.iter().enumerate().skip(full) {
        let (wv, r) = (_mm512_set1_ps(wi), row(i));
        for (c, ac) in a[0].iter_mut().enumerate() {
            *ac = _mm512_fmadd_ps(wv, load(r, c), *ac);
        }
    }
    for au in &a {
        for c in 0..C {
            acc[c] = _mm512_add_ps(acc[c], au[c]);
        }
    }
}

/// [`softmax_rows_avx512`] for heads of at most `16 C` dimensions: the weights of each 16
/// kept scores by one vector `exp`, the value rows accumulated in registers.
#[inline]
#[target_feature(enable = "avx512f")]
fn softmax_rows_c<const C: usize, const U: usize>(
    scores: &[f32],
    idx: &[u16],
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
) {
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in scores.chunks(16) {
        let m = lanes_mask(c.len());
        // SAFETY: the mask covers exactly c's elements.
        let x = unsafe { _mm512_maskz_loadu_ps(m, c.as_ptr()) };
        mv = _mm512_mask_max_ps(mv, m, mv, x);
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    let mut acc = [_mm512_setzero_ps(); C];
    let mut sum = _mm512_setzero_ps();
    let mut wb = [0f32; 16];
    for (c, ic) in scores.chunks(16).zip(idx.chunks(16)) {
        let m = lanes_mask(c.len());
        // SAFETY: the mask covers exactly c's elements.
        let x = unsafe { _mm512_maskz_loadu_ps(m, c.as_ptr()) };
        let w = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, mx)));
        sum = _mm512_add_ps(sum, w);
        store16(&mut wb, w);
        if hd == 16 * C {
            weighted_rows::<C, U, true>(&wb[..c.len()], ic, v, stride, hd, &mut acc);
        } else {
            weighted_rows::<C, U, false>(&wb[..c.len()], ic, v, stride, hd, &mut acc);
        }
    }
    let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
    for (c, a) in acc.iter().enumerate().take(hd.div_ceil(16)) {
        let width = (hd - c * 16).min(16);
        let o = &mut out[c * 16..][..width];
        // SAFETY: the mask covers exactly o's `width` elements.
        unsafe { _mm512_mask_storeu_ps(o.as_mut_ptr(), lanes_mask(width), _mm512_mul_ps(*a, inv)) };
    }
}

#[target_feature(enable = "avx512f")]
fn softmax_rows_avx512(
    scores: &[f32],
    idx: &[u16],
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
) {
    let n = scores.len().min(idx.len());
    let (scores, idx) = (&scores[..n], &idx[..n]);
    let out = &mut out[..hd];
    if n == 0 {
        out.fill(0.0);
        return;
    }
    match hd.div_ceil(16) {
        1 => softmax_rows_c::<1, 4>(scores, idx, v, stride, hd, out),
        2 => softmax_rows_c::<2, 4>(scores, idx, v, stride, hd, out),
        3 | 4 => softmax_rows_c::<4, 2>(scores, idx, v, stride, hd, out),
        _ => softmax_rows_c::<8, 1>(scores, idx, v, stride, hd, out),
    }
}

/// AVX-512 [`generic::attn_softmax_rows`] (the generic kernel for `hd > ATTN_MAX_HEAD_DIM`).
pub fn x86_avx512_attn_softmax_rows(
    scores: &[f32],
    idx: &[u16],
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
) {
    if available() && hd <= ATTN_MAX_HEAD_DIM {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { softmax_rows_avx512(scores, idx, v, stride, hd, out) }
    } else {
        generic::attn_softmax_rows(scores, idx, v, stride, hd, out)
    }
}

/// [`softmax_lanes_avx512`] for heads of at most `16 C` dimensions and `k <= 32`: first the
/// weights of every lane (independent chains of maximum, `exp` and sum, which overlap), then
/// the value rows of each lane accumulated in registers. The same operations in the same
/// order as [`softmax_rows_c`], so the same bits.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f")]
fn softmax_lanes_c<const C: usize, const U: usize>(
    scores: &[f32],
    idx: &[u16],
    lens: &[u32],
    k: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let lanes = lens.len().min(ATTN_LANES);
    let mut w = [0f32; ATTN_LANES * 32];
    let mut inv = [0f32; ATTN_LANES];
    for l in 0..lanes {
        let n = (lens[l] as usize).min(k);
        let sl = &scores[l * k..][..n];
        let (m_lo, m_hi) = (lanes_mask(n), lanes_mask(n.saturating_sub(16)));
        // SAFETY: the loads are masked to the n elements of sl (the high half starts at
        // element 16, which exists when its mask is not empty).
        let (x0, x1) = unsafe {
            (
                _mm512_maskz_loadu_ps(m_lo, sl.as_ptr()),
                _mm512_maskz_loadu_ps(m_hi, sl.as_ptr().wrapping_add(16)),
            )
        };
        let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
        let mx = _mm512_max_ps(
            _mm512_mask_mov_ps(ninf, m_lo, x0),
            _mm512_mask_mov_ps(ninf, m_hi, x1),
        );
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let w0 = _mm512_maskz_mov_ps(m_lo, exp16(_mm512_sub_ps(x0, mx)));
        let w1 = _mm512_maskz_mov_ps(m_hi, exp16(_mm512_sub_ps(x1, mx)));
        store16(&mut w[l * 32..], w0);
        store16(&mut w[l * 32 + 16..], w1);
        inv[l] = 1.0 / _mm512_reduce_add_ps(_mm512_add_ps(w0, w1));
    }
    for l in 0..lanes {
        let n = (lens[l] as usize).min(k);
        let o = &mut out[l * out_stride..][..hd];
        if n == 0 {
            o.fill(0.0);
            continue;
        }
        let mut acc = [_mm512_setzero_ps(); C];
        // By chunks of 16 rows as softmax_rows_c, so that the sums are the same (the kernel
        // must not depend on k, which may be the number of keys).
        let (wl, il) = (&w[l * 32..][..n], &idx[l * k..][..n]);
        for (wc, ic) in wl.chunks(16).zip(il.chunks(16)) {
            if hd == 16 * C {
                weighted_rows::<C, U, true>(wc, ic, v, stride, hd, &mut acc);
            } else {
                weighted_rows::<C, U, false>(wc, ic, v, stride, hd, &mut acc);
            }
        }
        let iv = _mm512_set1_ps(inv[l]);
        for (c, a) in acc.iter().enumerate().take(hd.div_ceil(16)) {
            let width = (hd - c * 16).min(16);
            let oc = &mut o[c * 16..][..width];
            // SAFETY: the mask covers exactly oc's `width` elements.
            unsafe {
                _mm512_mask_storeu_ps(oc.as_mut_ptr(), lanes_mask(width), _mm512_mul_ps(*a, iv))
            };
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
fn softmax_lanes_avx512(
    scores: &[f32],
    idx: &[u16],
    lens: &[u32],
    k: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let a = (scores, idx, lens, k, v, stride, hd);
    match hd.div_ceil(16) {
        1 => softmax_lanes_c::<1, 4>(a.0, a.1, a.2, a.3, a.4, a.5, a.6, out, out_stride),
        2 => softmax_lanes_c::<2, 4>(a.0, a.1, a.2, a.3, a.4, a.5, a.6, out, out_stride),
        3 | 4 => softmax_lanes_c::<4, 2>(a.0, a.1, a.2, a.3, a.4, a.5, a.6, out, out_stride),
        _ => softmax_lanes_c::<8, 1>(a.0, a.1, a.2, a.3, a.4, a.5, a.6, out, out_stride),
    }
}

/// AVX-512 [`generic::attn_softmax_lanes`] (per lane [`x86_avx512_attn_softmax_rows`] for
/// `k > 32`; the generic kernel for `hd > ATTN_MAX_HEAD_DIM`).
#[allow(clippy::too_many_arguments)]
pub fn x86_avx512_attn_softmax_lanes(
    scores: &[f32],
    idx: &[u16],
    lens: &[u32],
    k: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if available() && hd <= ATTN_MAX_HEAD_DIM && k <= 32 {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { softmax_lanes_avx512(scores, idx, lens, k, v, stride, hd, out, out_stride) }
    } else if available() && hd <= ATTN_MAX_HEAD_DIM {
        for (l, &n) in lens.iter().enumerate().take(ATTN_LANES) {
            let n = (n as usize).min(k);
            let o = &mut out[l * out_stride..][..hd];
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe {
                softmax_rows_avx512(&scores[l * k..][..n], &idx[l * k..][..n], v, stride, hd, o)
            }
        }
    } else {
        generic::attn_softmax_lanes(scores, idx, lens, k, v, stride, hd, out, out_stride)
    }
}

/// 16 x 16 transpose: lane `a` of `out[e]` is lane `e` of `r[a]`. Four rounds of 16 shuffles:
/// 32-bit pairs, 64-bit pairs, then 128-bit lanes twice.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &[__m512; 16]) -> [__m512; 16] {
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // u[4g + c], 128-bit lane L: rows 4g..4g + 4 of element 4L + c.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let a = _mm512_castps_pd(t[4 * g]);
        let b = _mm512_castps_pd(t[4 * g + 1]);
        let c = _mm512_castps_pd(t[4 * g + 2]);
        let d = _mm512_castps_pd(t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let v0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
        let v1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
        let w0 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
        let w1 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
        out[c] = _mm512_shuffle_f32x4::<0x88>(v0, w0);
        out[4 + c] = _mm512_shuffle_f32x4::<0xDD>(v0, w0);
        out[8 + c] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
        out[12 + c] = _mm512_shuffle_f32x4::<0xDD>(v1, w1);
    }
    out
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
fn scores_rows_avx512(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    rows: &mut [f32],
    rs: usize,
) {
    let nk = nk.min(ATTN_TILE);
    let mut r = [_mm512_setzero_ps(); 16];
    if nk == ATTN_TILE {
        // A whole tile: the 16 keys' chains of scores_keys side by side, in registers.
        let qt = &qt[..hd * ATTN_LANES];
        let mut kr: [&[f32]; 16] = [&[]; 16];
        for (u, kru) in kr.iter_mut().enumerate() {
            *kru = &k[u * stride..][..hd];
        }
        for (d, q) in qt.chunks_exact(ATTN_LANES).enumerate() {
            let q = load16(q);
            for u in 0..16 {
                r[u] = _mm512_fmadd_ps(q, _mm512_set1_ps(kr[u][d]), r[u]);
            }
        }
        let sc = _mm512_set1_ps(scale);
        for ru in &mut r {
            *ru = _mm512_mul_ps(*ru, sc);
        }
    } else {
        let mut s = [0f32; ATTN_BLOCK];
        scores_tile_avx512(qt, hd, k, stride, nk, scale, &mut s);
        for (j, rj) in r.iter_mut().enumerate() {
            *rj = load16(&s[j * ATTN_LANES..]);
        }
    }
    let m = lanes_mask(nk);
    for (l, cl) in transpose16(&r).iter().enumerate() {
        let row = &mut rows[l * rs..][..nk];
        // SAFETY: m covers exactly row's nk elements.
        unsafe { _mm512_mask_storeu_ps(row.as_mut_ptr(), m, *cl) };
    }
}

/// AVX-512 [`generic::attn_scores_rows`]: the scores of [`x86_avx512_attn_scores_tile`]
/// (the same bits), transposed in registers.
#[allow(clippy::too_many_arguments)]
pub fn x86_avx512_attn_scores_rows(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    rows: &mut [f32],
    rs: usize,
) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { scores_rows_avx512(qt, hd, k, stride, nk, scale, rows, rs) }
    } else {
        generic::attn_scores_rows(qt, hd, k, stride, nk, scale, rows, rs)
    }
}

/// [`generic::attn_rank`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn rank16(x: __m512) -> __m512i {
    let b = _mm512_castps_si512(_mm512_add_ps(x, _mm512_setzero_ps()));
    let r = _mm512_xor_si512(b, _mm512_srli_epi32::<1>(_mm512_srai_epi32::<31>(b)));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(ATTN_RANK_NAN))
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load16i(x: &[i32]) -> __m512i {
    let x = &x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_loadu_si512(x.as_ptr() as *const __m512i) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store16i(x: &mut [i32], v: __m512i) {
    let x = &mut x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_storeu_si512(x.as_mut_ptr() as *mut __m512i, v) }
}

/// The `need`-th largest of the 16 lanes of `v` (`1 <= need <=` the lanes above `i32::MIN`,
/// which pads): the smallest lane with fewer than `need` lanes above it. All pairs are
/// compared by the 15 rotations (independent, unlike the stages of a sorting network).
#[inline]
#[target_feature(enable = "avx512f")]
fn kth_of_16(v: __m512i, need: usize) -> i32 {
    let ones = _mm512_set1_epi32(1);
    let mut above = [_mm512_setzero_si512(); 3];
    macro_rules! rotations {
        ($($r:literal)*) => {$(
            let p = _mm512_alignr_epi32::<$r>(v, v);
            let a = &mut above[$r % 3];
            *a = _mm512_mask_add_epi32(*a, _mm512_cmpgt_epi32_mask(p, v), *a, ones);
        )*};
    }
    rotations!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    let above = _mm512_add_epi32(_mm512_add_epi32(above[0], above[1]), above[2]);
    let cand = _mm512_cmplt_epi32_mask(above, _mm512_set1_epi32(need as i32));
    _mm512_mask_reduce_min_epi32(cand, v)
}

/// The two largest per lane `(m1, m2)` updated with the lanes `v` of `x`. A NaN `x`:
/// `min(m1, x)` is `x`, and `max(NaN, m)` is `m`, so NaN never enters `m1` or `m2`.
#[inline]
#[target_feature(enable = "avx512f")]
fn top2((m1, m2): (__m512, __m512), x: __m512, v: __mmask16) -> (__m512, __m512) {
    let mn = _mm512_min_ps(m1, x);
    (
        _mm512_mask_max_ps(m1, v, x, m1),
        _mm512_mask_max_ps(m2, v, mn, m2),
    )
}

/// Two sorted pairs `(a1 >= a2)`, `(b1 >= b2)` merged, per lane: four sorted values.
#[inline]
#[target_feature(enable = "avx512f")]
fn merge2((a1, a2): (__m512, __m512), (b1, b2): (__m512, __m512)) -> [__m512; 4] {
    let (lo1, hi2) = (_mm512_min_ps(a1, b1), _mm512_max_ps(a2, b2));
    [
        _mm512_max_ps(a1, b1),
        _mm512_max_ps(lo1, hi2),
        _mm512_min_ps(lo1, hi2),
        _mm512_min_ps(a2, b2),
    ]
}

/// The best four of two sorted lists of four, per lane (sorted): the r-th largest of the
/// union is the largest `min(a_i, b_(r - i))` (`a_0 = b_0 = +inf`).
#[inline]
#[target_feature(enable = "avx512f")]
fn best4(a: [__m512; 4], b: [__m512; 4]) -> [__m512; 4] {
    let (mx, mn) = (_mm512_max_ps, _mm512_min_ps);
    [
        mx(a[0], b[0]),
        mx(mx(a[1], b[1]), mn(a[0], b[0])),
        mx(mx(a[2], b[2]), mx(mn(a[0], b[1]), mn(a[1], b[0]))),
        mx(
            mx(a[3], b[3]),
            mx(mn(a[0], b[2]), mx(mn(a[1], b[1]), mn(a[2], b[0]))),
        ),
    ]
}

/// Appends the lanes `m` of `x` and `j` (compressed) to the candidates `s`, `jx` at `n`: the
/// register form of compress and a full-width store (the memory form is microcoded and slow on
/// AMD Zen 4); the buffers have a vector of slack.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
fn push_candidates(
    s: &mut [f32],
    jx: &mut [i32],
    n: &mut usize,
    m: __mmask16,
    x: __m512,
    j: __m512i,
) {
    store16(&mut s[*n..], _mm512_maskz_compress_ps(m, x));
    store16i(&mut jx[*n..], _mm512_maskz_compress_epi32(m, j));
    *n += m.count_ones() as usize;
}

/// Appends the visible keys of a block (`row`, `vis` as in [`generic::attn_topk_block`], keys
/// from `kb0`) to the candidates `s`, `j` after the first `n <= ATTN_SELECT_MAX_K`: all of
/// them (`ALL`) or those scoring at least `bf`. Returns the new count.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
fn push_block<const ALL: bool>(
    row: &[f32],
    vis: &[u16],
    bf: __m512,
    kb0: usize,
    s: &mut [f32],
    j: &mut [i32],
    n: usize,
) -> usize {
    let mut n = n.min(ATTN_SELECT_MAX_K);
    let nt = vis
        .len()
        .min(row.len() / ATTN_TILE)
        .min(ATTN_KEY_BLOCK / ATTN_TILE);
    if n + (nt + 1) * ATTN_TILE > s.len().min(j.len()) {
        debug_assert!(false, "push_block: candidate buffers too short");
        return n;
    }
    let mut key = _mm512_add_epi32(
        _mm512_set1_epi32(kb0 as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    let (sp, jp) = (s.as_mut_ptr(), j.as_mut_ptr());
    for (x, &v) in row[..nt * ATTN_TILE]
        .chunks_exact(ATTN_TILE)
        .zip(&vis[..nt])
    {
        let x = load16(x);
        let m = if ALL {
            v
        } else {
            _mm512_mask_cmp_ps_mask::<_CMP_GE_OQ>(v, x, bf)
        };
        // Compress in registers and store whole vectors: the memory form of compress is
        // microcoded and slow on AMD Zen 4.
        // SAFETY: before tile t, n <= n0 + 16 t (a tile adds at most 16), and s and j hold
        // n0 + 16 (nt + 1) or more (checked above), so the 16 lanes from n are inside them.
        unsafe {
            _mm512_storeu_ps(sp.add(n), _mm512_maskz_compress_ps(m, x));
            _mm512_storeu_si512(
                jp.add(n) as *mut __m512i,
                _mm512_maskz_compress_epi32(m, key),
            );
        }
        n += m.count_ones() as usize;
        key = _mm512_add_epi32(key, _mm512_set1_epi32(ATTN_TILE as i32));
    }
    n
}

/// Stores the lanes `m` of `x` and `j` (compressed, `j` as u16) at `o` in the slots.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
fn store_slots(
    scores: &mut [f32],
    idx: &mut [u16],
    o: &mut usize,
    m: __mmask16,
    x: __m512,
    j: __m512i,
) {
    let c = m.count_ones() as usize;
    let (ss, is) = (&mut scores[*o..][..c], &mut idx[*o..][..c]);
    let cm = lanes_mask(c);
    // SAFETY: the stores are masked to the first c lanes, the c elements of ss and is.
    unsafe {
        _mm512_mask_storeu_ps(ss.as_mut_ptr(), cm, _mm512_maskz_compress_ps(m, x));
        let j16 = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(m, j));
        _mm256_mask_storeu_epi16(is.as_mut_ptr() as *mut i16, cm, j16);
    }
    *o += c;
}

/// `counts[i] = #{x in w : x >= t[i]}`, four chains of broadcast compares.
#[inline]
#[target_feature(enable = "avx512f")]
fn count_at_least(w: &[i32], t: __m512i) -> __m512i {
    let ones = _mm512_set1_epi32(1);
    let mut c = [_mm512_setzero_si512(); 4];
    let mut chunks = w.chunks_exact(4);
    for q in &mut chunks {
        for u in 0..4 {
            let m = _mm512_cmple_epi32_mask(t, _mm512_set1_epi32(q[u]));
            c[u] = _mm512_mask_add_epi32(c[u], m, c[u], ones);
        }
    }
    for &x in chunks.remainder() {
        let m = _mm512_cmple_epi32_mask(t, _mm512_set1_epi32(x));
        c[0] = _mm512_mask_add_epi32(c[0], m, c[0], ones);
    }
    _mm512_add_epi32(_mm512_add_epi32(c[0], c[1]), _mm512_add_epi32(c[2], c[3]))
}

/// The elements of `src[..n]` in `[lo, hi]`, compressed to the front of `dst` (which may be
/// `src` itself: element `o <= 16 c` is written after vector `c` is read, so a store never
/// reaches a vector not yet read); returns their number.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
fn keep_range(src: Option<&[i32]>, dst: &mut [i32], n: usize, lo: i32, hi: i32) -> usize {
    let (lv, hv) = (_mm512_set1_epi32(lo), _mm512_set1_epi32(hi));
    let mut o = 0;
    for c in 0..n.div_ceil(16) {
        let x = load16i(&src.unwrap_or(dst)[c * 16..]);
        let m = _mm512_mask_cmpge_epi32_mask(lanes_mask(n - c * 16), x, lv)
            & _mm512_cmple_epi32_mask(x, hv);
        store16i(&mut dst[o..], _mm512_maskz_compress_epi32(m, x));
        o += m.count_ones() as usize;
    }
    o
}

/// The cut of the `k` best of `r[..n]` (`k <= n`, all ranks in `[lo, hi]`): a rank `t` and
/// `gt = #{r > t} <= k` with `#{r >= t} >= k`, so that the best are the ranks above `t` and
/// the first `k - gt` equal to it. Counts against 16 thresholds at once narrow the range to
/// the bucket that holds the `k`-th largest and the working set (`r`, then `w`) to its
/// elements, until 16 or fewer remain ([`kth_of_16`]) or they are all equal. The first
/// round's thresholds are a sample of the candidates; the later ones are evenly spaced in
/// `[lo, hi]`, which shrinks 16-fold per round, so there are at most 9 rounds.
#[target_feature(enable = "avx512f,popcnt")]
fn kth_rank(r: &[i32], w: &mut [i32], n: usize, k: usize, lo: i32, hi: i32) -> (i32, usize) {
    let (mut lo, mut hi, mut need, mut nw) = (lo as i64, hi as i64, k, n);
    let mut first = true;
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    loop {
        let ws: &[i32] = if first { r } else { &w[..] };
        if nw <= 16 {
            let v = _mm512_mask_mov_epi32(_mm512_set1_epi32(i32::MIN), lanes_mask(nw), load16i(ws));
            let t = kth_of_16(v, need);
            let gt = _mm512_cmpgt_epi32_mask(v, _mm512_set1_epi32(t)).count_ones() as usize;
            return (t, k - need + gt);
        }
        if lo == hi {
            return (lo as i32, k - need);
        }
        let tv = if first {
            // The first round: 16 of the candidates at a stride of nw / 16 (they are in key
            // order, so a sample of the ranks), lane 0 replaced by lo: thresholds near the
            // quantiles of the candidates, whatever their spread (real attention has a few
            // scores far above the rest, which even spacing would put in one bucket).
            let pos =
                _mm512_srli_epi32::<4>(_mm512_mullo_epi32(iota, _mm512_set1_epi32(nw as i32)));
            // SAFETY: the positions (i * nw) / 16 are below nw <= r.len().
            let sample = unsafe { _mm512_i32gather_epi32::<4>(pos, r.as_ptr()) };
            _mm512_mask_mov_epi32(sample, 1, _mm512_set1_epi32(lo as i32))
        } else {
            // Later rounds: evenly spaced, T_i = lo + i * step, so that the range shrinks
            // 16-fold (T_15 <= hi + 15: no overflow, hi <= attn_rank(inf)).
            let step = ((hi - lo) >> 4) + 1;
            _mm512_add_epi32(
                _mm512_set1_epi32(lo as i32),
                _mm512_mullo_epi32(iota, _mm512_set1_epi32(step as i32)),
            )
        };
        let cv = count_at_least(&ws[..nw], tv);
        // The thresholds with at least `need` elements at or above them (lane 0, lo, is one):
        // the largest of them, blo, and the smallest of the others, bhi + 1, bound the bucket
        // that holds the need-th largest (a larger threshold has a smaller count; the
        // thresholds need not be sorted).
        let ge = _mm512_cmpge_epi32_mask(cv, _mm512_set1_epi32(need as i32));
        let blo = _mm512_mask_reduce_max_epi32(ge, tv) as i64;
        let at_lo = _mm512_mask_reduce_min_epi32(ge, cv) as usize;
        let (bhi, above) = if ge == u16::MAX {
            (hi, 0)
        } else {
            let lt = !ge;
            let next = _mm512_mask_reduce_min_epi32(lt, tv) as i64;
            (
                hi.min(next - 1),
                _mm512_mask_reduce_max_epi32(lt, cv) as usize,
            )
        };
        let nb = at_lo - above;
        need -= above;
        if nb == need {
            // Everything from blo up is kept: exactly k above blo - 1.
            return ((blo - 1) as i32, k);
        }
        let src = if first { Some(r) } else { None };
        nw = keep_range(src, &mut w[..], nw, blo as i32, bhi as i32);
        (lo, hi, first) = (blo, bhi, false);
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
fn topk_block_avx512(
    row: &[f32],
    vis: &[u16],
    kb0: usize,
    k: usize,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut AttnTopkWork,
) -> usize {
    let (k, nt, len) = generic::topk_block_sizes(row, vis, k, scores, idx, len);
    if k == 0 {
        return 0;
    }
    // Every candidate buffer holds the old slots, the block's keys and a vector of slack (the
    // stores below write whole vectors).
    let cap = generic::attn_cand_cap(k, nt * ATTN_TILE);
    let lens = [work.s.len(), work.j.len(), work.r.len(), work.w.len()];
    if lens.into_iter().any(|l| l < cap) {
        return generic::attn_topk_block(row, vis, kb0, k, scores, idx, len, work);
    }
    // A lower bound on the block's k-th best (finer than the generic kernel's, same idea).
    // Per lane (16 keys apart) and tile mod 4 (four chains), the two best visible non-NaN
    // scores: eight distinct keys per lane, whose best four are merged below.
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut c = [(ninf, ninf); 4];
    let (rows4, rest) = row[..nt * ATTN_TILE].split_at(nt / 4 * 4 * ATTN_TILE);
    for (x, v) in rows4.chunks_exact(4 * ATTN_TILE).zip(vis.chunks_exact(4)) {
        let [c0, c1, c2, c3] = c;
        c = [
            top2(c0, load16(&x[..ATTN_TILE]), v[0]),
            top2(c1, load16(&x[ATTN_TILE..2 * ATTN_TILE]), v[1]),
            top2(c2, load16(&x[2 * ATTN_TILE..3 * ATTN_TILE]), v[2]),
            top2(c3, load16(&x[3 * ATTN_TILE..]), v[3]),
        ];
    }
    for (t, x) in rest.chunks_exact(ATTN_TILE).enumerate() {
        c[t] = top2(c[t], load16(x), vis[nt / 4 * 4 + t]);
    }
    let top = best4(merge2(c[0], c[1]), merge2(c[2], c[3]));
    // Lanes g and g + 8 paired: 8 groups of 32 keys, each with the 4 best above (sorted). The
    // r-th largest of two sorted lists is the largest min(a_i, b_(r - i)); each group has r
    // keys at least its value, so with 8 r >= k the smallest over the groups is at most the
    // k-th best.
    let c = [
        _mm512_set1_ps(f32::INFINITY),
        top[0],
        top[1],
        top[2],
        top[3],
    ];
    let r = k.div_ceil(8);
    let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in r.saturating_sub(4)..=r.min(4) {
        let other = c[r - i];
        let swapped = _mm512_shuffle_f32x4::<0x4E>(other, other);
        best = _mm512_max_ps(best, _mm512_min_ps(c[i], swapped));
    }
    let b = _mm512_reduce_min_ps(best);
    let mut bound = if b > f32::NEG_INFINITY {
        generic::attn_rank(b)
    } else {
        ATTN_RANK_NAN
    };
    // Candidates, in increasing key order: first the old slots (two vectors, len <= k <= 32).
    let AttnTopkWork { s, j, r, w } = work;
    let mut n = 0;
    if len > 0 {
        let (m_lo, m_hi) = (lanes_mask(len), lanes_mask(len.saturating_sub(16)));
        // SAFETY: the loads are masked to lanes below len <= k, inside scores and idx (the
        // high halves start at element 16, which exists when their mask is not empty).
        let (olo, ohi, ilo, ihi) = unsafe {
            let (sp, ip) = (scores.as_ptr(), idx.as_ptr());
            (
                _mm512_maskz_loadu_ps(m_lo, sp),
                _mm512_maskz_loadu_ps(m_hi, sp.wrapping_add(16)),
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m_lo, ip as *const i16)),
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(
                    m_hi,
                    ip.wrapping_add(16) as *const i16,
                )),
            )
        };
        let (rlo, rhi) = (rank16(olo), rank16(ohi));
        if len == k {
            let worst = _mm512_mask_reduce_min_epi32(m_lo, rlo)
                .min(_mm512_mask_reduce_min_epi32(m_hi, rhi));
            bound = bound.max(worst);
        }
        let bv = _mm512_set1_epi32(bound);
        let keep_lo = _mm512_mask_cmpge_epi32_mask(m_lo, rlo, bv);
        let keep_hi = _mm512_mask_cmpge_epi32_mask(m_hi, rhi, bv);
        push_candidates(s, j, &mut n, keep_lo, olo, ilo);
        push_candidates(s, j, &mut n, keep_hi, ohi, ihi);
    }
    // A bound of NaN's rank takes every visible key; any other is the rank of a score `bf`,
    // and `x >= bf` (false for NaN) is `attn_rank(x) >= bound`.
    let all = bound < generic::attn_rank(f32::NEG_INFINITY);
    let bf = _mm512_set1_ps(generic::attn_rank_score(bound));
    n = if all {
        push_block::<true>(row, vis, bf, kb0, s, j, n)
    } else {
        push_block::<false>(row, vis, bf, kb0, s, j, n)
    };
    let nv = n.div_ceil(16);
    let mut o = 0;
    if n <= k {
        for c in 0..nv {
            let m = lanes_mask(n - c * 16);
            let (x, jc) = (load16(&s[c * 16..]), load16i(&j[c * 16..]));
            store_slots(scores, idx, &mut o, m, x, jc);
        }
        return n;
    }
    // The ranks, the lanes past n below every rank (so that hi is the largest candidate's).
    let min = _mm512_set1_epi32(i32::MIN);
    let mut hv = min;
    for c in 0..nv {
        let rc = _mm512_mask_mov_epi32(min, lanes_mask(n - c * 16), rank16(load16(&s[c * 16..])));
        store16i(&mut r[c * 16..], rc);
        hv = _mm512_max_epi32(hv, rc);
    }
    let hi = _mm512_reduce_max_epi32(hv);
    let (t, gt) = kth_rank(&r[..], w, n, k, bound, hi);
    // Keep every rank above t and the first (in key order) of those equal to t.
    let tv = _mm512_set1_epi32(t);
    let mut ties = k - gt;
    for c in 0..nv {
        let lm = lanes_mask(n - c * 16);
        let rc = load16i(&r[c * 16..]);
        let mut m = _mm512_mask_cmpgt_epi32_mask(lm, rc, tv);
        if ties > 0 {
            let mut eq = _mm512_mask_cmpeq_epi32_mask(lm, rc, tv);
            while eq != 0 && ties > 0 {
                let low = eq & eq.wrapping_neg();
                m |= low;
                eq ^= low;
                ties -= 1;
            }
        }
        let (x, jc) = (load16(&s[c * 16..]), load16i(&j[c * 16..]));
        store_slots(scores, idx, &mut o, m, x, jc);
    }
    o
}

/// AVX-512 [`generic::attn_topk_block`]: the same slots. The group bound and the candidates
/// by vector compares and compress; the `k`-th best by [`kth_rank`] instead of a sort.
#[allow(clippy::too_many_arguments)]
pub fn x86_avx512_attn_topk_block(
    row: &[f32],
    vis: &[u16],
    kb0: usize,
    k: usize,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut AttnTopkWork,
) -> usize {
    if available() {
        // SAFETY: the CPU has AVX-512F, BW and VL and POPCNT (checked above).
        unsafe { topk_block_avx512(row, vis, kb0, k, scores, idx, len, work) }
    } else {
        generic::attn_topk_block(row, vis, kb0, k, scores, idx, len, work)
    }
}
