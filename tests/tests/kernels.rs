//! The math shim and the generic kernels against naive f64 references.
//!
//! Tolerances (all derived from rounding-error bounds, not fitted to outputs):
//! - Products (`dot_row`, `matvec`, `matmul`, `axpy_row`): no exp/sqrt involved, so the same
//!   bound in both builds: `|got - exact| <= (n + 3) * EPS * sum |w_i x_i|`, the classic bound
//!   for a length-`n` f32 sum, where `exact` uses the dequantized f16/int8 weights.
//! - Math shim, max error over a dense grid, with a margin over what was measured
//!   (micromath build / std build):
//!   exp relative 3e-3 / 1.2e-7 (measured 2.4e-3 / 6.0e-8); exp absolute on [-30, 0] 1.5e-3 /
//!   6e-8 (1.2e-3 / 3.0e-8); sqrt relative 1.2e-7 / 1.2e-7 (8.9e-8 / 6.0e-8); tanh absolute
//!   1.3e-3 / 2e-7 (1.1e-3 / 9.8e-8); erf absolute 7e-4 / 1e-7 (5.7e-4 / 5.0e-8).
//! - Norms, activations and softmax: f32 rounding bounds as above plus the shim's error
//!   propagated through the formula (see each check); so they differ between the builds only
//!   through the constants below.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use topkit::config::Activation;
use topkit::kernels::{self, DType};
use topkit::math;
use topkit_tests::kernels_ref::{
    TestMatrix, activate_f64, erf_f64, layer_norm_f64, rms_norm_f64, softmax_f64,
};

const EPS: f64 = f32::EPSILON as f64;

// The math functions' tolerances: std's (a few ulp), else micromath's approximations.
const STD: bool = cfg!(feature = "std");
const EXP_REL: f64 = if STD { 1.2e-7 } else { 3e-3 };
const EXP_ABS: f64 = if STD { 6e-8 } else { 1.5e-3 };
const SQRT_REL: f64 = 1.2e-7;
const TANH_ABS: f64 = if STD { 2e-7 } else { 1.3e-3 };
const ERF_ABS: f64 = if STD { 1e-7 } else { 7e-4 };

const BUILD: &str = if cfg!(feature = "std") {
    "std"
} else {
    "micromath"
};

// ---------------------------------------------------------------------------------------------
// Math shim: max error over dense grids.

/// `n + 1` evenly spaced f32 points of `[lo, hi]`.
fn grid(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f32> {
    (0..=n).map(move |i| (lo + (hi - lo) * i as f64 / n as f64) as f32)
}

/// Largest `err(x)` over the points (the reference is evaluated at the f32 point itself, so
/// only the function's own error counts).
fn max_err(points: impl Iterator<Item = f32>, err: impl Fn(f32) -> f64) -> f64 {
    points.map(err).fold(0.0, f64::max)
}

#[test]
fn erf_reference_is_right() {
    // Published values of erf (and erfc where erf rounds to 1 too soon).
    for (x, want) in [
        (0.0, 0.0),
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.0, 0.9953222650189527),
        (-1.5, -0.9661051464753108),
    ] {
        assert!((erf_f64(x) - want).abs() < 1e-14, "erf_f64({x})");
    }
    for (x, erfc) in [(3.0, 2.209049699858544e-05), (4.0, 1.541725790028002e-08)] {
        assert!(((1.0 - erf_f64(x)) - erfc).abs() < 1e-15, "erfc({x})");
    }
}

