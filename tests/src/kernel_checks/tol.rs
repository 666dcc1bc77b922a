//! Tolerances and the comparisons of the checks.

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
pub(crate) fn assert_close(got: f32, want: f32, tol: Tol, bound: f64, at: impl FnOnce() -> String) {
    if !tol.holds(got, want, bound) {
        panic!("{}: {got} vs {want} ({tol:?}, bound {bound:e})", at());
    }
}

/// Asserts [`Tol::holds`] for each element `i`, `bound(i)` its [`Tol::Bound`].
#[track_caller]
pub(crate) fn assert_all_close(got: &[f32], want: &[f32], tol: Tol, bound: impl Fn(usize) -> f64) {
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
pub(crate) fn dot_bound(n: usize, extra: f64, mag: f64) -> f64 {
    (n as f64 + extra) * f32::EPSILON as f64 * mag + 1e-30
}

/// `sum |a_i b_i|` in f64.
pub(crate) fn mag(a: impl IntoIterator<Item = f32>, b: impl IntoIterator<Item = f32>) -> f64 {
    a.into_iter()
        .zip(b)
        .map(|(p, q)| (p as f64 * q as f64).abs())
        .sum()
}
