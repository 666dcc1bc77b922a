//! x86-64 AVX-512 (F, BW, VL) block kernels of the fast attention path, compiled in std builds
//! and chosen at run time (`is_x86_feature_detected!`). Each overlays a kernel of
//! [`crate::kernels::generic::attention`] (the generic one runs when the CPU lacks AVX-512F, BW, VL or POPCNT) and is
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

use super::act::exp16;
use super::cpu::x86_avx512_attn_available as available;
use super::cpu::{lanes_mask, load16, store16};
use crate::kernels::args::{AttnScoresArgs, AttnSoftmaxArgs, AttnTile};
use crate::kernels::generic::attention::{
    self as generic, ATTN_BLOCK, ATTN_LANES, ATTN_MAX_HEAD_DIM, ATTN_TILE, AttnDenseState,
};

/// Scores of keys `j0..j0 + U` of a tile for all 16 lanes: `U` independent FMA chains.
#[inline]
#[target_feature(enable = "avx512f")]
fn scores_keys<const U: usize>(
    a: &AttnScoresArgs<'_>,
    j0: usize,
    scale: __m512,
    s: &mut [f32; ATTN_BLOCK],
) {
    let qt = &a.qt[..a.hd * ATTN_LANES];
    // A plain loop: `core::array::from_fn` with a closure was not inlined here (a call per
    // key, about 5% of the fast attention's time).
    let mut rows: [&[f32]; U] = [&[]; U];
    for (u, r) in rows.iter_mut().enumerate() {
        *r = a.key(j0 + u);
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
fn scores_tile_avx512(a: &AttnScoresArgs<'_>, s: &mut [f32; ATTN_BLOCK]) {
    let nk = a.nk.min(ATTN_TILE);
    let sc = _mm512_set1_ps(a.scale);
    let mut j = 0;
    while j + 8 <= nk {
        scores_keys::<8>(a, j, sc, s);
        j += 8;
    }
    while j + 4 <= nk {
        scores_keys::<4>(a, j, sc, s);
        j += 4;
    }
    while j < nk {
        scores_keys::<1>(a, j, sc, s);
        j += 1;
    }
}

/// AVX-512 [`generic::attn_scores_tile`] (same arguments and order of terms, fused).
pub fn x86_avx512_attn_scores_tile(a: &AttnScoresArgs<'_>, s: &mut [f32; ATTN_BLOCK]) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { scores_tile_avx512(a, s) }
    } else {
        generic::attn_scores_tile(a, s)
    }
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
#[target_feature(enable = "avx512f")]
fn accumulate_lanes<const U: usize>(
    w: &[f32; ATTN_BLOCK],
    keys: u16,
    v: &[f32],
    (stride, hd): (usize, usize),
    (l0, dc): (usize, usize),
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
    t: &AttnTile<'_>,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    let &AttnTile { s, vis, nk } = t;
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
            accumulate_lanes::<8>(&w, keys, v, (stride, hd), (l, dc), acc);
            l += 8;
        }
        while l + 4 <= nl {
            accumulate_lanes::<4>(&w, keys, v, (stride, hd), (l, dc), acc);
            l += 4;
        }
        while l < nl {
            accumulate_lanes::<1>(&w, keys, v, (stride, hd), (l, dc), acc);
            l += 1;
        }
    }
}

/// AVX-512 [`generic::attn_dense_tile`] (`hd <= ATTN_MAX_HEAD_DIM`).
pub fn x86_avx512_attn_dense_tile(
    t: &AttnTile<'_>,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { dense_tile_avx512(t, v, stride, hd, st) }
    } else {
        generic::attn_dense_tile(t, v, stride, hd, st)
    }
}

