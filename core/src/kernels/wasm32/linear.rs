//! The f32 tile dot of the reference products.

use core::arch::wasm32::*;

use super::simd::*;
use crate::kernels::generic::TileDot;

/// The tile dot of the generic products on `simd128`: the generic summation order keeps 4
/// accumulators for columns `i mod 4` and combines them as `(a0 + a1) + (a2 + a3)`, exactly
/// one f32x4 accumulator, so the same bits.
pub struct Simd128Tile;

impl TileDot for Simd128Tile {
    #[inline(always)]
    fn dot_tile(a: &[f32], b: &[f32]) -> f32 {
        dot_tile(a, b)
    }
}

/// Sum of `a[i] * b[i]` (`a.len() == b.len()`), in the generic kernels' tile order.
#[inline(always)]
fn dot_tile(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = f32x4_splat(0.0);
    let (a4, a_tail) = a.split_at(a.len() & !3);
    let (b4, b_tail) = b.split_at(a4.len());
    for (wa, wb) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        acc = f32x4_add(acc, f32x4_mul(ld4(wa), ld4(wb)));
    }
    let mut s = (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc))
        + (f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc));
    for (&p, &q) in a_tail.iter().zip(b_tail) {
        s += p * q;
    }
    s
}
