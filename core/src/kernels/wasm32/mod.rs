//! wasm `simd128` versions of the generic kernels: the f32 tile dot of the reference path,
//! and the int8-activation products, quantization, GELU and attention tiles of the fast path
//! (`Kernels::Fast`, the default of the wasm package).
//!
//! Built only for `wasm32` with the `simd128` feature (`-C target-feature=+simd128`); node 20
//! and every current browser have it (relaxed SIMD is not on by default in node 20, so none is
//! used). simd128 has no fused multiply-add, so float kernels that keep the generic order of
//! operations give the generic bits.
//!
//! - [`dot_tile`]: the generic summation order keeps 4 accumulators for columns `i mod 4` and
//!   combines them as `(a0 + a1) + (a2 + a3)`: that is exactly one f32x4 accumulator, so the
//!   reference kernels give the same bits with and without simd128.
//! - [`wasm_simd128_matmul_q8_tokens`], [`wasm_simd128_matmul_i8_i8_token`] (the
//!   projections): the tokens quantized and packed in groups of 16 (16-bit column pairs
//!   interleaved by token), as many groups per pass as 128 KiB of stack hold (10 of 384
//!   columns); each pair of weight rows is widened once per pass and runs over every group:
//!   `i32x4.dot_i16x8_s` of 4 tokens' pairs with a row's pair, in register tiles of 2 rows x 16
//!   tokens. The block sums are exact i32 (any order), then the generic float sum and epilogue
//!   lane by lane: the same bits.
//! - [`wasm_simd128_ffn_q8`] (the dense int8 feed-forward, all the tokens of a call): per step
//!   of 64 hidden units the up rows are widened once for the pass, the tiles take the
//!   activation and the down scales in registers, each token's 64 values one int8 scale (lane
//!   by lane), and the step's down rows are packed once per panel of columns for all tokens:
//!   the bits of the unfused kernels ([`wasm_simd128_accumulate_q8_tokens`] and the others).
//! - [`wasm_simd128_accumulate_q8_tokens`] (the feed-forward's down): pairs of rows of `down_t`
//!   packed per panel of columns once for every token group, the tokens' pairs broadcast,
//!   tiles of 4 tokens x 8 columns: exact sums, same bits.
//! - [`wasm_simd128_quantize_i8_token`]: the generic rounding (half away from zero, saturating
//!   conversion) on 4 lanes: the same bits for finite inputs.
//! - [`wasm_simd128_exp_f32x4`]: [`crate::kernels::generic::exp_poly`] on 4 lanes, the same bits.
//! - [`wasm_simd128_attn_scores_tile`], [`wasm_simd128_attn_dense_tile`],
//!   [`wasm_simd128_attn_scores_rows`], [`wasm_simd128_attn_topk_block`],
//!   [`wasm_simd128_attn_softmax_lanes`]: the generic block kernels of the fast attention
//!   (dense and top-k) with the lanes (queries) or the columns as vector lanes: the same bits
//!   (the same float operations in the same order element by element, the same slots).
//! - [`wasm_simd128_gelu_erf`]: the formula of [`crate::kernels::activate_fast`] with
//!   [`wasm_simd128_exp_f32x4`] instead of the math library's `exp` (within a few ulps).
//!
//! Why these shapes (measured in node 20 on x86-64, with V8's code and valgrind instruction
//! counts per function): V8 gives wasm 15 vector registers and loads every operand of a loop
//! step before its arithmetic, so a step's loads plus its accumulators must fit them: 8 i32x4
//! accumulators and 6 loads (2 x 4 tiles, about 26 instructions per 64 multiply-adds with
//! V8's own unrolling); an unrolled step would spill. A `v128.load` at a constant offset from
//! a pointer is one instruction, a `v128.load32_splat` at an offset two, so operands that a
//! tile broadcasts are stored broadcast when the packing is shared by enough token groups.
//! Array initialisation and slice copies become calls of V8's bulk-memory builtins (tens of
//! instructions each), so the hot paths write lanes and vectors directly.
//!
//! Loads and stores go through raw pointers (the simd128 memory intrinsics take them): each
//! `unsafe` block stays inside a slice whose length was checked before. Packing scratch is
//! `MaybeUninit` (written before it is read, never zeroed: zeroing it cost about 1% of a
//! MiniLM embedding).

