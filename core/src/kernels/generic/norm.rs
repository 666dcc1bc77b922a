//! LayerNorm and RMSNorm of one row, summing in the documented order.

use super::linear::TILE;
use crate::math;

/// `sum_i f(x[i])` in the documented dot-product order.
#[inline(always)]
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f32 {
    let mut total = 0.0f32;
    for t in x.chunks(TILE) {
        let mut acc = [0.0f32; 4];
        let (t4, tail) = t.split_at(t.len() & !3);
        for c in t4.chunks_exact(4) {
            acc[0] += f(c[0]);
            acc[1] += f(c[1]);
            acc[2] += f(c[2]);
            acc[3] += f(c[3]);
        }
        let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for &v in tail {
            s += f(v);
        }
        total += s;
    }
    total
}

/// LayerNorm in place over one row `x` (`n` elements):
/// `(x - mean) / sqrt(var + eps) * gamma + beta`, with the biased variance, all in f32.
/// `gamma.len() == beta.len() == x.len()`. An empty row is left as is.
///
/// Corrected two-pass algorithm (Chan, Golub & LeVeque): pass 1 takes the mean `m`; pass 2
/// sums `d = x - m` and `d^2`, whose mean `c = sum(d) / n` is the rounding error of `m`; the
/// output uses `(d - c)` and `var = mean(d^2) - c^2`. A large common offset (say 1000 + noise)
/// thus neither cancels catastrophically in the variance nor leaves the f32 rounding of the
/// mean in every output. Sums use the documented dot-product order.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    debug_assert_eq!(gamma.len(), x.len());
    debug_assert_eq!(beta.len(), x.len());
    if x.is_empty() {
        return;
    }
    let inv_n = 1.0 / x.len() as f32;
    let m = sum_map(x, |v| v) * inv_n;
    let c = sum_map(x, |v| v - m) * inv_n;
    let var = sum_map(x, |v| (v - m) * (v - m)) * inv_n - c * c;
    // Rounding can push a near-zero variance below 0.
    let var = if var > 0.0 { var } else { 0.0 };
    let inv = 1.0 / math::sqrt(var + eps);
    for ((v, &g), &b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = ((*v - m) - c) * inv * g + b;
    }
}

/// RMSNorm in place over one row `x` (`n` elements): `x / sqrt(mean(x^2) + eps) * gamma`.
/// `gamma.len() == x.len()`. An empty row is left as is.
pub fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    debug_assert_eq!(gamma.len(), x.len());
    if x.is_empty() {
        return;
    }
    let ms = sum_map(x, |v| v * v) / x.len() as f32;
    let inv = 1.0 / math::sqrt(ms + eps);
    for (v, &g) in x.iter_mut().zip(gamma) {
        *v = *v * inv * g;
    }
}
