//! Numeric kernels. `generic` is the reference implementation, written to sum in a fixed order
//! so that the same build gives bit-identical results on every target; arch-specific kernels
//! (x86-64 AVX2 and AVX-512, wasm `simd128`) overlay it and are tested against it.

// The DSP extension (SMLAD): `target_feature = "dsp"` is unstable, so a stable compiler never
// sets it, even for thumbv7em; feature `arm-dsp` says it is there.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", feature = "arm-dsp")))]
mod arm_dsp;
pub mod attn;
mod generic;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm_simd128;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_attention;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx2;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
mod x86_avx512;

#[cfg(all(target_arch = "arm", any(target_feature = "dsp", feature = "arm-dsp")))]
pub use arm_dsp::{DSP_SEGMENT, arm_dsp_dot_i8_i8, arm_dsp_matvec_i8_i8};
pub use generic::*;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub use wasm_simd128::{
    wasm_simd128_accumulate_q8_tokens, wasm_simd128_attn_dense_tile, wasm_simd128_attn_scores_rows,
    wasm_simd128_attn_scores_tile, wasm_simd128_attn_softmax_lanes, wasm_simd128_attn_topk_block,
    wasm_simd128_exp_f32x4, wasm_simd128_ffn_q8, wasm_simd128_gelu_erf,
    wasm_simd128_matmul_i8_i8_token, wasm_simd128_matmul_q8_tokens, wasm_simd128_quantize_i8_token,
};
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub use x86_attention::{
    available as x86_avx512_attn_available, x86_avx512_attn_candidates, x86_avx512_attn_dense_tile,
    x86_avx512_attn_scores_rows, x86_avx512_attn_scores_tile, x86_avx512_attn_softmax_lanes,
    x86_avx512_attn_softmax_rows, x86_avx512_attn_topk_block, x86_avx512_exp_f32,
};
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub use x86_avx2::{
    available as x86_avx2_available, x86_avx2_axpy_f32, x86_avx2_axpy_i8, x86_avx2_dot_f32,
    x86_avx2_dot_i8_i8, x86_avx2_gelu_erf, x86_avx2_matmul_f32,
};
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub use x86_avx512::{
    available_vnni as x86_avx512_vnni_available, x86_avx512_accumulate_f32_tokens,
    x86_avx512_accumulate_q8_tokens, x86_avx512_ffn_f32, x86_avx512_ffn_q8, x86_avx512_layer_norm,
    x86_avx512_matmul_f32, x86_avx512_quantize_i8_token,
};

use crate::Error;
/// IEEE half float, the element of [`Weights::F16`] (re-exported from the `half` crate).
pub use half::f16;

/// Element type of a weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 16-bit float (IEEE half).
    F16,
    /// Symmetric int8 with one f32 scale per row: `w[r][c] = scale[r] * q[r][c]`.
    I8,
}

/// Borrowed weight storage (zero-copy view of flash, a file or a JS buffer).
#[derive(Debug, Clone, Copy)]
pub enum Weights<'a> {
    /// Row-major f32 values.
    F32(&'a [f32]),
    /// Row-major f16 values.
    F16(&'a [f16]),
    /// Row-major int8 values and one f32 scale per row.
    I8 {
        /// Quantized values, `rows * cols`.
        q: &'a [i8],
        /// One scale per row.
        scales: &'a [f32],
    },
}

/// A row-major `rows x cols` weight matrix. For a linear layer `y = W x` (PyTorch layout:
/// `[out, in]`) rows are outputs.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    rows: usize,
    cols: usize,
    w: Weights<'a>,
}

impl<'a> Matrix<'a> {
    /// Checks that the storage holds exactly `rows * cols` values (and `rows` scales).
    pub fn new(rows: usize, cols: usize, w: Weights<'a>) -> Result<Self, Error> {
        let n = rows
            .checked_mul(cols)
            .ok_or(Error::InvalidConfig("matrix too large"))?;
        let (len, what) = match w {
            Weights::F32(d) => (d.len(), "f32 matrix"),
            Weights::F16(d) => (d.len(), "f16 matrix"),
            Weights::I8 { q, scales } => {
                if scales.len() != rows {
                    return Err(Error::ShapeMismatch {
                        what: "int8 row scales",
                        expected: rows,
                        found: scales.len(),
                    });
                }
                (q.len(), "int8 matrix")
            }
        };
        if len != n {
            return Err(Error::ShapeMismatch {
                what,
                expected: n,
                found: len,
            });
        }
        Ok(Matrix { rows, cols, w })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self.w {
            Weights::F32(_) => DType::F32,
            Weights::F16(_) => DType::F16,
            Weights::I8 { .. } => DType::I8,
        }
    }

