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
//! - [`wasm_simd128_matmul_q8_tokens`] (the projections and the feed-forward's up): 16 tokens
//!   packed once as 16-bit column pairs interleaved by token, each pair of weight rows widened
//!   once; `i32x4.dot_i16x8_s` of 4 tokens' pairs with one broadcast weight pair, in register
//!   tiles of 2 rows x 16 tokens. The block sums are exact i32 (any order), then the generic
//!   float sum and epilogue lane by lane: the same bits.
//! - [`wasm_simd128_accumulate_q8_tokens`] (the feed-forward's down): the same scheme with the
//!   roles swapped (pairs of rows of `down_t` packed per call, the tokens' activations packed
//!   by pairs of units), tiles of 4 columns x 8 tokens: exact sums, same bits.
//! - [`wasm_simd128_quantize_i8_token`]: the generic rounding (half away from zero, saturating
//!   conversion) on 4 lanes: the same bits for finite inputs.
//! - [`wasm_simd128_exp_f32x4`]: [`super::attn::exp_poly`] on 4 lanes, the same bits.
//! - [`wasm_simd128_attn_scores_tile`], [`wasm_simd128_attn_dense_tile`]: the generic block
//!   kernels of the fast attention with the lanes (queries) as vector lanes: the same bits.
//! - [`wasm_simd128_gelu_erf`]: the formula of [`super::activate_fast`] with
//!   [`wasm_simd128_exp_f32x4`] instead of the math library's `exp` (within a few ulps).
//!
//! Why these shapes (measured in node 20 on x86-64, with V8's code and valgrind instruction
//! counts): V8 gives wasm 15 vector registers, so 8 i32x4 accumulators plus the operands are
//! the most a tile keeps without spilling; and every load whose address is not a pointer plus
//! a constant costs an extra instruction, so the packed layouts put a tile's operands at
//! constant offsets from one or two pointers.
//!
//! Loads and stores go through raw pointers (the simd128 memory intrinsics take them): each
//! `unsafe` block stays inside a slice whose length was checked before. Packing scratch is
//! `MaybeUninit` (written before it is read, never zeroed: zeroing it cost about 1% of a
//! MiniLM embedding).

use super::attn::{
    ATTN_BLOCK, ATTN_LANES, ATTN_TILE, AttnDenseState, EXP_P, EXP_POLY_MAX, EXP_POLY_MIN, LN2_HI,
    LN2_LO, LOG2E,
};
use super::generic::{self, QT_BLOCK, qt_blocks};
use super::{Matrix, Weights};
use core::arch::wasm32::*;
use core::mem::MaybeUninit;

/// Sum of `a[i] * b[i]` (`a.len() == b.len()`), in the generic kernels' tile order.
#[inline(always)]
pub(super) fn dot_tile(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = f32x4_splat(0.0);
    let (a4, a_tail) = a.split_at(a.len() & !3);
    let (b4, b_tail) = b.split_at(a4.len());
    for (wa, wb) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        acc = f32x4_add(acc, f32x4_mul(ld4(wa), ld4(wb)));
    }
    let mut s = (f32x4_extract_lane::<0>(acc) + f32x4_extract_lane::<1>(acc))
        + (f32x4_extract_lane::<2>(acc) + f32x4_extract_lane::<3>(acc));
    for (&p, &q) in a_tail.iter().zip(b_tail) {
        s += p * q;
    }
    s
}

/// The 4 f32 `s[..4]` as one vector.
#[inline(always)]
fn ld4(s: &[f32]) -> v128 {
    let s = &s[..4];
    // SAFETY: s holds 4 f32 (16 bytes); v128.load is unaligned.
    unsafe { v128_load(s.as_ptr() as *const v128) }
}

/// Stores the 4 lanes of `v` to `s[..4]`.
#[inline(always)]
fn st4(s: &mut [f32], v: v128) {
    let s = &mut s[..4];
    // SAFETY: s holds 4 f32 (16 bytes); v128.store is unaligned.
    unsafe { v128_store(s.as_mut_ptr() as *mut v128, v) }
}

/// Tokens [`wasm_simd128_matmul_q8_tokens`] packs together: 4 vectors of 4 lanes.
const MT: usize = 16;
/// Columns of one panel of packed activations and weights (elements, a multiple of
/// [`QT_BLOCK`]): [`MT`] tokens of this many columns take 16 KiB of stack as i16.
const PANEL: usize = 512;
/// Weight rows of a register tile (2 rows x 4 token vectors: 8 accumulators, 2 weight
/// broadcasts and the activation vector fit the 15 vector registers V8 allocates on x86-64).
const MR: usize = 2;
const _: () = assert!(PANEL.is_multiple_of(QT_BLOCK) && QT_BLOCK.is_multiple_of(2));

/// 8 int8 values from `s[i..i + 8]`, sign-extended to 16-bit lanes.
///
/// # Safety
/// `i + 8 <= s.len()`.
#[inline(always)]
unsafe fn load_i8x8(s: &[i8], i: usize) -> v128 {
    debug_assert!(i + 8 <= s.len());
    // SAFETY: the caller guarantees that s[i..i + 8] is in bounds; the load is unaligned.
    unsafe { i16x8_load_extend_i8x8(s.as_ptr().add(i)) }
}

