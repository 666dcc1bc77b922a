//! x86-64 AVX-512 kernels (F, BW, VNNI), compiled in std builds and chosen at run time
//! (`is_x86_feature_detected!`) by [`crate::kernels::Kernels::Fast`]; each falls back to the AVX2 or
//! generic kernel on a CPU without them, and is tested against [`crate::kernels::generic`].
//!
//! Register-tiled matrix products in broadcast form: a tile of [`ROWS`] weight rows times
//! [`crate::kernels::Q8_GROUP`] = 16 tokens (one 16-lane register per weight row) keeps its
//! accumulators in registers over the whole reduction; each step loads one vector of the
//! tokens' activations (packed, 4 int8 or 1 f32 per token per lane) and
//! multiplies it by a broadcast of the weight row (4 int8 or 1 f32 read in place: the
//! row-major `[out, in]` weights are never repacked). No horizontal sums.
//!
//! - int8 (`vpdpbusd`): the activations are stored as `u8 = x + 128`, so each lane sums
//!   `(x + 128) w` exactly in i32 and starts from `-128 * sum(w)`: the exact i32 dot,
//!   bit-identical results to [`crate::kernels::matmul_q8_tokens`]. The tokens are quantized straight
//!   into the packed layout, in the caller's scratch ([`crate::kernels::Kernels::quantize_q8`], up to
//!   [`Q8_MAX_GROUPS`] groups of 16 tokens, sized by the memory plan); the weight
//!   block sums are taken once per 16 rows for every packed group, and a tile pair's 16 rows x
//!   16 tokens go to the output by one 16 x 16 register transpose.
//! - The dense int8 feed-forward ([`x86_avx512_ffn_q8`]) runs fused per 64 hidden units: up
//!   projection tiles, bias, activation and the down projection's row scales on the tile
//!   registers (units x tokens), the per-token quantization of the 64 units lane-wise, then the
//!   down projection with the weights as `u8 = w + 128` (a `vpermb` transpose of 4 rows) and
//!   the activations broadcast in place; the same bits as the unfused kernels.
//! - f32 (`vfmadd231ps`): fused, in another order than [`crate::kernels::matmul`] (rounding only);
//!   up to 3 tokens (decoding) run a matrix-vector kernel, 4 rows per step.
//! - Block weights and int8 weights times row-major int8 tokens ([`blocks`]): 8 weight rows
//!   per 256-bit register, AVX2 or AVX-512 VNNI, the generic bits (one token, a decode step,
//!   takes this path for int8 weights too).
//!
//! Stack: the int8 kernels keep only register tiles and small per-call buffers on the stack
//! (the block sums of 16 rows, 4 KiB; the fused feed-forward's 64 units, about 9 KiB); the
//! packed int8 activations are in the planned scratch. The block-weight product of packed
//! tokens unpacks 16 rows on the stack (88 KiB), and one token's int8 activations are
//! quantized on the stack (4 KiB) by [`crate::kernels::Kernels::matmul`]. The f32 kernels pack 16 tokens of up to
//! [`F32_MAX_COLS`] f32 on the stack (64 KiB, plus 16 KiB of hidden values in the feed-forward):
//! host-only paths (std builds on x86-64), bounded by these constants.
//!
//! AVX2 (+FMA) kernels cover the products of the f32 activations and GELU on CPUs without
//! AVX-512; the attention block kernels ([`attention`], [`topk`]) need AVX-512 F, BW and VL.

mod act;
mod attention;
mod blocks;
mod cpu;
mod ffn;
mod linear;
mod norm;
mod q8;
mod topk;

pub use act::*;
pub use attention::*;
pub use blocks::*;
pub use cpu::{x86_avx2_available, x86_avx512_attn_available, x86_avx512_vnni_available};
pub use ffn::*;
pub use linear::*;
pub use norm::*;
pub use q8::*;
pub use topk::*;
