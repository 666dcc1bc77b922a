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
//! total once; a bias is added last.
//!
//! # Preconditions
//! These are internal hot paths: shapes are checked with `debug_assert!` only. A wrong length
//! in a release build gives a wrong result or a slice-index panic, never an out-of-bounds
//! read. Callers (the engine) validate shapes once, up front, and return typed errors.

use super::{Matrix, Weights};
use crate::config::Activation;
use crate::math;
use half::f16;

/// Columns per tile of the fixed summation order (elements). `matmul` converts one tile of a
/// weight row at a time into a stack buffer of this many f32 (512 bytes).
pub const TILE: usize = 128;

/// Sum of `a[i] * b[i]` over one tile (`a.len() == b.len() <= TILE`), in the documented order.
#[inline(always)]
fn dot_tile(a: &[f32], b: &[f32]) -> f32 {
    // Same order, same bits, one f32x4 per 4 columns.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return super::wasm_simd128::dot_tile(a, b);
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    dot_tile_conv(a, b, |v| v)
}

/// [`dot_tile`] converting the `a` values to f32 on the fly (f16 or i8 weights; exact).
#[inline(always)]
fn dot_tile_conv<T: Copy>(a: &[T], b: &[f32], conv: impl Fn(T) -> f32) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; 4];
    let (a4, a_tail) = a.split_at(a.len() & !3);
    let (b4, b_tail) = b.split_at(a4.len());
    for (wa, wb) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        acc[0] += conv(wa[0]) * wb[0];
        acc[1] += conv(wa[1]) * wb[1];
        acc[2] += conv(wa[2]) * wb[2];
        acc[3] += conv(wa[3]) * wb[3];
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (&p, &q) in a_tail.iter().zip(b_tail) {
        s += conv(p) * q;
    }
    s
}

/// Unscaled dot of a weight row (any element type) with `x`, in the documented order.
#[inline(always)]
fn dot_conv<T: Copy>(w: &[T], x: &[f32], conv: impl Fn(T) -> f32 + Copy) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    let mut total = 0.0f32;
    for (wt, xt) in w.chunks(TILE).zip(x.chunks(TILE)) {
        total += dot_tile_conv(wt, xt, conv);
    }
    total
}

#[inline(always)]
fn f16_to_f32(v: f16) -> f32 {
    v.to_f32()
}

#[inline(always)]
fn i8_to_f32(v: i8) -> f32 {
    v as f32
}

/// `a . b` of two f32 slices of equal length (elements), in the documented order (so it equals
/// [`dot_row`] of an f32 matrix bit for bit).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut total = 0.0f32;
    for (at, bt) in a.chunks(TILE).zip(b.chunks(TILE)) {
        total += dot_tile(at, bt);
    }
    total
}

/// `W[r] . x` with the row's scale applied. `x.len() == cols`, `r < rows`.
pub fn dot_row(w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
    debug_assert!(r < w.rows());
    debug_assert_eq!(x.len(), w.cols());
    let c = w.cols();
    match w.weights() {
        Weights::F32(d) => dot(&d[r * c..(r + 1) * c], x),
        Weights::F16(d) => dot_conv(&d[r * c..(r + 1) * c], x, f16_to_f32),
        Weights::I8 { q, scales } => dot_conv(&q[r * c..(r + 1) * c], x, i8_to_f32) * scales[r],
    }
}

/// `y += a * W[r]` elementwise (int8: `y += (a * scale) * q`). `y.len() == cols`, `r < rows`.
pub fn axpy_row(w: &Matrix<'_>, r: usize, a: f32, y: &mut [f32]) {
    debug_assert!(r < w.rows());
    debug_assert_eq!(y.len(), w.cols());
    let c = w.cols();
    match w.weights() {
        Weights::F32(d) => axpy(y, a, &d[r * c..(r + 1) * c]),
        Weights::F16(d) => {
            for (yi, &wi) in y.iter_mut().zip(&d[r * c..(r + 1) * c]) {
                *yi += a * wi.to_f32();
            }
        }
        Weights::I8 { q, scales } => {
            let s = a * scales[r];
            for (yi, &qi) in y.iter_mut().zip(&q[r * c..(r + 1) * c]) {
                *yi += s * qi as f32;
            }
        }
    }
}

