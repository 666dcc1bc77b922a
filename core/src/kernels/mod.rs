//! Numeric kernels, and the one place that picks them.
//!
//! - [`generic`] is the reference implementation, written to sum in a fixed order so that the
//!   same build gives bit-identical results on every target; it imports no arch module.
//! - `x86_64` (std builds: AVX2, AVX-512, detected at run time), `wasm32` (`simd128`) and
//!   `arm` (the DSP extension) overlay it, one file per op family (`linear`, `q8`, `ffn`,
//!   `attention`, `act`, `norm`), and are tested against it.
//! - [`Kernels`] names a choice; its methods (`kernels.matmul(..)`, `kernels.quantize_q8(..)`,
//!   `kernels.attn_topk_block(..)`, ...) are the dispatch: the only code that names an arch
//!   kernel for the engine.
//! - [`q8`](Q8_GROUP) holds the int8 token vocabulary (groups of [`Q8_GROUP`] tokens, blocks of
//!   [`Q8_BLOCK`] columns, [`Q8Tokens`], [`Q8Rows`]); the argument structs of the attention and
//!   fused feed-forward kernels are in `args` ([`AttnScoresArgs`], ...).
//!
//! The free functions re-exported here (`matmul`, `dot`, `layer_norm`, ...) are the reference
//! kernels of this target: the generic loops, on wasm `simd128` with its tile dot (the same
//! bits).

mod args;
mod blocks;
pub mod generic;
mod matrix;
mod q8;

#[cfg(topkit_arm_dsp)]
mod arm;
#[cfg(topkit_wasm_simd)]
mod wasm32;
#[cfg(topkit_x86)]
mod x86_64;

pub use args::{
    AttnScoresArgs, AttnSoftmaxArgs, AttnTile, AttnTopkArgs, FfnArgs, FfnInt8, KV_INT8_GROUP,
    KvRows, KvRowsMut, kv_int8_group, kv_int8_scales,
};
pub use blocks::{BLOCK, BlockType};
pub use generic::*;
pub use matrix::{DType, Matrix, Weights, f16};
pub use q8::*;

#[cfg(topkit_arm_dsp)]
pub use arm::{DSP_SEGMENT, arm_dsp_dot_i8_i8, arm_dsp_matvec_i8_i8};
#[cfg(all(topkit_arm_dsp, target_abi = "eabihf"))]
pub use arm::{SEG_BLOCKS, arm_dsp_matmul_q8_blocks};
#[cfg(topkit_wasm_simd)]
pub use wasm32::{
    wasm_simd128_accumulate_q8_tokens, wasm_simd128_attn_dense_tile, wasm_simd128_attn_scores_rows,
    wasm_simd128_attn_scores_tile, wasm_simd128_attn_softmax_lanes, wasm_simd128_attn_topk_block,
    wasm_simd128_exp_f32x4, wasm_simd128_ffn_q8, wasm_simd128_gelu_erf,
    wasm_simd128_matmul_i8_i8_token, wasm_simd128_matmul_q8_blocks, wasm_simd128_matmul_q8_tokens,
    wasm_simd128_quantize_i8_token,
};
#[cfg(topkit_x86)]
pub use x86_64::{
    x86_avx2_available, x86_avx2_axpy_f32, x86_avx2_axpy_i8, x86_avx2_dot_f32, x86_avx2_dot_i8_i8,
    x86_avx2_gelu_erf, x86_avx2_matmul_f32, x86_avx2_matmul_q8_rows,
    x86_avx512_accumulate_f32_tokens, x86_avx512_accumulate_q8_tokens, x86_avx512_attn_available,
    x86_avx512_attn_candidates, x86_avx512_attn_dense_tile, x86_avx512_attn_scores_rows,
    x86_avx512_attn_scores_tile, x86_avx512_attn_softmax_lanes, x86_avx512_attn_softmax_rows,
    x86_avx512_attn_topk_block, x86_avx512_exp_f32, x86_avx512_ffn_f32, x86_avx512_ffn_q8,
    x86_avx512_layer_norm, x86_avx512_matmul_f32, x86_avx512_matmul_q8_rows,
    x86_avx512_quantize_i8_token, x86_avx512_vnni_available,
};

use crate::config::Activation;
use q8::Q8Layout;

/// Most tokens [`Kernels::quantize_q8`] quantizes row-major with [`Kernels::Fast`] (for the
/// kernels of [`Kernels::matmul_q8_rows`]) rather than into the packed groups of 16.
#[cfg(topkit_x86)]
const Q8_ROWS_MAX: usize = 4;

