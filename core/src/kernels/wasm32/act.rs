//! `e^x` (the polynomial of the attention kernels) and GELU on 4 lanes.

use core::arch::wasm32::*;

use super::simd::*;

/// [`generic::exp_poly`] on 4 lanes: the same operations in the same order (no FMA), so
/// the same bits lane by lane, limits and NaN included.
#[inline(always)]
pub fn wasm_simd128_exp_f32x4(x: v128) -> v128 {
    // The polynomial on x clamped into the domain (so 2^n stays a normal number); the lanes
    // outside it are replaced below.
    let xc = f32x4_pmin(
        f32x4_pmax(x, f32x4_splat(EXP_POLY_MIN)),
        f32x4_splat(EXP_POLY_MAX),
    );
    const ROUND: f32 = 12_582_912.0;
    let round = f32x4_splat(ROUND);
    // t = ROUND + n exactly (|n| <= 128, and the floats near 1.5 * 2^23 are the integers),
    // so n's integer value is bits(t) - bits(ROUND): no float-to-int conversion needed.
    let t = f32x4_add(f32x4_mul(xc, f32x4_splat(LOG2E)), round);
    let n = f32x4_sub(t, round);
    let r = f32x4_sub(
        f32x4_sub(xc, f32x4_mul(n, f32x4_splat(LN2_HI))),
        f32x4_mul(n, f32x4_splat(LN2_LO)),
    );
    let mut p = f32x4_splat(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(c));
    }
    let y = f32x4_add(
        f32x4_add(f32x4_mul(p, f32x4_mul(r, r)), r),
        f32x4_splat(1.0),
    );
    let bias = 127i32.wrapping_sub(ROUND.to_bits() as i32);
    let two_n = i32x4_shl(i32x4_add(t, i32x4_splat(bias)), 23);
    let e = f32x4_mul(y, two_n);
    // A NaN lane stays NaN through the clamps (they compare false) and the polynomial.
    let e = v128_bitselect(f32x4_splat(0.0), e, f32x4_lt(x, f32x4_splat(EXP_POLY_MIN)));
    v128_bitselect(
        f32x4_splat(f32::INFINITY),
        e,
        f32x4_gt(x, f32x4_splat(EXP_POLY_MAX)),
    )
}

/// GELU (erf form) of 4 lanes: [`crate::kernels::activate_fast`]'s formula ([`crate::kernels::erf_fast`]) with
/// [`wasm_simd128_exp_f32x4`] for `exp`.
#[inline(always)]
pub(super) fn gelu_erf_f32x4(x: v128) -> v128 {
    const P: f32 = generic::ERF_FAST_P;
    const A: [f32; 5] = generic::ERF_FAST_A;
    let one = f32x4_splat(1.0);
    let u = f32x4_mul(x, f32x4_splat(core::f32::consts::FRAC_1_SQRT_2));
    let au = f32x4_abs(u);
    let t = f32x4_div(one, f32x4_add(one, f32x4_mul(f32x4_splat(P), au)));
    let mut poly = f32x4_splat(A[4]);
    for &a in A[..4].iter().rev() {
        poly = f32x4_add(f32x4_splat(a), f32x4_mul(t, poly));
    }
    let poly = f32x4_mul(t, poly);
    let e = wasm_simd128_exp_f32x4(f32x4_mul(f32x4_neg(au), au));
    let y = f32x4_sub(one, f32x4_mul(poly, e));
    let erf = v128_bitselect(f32x4_neg(y), y, f32x4_lt(u, f32x4_splat(0.0)));
    f32x4_mul(f32x4_mul(f32x4_splat(0.5), x), f32x4_add(one, erf))
}

/// simd128 GELU (erf form) in place: within `|x| * 2e-7` (plus rounding) of
/// [`crate::kernels::activate_fast`] (same formula, the polynomial `exp` of [`generic::exp_poly`]
/// instead of the math library's).
pub fn wasm_simd128_gelu_erf(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        let g = gelu_erf_f32x4(ld4(c));
        st4(c, g);
    }
    for v in chunks.into_remainder() {
        *v = generic::activate_fast(crate::config::Activation::GeluErf, *v);
    }
}