/// Row `r` of `W` as f32 (embedding lookup; int8: `scale * q`). `out.len() == cols`.
pub fn row_to_f32(w: &Matrix<'_>, r: usize, out: &mut [f32]) {
    debug_assert!(r < w.rows());
    debug_assert_eq!(out.len(), w.cols());
    let c = w.cols();
    match w.weights() {
        Weights::F32(d) => out.copy_from_slice(&d[r * c..(r + 1) * c]),
        Weights::F16(d) => {
            for (o, &v) in out.iter_mut().zip(&d[r * c..(r + 1) * c]) {
                *o = v.to_f32();
            }
        }
        Weights::I8 { q, scales } => {
            let s = scales[r];
            for (o, &v) in out.iter_mut().zip(&q[r * c..(r + 1) * c]) {
                *o = s * v as f32;
            }
        }
    }
}

/// `y = W x + b`: `x.len() == cols`, `y.len() == rows`, `bias.len() == rows` if given.
/// Each `y[r]` equals `dot_row(w, r, x) + bias[r]` bit for bit.
pub fn matvec(w: &Matrix<'_>, x: &[f32], bias: Option<&[f32]>, y: &mut [f32]) {
    matmul(w, x, 1, bias, y);
}

/// `Y = X W^T + b` for `n` rows of `X` (`x.len() == n * cols`) into `Y` (`y.len() == n *
/// rows`, row-major), `bias.len() == rows` if given.
///
/// Weight-stationary: each weight row is read (and, for f16 and int8, converted to f32) once,
/// one [`TILE`] at a time into a stack buffer, and used for all `n` inputs; the partial sums
/// live in `y`. The summation order is the documented one, so each `Y[i][r]` equals
/// `dot_row(w, r, X[i]) + bias[r]` bit for bit, whatever `n` is.
pub fn matmul(w: &Matrix<'_>, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let (rows, cols) = (w.rows(), w.cols());
    debug_assert_eq!(x.len(), n * cols);
    debug_assert_eq!(y.len(), n * rows);
    debug_assert!(bias.is_none_or(|b| b.len() == rows));
    for v in y.iter_mut() {
        *v = 0.0;
    }
    let mut buf = [0.0f32; TILE];
    for r in 0..rows {
        let mut t0 = 0;
        while t0 < cols {
            let len = TILE.min(cols - t0);
            let (a, b) = (r * cols + t0, r * cols + t0 + len);
            let tile: &[f32] = match w.weights() {
                Weights::F32(d) => &d[a..b],
                Weights::F16(d) => {
                    for (o, &v) in buf.iter_mut().zip(&d[a..b]) {
                        *o = v.to_f32();
                    }
                    &buf[..len]
                }
                Weights::I8 { q, .. } => {
                    for (o, &v) in buf.iter_mut().zip(&q[a..b]) {
                        *o = v as f32;
                    }
                    &buf[..len]
                }
            };
            for i in 0..n {
                let xi = &x[i * cols + t0..i * cols + t0 + len];
                y[i * rows + r] += dot_tile(tile, xi);
            }
            t0 += len;
        }
        let scale = match w.weights() {
            Weights::I8 { scales, .. } => Some(scales[r]),
            _ => None,
        };
        if scale.is_some() || bias.is_some() {
            for i in 0..n {
                let v = &mut y[i * rows + r];
                if let Some(s) = scale {
                    *v *= s;
                }
                if let Some(b) = bias {
                    *v += b[r];
                }
            }
        }
    }
}

