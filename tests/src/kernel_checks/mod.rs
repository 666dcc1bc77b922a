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
//! names. The arch tests reach the generic kernels only through these checks. A check is a
//! function rather than a macro body, so that it is type-checked once and a build without a
//! test harness can call it; [`kernel_test!`] makes one test of a check.
//!
//! Files by kernel family: [`q8`] (int8 products, quantization, the fused int8
//! feed-forward), [`float`] (f32 products, activations, normalisation, `exp`), [`attn`] (the
//! attention tiles and the top-k selection), [`cases`] (the deterministic cases). Each uses
//! only `topkit` and `std`: the wasm test crate has no other dependency.

pub mod attn;
pub mod cases;
pub mod float;
pub mod q8;

pub use attn::*;
pub use float::*;
pub use q8::*;

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
    /// Within the error bound per element that the check states (for sums of products, the
    /// rounding bound of summing them in another order or fused).
    Bound,
    /// Within this absolute error (on normalised outputs where the check says so).
    Abs(f64),
    /// Within this error relative to the generic value.
    Rel(f64),
}

impl Tol {
    /// Whether `got` is close enough to `want`; `bound` is the check's [`Tol::Bound`].
    fn holds(self, got: f32, want: f32, bound: f64) -> bool {
        let err = (got as f64 - want as f64).abs();
        match self {
            Tol::Bits => got.to_bits() == want.to_bits(),
            Tol::Bound => err <= bound,
            Tol::Abs(e) => err <= e,
            Tol::Rel(r) => err <= r * (want as f64).abs(),
        }
    }
}

/// Asserts [`Tol::holds`]; `at` names the element (made only on failure).
#[track_caller]
fn assert_close(got: f32, want: f32, tol: Tol, bound: f64, at: impl FnOnce() -> String) {
    if !tol.holds(got, want, bound) {
        panic!("{}: {got} vs {want} ({tol:?}, bound {bound:e})", at());
    }
}

/// Asserts [`Tol::holds`] for each element `i`, `bound(i)` its [`Tol::Bound`].
#[track_caller]
fn assert_all_close(got: &[f32], want: &[f32], tol: Tol, bound: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len());
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert_close(g, w, tol, bound(i), || format!("element {i}"));
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

/// `sum |a_i b_i|` in f64.
fn mag(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(p, q)| (p as f64 * q as f64).abs())
        .sum()
}

/// A matrix of `T` (`rows x cols`, one scale per row for int8) and `n` f32 tokens of `cols`.
#[derive(Clone, Debug)]
pub struct MatCase<T> {
    /// Weight rows.
    pub rows: usize,
    /// Weight columns, the token width.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, row-major.
    pub w: Vec<T>,
    /// Row scales (int8 weights; empty for f32).
    pub scales: Vec<f32>,
    /// Tokens, `n * cols`.
    pub x: Vec<f32>,
    /// Optional bias per row.
    pub bias: Option<Vec<f32>>,
}

impl<T> MatCase<T> {
    fn shape(&self) -> String {
        let bias = self.bias.is_some();
        format!(
            "rows {} cols {} n {} bias {bias}",
            self.rows, self.cols, self.n
        )
    }
}

/// The down projection of `n` tokens of `k` units: `out0 (n x cols) += h (n x k) * w (k x
/// cols)`, int8 tokens times their scale.
#[derive(Clone, Debug)]
pub struct AccCase<T> {
    /// Output columns.
    pub cols: usize,
    /// Units per token.
    pub k: usize,
    /// Tokens.
    pub n: usize,
    /// Weights, `k * cols`.
    pub w: Vec<T>,
    /// Tokens, `n * k`.
    pub h: Vec<T>,
    /// Token scales (int8 tokens; empty for f32).
    pub hs: Vec<f32>,
    /// The output before the call, `n * cols`.
    pub out0: Vec<f32>,
}
