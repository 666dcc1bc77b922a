//! GELU (AVX2+FMA) and `e^x` (AVX-512 F) over slices.

use core::arch::x86_64::*;

use super::cpu::*;
use crate::kernels::generic::{EXP_P, EXP_POLY_MAX, EXP_POLY_MIN, LN2_HI, LN2_LO, LOG2E};

/// `e^x` for 8 lanes, `x` in `[-87, 0]` (all [`gelu_erf_avx2`] needs): `2^n e^r` with
/// `|r| <= ln2 / 2` and a degree-6 Taylor polynomial (relative error about 1e-7).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_neg_avx2(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
    ));
    // Cody-Waite: ln 2 in two parts so that r is exact enough.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let pow2n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n))
}

/// GELU (erf form) of 8 lanes: [`crate::kernels::erf_fast`]'s formula with [`exp_neg_avx2`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_erf_avx2(x: __m256) -> __m256 {
    let z = _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::FRAC_1_SQRT_2));
    let sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0));
    let az = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
    let one = _mm256_set1_ps(1.0);
    let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.327_591_1), az, one));
    let mut p = _mm256_set1_ps(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
    }
    p = _mm256_mul_ps(p, t);
    let e = exp_neg_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), az), az));
    let erf = _mm256_or_ps(_mm256_fnmadd_ps(p, e, one), sign);
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
    )
}

#[target_feature(enable = "avx2,fma")]
fn gelu_erf_slice_avx2(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: c has exactly 8 elements; unaligned load and store.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), gelu_erf_avx2(_mm256_loadu_ps(c.as_ptr()))) };
    }
    // The tail through the same vector code (padded), so that each value's result never
    // depends on its position in the slice.
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut l = [0.0f32; 8];
        l[..rest.len()].copy_from_slice(rest);
        // SAFETY: l has exactly 8 elements; unaligned load and store.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), gelu_erf_avx2(_mm256_loadu_ps(l.as_ptr()))) };
        rest.copy_from_slice(&l[..rest.len()]);
    }
}

/// AVX2+FMA GELU (erf form) in place: within `|x| * 2e-7` (plus rounding) of
/// [`crate::kernels::activate_fast`] (same formula, vector `exp`). Elementwise: a value's result does
/// not depend on its position in `x`.
pub fn x86_avx2_gelu_erf(x: &mut [f32]) {
    if x86_avx2_available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { gelu_erf_slice_avx2(x) }
    } else {
        for v in x.iter_mut() {
            *v = generic::activate_fast(crate::config::Activation::GeluErf, *v);
        }
    }
}

/// [`generic::exp_poly`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp16(x: __m512) -> __m512 {
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

/// AVX-512 [`crate::kernels::exp_poly_slice`]: within 2 ulp of it (FMA in the polynomial).
/// Runs on the CPUs that run the attention kernels ([`x86_avx512_attn_available`]).
pub fn x86_avx512_exp_f32(x: &mut [f32]) {
    if x86_avx512_attn_available() {
        // SAFETY: the CPU has AVX-512F (checked above).
        unsafe { exp_slice_avx512(x) }
    } else {
        generic::exp_poly_slice(x)
    }
}