/// Longest row (elements) the int8-activation kernels quantize; longer rows take the
/// f32-activation path ([`matmul`]). It bounds the working buffers: one group of
/// [`QT_GROUP`] quantized tokens is at most `QT_GROUP * Q8_MAX_COLS` bytes (64 KiB), the
/// most [`q8_groups`] puts in one pass.
pub const Q8_MAX_COLS: usize = 4096;

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

/// Tokens the per-token int8 kernels quantize (and arch kernels pack) at a time: one AVX-512
/// register of 16 lanes.
pub const QT_GROUP: usize = 16;

/// Columns per activation scale of [`matmul_i8_i8_token`]: each token's row is quantized in
/// blocks of this many elements, each with its own scale (the last block shorter). A multiple
/// of 4.
pub const QT_BLOCK: usize = 64;

/// Scales per token of a `cols`-wide row in [`matmul_q8_tokens`] (`cols.div_ceil(QT_BLOCK)`).
pub const fn qt_blocks(cols: usize) -> usize {
    cols.div_ceil(QT_BLOCK)
}

/// Most groups of [`QT_GROUP`] tokens one pass of the int8-activation product quantizes before
/// it multiplies (the x86-64 kernels take each weight block's sums once for all of them).
pub const Q8_MAX_GROUPS: usize = 16;

/// Groups of [`QT_GROUP`] tokens one pass of the int8-activation product of `n` tokens of
/// `cols` columns quantizes at once: as many as the tokens fill (`n.div_ceil(QT_GROUP)`), at
/// most what 64 KiB of activations (`Q8_MAX_COLS / cols` groups) and 8 KiB of scales
/// (`128 / qt_blocks(cols)` groups) hold, at most [`Q8_MAX_GROUPS`], at least one. 0 when
/// `n == 0`, `cols == 0` or `cols > Q8_MAX_COLS` (those rows take the f32-activation path).
pub const fn q8_groups(cols: usize, n: usize) -> usize {
    if n == 0 || cols == 0 || cols > Q8_MAX_COLS {
        return 0;
    }
    let need = n.div_ceil(QT_GROUP);
    let mut fit = Q8_MAX_COLS / cols;
    let by_scales = 128 / qt_blocks(cols);
    if by_scales < fit {
        fit = by_scales;
    }
    if fit > Q8_MAX_GROUPS {
        fit = Q8_MAX_GROUPS;
    }
    if fit == 0 {
        fit = 1;
    }
    if need < fit { need } else { fit }
}

/// f32 words of one group of [`QT_GROUP`] quantized tokens of `cols` columns in an
/// int8-activation scratch: `QT_GROUP * cols` int8 values and `QT_GROUP * qt_blocks(cols)` f32
/// scales, `4 * cols + 16 * qt_blocks(cols)` words.
pub const fn q8_group_words(cols: usize) -> usize {
    QT_GROUP * cols / 4 + QT_GROUP * qt_blocks(cols)
}

/// Bytes of the int8-activation scratch of a product of up to `n` tokens of `cols` columns
/// (what [`crate::kernels::matmul_by`] with [`crate::kernels::Kernels::Fast`] and int8 weights
/// needs): [`q8_groups`]`(cols, n)` groups of `16 * cols + 64 * qt_blocks(cols)` bytes, the int8
/// activations of all groups first, then their scales. Every group has [`QT_GROUP`] token
/// slots, a short last one included (the x86-64 kernels pack whole groups). A multiple of 16.
pub const fn q8_scratch_bytes(cols: usize, n: usize) -> usize {
    4 * q8_groups(cols, n) * q8_group_words(cols)
}

/// [`quantize_i8`] of each block of [`QT_BLOCK`] elements of one token row `x`, with its own
/// scale written to `s` ([`qt_blocks`] values). `q.len() == x.len()`.
pub fn quantize_i8_token(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    debug_assert_eq!(s.len(), qt_blocks(x.len()));
    for ((xb, qb), sb) in x.chunks(QT_BLOCK).zip(q.chunks_mut(QT_BLOCK)).zip(s) {
        *sb = quantize_i8(xb, qb);
    }
}

