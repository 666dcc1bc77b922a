//! x86-64 AVX-512 (F, BW, VL) block kernels of the fast attention path, compiled in std builds and chosen
//! at run time (`is_x86_feature_detected!`). Each overlays a kernel of [`super::attn`] (the
//! generic one runs when the CPU lacks AVX-512F) and is tested against it
//! (`tests/tests/attn_kernels.rs`):
//!
//! - scores: 16 lanes (queries) per vector, one fused multiply-add per dimension and key, in
//!   the same (increasing `d`) order as the generic kernel: differs by the FMA rounding only;
//! - `exp`: the same polynomial as [`super::exp_poly`] with FMA and `vscalefps`;
//! - dense tile and softmax rows: FMA accumulation; lanes that do not see a key get weight 0,
//!   which adds exactly nothing for finite values;
//! - candidates, sorted insertion and the top-k tile update: the same masks and slots as the
//!   generic kernels (compares and data movement only); a lane's sorted slots (`k <= 32`)
//!   live in four registers while a tile's candidates are inserted.

use core::arch::x86_64::*;

use super::attn::{
    self as generic, ATTN_BLOCK, ATTN_LANES, ATTN_MAX_HEAD_DIM, ATTN_SORTED_MAX_K, ATTN_TILE,
    AttnDenseState, EXP_P, EXP_POLY_MAX, EXP_POLY_MIN, LN2_HI, LN2_LO, LOG2E,
};