/// The tile dot of this target's reference products: the same bits everywhere, one f32x4 per
/// 4 columns on wasm `simd128`.
#[cfg(topkit_wasm_simd)]
type TargetTile = wasm32::Simd128Tile;
#[cfg(not(topkit_wasm_simd))]
type TargetTile = generic::ScalarTile;

/// `a . b` of two f32 slices of equal length (elements), in the documented order of
/// [`generic`] (so it equals [`dot_row`] of an f32 matrix bit for bit).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    generic::dot_with::<TargetTile>(a, b)
}

/// `W[r] . x` with the row's scale applied. `x.len() == cols`, `r < rows`.
pub fn dot_row(w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
    generic::dot_row_with::<TargetTile>(w, r, x)
}

/// `y = W x + b`: `x.len() == cols`, `y.len() == rows`, `bias.len() == rows` if given.
/// Each `y[r]` equals `dot_row(w, r, x) + bias[r]` bit for bit.
pub fn matvec(w: &Matrix<'_>, x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    generic::matmul_with::<TargetTile>(w, x, 1, bias, y);
}

/// `Y = X W^T + b` for `n` rows of `X` (`x.len() == n * cols`) into `Y` (`y.len() == n *
/// rows`, row-major), `bias.len() == rows` if given; each `Y[i][r]` equals
/// `dot_row(w, r, X[i]) + bias[r]` bit for bit, whatever `n` is ([`generic::matmul_with`]).
pub fn matmul(w: &Matrix<'_>, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    generic::matmul_with::<TargetTile>(w, x, n, bias, y);
}

/// Which kernels a model runs with ([`crate::Model::with_kernels`]); its methods run an op
/// with the kernels of the choice on this target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kernels {
    /// The generic kernels with f32 activations: bit-identical on every target (the firmware
    /// tests compare against a host run of these).
    #[default]
    Reference,
    /// Host speed: int8 and block weights take int8 activations (dynamic scales per token and
    /// block of [`Q8_BLOCK`] columns, exact i32 sums, [`matmul_i8_i8_token`]), and in std
    /// builds on x86-64 the AVX-512 (VNNI) or AVX2/FMA kernels when the CPU has them
    /// (detected at run time; a few tokens, as in decoding, run matrix-vector kernels). On Arm
    /// with feature `arm-dsp` the exact int8 dots and matrix-vector products
    /// ([`Kernels::dot_i8`], [`Kernels::matvec_i8`]) and, on hard-float builds, the `Q8_0`,
    /// `Q4_0` and `Q4_1` block-weight products run the DSP (SMLAD) kernels, the same bits as
    /// the generic ones. On wasm32 with `simd128` the int8 and block-weight products (many
    /// token groups per packing or decoding of the weights), the fused dense int8
    /// feed-forward, the quantization, the attention block kernels (dense and top-k) and GELU
    /// run the simd128 kernels (the same bits as the generic ones, GELU within a few ulps).
    /// Results differ from `Reference` by the activation rounding (int8) or the summation
    /// order (f32).
    Fast,
}

impl Kernels {
    /// `true` for [`Kernels::Fast`].
    #[inline]
    pub const fn is_fast(self) -> bool {
        matches!(self, Kernels::Fast)
    }

