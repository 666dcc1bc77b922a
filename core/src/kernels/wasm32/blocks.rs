//! Block weights (`Q4_0` .. `Q8_0`) times int8 activations: [`wasm_simd128_matmul_q8_blocks`],
//! the bits of the generic [`crate::kernels::matmul_q8_tokens`].

use core::arch::wasm32::*;

use super::simd::*;
use crate::kernels::blocks::{BLOCK, BlockType};

/// Tokens whose activations one pass widens (then every group of 4 weight rows is decoded
/// once for all of them).
const TOKENS: usize = 16;
/// i16x8 vectors of one block of [`BLOCK`] values.
const VB: usize = BLOCK / 8;
/// Rows of one tile (the 4 lanes of the float sums).
const ROWS4: usize = 4;
/// Most weight blocks of a row ([`Q8_MAX_COLS`] columns).
const MAX_BLOCKS: usize = Q8_MAX_COLS / BLOCK;

/// The 4 i16x8 vectors (values `0..8`, `8..16`, `16..24`, `24..32`) of the integers of block
/// `b` of type `ty` ([`BlockType::ints`]: the `_0` offset taken off).
#[inline(always)]
fn decode(ty: BlockType, b: &[u8]) -> [v128; VB] {
    let load16 = |at: usize| {
        let s = &b[at..at + 16];
        // SAFETY: s holds 16 bytes; v128.load is unaligned.
        unsafe { v128_load(s.as_ptr() as *const v128) }
    };
    let widen = |lo: v128, hi: v128| {
        [
            i16x8_extend_low_i8x16(lo),
            i16x8_extend_high_i8x16(lo),
            i16x8_extend_low_i8x16(hi),
            i16x8_extend_high_i8x16(hi),
        ]
    };
    if ty == BlockType::Q8_0 {
        return widen(load16(2), load16(18));
    }
    // Values 0..16 are the low nibbles of the 16 bytes, 16..32 the high ones.
    let qs = load16(b.len() - 16);
    let mut lo = v128_and(qs, i8x16_splat(0x0f));
    let mut hi = u8x16_shr(qs, 4);
    if matches!(ty, BlockType::Q5_0 | BlockType::Q5_1) {
        // Bit j of qh is the fifth bit of value j: byte j / 8 of qh to lane j, tested
        // against bit j % 8.
        let h = if ty.has_min() { 4 } else { 2 };
        let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
        let qv = u32x4_splat(qh);
        let bit = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
        let fifth = |idx: v128| {
            let m = v128_and(i8x16_swizzle(qv, idx), bit);
            v128_and(i8x16_eq(m, bit), i8x16_splat(0x10))
        };
        lo = v128_or(
            lo,
            fifth(u8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)),
        );
        hi = v128_or(
            hi,
            fifth(u8x16(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)),
        );
    }
    let off = ty.offset();
    if off != 0 {
        let o = i8x16_splat(off as i8);
        lo = i8x16_sub(lo, o);
        hi = i8x16_sub(hi, o);
    }
    widen(lo, hi)
}

/// `[j]` lane `j`: the sum of the 4 lanes of `p[j]` (exact i32).
#[inline(always)]
fn reduce4(p: [v128; 4]) -> v128 {
    let [a, b, c, d] = transpose4(p);
    i32x4_add(i32x4_add(a, b), i32x4_add(c, d))
}