#[test]
fn exp_accuracy() {
    // Every x whose e^x is a normal f32: ln(f32::MIN_POSITIVE) = -87.34, ln(f32::MAX) = 88.72.
    let rel = max_err(grid(-87.33, 88.72, 1_000_000), |x| {
        let r = (x as f64).exp();
        ((math::exp(x) as f64 - r) / r).abs()
    });
    let abs = max_err(grid(-30.0, 0.0, 1_000_000), |x| {
        (math::exp(x) as f64 - (x as f64).exp()).abs()
    });
    // Subnormal results: the absolute error of a correct rounding (half the spacing, 7e-46)
    // plus the relative error.
    let sub = max_err(grid(-104.0, -87.34, 100_000), |x| {
        (math::exp(x) as f64 - (x as f64).exp()).abs()
    });
    println!(
        "{BUILD}: exp max relative error {rel:.3e}, max absolute on [-30, 0] {abs:.3e}, \
         on subnormal results {sub:.3e}"
    );
    assert!(sub <= 7.1e-46 + EXP_REL * 1.2e-38, "exp subnormal {sub:e}");
    assert_eq!(math::exp(88.73), f32::INFINITY);
    assert!(rel <= EXP_REL, "exp relative {rel:e} > {EXP_REL:e}");
    assert!(abs <= EXP_ABS, "exp absolute {abs:e} > {EXP_ABS:e}");
}

#[test]
fn sqrt_accuracy() {
    // Log-spaced over [1e-30, 1e30], plus the subnormal range.
    let points = (0..=1_000_000)
        .map(|i| 10f64.powf(-30.0 + 60.0 * i as f64 / 1e6) as f32)
        .chain((1..1000).map(|i| f32::MIN_POSITIVE * i as f32 / 1000.0));
    let rel = max_err(points, |x| {
        let r = (x as f64).sqrt();
        ((math::sqrt(x) as f64 - r) / r).abs()
    });
    println!("{BUILD}: sqrt max relative error {rel:.3e}");
    assert!(rel <= SQRT_REL, "sqrt relative {rel:e} > {SQRT_REL:e}");
}

#[test]
fn tanh_accuracy() {
    let abs = max_err(grid(-20.0, 20.0, 1_000_000), |x| {
        (math::tanh(x) as f64 - (x as f64).tanh()).abs()
    });
    println!("{BUILD}: tanh max absolute error {abs:.3e}");
    assert!(abs <= TANH_ABS, "tanh absolute {abs:e} > {TANH_ABS:e}");
    // Saturates without overflow far out.
    for x in [30.0f32, 100.0, 1e10, f32::MAX] {
        assert_eq!(math::tanh(x), 1.0);
        assert_eq!(math::tanh(-x), -1.0);
    }
}

#[test]
fn erf_accuracy() {
    let abs = max_err(grid(-8.0, 8.0, 1_000_000), |x| {
        (math::erf(x) as f64 - erf_f64(x as f64)).abs()
    });
    println!("{BUILD}: erf max absolute error {abs:.3e}");
    assert!(abs <= ERF_ABS, "erf absolute {abs:e} > {ERF_ABS:e}");
}

// ---------------------------------------------------------------------------------------------
// Products, one macro per operation instantiated for every dtype.

/// One random product problem: `W` is `rows x cols`, `X` is `n x cols`.
#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    cols: usize,
    n: usize,
    w: Vec<f32>,
    x: Vec<f32>,
    bias: Option<Vec<f32>>,
    y0: Vec<f32>,
    a: f32,
}

fn case() -> impl Strategy<Value = Case> {
    // Short rows, and rows that cross the 128-column tiles of the summation order.
    let cols = prop_oneof![0usize..=9, 1usize..=300];
    (1usize..=10, cols, 1usize..=5, any::<bool>()).prop_flat_map(|(rows, cols, n, has_bias)| {
        (
            vec(-2.0f32..2.0, rows * cols),
            vec(-3.0f32..3.0, n * cols),
            vec(-1.0f32..1.0, rows),
            vec(-5.0f32..5.0, cols),
            -2.0f32..2.0,
        )
            .prop_map(move |(w, x, b, y0, a)| Case {
                rows,
                cols,
                n,
                w,
                x,
                bias: has_bias.then_some(b),
                y0,
                a,
            })
    })
}

