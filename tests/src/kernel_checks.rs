//! The arch kernels against the generic ones: one check per kernel operation, shared by every
//! build that has arch kernels. The host tests instantiate them over proptest strategies
//! (tests/tests/fast_kernels.rs, attn_kernels.rs: x86-64); the wasm test crate over the
//! deterministic [`cases`] (targets/wasm/tests/simd128_kernels.rs: simd128 in node, which
//! includes this file with `#[path]`, as proptest does not run there).
//!
//! A check runs the kernel under test (a parameter: a path or a closure, so that renaming a
//! kernel only touches the line that instantiates its test) and the generic kernel on one
//! case, and asserts that they agree: bit for bit where the design promises it (integer sums,
//! the same float operations in the same order), else within the [`Tol`] the instantiation
//! names. [`kernel_test!`] makes one test of a check. The generic kernels are named only here.
//!
//! The file may use `topkit` and `std` only: the wasm test crate has no other dependency.

use topkit::Activation;
use topkit::kernels::attn::{
    self, ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, AttnTopkWork,
    EXP_POLY_MAX, EXP_POLY_MIN,
};
use topkit::kernels::{self, Matrix, Weights};

/// One test of a check: `name, cases => check(args..)` calls `check(&case, args..)` for each
/// case. The cases are a proptest strategy (`proptest name, strategy => ..`: a `#[test]`
/// under proptest, which needs the crate `proptest`) or an iterator (`#[attr] name, iter =>
/// ..`: one test with that attribute, e.g. `#[wasm_bindgen_test]`).
#[macro_export]
macro_rules! kernel_test {
    (proptest $name:ident, $strategy:expr => $check:path $(, $arg:expr)* $(,)?) => {
        proptest::proptest! {
            #[test]
            fn $name(case in $strategy) {
                $check(&case $(, $arg)*);
            }
        }
    };
    (#[$attr:meta] $name:ident, $cases:expr => $check:path $(, $arg:expr)* $(,)?) => {
        #[$attr]
        fn $name() {
            for case in $cases {
                $check(&case $(, $arg)*);
            }
        }
    };
}

/// How close a float result of the kernel under test must be to the generic one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Tol {
    /// The generic bits.
    Bits,
    /// Within the rounding bound of a sum of products summed in another order or fused; each
    /// check that takes it states the bound.
    Dot,
    /// Within this absolute error (on normalised outputs where the check says so).
    Abs(f64),
    /// Within this error relative to the generic value.
    Rel(f64),
}

impl Tol {
    /// Whether `got` is close enough to `want`; `dot` is the check's [`Tol::Dot`] bound.
    fn holds(self, got: f32, want: f32, dot: f64) -> bool {
        let err = (got as f64 - want as f64).abs();
        match self {
            Tol::Bits => got.to_bits() == want.to_bits(),
            Tol::Dot => err <= dot,
            Tol::Abs(e) => err <= e,
            Tol::Rel(r) => err <= r * (want as f64).abs(),
        }
    }
}

/// Asserts [`Tol::holds`]; `at` names the element (made only on failure).
#[track_caller]
fn assert_close(got: f32, want: f32, tol: Tol, dot: f64, at: impl FnOnce() -> String) {
    if !tol.holds(got, want, dot) {
        panic!("{}: {got} vs {want} ({tol:?}, dot bound {dot:e})", at());
    }
}

/// The bit patterns of `v`, to compare float slices exactly.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The rounding bound of an f32 sum of `n` products (or terms) of magnitude sum `mag`, with
/// `extra` more roundings: `(n + extra) * EPS * mag`.
fn dot_bound(n: usize, extra: f64, mag: f64) -> f64 {
    (n as f64 + extra) * f32::EPSILON as f64 * mag + 1e-30
}

// ---- Int8 products and quantization: always the generic bits (exact i32 sums, the same
// float epilogue).

/// Int8 weights (`rows x cols`, one scale per row) and `n` f32 tokens of `cols`.
#[derive(Clone, Debug)]
pub struct Q8Case {
    /// Weight rows.
    pub rows: usize,
    /// Weight columns, the token width.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, row-major.
    pub q: Vec<i8>,
    /// Row scales.
    pub scales: Vec<f32>,
    /// Tokens, `n * cols`.
    pub x: Vec<f32>,
    /// Optional bias per row.
    pub bias: Option<Vec<f32>>,
}

impl Q8Case {
    /// The weights as a matrix.
    pub fn matrix(&self) -> Matrix<'_> {
        let w = Weights::I8 {
            q: &self.q,
            scales: &self.scales,
        };
        Matrix::new(self.rows, self.cols, w).unwrap()
    }

    /// The tokens quantized by the generic `quantize_i8_token`: values (`n * cols`) and block
    /// scales (`n * qt_blocks(cols)`).
    pub fn tokens(&self) -> (Vec<i8>, Vec<f32>) {
        let (cols, nb) = (self.cols, kernels::qt_blocks(self.cols));
        let (mut xq, mut xs) = (vec![0i8; self.n * cols], vec![0f32; self.n * nb]);
        for t in 0..self.n {
            kernels::quantize_i8_token(
                &self.x[t * cols..][..cols],
                &mut xq[t * cols..][..cols],
                &mut xs[t * nb..][..nb],
            );
        }
        (xq, xs)
    }

    fn shape(&self) -> String {
        let bias = self.bias.is_some();
        format!(
            "rows {} cols {} n {} bias {bias}",
            self.rows, self.cols, self.n
        )
    }
}