    /// The storage.
    pub fn weights(&self) -> Weights<'a> {
        self.w
    }

    /// The int8 values and the row scales, `None` for other element types.
    pub fn int8(&self) -> Option<(&'a [i8], &'a [f32])> {
        match self.w {
            Weights::I8 { q, scales } => Some((q, scales)),
            _ => None,
        }
    }
}

/// Which kernels a model runs with ([`crate::Model::with_kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kernels {
    /// The generic kernels with f32 activations: bit-identical on every target (the firmware
    /// tests compare against a host run of these).
    #[default]
    Reference,
    /// Host speed: int8 weights take int8 activations (dynamic scales per token and block of
    /// [`QT_BLOCK`] columns, exact i32 sums, [`matmul_i8_i8_token`]), and in std builds on
    /// x86-64 the AVX-512 (VNNI) or AVX2/FMA kernels when the CPU has them (detected at run
    /// time). On Arm with feature `arm-dsp` the exact int8 dots and matrix-vector products
    /// ([`dot_i8_i8_by`], [`matvec_i8_i8_by`]) run the DSP (SMLAD) kernels, the same bits as
    /// the generic ones. On wasm32 with `simd128` the int8 products (many token groups per
    /// packing of the weights), the fused dense int8 feed-forward, the quantization, the
    /// attention block kernels (dense and top-k) and GELU run the simd128 kernels (the same
    /// bits as the generic ones, GELU within a few ulps). Results differ from `Reference` by the activation rounding
    /// (int8) or the summation order (f32).
    Fast,
}

/// `Y = X W^T + b` by `kernels` (shapes as in [`matmul`]). With [`Kernels::Fast`] and int8
/// weights the activations are quantized to int8 in `scratch` ([`matmul_i8_i8_token`]'s
/// formula, the same bits on every target), which must hold one group of tokens:
/// [`q8_scratch_bytes`]`(w.cols(), n)` bytes (`/ 4` f32 words) give the passes the kernels are
/// tuned for, fewer bytes (down to one group, [`q8_group_words`]) more passes; with less, or
/// rows longer than [`Q8_MAX_COLS`], the f32-activation product runs. Otherwise `scratch` is
/// not used (it may be empty).
pub fn matmul_by(
    kernels: Kernels,
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    match (kernels, w.dtype()) {
        (Kernels::Fast, DType::I8)
            if w.cols() > 0
                && w.cols() <= Q8_MAX_COLS
                && scratch.len() >= q8_group_words(w.cols()) =>
        {
            matmul_fast_i8(w, x, n, bias, y, scratch)
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        (Kernels::Fast, DType::F32) => x86_avx512_matmul_f32(w, x, n, bias, y),
        _ => matmul(w, x, n, bias, y),
    }
}

/// The fast int8 product of [`matmul_by`]: passes of up to [`q8_groups`] groups of tokens
/// (as many as `scratch` holds), each quantized once ([`quantize_q8_by`]) and multiplied
/// ([`matmul_q8_by`]).
fn matmul_fast_i8(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    scratch: &mut [f32],
) {
    // wasm simd128: many token groups per pass, each weight row widened once for all of them.
    // Its working buffers are on the wasm stack (1 MiB by default), not in the plan.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        let _ = scratch;
        wasm_simd128_matmul_i8_i8_token(w, x, n, bias, y)
    }
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    {
        let (rows, cols) = (w.rows(), w.cols());
        let groups = q8_groups(cols, n).min(scratch.len() / q8_group_words(cols));
        let pass = groups * QT_GROUP;
        let mut i0 = 0;
        while i0 < n {
            let t = pass.min(n - i0);
            let xq = quantize_q8_by(Kernels::Fast, &x[i0 * cols..(i0 + t) * cols], cols, scratch);
            matmul_q8_by(
                Kernels::Fast,
                w,
                &xq,
                bias,
                &mut y[i0 * rows..(i0 + t) * rows],
            );
            i0 += t;
        }
    }
}

/// Int8 activations of some tokens, quantized once by [`quantize_q8_by`] into a scratch, in the
/// layout of the chosen kernels, for any number of products by [`matmul_q8_by`].
pub struct Q8Tokens<'s> {
    /// Tokens.
    n: usize,
    /// Columns per token.
    cols: usize,
    layout: Q8Layout<'s>,
}

enum Q8Layout<'s> {
    /// Row-major int8 rows and `[token][block]` scales ([`quantize_i8_token`]).
    Rows { q: &'s [i8], s: &'s [f32] },
    /// The packed groups of the x86-64 AVX-512 VNNI kernels.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    Packed { px: &'s [u32], sx: &'s [f32] },
}