/// `|got - exact| <= (n + 3) * EPS * scale`, with `scale` the sum of the absolute terms.
fn close_sum(got: f32, exact: f64, scale: f64, n: usize, what: &str) -> Result<(), TestCaseError> {
    let tol = (n as f64 + 3.0) * EPS * scale + 1e-30;
    prop_assert!(
        (got as f64 - exact).abs() <= tol,
        "{what}: got {got}, exact {exact}, tol {tol:e}"
    );
    Ok(())
}

fn check_dot_row(dt: DType, c: &Case) -> Result<(), TestCaseError> {
    let m = TestMatrix::quantize(dt, c.rows, c.cols, &c.w);
    let w = m.matrix();
    let x = &c.x[..c.cols];
    for r in 0..c.rows {
        let got = kernels::dot_row(&w, r, x);
        let (exact, scale) = m.dot_row(r, x);
        close_sum(got, exact, scale, c.cols, "dot_row")?;
        if dt == DType::F32 {
            // Documented: the slice dot uses the same order.
            let got2 = kernels::dot(&c.w[r * c.cols..(r + 1) * c.cols], x);
            prop_assert_eq!(got.to_bits(), got2.to_bits());
        }
    }
    Ok(())
}

fn check_axpy_row(dt: DType, c: &Case) -> Result<(), TestCaseError> {
    let m = TestMatrix::quantize(dt, c.rows, c.cols, &c.w);
    let w = m.matrix();
    for r in 0..c.rows {
        let mut y = c.y0.clone();
        kernels::axpy_row(&w, r, c.a, &mut y);
        for (j, &got) in y.iter().enumerate() {
            let t = c.a as f64 * m.get(r, j);
            let exact = c.y0[j] as f64 + t;
            // At most three roundings: (a * scale), the product, the sum.
            let tol = 3.0 * EPS * (c.y0[j].abs() as f64 + t.abs()) + 1e-30;
            prop_assert!((got as f64 - exact).abs() <= tol, "axpy_row[{r}][{j}]");
        }
    }
    Ok(())
}

fn check_row_to_f32(dt: DType, c: &Case) -> Result<(), TestCaseError> {
    let m = TestMatrix::quantize(dt, c.rows, c.cols, &c.w);
    let w = m.matrix();
    let mut out = vec![f32::NAN; c.cols];
    for r in 0..c.rows {
        kernels::row_to_f32(&w, r, &mut out);
        for (j, &got) in out.iter().enumerate() {
            let exact = m.get(r, j);
            // f32 and f16 convert exactly; int8 rounds `scale * q` once.
            let tol = if dt == DType::I8 {
                0.5 * EPS * exact.abs()
            } else {
                0.0
            };
            prop_assert!((got as f64 - exact).abs() <= tol, "row_to_f32[{r}][{j}]");
        }
    }
    Ok(())
}

fn check_matvec(dt: DType, c: &Case) -> Result<(), TestCaseError> {
    let m = TestMatrix::quantize(dt, c.rows, c.cols, &c.w);
    let w = m.matrix();
    let x = &c.x[..c.cols];
    let mut y = vec![f32::NAN; c.rows];
    kernels::matvec(&w, x, c.bias.as_deref(), &mut y);
    for (r, &got) in y.iter().enumerate() {
        let b = c.bias.as_ref().map_or(0.0, |b| b[r]);
        let (exact, scale) = m.dot_row(r, x);
        close_sum(
            got,
            exact + b as f64,
            scale + b.abs() as f64,
            c.cols + 1,
            "matvec",
        )?;
        // Documented: bit-identical to dot_row plus the bias.
        let want = kernels::dot_row(&w, r, x) + b;
        prop_assert_eq!(got.to_bits(), want.to_bits(), "matvec[{}] vs dot_row", r);
    }
    Ok(())
}

