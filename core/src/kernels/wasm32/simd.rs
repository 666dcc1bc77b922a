//! What every simd128 kernel file shares: vector loads and stores, the sizes of the packed
//! token groups and of the stack buffers.

pub(super) use core::arch::wasm32::*;
pub(super) use core::mem::MaybeUninit;

pub(super) use crate::config::Activation;
pub(super) use crate::kernels::generic;
pub(super) use crate::kernels::generic::{
    ATTN_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, EXP_P, EXP_POLY_MAX, EXP_POLY_MIN, LN2_HI,
    LN2_LO, LOG2E,
};
pub(super) use crate::kernels::matrix::{Matrix, Weights};
pub(super) use crate::kernels::q8::*;

/// The 4 f32 `s[..4]` as one vector.
#[inline(always)]
pub(super) fn ld4(s: &[f32]) -> v128 {
    let s = &s[..4];
    // SAFETY: s holds 4 f32 (16 bytes); v128.load is unaligned.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

/// Stores the 4 lanes of `v` to `s[..4]`.
#[inline(always)]
pub(super) fn st4(s: &mut [f32], v: v128) {
    let s = &mut s[..4];
    // SAFETY: s holds 4 f32 (16 bytes); v128.store is unaligned.
    unsafe { v128_store(s.as_mut_ptr() as *mut v128, v) }
}

// A packed token group (`Q8_GROUP`) is 4 vectors of 4 lanes.
const _: () = assert!(Q8_GROUP == 16);
/// Words (2 int8 values widened to i16 each) of the packed token groups of one pass: 128 KiB
/// of stack, so that a pass holds [`MAX_GROUPS`] groups of up to 512 columns, 10 of 384 (160
/// tokens), one of [`Q8_MAX_COLS`]. The weights are packed once per pass.
pub(super) const PACK_WORDS: usize = 32 * 1024;
/// Most token groups of one pass.
pub(super) const MAX_GROUPS: usize = 16;
/// Block scales of the groups of one pass, `[group][block][Q8_GROUP]`.
pub(super) const SP_LEN: usize = MAX_GROUPS * Q8_GROUP * 8;
/// Widest `d_model` of [`wasm_simd128_ffn_q8`].
pub const FFN_MAX_D: usize = 1024;
/// Hidden units of one step of [`wasm_simd128_ffn_q8`]: one int8 scale per token.
pub(super) const UNITS: usize = Q8_BLOCK;
/// Pairs of rows (words) of the down projection's 64 units.
pub(super) const UNIT_PAIRS: usize = UNITS / 2;
/// Longest `k` (rows of `q`) [`wasm_simd128_accumulate_q8_tokens`] takes; longer go to the
/// generic kernel. The feed-forward blocks use 64.
pub(super) const ACC_MAX_K: usize = 128;
/// Columns of the down tiles: 2 vectors.
pub(super) const DC: usize = 8;
/// Words of one packed panel of down-projection rows: 16 KiB, 128 columns of 64 units, which
/// stay in the L1 cache while every token tile of the pass runs over them.
pub(super) const DOWN_WORDS: usize = 4096;
const _: () = assert!(Q8_BLOCK.is_multiple_of(8) && UNITS.is_multiple_of(8));

/// Pairs of columns (words) of a packed row of `cols` values: `cols` rounded up to 8.
pub(super) const fn pairs_of(cols: usize) -> usize {
    cols.div_ceil(8) * 4
}

/// Token groups of `cols` columns one pass holds (at least 1 for `cols <= Q8_MAX_COLS`).
pub(super) fn groups_per_pass(cols: usize) -> usize {
    (PACK_WORDS / (pairs_of(cols) * Q8_GROUP))
        .min(SP_LEN / (q8_blocks(cols) * Q8_GROUP))
        .clamp(1, MAX_GROUPS)
}

/// 4x4 transpose of 32-bit lanes: `out[k][j] = rows[j][k]`.
#[inline(always)]
pub(super) fn transpose4(rows: [v128; 4]) -> [v128; 4] {
    let [a, b, c, d] = rows;
    let t0 = i32x4_shuffle::<0, 4, 1, 5>(a, b);
    let t1 = i32x4_shuffle::<2, 6, 3, 7>(a, b);
    let t2 = i32x4_shuffle::<0, 4, 1, 5>(c, d);
    let t3 = i32x4_shuffle::<2, 6, 3, 7>(c, d);
    [
        i32x4_shuffle::<0, 1, 4, 5>(t0, t2),
        i32x4_shuffle::<2, 3, 6, 7>(t0, t2),
        i32x4_shuffle::<0, 1, 4, 5>(t1, t3),
        i32x4_shuffle::<2, 3, 6, 7>(t1, t3),
    ]
}

/// The 4 lanes of `v`, each broadcast to a vector.
#[inline(always)]
pub(super) fn splat_lanes(v: v128) -> [v128; 4] {
    [
        i32x4_shuffle::<0, 0, 0, 0>(v, v),
        i32x4_shuffle::<1, 1, 1, 1>(v, v),
        i32x4_shuffle::<2, 2, 2, 2>(v, v),
        i32x4_shuffle::<3, 3, 3, 3>(v, v),
    ]
}

/// The lanes of a vector.
#[inline(always)]
pub(super) fn lanes4(v: v128) -> [f32; 4] {
    [
        f32x4_extract_lane::<0>(v),
        f32x4_extract_lane::<1>(v),
        f32x4_extract_lane::<2>(v),
        f32x4_extract_lane::<3>(v),
    ]
}

/// `buf[..n]` as the values written there.
///
/// # Safety
/// Every element of `buf[..n]` was written.
pub(super) unsafe fn written<T>(buf: &[MaybeUninit<T>], n: usize) -> &[T] {
    let b = &buf[..n];
    // SAFETY: the caller wrote every element of b, and MaybeUninit<T> has the layout of T.
    unsafe { core::slice::from_raw_parts(b.as_ptr() as *const T, n) }
}

/// Stores 4 words at `out[at..at + 4]`.
#[inline(always)]
pub(super) fn store_words(out: &mut [MaybeUninit<i32>], at: usize, v: v128) {
    let d = &mut out[at..at + 4];
    // SAFETY: d holds 4 words (16 bytes); v128.store is unaligned.
    unsafe { v128_store(d.as_mut_ptr() as *mut v128, v) };
}
