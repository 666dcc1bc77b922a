//! Scalar math shim: every kernel calls these, never `f32::exp` & co directly, so that one
//! feature switch picks the backend for the whole crate.
//!
//! - Default (no_std): [`micromath`]-based approximations, pure f32 arithmetic, so the same
//!   build gives bit-identical results on every target (x86, thumbv7em, riscv32, wasm32).
//!   micromath has no `tanh` and no `erf`: they are derived here from the shim's [`exp`].
//! - Feature `std`: the std f32 functions (full precision); std has no `erf` for f32 on stable,
//!   so [`erf`] uses `erff` from the `libm` crate (pure Rust, enabled by `std`).
//!
//! Measured accuracy (max error over a dense grid against f64 references; the integration
//! test `tests/tests/kernels.rs` re-measures and asserts these bounds with a margin):
//!
//! | function | micromath build | std build |
//! |---|---|---|
//! | [`exp`], relative, x in [-87.33, 88.72] (normal results) | 2.4e-3 | 6.0e-8 |
//! | [`exp`], absolute, x in [-30, 0] (softmax range) | 1.2e-3 | 3.0e-8 |
//! | [`sqrt`], relative, x in [1e-30, 1e30] | 8.9e-8 | 6.0e-8 |
//! | [`tanh`], absolute, x in [-20, 20] | 1.1e-3 | 9.8e-8 |
//! | [`erf`], absolute, x in [-8, 8] | 5.7e-4 | 5.0e-8 |
//!
//! The micromath `exp` is the weak link (a 4th-order series after range reduction by ln 2);
//! `tanh` and `erf` inherit its error, scaled by how much of the result comes from `exp`.

#[cfg(not(feature = "std"))]
use micromath::F32Ext;

/// `e^x`. Saturates: `exp(-inf) == 0`, `exp(+inf) == +inf`; NaN gives NaN.
///
/// micromath build: relative error up to 2.4e-3 (absolute up to 1.2e-3 for `x <= 0`), and
/// exact at `x == 0` (`exp(0) == 1`, which softmax relies on for its maximum element).
#[inline]
pub fn exp(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.exp()
    }
    #[cfg(not(feature = "std"))]
    {
        // micromath builds the result's exponent directly: past ln(f32::MAX) = 88.72 it would
        // write exponent 128 (a NaN pattern, and a debug assertion), and below ln of the
        // smallest normal (-87.34) a wrong subnormal. Near both ends an exact shift of x by
        // an integer keeps micromath in its normal range, and IEEE rounding of the product
        // by the constant e^n makes the infinity or the subnormal. Infinities and NaN
        // confuse its range reduction; below -104 the result is 0 anyway.
        const E_2: f32 = 7.389_056; // e^2
        const E_MINUS_24: f32 = 3.775_134_4e-11; // e^-24
        if x > 88.73 {
            f32::INFINITY
        } else if x > 87.0 {
            F32Ext::exp(x - 2.0) * E_2
        } else if x >= -87.0 {
            F32Ext::exp(x)
        } else if x >= -104.0 {
            F32Ext::exp(x + 24.0) * E_MINUS_24
        } else if x.is_nan() {
            x
        } else {
            0.0
        }
    }
}

/// Square root; NaN for `x < 0`.
///
/// micromath build: micromath's bit-trick estimate (up to 6 % off) refined by three Newton
/// steps (`6e-2 -> 2e-3 -> 1.4e-6 -> 1e-12` before rounding), giving a relative error within
/// one ulp (measured 8.9e-8). The raw estimate would put a 6 % scale error on every LayerNorm
/// output.
#[inline]
pub fn sqrt(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.sqrt()
    }
    #[cfg(not(feature = "std"))]
    {
        if x < 0.0 {
            return f32::NAN;
        }
        // 0, +inf and NaN are their own square roots; the bit trick gets them wrong.
        if x == 0.0 || !x.is_finite() {
            return x;
        }
        // The estimate is a linear fit of the mantissa, poor for subnormals: scale them up.
        if x < f32::MIN_POSITIVE {
            return sqrt(x * 16_777_216.0) * (1.0 / 4096.0); // 2^24, 2^-12
        }
        let mut y = F32Ext::sqrt(x);
        for _ in 0..3 {
            y = 0.5 * (y + x / y);
        }
        y
    }
}