/// `Y = Xq W^T` (+ bias) for `n` int8 activation rows `xq` (`n * cols`) with scales `xs`
/// (`n * qt_blocks(cols)`, [`quantize_i8_token`]) and int8 weights `W` with row scales:
/// `Y[i][r] = (sum_b dot_i8_i8(W[r]_b, Xq[i]_b) as f32 * xs[i][b]) * scale[r] + bias[r]`, the
/// blocks `b` of [`QT_BLOCK`] columns summed left to right from `+0.0` (multiply then add, no
/// FMA). The i32 dots are exact, so arch kernels give the same bits. `W` must be
/// [`Weights::I8`], `cols <= Q8_MAX_COLS`; shapes as in [`matmul`].
pub fn matmul_q8_tokens(
    w: &Matrix<'_>,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    matmul_q8_tokens_with(dot_i8_i8, w, xq, xs, n, bias, y);
}

/// [`matmul_q8_tokens`] with the exact block dot `dot` (the generic [`dot_i8_i8`] or an arch
/// kernel with the same results).
#[inline(always)]
pub(crate) fn matmul_q8_tokens_with(
    dot: impl Fn(&[i8], &[i8]) -> i32,
    w: &Matrix<'_>,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let nb = qt_blocks(cols);
    debug_assert_eq!(xq.len(), n * cols);
    debug_assert_eq!(xs.len(), n * nb);
    debug_assert_eq!(y.len(), n * rows);
    let Weights::I8 { q, scales } = w.weights() else {
        debug_assert!(false, "matmul_q8_tokens needs int8 weights");
        return;
    };
    for i in 0..n {
        let (xi, si) = (&xq[i * cols..(i + 1) * cols], &xs[i * nb..(i + 1) * nb]);
        for r in 0..rows {
            let wr = &q[r * cols..(r + 1) * cols];
            let mut v = 0.0f32;
            for ((wb, xb), &sb) in wr.chunks(QT_BLOCK).zip(xi.chunks(QT_BLOCK)).zip(si) {
                v += dot(wb, xb) as f32 * sb;
            }
            y[i * rows + r] = q8_token_out(v, scales[r], bias.map(|b| b[r]));
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
    mm: impl Fn(&Matrix<'_>, &[i8], &[f32], usize, Option<&[f32]>, &mut [f32]),
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let nb = qt_blocks(cols);
    debug_assert_eq!(x.len(), n * cols);
    debug_assert_eq!(y.len(), n * rows);
    debug_assert!(cols <= Q8_MAX_COLS);
    let mut qx = [0i8; QT_GROUP * Q8_MAX_COLS];
    let mut sx = [0.0f32; QT_GROUP * Q8_MAX_COLS / QT_BLOCK];
    let mut i0 = 0;
    while i0 < n {
        let g = QT_GROUP.min(n - i0);
        for j in 0..g {
            let row = &x[(i0 + j) * cols..(i0 + j + 1) * cols];
            quant(
                row,
                &mut qx[j * cols..(j + 1) * cols],
                &mut sx[j * nb..(j + 1) * nb],
            );
        }
        mm(
            w,
            &qx[..g * cols],
            &sx[..g * nb],
            g,
            bias,
            &mut y[i0 * rows..(i0 + g) * rows],
        );
        i0 += g;
    }
}

/// `Y = X W^T + b` with int8 weights and int8 activations quantized per token: each row of
/// `X` (`n` rows of `cols <= Q8_MAX_COLS` elements) gets one dynamic scale per [`QT_BLOCK`]
/// columns ([`quantize_i8_token`]), every block dot product is an exact i32, then
/// [`matmul_q8_tokens`]'s float sum. `W` must be [`Weights::I8`]; shapes as in [`matmul`].
/// Stack: one group of [`Q8_MAX_COLS`] quantized tokens and its scales (68 KiB); the engine
/// runs the same product on a planned scratch instead ([`crate::kernels::matmul_by`]).
///
/// Error against [`matmul`]: the activation rounding, at most half a step of each block's
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

/// `out[t][c] += (sum_j hq[t][j] * q[j][c]) as f32 * hs[t]` for `n` tokens: `hq` holds `n`
/// int8 rows of `k` values with one scale each (`hs`, [`quantize_i8`]), `q` is `k` rows of
/// `cols` int8 values (a block of rows of a transposed weight matrix such as `down_t`), `out`
/// is `n x cols` (`cols <= Q8_MAX_COLS`). The sums are exact i32 (for `k <= 131072`), then one
/// multiply and one add per element, so arch kernels give the same bits. The columns go
/// `ACC_COLS` (128) at a time (the sums are exact, so the bits do not depend on it).
pub fn accumulate_q8_tokens(
    out: &mut [f32],
    q: &[i8],
    cols: usize,
    hq: &[i8],
    hs: &[f32],
    n: usize,
) {
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

/// `out[t][c] += sum_j h[t][j] * w[j][c]` for `n` tokens: `h` holds `n` rows of `k` f32,
/// `w` is `k` rows of `cols` f32 (a block of rows of a transposed weight matrix such as
/// `down_t`), `out` is `n x cols`. Each token's sum is taken over `j` in order into `out`
/// directly (plain multiply and add, as [`axpy`]).
pub fn accumulate_f32_tokens(out: &mut [f32], w: &[f32], cols: usize, h: &[f32], n: usize) {
    debug_assert_eq!(out.len(), n * cols);
    if n == 0 {
        return;
    }
    let k = h.len() / n;
    debug_assert_eq!(w.len(), k * cols);
    for t in 0..n {
        let ot = &mut out[t * cols..(t + 1) * cols];
        for (&hj, wr) in h[t * k..(t + 1) * k]
            .iter()
            .zip(w.chunks_exact(cols.max(1)))
        {
            axpy(ot, hj, wr);
        }
    }
}

/// `y += a * x` elementwise; `x.len() == y.len()`.
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// `y += x` elementwise (residual connections); `x.len() == y.len()`.
pub fn add_in_place(y: &mut [f32], x: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += xi;
    }
}

/// `y *= x` elementwise (the gate of a gated FFN); `x.len() == y.len()`.
pub fn mul_in_place(y: &mut [f32], x: &[f32]) {
    debug_assert_eq!(x.len(), y.len());
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi *= xi;
    }
}

/// `x *= s` elementwise.
pub fn scale(x: &mut [f32], s: f32) {
    for v in x.iter_mut() {
        *v *= s;
    }
}

/// `sum_i f(x[i])` in the documented dot-product order.
#[inline(always)]
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32 + Copy) -> f32 {
    let mut total = 0.0f32;
    for t in x.chunks(TILE) {
        let mut acc = [0.0f32; 4];
        let (t4, tail) = t.split_at(t.len() & !3);
        for c in t4.chunks_exact(4) {
            acc[0] += f(c[0]);
            acc[1] += f(c[1]);
            acc[2] += f(c[2]);
            acc[3] += f(c[3]);
        }
        let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for &v in tail {
            s += f(v);
        }
        total += s;
    }
    total
}

/// LayerNorm in place over one row `x` (`n` elements):
/// `(x - mean) / sqrt(var + eps) * gamma + beta`, with the biased variance, all in f32.
/// `gamma.len() == beta.len() == x.len()`. An empty row is left as is.
///
/// Corrected two-pass algorithm (Chan, Golub & LeVeque): pass 1 takes the mean `m`; pass 2
/// sums `d = x - m` and `d^2`, whose mean `c = sum(d) / n` is the rounding error of `m`; the
/// output uses `(d - c)` and `var = mean(d^2) - c^2`. A large common offset (say 1000 + noise)
/// thus neither cancels catastrophically in the variance nor leaves the f32 rounding of the
/// mean in every output. Sums use the documented dot-product order.
pub fn layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    debug_assert_eq!(gamma.len(), x.len());
    debug_assert_eq!(beta.len(), x.len());
    if x.is_empty() {
        return;
    }
    let inv_n = 1.0 / x.len() as f32;
    let m = sum_map(x, |v| v) * inv_n;
    let c = sum_map(x, |v| v - m) * inv_n;
    let var = sum_map(x, |v| (v - m) * (v - m)) * inv_n - c * c;
    // Rounding can push a near-zero variance below 0.
    let var = if var > 0.0 { var } else { 0.0 };
    let inv = 1.0 / math::sqrt(var + eps);
    for ((v, &g), &b) in x.iter_mut().zip(gamma).zip(beta) {
        *v = ((*v - m) - c) * inv * g + b;
    }
}