/// `matmul_q8_tokens` (the tokens quantized by the generic kernel): `f` gives the generic bits.
pub fn matmul_q8_tokens(
    c: &Q8Case,
    f: impl Fn(&Matrix<'_>, &[i8], &[f32], usize, Option<&[f32]>, &mut [f32]),
) {
    let (w, (xq, xs)) = (c.matrix(), c.tokens());
    let mut want = vec![0f32; c.n * c.rows];
    kernels::matmul_q8_tokens(&w, &xq, &xs, c.n, c.bias.as_deref(), &mut want);
    let mut got = vec![f32::NAN; c.n * c.rows];
    f(&w, &xq, &xs, c.n, c.bias.as_deref(), &mut got);
    assert_eq!(bits(&got), bits(&want), "{}", c.shape());
}

/// `matmul_i8_i8_token` (quantization and product): `f` gives the generic bits.
pub fn matmul_i8_i8_token(
    c: &Q8Case,
    f: impl Fn(&Matrix<'_>, &[f32], usize, Option<&[f32]>, &mut [f32]),
) {
    let w = c.matrix();
    let mut want = vec![0f32; c.n * c.rows];
    kernels::matmul_i8_i8_token(&w, &c.x, c.n, c.bias.as_deref(), &mut want);
    let mut got = vec![f32::NAN; c.n * c.rows];
    f(&w, &c.x, c.n, c.bias.as_deref(), &mut got);
    assert_eq!(bits(&got), bits(&want), "{}", c.shape());
}

/// The down projection of `n` int8 tokens of `k` units: `out0 (n x cols) += hq (n x k) * q (k
/// x cols)`, one scale per token.
#[derive(Clone, Debug)]
pub struct AccQ8Case {
    /// Output columns.
    pub cols: usize,
    /// Units per token.
    pub k: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, `k * cols`.
    pub q: Vec<i8>,
    /// Int8 tokens, `n * k`.
    pub hq: Vec<i8>,
    /// Token scales.
    pub hs: Vec<f32>,
    /// The output before the call, `n * cols`.
    pub out0: Vec<f32>,
}

/// `accumulate_q8_tokens`: `f` gives the generic bits.
pub fn accumulate_q8_tokens(
    c: &AccQ8Case,
    f: impl Fn(&mut [f32], &[i8], usize, &[i8], &[f32], usize),
) {
    let mut want = c.out0.clone();
    kernels::accumulate_q8_tokens(&mut want, &c.q, c.cols, &c.hq, &c.hs, c.n);
    let mut got = c.out0.clone();
    f(&mut got, &c.q, c.cols, &c.hq, &c.hs, c.n);
    let (cols, k, n) = (c.cols, c.k, c.n);
    assert_eq!(bits(&got), bits(&want), "cols {cols} k {k} n {n}");
}

/// `quantize_i8_token` of `x`: `f` gives the generic values and the bits of its scales.
pub fn quantize_i8_token(x: &[f32], f: impl Fn(&[f32], &mut [i8], &mut [f32])) {
    let nb = kernels::qt_blocks(x.len());
    let (mut qw, mut sw) = (vec![0i8; x.len()], vec![0f32; nb]);
    kernels::quantize_i8_token(x, &mut qw, &mut sw);
    let (mut qg, mut sg) = (vec![0i8; x.len()], vec![0f32; nb]);
    f(x, &mut qg, &mut sg);
    assert_eq!(qg, qw, "len {}", x.len());
    assert_eq!(bits(&sg), bits(&sw), "len {}", x.len());
}

/// `dot_i8_i8`: `f` returns the generic (exact) value.
pub fn dot_i8_i8(c: &(Vec<i8>, Vec<i8>), f: impl Fn(&[i8], &[i8]) -> i32) {
    assert_eq!(f(&c.0, &c.1), kernels::dot_i8_i8(&c.0, &c.1));
}

/// One int8 row times `a * s` added to `y0` (`s` the row's scale).
#[derive(Clone, Debug)]
pub struct AxpyI8Case {
    /// The row.
    pub q: Vec<i8>,
    /// The output before the call.
    pub y0: Vec<f32>,
    /// The multiplier.
    pub a: f32,
    /// The row scale.
    pub s: f32,
}

/// int8 axpy: `f(y, a * s, q)` gives the bits of the generic `axpy_row` of a one-row matrix
/// of scale `s`.
pub fn axpy_i8(c: &AxpyI8Case, f: impl Fn(&mut [f32], f32, &[i8])) {
    let scales = [c.s];
    let w = Matrix::new(
        1,
        c.q.len(),
        Weights::I8 {
            q: &c.q,
            scales: &scales,
        },
    )
    .unwrap();
    let mut want = c.y0.clone();
    kernels::axpy_row(&w, 0, c.a, &mut want);
    let mut got = c.y0.clone();
    f(&mut got, c.a * c.s, &c.q);
    assert_eq!(bits(&got), bits(&want));
}

/// A dense int8 feed-forward on `n` tokens of `d`: `up` and `down_t` are `d_ff x d` int8
/// matrices (one scale per unit), each with an optional bias (`d_ff` and `d`).
#[derive(Clone, Debug)]
pub struct FfnQ8Case {
    /// Token width.
    pub d: usize,
    /// Hidden units.
    pub d_ff: usize,
    /// Tokens.
    pub n: usize,
    /// Up projection: weights, unit scales, bias.
    pub up: (Vec<i8>, Vec<f32>, Option<Vec<f32>>),
    /// Down projection, transposed (a row per unit): weights, unit scales, bias.
    pub down: (Vec<i8>, Vec<f32>, Option<Vec<f32>>),
    /// Tokens, `n * d`.
    pub x: Vec<f32>,
    /// Activation between the projections.
    pub act: Activation,
}

impl FfnQ8Case {
    /// The up and down (transposed) matrices.
    pub fn matrices(&self) -> (Matrix<'_>, Matrix<'_>) {
        let (up, down) = (&self.up, &self.down);
        let up = Weights::I8 {
            q: &up.0,
            scales: &up.1,
        };
        let down = Weights::I8 {
            q: &down.0,
            scales: &down.1,
        };
        let m = |w| Matrix::new(self.d_ff, self.d, w).unwrap();
        (m(up), m(down))
    }

    /// The output before the feed-forward adds to it: the down bias per token, or zeros.
    pub fn out0(&self) -> Vec<f32> {
        match &self.down.2 {
            Some(b) => b.repeat(self.n),
            None => vec![0f32; self.n * self.d],
        }
    }

    /// The bits every int8 feed-forward kernel gives, from the unfused generic kernels and the
    /// fast activation: per token the up projection, the activation, each unit times its
    /// `down_t` row scale, one int8 scale per `QT_BLOCK` units, exact down-projection sums,
    /// added to [`FfnQ8Case::out0`].
    pub fn unfused(&self) -> Vec<f32> {
        let (d, d_ff, bl) = (self.d, self.d_ff, kernels::QT_BLOCK);
        let (up, _) = self.matrices();
        let (dq, ds) = (&self.down.0, &self.down.1);
        let nb = kernels::qt_blocks(d);
        let mut out = self.out0();
        for (xt, ot) in self.x.chunks(d).zip(out.chunks_mut(d)) {
            let (mut xq, mut xs) = (vec![0i8; d], vec![0f32; nb]);
            kernels::quantize_i8_token(xt, &mut xq, &mut xs);
            let mut h = vec![0f32; d_ff];
            kernels::matmul_q8_tokens(&up, &xq, &xs, 1, self.up.2.as_deref(), &mut h);
            kernels::activate_slice_by(kernels::Kernels::Fast, self.act, &mut h);
            for (j0, hb) in h.chunks_mut(bl).enumerate() {
                let j0 = j0 * bl;
                for (v, &sc) in hb.iter_mut().zip(&ds[j0..]) {
                    *v *= sc;
                }
                let (mut hq, mut hs) = (vec![0i8; hb.len()], [0f32]);
                kernels::quantize_i8_token(hb, &mut hq, &mut hs);
                let dqb = &dq[j0 * d..(j0 + hb.len()) * d];
                kernels::accumulate_q8_tokens(ot, dqb, d, &hq, &hs, 1);
            }
        }
        out
    }
}

/// A fused int8 feed-forward kernel `f` (adding to the output, returning whether it took the
/// shape): on the shapes `fits(d, d_ff)` it gives the bits of [`FfnQ8Case::unfused`]; it
/// refuses the others without touching the output.
pub fn ffn_q8(
    c: &FfnQ8Case,
    f: impl Fn(&Matrix<'_>, Option<&[f32]>, Activation, &Matrix<'_>, &[f32], usize, &mut [f32]) -> bool,
    fits: impl Fn(usize, usize) -> bool,
) {
    let (d, d_ff, n, act) = (c.d, c.d_ff, c.n, c.act);
    let (up, down_t) = c.matrices();
    let out0 = c.out0();
    let mut got = out0.clone();
    let fused = f(&up, c.up.2.as_deref(), c.act, &down_t, &c.x, c.n, &mut got);
    if !fits(d, d_ff) {
        assert!(!fused, "d {d} d_ff {d_ff}: not the fused kernel's shape");
        assert_eq!(bits(&got), bits(&out0), "d {d} d_ff {d_ff}: output touched");
        return;
    }
    assert!(fused, "d {d} d_ff {d_ff}");
    assert_eq!(
        bits(&got),
        bits(&c.unfused()),
        "d {d} d_ff {d_ff} n {n} {act:?}"
    );
}

// ---- f32 products, activations and normalisation.

/// `dot` of f32: `f` within [`Tol::Dot`] `(n + 3) * EPS * sum |a_i b_i|` of the generic one
/// (both are within `n * EPS * sum |a_i b_i|` of the exact value).
pub fn dot_f32(c: &(Vec<f32>, Vec<f32>), f: impl Fn(&[f32], &[f32]) -> f32, tol: Tol) {
    let (a, b) = c;
    let mag: f64 = a
        .iter()
        .zip(b)
        .map(|(&p, &q)| (p as f64 * q as f64).abs())
        .sum();
    let n = a.len();
    assert_close(
        f(a, b),
        kernels::dot(a, b),
        tol,
        dot_bound(n, 3.0, mag),
        || format!("n {n}"),
    );
}

/// `y0 + a * x`.
#[derive(Clone, Debug)]
pub struct AxpyCase {
    /// The vector scaled.
    pub x: Vec<f32>,
    /// The output before the call.
    pub y0: Vec<f32>,
    /// The multiplier.
    pub a: f32,
}

/// f32 axpy: `f` within [`Tol::Dot`] `2 * EPS * (|a x_i| + |y_i|)` (a fused rounding) of the
/// generic `axpy` per element.
pub fn axpy_f32(c: &AxpyCase, f: impl Fn(&mut [f32], f32, &[f32]), tol: Tol) {
    let mut want = c.y0.clone();
    kernels::axpy(&mut want, c.a, &c.x);
    let mut got = c.y0.clone();
    f(&mut got, c.a, &c.x);
    for i in 0..c.x.len() {
        let mag = ((c.a * c.x[i]).abs() + c.y0[i].abs()) as f64;
        assert_close(got[i], want[i], tol, dot_bound(0, 2.0, mag), || {
            format!("{i}")
        });
    }
}

/// An f32 matrix (`rows x cols`), `n` tokens of `cols` and a bias per row.
#[derive(Clone, Debug)]
pub struct MatF32Case {
    /// Weight rows.
    pub rows: usize,
    /// Weight columns, the token width.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, row-major.
    pub w: Vec<f32>,
    /// Tokens, `n * cols`.
    pub x: Vec<f32>,
    /// Bias per row.
    pub bias: Vec<f32>,
}

/// f32 matmul with bias: `f` within [`Tol::Dot`] `(cols + 4) * EPS * (sum |w x| + |bias|)` of
/// the generic `matmul` per output (the bias added after the sum in both).
pub fn matmul_f32(
    c: &MatF32Case,
    f: impl Fn(&Matrix<'_>, &[f32], usize, Option<&[f32]>, &mut [f32]),
    tol: Tol,
) {
    let (rows, cols, n) = (c.rows, c.cols, c.n);
    let w = Matrix::new(rows, cols, Weights::F32(&c.w)).unwrap();
    let (mut want, mut got) = (vec![0f32; n * rows], vec![0f32; n * rows]);
    kernels::matmul(&w, &c.x, n, Some(&c.bias), &mut want);
    f(&w, &c.x, n, Some(&c.bias), &mut got);
    for i in 0..n {
        for r in 0..rows {
            let wr = &c.w[r * cols..][..cols];
            let xi = &c.x[i * cols..][..cols];
            let mag: f64 = wr
                .iter()
                .zip(xi)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();
            let bound = dot_bound(cols, 4.0, mag + c.bias[r].abs() as f64);
            let (g, e) = (got[i * rows + r], want[i * rows + r]);
            assert_close(g, e, tol, bound, || format!("token {i} row {r}"));
        }
    }
}

/// The f32 down projection of `n` tokens of `k` units: `out0 (n x cols) += h (n x k) * w (k x
/// cols)`.
#[derive(Clone, Debug)]
pub struct AccF32Case {
    /// Output columns.
    pub cols: usize,
    /// Units per token.
    pub k: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, `k * cols`.
    pub w: Vec<f32>,
    /// Tokens, `n * k`.
    pub h: Vec<f32>,
    /// The output before the call, `n * cols`.
    pub out0: Vec<f32>,
}

/// `accumulate_f32_tokens`: `f` within [`Tol::Dot`] `2 * (k + 3) * EPS * (sum |h w| +
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
    for t in 0..n {
        for col in 0..cols {
            let mag: f64 = (0..k)
                .map(|j| (c.h[t * k + j] as f64 * c.w[j * cols + col] as f64).abs())
                .sum::<f64>()
                + c.out0[t * cols + col].abs() as f64;
            let bound = 2.0 * dot_bound(k, 3.0, mag);
            let (g, e) = (got[t * cols + col], want[t * cols + col]);
            assert_close(g, e, tol, bound, || format!("token {t} col {col}"));
        }
    }
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

/// A LayerNorm input and its affine parameters.
#[derive(Clone, Debug)]
pub struct NormCase {
    /// The input.
    pub x: Vec<f32>,
    /// Scales.
    pub g: Vec<f32>,
    /// Offsets.
    pub b: Vec<f32>,
}

/// LayerNorm (eps 1e-12): `f` (another summation order, a fused affine step) within `1e-4 *
/// |gamma| * (1 + |z|) + 1e-6 * (1 + |beta|)` of the generic one per element, `z` the
/// standardized input.
pub fn layer_norm(c: &NormCase, f: impl Fn(&mut [f32], &[f32], &[f32], f32)) {
    let (x, g, b) = (&c.x, &c.g, &c.b);
    let mut want = x.clone();
    kernels::layer_norm(&mut want, g, b, 1e-12);
    let mut got = x.clone();
    f(&mut got, g, b, 1e-12);
    let n = x.len() as f64;
    let m = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt().max(1e-30);
    for i in 0..x.len() {
        let z = (x[i] as f64 - m) / sd;
        let tol = 1e-4 * (g[i].abs() as f64) * (1.0 + z.abs()) + 1e-6 * (1.0 + b[i].abs() as f64);
        assert_close(got[i], want[i], Tol::Abs(tol), 0.0, || format!("{i}"));
    }
}

// ---- The exponential.

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
        let want = attn::exp_poly(xi);
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

// ---- Attention tiles: a block of `ATTN_LANES` queries against a tile of `ATTN_TILE` keys.

/// Transposed queries, keys and values for the attention tiles.
#[derive(Clone, Debug)]
pub struct AttnKeys {
    /// Head width.
    pub hd: usize,
    /// Keys in the tile (0 to `ATTN_TILE`).
    pub nk: usize,
    /// Row stride of keys and values (`>= hd`).
    pub stride: usize,
    /// Queries, transposed: `qt[d * ATTN_LANES + lane]`.
    pub qt: Vec<f32>,
    /// Key rows.
    pub k: Vec<f32>,
    /// Value rows.
    pub v: Vec<f32>,
    /// Per key, the lanes that see it.
    pub vis: [u16; ATTN_TILE],
    /// Score scale.
    pub scale: f32,
}

impl AttnKeys {
    /// The generic scores, key-major (`s[key * ATTN_LANES + lane]`).
    pub fn scores(&self) -> [f32; ATTN_BLOCK] {
        let mut s = [0f32; ATTN_BLOCK];
        attn::attn_scores_tile(
            &self.qt,
            self.hd,
            &self.k,
            self.stride,
            self.nk,
            self.scale,
            &mut s,
        );
        s
    }

    /// The [`Tol::Dot`] bound of a score: `(hd + 2) * EPS * sum_d |q_d k_d| * scale`.
    fn score_bound(&self, key: usize, lane: usize) -> f64 {
        let kr = &self.k[key * self.stride..][..self.hd];
        let mag: f64 = kr
            .iter()
            .enumerate()
            .map(|(d, &kd)| (self.qt[d * ATTN_LANES + lane] as f64 * kd as f64).abs())
            .sum();
        dot_bound(self.hd, 2.0, mag * self.scale as f64)
    }
}

/// `attn_scores_tile`: `f` within `tol` ([`Tol::Dot`]: `(hd + 2) * EPS * sum_d |q_d k_d| *
/// scale`) of the generic scores, entries past `nk` untouched.
pub fn attn_scores_tile(
    c: &AttnKeys,
    f: impl Fn(&[f32], usize, &[f32], usize, usize, f32, &mut [f32; ATTN_BLOCK]),
    tol: Tol,
) {
    let (mut want, mut got) = ([f32::NAN; ATTN_BLOCK], [f32::NAN; ATTN_BLOCK]);
    attn::attn_scores_tile(&c.qt, c.hd, &c.k, c.stride, c.nk, c.scale, &mut want);
    f(&c.qt, c.hd, &c.k, c.stride, c.nk, c.scale, &mut got);
    for j in 0..ATTN_TILE {
        for l in 0..ATTN_LANES {
            let (g, w) = (got[j * ATTN_LANES + l], want[j * ATTN_LANES + l]);
            let at = || format!("hd {} nk {} key {j} lane {l}", c.hd, c.nk);
            if j < c.nk {
                assert_close(g, w, tol, c.score_bound(j, l), at);
            } else {
                assert_eq!(g.to_bits(), w.to_bits(), "{}: past nk", at());
            }
        }
    }
}

/// Lane-major scores over rows of `rs`.
#[derive(Clone, Debug)]
pub struct ScoresRowsCase {
    /// The tile.
    pub keys: AttnKeys,
    /// Row stride of the scores (`>= ATTN_TILE`).
    pub rs: usize,
}

/// `attn_scores_rows`: `f` within `tol` (as [`attn_scores_tile`]) of the generic rows, bit
/// for bit its own key-major `tile` kernel transposed, and nothing written past `nk`.
pub fn attn_scores_rows(
    c: &ScoresRowsCase,
    f: impl Fn(&[f32], usize, &[f32], usize, usize, f32, &mut [f32], usize),
    tile: impl Fn(&[f32], usize, &[f32], usize, usize, f32, &mut [f32; ATTN_BLOCK]),
    tol: Tol,
) {
    let (b, rs) = (&c.keys, c.rs);
    let mut want = vec![f32::NAN; ATTN_LANES * rs];
    let mut got = want.clone();
    attn::attn_scores_rows(&b.qt, b.hd, &b.k, b.stride, b.nk, b.scale, &mut want, rs);
    f(&b.qt, b.hd, &b.k, b.stride, b.nk, b.scale, &mut got, rs);
    let mut own = [0f32; ATTN_BLOCK];
    tile(&b.qt, b.hd, &b.k, b.stride, b.nk, b.scale, &mut own);
    for l in 0..ATTN_LANES {
        for j in 0..rs {
            let (g, w) = (got[l * rs + j], want[l * rs + j]);
            let at = || format!("hd {} nk {} rs {rs} lane {l} key {j}", b.hd, b.nk);
            if j >= b.nk {
                assert!(g.is_nan(), "{}: written past nk", at());
                continue;
            }
            let tile = own[j * ATTN_LANES + l].to_bits();
            assert_eq!(g.to_bits(), tile, "{}: not its tile kernel's bits", at());
            assert_close(g, w, tol, b.score_bound(j, l), at);
        }
    }
}

/// One tile of scores and values for the dense (softmax-weighted) sums.
#[derive(Clone, Debug)]
pub struct DenseTile {
    /// Scores, key-major.
    pub s: Vec<f32>,
    /// Per key, the lanes that see it.
    pub vis: [u16; ATTN_TILE],
    /// Keys in the tile.
    pub nk: usize,
    /// Value rows.
    pub v: Vec<f32>,
    /// Row stride of the values.
    pub stride: usize,
}

/// Tiles in a row of heads of `hd`, from the empty state.
#[derive(Clone, Debug)]
pub struct DenseCase {
    /// Head width.
    pub hd: usize,
    /// The tiles, in order.
    pub tiles: Vec<DenseTile>,
}

/// `attn_dense_tile` over the tiles in a row (later ones rescale): after each tile, `f`
/// leaves the generic state. [`Tol::Bits`]: the bits of the maxima, sums and accumulators;
/// [`Tol::Abs`]`(e)`: the same maxima, sums within `e` relative, each lane's normalised output
/// (accumulator / sum) within `e`.
pub fn attn_dense_tile(
    c: &DenseCase,
    f: impl Fn(
        &[f32; ATTN_BLOCK],
        &[u16; ATTN_TILE],
        usize,
        &[f32],
        usize,
        usize,
        &mut AttnDenseState<'_>,
    ),
    tol: Tol,
) {
    let hd = c.hd;
    let (mut wa, mut ga) = (vec![0f32; ATTN_LANES * hd], vec![0f32; ATTN_LANES * hd]);
    let (mut want, mut got) = (AttnDenseState::new(&mut wa), AttnDenseState::new(&mut ga));
    for (i, t) in c.tiles.iter().enumerate() {
        let s: &[f32; ATTN_BLOCK] = t.s.as_slice().try_into().unwrap();
        attn::attn_dense_tile(s, &t.vis, t.nk, &t.v, t.stride, hd, &mut want);
        f(s, &t.vis, t.nk, &t.v, t.stride, hd, &mut got);
        let at = format!("hd {hd} tile {i}");
        let n = ATTN_LANES * hd;
        assert_eq!(bits(&got.max), bits(&want.max), "{at}: max");
        match tol {
            Tol::Bits => {
                assert_eq!(bits(&got.sum), bits(&want.sum), "{at}: sum");
                assert_eq!(bits(&got.acc[..n]), bits(&want.acc[..n]), "{at}: acc");
            }
            Tol::Abs(e) => {
                for l in 0..ATTN_LANES {
                    let (gs, ws) = (got.sum[l], want.sum[l]);
                    assert_close(gs, ws, Tol::Rel(e), 0.0, || format!("{at} lane {l}: sum"));
                    if ws > 0.0 {
                        for d in 0..hd {
                            let g = got.acc[l * hd + d] / gs;
                            let w = want.acc[l * hd + d] / ws;
                            assert_close(g, w, tol, 0.0, || format!("{at} lane {l} dim {d}"));
                        }
                    }
                }
            }
            _ => panic!("attn_dense_tile takes Tol::Bits or Tol::Abs"),
        }
    }
}

/// A tile's scores with per-lane thresholds and a mask of lanes that take every visible key.
#[derive(Clone, Debug)]
pub struct CandidatesCase {
    /// The tile.
    pub keys: AttnKeys,
    /// Per lane, the score a candidate must reach.
    pub thr: [f32; ATTN_LANES],
    /// Lanes whose slots are not full yet.
    pub open: u16,
}

/// `attn_candidates`: `f` gives the generic masks.
pub fn attn_candidates(
    c: &CandidatesCase,
    f: impl Fn(
        &[f32; ATTN_BLOCK],
        &[u16; ATTN_TILE],
        usize,
        &[f32; ATTN_LANES],
        u16,
        &mut [u16; ATTN_TILE],
    ) -> u16,
) {
    let (b, s) = (&c.keys, c.keys.scores());
    let (mut want, mut got) = ([0u16; ATTN_TILE], [1u16; ATTN_TILE]);
    let a = attn::attn_candidates(&s, &b.vis, b.nk, &c.thr, c.open, &mut want);
    let g = f(&s, &b.vis, b.nk, &c.thr, c.open, &mut got);
    assert_eq!((g, got), (a, want));
}

/// Softmax-weighted sums of the kept slots of one row: scores, key indices, values.
#[derive(Clone, Debug)]
pub struct SoftmaxRowsCase {
    /// Head width (also the values' row stride).
    pub hd: usize,
    /// Scores of the slots.
    pub sc: Vec<f32>,
    /// Key index of each slot.
    pub ix: Vec<u16>,
    /// Value rows.
    pub v: Vec<f32>,
}

/// `attn_softmax_rows`: `f` within `tol` of the generic one.
pub fn attn_softmax_rows(
    c: &SoftmaxRowsCase,
    f: impl Fn(&[f32], &[u16], &[f32], usize, usize, &mut [f32]),
    tol: Tol,
) {
    let hd = c.hd;
    let (mut want, mut got) = (vec![f32::NAN; hd], vec![f32::NAN; hd]);
    attn::attn_softmax_rows(&c.sc, &c.ix, &c.v, hd, hd, &mut want);
    f(&c.sc, &c.ix, &c.v, hd, hd, &mut got);
    for d in 0..hd {
        assert_close(got[d], want[d], tol, 0.0, || format!("dim {d}"));
    }
}

/// The kept slots of a block's lanes (`k` per lane, `lens[l]` of them used) and the values.
#[derive(Clone, Debug)]
pub struct SoftmaxLanesCase {
    /// Head width.
    pub hd: usize,
    /// Slots per lane.
    pub k: usize,
    /// Row stride of the values.
    pub stride: usize,
    /// Row stride of the output (`>= hd`).
    pub os: usize,
    /// Used slots per lane (a lane per entry, up to `ATTN_LANES`).
    pub lens: Vec<u32>,
    /// Slot scores, `ATTN_LANES * k`.
    pub sc: Vec<f32>,
    /// Slot key indices, `ATTN_LANES * k`.
    pub ix: Vec<u16>,
    /// Value rows.
    pub v: Vec<f32>,
}

/// `attn_softmax_lanes`: `f` within `tol` of the generic one on every lane of `lens` (zeros
/// for an empty one), nothing else written, and each lane the bits of the `rows` kernel (its
/// arch's `attn_softmax_rows`) on its slots: attention relies on it, the lanes kernel must not
/// depend on `k`.
pub fn attn_softmax_lanes(
    c: &SoftmaxLanesCase,
    f: impl Fn(&[f32], &[u16], &[u32], usize, &[f32], usize, usize, &mut [f32], usize),
    rows: impl Fn(&[f32], &[u16], &[f32], usize, usize, &mut [f32]),
    tol: Tol,
) {
    let (hd, k, os, st) = (c.hd, c.k, c.os, c.stride);
    let (mut want, mut got) = (
        vec![f32::NAN; ATTN_LANES * os],
        vec![f32::NAN; ATTN_LANES * os],
    );
    attn::attn_softmax_lanes(&c.sc, &c.ix, &c.lens, k, &c.v, st, hd, &mut want, os);
    f(&c.sc, &c.ix, &c.lens, k, &c.v, st, hd, &mut got, os);
    for l in 0..ATTN_LANES {
        for d in 0..os {
            let (g, w) = (got[l * os + d], want[l * os + d]);
            let at = || format!("hd {hd} k {k} lane {l} dim {d}");
            if l >= c.lens.len() || d >= hd {
                assert!(g.is_nan(), "{}: written", at());
            } else {
                assert_close(g, w, tol, 0.0, at);
            }
        }
    }
    for (l, &n) in c.lens.iter().enumerate() {
        let n = n as usize;
        let mut one = vec![f32::NAN; hd];
        rows(
            &c.sc[l * k..][..n],
            &c.ix[l * k..][..n],
            &c.v,
            st,
            hd,
            &mut one,
        );
        let lane = &got[l * os..][..hd];
        assert_eq!(
            bits(lane),
            bits(&one),
            "hd {hd} k {k} lane {l}: rows kernel"
        );
    }
}

// ---- Attention top-k selection.

/// One lane's block of keys for `attn_topk_block`: `vis.len()` tiles of scores and their
/// visibility masks.
#[derive(Debug, Clone)]
pub struct KeyBlock {
    /// Scores, `vis.len() * ATTN_TILE`.
    pub row: Vec<f32>,
    /// Per tile, the keys the lane sees.
    pub vis: Vec<u16>,
}

/// Blocks of keys in a row (block `b` holds keys `b * ATTN_KEY_BLOCK..`) and the slots kept.
#[derive(Debug, Clone)]
pub struct TopkCase {
    /// The blocks.
    pub blocks: Vec<KeyBlock>,
    /// Slots kept.
    pub k: usize,
}

/// The selection order of two scores: score descending (`-0` ties `0`), NaN below everything.
pub fn better(a: f32, b: f32) -> core::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => core::cmp::Ordering::Equal,
        (true, false) => core::cmp::Ordering::Less,
        (false, true) => core::cmp::Ordering::Greater,
        (false, false) => a.partial_cmp(&b).unwrap(),
    }
}

/// Work buffers of exactly the size a block of `b` needs with `k` slots
/// ([`AttnTopkWork::words`]), so that a kernel writing past them fails the test.
fn work_for(b: &KeyBlock, k: usize) -> Vec<f32> {
    vec![0f32; AttnTopkWork::words(k, b.vis.len() * ATTN_TILE)]
}

/// The slots (score bits, key index) after each block of `c` from the selection kernel `f`.
fn topk_run(
    c: &TopkCase,
    f: &impl Fn(
        &[f32],
        &[u16],
        usize,
        usize,
        &mut [f32],
        &mut [u16],
        usize,
        &mut AttnTopkWork<'_>,
    ) -> usize,
) -> Vec<Vec<(u32, u16)>> {
    let (mut s, mut ix, mut len) = (vec![0f32; c.k], vec![0u16; c.k], 0);
    let mut after = Vec::new();
    for (bi, b) in c.blocks.iter().enumerate() {
        let mut words = work_for(b, c.k);
        let mut work = AttnTopkWork::new(&mut words);
        let kb0 = bi * ATTN_KEY_BLOCK;
        len = f(&b.row, &b.vis, kb0, c.k, &mut s, &mut ix, len, &mut work);
        after.push((0..len).map(|i| (s[i].to_bits(), ix[i])).collect());
    }
    after
}

/// The selection kernel `f` keeps after each block the best `k` of every visible key so far
/// (score descending, NaN last, then the lower key), in key order: a sort says which.
pub fn attn_topk_matches_a_sort(
    c: &TopkCase,
    f: impl Fn(
        &[f32],
        &[u16],
        usize,
        usize,
        &mut [f32],
        &mut [u16],
        usize,
        &mut AttnTopkWork<'_>,
    ) -> usize,
) {
    let got = topk_run(c, &f);
    let mut seen: Vec<(f32, u16)> = Vec::new();
    for (bi, (b, got)) in c.blocks.iter().zip(got).enumerate() {
        let kb0 = bi * ATTN_KEY_BLOCK;
        for (t, &v) in b.vis.iter().enumerate() {
            for j in (0..ATTN_TILE).filter(|&j| v >> j & 1 != 0) {
                seen.push((b.row[t * ATTN_TILE + j], (kb0 + t * ATTN_TILE + j) as u16));
            }
        }
        let mut want = seen.clone();
        want.sort_by(|a, b| better(b.0, a.0).then(a.1.cmp(&b.1)));
        want.truncate(c.k);
        want.sort_by_key(|p| p.1);
        let want: Vec<(u32, u16)> = want.iter().map(|p| (p.0.to_bits(), p.1)).collect();
        assert_eq!(got, want, "k {} block {bi}", c.k);
    }
}

/// `attn_topk_block`: `f` leaves the generic slots (score bits, key indices) and lengths after
/// every block, and those of a sort ([`attn_topk_matches_a_sort`]).
pub fn attn_topk_block(
    c: &TopkCase,
    f: impl Fn(
        &[f32],
        &[u16],
        usize,
        usize,
        &mut [f32],
        &mut [u16],
        usize,
        &mut AttnTopkWork<'_>,
    ) -> usize,
) {
    let (got, want) = (topk_run(c, &f), topk_run(c, &attn::attn_topk_block));
    for (bi, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "k {} block {bi}", c.k);
    }
    attn_topk_matches_a_sort(c, f);
}