#[target_feature(enable = "avx512f")]
fn candidates_avx512(
    tile: &AttnTile<'_>,
    thr: &[f32; ATTN_LANES],
    open: u16,
    cand: &mut [u16; ATTN_TILE],
) -> u16 {
    let &AttnTile { s, vis, nk } = tile;
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
    t: &AttnTile<'_>,
    thr: &[f32; ATTN_LANES],
    open: u16,
    cand: &mut [u16; ATTN_TILE],
) -> u16 {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { candidates_avx512(t, thr, open, cand) }
    } else {
        generic::attn_candidates(t, thr, open, cand)
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
    // Every `r` below is a `row(i)`.
    let load = |r: *const f32, c: usize| {
        // SAFETY: row r starts at idx * stride <= last * stride and v holds hd elements past
        // that; the mask keeps the load below hd, and FULL says hd == 16 C.
        unsafe {
            if FULL {
                _mm512_loadu_ps(r.wrapping_add(c * 16))
            } else {
                _mm512_maskz_loadu_ps(masks[c], r.wrapping_add(c * 16))
            }
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
    (scores, idx): (&[f32], &[u16]),
    (v, stride, hd): (&[f32], usize, usize),
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

/// The softmax of the kept `scores` over the value rows `v[idx * stride..][..hd]` into
/// `out[..hd]` (zeros when nothing is kept), by [`softmax_rows_c`] for the head's width.
#[target_feature(enable = "avx512f")]
fn softmax_rows_avx512(
    (scores, idx): (&[f32], &[u16]),
    (v, stride, hd): (&[f32], usize, usize),
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
        1 => softmax_rows_c::<1, 4>((scores, idx), (v, stride, hd), out),
        2 => softmax_rows_c::<2, 4>((scores, idx), (v, stride, hd), out),
        3 | 4 => softmax_rows_c::<4, 2>((scores, idx), (v, stride, hd), out),
        _ => softmax_rows_c::<8, 1>((scores, idx), (v, stride, hd), out),
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
        unsafe { softmax_rows_avx512((scores, idx), (v, stride, hd), out) }
    } else {
        generic::attn_softmax_rows(scores, idx, v, stride, hd, out)
    }
}

/// [`softmax_lanes_avx512`] for heads of at most `16 C` dimensions and `k <= 32`: first the
/// weights of every lane (independent chains of maximum, `exp` and sum, which overlap), then
/// the value rows of each lane accumulated in registers. The same operations in the same
/// order as [`softmax_rows_c`], so the same bits.
#[inline]
#[target_feature(enable = "avx512f")]
fn softmax_lanes_c<const C: usize, const U: usize>(
    a: &AttnSoftmaxArgs<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let (v, stride, hd) = (a.v, a.stride, a.hd);
    let lanes = a.lanes();
    let mut w = [0f32; ATTN_LANES * 32];
    let mut inv = [0f32; ATTN_LANES];
    for l in 0..lanes {
        let (sl, _) = a.slots(l);
        let n = sl.len();
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
        let (_, il) = a.slots(l);
        let n = il.len();
        let o = &mut out[l * out_stride..][..hd];
        if n == 0 {
            o.fill(0.0);
            continue;
        }
        let mut acc = [_mm512_setzero_ps(); C];
        // By chunks of 16 rows as softmax_rows_c, so that the sums are the same (the kernel
        // must not depend on k, which may be the number of keys).
        let wl = &w[l * 32..][..n];
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

#[target_feature(enable = "avx512f")]
fn softmax_lanes_avx512(a: &AttnSoftmaxArgs<'_>, out: &mut [f32], out_stride: usize) {
    match a.hd.div_ceil(16) {
        1 => softmax_lanes_c::<1, 4>(a, out, out_stride),
        2 => softmax_lanes_c::<2, 4>(a, out, out_stride),
        3 | 4 => softmax_lanes_c::<4, 2>(a, out, out_stride),
        _ => softmax_lanes_c::<8, 1>(a, out, out_stride),
    }
}

/// AVX-512 [`generic::attn_softmax_lanes`] (per lane [`x86_avx512_attn_softmax_rows`] for
/// `k > 32`; the generic kernel for `hd > ATTN_MAX_HEAD_DIM`).
pub fn x86_avx512_attn_softmax_lanes(a: &AttnSoftmaxArgs<'_>, out: &mut [f32], out_stride: usize) {
    if available() && a.hd <= ATTN_MAX_HEAD_DIM && a.k <= 32 {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { softmax_lanes_avx512(a, out, out_stride) }
    } else if available() && a.hd <= ATTN_MAX_HEAD_DIM {
        for l in 0..a.lanes() {
            let (sc, ix) = a.slots(l);
            let o = &mut out[l * out_stride..][..a.hd];
            // SAFETY: the CPU has AVX-512F (checked above).
            unsafe { softmax_rows_avx512((sc, ix), (a.v, a.stride, a.hd), o) }
        }
    } else {
        generic::attn_softmax_lanes(a, out, out_stride)
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

#[target_feature(enable = "avx512f")]
fn scores_rows_avx512(a: &AttnScoresArgs<'_>, rows: &mut [f32], rs: usize) {
    let nk = a.nk.min(ATTN_TILE);
    let mut r = [_mm512_setzero_ps(); 16];
    if nk == ATTN_TILE {
        // A whole tile: the 16 keys' chains of scores_keys side by side, in registers.
        let qt = &a.qt[..a.hd * ATTN_LANES];
        let mut kr: [&[f32]; 16] = [&[]; 16];
        for (u, kru) in kr.iter_mut().enumerate() {
            *kru = a.key(u);
        }
        for (d, q) in qt.chunks_exact(ATTN_LANES).enumerate() {
            let q = load16(q);
            for u in 0..16 {
                r[u] = _mm512_fmadd_ps(q, _mm512_set1_ps(kr[u][d]), r[u]);
            }
        }
        let sc = _mm512_set1_ps(a.scale);
        for ru in &mut r {
            *ru = _mm512_mul_ps(*ru, sc);
        }
    } else {
        let mut s = [0f32; ATTN_BLOCK];
        scores_tile_avx512(&AttnScoresArgs { nk, ..*a }, &mut s);
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
pub fn x86_avx512_attn_scores_rows(a: &AttnScoresArgs<'_>, rows: &mut [f32], rs: usize) {
    if available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { scores_rows_avx512(a, rows, rs) }
    } else {
        generic::attn_scores_rows(a, rows, rs)
    }
}