/// RMSNorm in place over one row `x` (`n` elements): `x / sqrt(mean(x^2) + eps) * gamma`.
/// `gamma.len() == x.len()`. An empty row is left as is.
pub fn rms_norm(x: &mut [f32], gamma: &[f32], eps: f32) {
    debug_assert_eq!(gamma.len(), x.len());
    if x.is_empty() {
        return;
    }
    let ms = sum_map(x, |v| v * v) / x.len() as f32;
    let inv = 1.0 / math::sqrt(ms + eps);
    for (v, &g) in x.iter_mut().zip(gamma) {
        *v = *v * inv * g;
    }
}

/// `sqrt(2 / pi)`, the GELU-tanh constant.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// The activation applied to one value:
/// - `Relu`: `max(0, x)`;
/// - `GeluErf`: `0.5 x (1 + erf(x / sqrt 2))`;
/// - `GeluTanh`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`;
/// - `Silu`: `x / (1 + e^-x)`.
///
/// Accuracy follows [`math`]: exact for `Relu`, otherwise within the `erf`/`tanh`/`exp` error
/// times `|x| / 2` (micromath build) or a few ulp (std build).
#[inline]
pub fn activate(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Relu => {
            if x > 0.0 {
                x
            } else {
                0.0
            }
        }
        Activation::GeluErf => 0.5 * x * (1.0 + math::erf(x * core::f32::consts::FRAC_1_SQRT_2)),
        Activation::GeluTanh => {
            let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
            0.5 * x * (1.0 + math::tanh(u))
        }
        // x * sigmoid(x); for very negative x, e^-x overflows to +inf and the result is -0.0.
        Activation::Silu => x / (1.0 + math::exp(-x)),
    }
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26: `1 - t (a1 + t (a2 + ... + t a5)) e^(-x^2)`,
/// `t = 1 / (1 + p |x|)`, odd in `x`. Absolute error at most 1.5e-7 plus the f32 rounding
/// and the error of [`math::exp`]; one division and one `exp`, where the reference `erf` costs
/// several times more. Used by the fast kernels ([`activate_fast`]).
#[inline]
pub fn erf_fast(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = if x < 0.0 { -x } else { x };
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * math::exp(-ax * ax);
    if x < 0.0 { -y } else { y }
}