/// 4x4 transpose of 32-bit lanes: `out[k][j] = rows[j][k]`.
#[inline(always)]
fn transpose4(rows: [v128; 4]) -> [v128; 4] {
    let [a, b, c, d] = rows;
    let t0 = i32x4_shuffle::<0, 4, 1, 5>(a, b);
    let t1 = i32x4_shuffle::<2, 6, 3, 7>(a, b);
    let t2 = i32x4_shuffle::<0, 4, 1, 5>(c, d);
    let t3 = i32x4_shuffle::<2, 6, 3, 7>(c, d);
    [
        i32x4_shuffle::<0, 1, 4, 5>(t0, t2),
        i32x4_shuffle::<2, 3, 6, 7>(t0, t2),
        i32x4_shuffle::<0, 1, 4, 5>(t1, t3),
        i32x4_shuffle::<2, 3, 6, 7>(t1, t3),
    ]
}

/// Packs columns `c0..c0 + pc` of the `g <= MT` int8 token rows `xq` (row `t` at `t * cols`)
/// as 16-bit column pairs, token-interleaved: `xp[(p * MT + t) * 2 + e] = x[t][c0 + 2p + e]`,
/// zeros past `pc` (up to a multiple of 8 columns) and for the tokens `g..MT`. Returns the
/// number of values written, all of `xp[..n]` (the scratch is not zeroed beforehand).
fn pack_tokens(
    xq: &[i8],
    cols: usize,
    g: usize,
    c0: usize,
    pc: usize,
    xp: &mut [MaybeUninit<i16>],
) -> usize {
    let pc8 = pc & !7;
    let pairs = pc.div_ceil(8) * 4;
    let xp = &mut xp[..pairs * MT * 2];
    for t in (0..MT).step_by(4) {
        let mut c = 0;
        while c < pc8 {
            let rows: [v128; 4] = core::array::from_fn(|j| {
                if t + j < g {
                    // SAFETY: c + 8 <= pc8 <= pc and row t + j holds columns c0..c0 + pc.
                    unsafe { load_i8x8(&xq[(t + j) * cols + c0..][..pc], c) }
                } else {
                    i16x8_splat(0)
                }
            });
            // rows[j] holds pairs c/2..c/2 + 4 of token t + j; out[k] pair c/2 + k of the 4.
            for (k, o) in transpose4(rows).into_iter().enumerate() {
                let at = ((c / 2 + k) * MT + t) * 2;
                let dst = &mut xp[at..at + 8];
                // SAFETY: dst holds 8 i16 (16 bytes); v128.store is unaligned.
                unsafe { v128_store(dst.as_mut_ptr() as *mut v128, o) };
            }
            c += 8;
        }
        for p in pc8 / 2..pairs {
            for j in 0..4 {
                for e in 0..2 {
                    let c = 2 * p + e;
                    xp[(p * MT + t + j) * 2 + e].write(if t + j < g && c < pc {
                        xq[(t + j) * cols + c0 + c] as i16
                    } else {
                        0
                    });
                }
            }
        }
    }
    pairs * MT * 2
}

/// `buf[..n]` as the values written there.
///
/// # Safety
/// Every element of `buf[..n]` was written.
unsafe fn written<T>(buf: &[MaybeUninit<T>], n: usize) -> &[T] {
    let b = &buf[..n];
    // SAFETY: the caller wrote every element of b, and MaybeUninit<T> has the layout of T.
    unsafe { core::slice::from_raw_parts(b.as_ptr() as *const T, n) }
}

/// One register tile: `R` widened weight rows, as 16-bit column pairs interleaved by row
/// (`wp[p * MR + r]`, zeros past the panel's columns) times the packed tokens `xp` (`4 * V`
/// lanes, [`pack_tokens`]) over the blocks of a panel of `quads` groups of 8 columns, with
/// the tokens' block scales `sp[b * MT + t]`:
/// adds `(block dot as f32) * scale` to `fv[r][v]` (lane = token) block by block, as the
/// generic kernel does.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[r][v]: the tile's two indices read best as such
fn tile_q8<const R: usize, const V: usize>(
    wp: &[i32],
    xp: &[i16],
    sp: &[f32],
    quads: usize,
    fv: &mut [[v128; V]; R],
) {
    const QB: usize = QT_BLOCK / 8; // groups of 8 columns per block
    assert!(wp.len() >= 4 * quads * MR && xp.len() >= 4 * quads * MT * 2);
    assert!(sp.len() >= quads.div_ceil(QB) * MT);
    let mut q0 = 0;
    let mut b = 0;
    while q0 < quads {
        let q1 = quads.min(q0 + QB);
        let mut acc = [[i32x4_splat(0); V]; R];
        for p in 4 * q0..4 * q1 {
            // SAFETY: p * MR + r < 4 * quads * MR <= wp.len() and (p * MT + 4v) * 2 + 8 <= 4 *
            // quads * MT * 2 <= xp.len() (4v + 4 <= MT), both asserted above.
            let bw: [v128; R] = core::array::from_fn(|r| unsafe {
                v128_load32_splat(wp.as_ptr().add(p * MR + r) as *const u32)
            });
            for v in 0..V {
                // SAFETY: as above.
                let x = unsafe { v128_load(xp.as_ptr().add((p * MT + 4 * v) * 2) as *const v128) };
                for r in 0..R {
                    acc[r][v] = i32x4_add(acc[r][v], i32x4_dot_i16x8(x, bw[r]));
                }
            }
        }
        for v in 0..V {
            let s = ld4(&sp[b * MT + 4 * v..]);
            for r in 0..R {
                // fv + (dot as f32) * s: rounded product, then rounded sum, as generic.
                fv[r][v] = f32x4_add(fv[r][v], f32x4_mul(f32x4_convert_i32x4(acc[r][v]), s));
            }
        }
        q0 = q1;
        b += 1;
    }
}

