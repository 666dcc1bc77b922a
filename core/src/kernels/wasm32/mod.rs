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
//! - [`wasm_simd128_matmul_q8_blocks`] (block weights, every ggml type): the tokens packed as
//!   for the int8 product; each pair of weight rows decoded once per pass (the integers of its
//!   blocks to int8, `d` and `m` to f32) and widened as an int8 pair is, then the same register
//!   tiles of 2 rows x 16 tokens with the float step per block of 32 columns
//!   (`(dot as f32 * s) * d`, then `(sum(x) as f32 * s) * m` for the `_1` kinds), lane by
//!   lane: the same bits.
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
mod blocks;
mod ffn;
mod linear;
mod q8;
mod simd;

pub use act::*;
pub use attention::*;
pub use blocks::*;
pub use ffn::*;
pub use linear::*;
pub use q8::*;