/// Hyperbolic tangent.
///
/// micromath build: `sign(x) * (1 - e) / (1 + e)` with `e = exp(-2|x|)`, which never
/// overflows (`e` is in `[0, 1]`) and is exactly `±1` for large `|x|`; absolute error up to
/// 1.1e-3 (near 0 the series behind `exp` is accurate, so small `|x|` keep their precision).
#[inline]
pub fn tanh(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        x.tanh()
    }
    #[cfg(not(feature = "std"))]
    {
        let e = exp(-2.0 * x.abs());
        let t = (1.0 - e) / (1.0 + e);
        if x < 0.0 { -t } else { t }
    }
}

/// The error function `erf(x) = 2/sqrt(pi) * integral_0^x e^(-t^2) dt`.
///
/// micromath build: Abramowitz & Stegun 7.1.26 (a rational polynomial in `t = 1/(1 + p|x|)`
/// times `exp(-x^2)`, formula error 1.5e-7) over the shim's [`exp`]; absolute error up to
/// 5.7e-4, dominated by `exp`. std build: `libm::erff`.
#[inline]
pub fn erf(x: f32) -> f32 {
    #[cfg(feature = "std")]
    {
        libm::erff(x)
    }
    #[cfg(not(feature = "std"))]
    {
        // The published coefficients verbatim (checkable against the source), rounded to f32
        // by the compiler.
        #![allow(clippy::excessive_precision)]
        const P: f32 = 0.327_591_1;
        const A1: f32 = 0.254_829_592;
        const A2: f32 = -0.284_496_736;
        const A3: f32 = 1.421_413_741;
        const A4: f32 = -1.453_152_027;
        const A5: f32 = 1.061_405_429;
        let ax = x.abs();
        if ax.is_nan() {
            return x;
        }
        // Past 4 the tail is below 1.6e-8: 1.0 in f32. Also keeps `ax * ax` finite.
        let y = if ax > 4.0 {
            1.0
        } else {
            let t = 1.0 / (1.0 + P * ax);
            let poly = t * (A1 + t * (A2 + t * (A3 + t * (A4 + t * A5))));
            1.0 - poly * exp(-ax * ax)
        };
        if x < 0.0 { -y } else { y }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Exact special values both builds must honour (the kernels rely on them).
    #[test]
    fn special_values() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-200.0), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        // Ends of the range: finite up to ln(f32::MAX), then +inf; subnormals below -87.3.
        assert!(exp(88.0).is_finite() && exp(88.0) > 1.6e38);
        assert_eq!(exp(88.73), f32::INFINITY);
        let sub = exp(-100.0) as f64;
        assert!((sub - (-100f64).exp()).abs() < 1e-45, "{sub:e}");
        assert_eq!(sqrt(0.0), 0.0);
        assert_eq!(sqrt(1.0), 1.0);
        assert_eq!(sqrt(4.0), 2.0);
        assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
        assert!(sqrt(-1.0).is_nan());
        assert!(sqrt(f32::NAN).is_nan());
        odd_saturating("tanh", tanh, 50.0);
        odd_saturating("erf", erf, 10.0);
    }

    /// The special values of an odd function `f` that saturates at +-1 from `big` on.
    fn odd_saturating(name: &str, f: fn(f32) -> f32, big: f32) {
        assert_eq!(f(0.0), 0.0, "{name}(0)");
        assert_eq!(f(big), 1.0, "{name}({big})");
        assert_eq!(f(-big), -1.0, "{name}(-{big})");
        assert_eq!(f(f32::INFINITY), 1.0, "{name}(inf)");
        assert_eq!(f(f32::NEG_INFINITY), -1.0, "{name}(-inf)");
        assert!(f(f32::NAN).is_nan(), "{name}(NaN)");
    }

    #[test]
    fn odd_functions_are_odd() {
        for i in 0..=4000 {
            let x = i as f32 * 0.0025;
            assert_eq!(tanh(-x), -tanh(x), "tanh at {x}");
            assert_eq!(erf(-x), -erf(x), "erf at {x}");
        }
    }

    #[test]
    fn subnormal_sqrt() {
        let x = f32::MIN_POSITIVE / 64.0;
        let r = sqrt(x) as f64;
        let want = (x as f64).sqrt();
        assert!(((r - want) / want).abs() < 1e-6, "{r} vs {want}");
    }
}