/// Widens columns `c0..c0 + pc` of the `rt <= MR` rows `r0..` of `q` (`cols` each) to 16-bit
/// column pairs interleaved by row, `wp[p * MR + r]` (low half column `2p`, high half `2p +
/// 1`), zeros past `pc` up to `8 * quads` columns and for the rows `rt..MR`. Returns the number
/// of values written, all of `wp[..n]`.
#[allow(clippy::too_many_arguments)]
fn widen_rows(
    q: &[i8],
    cols: usize,
    r0: usize,
    rt: usize,
    c0: usize,
    pc: usize,
    quads: usize,
    wp: &mut [MaybeUninit<i32>],
) -> usize {
    const _: () = assert!(MR == 2);
    let pc8 = pc & !7;
    let z = i16x8_splat(0);
    let rows: [&[i8]; MR] = core::array::from_fn(|r| {
        if r < rt {
            &q[(r0 + r) * cols + c0..][..pc]
        } else {
            &[]
        }
    });
    let mut c = 0;
    while c < pc8 {
        // SAFETY: c + 8 <= pc8 <= pc = the length of every live row slice.
        let a = unsafe { load_i8x8(rows[0], c) };
        let b = if rt > 1 {
            unsafe { load_i8x8(rows[1], c) }
        } else {
            z
        };
        // a and b hold pairs c/2..c/2 + 4 of rows 0 and 1 as i32 lanes: interleave them.
        let lo = i32x4_shuffle::<0, 4, 1, 5>(a, b);
        let hi = i32x4_shuffle::<2, 6, 3, 7>(a, b);
        let d = &mut wp[c / 2 * MR..c / 2 * MR + 8];
        // SAFETY: d holds 8 i32 (32 bytes): two unaligned v128 stores.
        unsafe {
            v128_store(d.as_mut_ptr() as *mut v128, lo);
            v128_store(d.as_mut_ptr().add(4) as *mut v128, hi);
        }
        c += 8;
    }
    for p in pc8 / 2..quads * 4 {
        for (r, row) in rows.iter().enumerate() {
            let at = |c: usize| row.get(c).map_or(0, |&v| v as i16 as u16 as u32);
            wp[p * MR + r].write((at(2 * p) | at(2 * p + 1) << 16) as i32);
        }
    }
    quads * 4 * MR
}

/// The lanes of a vector.
#[inline(always)]
fn lanes4(v: v128) -> [f32; 4] {
    [
        f32x4_extract_lane::<0>(v),
        f32x4_extract_lane::<1>(v),
        f32x4_extract_lane::<2>(v),
        f32x4_extract_lane::<3>(v),
    ]
}

/// Rows `r0..r0 + R` of one panel for `g` tokens: the float sums start from `+0.0` on the
/// first panel (`first`), else from the partial sums left in `y`; the last panel (`last`)
/// applies the generic epilogue ([`generic::q8_token_out`]), earlier ones leave the partial
/// sums in `y` (exact f32 values, so the same bits).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_q8<const R: usize, const V: usize>(
    wp: &[i32],
    xp: &[i16],
    sp: &[f32],
    quads: usize,
    (r0, rows, g): (usize, usize, usize),
    (first, last): (bool, bool),
    scales: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let mut fv = [[f32x4_splat(0.0); V]; R];
    if !first {
        for (r, fr) in fv.iter_mut().enumerate() {
            for (v, f) in fr.iter_mut().enumerate() {
                let at = |j: usize| {
                    let t = (4 * v + j).min(g - 1);
                    y[t * rows + r0 + r]
                };
                *f = f32x4(at(0), at(1), at(2), at(3));
            }
        }
    }
    tile_q8::<R, V>(wp, xp, sp, quads, &mut fv);
    for (r, fr) in fv.iter().enumerate() {
        let row = r0 + r;
        for (v, &f) in fr.iter().enumerate() {
            for (j, &x) in lanes4(f).iter().enumerate() {
                let t = 4 * v + j;
                if t < g {
                    y[t * rows + row] = if last {
                        generic::q8_token_out(x, scales[row], bias.map(|b| b[row]))
                    } else {
                        x
                    };
                }
            }
        }
    }
}