/// [`activate`] for the fast kernels: `GeluErf` through [`erf_fast`] (absolute difference
/// to [`activate`] at most `|x| * 1e-7` plus rounding), every other activation as there.
#[inline]
pub fn activate_fast(act: Activation, x: f32) -> f32 {
    match act {
        Activation::GeluErf => 0.5 * x * (1.0 + erf_fast(x * core::f32::consts::FRAC_1_SQRT_2)),
        _ => activate(act, x),
    }
}

/// [`activate`] over a slice, in place.
pub fn activate_slice(act: Activation, x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = activate(act, *v);
    }
}

/// Softmax in place over `x`: `e^(x_i - max) / sum_j e^(x_j - max)`, the sum taken left to
/// right. `-inf` entries (masked) become exactly 0.
///
/// Edge cases (documented, not NaN garbage): an empty slice is left empty; a slice whose
/// entries are all `-inf` (every key masked) becomes all zeros, so a weighted sum over it
/// yields zeros. A NaN or `+inf` entry makes the whole output NaN.
pub fn softmax(x: &mut [f32]) {
    let max = x
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    if max == f32::NEG_INFINITY && x.iter().all(|&v| v == f32::NEG_INFINITY) {
        for v in x.iter_mut() {
            *v = 0.0;
        }
        return;
    }
    let mut total = 0.0f32;
    for v in x.iter_mut() {
        *v = math::exp(*v - max);
        total += *v;
    }
    let inv = 1.0 / total;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{Matrix, Weights};

    /// Pseudo-random values of widely varying magnitude, so that a change of summation order
    /// changes the rounded result.
    fn values(n: usize, seed: u32) -> [f32; 400] {
        let mut out = [0.0; 400];
        let mut s = seed;
        for v in out.iter_mut().take(n) {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let mag = [1e-3, 1.0, 1e3, 1e6][(s >> 30) as usize];
            *v = ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * mag;
        }
        out
    }

    /// The order stated in the module doc, written out longhand.
    fn documented_dot(a: &[f32], b: &[f32]) -> f32 {
        let mut total = 0.0f32;
        let mut start = 0;
        while start < a.len() {
            let end = (start + TILE).min(a.len());
            let whole = start + (end - start) / 4 * 4;
            let mut lanes = [0.0f32; 4];
            let mut i = start;
            while i < whole {
                lanes[(i - start) % 4] += a[i] * b[i];
                i += 1;
            }
            let mut s = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
            while i < end {
                s += a[i] * b[i];
                i += 1;
            }
            total += s;
            start = end;
        }
        total
    }

    #[test]
    fn summation_order_is_the_documented_one() {
        let mut order_mattered = false;
        for n in [0, 1, 3, 4, 5, 127, 128, 129, 131, 256, 300, 400] {
            let (a, b) = (values(n, n as u32), values(n, 7 + n as u32));
            let (a, b) = (&a[..n], &b[..n]);
            let want = documented_dot(a, b);
            assert_eq!(dot(a, b).to_bits(), want.to_bits(), "dot, n = {n}");
            let m = Matrix::new(1, n, Weights::F32(a)).unwrap();
            assert_eq!(
                dot_row(&m, 0, b).to_bits(),
                want.to_bits(),
                "dot_row, n = {n}"
            );
            let mut y = [0.0f32];
            matvec(&m, b, None, &mut y);
            assert_eq!(y[0].to_bits(), want.to_bits(), "matvec, n = {n}");
            let plain = a.iter().zip(b).fold(0.0f32, |s, (p, q)| s + p * q);
            order_mattered |= plain.to_bits() != want.to_bits();
        }
        // Otherwise the test above could not tell orders apart.
        assert!(order_mattered);
    }

    #[test]
    fn int8_scale_is_applied_once_after_the_sum() {
        let q: [i8; 6] = [127, -3, 5, 100, -128, 1];
        let x = [0.1f32, 2.0, -3.0, 0.25, 0.5, 1e3];
        let scales = [0.013f32];
        let m = Matrix::new(
            1,
            6,
            Weights::I8 {
                q: &q,
                scales: &scales,
            },
        )
        .unwrap();
        let qf = q.map(|v| v as f32);
        let want = documented_dot(&qf, &x) * 0.013;
        assert_eq!(dot_row(&m, 0, &x).to_bits(), want.to_bits());
    }
}
