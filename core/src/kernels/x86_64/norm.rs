//! LayerNorm (AVX-512 F).

use core::arch::x86_64::*;

use super::cpu::*;

#[target_feature(enable = "avx512f")]
fn layer_norm_avx512(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len();
    let inv_n = 1.0 / n as f32;
    let load = |x: &[f32], i: usize| {
        // SAFETY: the masked load reads x[i..min(i + 16, n)] only.
        unsafe { _mm512_maskz_loadu_ps(tail_mask(n, i), x.as_ptr().add(i)) }
    };
    let mut s = _mm512_setzero_ps();
    for i in (0..n).step_by(16) {
        s = _mm512_add_ps(s, load(x, i));
    }
    let m = _mm512_reduce_add_ps(s) * inv_n;
    // The corrected two-pass form of generic::layer_norm: c is the rounding error of m.
    let mv = _mm512_set1_ps(m);
    let (mut s1, mut s2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in (0..n).step_by(16) {
        let d = _mm512_maskz_sub_ps(tail_mask(n, i), load(x, i), mv);
        s1 = _mm512_add_ps(s1, d);
        s2 = _mm512_fmadd_ps(d, d, s2);
    }
    let c = _mm512_reduce_add_ps(s1) * inv_n;
    let var = _mm512_reduce_add_ps(s2) * inv_n - c * c;
    let var = if var > 0.0 { var } else { 0.0 };
    let inv = _mm512_set1_ps(1.0 / (var + eps).sqrt());
    let cv = _mm512_set1_ps(c);
    for i in (0..n).step_by(16) {
        let k = tail_mask(n, i);
        // SAFETY: the masked loads read gamma and beta at i..min(i + 16, n) only (both hold
        // n values, checked by the caller); the masked store writes x there only.
        unsafe {
            let g = _mm512_maskz_loadu_ps(k, gamma.as_ptr().add(i));
            let b = _mm512_maskz_loadu_ps(k, beta.as_ptr().add(i));
            let t = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(load(x, i), mv), cv), inv);
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), k, _mm512_fmadd_ps(t, g, b));
        }
    }
}

/// AVX-512 [`crate::kernels::layer_norm`]: the same formula (corrected two-pass variance) with the
/// sums taken 16 lanes at a time and the affine step fused, so the rounding differs. Shapes as
/// there; the generic kernel without AVX-512.
pub fn x86_avx512_layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    if !x.is_empty() && gamma.len() == x.len() && beta.len() == x.len() && available_f32() {
        // SAFETY: the CPU has AVX-512 F (checked above).
        unsafe { layer_norm_avx512(x, gamma, beta, eps) }
    } else {
        generic::layer_norm(x, gamma, beta, eps)
    }
}
