//! wasm `simd128` version of the generic kernels' tile dot product.
//!
//! The generic summation order already keeps 4 accumulators for columns `i mod 4` and combines
//! them as `(a0 + a1) + (a2 + a3)`: that is exactly one f32x4 accumulator, so this kernel gives
//! the same bits as the generic one (separate multiply and add, never fused), only with one
//! vector multiply-add per 4 columns. Built only for `wasm32` with the `simd128` feature
//! (`-C target-feature=+simd128`); safe code (the vector intrinsics used are safe when the
//! feature is enabled at compile time).

use core::arch::wasm32::{f32x4, f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat};

/// Sum of `a[i] * b[i]` (`a.len() == b.len()`), in the generic kernels' tile order.
#[inline(always)]
pub(super) fn dot_tile(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = f32x4_splat(0.0);
    let (a4, a_tail) = a.split_at(a.len() & !3);
    let (b4, b_tail) = b.split_at(a4.len());
    for (wa, wb) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        let va = f32x4(wa[0], wa[1], wa[2], wa[3]);
        let vb = f32x4(wb[0], wb[1], wb[2], wb[3]);
        acc = f32x4_add(acc, f32x4_mul(va, vb));
    }
    let mut s = (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc))
        + (f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc));
    for (&p, &q) in a_tail.iter().zip(b_tail) {
        s += p * q;
    }
    s
}