impl Q8Tokens<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Columns per token.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Quantizes the `n = x.len() / cols` token rows of `x` to int8 by blocks of [`QT_BLOCK`]
/// columns ([`quantize_i8_token`]'s values) into `scratch`, which must hold `n.div_ceil(16)`
/// groups of [`q8_group_words`]`(cols)` f32 words (`cols >= 1`). [`Kernels::Fast`] lays them out
/// for the target's fast product (packed by groups of [`QT_GROUP`] tokens on x86-64 with
/// AVX-512 VNNI when `cols` is a multiple of 4), [`Kernels::Reference`] row by row.
pub fn quantize_q8_by<'s>(
    kernels: Kernels,
    x: &[f32],
    cols: usize,
    scratch: &'s mut [f32],
) -> Q8Tokens<'s> {
    let cols = cols.max(1);
    let n = x.len() / cols;
    let (nb, groups) = (qt_blocks(cols), n.div_ceil(QT_GROUP));
    debug_assert!(scratch.len() >= groups * q8_group_words(cols));
    let (qw, rest) = scratch.split_at_mut((QT_GROUP * groups * cols / 4).min(scratch.len()));
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if kernels == Kernels::Fast && x86_avx512::packs_q8(cols) {
        let px: &mut [u32] = bytemuck::cast_slice_mut(qw);
        let sx = &mut rest[..groups * QT_GROUP * nb];
        x86_avx512::quantize_pack_groups(&x[..n * cols], cols, px, sx);
        return Q8Tokens {
            n,
            cols,
            layout: Q8Layout::Packed { px, sx },
        };
    }
    let q: &mut [i8] = &mut bytemuck::cast_slice_mut(qw)[..n * cols];
    let s = &mut rest[..n * nb];
    for ((xt, qt), st) in x
        .chunks_exact(cols)
        .zip(q.chunks_exact_mut(cols))
        .zip(s.chunks_exact_mut(nb))
    {
        quantize_i8_token_by(kernels, xt, qt, st);
    }
    Q8Tokens {
        n,
        cols,
        layout: Q8Layout::Rows { q, s },
    }
}

/// `Y = Xq W^T + b` of the tokens `xq` ([`quantize_q8_by`]) and int8 weights `W` (`xq.cols()`
/// columns): [`matmul_q8_tokens`]'s bits for every choice of kernels. `y` is `xq.len() x
/// w.rows()`.
pub fn matmul_q8_by(
    kernels: Kernels,
    w: &Matrix<'_>,
    xq: &Q8Tokens<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    debug_assert_eq!(w.cols(), xq.cols);
    match xq.layout {
        Q8Layout::Rows { q, s } => matmul_q8_tokens_by(kernels, w, q, s, xq.n, bias, y),
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Q8Layout::Packed { px, sx } => x86_avx512::matmul_packed_groups(w, px, sx, xq.n, bias, y),
    }
}

/// [`matmul_q8_tokens`] by `kernels` (the bits never depend on the choice).
#[inline]
pub fn matmul_q8_tokens_by(
    kernels: Kernels,
    w: &Matrix<'_>,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    match kernels {
        // The exact block dots on SMLAD: the same i32s, so the same bits.
        #[cfg(all(target_arch = "arm", any(target_feature = "dsp", feature = "arm-dsp")))]
        Kernels::Fast => generic::matmul_q8_tokens_with(arm_dsp_dot_i8_i8, w, xq, xs, n, bias, y),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Kernels::Fast => wasm_simd128_matmul_q8_tokens(w, xq, xs, n, bias, y),
        _ => matmul_q8_tokens(w, xq, xs, n, bias, y),
    }
}

/// [`quantize_i8_token`] by `kernels` (the bits never depend on the choice, for finite
/// inputs).
#[inline]
pub fn quantize_i8_token_by(kernels: Kernels, x: &[f32], q: &mut [i8], s: &mut [f32]) {
    match kernels {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kernels::Fast => x86_avx512_quantize_i8_token(x, q, s),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Kernels::Fast => wasm_simd128_quantize_i8_token(x, q, s),
        _ => quantize_i8_token(x, q, s),
    }
}