/// simd128 [`super::matmul_q8_tokens`]: the same bits (exact i32 block dots, the generic float
/// sum and epilogue). Shapes as there; non-int8 weights or `cols > 4096` go to the generic
/// kernel.
///
/// Tokens go [`MT`] at a time, their int8 columns packed once as 16-bit pairs interleaved by
/// token ([`pack_tokens`]); each pair of weight rows is widened to 16 bits once, and
/// `i32x4.dot_i16x8_s` of a token vector with a broadcast weight pair adds 2 products to each
/// of 4 tokens. The exact i32 block sums are converted and scaled per block, lane by lane as
/// the generic kernel; columns past [`PANEL`] are done panel by panel.
pub fn wasm_simd128_matmul_q8_tokens(
    w: &Matrix<'_>,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let Weights::I8 { q, scales } = w.weights() else {
        return generic::matmul_q8_tokens(w, xq, xs, n, bias, y);
    };
    if cols == 0 || cols > generic::Q8_MAX_COLS || rows == 0 || n == 0 {
        return generic::matmul_q8_tokens(w, xq, xs, n, bias, y);
    }
    let nb = qt_blocks(cols);
    debug_assert_eq!(xq.len(), n * cols);
    debug_assert_eq!(xs.len(), n * nb);
    debug_assert_eq!(y.len(), n * rows);
    // Scratch written before it is read (pack_tokens, widen_rows): not zeroed per call.
    let mut xp = [MaybeUninit::<i16>::uninit(); MT * PANEL];
    let mut sp = [0f32; MT * PANEL / QT_BLOCK];
    let mut wp = [MaybeUninit::<i32>::uninit(); PANEL / 2 * MR];
    let mut i0 = 0;
    while i0 < n {
        let g = MT.min(n - i0);
        let xg = &xq[i0 * cols..(i0 + g) * cols];
        let yg = &mut y[i0 * rows..(i0 + g) * rows];
        let mut c0 = 0;
        while c0 < cols {
            let pc = PANEL.min(cols - c0);
            let quads = pc.div_ceil(8);
            let (b0, pb) = (c0 / QT_BLOCK, pc.div_ceil(QT_BLOCK));
            let nx = pack_tokens(xg, cols, g, c0, pc, &mut xp);
            // SAFETY: pack_tokens wrote xp[..nx].
            let xpw = unsafe { written(&xp, nx) };
            for b in 0..pb {
                for t in 0..MT {
                    sp[b * MT + t] = if t < g {
                        xs[(i0 + t) * nb + b0 + b]
                    } else {
                        0.0
                    };
                }
            }
            let (first, last) = (c0 == 0, c0 + pc == cols);
            let mut r0 = 0;
            while r0 < rows {
                let rt = MR.min(rows - r0);
                let nw = widen_rows(q, cols, r0, rt, c0, pc, quads, &mut wp);
                // SAFETY: widen_rows wrote wp[..nw].
                let wpw = unsafe { written(&wp, nw) };
                let ctx = (r0, rows, g);
                let fl = (first, last);
                let (xp, sp, wp) = (xpw, &sp[..], wpw);
                match (rt, g.div_ceil(4)) {
                    (2, 4) => rows_q8::<2, 4>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    (2, 3) => rows_q8::<2, 3>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    (2, 2) => rows_q8::<2, 2>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    (2, _) => rows_q8::<2, 1>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    (_, 4) => rows_q8::<1, 4>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    (_, 3) => rows_q8::<1, 3>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    (_, 2) => rows_q8::<1, 2>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                    _ => rows_q8::<1, 1>(wp, xp, sp, quads, ctx, fl, scales, bias, yg),
                }
                r0 += rt;
            }
            c0 += pc;
        }
        i0 += g;
    }
}

/// simd128 [`super::matmul_i8_i8_token`]: the same bits. Shapes as there.
pub fn wasm_simd128_matmul_i8_i8_token(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    generic::matmul_i8_i8_token_with(
        wasm_simd128_quantize_i8_token,
        wasm_simd128_matmul_q8_tokens,
        w,
        x,
        n,
        bias,
        y,
    );
}

/// Longest `k` (rows of `q`) [`wasm_simd128_accumulate_q8_tokens`] takes; longer go to the
/// generic kernel. The feed-forward blocks use 64.
const ACC_MAX_K: usize = 128;
/// Packed weight pairs of one column panel of [`wasm_simd128_accumulate_q8_tokens`] (i32,
/// 16 KiB of stack).
const QP_LEN: usize = 4096;
/// Columns of a register tile of [`wasm_simd128_accumulate_q8_tokens`] (4 columns x 2 token
/// vectors: 8 accumulators, 4 weight broadcasts and the activation vector).
const AC: usize = 4;

/// Packs columns `c0..c0 + cp` of the rows of `q` (`cols` each, `pairs4` pairs of rows, rows
/// past `q` zero) as 16-bit row pairs, tile by tile of [`AC`] columns: `qp[(c / AC * pairs4 +
/// p) * AC + c % AC]` holds `(q[2p][c0 + c], q[2p + 1][c0 + c])` in its low and high half,
/// zeros for the columns `cp..cpw`. Returns the number of values written, all of `qp[..n]`.
fn pack_row_pairs(
    q: &[i8],
    cols: usize,
    pairs4: usize,
    c0: usize,
    cp: usize,
    cpw: usize,
    qp: &mut [MaybeUninit<i32>],
) -> usize {
    const _: () = assert!(AC == 4);
    let k = q.len() / cols;
    let cp8 = cp & !7;
    let z = i16x8_splat(0);
    let qp = &mut qp[..cpw * pairs4];
    // Two tiles (8 columns) at a time: row pairs in order, each tile's pairs contiguous. The
    // loads below rely on this bound (rows < k are inside q, as k = q.len() / cols).
    assert!(c0 + cp <= cols);
    let full = k / 2;
    let mut c = 0;
    while c < cp8 {
        let (t0, t1) = qp[c * pairs4..(c + 8) * pairs4].split_at_mut(AC * pairs4);
        let (d0, d1) = (t0.as_mut_ptr(), t1.as_mut_ptr());
        let src = q.as_ptr().wrapping_add(c0 + c);
        let store = |p: usize, a: v128, b: v128| {
            let lo = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a, b);
            let hi = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a, b);
            // SAFETY: AC * p + AC <= AC * pairs4, the length of each tile.
            unsafe {
                v128_store(d0.add(AC * p) as *mut v128, lo);
                v128_store(d1.add(AC * p) as *mut v128, hi);
            }
        };
        for p in 0..full {
            // SAFETY: rows 2p and 2p + 1 < k exist; columns c0 + c..c0 + c + 8 <= cols.
            let (a, b) = unsafe {
                let r = src.add(2 * p * cols);
                (
                    i16x8_load_extend_i8x8(r),
                    i16x8_load_extend_i8x8(r.add(cols)),
                )
            };
            store(p, a, b);
        }
        if k % 2 == 1 {
            // SAFETY: the odd last row k - 1 exists, as above.
            store(
                full,
                unsafe { i16x8_load_extend_i8x8(src.add((k - 1) * cols)) },
                z,
            );
        }
        for p in k.div_ceil(2)..pairs4 {
            store(p, z, z);
        }
        c += 8;
    }
    for c in cp8..cpw {
        for p in 0..pairs4 {
            let w = |j: usize| {
                if j < k && c < cp {
                    q[j * cols + c0 + c] as i16 as u16 as u32
                } else {
                    0
                }
            };
            qp[(c / AC * pairs4 + p) * AC + c % AC].write((w(2 * p) | w(2 * p + 1) << 16) as i32);
        }
    }
    cpw * pairs4
}