/// Whether this CPU runs the kernels of this module (AVX-512F, and BW and VL for the u16
/// slot indices). Cached by std.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
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
    let rows: [&[f32]; U] = core::array::from_fn(|u| &k[(j0 + u) * stride..][..hd]);
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
    let mut mv = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in scores.chunks(16) {
        let m = lanes_mask(c.len());
        // SAFETY: the mask covers exactly c's elements.
        let x = unsafe { _mm512_maskz_loadu_ps(m, c.as_ptr()) };
        mv = _mm512_mask_max_ps(mv, m, mv, x);
    }
    let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    let mut acc = [0f32; ATTN_MAX_HEAD_DIM];
    let acc = &mut acc[..hd];
    let mut sum = _mm512_setzero_ps();
    let mut wb = [0f32; 16];
    for (c, ic) in scores.chunks(16).zip(idx.chunks(16)) {
        let m = lanes_mask(c.len());
        // SAFETY: the mask covers exactly c's elements.
        let x = unsafe { _mm512_maskz_loadu_ps(m, c.as_ptr()) };
        let w = _mm512_maskz_mov_ps(m, exp16(_mm512_sub_ps(x, mx)));
        sum = _mm512_add_ps(sum, w);
        store16(&mut wb, w);
        for dc in (0..hd).step_by(16) {
            let width = (hd - dc).min(16);
            let dm = lanes_mask(width);
            let row = |i: usize| {
                let r = &v[ic[i] as usize * stride + dc..][..width];
                // SAFETY: dm covers exactly r's `width` elements.
                unsafe { _mm512_maskz_loadu_ps(dm, r.as_ptr()) }
            };
            // Four independent chains over the rows of the chunk.
            let mut a = [_mm512_setzero_ps(); 4];
            let mut i = 0;
            while i + 4 <= c.len() {
                for (u, au) in a.iter_mut().enumerate() {
                    *au = _mm512_fmadd_ps(_mm512_set1_ps(wb[i + u]), row(i + u), *au);
                }
                i += 4;
            }
            while i < c.len() {
                a[0] = _mm512_fmadd_ps(_mm512_set1_ps(wb[i]), row(i), a[0]);
                i += 1;
            }
            let t = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
            let ar = &mut acc[dc..][..width];
            // SAFETY: dm covers exactly ar's `width` elements.
            unsafe {
                let old = _mm512_maskz_loadu_ps(dm, ar.as_ptr());
                _mm512_mask_storeu_ps(ar.as_mut_ptr(), dm, _mm512_add_ps(old, t));
            }
        }
    }
    let inv = 1.0 / _mm512_reduce_add_ps(sum);
    for (o, &a) in out.iter_mut().zip(acc.iter()) {
        *o = a * inv;
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

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn insert_sorted_avx512(scores: &mut [f32], idx: &mut [u16], len: usize, x: f32, j: u16) -> usize {
    let k = scores.len().min(idx.len()).min(32);
    let (scores, idx) = (&mut scores[..k], &mut idx[..k]);
    let mut sl = Slots::load(scores, idx, len);
    sl.insert(x, j);
    sl.store(scores, idx);
    sl.len
}

/// AVX-512 [`generic::attn_insert_sorted`]: the same slots, branch-free (two vectors of
/// scores and indices), for capacities up to 32 (the generic kernel above).
pub fn x86_avx512_attn_insert_sorted(
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    x: f32,
    j: u16,
) -> usize {
    if available() && scores.len().min(idx.len()) <= 32 {
        // SAFETY: the CPU has AVX-512F, BW and VL (checked above).
        unsafe { insert_sorted_avx512(scores, idx, len, x, j) }
    } else {
        generic::attn_insert_sorted(scores, idx, len, x, j)
    }
}

/// Sorted slots of one lane held in registers: scores and indices (as i32) in two vectors
/// each, `len` of them kept, capacity `k <= 32`.
struct Slots {
    lo: __m512,
    hi: __m512,
    ilo: __m512i,
    ihi: __m512i,
    len: usize,
    k: usize,
}

impl Slots {
    /// The first `len` of the `k = ls.len() <= 32` slots (`li.len() == k`).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn load(ls: &[f32], li: &[u16], len: usize) -> Slots {
        let k = ls.len().min(li.len()).min(32);
        let len = len.min(k);
        let (m_lo, m_hi) = (lanes_mask(len), lanes_mask(len.saturating_sub(16)));
        // SAFETY: the loads are masked to lanes below len <= k, inside ls and li (the high
        // halves start at element 16, which exists when their mask is not empty).
        unsafe {
            let (sp, ip) = (ls.as_ptr(), li.as_ptr());
            Slots {
                lo: _mm512_maskz_loadu_ps(m_lo, sp),
                hi: _mm512_maskz_loadu_ps(m_hi, sp.wrapping_add(16)),
                ilo: _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m_lo, ip as *const i16)),
                ihi: _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(
                    m_hi,
                    ip.wrapping_add(16) as *const i16,
                )),
                len,
                k,
            }
        }
    }

    /// Writes the kept slots back (the `k` lanes of `ls` and `li` it was loaded from).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    fn store(&self, ls: &mut [f32], li: &mut [u16]) {
        let k = self.k.min(ls.len()).min(li.len());
        let (k_lo, k_hi) = (lanes_mask(k), lanes_mask(k.saturating_sub(16)));
        // SAFETY: the stores are masked to lanes below k, inside ls and li.
        unsafe {
            let (sp, ip) = (ls.as_mut_ptr(), li.as_mut_ptr());
            _mm512_mask_storeu_ps(sp, k_lo, self.lo);
            _mm512_mask_storeu_ps(sp.wrapping_add(16), k_hi, self.hi);
            _mm512_mask_cvtepi32_storeu_epi16(ip as *mut i16, k_lo, self.ilo);
            _mm512_mask_cvtepi32_storeu_epi16(ip.wrapping_add(16) as *mut i16, k_hi, self.ihi);
        }
    }

    /// Offers `(x, j)` (`j` above every kept index): the register form of
    /// [`generic::attn_insert_sorted`]. With full slots and `x` not above the worst, the
    /// insertion position is `k` and nothing changes.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn insert(&mut self, x: f32, j: u16) {
        let (m_lo, m_hi) = (
            lanes_mask(self.len),
            lanes_mask(self.len.saturating_sub(16)),
        );
        let xv = _mm512_set1_ps(x);
        let below = (_mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(m_lo, self.lo, xv).count_ones()
            + _mm512_mask_cmp_ps_mask::<_CMP_LT_OQ>(m_hi, self.hi, xv).count_ones())
            as usize;
        // Branch-free: with p == k (a rejected pair) lane p is past the stores' mask, so the
        // slots stay as they were; lanes of different queries then overlap in the pipeline.
        let p = self.len - below;
        let zero = _mm512_setzero_si512();
        let lo_i = _mm512_castps_si512(self.lo);
        let up_lo = _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(lo_i, zero));
        let up_hi = _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(
            _mm512_castps_si512(self.hi),
            lo_i,
        ));
        let iup_lo = _mm512_alignr_epi32::<15>(self.ilo, zero);
        let iup_hi = _mm512_alignr_epi32::<15>(self.ihi, self.ilo);
        let keep = (1u64 << p) - 1;
        let at = 1u64 << p;
        let (keep_lo, keep_hi) = (keep as u16, (keep >> 16) as u16);
        let (at_lo, at_hi) = (at as u16, (at >> 16) as u16);
        let jv = _mm512_set1_epi32(j as i32);
        self.lo = _mm512_mask_mov_ps(_mm512_mask_mov_ps(up_lo, keep_lo, self.lo), at_lo, xv);
        self.hi = _mm512_mask_mov_ps(_mm512_mask_mov_ps(up_hi, keep_hi, self.hi), at_hi, xv);
        self.ilo =
            _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(iup_lo, keep_lo, self.ilo), at_lo, jv);
        self.ihi =
            _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(iup_hi, keep_hi, self.ihi), at_hi, jv);
        self.len = (self.len + 1).min(self.k);
        // A rejected pair leaves the slots unchanged but for the lanes past k, never stored.
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn topk_tile_avx512(
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
    let any = cand.iter().fold(0, |a, &c| a | c);
    let mut lanes = any;
    while lanes != 0 {
        let l = lanes.trailing_zeros() as usize;
        lanes &= lanes - 1;
        // The lane's candidate keys, one bit per key of the tile.
        let mut keys = 0u16;
        for (j, &c) in cand.iter().enumerate() {
            keys |= (c >> l & 1) << j;
        }
        let (ls, li) = (&mut scores[l * k..][..k], &mut idx[l * k..][..k]);
        let mut sl = Slots::load(ls, li, lens[l] as usize);
        while keys != 0 {
            let j = keys.trailing_zeros() as usize;
            keys &= keys - 1;
            sl.insert(s[j * ATTN_LANES + l], t0 + j as u16);
        }
        sl.store(ls, li);
        lens[l] = sl.len as u32;
        if sl.len == k {
            thr[l] = ls[k - 1];
            *open &= !(1 << l);
        }
    }
}

/// AVX-512 [`generic::attn_topk_tile`]: the same slots, each lane's slots loaded into
/// registers once per tile (the generic kernel for `k > ATTN_SORTED_MAX_K`).
#[allow(clippy::too_many_arguments)]
pub fn x86_avx512_attn_topk_tile(
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
    if available() && k <= ATTN_SORTED_MAX_K {
        // SAFETY: the CPU has AVX-512F, BW and VL (checked above).
        unsafe { topk_tile_avx512(s, cand, t0, k, scores, idx, lens, thr, open) }
    } else {
        generic::attn_topk_tile(s, cand, t0, k, scores, idx, lens, thr, open)
    }
}
