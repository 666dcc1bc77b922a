//! Int8-activation products: quantization of token rows by blocks of [`Q8_BLOCK`] columns,
//! exact i32 block dots, and the float epilogue every arch kernel shares.

use super::linear::tokens_fit;
use crate::kernels::blocks::{BLOCK, BlockType};
use crate::kernels::matrix::{Matrix, Weights};
use crate::kernels::q8::{Q8_BLOCK, Q8_GROUP, Q8_MAX_COLS, Q8Rows, q8_blocks};

/// The largest `|x|` of the values, 0 when there are none (NaN never wins a comparison, so
/// NaNs are passed over): the scale of [`quantize_i8`] and of its arch kernels.
pub(crate) fn abs_max<'a>(x: impl IntoIterator<Item = &'a f32>) -> f32 {
    x.into_iter().fold(0.0f32, |m, &v| {
        let a = if v < 0.0 { -v } else { v };
        if a > m { a } else { m }
    })
}

/// Symmetric int8 quantization of one activation row with its own (dynamic) scale:
/// `scale = max|x| / 127`, `q[i] = round(x[i] / scale)` (half away from zero), so
/// `x[i] ~ scale * q[i]`. Returns the scale; an all-zero row gives scale 0 and zeros.
/// `q.len() == x.len()`. Non-finite inputs give a non-finite scale (the output is then
/// meaningless, as in the f32 path).
pub fn quantize_i8(x: &[f32], q: &mut [i8]) -> f32 {
    debug_assert_eq!(x.len(), q.len());
    let max = abs_max(x);
    if max == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inv = 127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        let t = v * inv;
        // `as` saturates, and |t| <= 127 up to rounding, so this never wraps.
        *o = (if t < 0.0 { t - 0.5 } else { t + 0.5 }) as i8;
    }
    scale
}

/// Exact `sum a[i] * b[i]` of two int8 slices of equal length (elements) in i32. Exact (no
/// overflow) for `len <= 2^31 / 128^2 = 131072`, far above [`Q8_MAX_COLS`], so every arch
/// kernel must return the very same value.
pub fn dot_i8_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0i32, |s, (&p, &q)| s + p as i32 * q as i32)
}

/// [`quantize_i8`] of each block of [`Q8_BLOCK`] elements of one token row `x`, with its own
/// scale written to `s` ([`q8_blocks`] values). `q.len() == x.len()`.
pub fn quantize_i8_token(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    debug_assert_eq!(s.len(), q8_blocks(x.len()));
    for ((xb, qb), sb) in x.chunks(Q8_BLOCK).zip(q.chunks_mut(Q8_BLOCK)).zip(s) {
        *sb = quantize_i8(xb, qb);
    }
}

/// `Y = Xq W^T` (+ bias) for `n` int8 activation rows `xq` (`n * cols`) with scales `xs`
/// (`n * q8_blocks(cols)`, [`quantize_i8_token`]) and int8 weights `W` with row scales:
/// `Y[i][r] = (sum_b dot_i8_i8(W[r]_b, Xq[i]_b) as f32 * xs[i][b]) * scale[r] + bias[r]`, the
/// blocks `b` of [`Q8_BLOCK`] columns summed left to right from `+0.0` (multiply then add, no
/// FMA). The i32 dots are exact, so arch kernels give the same bits. `W` must be
/// [`Weights::I8`] or [`Weights::Blocks`] (see `matmul_q8_blocks` for their order),
/// `cols <= Q8_MAX_COLS`; shapes as in [`super::matmul`].
pub fn matmul_q8_tokens(w: &Matrix<'_>, x: Q8Rows<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    matmul_q8_tokens_with(dot_i8_i8, w, x, bias, y);
}

