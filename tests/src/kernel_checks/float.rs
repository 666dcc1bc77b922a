//! f32 products, activations, normalisation and the exponential.

use super::product::{AccCase, MatCase};
use super::tol::{Tol, assert_all_close, assert_close, dot_bound, mag};
use topkit::Activation;
use topkit::kernels::{self, Matrix, Weights};
use topkit::kernels::{EXP_POLY_MAX, EXP_POLY_MIN};

/// f32 weights and tokens.
pub type MatF32Case = MatCase<f32>;

/// The down projection of f32 tokens.
pub type AccF32Case = AccCase<f32>;

/// `dot` of f32 `(a, b)`: `f` within [`Tol::Bound`] `(n + 3) * EPS * sum |a_i b_i|` of the
/// generic one (both are within `n * EPS * sum |a_i b_i|` of the exact value).
pub fn dot_f32(c: &(Vec<f32>, Vec<f32>), f: impl Fn(&[f32], &[f32]) -> f32, tol: Tol) {
    let (a, b) = c;
    let bound = dot_bound(a.len(), 3.0, mag(a.iter().copied(), b.iter().copied()));
    assert_all_close(&[f(a, b)], &[kernels::dot(a, b)], tol, |_| bound);
}

/// f32 axpy of `(x, y0, a)`: `f` within [`Tol::Bound`] `2 * EPS * (|a x_i| + |y0_i|)` (a
/// fused rounding) of the generic `axpy` (`y0 += a * x`) per element.
pub fn axpy_f32(c: &(Vec<f32>, Vec<f32>, f32), f: impl Fn(&mut [f32], f32, &[f32]), tol: Tol) {
    let (x, y0, a) = c;
    let mut want = y0.clone();
    kernels::axpy(&mut want, *a, x);
    let mut got = y0.clone();
    f(&mut got, *a, x);
    let bound = |i: usize| dot_bound(0, 2.0, ((a * x[i]).abs() + y0[i].abs()) as f64);
    assert_all_close(&got, &want, tol, bound);
}