/// One register tile of [`wasm_simd128_accumulate_q8_tokens`]: the tile of columns `c..c +
/// AC` of the packed panel `qp` ([`pack_row_pairs`], `cpw` columns) times the packed tokens
/// `hp` (`4 * V` lanes, [`pack_tokens`]) over `pairs4` row pairs: the exact i32 sums, one
/// vector (lane = token) per column and token vector.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[r][v]: the tile's two indices read best as such
fn tile_acc<const V: usize>(
    qp: &[i32],
    cpw: usize,
    c: usize,
    hp: &[i16],
    v0: usize,
    pairs4: usize,
) -> [[v128; V]; AC] {
    assert!(c.is_multiple_of(AC) && c + AC <= cpw && qp.len() >= pairs4 * cpw);
    assert!(4 * (v0 + V) <= MT && hp.len() >= pairs4 * MT * 2);
    let qt = &qp[c * pairs4..(c + AC) * pairs4];
    let mut acc = [[i32x4_splat(0); V]; AC];
    for p in 0..pairs4 {
        // SAFETY: p * AC + r < pairs4 * AC = qt.len() and (p * MT + 4(v0 + v)) * 2 + 8 <=
        // pairs4 * MT * 2 <= hp.len() (asserted above).
        let bw: [v128; AC] = core::array::from_fn(|r| unsafe {
            v128_load32_splat(qt.as_ptr().add(p * AC + r) as *const u32)
        });
        for v in 0..V {
            // SAFETY: as above.
            let x =
                unsafe { v128_load(hp.as_ptr().add((p * MT + 4 * (v0 + v)) * 2) as *const v128) };
            for r in 0..AC {
                acc[r][v] = i32x4_add(acc[r][v], i32x4_dot_i16x8(x, bw[r]));
            }
        }
    }
    acc
}

/// simd128 [`super::accumulate_q8_tokens`]: the same bits (exact i32 sums, then one multiply
/// and one add per element). Shapes as there; `k > 128` goes to the generic kernel.
///
/// Tokens go [`MT`] at a time, their int8 rows packed as 16-bit pairs interleaved by token
/// ([`pack_tokens`], pairs along `k`); the rows of `q` are packed per column panel as 16-bit
/// pairs of rows `(2p, 2p + 1)` ([`pack_row_pairs`]), so that `i32x4.dot_i16x8_s` of a token
/// vector with a broadcast weight pair adds 2 products to each of 4 tokens. A tile's sums are
/// converted and scaled lane by lane, transposed to columns and added to `out`.
pub fn wasm_simd128_accumulate_q8_tokens(
    out: &mut [f32],
    q: &[i8],
    cols: usize,
    hq: &[i8],
    hs: &[f32],
    n: usize,
) {
    if n == 0 {
        return;
    }
    let k = hq.len() / n;
    if k == 0 || k > ACC_MAX_K || cols == 0 || cols > generic::Q8_MAX_COLS {
        return generic::accumulate_q8_tokens(out, q, cols, hq, hs, n);
    }
    assert!(out.len() >= n * cols && hs.len() >= n && q.len() >= k * cols);
    let q = &q[..k * cols];
    let pairs4 = k.div_ceil(8) * 4;
    // Panel width: a multiple of the tile width, so that QP_LEN holds every pair of it.
    let cpw_max = (QP_LEN / pairs4) & !(AC - 1);
    // Scratch written before it is read (pack_tokens, pack_row_pairs): not zeroed per call.
    let mut hp = [MaybeUninit::<i16>::uninit(); MT * ACC_MAX_K];
    let mut qp = [MaybeUninit::<i32>::uninit(); QP_LEN];
    let mut i0 = 0;
    while i0 < n {
        let g = MT.min(n - i0);
        let nh = pack_tokens(&hq[i0 * k..(i0 + g) * k], k, g, 0, k, &mut hp);
        // SAFETY: pack_tokens wrote hp[..nh].
        let hp = unsafe { written(&hp, nh) };
        let hsv: [v128; MT / 4] = core::array::from_fn(|v| {
            let at = |j: usize| hs[i0 + (4 * v + j).min(g - 1)];
            f32x4(at(0), at(1), at(2), at(3))
        });
        let mut c0 = 0;
        while c0 < cols {
            let cp = cpw_max.min(cols - c0);
            let cpw = cp.div_ceil(AC) * AC;
            let nq = pack_row_pairs(q, cols, pairs4, c0, cp, cpw, &mut qp);
            // SAFETY: pack_row_pairs wrote qp[..nq].
            let qpw = unsafe { written(&qp, nq) };
            let mut c = 0;
            while c < cp {
                let live_c = AC.min(cp - c);
                let mut v0 = 0;
                while 4 * v0 < g {
                    let vt = if g - 4 * v0 > 4 { 2 } else { 1 };
                    let sums: [[v128; 2]; AC] = if vt == 2 {
                        tile_acc::<2>(qpw, cpw, c, hp, v0, pairs4)
                    } else {
                        tile_acc::<1>(qpw, cpw, c, hp, v0, pairs4).map(|a| [a[0], a[0]])
                    };
                    for (v, &hv) in hsv.iter().enumerate().skip(v0).take(vt) {
                        // (sum as f32) * hs, lane = token; then out + that, as generic.
                        let add: [v128; AC] = core::array::from_fn(|r| {
                            f32x4_mul(f32x4_convert_i32x4(sums[r][v - v0]), hv)
                        });
                        // add[r] lane j is column c + r, token 4v + j: transposed, row j is
                        // token 4v + j over the tile's columns.
                        for (j, &col) in transpose4(add).iter().enumerate() {
                            let t = 4 * v + j;
                            if t >= g {
                                break;
                            }
                            let at = (i0 + t) * cols + c0 + c;
                            if live_c == AC {
                                // SAFETY: at + AC <= (i0 + t + 1) * cols <= out.len()
                                // (asserted): c0 + c + AC <= cols.
                                unsafe {
                                    let o = out.as_mut_ptr().add(at) as *mut v128;
                                    v128_store(o, f32x4_add(v128_load(o), col));
                                }
                            } else {
                                for (ov, &d) in out[at..at + live_c].iter_mut().zip(&lanes4(col)) {
                                    *ov += d;
                                }
                            }
                        }
                    }
                    v0 += vt;
                }
                c += AC;
            }
            c0 += cp;
        }
        i0 += g;
    }
}