/// [`matmul_q8_tokens`] with the exact block dot `dot` (the generic [`dot_i8_i8`] or an arch
/// kernel with the same results).
#[inline(always)]
pub(crate) fn matmul_q8_tokens_with(
    dot: impl Fn(&[i8], &[i8]) -> i32,
    w: &Matrix<'_>,
    x: Q8Rows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let Q8Rows { q: xq, s: xs, n } = x;
    let (rows, cols) = (w.rows(), w.cols());
    let nb = q8_blocks(cols);
    debug_assert_eq!(xq.len(), n * cols);
    debug_assert_eq!(xs.len(), n * nb);
    debug_assert_eq!(y.len(), n * rows);
    let (q, scales) = match w.weights() {
        Weights::I8 { q, scales } => (q, scales),
        Weights::Blocks { ty, data } => {
            matmul_q8_blocks(ty, data, (rows, cols), x, bias, y);
            return;
        }
        _ => {
            debug_assert!(false, "matmul_q8_tokens needs int8 or block weights");
            return;
        }
    };
    for i in 0..n {
        let (xi, si) = (&xq[i * cols..(i + 1) * cols], &xs[i * nb..(i + 1) * nb]);
        for r in 0..rows {
            let wr = &q[r * cols..(r + 1) * cols];
            let mut v = 0.0f32;
            for ((wb, xb), &sb) in wr.chunks(Q8_BLOCK).zip(xi.chunks(Q8_BLOCK)).zip(si) {
                v += dot(wb, xb) as f32 * sb;
            }
            y[i * rows + r] = q8_token_out(v, scales[r], bias.map(|b| b[r]));
        }
    }
}

/// The block-weight case of [`matmul_q8_tokens`]: `Y[i][r]` sums over the weight blocks `b`
/// of row `r`, left to right from `+0.0`,
/// `(dot_i8_i8(q_b, xq_b) as f32 * xs) * d_b` and, for the kinds with a min,
/// `+ (sum(xq_b) as f32 * xs) * m_b` (two adds, in that order), where `q_b` are the block's
/// integers ([`BlockType::ints`]), `xq_b` the token's 32 int8 values under it and `xs` the
/// scale of the [`Q8_BLOCK`] activation block that holds it; then the bias. The integer sums
/// are exact, so an arch kernel that keeps this order per output gives the same bits.
fn matmul_q8_blocks(
    ty: BlockType,
    data: &[u8],
    (rows, cols): (usize, usize),
    x: Q8Rows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let Q8Rows { q: xq, s: xs, n } = x;
    let nb = q8_blocks(cols);
    let bb = ty.block_bytes();
    let rb = cols / BLOCK * bb;
    let mut qw = [0i8; BLOCK];
    for i in 0..n {
        let (xi, si) = (&xq[i * cols..(i + 1) * cols], &xs[i * nb..(i + 1) * nb]);
        for r in 0..rows {
            let row = &data[r * rb..(r + 1) * rb];
            let mut v = 0.0f32;
            for (b, (blk, xb)) in row.chunks_exact(bb).zip(xi.chunks_exact(BLOCK)).enumerate() {
                ty.ints(blk, &mut qw);
                let (d, m) = ty.scale_min(blk);
                let s = si[b * BLOCK / Q8_BLOCK];
                v += (dot_i8_i8(&qw, xb) as f32 * s) * d;
                if ty.has_min() {
                    let sum = xb.iter().fold(0i32, |a, &q| a + q as i32);
                    v += (sum as f32 * s) * m;
                }
            }
            y[i * rows + r] = q8_token_out(v, 1.0, bias.map(|b| b[r]));
        }
    }
}

/// The float epilogue of [`matmul_q8_tokens`], shared so that every kernel rounds alike.
#[inline(always)]
pub(crate) fn q8_token_out(v: f32, ws: f32, bias: Option<f32>) -> f32 {
    let v = v * ws;
    match bias {
        Some(b) => v + b,
        None => v,
    }
}