mod act;
mod attention;
mod ffn;
mod linear;
mod q8;

pub use act::*;
pub use attention::*;
pub use ffn::*;
pub use linear::*;
pub use q8::*;

use core::arch::wasm32::*;

use crate::config::Activation;
use crate::kernels::generic;
use crate::kernels::generic::{
    ATTN_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, EXP_P, EXP_POLY_MAX, EXP_POLY_MIN, LN2_HI,
    LN2_LO, LOG2E,
};
use crate::kernels::matrix::{Matrix, Weights};
use crate::kernels::q8::*;

/// The 4 f32 `s[..4]` as one vector.
#[inline(always)]
fn ld4(s: &[f32]) -> v128 {
    let s = &s[..4];
    // SAFETY: s holds 4 f32 (16 bytes); v128.load is unaligned.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

/// Stores the 4 lanes of `v` to `s[..4]`.
#[inline(always)]
fn st4(s: &mut [f32], v: v128) {
    let s = &mut s[..4];
    // SAFETY: s holds 4 f32 (16 bytes); v128.store is unaligned.
    unsafe { v128_store(s.as_mut_ptr() as *mut v128, v) }
}

// A packed token group (`Q8_GROUP`) is 4 vectors of 4 lanes.
const _: () = assert!(Q8_GROUP == 16);
/// Words (2 int8 values widened to i16 each) of the packed token groups of one pass: 128 KiB
/// of stack, so that a pass holds [`MAX_GROUPS`] groups of up to 512 columns, 10 of 384 (160
/// tokens), one of [`Q8_MAX_COLS`]. The weights are packed once per pass.
const PACK_WORDS: usize = 32 * 1024;
/// Most token groups of one pass.
const MAX_GROUPS: usize = 16;
/// Block scales of the groups of one pass, `[group][block][Q8_GROUP]`.
const SP_LEN: usize = MAX_GROUPS * Q8_GROUP * 8;
/// Widest `d_model` of [`wasm_simd128_ffn_q8`].
pub const FFN_MAX_D: usize = 1024;
/// Hidden units of one step of [`wasm_simd128_ffn_q8`]: one int8 scale per token.
const UNITS: usize = Q8_BLOCK;
/// Pairs of rows (words) of the down projection's 64 units.
const UNIT_PAIRS: usize = UNITS / 2;
/// Longest `k` (rows of `q`) [`wasm_simd128_accumulate_q8_tokens`] takes; longer go to the
/// generic kernel. The feed-forward blocks use 64.
const ACC_MAX_K: usize = 128;
/// Columns of the down tiles: 2 vectors.
const DC: usize = 8;
/// Words of one packed panel of down-projection rows: 16 KiB, 128 columns of 64 units, which
/// stay in the L1 cache while every token tile of the pass runs over them.
const DOWN_WORDS: usize = 4096;
const _: () = assert!(Q8_BLOCK.is_multiple_of(8) && UNITS.is_multiple_of(8));

/// Pairs of columns (words) of a packed row of `cols` values: `cols` rounded up to 8.
const fn pairs_of(cols: usize) -> usize {
    cols.div_ceil(8) * 4
}

/// Token groups of `cols` columns one pass holds (at least 1 for `cols <= Q8_MAX_COLS`).
fn groups_per_pass(cols: usize) -> usize {
    (PACK_WORDS / (pairs_of(cols) * Q8_GROUP))
        .min(SP_LEN / (q8_blocks(cols) * Q8_GROUP))
        .clamp(1, MAX_GROUPS)
}
