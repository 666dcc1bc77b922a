//! What every x86-64 kernel file shares: the CPU feature checks, the register-tile sizes
//! and the small register helpers.

pub(super) use core::arch::x86_64::*;

pub(super) use crate::config::Activation;
pub(super) use crate::kernels::generic;
pub(super) use crate::kernels::matrix::{Matrix, Weights};
pub(super) use crate::kernels::q8::*;

/// Weight rows per register tile (accumulators: 8 registers of 16 tokens).
pub const ROWS: usize = 8;
const _: () = assert!(Q8_GROUP == 2 * ROWS && Q8_BLOCK <= 64 && Q8_BLOCK.is_multiple_of(16));
/// Column blocks of one row (`Q8_MAX_COLS / Q8_BLOCK`).
pub(super) const MAX_NB: usize = Q8_MAX_COLS / Q8_BLOCK;

/// Whether this CPU runs the int8 kernels of this module (AVX-512 F, BW and VNNI). Cached by
/// std.
pub fn x86_avx512_vnni_available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Whether this CPU runs the kernels of this module (AVX2 and FMA). Cached by std.
pub fn x86_avx2_available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Horizontal sum of the 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Horizontal sum of the 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Whether this CPU runs the kernels of this module (AVX-512F, BW and VL for the u16 slot
/// indices, POPCNT for mask counts). Cached by std.
pub fn x86_avx512_attn_available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("popcnt")
}

/// Mask of the first `n` (at most 16) lanes.
#[inline]
pub(super) fn lanes_mask(n: usize) -> __mmask16 {
    if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn load16(x: &[f32]) -> __m512 {
    let x = &x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn store16(x: &mut [f32], v: __m512) {
    let x = &mut x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_storeu_ps(x.as_mut_ptr(), v) }
}

/// Whether this CPU runs the f32 kernels of this module (AVX-512 F).
pub(super) fn available_f32() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Mask of the lanes `i..min(i + 16, n)`.
#[inline(always)]
pub(super) fn tail_mask(n: usize, i: usize) -> __mmask16 {
    let m = (n - i).min(16);
    if m == 16 { !0 } else { (1u16 << m) - 1 }
}

/// Whether this CPU runs [`x86_avx512_accumulate_q8_tokens`]'s fast kernel (also AVX-512
/// VBMI, for the byte transpose).
pub(super) fn available_vbmi() -> bool {
    x86_avx512_vnni_available() && is_x86_feature_detected!("avx512vbmi")
}