/// [`super::quantize_i8`] of one block (`q.len() == x.len()`), the same bits for finite
/// inputs: maximum of `|x|` on 4 lanes (exact in any order), then per lane
/// `t = x * (127 / max)`, `t + 0.5` or `t - 0.5` by the sign of `t`, converted toward zero with
/// saturation (`as i8` does the same).
#[inline(always)]
fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
    let n = x.len().min(q.len());
    let (x, q) = (&x[..n], &mut q[..n]);
    let mut mx = f32x4_splat(0.0);
    let mut chunks = x.chunks_exact(4);
    for c in &mut chunks {
        mx = f32x4_pmax(mx, f32x4_abs(ld4(c)));
    }
    let lanes = [
        f32x4_extract_lane::<0>(mx),
        f32x4_extract_lane::<1>(mx),
        f32x4_extract_lane::<2>(mx),
        f32x4_extract_lane::<3>(mx),
    ];
    let max = lanes
        .iter()
        .chain(chunks.remainder())
        .fold(0.0f32, |m, &v| {
            let a = if v < 0.0 { -v } else { v };
            if a > m { a } else { m }
        });
    if max == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inv = 127.0 / max;
    let iv = f32x4_splat(inv);
    let (half, neg_half, zero) = (f32x4_splat(0.5), f32x4_splat(-0.5), f32x4_splat(0.0));
    let round = |c: &[f32]| {
        let t = f32x4_mul(ld4(c), iv);
        let h = v128_bitselect(neg_half, half, f32x4_lt(t, zero));
        i32x4_trunc_sat_f32x4(f32x4_add(t, h))
    };
    let n16 = n & !15;
    for (xc, qc) in x[..n16].chunks_exact(16).zip(q[..n16].chunks_exact_mut(16)) {
        let a = i16x8_narrow_i32x4(round(&xc[..4]), round(&xc[4..8]));
        let b = i16x8_narrow_i32x4(round(&xc[8..12]), round(&xc[12..]));
        let v = i8x16_narrow_i16x8(a, b);
        // SAFETY: qc holds exactly 16 bytes; v128.store is unaligned.
        unsafe { v128_store(qc.as_mut_ptr() as *mut v128, v) };
    }
    for (o, &v) in q[n16..].iter_mut().zip(&x[n16..]) {
        let t = v * inv;
        *o = (if t < 0.0 { t - 0.5 } else { t + 0.5 }) as i8;
    }
    scale
}

/// simd128 [`super::quantize_i8_token`]: the same bits for finite inputs. Shapes as there.
pub fn wasm_simd128_quantize_i8_token(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    debug_assert_eq!(s.len(), qt_blocks(x.len()));
    for ((xb, qb), sb) in x.chunks(QT_BLOCK).zip(q.chunks_mut(QT_BLOCK)).zip(s) {
        *sb = quantize_block(xb, qb);
    }
}

/// [`super::attn::exp_poly`] on 4 lanes: the same operations in the same order (no FMA), so
/// the same bits lane by lane, limits and NaN included.
#[inline(always)]
pub fn wasm_simd128_exp_f32x4(x: v128) -> v128 {
    // The polynomial on x clamped into the domain (so 2^n stays a normal number); the lanes
    // outside it are replaced below.
    let xc = f32x4_pmin(
        f32x4_pmax(x, f32x4_splat(EXP_POLY_MIN)),
        f32x4_splat(EXP_POLY_MAX),
    );
    const ROUND: f32 = 12_582_912.0;
    let round = f32x4_splat(ROUND);
    // t = ROUND + n exactly (|n| <= 128, and the floats near 1.5 * 2^23 are the integers),
    // so n's integer value is bits(t) - bits(ROUND): no float-to-int conversion needed.
    let t = f32x4_add(f32x4_mul(xc, f32x4_splat(LOG2E)), round);
    let n = f32x4_sub(t, round);
    let r = f32x4_sub(
        f32x4_sub(xc, f32x4_mul(n, f32x4_splat(LN2_HI))),
        f32x4_mul(n, f32x4_splat(LN2_LO)),
    );
    let mut p = f32x4_splat(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = f32x4_add(f32x4_mul(p, r), f32x4_splat(c));
    }
    let y = f32x4_add(
        f32x4_add(f32x4_mul(p, f32x4_mul(r, r)), r),
        f32x4_splat(1.0),
    );
    let bias = 127i32.wrapping_sub(ROUND.to_bits() as i32);
    let two_n = i32x4_shl(i32x4_add(t, i32x4_splat(bias)), 23);
    let e = f32x4_mul(y, two_n);
    // A NaN lane stays NaN through the clamps (they compare false) and the polynomial.
    let e = v128_bitselect(f32x4_splat(0.0), e, f32x4_lt(x, f32x4_splat(EXP_POLY_MIN)));
    v128_bitselect(
        f32x4_splat(f32::INFINITY),
        e,
        f32x4_gt(x, f32x4_splat(EXP_POLY_MAX)),
    )
}