/// [`matmul_i8_i8_token`] with the quantization `quant` and the product of quantized tokens
/// `mm` (the generic [`quantize_i8_token`] and [`matmul_q8_tokens`] or arch kernels).
#[inline(always)]
pub(crate) fn matmul_i8_i8_token_with(
    quant: impl Fn(&[f32], &mut [i8], &mut [f32]),
    mm: impl Fn(&Matrix<'_>, Q8Rows<'_>, Option<&[f32]>, &mut [f32]),
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let nb = q8_blocks(cols);
    debug_assert!(tokens_fit(w, x, n, y));
    debug_assert!(cols <= Q8_MAX_COLS);
    let mut qx = [0i8; Q8_GROUP * Q8_MAX_COLS];
    let mut sx = [0.0f32; Q8_GROUP * Q8_MAX_COLS / Q8_BLOCK];
    let mut i0 = 0;
    while i0 < n {
        let g = Q8_GROUP.min(n - i0);
        for j in 0..g {
            let row = &x[(i0 + j) * cols..(i0 + j + 1) * cols];
            quant(
                row,
                &mut qx[j * cols..(j + 1) * cols],
                &mut sx[j * nb..(j + 1) * nb],
            );
        }
        let xg = Q8Rows {
            q: &qx[..g * cols],
            s: &sx[..g * nb],
            n: g,
        };
        mm(w, xg, bias, &mut y[i0 * rows..(i0 + g) * rows]);
        i0 += g;
    }
}

/// `Y = X W^T + b` with int8 weights and int8 activations quantized per token: each row of
/// `X` (`n` rows of `cols <= Q8_MAX_COLS` elements) gets one dynamic scale per [`Q8_BLOCK`]
/// columns ([`quantize_i8_token`]), every block dot product is an exact i32, then
/// [`matmul_q8_tokens`]'s float sum. `W` must be [`Weights::I8`]; shapes as in [`super::matmul`].
/// Stack: one group of [`Q8_MAX_COLS`] quantized tokens and its scales (68 KiB); the engine
/// runs the same product on a planned scratch instead ([`crate::kernels::Kernels::matmul`]).
///
/// Error against [`super::matmul`]: the activation rounding, at most half a step of each block's
/// scale (`max|x_block| / 254`) per element.
pub fn matmul_i8_i8_token(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    matmul_i8_i8_token_with(quantize_i8_token, matmul_q8_tokens, w, x, n, bias, y);
}

/// Columns [`accumulate_q8_tokens`] sums at a time (an i32 accumulator of 512 bytes on the
/// stack).
const ACC_COLS: usize = 128;

/// `out[t][c] += (sum_j h.q[t][j] * q[j][c]) as f32 * h.s[t]` for the `h.n` tokens of `h`: `n`
/// int8 rows of `k <= Q8_BLOCK` values with one scale each ([`quantize_i8`]), `q` is `k` rows of
/// `cols` int8 values (a block of rows of a transposed weight matrix such as `down_t`), `out`
/// is `n x cols` (`cols <= Q8_MAX_COLS`). The sums are exact i32 (for `k <= 131072`), then one
/// multiply and one add per element, so arch kernels give the same bits. The columns go
/// `ACC_COLS` (128) at a time (the sums are exact, so the bits do not depend on it).
pub fn accumulate_q8_tokens(out: &mut [f32], q: &[i8], cols: usize, h: Q8Rows<'_>) {
    let Q8Rows { q: hq, s: hs, n } = h;
    debug_assert!(cols <= Q8_MAX_COLS);
    debug_assert_eq!(out.len(), n * cols);
    debug_assert_eq!(hs.len(), n);
    if n == 0 || cols == 0 {
        return;
    }
    let k = hq.len() / n;
    debug_assert_eq!(q.len(), k * cols);
    let mut acc = [0i32; ACC_COLS];
    for t in 0..n {
        let ht = &hq[t * k..(t + 1) * k];
        let ot = &mut out[t * cols..(t + 1) * cols];
        for (c0, oc) in (0..cols).step_by(ACC_COLS).zip(ot.chunks_mut(ACC_COLS)) {
            let acc = &mut acc[..oc.len()];
            acc.fill(0);
            for (&hb, row) in ht.iter().zip(q.chunks_exact(cols)) {
                if hb != 0 {
                    for (a, &v) in acc.iter_mut().zip(&row[c0..c0 + oc.len()]) {
                        *a += hb as i32 * v as i32;
                    }
                }
            }
            for (o, &a) in oc.iter_mut().zip(acc.iter()) {
                *o += a as f32 * hs[t];
            }
        }
    }
}
