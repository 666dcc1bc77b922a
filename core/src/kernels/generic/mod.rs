//! Reference kernels: plain safe Rust, no allocation, summing in one fixed order.
//!
//! # Summation order
//! Every dot product of length `n` (weights times input, or [`dot`] of two slices) is computed
//! the same way, so `dot_row`, `matvec`, `matmul` and `dot` agree bit for bit:
//! - the columns are cut into tiles of [`TILE`] elements (the last one shorter);
//! - inside a tile, 4 accumulators take the products of columns `i ≡ 0, 1, 2, 3 (mod 4)` of
//!   the tile's whole groups of 4, left to right; they are combined as `(a0 + a1) + (a2 + a3)`
//!   and the tile's remaining `len % 4` products are then added left to right;
//! - the tile sums are added left to right to a total that starts at `+0.0`.
//!
//! Products are plain `w * x` (never fused multiply-add) so the same build gives the same bits
//! on every target. For int8 rows the sum is over `q * x` and the row scale multiplies the
//! total once; a bias is added last. Rows of ggml blocks are dequantized a tile at a time
//! ([`crate::kernels::BlockType::dequantize`]) and then summed in this order, so a block
//! matrix gives the bits of its dequantized f32 matrix.
//!
//! # Preconditions
//! These are internal hot paths: shapes are checked with `debug_assert!` only. A wrong length
//! in a release build gives a wrong result or a slice-index panic, never an out-of-bounds
//! read. Callers (the engine) validate shapes once, up front, and return typed errors.

mod act;
pub mod attention;
mod linear;
mod norm;
mod q8;

pub use act::*;
pub use attention::*;
pub use linear::*;
pub use norm::*;
pub use q8::*;
