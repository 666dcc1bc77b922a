//! Reference kernels (skeleton: filled in by the kernels work).

use super::Matrix;
use crate::config::Activation;

/// `W[r] . x` with the row's scale applied. `x.len() == cols`.
pub fn dot_row(w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
    let _ = (w, r, x);
    todo!()
}

/// `y += a * W[r]`. `y.len() == cols`.
pub fn axpy_row(w: &Matrix<'_>, r: usize, a: f32, y: &mut [f32]) {
    let _ = (w, r, a, y);
    todo!()
}

/// Row `r` of `W` as f32 (embedding lookup). `out.len() == cols`.
pub fn row_to_f32(w: &Matrix<'_>, r: usize, out: &mut [f32]) {
    let _ = (w, r, out);
    todo!()
}

/// `y = W x + b`: `x.len() == cols`, `y.len() == rows`.
pub fn matvec(w: &Matrix<'_>, x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    let _ = (w, x, bias, y);
    todo!()
}

/// `Y = X W^T + b` for `n` rows of `X` (`n x cols`) into `Y` (`n x rows`), reading each weight
/// row once for all `n` inputs.
pub fn matmul(w: &Matrix<'_>, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let _ = (w, x, n, bias, y);
    todo!()
}

/// LayerNorm in place over `x` (one row).
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let _ = (x, gamma, beta, eps);
    todo!()
}

/// RMSNorm in place over `x` (one row).
pub fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    let _ = (x, gamma, eps);
    todo!()
}

/// The activation applied to one value.
pub fn activate(act: Activation, x: f32) -> f32 {
    let _ = (act, x);
    todo!()
}

/// Softmax in place over `x`.
pub fn softmax(x: &mut [f32]) {
    let _ = x;
    todo!()
}