/// GELU (erf form) of 4 lanes: [`super::activate_fast`]'s formula ([`super::erf_fast`]) with
/// [`wasm_simd128_exp_f32x4`] for `exp`.
#[inline(always)]
fn gelu_erf_f32x4(x: v128) -> v128 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let one = f32x4_splat(1.0);
    let u = f32x4_mul(x, f32x4_splat(core::f32::consts::FRAC_1_SQRT_2));
    let au = f32x4_abs(u);
    let t = f32x4_div(one, f32x4_add(one, f32x4_mul(f32x4_splat(P), au)));
    let mut poly = f32x4_splat(A[4]);
    for &a in A[..4].iter().rev() {
        poly = f32x4_add(f32x4_splat(a), f32x4_mul(t, poly));
    }
    let poly = f32x4_mul(t, poly);
    let e = wasm_simd128_exp_f32x4(f32x4_mul(f32x4_neg(au), au));
    let y = f32x4_sub(one, f32x4_mul(poly, e));
    let erf = v128_bitselect(f32x4_neg(y), y, f32x4_lt(u, f32x4_splat(0.0)));
    f32x4_mul(f32x4_mul(f32x4_splat(0.5), x), f32x4_add(one, erf))
}

/// simd128 GELU (erf form) in place: within `|x| * 2e-7` (plus rounding) of
/// [`super::activate_fast`] (same formula, the polynomial `exp` of [`super::attn::exp_poly`]
/// instead of the math library's).
pub fn wasm_simd128_gelu_erf(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(4);
    for c in &mut chunks {
        let g = gelu_erf_f32x4(ld4(c));
        st4(c, g);
    }
    for v in chunks.into_remainder() {
        *v = generic::activate_fast(crate::config::Activation::GeluErf, *v);
    }
}

/// `acc[..4 * W] += w[j][l] * v[off[j] + d..][..4 * W]` for the keys `j` of the bits of
/// `seen`, in increasing order (a multiply, then an add, per element: the generic rounding).
/// The caller checked that every `off[j] + d + 4 * W` of a key in `seen` is within `v`.
#[inline(always)]
fn acc_keys<const W: usize>(
    acc: &mut [f32],
    seen: u16,
    w: &[f32; ATTN_BLOCK],
    l: usize,
    v: &[f32],
    off: &[usize; ATTN_TILE],
    d: usize,
) {
    let acc = &mut acc[..4 * W];
    let mut a: [v128; W] = core::array::from_fn(|i| ld4(&acc[4 * i..]));
    let mut m = seen;
    while m != 0 {
        let j = m.trailing_zeros() as usize & (ATTN_TILE - 1);
        m &= m - 1;
        let wj = f32x4_splat(w[j * ATTN_LANES + l]);
        let vj = v.as_ptr().wrapping_add(off[j] + d);
        for (i, ai) in a.iter_mut().enumerate() {
            // SAFETY: off[j] + d + 4 * W <= v.len() (checked by the caller); unaligned load.
            let x = unsafe { v128_load(vj.add(4 * i) as *const v128) };
            *ai = f32x4_add(*ai, f32x4_mul(wj, x));
        }
    }
    for (i, ai) in a.iter().enumerate() {
        st4(&mut acc[4 * i..], *ai);
    }
}

/// simd128 [`super::attn::attn_scores_tile`]: the same bits (each lane sums `q * k` over `d`
/// in increasing order from `+0.0`, then multiplies by `scale`). Two keys at a time: 8
/// accumulators, the 4 query vectors of a column and the 2 key broadcasts.
pub fn wasm_simd128_attn_scores_tile(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    s: &mut [f32; ATTN_BLOCK],
) {
    const G: usize = ATTN_LANES / 4;
    let nk = nk.min(ATTN_TILE);
    let qt = &qt[..hd * ATTN_LANES];
    let sc = f32x4_splat(scale);
    let zero = f32x4_splat(0.0);
    let key = |j: usize| &k[j * stride..][..hd];
    let mut j = 0;
    while j + 2 <= nk {
        let (k0, k1) = (key(j), key(j + 1));
        let mut a0 = [zero; G];
        let mut a1 = [zero; G];
        for (qd, (&x0, &x1)) in qt.chunks_exact(ATTN_LANES).zip(k0.iter().zip(k1)) {
            let (b0, b1) = (f32x4_splat(x0), f32x4_splat(x1));
            for g in 0..G {
                let q = ld4(&qd[4 * g..]);
                a0[g] = f32x4_add(a0[g], f32x4_mul(q, b0));
                a1[g] = f32x4_add(a1[g], f32x4_mul(q, b1));
            }
        }
        for g in 0..G {
            st4(&mut s[j * ATTN_LANES + 4 * g..], f32x4_mul(a0[g], sc));
            st4(&mut s[(j + 1) * ATTN_LANES + 4 * g..], f32x4_mul(a1[g], sc));
        }
        j += 2;
    }
    if j < nk {
        let k0 = key(j);
        let mut a0 = [zero; G];
        for (qd, &x0) in qt.chunks_exact(ATTN_LANES).zip(k0) {
            let b0 = f32x4_splat(x0);
            for (g, a) in a0.iter_mut().enumerate() {
                *a = f32x4_add(*a, f32x4_mul(ld4(&qd[4 * g..]), b0));
            }
        }
        for (g, a) in a0.iter().enumerate() {
            st4(&mut s[j * ATTN_LANES + 4 * g..], f32x4_mul(*a, sc));
        }
    }
}