fn check_matmul(dt: DType, c: &Case) -> Result<(), TestCaseError> {
    let m = TestMatrix::quantize(dt, c.rows, c.cols, &c.w);
    let w = m.matrix();
    let mut y = vec![f32::NAN; c.n * c.rows];
    kernels::matmul(&w, &c.x, c.n, c.bias.as_deref(), &mut y);
    let mut yi = vec![f32::NAN; c.rows];
    for i in 0..c.n {
        let x = &c.x[i * c.cols..(i + 1) * c.cols];
        for r in 0..c.rows {
            let b = c.bias.as_ref().map_or(0.0, |b| b[r]);
            let (exact, scale) = m.dot_row(r, x);
            let got = y[i * c.rows + r];
            close_sum(
                got,
                exact + b as f64,
                scale + b.abs() as f64,
                c.cols + 1,
                "matmul",
            )?;
        }
        // Documented: the result of an input row does not depend on how many rows share the
        // call (bit-identical to matvec).
        kernels::matvec(&w, x, c.bias.as_deref(), &mut yi);
        for r in 0..c.rows {
            prop_assert_eq!(
                y[i * c.rows + r].to_bits(),
                yi[r].to_bits(),
                "matmul vs matvec"
            );
        }
    }
    Ok(())
}

macro_rules! test_per_dtype {
    ($op:ident, $check:ident) => {
        mod $op {
            use super::*;
            proptest! {
                #[test]
                fn f32(c in case()) { $check(DType::F32, &c)?; }
                #[test]
                fn f16(c in case()) { $check(DType::F16, &c)?; }
                #[test]
                fn i8(c in case()) { $check(DType::I8, &c)?; }
            }
        }
    };
}

test_per_dtype!(dot_row, check_dot_row);
test_per_dtype!(axpy_row, check_axpy_row);
test_per_dtype!(row_to_f32, check_row_to_f32);
test_per_dtype!(matvec, check_matvec);
test_per_dtype!(matmul, check_matmul);

#[test]
fn empty_rows_give_the_bias() {
    // cols == 0: every dot is the empty sum.
    let m = TestMatrix::quantize(DType::F16, 3, 0, &[]);
    let mut y = [f32::NAN; 6];
    kernels::matmul(&m.matrix(), &[], 2, Some(&[1.0, -2.0, 0.5]), &mut y);
    assert_eq!(y, [1.0, -2.0, 0.5, 1.0, -2.0, 0.5]);
}

// ---------------------------------------------------------------------------------------------
// Norms.

/// A row with a random common offset and spread (small spreads make LayerNorm ill-conditioned;
/// the tolerance follows the condition number `max|x| / sqrt(var + eps)`).
fn norm_row() -> impl Strategy<Value = (Vec<f32>, Vec<f32>, Vec<f32>)> {
    (
        1usize..=300,
        -50.0f32..50.0,
        prop_oneof![Just(1e-3f32), 0.01f32..10.0],
    )
        .prop_flat_map(|(n, offset, spread)| {
            (
                vec(-1.0f32..1.0, n)
                    .prop_map(move |u| u.iter().map(|v| offset + spread * v).collect::<Vec<f32>>()),
                vec(-2.0f32..2.0, n),
                vec(-1.0f32..1.0, n),
            )
        })
}

