//! Block weights (`Q4_0` .. `Q8_0`) times int8 activations: [`wasm_simd128_matmul_q8_blocks`],
//! the bits of the generic [`crate::kernels::matmul_q8_tokens`].

use core::arch::wasm32::*;

use super::q8::{
    SPLAT_GROUPS, pack_q8_group, pack_rows2, pair_dots, pair_words, passes, store_rows,
};
use super::simd::*;
use crate::kernels::blocks::{BLOCK, BlockType};

/// Pairs of columns (words) of one weight block.
const BLOCK_PAIRS: usize = BLOCK / 2;
/// Most weight blocks of a row ([`Q8_MAX_COLS`] columns).
const MAX_BLOCKS: usize = Q8_MAX_COLS / BLOCK;
/// `sum(x) as f32 * s` of the tokens of one pass, `[group][block][Q8_GROUP]`: a pass holds
/// at most `4096 / cols` groups (its packed words), so at most 128 blocks' worth.
const SM_LEN: usize = MAX_BLOCKS * Q8_GROUP;

/// The 32 integers of block `b` of type `ty` ([`BlockType::ints`]: the `_0` offset taken
/// off) as two i8x16 vectors (values `0..16`, `16..32`).
#[inline(always)]
fn decode(ty: BlockType, b: &[u8]) -> [v128; 2] {
    let load16 = |at: usize| {
        let s = &b[at..at + 16];
        // SAFETY: s holds 16 bytes; v128.load is unaligned.
        unsafe { v128_load(s.as_ptr() as *const v128) }
    };
    if ty == BlockType::Q8_0 {
        return [load16(2), load16(18)];
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
    [lo, hi]
}

/// Decodes row `r` of the block matrix `data` (`rb` bytes a row, `wb` blocks) into its int8
/// integers `q` (`wb * 32`), scales `d` and mins `m` (`wb` each).
fn decode_row(
    ty: BlockType,
    data: &[u8],
    (r, rb, wb): (usize, usize, usize),
    q: &mut [i8],
    d: &mut [f32],
    m: &mut [f32],
) {
    let bb = ty.block_bytes();
    let row = &data[r * rb..(r + 1) * rb];
    let q = &mut q[..wb * BLOCK];
    for (b, (blk, qb)) in row
        .chunks_exact(bb)
        .zip(q.chunks_exact_mut(BLOCK))
        .enumerate()
    {
        (d[b], m[b]) = ty.scale_min(blk);
        let [lo, hi] = decode(ty, blk);
        // SAFETY: qb holds 32 bytes; v128.store is unaligned.
        unsafe {
            v128_store(qb.as_mut_ptr() as *mut v128, lo);
            v128_store(qb.as_mut_ptr().add(16) as *mut v128, hi);
        }
    }
}

/// One product tile over all the blocks of a row pair: the packed pair of decoded weight rows
/// `wp` ([`pack_rows2`], `wb` blocks) times the packed group `xg` ([`pack_quad`]) with its
/// activation scales `sg` (`[block of 64][Q8_GROUP]`): `f[r][v]` lane `l` (row `r`, token
/// `4v + l`) sums, block by block from `+0.0`, `(dot as f32 * s) * d[r][b]` and, when `sm` is
/// given (`[block][Q8_GROUP]`: `sum(x) as f32 * s`), `+ sm * m[r][b]`: the generic order.
#[inline(always)]
fn block_tile<const SPLAT: bool>(
    (wp, d, m): (&[i32], [&[f32]; 2], [&[f32]; 2]),
    (xg, sg, sm): (&[i32], &[f32], Option<&[f32]>),
    wb: usize,
) -> [[v128; 4]; 2] {
    let pw = pair_words(SPLAT);
    let pairs = wb * BLOCK_PAIRS;
    assert!(wb >= 1 && wp.len() >= pairs * pw && xg.len() >= pairs * Q8_GROUP);
    assert!(sg.len() >= wb.div_ceil(2) * Q8_GROUP && d[0].len() >= wb && d[1].len() >= wb);
    assert!(sm.is_none_or(|sm| sm.len() >= wb * Q8_GROUP && m[0].len() >= wb && m[1].len() >= wb));
    let mut f = [[f32x4_splat(0.0); 4]; 2];
    let (mut pa, mut pb) = (wp.as_ptr(), xg.as_ptr());
    for b in 0..wb {
        // SAFETY: pair p < pairs reads wp's words pw p..pw (p + 1) and xg's words
        // Q8_GROUP p..Q8_GROUP p + 16, inside the slices (asserted above). The block's first
        // pair starts the sums, the other 15 add to them.
        let [mut acc0, mut acc1] = unsafe { pair_dots::<SPLAT>(pa, pb) };
        (pa, pb) = (pa.wrapping_add(pw), pb.wrapping_add(Q8_GROUP));
        for _ in 1..BLOCK_PAIRS {
            // SAFETY: pair p < pairs, in bounds as said above.
            let [d0, d1] = unsafe { pair_dots::<SPLAT>(pa, pb) };
            for v in 0..4 {
                acc0[v] = i32x4_add(acc0[v], d0[v]);
                acc1[v] = i32x4_add(acc1[v], d1[v]);
            }
            (pa, pb) = (pa.wrapping_add(pw), pb.wrapping_add(Q8_GROUP));
        }
        let at = b * BLOCK / Q8_BLOCK * Q8_GROUP;
        let s: [v128; 4] = core::array::from_fn(|v| ld4(&sg[at + 4 * v..]));
        for (r, acc) in [acc0, acc1].iter().enumerate() {
            let dr = f32x4_splat(d[r][b]);
            for (v, &a) in acc.iter().enumerate() {
                let p = f32x4_mul(f32x4_mul(f32x4_convert_i32x4(a), s[v]), dr);
                f[r][v] = f32x4_add(f[r][v], p);
            }
        }
        if let Some(sm) = sm {
            let sv: [v128; 4] = core::array::from_fn(|v| ld4(&sm[b * Q8_GROUP + 4 * v..]));
            for (r, fr) in f.iter_mut().enumerate() {
                let mr = f32x4_splat(m[r][b]);
                for (o, &x) in fr.iter_mut().zip(&sv) {
                    *o = f32x4_add(*o, f32x4_mul(x, mr));
                }
            }
        }
    }
    f
}

/// simd128 [`crate::kernels::matmul_q8_tokens`] for block weights (every [`BlockType`]): the
/// same bits. Shapes as there; other weights and inconsistent shapes take the generic kernel.
///
/// The tokens are packed as [`wasm_simd128_matmul_q8_tokens`] packs them (groups of 16,
/// 16-bit column pairs interleaved by token, as many groups per pass as 128 KiB hold); each
/// pair of weight rows is decoded once per pass (the integers of its blocks, the `_0` offset
/// taken off, to int8; `d` and `m` to f32), widened as the int8 rows are and run over every
/// group in register tiles of 2 rows x 16 tokens: per block of 32 columns the exact i32 dots
/// (`i32x4.dot_i16x8_s`), then the generic float steps with the tokens as lanes
/// (`v += (dot as f32 * s) * d`, then `v += (sum(x) as f32 * s) * m` for the `_1` kinds;
/// simd128 has no fused multiply-add).
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
    let wb = cols / BLOCK;
    let rb = wb * ty.block_bytes();
    let pairs = pairs_of(cols);
    let min = ty.has_min();
    passes(
        cols,
        n,
        |t, g, out, sp| {
            let (xq, xs) = (&xq[t * cols..(t + g) * cols], &xs[t * nb..(t + g) * nb]);
            pack_q8_group(xq, xs, (g, cols), out, sp);
        },
        |t0, gs, xw, sw| {
            let gw = pairs * Q8_GROUP;
            let mut starts = [0usize; MAX_GROUPS];
            let mut t = t0;
            for (s, &g) in starts.iter_mut().zip(gs) {
                *s = t;
                t += g;
            }
            // The min's term of each token and block (`_1` kinds).
            let mut sm = [0f32; SM_LEN];
            assert!(gs.len() * wb * Q8_GROUP <= SM_LEN);
            if min {
                for (i, &g) in gs.iter().enumerate() {
                    for tg in 0..g {
                        let tk = starts[i] + tg;
                        let xt = &xq[tk * cols..(tk + 1) * cols];
                        for (b, xb) in xt.chunks_exact(BLOCK).enumerate() {
                            let sum = xb.iter().fold(0i32, |a, &v| a + v as i32);
                            let s = xs[tk * nb + b * BLOCK / Q8_BLOCK];
                            sm[(i * wb + b) * Q8_GROUP + tg] = sum as f32 * s;
                        }
                    }
                }
            }
            let splat = gs.len() >= SPLAT_GROUPS;
            let mut q2 = [0i8; 2 * Q8_MAX_COLS];
            let mut d2 = [[0f32; MAX_BLOCKS]; 2];
            let mut m2 = [[0f32; MAX_BLOCKS]; 2];
            let mut wp = [MaybeUninit::<i32>::uninit(); 8 * Q8_MAX_COLS / 2];
            let mut r0 = 0;
            while r0 < rows {
                let rt = 2.min(rows - r0);
                for r in 0..rt {
                    let (q, d, m) = (&mut q2[r * cols..(r + 1) * cols], &mut d2[r], &mut m2[r]);
                    decode_row(ty, data, (r0 + r, rb, wb), q, d, m);
                }
                if rt < 2 {
                    (d2[1], m2[1]) = (d2[0], m2[0]);
                }
                if splat {
                    pack_rows2::<true>(&q2, cols, 0, rt, pairs, &mut wp);
                } else {
                    pack_rows2::<false>(&q2, cols, 0, rt, pairs, &mut wp);
                }
                // SAFETY: pack_rows2 wrote wp[..pairs * pair_words(splat)].
                let wpw = unsafe { written(&wp, pairs * pair_words(splat)) };
                let wr = (
                    wpw,
                    [&d2[0][..wb], &d2[1][..wb]],
                    [&m2[0][..wb], &m2[1][..wb]],
                );
                let bv = bias.map(|b| [0, 1].map(|r: usize| f32x4_splat(b[r0 + r.min(rt - 1)])));
                let one = f32x4_splat(1.0);
                for (i, &g) in gs.iter().enumerate() {
                    let xg = &xw[i * gw..(i + 1) * gw];
                    let sg = &sw[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP];
                    let smg = min.then(|| &sm[i * wb * Q8_GROUP..(i + 1) * wb * Q8_GROUP]);
                    let f = if splat {
                        block_tile::<true>(wr, (xg, sg, smg), wb)
                    } else {
                        block_tile::<false>(wr, (xg, sg, smg), wb)
                    };
                    // The generic epilogue: v * 1.0, then the bias.
                    let o: [[v128; 4]; 2] = core::array::from_fn(|r| {
                        core::array::from_fn(|v| {
                            let o = f32x4_mul(f[r][v], one);
                            match &bv {
                                Some(bv) => f32x4_add(o, bv[r]),
                                None => o,
                            }
                        })
                    });
                    let ts = starts[i];
                    store_rows(&mut y[ts * rows..(ts + g) * rows], rows, (r0, rt, g), &o);
                }
                r0 += rt;
            }
        },
    );
}
