//! Activations (reference and fast GELU), softmax, and the polynomial `e^x` of the attention
//! kernels.

use crate::config::Activation;
use crate::math;

/// `sqrt(2 / pi)`, the GELU-tanh constant.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// The activation applied to one value:
/// - `Relu`: `max(0, x)`;
/// - `GeluErf`: `0.5 x (1 + erf(x / sqrt 2))`;
/// - `GeluTanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`;
/// - `Silu`: `x / (1 + e^-x)`.
///
/// Accuracy follows [`math`]: exact for `Relu`, otherwise within the `erf`/`tanh`/`exp` error
/// times `|x| / 2` (micromath build) or a few ulp (std build).
#[inline]
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        Activation::GeluErf => 0.5 * x * (1.0 + math::erf(x * core::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            0.5 * x * (1.0 + math::tanh(u))
        }
        // x * sigmoid(x); for very negative x, e^-x overflows to +inf and the result is -0.0.
        Activation::Silu => x / (1.0 + math::exp(-x)),
    }
}

/// `p` of [`erf_fast`] (Abramowitz & Stegun 7.1.26), shared by its vector versions.
pub(crate) const ERF_FAST_P: f32 = 0.327_591_1;
/// `a1..a5` of [`erf_fast`], shared by its vector versions.
pub(crate) const ERF_FAST_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_72,
    1.421_413_8,
    -1.453_152_1,
    1.061_405_4,
];

/// `erf(x)` by Abramowitz & Stegun 7.1.26: `1 - t (a1 + t (a2 + ... + t a5)) e^(-x^2)`,
/// `t = 1 / (1 + p |x|)`, odd in `x`. Absolute error at most 1.5e-7 plus the f32 rounding
/// and the error of [`math::exp`]; one division and one `exp`, where the reference `erf` costs
/// several times more. Used by the fast kernels ([`activate_fast`]).
#[inline]
pub fn erf_fast(x: f32) -> f32 {
    const A: [f32; 5] = ERF_FAST_A;
    let ax = if x < 0.0 { -x } else { x };
    let t = 1.0 / (1.0 + ERF_FAST_P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * math::exp(-ax * ax);
    if x < 0.0 { -y } else { y }
}

/// [`activate`] for the fast kernels: `GeluErf` through [`erf_fast`] (absolute difference
/// to [`activate`] at most `|x| * 1e-7` plus rounding), every other activation as there.
#[inline]
pub fn activate_fast(act: Activation, x: f32) -> f32 {
    match act {
        Activation::GeluErf => 0.5 * x * (1.0 + erf_fast(x * core::f32::consts::FRAC_1_SQRT_2)),
        _ => activate(act, x),
    }
}

/// [`activate`] over a slice, in place.
pub fn activate_slice(act: Activation, x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = activate(act, *v);
    }
}

/// Softmax in place over `x`: `e^(x_i - max) / sum_j e^(x_j - max)`, the sum taken left to
/// right. `-inf` entries (masked) become exactly 0.
///
/// Edge cases (documented, not NaN garbage): an empty slice is left empty; a slice whose
/// entries are all `-inf` (every key masked) becomes all zeros, so a weighted sum over it
/// yields zeros. A NaN or `+inf` entry makes the whole output NaN.
pub fn softmax(x: &mut [f32]) {
    let max = x
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if max == f32::NEG_INFINITY && x.iter().all(|&v| v == f32::NEG_INFINITY) {
        for v in x.iter_mut() {
            *v = 0.0;
        }
        return;
    }
    let mut total = 0.0f32;
    for v in x.iter_mut() {
        *v = math::exp(*v - max);
        total += *v;
    }
    let inv = 1.0 / total;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

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