proptest! {
    #[test]
    fn layer_norm_matches_f64((x, gamma, beta) in norm_row(), eps in prop_oneof![Just(1e-12f32), Just(1e-5f32)]) {
        let want = layer_norm_f64(&x, &gamma, &beta, eps);
        let mut got = x.clone();
        kernels::layer_norm(&mut got, &gamma, &beta, eps);
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let sigma = (var + eps as f64).sqrt();
        let max_abs = x.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
        let max_dev = x.iter().fold(0f64, |m, &v| m.max((v as f64 - mean).abs()));
        // The kernel centers with the f32 mean m and corrects by c = mean(x - m): the centered
        // values carry about (n + 3) EPS of their size, which is max|x - mean| plus the
        // error of m (n EPS max|x|), relative to sigma; then the relative error of the
        // variance sum and of sqrt applies to each normalized value z.
        let e_center = (n + 3.0) * EPS * (max_dev + n * EPS * max_abs) / sigma;
        for i in 0..x.len() {
            let z = (x[i] as f64 - mean) / sigma;
            let tol = 2.0 * gamma[i].abs() as f64 * (e_center * (1.0 + z.abs())
                + z.abs() * ((n + 4.0) * EPS + SQRT_REL))
                + 2.0 * EPS * (want[i].abs() + beta[i].abs() as f64) + 1e-30;
            prop_assert!((got[i] as f64 - want[i]).abs() <= tol,
                "layer_norm[{}]: got {} want {} tol {:e}", i, got[i], want[i], tol);
        }
    }

    #[test]
    fn rms_norm_matches_f64((x, gamma, _beta) in norm_row(), eps in prop_oneof![Just(1e-12f32), Just(1e-6f32)]) {
        let want = rms_norm_f64(&x, &gamma, eps);
        let mut got = x.clone();
        kernels::rms_norm(&mut got, &gamma, eps);
        let n = x.len() as f64;
        for i in 0..x.len() {
            // Relative error of the mean square (n terms), half of it through sqrt, then
            // sqrt itself and three roundings.
            let tol = want[i].abs() * ((n + 8.0) * EPS + SQRT_REL) + 1e-30;
            prop_assert!((got[i] as f64 - want[i]).abs() <= tol,
                "rms_norm[{}]: got {} want {} tol {:e}", i, got[i], want[i], tol);
        }
    }
}

#[test]
fn layer_norm_output_is_standardized() {
    // gamma = 1, beta = 0: mean 0 and variance 1 (up to eps) whatever the offset.
    let x: Vec<f32> = (0..384)
        .map(|i| 1000.0 + ((i * 37) % 101) as f32 * 0.01)
        .collect();
    let mut y = x.clone();
    kernels::layer_norm(&mut y, &vec![1.0; 384], &vec![0.0; 384], 1e-12);
    let mean = y.iter().map(|&v| v as f64).sum::<f64>() / 384.0;
    let var = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 384.0;
    // The inputs are only known to ~1e-4 relative to their spread (f32 at 1000 has ulp 6e-5).
    assert!(mean.abs() < 1e-5, "mean {mean}");
    assert!((var - 1.0).abs() < 1e-5, "variance {var}");
}

// ---------------------------------------------------------------------------------------------
// Activations.

fn activation_tol(act: Activation, x: f32, want: f64) -> f64 {
    let (x, r) = (x.abs() as f64, 4.0 * EPS * want.abs() + 1e-30);
    match act {
        Activation::Relu => 0.0,
        // 0.5 x (1 + erf(x / sqrt 2)): erf's error (and the argument's rounding) times x / 2.
        Activation::GeluErf => 0.5 * x * (ERF_ABS + 4.0 * EPS) + r,
        // tanh's error times x / 2; tanh' * u <= 0.45 bounds the argument's rounding.
        Activation::GeluTanh => 0.5 * x * (TANH_ABS + 8.0 * EPS) + r,
        // x / (1 + e): a relative error d of e moves it by at most x d / 4.
        Activation::Silu => 0.25 * x * EXP_REL + r,
    }
}

macro_rules! test_activation {
    ($name:ident, $act:expr) => {
        proptest! {
            #[test]
            fn $name(x in prop_oneof![-8.0f32..8.0, -100.0f32..100.0, Just(0.0f32)]) {
                let got = kernels::activate($act, x);
                let want = activate_f64($act, x as f64);
                let tol = activation_tol($act, x, want);
                prop_assert!((got as f64 - want).abs() <= tol,
                    "{:?}({}): got {} want {} tol {:e}", $act, x, got, want, tol);
                let mut s = [x, -x];
                kernels::activate_slice($act, &mut s);
                prop_assert_eq!(s[0].to_bits(), got.to_bits());
                prop_assert_eq!(s[1].to_bits(), kernels::activate($act, -x).to_bits());
            }
        }
    };
}

test_activation!(relu_matches_f64, Activation::Relu);
test_activation!(gelu_erf_matches_f64, Activation::GeluErf);
test_activation!(gelu_tanh_matches_f64, Activation::GeluTanh);
test_activation!(silu_matches_f64, Activation::Silu);

