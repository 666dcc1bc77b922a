//! Products with f32 activations (f32, f16 and int8 weights) in the summation order of the
//! [`generic`](super) module doc, and the elementwise f32 helpers.
//!
//! The f32 products are generic over the tile dot ([`TileDot`]): [`ScalarTile`] here, the
//! `simd128` one on wasm (the same bits), picked by the dispatch in `kernels`.

use crate::kernels::blocks::{BLOCK, BlockType};
use crate::kernels::matrix::{Matrix, Weights};
use half::f16;

/// Columns per tile of the fixed summation order (elements). `matmul` converts one tile of a
/// weight row at a time into a stack buffer of this many f32 (512 bytes).
pub const TILE: usize = 128;

/// The sum of `a[i] * b[i]` over one tile (`a.len() == b.len() <= TILE`) in the documented
/// order: every implementation gives the same bits.
pub trait TileDot {
    /// The tile's sum.
    fn dot_tile(a: &[f32], b: &[f32]) -> f32;
}

/// The plain loop of the documented order (4 scalar accumulators).
pub struct ScalarTile;

impl TileDot for ScalarTile {
    #[inline(always)]
    fn dot_tile(a: &[f32], b: &[f32]) -> f32 {
        dot_tile_conv(a, b, |v| v)
    }
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
    dot_with::<ScalarTile>(a, b)
}

/// [`dot`] with the tile dot `D`.
#[inline]
pub fn dot_with<D: TileDot>(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut total = 0.0f32;
    for (at, bt) in a.chunks(TILE).zip(b.chunks(TILE)) {
        total += D::dot_tile(at, bt);
    }
    total
}

/// `W[r] . x` with the row's scale applied. `x.len() == cols`, `r < rows`.
pub fn dot_row(w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
    dot_row_with::<ScalarTile>(w, r, x)
}

/// [`dot_row`] with the tile dot `D` (f32 rows).
#[inline]
pub fn dot_row_with<D: TileDot>(w: &Matrix<'_>, r: usize, x: &[f32]) -> f32 {
    debug_assert!(r < w.rows());
    debug_assert_eq!(x.len(), w.cols());
    let c = w.cols();
    match w.weights() {
        Weights::F32(d) => dot_with::<D>(&d[r * c..(r + 1) * c], x),
        Weights::F16(d) => dot_conv(&d[r * c..(r + 1) * c], x, f16_to_f32),
        Weights::I8 { q, scales } => dot_conv(&q[r * c..(r + 1) * c], x, i8_to_f32) * scales[r],
        Weights::Blocks { ty, data } => {
            let rb = c / BLOCK * ty.block_bytes();
            let row = &data[r * rb..(r + 1) * rb];
            let mut buf = [0.0f32; TILE];
            let mut total = 0.0f32;
            for (t, xt) in x.chunks(TILE).enumerate() {
                let tile = dequantize_tile(ty, row, t * TILE, xt.len(), &mut buf);
                total += D::dot_tile(tile, xt);
            }
            total
        }
    }
}

/// Columns `c0..c0 + len` of a row of blocks dequantized into `buf` (`c0` and `len` whole
/// blocks, `len <= TILE`): the tile the f32 order multiplies.
#[inline(always)]
fn dequantize_tile<'b>(
    ty: BlockType,
    row: &[u8],
    c0: usize,
    len: usize,
    buf: &'b mut [f32; TILE],
) -> &'b [f32] {
    let bb = ty.block_bytes();
    let first = c0 / BLOCK;
    for (i, out) in buf[..len].chunks_exact_mut(BLOCK).enumerate() {
        let b = first + i;
        ty.dequantize(&row[b * bb..(b + 1) * bb], out);
    }
    &buf[..len]
}

/// The blocks of row `r` of a block matrix with `cols` columns.
#[inline(always)]
fn block_row(ty: BlockType, data: &[u8], cols: usize, r: usize) -> &[u8] {
    let rb = cols / BLOCK * ty.block_bytes();
    &data[r * rb..(r + 1) * rb]
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
        Weights::Blocks { ty, data } => {
            let bb = ty.block_bytes();
            let mut buf = [0.0f32; BLOCK];
            for (yb, blk) in y
                .chunks_exact_mut(BLOCK)
                .zip(block_row(ty, data, c, r).chunks_exact(bb))
            {
                ty.dequantize(blk, &mut buf);
                axpy(yb, a, &buf);
            }
        }
    }
}

/// `y[r] += a * W[r][j]` for every row `r` (`y.len() == rows`, `j < cols`): column `j` of `W`
/// added with weight `a`, element by element in row order. For a matrix `W` this equals
/// [`axpy_row`] of row `j` of `W^T` bit for bit (the same products, the same sums), so a
/// down projection kept in ggml's `[d_model, d_ff]` layout adds a unit exactly as its
/// transpose would.
pub fn axpy_col(w: &Matrix<'_>, j: usize, a: f32, y: &mut [f32]) {
    debug_assert!(j < w.cols());
    debug_assert_eq!(y.len(), w.rows());
    let c = w.cols();
    match w.weights() {
        Weights::F32(d) => {
            for (r, yr) in y.iter_mut().enumerate() {
                *yr += a * d[r * c + j];
            }
        }
        Weights::F16(d) => {
            for (r, yr) in y.iter_mut().enumerate() {
                *yr += a * d[r * c + j].to_f32();
            }
        }
        Weights::I8 { q, scales } => {
            for (r, yr) in y.iter_mut().enumerate() {
                *yr += (a * scales[r]) * q[r * c + j] as f32;
            }
        }
        Weights::Blocks { ty, data } => {
            let (bb, b, jj) = (ty.block_bytes(), j / BLOCK, j % BLOCK);
            for (r, yr) in y.iter_mut().enumerate() {
                let row = block_row(ty, data, c, r);
                *yr += a * ty.element(&row[b * bb..(b + 1) * bb], jj);
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
        Weights::Blocks { ty, data } => {
            let bb = ty.block_bytes();
            for (o, blk) in out
                .chunks_exact_mut(BLOCK)
                .zip(block_row(ty, data, c, r).chunks_exact(bb))
            {
                ty.dequantize(blk, o);
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
    matmul_with::<ScalarTile>(w, x, n, bias, y);
}

/// Whether `x` holds `n` tokens of `w.cols()` values and `y` `n` tokens of `w.rows()`: the
/// shapes of [`matmul`] and of the token products of int8 activations.
#[inline]
pub(crate) fn tokens_fit(w: &Matrix<'_>, x: &[f32], n: usize, y: &[f32]) -> bool {
    x.len() == n * w.cols() && y.len() == n * w.rows()
}

/// [`matmul`] with the tile dot `D`.
pub fn matmul_with<D: TileDot>(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    debug_assert!(tokens_fit(w, x, n, y));
    let (rows, cols) = (w.rows(), w.cols());
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
                Weights::Blocks { ty, data } => {
                    dequantize_tile(ty, block_row(ty, data, cols, r), t0, len, &mut buf)
                }
            };
            for i in 0..n {
                let xi = &x[i * cols + t0..i * cols + t0 + len];
                y[i * rows + r] += D::dot_tile(tile, xi);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matrix::{Matrix, Weights};

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