/// f32 matmul with bias: `f` within [`Tol::Bound`] `(cols + 4) * EPS * (sum |w x| + |bias|)`
/// of the generic `matmul` per output (the bias added after the sum in both).
pub fn matmul_f32(
    c: &MatF32Case,
    f: impl Fn(&Matrix<'_>, &[f32], usize, Option<&[f32]>, &mut [f32]),
    tol: Tol,
) {
    let (rows, cols, n, bias) = (c.rows, c.cols, c.n, c.bias.as_deref());
    let w = Matrix::new(rows, cols, Weights::F32(&c.w)).unwrap();
    let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
    kernels::matmul(&w, &c.x, n, bias, &mut want);
    f(&w, &c.x, n, bias, &mut got);
    let bound = |o: usize| {
        let (i, r) = (o / rows, o % rows);
        let (wr, xi) = (&c.w[r * cols..][..cols], &c.x[i * cols..][..cols]);
        let wx = mag(wr.iter().copied(), xi.iter().copied());
        dot_bound(cols, 4.0, wx + bias.map_or(0.0, |b| b[r].abs() as f64))
    };
    assert_all_close(&got, &want, tol, bound);
}

/// `accumulate_f32_tokens`: `f` within [`Tol::Bound`] `2 * (k + 3) * EPS * (sum |h w| +
/// |out0|)` of the generic one per element.
pub fn accumulate_f32_tokens(
    c: &AccF32Case,
    f: impl Fn(&mut [f32], &[f32], usize, &[f32], usize),
    tol: Tol,
) {
    let (cols, k, n) = (c.cols, c.k, c.n);
    let mut want = c.out0.clone();
    kernels::accumulate_f32_tokens(&mut want, &c.w, cols, &c.h, n);
    let mut got = c.out0.clone();
    f(&mut got, &c.w, cols, &c.h, n);
    let bound = |o: usize| {
        let (t, col) = (o / cols, o % cols);
        let column = (0..k).map(|j| c.w[j * cols + col]);
        let hw = mag(c.h[t * k..][..k].iter().copied(), column);
        2.0 * dot_bound(k, 3.0, hw + c.out0[o].abs() as f64)
    };
    assert_all_close(&got, &want, tol, bound);
}

/// GELU (erf form) in place over `x`: `f` within `|x| * rel + 1e-7` of `activate_fast` (which
/// takes the math library's `exp`). Returns the worst `|err| / (|x| + 1)`.
pub fn gelu_erf(x: &[f32], f: impl Fn(&mut [f32]), rel: f32) -> f32 {
    let mut got = x.to_vec();
    f(&mut got);
    let mut worst = 0f32;
    for (&v, &g) in x.iter().zip(&got) {
        let want = kernels::activate_fast(Activation::GeluErf, v);
        let err = (g - want).abs();
        assert!(err <= v.abs() * rel + 1e-7, "gelu({v}) = {g} vs {want}");
        worst = worst.max(err / (v.abs() + 1.0));
    }
    worst
}

/// LayerNorm (eps 1e-12) of `(x, gamma, beta)`: `f` (another summation order, a fused affine
/// step) within [`Tol::Bound`] `1e-4 * |gamma| * (1 + |z|) + 1e-6 * (1 + |beta|)` of the
/// generic one per element, `z` the standardized input.
pub fn layer_norm(
    c: &(Vec<f32>, Vec<f32>, Vec<f32>),
    f: impl Fn(&mut [f32], &[f32], &[f32], f32),
    tol: Tol,
) {
    let (x, g, b) = c;
    let mut want = x.clone();
    kernels::layer_norm(&mut want, g, b, 1e-12);
    let mut got = x.clone();
    f(&mut got, g, b, 1e-12);
    let n = x.len() as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt().max(1e-30);
    let bound = |i: usize| {
        let z = (x[i] as f64 - m) / sd;
        1e-4 * (g[i].abs() as f64) * (1.0 + z.abs()) + 1e-6 * (1.0 + b[i].abs() as f64)
    };
    assert_all_close(&got, &want, tol, bound);
}

/// Max relative error of the slice kernel `f` against f64 `exp` over `n` evenly spaced points
/// of `[lo, hi]`.
pub fn exp_rel_error(f: impl Fn(&mut [f32]), lo: f32, hi: f32, n: usize) -> f64 {
    let xs: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect();
    let mut ys = xs.clone();
    f(&mut ys);
    xs.iter()
        .zip(&ys)
        .map(|(&x, &y)| {
            let want = (x as f64).exp();
            ((y as f64 - want) / want).abs()
        })
        .fold(0.0, f64::max)
}

/// `exp` over a slice: `f` within `tol` of `exp_poly` at each of `x` (a NaN for a NaN;
/// [`Tol::Rel`] keeps the 0 below the range) and exactly 1 at 0.
pub fn exp(x: &[f32], f: impl Fn(&mut [f32]), tol: Tol) {
    let mut got = x.to_vec();
    f(&mut got);
    for (&g, &xi) in got.iter().zip(x) {
        let want = kernels::exp_poly(xi);
        if want.is_nan() {
            assert!(g.is_nan(), "exp({xi}) = {g}");
            continue;
        }
        assert_close(g, want, tol, 0.0, || format!("exp({xi})"));
        if xi == 0.0 {
            assert_eq!(g, 1.0);
        }
    }
}

/// Arguments of `exp` worth checking exactly: zeros, the polynomial's limits and just past
/// them, huge values, infinities, NaN, the softmax's deep negatives.
pub const EXP_SPECIALS: [f32; 14] = [
    0.0,
    -0.0,
    EXP_POLY_MIN,
    EXP_POLY_MAX,
    f32::from_bits(EXP_POLY_MIN.to_bits() + 1),
    f32::from_bits(EXP_POLY_MAX.to_bits() + 1),
    -1e30,
    1e30,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    88.0,
    -87.0,
    -88.0,
];