/// [`accumulate_q8_tokens`] by `kernels` (the bits never depend on the choice).
#[inline]
pub fn accumulate_q8_tokens_by(
    kernels: Kernels,
    out: &mut [f32],
    q: &[i8],
    cols: usize,
    hq: &[i8],
    hs: &[f32],
    n: usize,
) {
    match kernels {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kernels::Fast => x86_avx512_accumulate_q8_tokens(out, q, cols, hq, hs, n),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        Kernels::Fast => wasm_simd128_accumulate_q8_tokens(out, q, cols, hq, hs, n),
        _ => accumulate_q8_tokens(out, q, cols, hq, hs, n),
    }
}

/// [`accumulate_f32_tokens`] by `kernels` (rounding depends on the choice).
#[inline]
pub fn accumulate_f32_tokens_by(
    kernels: Kernels,
    out: &mut [f32],
    w: &[f32],
    cols: usize,
    h: &[f32],
    n: usize,
) {
    match kernels {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kernels::Fast => x86_avx512_accumulate_f32_tokens(out, w, cols, h, n),
        _ => accumulate_f32_tokens(out, w, cols, h, n),
    }
}

/// Exact int8 dot product by `kernels` (as [`dot_i8_i8`]; the value never depends on the
/// choice).
#[inline]
pub fn dot_i8_i8_by(kernels: Kernels, a: &[i8], b: &[i8]) -> i32 {
    match kernels {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kernels::Fast => x86_avx2_dot_i8_i8(a, b),
        #[cfg(all(target_arch = "arm", any(target_feature = "dsp", feature = "arm-dsp")))]
        Kernels::Fast => arm_dsp_dot_i8_i8(a, b),
        _ => dot_i8_i8(a, b),
    }
}

/// `y[r] = dot_i8_i8(q[r * cols..][..cols], x)` for the `y.len()` rows of a row-major int8
/// matrix of `cols = x.len()` columns, by `kernels` (exact: the same values for every choice).
pub fn matvec_i8_i8_by(kernels: Kernels, q: &[i8], x: &[i8], y: &mut [i32]) {
    match kernels {
        #[cfg(all(target_arch = "arm", any(target_feature = "dsp", feature = "arm-dsp")))]
        Kernels::Fast => arm_dsp_matvec_i8_i8(q, x, y),
        _ => {
            let cols = x.len();
            debug_assert_eq!(q.len(), y.len() * cols);
            for (r, yr) in y.iter_mut().enumerate() {
                *yr = dot_i8_i8_by(kernels, &q[r * cols..(r + 1) * cols], x);
            }
        }
    }
}

/// `W[r] . x` with the row's scale applied, by `kernels` (f32 activations; as [`dot_row`]).
#[inline]
pub fn dot_row_by(kernels: Kernels, w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
    match (kernels, w.weights()) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        (Kernels::Fast, Weights::F32(d)) => {
            let c = w.cols();
            x86_avx2_dot_f32(&d[r * c..(r + 1) * c], x)
        }
        _ => dot_row(w, r, x),
    }
}

/// `y += a * W[r]` by `kernels` (as [`axpy_row`]; int8 rows bit-identical for every choice,
/// f32 rows with the fast kernels fused, within 1 ulp of `|a w|` per element).
#[inline]
pub fn axpy_row_by(kernels: Kernels, w: &Matrix<'_>, r: usize, a: f32, y: &mut [f32]) {
    match (kernels, w.weights()) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        (Kernels::Fast, Weights::F32(d)) => {
            let c = w.cols();
            x86_avx2_axpy_f32(y, a, &d[r * c..(r + 1) * c]);
        }
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        (Kernels::Fast, Weights::I8 { q, scales }) => {
            let c = w.cols();
            x86_avx2_axpy_i8(y, a * scales[r], &q[r * c..(r + 1) * c]);
        }
        _ => axpy_row(w, r, a, y),
    }
}

/// [`layer_norm`] by `kernels` (the fast kernel sums in another order, so the rounding
/// differs).
#[inline]
pub fn layer_norm_by(kernels: Kernels, x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    match kernels {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        Kernels::Fast => x86_avx512_layer_norm(x, gamma, beta, eps),
        _ => layer_norm(x, gamma, beta, eps),
    }
}

/// [`activate_fast`] over a slice, in place, by `kernels` (GELU vectorised with AVX2+FMA when
/// the CPU has them).
pub fn activate_slice_by(kernels: Kernels, act: crate::config::Activation, x: &mut [f32]) {
    match (kernels, act) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        (Kernels::Fast, crate::config::Activation::GeluErf) => x86_avx2_gelu_erf(x),
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        (Kernels::Fast, crate::config::Activation::GeluErf) => wasm_simd128_gelu_erf(x),
        (Kernels::Fast, _) => x.iter_mut().for_each(|v| *v = activate_fast(act, *v)),
        (Kernels::Reference, _) => activate_slice(act, x),
    }
}