#[test]
fn activations_of_extreme_inputs_are_finite() {
    for act in [
        Activation::Relu,
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::Silu,
    ] {
        for x in [-1e30f32, -1e4, 1e4, 1e30] {
            let y = kernels::activate(act, x);
            assert!(y.is_finite(), "{act:?}({x}) = {y}");
            if x < 0.0 {
                assert_eq!(y, 0.0, "{act:?}({x})");
            } else {
                assert_eq!(y, x, "{act:?}({x})");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax.

fn scores() -> impl Strategy<Value = Vec<f32>> {
    vec(
        prop_oneof![8 => -30.0f32..30.0, 1 => Just(f32::NEG_INFINITY)],
        1..=300,
    )
}

proptest! {
    #[test]
    fn softmax_matches_f64_and_sums_to_one(x in scores()) {
        let mut p = x.clone();
        kernels::softmax(&mut p);
        if x.iter().all(|&v| v == f32::NEG_INFINITY) {
            prop_assert!(p.iter().all(|&v| v == 0.0));
            return Ok(());
        }
        let want = softmax_f64(&x);
        let n = x.len() as f64;
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        // The sum does not depend on exp's accuracy: only on the normalization's roundings.
        let sum: f64 = p.iter().map(|&v| v as f64).sum();
        prop_assert!((sum - 1.0).abs() <= (n + 2.0) * EPS, "sum {}", sum);
        for i in 0..x.len() {
            if x[i] == f32::NEG_INFINITY {
                prop_assert_eq!(p[i], 0.0);
                continue;
            }
            // exp's relative error, in the numerator and in the sum, plus the rounding of
            // x - max (an absolute error in exp's argument) and of the sum.
            let tol = want[i] * (2.0 * EXP_REL + EPS * (x[i] - max).abs() as f64 + (n + 4.0) * EPS)
                + 1e-30;
            prop_assert!((p[i] as f64 - want[i]).abs() <= tol,
                "softmax[{}]: got {} want {} tol {:e}", i, p[i], want[i], tol);
        }
    }
}

#[test]
fn softmax_edge_cases() {
    let mut empty: [f32; 0] = [];
    kernels::softmax(&mut empty);

    let mut masked = [f32::NEG_INFINITY; 5];
    kernels::softmax(&mut masked);
    assert_eq!(masked, [0.0; 5]);

    let mut one = [f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY];
    kernels::softmax(&mut one);
    assert_eq!(one, [0.0, 1.0, 0.0]);

    // Large equal scores: no overflow, exactly uniform.
    let mut big = [1e30f32; 4];
    kernels::softmax(&mut big);
    assert_eq!(big, [0.25; 4]);

    // Documented: NaN poisons the whole row rather than passing silently.
    let mut nan = [1.0, f32::NAN, 2.0];
    kernels::softmax(&mut nan);
    assert!(nan.iter().all(|v| v.is_nan()));
}

// ---------------------------------------------------------------------------------------------
// Small elementwise helpers.

proptest! {
    #[test]
    fn elementwise_helpers(x in vec(-10.0f32..10.0, 0..50), s in -3.0f32..3.0) {
        let y0: Vec<f32> = x.iter().map(|v| v * 0.5 - 1.0).collect();
        let mut y = y0.clone();
        kernels::add_in_place(&mut y, &x);
        for i in 0..x.len() { prop_assert_eq!(y[i], y0[i] + x[i]); }
        let mut y = y0.clone();
        kernels::mul_in_place(&mut y, &x);
        for i in 0..x.len() { prop_assert_eq!(y[i], y0[i] * x[i]); }
        let mut y = y0.clone();
        kernels::axpy(&mut y, s, &x);
        for i in 0..x.len() { prop_assert_eq!(y[i], y0[i] + s * x[i]); }
        let mut y = y0.clone();
        kernels::scale(&mut y, s);
        for i in 0..x.len() { prop_assert_eq!(y[i], y0[i] * s); }
    }
}