/// simd128 [`crate::kernels::matmul_q8_tokens`] for block weights (every [`BlockType`]): the
/// same bits. Shapes as there; other weights and inconsistent shapes take the generic kernel.
///
/// Passes of up to 16 tokens: their int8 values widened to i16 once (on the wasm stack,
/// 128 KiB at most), then each group of 4 weight rows decoded once per pass (the integers of
/// its blocks widened to i16, the `_0` offset taken off, `d` and `m` as f32) and run over every
/// token of the pass: per block 16 `i32x4.dot_i16x8_s` give the exact i32 dots of the 4 rows,
/// then the generic float steps with the 4 rows as lanes (`v += (dot as f32 * s) * d`, then
/// `v += (sum(x) as f32 * s) * m` for the `_1` kinds; simd128 has no fused multiply-add).
pub fn wasm_simd128_matmul_q8_blocks(
    w: &Matrix<'_>,
    x: Q8Rows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let Q8Rows { q: xq, s: xs, n } = x;
    let (rows, cols) = (w.rows(), w.cols());
    let nb = q8_blocks(cols);
    let (ty, data) = match w.weights() {
        Weights::Blocks { ty, data }
            if cols > 0
                && cols <= Q8_MAX_COLS
                && cols.is_multiple_of(BLOCK)
                && xq.len() == n * cols
                && xs.len() == n * nb
                && y.len() == n * rows
                && bias.is_none_or(|b| b.len() == rows)
                && ty.matrix_bytes(rows, cols) == Some(data.len()) =>
        {
            (ty, data)
        }
        _ => return generic::matmul_q8_tokens(w, x, bias, y),
    };
    let (bb, wb) = (ty.block_bytes(), cols / BLOCK);
    let rb = wb * bb;
    let min = ty.has_min();
    // The pass's tokens: values widened, and per weight block the activation scale and
    // `sum(x) as f32 * s` (the `_1` kinds).
    let mut xa = [MaybeUninit::<v128>::uninit(); TOKENS * Q8_MAX_COLS / 8];
    let mut sa = [0f32; TOKENS * MAX_BLOCKS];
    let mut ma = [0f32; TOKENS * MAX_BLOCKS];
    // The 4 rows of a tile, `[block][row][VB]`, and their `d` and `m`.
    let mut wv = [MaybeUninit::<v128>::uninit(); ROWS4 * Q8_MAX_COLS / 8];
    let mut dv = [f32x4_splat(0.0); MAX_BLOCKS];
    let mut mv = [f32x4_splat(0.0); MAX_BLOCKS];
    let mut t0 = 0;
    while t0 < n {
        let tn = TOKENS.min(n - t0);
        for t in 0..tn {
            let (xt, st) = (&xq[(t0 + t) * cols..][..cols], &xs[(t0 + t) * nb..][..nb]);
            for (b, xb) in xt.chunks_exact(BLOCK).enumerate() {
                let at = (t * wb + b) * VB;
                for (k, o) in xa[at..at + VB].iter_mut().enumerate() {
                    let c = &xb[8 * k..8 * k + 8];
                    // SAFETY: c holds 8 bytes; the load is unaligned.
                    o.write(unsafe { i16x8_load_extend_i8x8(c.as_ptr()) });
                }
                let s = st[b * BLOCK / Q8_BLOCK];
                sa[t * wb + b] = s;
                if min {
                    ma[t * wb + b] = xb.iter().fold(0i32, |a, &v| a + v as i32) as f32 * s;
                }
            }
        }
        // SAFETY: the loop above wrote the first tn * wb * VB vectors.
        let xa = unsafe { written(&xa, tn * wb * VB) };
        let mut r0 = 0;
        while r0 < rows {
            let rt = ROWS4.min(rows - r0);
            for b in 0..wb {
                let (mut d4, mut m4) = ([0f32; ROWS4], [0f32; ROWS4]);
                for j in 0..ROWS4 {
                    let at = (b * ROWS4 + j) * VB;
                    let v = if j < rt {
                        let blk = &data[(r0 + j) * rb + b * bb..][..bb];
                        (d4[j], m4[j]) = ty.scale_min(blk);
                        decode(ty, blk)
                    } else {
                        [i16x8_splat(0); VB]
                    };
                    for (o, v) in wv[at..at + VB].iter_mut().zip(v) {
                        o.write(v);
                    }
                }
                dv[b] = f32x4(d4[0], d4[1], d4[2], d4[3]);
                mv[b] = f32x4(m4[0], m4[1], m4[2], m4[3]);
            }
            // SAFETY: the loop above wrote the first wb * ROWS4 * VB vectors.
            let wv = unsafe { written(&wv, wb * ROWS4 * VB) };
            for t in 0..tn {
                let mut acc = f32x4_splat(0.0);
                for b in 0..wb {
                    let xv: &[v128; VB] = xa[(t * wb + b) * VB..][..VB].try_into().unwrap();
                    let wt: &[v128; ROWS4 * VB] =
                        wv[b * ROWS4 * VB..][..ROWS4 * VB].try_into().unwrap();
                    let p: [v128; ROWS4] = core::array::from_fn(|j| {
                        let d = |k: usize| i32x4_dot_i16x8(wt[j * VB + k], xv[k]);
                        i32x4_add(i32x4_add(d(0), d(1)), i32x4_add(d(2), d(3)))
                    });
                    let dots = f32x4_convert_i32x4(reduce4(p));
                    let s = f32x4_splat(sa[t * wb + b]);
                    acc = f32x4_add(acc, f32x4_mul(f32x4_mul(dots, s), dv[b]));
                    if min {
                        let sm = f32x4_splat(ma[t * wb + b]);
                        acc = f32x4_add(acc, f32x4_mul(sm, mv[b]));
                    }
                }
                let v = lanes4(acc);
                let yt = &mut y[(t0 + t) * rows + r0..][..rt];
                for (j, o) in yt.iter_mut().enumerate() {
                    *o = generic::q8_token_out(v[j], 1.0, bias.map(|b| b[r0 + j]));
                }
            }
            r0 += rt;
        }
        t0 += tn;
    }
}