    /// `Y = X W^T + b` (shapes as in [`matmul`]). With [`Kernels::Fast`] and int8 weights the
    /// activations are quantized to int8 in `scratch` ([`matmul_i8_i8_token`]'s formula, the
    /// same bits on every target), which must hold one group of tokens:
    /// [`q8_scratch_bytes`]`(w.cols(), n)` bytes (`/ 4` f32 words) give the passes the kernels
    /// are tuned for, fewer bytes (down to one group, [`q8_group_words`]) more passes; with
    /// less, or rows longer than [`Q8_MAX_COLS`], the f32-activation product runs. Block
    /// weights take the same int8 path. On x86-64 (std builds) one token is quantized on the
    /// stack instead, so int8 and block weights need no scratch for it. Otherwise `scratch`
    /// is not used (it may be empty).
    pub fn matmul(
        self,
        w: &Matrix<'_>,
        x: &[f32],
        n: usize,
        bias: Option<&[f32]>,
        y: &mut [f32],
        scratch: &mut [f32],
    ) {
        match (self, w.dtype()) {
            // One token (a decode step, the output head) is quantized on the stack (4 KiB),
            // so the products need no scratch; the same bits as the passes below.
            #[cfg(topkit_x86)]
            (Kernels::Fast, DType::I8 | DType::Block(_))
                if n == 1 && w.cols() > 0 && w.cols() <= Q8_MAX_COLS =>
            {
                let (cols, nb) = (w.cols(), q8_blocks(w.cols()));
                let mut q = [0i8; Q8_MAX_COLS];
                let mut s = [0f32; Q8_MAX_COLS / Q8_BLOCK];
                self.quantize_q8_token(&x[..cols], &mut q[..cols], &mut s[..nb]);
                let xt = Q8Rows {
                    q: &q[..cols],
                    s: &s[..nb],
                    n: 1,
                };
                self.matmul_q8_rows(w, xt, bias, y);
            }
            (Kernels::Fast, DType::I8)
                if w.cols() > 0
                    && w.cols() <= Q8_MAX_COLS
                    && scratch.len() >= q8_group_words(w.cols()) =>
            {
                // On wasm simd128 many token groups per pass, each weight row widened once for
                // all of them, its working buffers on the wasm stack (1 MiB by default), not
                // in the plan.
                #[cfg(topkit_wasm_simd)]
                wasm_simd128_matmul_i8_i8_token(w, x, n, bias, y);
                // Elsewhere passes of up to [`q8_groups`] groups of tokens (as many as
                // `scratch` holds), each quantized once ([`Kernels::quantize_q8`]) and
                // multiplied ([`Kernels::matmul_q8`]).
                #[cfg(not(topkit_wasm_simd))]
                {
                    let (rows, cols) = (w.rows(), w.cols());
                    let groups = q8_groups(cols, n).min(scratch.len() / q8_group_words(cols));
                    let pass = groups * Q8_GROUP;
                    let mut i0 = 0;
                    while i0 < n {
                        let t = pass.min(n - i0);
                        let xq = self.quantize_q8(&x[i0 * cols..(i0 + t) * cols], cols, scratch);
                        self.matmul_q8(w, &xq, bias, &mut y[i0 * rows..(i0 + t) * rows]);
                        i0 += t;
                    }
                }
            }
            // Block weights take the int8 tokens as int8 weights do (blocks of 32 weights
            // under blocks of Q8_BLOCK activations; packed groups on AVX-512 VNNI for more
            // than 4 tokens).
            (Kernels::Fast, DType::Block(_))
                if w.cols() <= Q8_MAX_COLS && scratch.len() >= q8_group_words(w.cols()) =>
            {
                let (rows, cols) = (w.rows(), w.cols());
                let groups = q8_groups(cols, n).min(scratch.len() / q8_group_words(cols));
                let pass = groups * Q8_GROUP;
                let mut i0 = 0;
                while i0 < n {
                    let t = pass.min(n - i0);
                    let xq = self.quantize_q8(&x[i0 * cols..(i0 + t) * cols], cols, scratch);
                    self.matmul_q8(w, &xq, bias, &mut y[i0 * rows..(i0 + t) * rows]);
                    i0 += t;
                }
            }
            #[cfg(topkit_x86)]
            (Kernels::Fast, DType::F32) => x86_avx512_matmul_f32(w, x, n, bias, y),
            _ => matmul(w, x, n, bias, y),
        }
    }