/// Deterministic cases for builds without proptest: shapes around the tile and block edges,
/// the fallbacks included, from [`Rng`] with a fixed seed per operation.
pub mod cases {
    use super::*;

    /// Deterministic pseudo-random numbers (64-bit LCG, high bits).
    pub struct Rng(pub u64);

    impl Rng {
        /// The next 32 bits.
        pub fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 32) as u32
        }

        /// `n` int8 values, -128 included.
        pub fn i8s(&mut self, n: usize) -> Vec<i8> {
            (0..n).map(|_| self.next() as i8).collect()
        }

        /// Activation-like int8 values: never -128, as `quantize_i8` never produces it.
        pub fn q8s(&mut self, n: usize) -> Vec<i8> {
            (0..n)
                .map(|_| ((self.next() % 255) as i32 - 127) as i8)
                .collect()
        }

        /// Uniform in `[-m, m)`.
        pub fn f32(&mut self, m: f32) -> f32 {
            (self.next() >> 8) as f32 / (1u32 << 24) as f32 * 2.0 * m - m
        }

        /// `n` values uniform in `[-m, m)`.
        pub fn f32s(&mut self, n: usize, m: f32) -> Vec<f32> {
            (0..n).map(|_| self.f32(m)).collect()
        }

        /// `n` positive scales in `[1e-4, m + 1e-4)`.
        pub fn scales(&mut self, n: usize, m: f32) -> Vec<f32> {
            (0..n).map(|_| self.f32(m).abs() + 1e-4).collect()
        }

        /// Values of mixed magnitude, with runs of zeros (all-zero quantization blocks).
        pub fn activations(&mut self, n: usize) -> Vec<f32> {
            let zero_from = self.next() as usize % (n + 1);
            let zero_len = if self.next().is_multiple_of(3) { 70 } else { 0 };
            (0..n)
                .map(|i| {
                    if i >= zero_from && i < zero_from + zero_len {
                        0.0
                    } else {
                        let m = [1e-3, 1.0, 50.0, 1e3][self.next() as usize % 4];
                        self.f32(m)
                    }
                })
                .collect()
        }
    }

    /// Columns around the 8-column loads, the 64-column blocks and the model's widths.
    pub const COLS: &[usize] = &[
        1, 3, 7, 8, 9, 15, 16, 63, 64, 65, 71, 100, 128, 200, 384, 1536, 4096,
    ];

    /// Int8 products: every width of [`COLS`] with each `(rows, n)` of `shapes` (at most 4M
    /// multiply-adds), with and without bias if `biased`.
    pub fn q8(
        seed: u64,
        shapes: &'static [(usize, usize)],
        biased: bool,
    ) -> impl Iterator<Item = Q8Case> {
        let mut rng = Rng(seed);
        let shapes = COLS
            .iter()
            .flat_map(move |&c| shapes.iter().map(move |&(r, n)| (r, c, n)));
        shapes
            .filter(|&(rows, cols, n)| cols * rows * n <= 4_000_000)
            .flat_map(move |(rows, cols, n)| {
                let q = rng.i8s(rows * cols);
                let scales = rng.scales(rows, 0.1);
                let bias = rng.f32s(rows, 1.0);
                let x = rng.activations(n * cols);
                let case = Q8Case {
                    rows,
                    cols,
                    n,
                    q,
                    scales,
                    x,
                    bias: None,
                };
                let with_bias = biased.then(|| Q8Case {
                    bias: Some(bias),
                    ..case.clone()
                });
                core::iter::once(case).chain(with_bias)
            })
    }

    /// `accumulate_q8_tokens`: `k` even, odd, the feed-forward's 64 and past the kernels'
    /// limit (generic fallback), columns below, at and past 8.
    pub fn accumulate_q8() -> impl Iterator<Item = AccQ8Case> {
        let mut rng = Rng(3);
        let shapes = [1usize, 7, 8, 9, 13, 16, 40, 384]
            .into_iter()
            .flat_map(|cols| {
                [0usize, 1, 2, 5, 64, 65, 600]
                    .into_iter()
                    .flat_map(move |k| [1usize, 3, 4, 7, 16, 17, 70, 300].map(|n| (cols, k, n)))
            });
        shapes
            .filter(|&(cols, k, n)| k * cols * n <= 2_000_000)
            .map(move |(cols, k, n)| AccQ8Case {
                cols,
                k,
                n,
                q: rng.i8s(k * cols),
                hq: rng.q8s(n * k),
                hs: rng.scales(n, 0.1),
                out0: rng.f32s(n * cols, 5.0),
            })
    }

    /// Inputs to quantize: every length to 200 and a few widths past it, with zero blocks and
    /// values on exact halves of the step (ties round away from zero).
    pub fn quantize() -> impl Iterator<Item = Vec<f32>> {
        let mut rng = Rng(4);
        (0..=200).chain([255, 256, 383, 384, 1536]).map(move |len| {
            let mut x = rng.activations(len);
            if len > 2 {
                x[..3].copy_from_slice(&[127.0, 0.5, -1.5]);
            }
            x
        })
    }

    /// GELU inputs: lengths past every lane count, magnitudes 1, 10 and 100.
    pub fn gelu() -> impl Iterator<Item = Vec<f32>> {
        let mut rng = Rng(5);
        (0..=40).flat_map(move |len| [1.0f32, 10.0, 100.0].map(|m| rng.f32s(len, m)))
    }

    /// `exp` arguments: the domain and past it, `[-1, 1]` densely, and [`EXP_SPECIALS`].
    pub fn exp() -> impl Iterator<Item = Vec<f32>> {
        let mut rng = Rng(6);
        let mut xs = rng.f32s(20_000, 100.0);
        xs.extend(rng.f32s(2000, 1.0));
        xs.extend(EXP_SPECIALS);
        core::iter::once(xs)
    }

    /// Feed-forward shapes around the 8-column loads, the groups of 16 tokens and past one
    /// pass, and two the fused kernels refuse (`d_ff` not a multiple of 64, `d` over 1024);
    /// GELU with biases and ReLU without.
    pub fn ffn_q8() -> impl Iterator<Item = FfnQ8Case> {
        let mut rng = Rng(9);
        let shapes = [
            (1, 64, 1),
            (7, 64, 5),
            (8, 128, 16),
            (13, 64, 17),
            (40, 192, 33),
            (64, 64, 300),
            (384, 128, 20),
            (1024, 64, 3),
            (16, 100, 4),
            (1100, 64, 2),
        ];
        shapes.into_iter().flat_map(move |(d, d_ff, n)| {
            [(Activation::GeluErf, true), (Activation::Relu, false)].map(|(act, biased)| {
                let uq = rng.i8s(d_ff * d);
                let us = rng.scales(d_ff, 0.02);
                let ub = rng.f32s(d_ff, 0.5);
                let dq = rng.i8s(d_ff * d);
                let ds = rng.scales(d_ff, 0.02);
                let db = rng.f32s(d, 0.5);
                FfnQ8Case {
                    d,
                    d_ff,
                    n,
                    up: (uq, us, biased.then_some(ub)),
                    down: (dq, ds, biased.then_some(db)),
                    x: rng.activations(n * d),
                    act,
                }
            })
        })
    }

    /// A tile of `nk` keys of head width `hd` (stride `hd` to `hd + 2`, scale `1 / sqrt(hd)`),
    /// queries and keys in `[-2, 2)`, values in `[-3, 3)`, visibility by `pattern`: all,
    /// causal-like, random, none.
    pub fn attn_keys(rng: &mut Rng, hd: usize, nk: usize, pattern: u32) -> AttnKeys {
        let stride = hd + (rng.next() % 3) as usize;
        let qt = rng.f32s(hd * ATTN_LANES, 2.0);
        let n = (nk.max(1) - 1) * stride + hd;
        let k = rng.f32s(n, 2.0);
        let v = rng.f32s(n, 3.0);
        let vis = core::array::from_fn(|j| match pattern {
            0 => u16::MAX,
            // Lanes l >= j see key j (a causal block).
            1 => u16::MAX << j.min(15),
            2 => rng.next() as u16,
            _ => 0,
        });
        let scale = 1.0 / (hd as f32).sqrt();
        AttnKeys {
            hd,
            nk,
            stride,
            qt,
            k,
            v,
            vis,
            scale,
        }
    }

    /// Score tiles: head widths around the vector width and up to `ATTN_MAX_HEAD_DIM`, tiles
    /// of 0 to 16 keys.
    pub fn scores_tile() -> impl Iterator<Item = AttnKeys> {
        let mut rng = Rng(7);
        [1usize, 3, 4, 8, 31, 32, 64, 100, 128]
            .into_iter()
            .flat_map(|hd| (0..=ATTN_TILE).map(move |nk| (hd, nk)))
            .map(move |(hd, nk)| attn_keys(&mut rng, hd, nk, 0))
    }

    /// Dense tiles: four in a row (16, 5, 1 and 0 keys) with scores of a growing range, so
    /// that later tiles raise the maxima, per head width and visibility pattern.
    pub fn dense_tile() -> impl Iterator<Item = DenseCase> {
        let mut rng = Rng(8);
        [1usize, 3, 4, 8, 32, 36, 64, 100, 128]
            .into_iter()
            .flat_map(|hd| (0..4).map(move |pattern| (hd, pattern)))
            .map(move |(hd, pattern)| {
                let tiles = [(ATTN_TILE, 1.0f32), (5, 8.0), (1, 30.0), (0, 2.0)]
                    .map(|(nk, m)| {
                        let c = attn_keys(&mut rng, hd, nk.max(1), pattern);
                        DenseTile {
                            s: rng.f32s(ATTN_BLOCK, m),
                            vis: c.vis,
                            nk,
                            v: c.v,
                            stride: c.stride,
                        }
                    })
                    .to_vec();
                DenseCase { hd, tiles }
            })
    }

    /// Lane-major scores: tiles of 0 to 16 keys, row strides past the tile.
    pub fn scores_rows() -> impl Iterator<Item = ScoresRowsCase> {
        let mut rng = Rng(10);
        [1usize, 4, 7, 32, 64]
            .into_iter()
            .flat_map(|hd| (0..=ATTN_TILE).map(move |nk| (hd, nk)))
            .map(move |(hd, nk)| {
                let keys = attn_keys(&mut rng, hd, nk, 0);
                let rs = ATTN_TILE + (rng.next() % 20) as usize;
                ScoresRowsCase { keys, rs }
            })
    }

    /// Softmax of a block's lanes: used slots from none to `k` (lane 3 none), score ranges
    /// that reach the exponential's limits, head widths around the vector width, rows in any
    /// order, repeated rows.
    pub fn softmax_lanes() -> impl Iterator<Item = SoftmaxLanesCase> {
        let mut rng = Rng(11);
        [1usize, 3, 4, 16, 20, 32, 64, 100]
            .into_iter()
            .flat_map(|hd| [1usize, 5, 8, 32].map(|k| (hd, k)))
            .map(move |(hd, k)| {
                let nv = 40;
                let stride = hd + (rng.next() % 3) as usize;
                let v = rng.f32s(nv * stride, 3.0);
                let m = [1.0f32, 30.0, 200.0][rng.next() as usize % 3];
                let sc = rng.f32s(ATTN_LANES * k, m);
                let ix = (0..ATTN_LANES * k)
                    .map(|_| (rng.next() % nv as u32) as u16)
                    .collect();
                let lens = (0..ATTN_LANES)
                    .map(|l| {
                        if l == 3 {
                            0
                        } else {
                            rng.next() % (k as u32 + 1)
                        }
                    })
                    .collect();
                SoftmaxLanesCase {
                    hd,
                    k,
                    stride,
                    os: hd + 2,
                    lens,
                    sc,
                    ix,
                    v,
                }
            })
    }

    /// Block selection: four blocks (16, 3, 1 and 8 tiles) for `k` from 1 to the block
    /// maximum, visibility all, causal-like, random, none and one key per tile, scores with
    /// ties, `-0.0`, infinities and NaN.
    pub fn topk_block() -> impl Iterator<Item = TopkCase> {
        let mut rng = Rng(12);
        [1usize, 2, 7, 16, 17, 31, 32]
            .into_iter()
            .flat_map(|k| (0..5u32).map(move |pattern| (k, pattern)))
            .map(move |(k, pattern)| {
                let blocks = [16usize, 3, 1, 8]
                    .map(|nt| KeyBlock {
                        row: (0..nt * ATTN_TILE)
                            .map(|_| match rng.next() % 16 {
                                0 => f32::NAN,
                                1 => f32::INFINITY,
                                2 => f32::NEG_INFINITY,
                                3 => -0.0,
                                4 => 0.0,
                                5 | 6 => 1.5,
                                _ => rng.f32(8.0),
                            })
                            .collect(),
                        vis: (0..nt)
                            .map(|t| match pattern {
                                0 => u16::MAX,
                                1 => u16::MAX << (t % 16),
                                2 => rng.next() as u16,
                                3 => 0,
                                _ => 1 << (rng.next() % 16),
                            })
                            .collect(),
                    })
                    .to_vec();
                TopkCase { blocks, k }
            })
    }
}