/// Lane masks (all ones where lane `4 * g + i` sees the key) of the visibility bits `m`, for
/// the 4 groups of 4 lanes.
#[inline(always)]
fn lane_masks(m: u16) -> [v128; ATTN_LANES / 4] {
    let bits = u32x4_splat(m as u32);
    core::array::from_fn(|g| {
        let b = 4 * g as u32;
        let sel = u32x4(1 << b, 1 << (b + 1), 1 << (b + 2), 1 << (b + 3));
        i32x4_ne(v128_and(bits, sel), i32x4_splat(0))
    })
}

/// simd128 [`super::attn::attn_dense_tile`]: the same bits. The lanes' maxima, rescale
/// factors, weights `e^(s - max)` and sums run 4 lanes per vector ([`wasm_simd128_exp_f32x4`] is
/// [`super::attn::exp_poly`] lane by lane; a key a lane does not see adds `+0.0` to its sum,
/// which is never `-0.0`, so nothing); each lane's accumulator then takes its visible keys'
/// `w * v_j` in key order, 4 columns per vector, as the generic loop does.
pub fn wasm_simd128_attn_dense_tile(
    s: &[f32; ATTN_BLOCK],
    vis: &[u16; ATTN_TILE],
    nk: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    const G: usize = ATTN_LANES / 4;
    let nk = nk.min(ATTN_TILE);
    let neg_inf = f32x4_splat(f32::NEG_INFINITY);
    let zero = f32x4_splat(0.0);
    let masks: [[v128; G]; ATTN_TILE] = core::array::from_fn(|j| {
        if j < nk {
            lane_masks(vis[j])
        } else {
            [i32x4_splat(0); G]
        }
    });
    // Weights of the tile, w[j * ATTN_LANES + lane] (0 where the lane does not see key j).
    let mut w = [0f32; ATTN_BLOCK];
    let mut rescale = [1f32; ATTN_LANES];
    let mut rescaled = 0u16;
    for g in 0..G {
        let mut bm = neg_inf;
        for (j, m) in masks.iter().enumerate().take(nk) {
            let x = v128_bitselect(ld4(&s[j * ATTN_LANES + 4 * g..]), neg_inf, m[g]);
            // pmax(bm, x) = if bm < x { x } else { bm }: the generic comparison.
            bm = f32x4_pmax(bm, x);
        }
        let mut max = ld4(&st.max[4 * g..]);
        let up = f32x4_gt(bm, max);
        let c = v128_bitselect(
            wasm_simd128_exp_f32x4(f32x4_sub(max, bm)),
            f32x4_splat(1.0),
            up,
        );
        // Lanes that keep their maximum multiply their sum by exactly 1.
        let mut sum = f32x4_mul(ld4(&st.sum[4 * g..]), c);
        max = v128_bitselect(bm, max, up);
        st4(&mut st.max[4 * g..], max);
        st4(&mut rescale[4 * g..], c);
        rescaled |= (i32x4_bitmask(up) as u16) << (4 * g);
        for (j, m) in masks.iter().enumerate().take(nk) {
            let e = wasm_simd128_exp_f32x4(f32x4_sub(ld4(&s[j * ATTN_LANES + 4 * g..]), max));
            let e = v128_bitselect(e, zero, m[g]);
            sum = f32x4_add(sum, e);
            st4(&mut w[j * ATTN_LANES + 4 * g..], e);
        }
        st4(&mut st.sum[4 * g..], sum);
    }
    let hd4 = hd & !3;
    if nk == 0 {
        return;
    }
    // Key j's value row starts at off[j]; every row of the tile ends inside v.
    let off: [usize; ATTN_TILE] = core::array::from_fn(|j| j * stride);
    assert!(v.len() >= off[nk - 1] + hd);
    // The visible keys of each lane (bits j); usually every lane of the block sees every key.
    let same = vis[..nk].iter().all(|&m| m == vis[0]);
    let all_keys: u16 = if nk == ATTN_TILE {
        u16::MAX
    } else {
        (1 << nk) - 1
    };
    for l in 0..ATTN_LANES {
        let seen: u16 = if same {
            if vis[0] >> l & 1 != 0 { all_keys } else { 0 }
        } else {
            (0..nk).fold(0, |a, j| a | ((vis[j] >> l & 1) << j))
        };
        let up = rescaled >> l & 1 != 0;
        if seen == 0 && !up {
            continue;
        }
        let acc = &mut st.acc[l * hd..][..hd];
        if up {
            let c = rescale[l];
            acc.iter_mut().for_each(|a| *a *= c);
        }
        // 32 columns (8 vectors) at a time in registers, then 4, over the visible keys.
        let mut d = 0;
        while d + 32 <= hd4 {
            acc_keys::<8>(&mut acc[d..], seen, &w, l, v, &off, d);
            d += 32;
        }
        while d < hd4 {
            acc_keys::<1>(&mut acc[d..], seen, &w, l, v, &off, d);
            d += 4;
        }
        for (dd, a) in acc.iter_mut().enumerate().skip(hd4) {
            let mut m = seen;
            while m != 0 {
                let j = m.trailing_zeros() as usize;
                m &= m - 1;
                *a += w[j * ATTN_LANES + l] * v[j * stride + dd];
            }
        }
    }
}