    /// Quantizes the `n = x.len() / cols` token rows of `x` to int8 by blocks of [`Q8_BLOCK`]
    /// columns ([`quantize_i8_token`]'s values) into `scratch`, which must hold
    /// `n.div_ceil(16)` groups of [`q8_group_words`]`(cols)` f32 words (`cols >= 1`).
    /// [`Kernels::Fast`] lays them out for the target's fast product (packed by groups of
    /// [`Q8_GROUP`] tokens on x86-64 with AVX-512 VNNI when `cols` is a multiple of 4),
    /// [`Kernels::Reference`] row by row, as [`Kernels::Fast`] does elsewhere and on x86-64
    /// for up to 4 tokens (a decode step: the packed kernels fill whole groups of 16).
    pub fn quantize_q8<'s>(self, x: &[f32], cols: usize, scratch: &'s mut [f32]) -> Q8Tokens<'s> {
        let cols = cols.max(1);
        let n = x.len() / cols;
        debug_assert!(scratch.len() >= n.div_ceil(Q8_GROUP) * q8_group_words(cols));
        #[cfg(topkit_x86)]
        if self.is_fast() && n > Q8_ROWS_MAX && x86_64::packs_q8(cols) {
            let (nb, groups) = (q8_blocks(cols), n.div_ceil(Q8_GROUP));
            let (qw, rest) =
                scratch.split_at_mut((Q8_GROUP * groups * cols / 4).min(scratch.len()));
            let px: &mut [u32] = bytemuck::cast_slice_mut(qw);
            let sx = &mut rest[..groups * Q8_GROUP * nb];
            x86_64::quantize_pack_groups(&x[..n * cols], cols, px, sx);
            return Q8Tokens {
                n,
                cols,
                layout: Q8Layout::Packed { px, sx },
            };
        }
        self.quantize_q8_rows(x, cols, scratch)
    }

    /// [`Kernels::quantize_q8`] in the row-major layout ([`Q8Rows`]) whatever the choice (the
    /// layout of the block-weight products, and of the int8 ones for a few tokens).
    fn quantize_q8_rows<'s>(self, x: &[f32], cols: usize, scratch: &'s mut [f32]) -> Q8Tokens<'s> {
        let cols = cols.max(1);
        let n = x.len() / cols;
        let (nb, groups) = (q8_blocks(cols), n.div_ceil(Q8_GROUP));
        let (qw, rest) = scratch.split_at_mut((Q8_GROUP * groups * cols / 4).min(scratch.len()));
        let q: &mut [i8] = &mut bytemuck::cast_slice_mut(qw)[..n * cols];
        let s = &mut rest[..n * nb];
        for ((xt, q8t), st) in x
            .chunks_exact(cols)
            .zip(q.chunks_exact_mut(cols))
            .zip(s.chunks_exact_mut(nb))
        {
            self.quantize_q8_token(xt, q8t, st);
        }
        Q8Tokens {
            n,
            cols,
            layout: Q8Layout::Rows(Q8Rows { q, s, n }),
        }
    }

    /// `Y = Xq W^T + b` of the tokens `xq` ([`Kernels::quantize_q8`]) and int8 weights `W`
    /// (`xq.cols()` columns): [`matmul_q8_tokens`]'s bits for every choice of kernels. `y` is
    /// `xq.len() x w.rows()`.
    pub fn matmul_q8(self, w: &Matrix<'_>, xq: &Q8Tokens<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
        debug_assert_eq!(w.cols(), xq.cols);
        match xq.layout {
            Q8Layout::Rows(x) => self.matmul_q8_rows(w, x, bias, y),
            #[cfg(topkit_x86)]
            Q8Layout::Packed { px, sx } => x86_64::matmul_packed(w, px, sx, xq.n, bias, y),
        }
    }

    /// [`matmul_q8_tokens`] of row-major int8 tokens (the bits never depend on the choice).
    #[inline]
    pub fn matmul_q8_rows(
        self,
        w: &Matrix<'_>,
        x: Q8Rows<'_>,
        bias: Option<&[f32]>,
        y: &mut [f32],
    ) {
        match self {
            // Block weights: the SMLAD row loops of Q8_0, Q4_0, Q4_1 (others inside: generic).
            #[cfg(all(topkit_arm_dsp, target_abi = "eabihf"))]
            Kernels::Fast if matches!(w.dtype(), DType::Block(_)) => {
                arm_dsp_matmul_q8_blocks(w, x, bias, y)
            }
            // The exact block dots on SMLAD: the same i32s, so the same bits.
            #[cfg(topkit_arm_dsp)]
            Kernels::Fast => generic::matmul_q8_tokens_with(arm_dsp_dot_i8_i8, w, x, bias, y),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast if w.dtype() == DType::I8 => wasm_simd128_matmul_q8_tokens(w, x, bias, y),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast if matches!(w.dtype(), DType::Block(_)) => {
                wasm_simd128_matmul_q8_blocks(w, x, bias, y)
            }
            // Block and int8 weights, 8 rows per register (the same bits).
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_matmul_q8_rows(w, x, bias, y),
            _ => matmul_q8_tokens(w, x, bias, y),
        }
    }

    /// [`quantize_i8_token`] (the bits never depend on the choice, for finite inputs).
    #[inline]
    pub fn quantize_q8_token(self, x: &[f32], q: &mut [i8], s: &mut [f32]) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_quantize_i8_token(x, q, s),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_quantize_i8_token(x, q, s),
            _ => quantize_i8_token(x, q, s),
        }
    }

    /// [`accumulate_q8_tokens`] (the bits never depend on the choice).
    #[inline]
    pub fn accumulate_q8(self, out: &mut [f32], q: &[i8], cols: usize, h: Q8Rows<'_>) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_accumulate_q8_tokens(out, q, cols, h),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_accumulate_q8_tokens(out, q, cols, h),
            _ => accumulate_q8_tokens(out, q, cols, h),
        }
    }

    /// [`accumulate_f32_tokens`] (rounding depends on the choice).
    #[inline]
    pub fn accumulate_f32(self, out: &mut [f32], w: &[f32], cols: usize, h: &[f32], n: usize) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_accumulate_f32_tokens(out, w, cols, h, n),
            _ => accumulate_f32_tokens(out, w, cols, h, n),
        }
    }

    /// Exact int8 dot product (as [`dot_i8_i8`]; the value never depends on the choice).
    #[inline]
    pub fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx2_dot_i8_i8(a, b),
            #[cfg(topkit_arm_dsp)]
            Kernels::Fast => arm_dsp_dot_i8_i8(a, b),
            _ => dot_i8_i8(a, b),
        }
    }

    /// `y[r] = dot_i8_i8(q[r * cols..][..cols], x)` for the `y.len()` rows of a row-major int8
    /// matrix of `cols = x.len()` columns (exact: the same values for every choice).
    pub fn matvec_i8(self, q: &[i8], x: &[i8], y: &mut [i32]) {
        match self {
            #[cfg(topkit_arm_dsp)]
            Kernels::Fast => arm_dsp_matvec_i8_i8(q, x, y),
            _ => {
                let cols = x.len();
                debug_assert_eq!(q.len(), y.len() * cols);
                for (r, yr) in y.iter_mut().enumerate() {
                    *yr = self.dot_i8(&q[r * cols..(r + 1) * cols], x);
                }
            }
        }
    }

    /// `y[r] += a * W[r][j]` for every row (as [`axpy_col`]: the same bits for every choice).
    #[inline]
    pub fn axpy_col(self, w: &Matrix<'_>, j: usize, a: f32, y: &mut [f32]) {
        axpy_col(w, j, a, y);
    }

    /// `W[r] . x` with the row's scale applied (f32 activations; as [`dot_row`]).
    #[inline]
    pub fn dot_row(self, w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
        match (self, w.weights()) {
            #[cfg(topkit_x86)]
            (Kernels::Fast, Weights::F32(d)) => {
                let c = w.cols();
                x86_avx2_dot_f32(&d[r * c..(r + 1) * c], x)
            }
            _ => dot_row(w, r, x),
        }
    }

    /// `y += a * W[r]` (as [`axpy_row`]; int8 rows bit-identical for every choice, f32 rows
    /// with the fast kernels fused, within 1 ulp of `|a w|` per element).
    #[inline]
    pub fn axpy_row(self, w: &Matrix<'_>, r: usize, a: f32, y: &mut [f32]) {
        match (self, w.weights()) {
            #[cfg(topkit_x86)]
            (Kernels::Fast, Weights::F32(d)) => {
                let c = w.cols();
                x86_avx2_axpy_f32(y, a, &d[r * c..(r + 1) * c]);
            }
            #[cfg(topkit_x86)]
            (Kernels::Fast, Weights::I8 { q, scales }) => {
                let c = w.cols();
                x86_avx2_axpy_i8(y, a * scales[r], &q[r * c..(r + 1) * c]);
            }
            _ => axpy_row(w, r, a, y),
        }
    }

    /// [`layer_norm`] (the fast kernel sums in another order, so the rounding differs).
    #[inline]
    pub fn layer_norm(self, x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_layer_norm(x, gamma, beta, eps),
            _ => layer_norm(x, gamma, beta, eps),
        }
    }

    /// The activation of one value: [`activate`], or [`activate_fast`] for [`Kernels::Fast`].
    #[inline]
    pub fn activate(self, act: Activation, x: f32) -> f32 {
        match self {
            Kernels::Reference => activate(act, x),
            Kernels::Fast => activate_fast(act, x),
        }
    }

    /// [`Kernels::activate`] over a slice, in place (GELU vectorised with AVX2+FMA when the
    /// CPU has them, or with simd128).
    pub fn activate_slice(self, act: Activation, x: &mut [f32]) {
        match (self, act) {
            #[cfg(topkit_x86)]
            (Kernels::Fast, Activation::GeluErf) => x86_avx2_gelu_erf(x),
            #[cfg(topkit_wasm_simd)]
            (Kernels::Fast, Activation::GeluErf) => wasm_simd128_gelu_erf(x),
            (Kernels::Fast, _) => x.iter_mut().for_each(|v| *v = activate_fast(act, *v)),
            (Kernels::Reference, _) => activate_slice(act, x),
        }
    }

    /// The whole dense f32 feed-forward block `a` into `out` (which holds the down bias) in one
    /// fused kernel, where the target has one (AVX-512); `false` when it ran nothing (then
    /// the caller runs the unfused loop).
    pub fn ffn_f32_fused(self, a: &FfnArgs<'_>, out: &mut [f32]) -> bool {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_ffn_f32(a, out),
            _ => {
                let _ = (a, out);
                false
            }
        }
    }

    /// The whole dense int8 feed-forward block `a` (int8 `up` and `down_t`) into `out` (which
    /// holds the down bias) in one fused kernel, where the target has one (AVX-512 VNNI, with
    /// `scratch` for the quantized tokens; simd128, on the wasm stack): the bits of the
    /// unfused loop. `false` when it ran nothing.
    pub fn ffn_q8_fused(self, a: &FfnArgs<'_>, out: &mut [f32], scratch: &mut [f32]) -> bool {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_ffn_q8(a, out, scratch),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => {
                let _ = scratch;
                wasm_simd128_ffn_q8(a, out)
            }
            _ => {
                let _ = (a, out, scratch);
                false
            }
        }
    }

    /// Scores of a tile ([`attn_scores_tile`]; the fast kernels differ by the FMA rounding on
    /// x86-64 only).
    #[inline]
    pub fn attn_scores_tile(self, a: &AttnScoresArgs<'_>, s: &mut [f32; ATTN_BLOCK]) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_attn_scores_tile(a, s),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_attn_scores_tile(a, s),
            _ => attn_scores_tile(a, s),
        }
    }

    /// Scores of a tile, lane-major ([`attn_scores_rows`]).
    #[inline]
    pub fn attn_scores_rows(self, a: &AttnScoresArgs<'_>, rows: &mut [f32], rs: usize) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_attn_scores_rows(a, rows, rs),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_attn_scores_rows(a, rows, rs),
            _ => attn_scores_rows(a, rows, rs),
        }
    }

    /// One tile of the blocked online softmax ([`attn_dense_tile`]).
    #[inline]
    pub fn attn_dense_tile(
        self,
        t: &AttnTile<'_>,
        v: &[f32],
        stride: usize,
        hd: usize,
        st: &mut AttnDenseState,
    ) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_attn_dense_tile(t, v, stride, hd, st),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_attn_dense_tile(t, v, stride, hd, st),
            _ => attn_dense_tile(t, v, stride, hd, st),
        }
    }

    /// Top-k candidates of a tile ([`attn_candidates`]; the same masks for every choice).
    #[inline]
    pub fn attn_candidates(
        self,
        t: &AttnTile<'_>,
        thr: &[f32; ATTN_LANES],
        open: u16,
        cand: &mut [u16; ATTN_TILE],
    ) -> u16 {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_attn_candidates(t, thr, open, cand),
            _ => attn_candidates(t, thr, open, cand),
        }
    }

    /// Merges a block of keys into one lane's top-k slots ([`attn_topk_block`]; the same
    /// slots for every choice).
    #[inline]
    pub fn attn_topk_block(
        self,
        a: &AttnTopkArgs<'_>,
        scores: &mut [f32],
        idx: &mut [u16],
        len: usize,
        work: &mut AttnTopkWork,
    ) -> usize {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_attn_topk_block(a, scores, idx, len, work),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_attn_topk_block(a, scores, idx, len, work),
            _ => attn_topk_block(a, scores, idx, len, work),
        }
    }

    /// Softmax of the kept slots of a block's lanes ([`attn_softmax_lanes`]).
    #[inline]
    pub fn attn_softmax_lanes(self, a: &AttnSoftmaxArgs<'_>, out: &mut [f32], out_stride: usize) {
        match self {
            #[cfg(topkit_x86)]
            Kernels::Fast => x86_avx512_attn_softmax_lanes(a, out, out_stride),
            #[cfg(topkit_wasm_simd)]
            Kernels::Fast => wasm_simd128_attn_softmax_lanes(a, out, out_stride),
            _ => attn_softmax_lanes(a, out, out_stride),
        }
    }
}
