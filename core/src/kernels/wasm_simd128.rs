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
//! - [`wasm_simd128_matmul_q8_tokens`], [`wasm_simd128_matmul_i8_i8_token`] (the
//!   projections): the tokens quantized and packed in groups of 16 (16-bit column pairs
//!   interleaved by token), as many groups per pass as 128 KiB of stack hold (10 of 384
//!   columns); each pair of weight rows is widened once per pass and runs over every group:
//!   `i32x4.dot_i16x8_s` of 4 tokens' pairs with a row's pair, in register tiles of 2 rows x 16
//!   tokens. The block sums are exact i32 (any order), then the generic float sum and epilogue
//!   lane by lane: the same bits.
//! - [`wasm_simd128_ffn_q8`] (the dense int8 feed-forward, all the tokens of a call): per step
//!   of 64 hidden units the up rows are widened once for the pass, the tiles take the
//!   activation and the down scales in registers, each token's 64 values one int8 scale (lane
//!   by lane), and the step's down rows are packed once per panel of columns for all tokens:
//!   the bits of the unfused kernels ([`wasm_simd128_accumulate_q8_tokens`] and the others).
//! - [`wasm_simd128_accumulate_q8_tokens`] (the feed-forward's down): pairs of rows of `down_t`
//!   packed per panel of columns once for every token group, the tokens' pairs broadcast,
//!   tiles of 4 tokens x 8 columns: exact sums, same bits.
//! - [`wasm_simd128_quantize_i8_token`]: the generic rounding (half away from zero, saturating
//!   conversion) on 4 lanes: the same bits for finite inputs.
//! - [`wasm_simd128_exp_f32x4`]: [`super::attn::exp_poly`] on 4 lanes, the same bits.
//! - [`wasm_simd128_attn_scores_tile`], [`wasm_simd128_attn_dense_tile`],
//!   [`wasm_simd128_attn_scores_rows`], [`wasm_simd128_attn_topk_block`],
//!   [`wasm_simd128_attn_softmax_lanes`]: the generic block kernels of the fast attention
//!   (dense and top-k) with the lanes (queries) or the columns as vector lanes: the same bits
//!   (the same float operations in the same order element by element, the same slots).
//! - [`wasm_simd128_gelu_erf`]: the formula of [`super::activate_fast`] with
//!   [`wasm_simd128_exp_f32x4`] instead of the math library's `exp` (within a few ulps).
//!
//! Why these shapes (measured in node 20 on x86-64, with V8's code and valgrind instruction
//! counts per function): V8 gives wasm 15 vector registers and loads every operand of a loop
//! step before its arithmetic, so a step's loads plus its accumulators must fit them: 8 i32x4
//! accumulators and 6 loads (2 x 4 tiles, about 26 instructions per 64 multiply-adds with
//! V8's own unrolling); an unrolled step would spill. A `v128.load` at a constant offset from
//! a pointer is one instruction, a `v128.load32_splat` at an offset two, so operands that a
//! tile broadcasts are stored broadcast when the packing is shared by enough token groups.
//! Array initialisation and slice copies become calls of V8's bulk-memory builtins (tens of
//! instructions each), so the hot paths write lanes and vectors directly.
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
use crate::config::Activation;
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

/// Tokens of one packed group: 4 vectors of 4 lanes.
const MT: usize = 16;
/// Words (2 int8 values widened to i16 each) of the packed token groups of one pass: 128 KiB
/// of stack, so that a pass holds [`MAX_GROUPS`] groups of up to 512 columns, 10 of 384 (160
/// tokens), one of [`generic::Q8_MAX_COLS`]. The weights are packed once per pass.
const PACK_WORDS: usize = 32 * 1024;
/// Most token groups of one pass.
const MAX_GROUPS: usize = 16;
/// Block scales of the groups of one pass, `[group][block][MT]`.
const SP_LEN: usize = MAX_GROUPS * MT * 8;
/// Widest `d_model` of [`wasm_simd128_ffn_q8`].
pub const FFN_MAX_D: usize = 1024;
/// Hidden units of one step of [`wasm_simd128_ffn_q8`]: one int8 scale per token.
const UNITS: usize = QT_BLOCK;
/// Pairs of rows (words) of the down projection's 64 units.
const UNIT_PAIRS: usize = UNITS / 2;
/// Longest `k` (rows of `q`) [`wasm_simd128_accumulate_q8_tokens`] takes; longer go to the
/// generic kernel. The feed-forward blocks use 64.
const ACC_MAX_K: usize = 128;
/// Columns of the down tiles: 2 vectors.
const DC: usize = 8;
/// Words of one packed panel of down-projection rows: 16 KiB, 128 columns of 64 units, which
/// stay in the L1 cache while every token tile of the pass runs over them.
const DOWN_WORDS: usize = 4096;
const _: () = assert!(QT_BLOCK.is_multiple_of(8) && UNITS.is_multiple_of(8));

/// Pairs of columns (words) of a packed row of `cols` values: `cols` rounded up to 8.
const fn pairs_of(cols: usize) -> usize {
    cols.div_ceil(8) * 4
}

/// Token groups of `cols` columns one pass holds (at least 1 for `cols <= Q8_MAX_COLS`).
fn groups_per_pass(cols: usize) -> usize {
    (PACK_WORDS / (pairs_of(cols) * MT))
        .min(SP_LEN / (qt_blocks(cols) * MT))
        .clamp(1, MAX_GROUPS)
}

/// 8 int8 values from `s[i..i + 8]`, sign-extended to 16-bit lanes (4 words of 2 values).
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

/// The 4 lanes of `v`, each broadcast to a vector.
#[inline(always)]
fn splat_lanes(v: v128) -> [v128; 4] {
    [
        i32x4_shuffle::<0, 0, 0, 0>(v, v),
        i32x4_shuffle::<1, 1, 1, 1>(v, v),
        i32x4_shuffle::<2, 2, 2, 2>(v, v),
        i32x4_shuffle::<3, 3, 3, 3>(v, v),
    ]
}

/// Stores 4 words at `out[at..at + 4]`.
#[inline(always)]
fn store_words(out: &mut [MaybeUninit<i32>], at: usize, v: v128) {
    let d = &mut out[at..at + 4];
    // SAFETY: d holds 4 words (16 bytes); v128.store is unaligned.
    unsafe { v128_store(d.as_mut_ptr() as *mut v128, v) };
}

/// Columns `2p` and `2p + 1` of an int8 row as one word of two i16 (low half first), zeros
/// past the row.
#[inline(always)]
fn pair_word(row: &[i8], p: usize) -> i32 {
    let at = |c: usize| row.get(c).map_or(0, |&v| v as i16 as u16 as u32);
    (at(2 * p) | at(2 * p + 1) << 16) as i32
}

/// Rows `t..t + nr` of the `cols`-wide rows `x` (empty when `nr == 0`, whatever `t`).
#[inline(always)]
fn quad_rows<T>(x: &[T], cols: usize, t: usize, nr: usize) -> &[T] {
    if nr == 0 {
        &[]
    } else {
        &x[t * cols..(t + nr) * cols]
    }
}

/// Packs the `rows.len() / cols <= 4` int8 rows `rows` as the tokens `t4..t4 + 4` of a group
/// for the product tiles: word `p * MT + t4 + j` holds columns `2p`, `2p + 1` of row `j`;
/// zeros past `cols` (up to `pairs` pairs) and for the missing rows. Writes exactly those
/// words.
fn pack_quad(rows: &[i8], cols: usize, pairs: usize, t4: usize, out: &mut [MaybeUninit<i32>]) {
    let nr = rows.len() / cols;
    assert!(nr <= 4 && t4 + 4 <= MT && 2 * pairs >= cols && out.len() >= pairs * MT);
    let row = |j: usize| &rows[j * cols..(j + 1) * cols];
    let c8 = cols & !7;
    let mut c = 0;
    while c < c8 {
        let v: [v128; 4] = core::array::from_fn(|j| {
            if j < nr {
                // SAFETY: c + 8 <= c8 <= cols, the length of the row.
                unsafe { load_i8x8(row(j), c) }
            } else {
                i16x8_splat(0)
            }
        });
        // v[j] holds pairs c/2..c/2 + 4 of row j; out[k] pair c/2 + k of the 4 rows.
        for (k, o) in transpose4(v).into_iter().enumerate() {
            store_words(out, (c / 2 + k) * MT + t4, o);
        }
        c += 8;
    }
    for p in c8 / 2..pairs {
        for j in 0..4 {
            let w = if j < nr { pair_word(row(j), p) } else { 0 };
            out[p * MT + t4 + j].write(w);
        }
    }
}

/// Words of one pair of columns of 2 weight rows packed by [`pack_rows2`]: each word
/// broadcast to a vector (`SPLAT`), or the 2 words alone.
const fn pair_words(splat: bool) -> usize {
    if splat { 8 } else { 2 }
}

/// Widens the `rt <= 2` rows `r0..r0 + rt` of `q` (`cols` each) for the product tiles: the
/// word of columns `2p`, `2p + 1` of row `r0 + r` at `(p * 2 + r) * 4`, broadcast to 4 words
/// (`SPLAT`), else at `p * 2 + r`; zeros past `cols` (up to `pairs` pairs) and for the rows
/// `rt..2`. Writes exactly `pairs * pair_words(SPLAT)` words.
fn pack_rows2<const SPLAT: bool>(
    q: &[i8],
    cols: usize,
    r0: usize,
    rt: usize,
    pairs: usize,
    out: &mut [MaybeUninit<i32>],
) {
    assert!(rt <= 2 && 2 * pairs >= cols && out.len() >= pairs * pair_words(SPLAT));
    let rows: [&[i8]; 2] = core::array::from_fn(|r| {
        if r < rt {
            &q[(r0 + r) * cols..(r0 + r + 1) * cols]
        } else {
            &[]
        }
    });
    let c8 = cols & !7;
    let mut c = 0;
    while c < c8 {
        let v: [v128; 2] = core::array::from_fn(|r| {
            if r < rt {
                // SAFETY: c + 8 <= c8 <= cols, the length of the row.
                unsafe { load_i8x8(rows[r], c) }
            } else {
                i16x8_splat(0)
            }
        });
        if SPLAT {
            for (r, &vr) in v.iter().enumerate() {
                for (k, s) in splat_lanes(vr).into_iter().enumerate() {
                    store_words(out, ((c / 2 + k) * 2 + r) * 4, s);
                }
            }
        } else {
            // Pairs c/2..c/2 + 4 of the 2 rows, interleaved by row.
            store_words(out, c, i32x4_shuffle::<0, 4, 1, 5>(v[0], v[1]));
            store_words(out, c + 4, i32x4_shuffle::<2, 6, 3, 7>(v[0], v[1]));
        }
        c += 8;
    }
    for p in c8 / 2..pairs {
        for (r, row) in rows.iter().enumerate() {
            let w = pair_word(row, p);
            if SPLAT {
                store_words(out, (p * 2 + r) * 4, i32x4_splat(w));
            } else {
                out[p * 2 + r].write(w);
            }
        }
    }
}

/// Packs columns `c0..c0 + cp` of the `k` rows of `q` (`cols` each) as pairs of rows for the
/// down tiles: word `(c / DC * pairs + p) * DC + c % DC` holds rows `2p`, `2p + 1` at column
/// `c0 + c`; zeros for the rows past `k` (up to `pairs` pairs) and the columns past `cp` (up
/// to a multiple of [`DC`]). Writes exactly `cp.div_ceil(DC) * DC * pairs` words.
fn pack_row_pairs(
    q: &[i8],
    cols: usize,
    k: usize,
    pairs: usize,
    (c0, cp): (usize, usize),
    out: &mut [MaybeUninit<i32>],
) {
    const _: () = assert!(DC == 8);
    let cpw = cp.div_ceil(DC) * DC;
    assert!(c0 + cp <= cols && q.len() >= k * cols && 2 * pairs >= k);
    assert!(out.len() >= cpw * pairs);
    let z = i16x8_splat(0);
    let cp8 = cp & !7;
    // Pairs of rows that are both in q; then the odd last row, then zeros.
    let full = k / 2;
    let mut c = 0;
    while c < cp8 {
        let tile = &mut out[c * pairs..(c + DC) * pairs];
        let (mut src, mut dst) = (q.as_ptr().wrapping_add(c0 + c), tile.as_mut_ptr());
        let store = |dst: *mut MaybeUninit<i32>, a: v128, b: v128| {
            let lo = i16x8_shuffle::<0, 8, 1, 9, 2, 10, 3, 11>(a, b);
            let hi = i16x8_shuffle::<4, 12, 5, 13, 6, 14, 7, 15>(a, b);
            // SAFETY: dst points at a pair's 8 words inside tile (DC * pairs words); unaligned.
            unsafe {
                v128_store(dst as *mut v128, lo);
                v128_store(dst.add(4) as *mut v128, hi);
            }
        };
        for _ in 0..full {
            // SAFETY: rows 2p, 2p + 1 < k lie in q (k * cols <= q.len()) and columns c0 + c..c0
            // + c + 8 <= c0 + cp <= cols; unaligned loads.
            let (a, b) = unsafe {
                (
                    i16x8_load_extend_i8x8(src),
                    i16x8_load_extend_i8x8(src.add(cols)),
                )
            };
            store(dst, a, b);
            src = src.wrapping_add(2 * cols);
            dst = dst.wrapping_add(DC);
        }
        for p in full..pairs {
            let a = if 2 * p < k {
                // SAFETY: row 2p < k lies in q, columns as above.
                unsafe { i16x8_load_extend_i8x8(src) }
            } else {
                z
            };
            store(tile[p * DC..].as_mut_ptr(), a, z);
        }
        c += 8;
    }
    for c in cp8..cpw {
        for p in 0..pairs {
            let w = |j: usize| {
                if j < k && c < cp {
                    q[j * cols + c0 + c] as i16 as u16 as u32
                } else {
                    0
                }
            };
            out[(c / DC * pairs + p) * DC + c % DC].write((w(2 * p) | w(2 * p + 1) << 16) as i32);
        }
    }
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

/// One register tile: the exact i32 sums over `np` pairs of `A` broadcast words of `a` (a
/// vector each, `sa` words from one pair to the next) times `B` vectors of `b` (`sb` words
/// from one pair to the next): `acc[i][j] = sum_p dot(b[p][j], a[p][i])`, two products per
/// lane (`i32x4.dot_i16x8_s`). Every load is a plain `v128.load` at a constant offset from
/// one of the two pointers, which V8 compiles to one instruction (a broadcast load,
/// `v128.load32_splat`, costs two when it has an offset).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[i][j]: the tile's two indices read best as such
fn tile<const A: usize, const B: usize>(
    a: &[i32],
    sa: usize,
    b: &[i32],
    sb: usize,
    np: usize,
) -> [[v128; B]; A] {
    assert!(np >= 1 && a.len() >= (np - 1) * sa + 4 * A && b.len() >= (np - 1) * sb + 4 * B);
    // SAFETY (both): pair p < np reads a's words p * sa..p * sa + 4A and b's words p * sb..p
    // * sb + 4B, inside the slices (asserted above). The first pair starts the sums.
    let mut acc = unsafe { tile_dots::<A, B>(a.as_ptr(), b.as_ptr()) };
    let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
    for _ in 1..np {
        pa = pa.wrapping_add(sa);
        pb = pb.wrapping_add(sb);
        let d = unsafe { tile_dots::<A, B>(pa, pb) };
        for i in 0..A {
            for j in 0..B {
                acc[i][j] = i32x4_add(acc[i][j], d[i][j]);
            }
        }
    }
    acc
}

/// The products of one pair in [`tile`]: `[i][j] = dot(b[j], a[i])` for the `A` broadcast
/// words at `pa` (a vector each) and the `B` vectors at `pb`.
///
/// # Safety
/// `pa` points at `4 A` readable words, `pb` at `4 B`.
#[inline(always)]
unsafe fn tile_dots<const A: usize, const B: usize>(
    pa: *const i32,
    pb: *const i32,
) -> [[v128; B]; A] {
    // SAFETY: as the caller guarantees; the loads are unaligned.
    unsafe {
        let av: [v128; A] = core::array::from_fn(|i| v128_load(pa.add(4 * i) as *const v128));
        let bv: [v128; B] = core::array::from_fn(|j| v128_load(pb.add(4 * j) as *const v128));
        av.map(|a| bv.map(|x| i32x4_dot_i16x8(x, a)))
    }
}

/// Pairs of one block of [`QT_BLOCK`] columns.
const BP: usize = QT_BLOCK / 2;

/// One product tile over all the blocks of a row: the packed pair of weight rows `wp`
/// ([`pack_rows2`], `pairs` pairs) times the packed group `xg` ([`pack_quad`]) with its block
/// scales `sg` (`[block][MT]`): `f[r][v]` lane `l` is `sum_b (dot_b as f32) * scale_b`
/// from `+0.0` for row `r` and token `4v + l`, block by block as the generic kernel sums.
#[inline(always)]
fn product_tile<const SPLAT: bool>(
    wp: &[i32],
    xg: &[i32],
    sg: &[f32],
    pairs: usize,
) -> [[v128; 4]; 2] {
    let nb = pairs.div_ceil(BP);
    let pw = pair_words(SPLAT);
    assert!(pairs.is_multiple_of(4) && wp.len() >= pairs * pw && xg.len() >= pairs * MT);
    assert!(sg.len() >= nb * MT);
    let mut f = [[f32x4_splat(0.0); 4]; 2];
    let (mut pa, mut pb) = (wp.as_ptr(), xg.as_ptr());
    for b in 0..nb {
        let np = BP.min(pairs - b * BP);
        // SAFETY (both): pair p < pairs reads wp's words pw p..pw (p + 1) and xg's words MT p..
        // MT p + 16, inside the slices (asserted above). The block's first pair starts the
        // sums (np >= 4), the others add to them.
        let [mut acc0, mut acc1] = unsafe { pair_dots::<SPLAT>(pa, pb) };
        (pa, pb) = (pa.wrapping_add(pw), pb.wrapping_add(MT));
        for _ in 1..np {
            let [d0, d1] = unsafe { pair_dots::<SPLAT>(pa, pb) };
            for v in 0..4 {
                acc0[v] = i32x4_add(acc0[v], d0[v]);
                acc1[v] = i32x4_add(acc1[v], d1[v]);
            }
            (pa, pb) = (pa.wrapping_add(pw), pb.wrapping_add(MT));
        }
        // SAFETY: block b < nb has its MT scales at sg[b * MT..] (asserted above); unaligned.
        let s: [v128; 4] = core::array::from_fn(|v| unsafe {
            v128_load(sg.as_ptr().add(b * MT + 4 * v) as *const v128)
        });
        for (r, acc) in [acc0, acc1].iter().enumerate() {
            for (v, &a) in acc.iter().enumerate() {
                // f + (dot as f32) * s: rounded product, then rounded sum.
                f[r][v] = f32x4_add(f[r][v], f32x4_mul(f32x4_convert_i32x4(a), s[v]));
            }
        }
    }
    f
}

/// The products of one pair of columns in a product tile: `[r][v]` is
/// `dot(tokens 4v..4v + 4, row r)` for the pair's packed weights at `pa` ([`pack_rows2`])
/// and packed tokens at `pb` ([`pack_quad`]).
///
/// # Safety
/// `pa` points at `pair_words(SPLAT)` readable words, `pb` at 16.
#[inline(always)]
unsafe fn pair_dots<const SPLAT: bool>(pa: *const i32, pb: *const i32) -> [[v128; 4]; 2] {
    // SAFETY: as the caller guarantees; the loads are unaligned.
    unsafe {
        let (w0, w1) = if SPLAT {
            (
                v128_load(pa as *const v128),
                v128_load(pa.add(4) as *const v128),
            )
        } else {
            (
                v128_load32_splat(pa as *const u32),
                v128_load32_splat(pa.add(1) as *const u32),
            )
        };
        let x: [v128; 4] = core::array::from_fn(|v| v128_load(pb.add(4 * v) as *const v128));
        [
            x.map(|x| i32x4_dot_i16x8(x, w0)),
            x.map(|x| i32x4_dot_i16x8(x, w1)),
        ]
    }
}

/// Token groups per pass from which the weights are packed with each word broadcast
/// ([`pack_rows2`]): that costs about 6 instructions more per pair of 2 rows, and saves one
/// per pair in every group's tile (a `v128.load32_splat` at an offset is 2 instructions in V8,
/// a `v128.load` one).
const SPLAT_GROUPS: usize = 6;

/// Every row of the int8 matrix `q` (`rows x cols`, row scales `ws`, `bias`) times the
/// packed token groups of one pass (`xw`: `ngroups` groups of `pairs_of(cols) * MT` words;
/// `sw`: their block scales, `[group][block][MT]`), with the generic kernel's bits: per token
/// and row, the exact i32 block sums times the token's block scale summed block by block
/// from `+0.0`, times the row scale, plus the bias. The rows are widened two at a time, once
/// per pass, into register tiles of 2 rows x 16 tokens; `emit(r0, rt, i, o)` takes the
/// results of rows `r0..r0 + rt` for group `i`, `o[r][v]` lane `l` being token `4v + l` of
/// the group (lanes past the group's tokens are to be ignored).
#[allow(clippy::too_many_arguments)]
fn rows_times_groups(
    q: &[i8],
    ws: &[f32],
    (rows, cols): (usize, usize),
    bias: Option<&[f32]>,
    xw: &[i32],
    sw: &[f32],
    ngroups: usize,
    mut emit: impl FnMut(usize, usize, usize, &[[v128; 4]; 2]),
) {
    let (pairs, nb) = (pairs_of(cols), qt_blocks(cols));
    let gw = pairs * MT;
    let mut wp = [MaybeUninit::<i32>::uninit(); 8 * generic::Q8_MAX_COLS / 2];
    let mut r0 = 0;
    while r0 < rows {
        let rt = 2.min(rows - r0);
        let splat = ngroups >= SPLAT_GROUPS;
        if splat {
            pack_rows2::<true>(q, cols, r0, rt, pairs, &mut wp);
        } else {
            pack_rows2::<false>(q, cols, r0, rt, pairs, &mut wp);
        }
        // SAFETY: pack_rows2 wrote wp[..pairs * pair_words(splat)].
        let wpw = unsafe { written(&wp, pairs * pair_words(splat)) };
        let at = |v: &[f32], r: usize| f32x4_splat(v[r0 + r.min(rt - 1)]);
        let sv = [at(ws, 0), at(ws, 1)];
        let bv = bias.map(|b| [at(b, 0), at(b, 1)]);
        for i in 0..ngroups {
            let (xg, sg) = (
                &xw[i * gw..(i + 1) * gw],
                &sw[i * nb * MT..(i + 1) * nb * MT],
            );
            let f = if splat {
                product_tile::<true>(wpw, xg, sg, pairs)
            } else {
                product_tile::<false>(wpw, xg, sg, pairs)
            };
            let o: [[v128; 4]; 2] = core::array::from_fn(|r| {
                core::array::from_fn(|v| {
                    let o = f32x4_mul(f[r][v], sv[r]);
                    match &bv {
                        Some(bv) => f32x4_add(o, bv[r]),
                        None => o,
                    }
                })
            });
            emit(r0, rt, i, &o);
        }
        r0 += rt;
    }
}

/// Writes the tile results `o` of rows `r0..r0 + rt` (see [`rows_times_groups`]) for the
/// `g` tokens of a group to `y` (`rows` values per token, the group's first token first).
#[inline(always)]
fn store_rows(y: &mut [f32], rows: usize, (r0, rt, g): (usize, usize, usize), o: &[[v128; 4]; 2]) {
    assert!(g >= 1 && r0 + rt <= rows && y.len() >= (g - 1) * rows + r0 + rt);
    let y = y.as_mut_ptr().wrapping_add(r0);
    for (v, (&a, &b)) in o[0].iter().zip(&o[1]).enumerate() {
        // Tokens 4v, 4v + 1 and 4v + 2, 4v + 3 of the 2 rows, as pairs (row r0, row r0 + 1).
        let lo = i32x4_shuffle::<0, 4, 1, 5>(a, b);
        let hi = i32x4_shuffle::<2, 6, 3, 7>(a, b);
        let at = |j: usize| y.wrapping_add((4 * v + j) * rows);
        let live = |j: usize| 4 * v + j < g;
        // SAFETY: a live token t < g has its rt values at (t * rows + r0..) + rt <= y.len()
        // (asserted above); the stores are unaligned.
        unsafe {
            if rt == 2 {
                if live(0) {
                    v128_store64_lane::<0>(lo, at(0) as *mut u64);
                }
                if live(1) {
                    v128_store64_lane::<1>(lo, at(1) as *mut u64);
                }
                if live(2) {
                    v128_store64_lane::<0>(hi, at(2) as *mut u64);
                }
                if live(3) {
                    v128_store64_lane::<1>(hi, at(3) as *mut u64);
                }
            } else {
                let r = a;
                if live(0) {
                    v128_store32_lane::<0>(r, at(0) as *mut u32);
                }
                if live(1) {
                    v128_store32_lane::<1>(r, at(1) as *mut u32);
                }
                if live(2) {
                    v128_store32_lane::<2>(r, at(2) as *mut u32);
                }
                if live(3) {
                    v128_store32_lane::<3>(r, at(3) as *mut u32);
                }
            }
        }
    }
}

/// The token groups of `n` tokens in passes: `pack(t, g, words, scales)` packs the group of
/// the `g <= MT` tokens from `t` (all `pairs_of(cols) * MT` words and `qt_blocks(cols) * MT`
/// scales, zeros for missing tokens), then `run(t0, groups, words, scales)` takes the pass of
/// the tokens from `t0`.
fn passes(
    cols: usize,
    n: usize,
    mut pack: impl FnMut(usize, usize, &mut [MaybeUninit<i32>], &mut [f32]),
    mut run: impl FnMut(usize, &[usize], &[i32], &[f32]),
) {
    let (gw, gs_len) = (pairs_of(cols) * MT, qt_blocks(cols) * MT);
    let per_pass = groups_per_pass(cols);
    let mut xw = [MaybeUninit::<i32>::uninit(); PACK_WORDS];
    let mut sw = [0f32; SP_LEN];
    let mut gs = [0usize; MAX_GROUPS];
    let mut t0 = 0;
    while t0 < n {
        let (mut m, mut t) = (0, t0);
        while m < per_pass && t < n {
            let g = MT.min(n - t);
            pack(
                t,
                g,
                &mut xw[m * gw..(m + 1) * gw],
                &mut sw[m * gs_len..(m + 1) * gs_len],
            );
            gs[m] = g;
            t += g;
            m += 1;
        }
        // SAFETY: pack wrote every word of the pass's m groups.
        let xww = unsafe { written(&xw, m * gw) };
        run(t0, &gs[..m], xww, &sw[..m * gs_len]);
        t0 = t;
    }
}

/// Packs the `g` already quantized tokens `xq` (`cols` each, block scales `xs`) as a group.
fn pack_q8_group(
    xq: &[i8],
    xs: &[f32],
    (g, cols): (usize, usize),
    out: &mut [MaybeUninit<i32>],
    sp: &mut [f32],
) {
    let (pairs, nb) = (pairs_of(cols), qt_blocks(cols));
    for t4 in (0..MT).step_by(4) {
        let nr = g.saturating_sub(t4).min(4);
        pack_quad(quad_rows(xq, cols, t4, nr), cols, pairs, t4, out);
    }
    for b in 0..nb {
        for t in 0..MT {
            sp[b * MT + t] = if t < g { xs[t * nb + b] } else { 0.0 };
        }
    }
}

/// Scratch of [`quantize_group`]: 4 quantized tokens.
type QuadScratch = [i8; 4 * generic::Q8_MAX_COLS];

/// Quantizes the `g` f32 tokens `x` (`cols` each, [`wasm_simd128_quantize_i8_token`]) and
/// packs them as a group, 4 tokens at a time (through `q`).
fn quantize_group(
    x: &[f32],
    (g, cols): (usize, usize),
    q: &mut QuadScratch,
    out: &mut [MaybeUninit<i32>],
    sp: &mut [f32],
) {
    let (pairs, nb) = (pairs_of(cols), qt_blocks(cols));
    let mut s = [0f32; 4 * generic::Q8_MAX_COLS / QT_BLOCK];
    for t4 in (0..MT).step_by(4) {
        let nr = g.saturating_sub(t4).min(4);
        for j in 0..nr {
            let t = t4 + j;
            wasm_simd128_quantize_i8_token(
                &x[t * cols..(t + 1) * cols],
                &mut q[j * cols..(j + 1) * cols],
                &mut s[j * nb..(j + 1) * nb],
            );
        }
        pack_quad(&q[..nr * cols], cols, pairs, t4, out);
        for b in 0..nb {
            for j in 0..4 {
                sp[b * MT + t4 + j] = if j < nr { s[j * nb + b] } else { 0.0 };
            }
        }
    }
}

/// simd128 [`super::matmul_q8_tokens`]: the same bits (exact i32 block dots, the generic float
/// sum and epilogue). Shapes as there; non-int8 weights or `cols > 4096` go to the generic
/// kernel.
///
/// The tokens are packed in groups of 16 as 16-bit column pairs interleaved by token, as many
/// groups per pass as 128 KiB hold; each pair of weight rows is widened once per pass (each
/// 16-bit column pair broadcast to a vector) and runs over every group: `i32x4.dot_i16x8_s` of
/// 4 tokens' pairs with a row's pair, in register tiles of 2 rows x 16 tokens. The exact i32
/// block sums are converted and scaled per block as the generic kernel does.
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
    let nb = qt_blocks(cols);
    if cols == 0
        || cols > generic::Q8_MAX_COLS
        || xq.len() != n * cols
        || xs.len() != n * nb
        || y.len() != n * rows
    {
        return generic::matmul_q8_tokens(w, xq, xs, n, bias, y);
    }
    passes(
        cols,
        n,
        |t, g, out, sp| {
            let (xq, xs) = (&xq[t * cols..(t + g) * cols], &xs[t * nb..(t + g) * nb]);
            pack_q8_group(xq, xs, (g, cols), out, sp);
        },
        |t0, gs, xw, sw| product_pass(q, scales, (rows, cols), bias, (t0, gs), xw, sw, y),
    );
}

/// One pass of [`wasm_simd128_matmul_q8_tokens`]: the groups `gs` of tokens from `t0`.
#[allow(clippy::too_many_arguments)]
fn product_pass(
    q: &[i8],
    scales: &[f32],
    (rows, cols): (usize, usize),
    bias: Option<&[f32]>,
    (t0, gs): (usize, &[usize]),
    xw: &[i32],
    sw: &[f32],
    y: &mut [f32],
) {
    let mut starts = [0usize; MAX_GROUPS];
    let mut t = t0;
    for (s, &g) in starts.iter_mut().zip(gs) {
        *s = t;
        t += g;
    }
    let emit = |r0: usize, rt: usize, i: usize, o: &[[v128; 4]; 2]| {
        let (ts, g) = (starts[i], gs[i]);
        store_rows(&mut y[ts * rows..(ts + g) * rows], rows, (r0, rt, g), o);
    };
    rows_times_groups(q, scales, (rows, cols), bias, xw, sw, gs.len(), emit);
}

/// simd128 [`super::matmul_i8_i8_token`]: the same bits. Each token is quantized
/// ([`wasm_simd128_quantize_i8_token`]) and packed as [`wasm_simd128_matmul_q8_tokens`]
/// packs, a whole pass of token groups at a time. Shapes as there; other cases take the
/// generic composition.
pub fn wasm_simd128_matmul_i8_i8_token(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    match w.weights() {
        Weights::I8 { q, scales }
            if cols > 0
                && cols <= generic::Q8_MAX_COLS
                && x.len() == n * cols
                && y.len() == n * rows =>
        {
            let mut qs = [0i8; 4 * generic::Q8_MAX_COLS];
            passes(
                cols,
                n,
                |t, g, out, sp| {
                    quantize_group(&x[t * cols..(t + g) * cols], (g, cols), &mut qs, out, sp)
                },
                |t0, gs, xw, sw| product_pass(q, scales, (rows, cols), bias, (t0, gs), xw, sw, y),
            );
        }
        _ => generic::matmul_i8_i8_token_with(
            wasm_simd128_quantize_i8_token,
            wasm_simd128_matmul_q8_tokens,
            w,
            x,
            n,
            bias,
            y,
        ),
    }
}

/// `out[t][c] += (sum_j hq[t][j] * q[j][c]) as f32 * hs[t]` for the token groups `hw` (`k`
/// values per token, `pairs = pairs_of(k)` pairs, each token's pair word broadcast to a
/// vector: vector `p * MT + t` of a group, `gs` tokens per group) and the `k` int8 rows of
/// `q` (`cols` each): the generic kernel's bits (exact i32 sums, then one multiply and one
/// add). The rows of `q` are packed by pairs, one panel of columns at a time, once for every
/// group; register tiles of 4 tokens x 8 columns.
fn down_groups(
    out: &mut [f32],
    q: &[i8],
    (k, cols): (usize, usize),
    hw: &[i32],
    hs: &[f32],
    gs: &[usize],
) {
    let pairs = pairs_of(k);
    let gw = pairs * MT * 4;
    let panel = ((DOWN_WORDS / pairs) & !(DC - 1)).min(cols.div_ceil(DC) * DC);
    let mut qp = [MaybeUninit::<i32>::uninit(); DOWN_WORDS];
    let mut c0 = 0;
    while c0 < cols {
        let cp = panel.min(cols - c0);
        let cpw = cp.div_ceil(DC) * DC;
        pack_row_pairs(q, cols, k, pairs, (c0, cp), &mut qp);
        // SAFETY: pack_row_pairs wrote qp[..cpw * pairs].
        let qpw = unsafe { written(&qp, cpw * pairs) };
        let mut t0 = 0;
        for (i, &g) in gs.iter().enumerate() {
            let hg = &hw[i * gw..(i + 1) * gw];
            let mut t4 = 0;
            while t4 < g {
                let nt = 4.min(g - t4);
                let hsv: [v128; 4] =
                    core::array::from_fn(|t| f32x4_splat(hs[t0 + t4 + t.min(nt - 1)]));
                let ot = &mut out[(t0 + t4) * cols + c0..(t0 + t4 + nt - 1) * cols + c0 + cp];
                let mut c = 0;
                while c < cp {
                    let acc = tile::<4, 2>(&hg[t4 * 4..], MT * 4, &qpw[c * pairs..], DC, pairs);
                    add_down_tile(ot, cols, c, DC.min(cp - c), nt, &acc, &hsv);
                    c += DC;
                }
                t4 += 4;
            }
            t0 += g;
        }
        c0 += cp;
    }
}

/// `out[t * cols + c..][..live] += (acc[t] as f32) * hs[t]` for the `nt <= 4` tokens of a
/// down tile (lane = column), as the generic kernel rounds: one product, one sum.
#[inline(always)]
fn add_down_tile(
    out: &mut [f32],
    cols: usize,
    c: usize,
    live: usize,
    nt: usize,
    acc: &[[v128; 2]; 4],
    hs: &[v128; 4],
) {
    assert!(nt >= 1 && live <= DC && out.len() >= (nt - 1) * cols + c + live);
    for t in 0..4 {
        if t >= nt {
            break;
        }
        let m: [v128; 2] =
            core::array::from_fn(|v| f32x4_mul(f32x4_convert_i32x4(acc[t][v]), hs[t]));
        let o = out.as_mut_ptr().wrapping_add(t * cols + c);
        if live == DC {
            // SAFETY: token t's columns c..c + 8 lie in out (asserted above); unaligned.
            unsafe {
                let o0 = o as *mut v128;
                let o1 = o.add(4) as *mut v128;
                v128_store(o0, f32x4_add(v128_load(o0), m[0]));
                v128_store(o1, f32x4_add(v128_load(o1), m[1]));
            }
        } else {
            let l = [lanes4(m[0]), lanes4(m[1])];
            for (j, ov) in out[t * cols + c..t * cols + c + live]
                .iter_mut()
                .enumerate()
            {
                *ov += l[j / 4][j % 4];
            }
        }
    }
}

/// Packs the `g <= MT` int8 rows `hq` (`k` values each) for [`down_groups`]: vector `p * MT
/// + t` (words `4 (p MT + t)..`) broadcasts values `2p`, `2p + 1` of row `t` (zeros past `k`
/// up to `pairs` pairs and for the rows `g..MT`). Writes exactly `pairs * MT * 4` words.
fn pack_down_group(hq: &[i8], k: usize, g: usize, pairs: usize, out: &mut [MaybeUninit<i32>]) {
    assert!(g <= MT && hq.len() >= g * k && out.len() >= pairs * MT * 4);
    let k8 = k & !7;
    for t in 0..MT {
        let row = if t < g { &hq[t * k..(t + 1) * k] } else { &[] };
        let mut c = 0;
        while c < k8 && t < g {
            // SAFETY: c + 8 <= k8 <= k, the length of the row.
            let v = unsafe { load_i8x8(row, c) };
            for (j, s) in splat_lanes(v).into_iter().enumerate() {
                store_words(out, ((c / 2 + j) * MT + t) * 4, s);
            }
            c += 8;
        }
        for p in if t < g { k8 / 2 } else { 0 }..pairs {
            store_words(out, (p * MT + t) * 4, i32x4_splat(pair_word(row, p)));
        }
    }
}

/// simd128 [`super::accumulate_q8_tokens`]: the same bits (exact i32 sums, then one multiply
/// and one add per element). Shapes as there; `k > 128` goes to the generic kernel.
///
/// The tokens' rows are packed in groups of 16 (16-bit pairs along `k`, each broadcast to a
/// vector), the rows of `q` by pairs of rows per panel of columns, once for all the groups
/// ([`down_groups`]).
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
    if k == 0
        || k > ACC_MAX_K
        || cols == 0
        || cols > generic::Q8_MAX_COLS
        || hq.len() != n * k
        || hs.len() < n
        || out.len() < n * cols
        || q.len() < k * cols
    {
        return generic::accumulate_q8_tokens(out, q, cols, hq, hs, n);
    }
    let pairs = pairs_of(k);
    let gw = pairs * MT * 4;
    let mut hw = [MaybeUninit::<i32>::uninit(); 4 * MT * ACC_MAX_K / 2 * 4];
    let mut gs = [0usize; MAX_GROUPS];
    let per_pass = (hw.len() / gw).min(MAX_GROUPS);
    let mut t0 = 0;
    while t0 < n {
        let (mut m, mut t) = (0, t0);
        while m < per_pass && t < n {
            let g = MT.min(n - t);
            pack_down_group(
                &hq[t * k..(t + g) * k],
                k,
                g,
                pairs,
                &mut hw[m * gw..(m + 1) * gw],
            );
            gs[m] = g;
            t += g;
            m += 1;
        }
        // SAFETY: pack_down_group wrote every word of the m groups.
        let hww = unsafe { written(&hw, m * gw) };
        down_groups(
            &mut out[t0 * cols..t * cols],
            &q[..k * cols],
            (k, cols),
            hww,
            &hs[t0..t],
            &gs[..m],
        );
        t0 = t;
    }
}

/// The dense int8 feed-forward of `n` tokens `x` (`n x d`), fused: `out[t] += sum_j
/// quantized(act(up_j . x_t + up_bias_j) * s_j) * down_t[j]`, with the bits of the unfused
/// fast kernels that [`crate::ffn::ffn_with`] runs otherwise on wasm
/// ([`wasm_simd128_matmul_q8_tokens`], [`wasm_simd128_gelu_erf`] or
/// [`super::activate_fast`], the down scales, [`wasm_simd128_quantize_i8_token`] per 64 units,
/// [`wasm_simd128_accumulate_q8_tokens`]); `up` (`d_ff x d`) and `down_t` (`d_ff x d`, row
/// scales `s_j`) are int8, `out` holds the down bias (or zeros) on entry.
///
/// All the tokens of a pass (up to 16 groups of 16) share each step of 64 hidden units: its
/// up rows are widened once and their tiles (2 units x 16 tokens, lane = token) stay in
/// registers through the activation and the down scales into a stack buffer; each token's
/// 64 values then get one int8 scale (lane by lane: the maximum over the units is exact in
/// any order), and the step's down rows are packed once per panel of columns for all the
/// tokens. Returns `false`, having done nothing, when the shapes are not the fused kernel's:
/// `d` up to [`FFN_MAX_D`], `d_ff` a multiple of 64, int8 weights.
pub fn wasm_simd128_ffn_q8(
    up: &Matrix<'_>,
    up_bias: Option<&[f32]>,
    act: Activation,
    down_t: &Matrix<'_>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> bool {
    let (d_ff, d) = (up.rows(), up.cols());
    let (Some((up_q, up_s)), Some((down_q, down_s))) = (up.int8(), down_t.int8()) else {
        return false;
    };
    let fits = d > 0
        && d <= FFN_MAX_D
        && d_ff.is_multiple_of(UNITS)
        && down_t.rows() == d_ff
        && down_t.cols() == d
        && up_bias.is_none_or(|b| b.len() == d_ff)
        && x.len() == n * d
        && out.len() == n * d;
    if !fits {
        return false;
    }
    let gw = UNIT_PAIRS * MT * 4;
    // The step's values, [group][unit][MT] (lane = token).
    let mut h = [MaybeUninit::<v128>::uninit(); MAX_GROUPS * UNITS * MT / 4];
    let mut hw = [MaybeUninit::<i32>::uninit(); MAX_GROUPS * UNIT_PAIRS * MT * 4];
    let mut hs = [0f32; MAX_GROUPS * MT];
    let activate = |v: v128| {
        if act == Activation::GeluErf {
            gelu_erf_f32x4(v)
        } else {
            let l = lanes4(v).map(|x| generic::activate_fast(act, x));
            f32x4(l[0], l[1], l[2], l[3])
        }
    };
    let mut q = [0i8; 4 * generic::Q8_MAX_COLS];
    passes(
        d,
        n,
        |t, g, words, sp| quantize_group(&x[t * d..(t + g) * d], (g, d), &mut q, words, sp),
        |t0, gs, xw, sw| {
            let nt: usize = gs.iter().sum();
            let out = &mut out[t0 * d..(t0 + nt) * d];
            for j0 in (0..d_ff).step_by(UNITS) {
                let ds = &down_s[j0..j0 + UNITS];
                let emit = |r0: usize, rt: usize, i: usize, o: &[[v128; 4]; 2]| {
                    for (r, orow) in o.iter().enumerate().take(rt) {
                        let s = f32x4_splat(ds[r0 + r]);
                        for (v, &ov) in orow.iter().enumerate() {
                            // The unit's value times its down scale (h_j * s_j, as ffn_q8).
                            h[(i * UNITS + r0 + r) * 4 + v].write(f32x4_mul(activate(ov), s));
                        }
                    }
                };
                let uq = &up_q[j0 * d..(j0 + UNITS) * d];
                let bias = up_bias.map(|b| &b[j0..j0 + UNITS]);
                let us = &up_s[j0..j0 + UNITS];
                rows_times_groups(uq, us, (UNITS, d), bias, xw, sw, gs.len(), emit);
                // SAFETY: rows_times_groups emitted every unit of every group of the pass.
                let hv = unsafe { written(&h, gs.len() * UNITS * 4) };
                let mut t = 0;
                for (i, &g) in gs.iter().enumerate() {
                    let hg = &hv[i * UNITS * 4..(i + 1) * UNITS * 4];
                    let dst = &mut hw[i * gw..(i + 1) * gw];
                    let sc = quantize_units(hg, dst);
                    for (v, &s) in sc.iter().enumerate() {
                        for (j, &sv) in lanes4(s).iter().enumerate() {
                            if 4 * v + j < g {
                                hs[t + 4 * v + j] = sv;
                            }
                        }
                    }
                    t += g;
                }
                // SAFETY: quantize_units wrote every word of the pass's groups.
                let hww = unsafe { written(&hw, gs.len() * gw) };
                let dq = &down_q[j0 * d..(j0 + UNITS) * d];
                down_groups(out, dq, (UNITS, d), hww, &hs[..nt], gs);
            }
        },
    );
    true
}

/// [`super::quantize_i8`] of each token's 64 values `h` (`[unit][MT]` as 4 vectors per unit,
/// lane = token) lane by lane, the same bits as [`quantize_block`] on the token's values:
/// packs them for [`down_groups`] (vector `p * MT + t` broadcasts units `2p`, `2p + 1` of
/// token `t`) and returns the scales (lane = token).
fn quantize_units(h: &[v128], out: &mut [MaybeUninit<i32>]) -> [v128; 4] {
    assert!(h.len() >= UNITS * 4 && out.len() >= UNIT_PAIRS * MT * 4);
    let mut mx = [f32x4_splat(0.0); 4];
    for u in h[..UNITS * 4].chunks_exact(4) {
        for (m, &x) in mx.iter_mut().zip(u) {
            *m = f32x4_pmax(*m, f32x4_abs(x));
        }
    }
    let (k127, half, neg_half, zero) = (
        f32x4_splat(127.0),
        f32x4_splat(0.5),
        f32x4_splat(-0.5),
        f32x4_splat(0.0),
    );
    // An all-zero token gets inv = +inf, so t = 0 * inf = NaN, which rounds to 0: the zeros
    // and the scale 0 of the generic kernel.
    let inv = mx.map(|m| f32x4_div(k127, m));
    let round = |x: v128, iv: v128| {
        let t = f32x4_mul(x, iv);
        let hh = v128_bitselect(neg_half, half, f32x4_lt(t, zero));
        i32x4_trunc_sat_f32x4(f32x4_add(t, hh))
    };
    for p in 0..UNIT_PAIRS {
        for v in 0..4 {
            let a = round(h[(2 * p) * 4 + v], inv[v]);
            let b = round(h[(2 * p + 1) * 4 + v], inv[v]);
            // Low 16 bits of each lane of a, then of b: the pair word of each token.
            let w = i16x8_shuffle::<0, 8, 2, 10, 4, 12, 6, 14>(a, b);
            for (j, s) in splat_lanes(w).into_iter().enumerate() {
                store_words(out, (p * MT + 4 * v + j) * 4, s);
            }
        }
    }
    mx.map(|m| f32x4_div(m, k127))
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
    let max = generic::abs_max(lanes.iter().chain(chunks.remainder()));
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
    for h in 0..ATTN_LANES / 8 {
        let hm = 0xFFu16 << (8 * h);
        // The keys every lane of this half sees; the half is uniform when no key is seen by
        // only some of its lanes (always so inside a sequence without padding or causal mask).
        let (mut keys, mut uniform) = (0u16, true);
        for (j, &m) in vis[..nk].iter().enumerate() {
            if m & hm == hm {
                keys |= 1 << j;
            } else if m & hm != 0 {
                uniform = false;
            }
        }
        let up = rescaled & hm != 0;
        if uniform {
            if keys != 0 || up {
                let tile = (&w, v, stride, &off);
                acc_keys_half(st.acc, hd, 8 * h, keys, up.then_some(&rescale), tile);
            }
            continue;
        }
        for (l, &c) in rescale.iter().enumerate().skip(8 * h).take(8) {
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
            acc_keys_tail(acc, hd4, seen, &w, l, v, stride);
        }
    }
}

/// Columns `hd4..` of lane `l`'s accumulator (`hd4` the head width rounded down to 4), one
/// by one over the keys of `seen`, as the generic loop does.
#[inline(always)]
fn acc_keys_tail(
    acc: &mut [f32],
    hd4: usize,
    seen: u16,
    w: &[f32; ATTN_BLOCK],
    l: usize,
    v: &[f32],
    stride: usize,
) {
    for (dd, a) in acc.iter_mut().enumerate().skip(hd4) {
        let mut m = seen;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            *a += w[j * ATTN_LANES + l] * v[j * stride + dd];
        }
    }
}

/// One key of [`acc_keys_half`]: `at[d][x] += wj[4x..4x + 4] * vj[d]` (`wj`: the key's 8
/// weights of the half, `vj`: its 4 values).
///
/// # Safety
/// `wj` and `vj` point at 8 and 4 readable f32.
#[inline(always)]
unsafe fn half_key(at: &mut [[v128; 2]; 4], wj: *const f32, vj: *const f32) {
    // SAFETY: as the caller guarantees; the loads are unaligned.
    let (wv, vv) = unsafe {
        (
            [
                v128_load(wj as *const v128),
                v128_load(wj.add(4) as *const v128),
            ],
            v128_load(vj as *const v128),
        )
    };
    let sp = splat_lanes(vv);
    for (a, &x) in at.iter_mut().zip(&sp) {
        a[0] = f32x4_add(a[0], f32x4_mul(wv[0], x));
        a[1] = f32x4_add(a[1], f32x4_mul(wv[1], x));
    }
}

/// The accumulators of the 8 lanes `l0..l0 + 8` that all see exactly the keys `keys`: each
/// row times its lane's `rescale` factor (when given; 1 for the lanes that keep their
/// maximum, which changes no bits), then `+= w_j * v_j` for the keys in increasing order, the
/// generic operations element by element. 4 columns at a time with the lanes as vector lanes
/// (the rows transposed in and out): each key then needs 2 weight vectors, as stored, and
/// one value vector whose 4 columns are broadcast by shuffles, for 2 x 4 accumulators.
#[inline(always)]
fn acc_keys_half(
    acc: &mut [f32],
    hd: usize,
    l0: usize,
    keys: u16,
    rescale: Option<&[f32; ATTN_LANES]>,
    (w, v, stride, off): (&[f32; ATTN_BLOCK], &[f32], usize, &[usize; ATTN_TILE]),
) {
    let hd4 = hd & !3;
    let acc = &mut acc[l0 * hd..(l0 + 8) * hd];
    assert!(acc.len() == 8 * hd);
    let cv = rescale.map(|r| [ld4(&r[l0..]), ld4(&r[l0 + 4..])]);
    // A contiguous run of keys from 0 (the usual case) runs as a counted loop.
    let run = if keys.trailing_ones() + keys.leading_zeros() == 16 {
        Some(keys.trailing_ones() as usize)
    } else {
        None
    };
    let last = 15 - keys.leading_zeros() as usize;
    assert!(l0 + 8 <= ATTN_LANES && (keys == 0 || v.len() >= off[last] + hd));
    let ap = acc.as_mut_ptr();
    let mut d0 = 0;
    while d0 < hd4 {
        // SAFETY: row i < 8 holds columns d0..d0 + 4 <= hd4 <= hd at i * hd + d0 (acc has 8
        // rows of hd); unaligned loads.
        let row = |i: usize| unsafe { v128_load(ap.add(i * hd + d0) as *const v128) };
        let (t0, t1) = (
            transpose4([row(0), row(1), row(2), row(3)]),
            transpose4([row(4), row(5), row(6), row(7)]),
        );
        // at[d][x]: column d0 + d of the lanes l0 + 4x..l0 + 4x + 4.
        let mut at: [[v128; 2]; 4] = core::array::from_fn(|d| [t0[d], t1[d]]);
        if let Some(cv) = &cv {
            for a in at.iter_mut() {
                a[0] = f32x4_mul(a[0], cv[0]);
                a[1] = f32x4_mul(a[1], cv[1]);
            }
        }
        // SAFETY (both loops): key j < nk has its weights w[j * 16 + l0..][..8] inside w (l0
        // + 8 <= 16) and its values v[off[j] + d0..][..4] inside v (d0 + 4 <= hd, asserted).
        match run {
            Some(n) => {
                let (mut wj, mut vj) = (w[l0..].as_ptr(), v[d0..].as_ptr());
                for _ in 0..n {
                    unsafe { half_key(&mut at, wj, vj) };
                    wj = wj.wrapping_add(ATTN_LANES);
                    vj = vj.wrapping_add(stride);
                }
            }
            None => {
                let mut m = keys;
                while m != 0 {
                    let j = m.trailing_zeros() as usize & (ATTN_TILE - 1);
                    m &= m - 1;
                    let (wj, vj) = (&w[j * ATTN_LANES + l0..], &v[off[j] + d0..]);
                    unsafe { half_key(&mut at, wj.as_ptr(), vj.as_ptr()) };
                }
            }
        }
        let r0 = transpose4([at[0][0], at[1][0], at[2][0], at[3][0]]);
        let r1 = transpose4([at[0][1], at[1][1], at[2][1], at[3][1]]);
        for (i, &r) in r0.iter().chain(&r1).enumerate() {
            // SAFETY: as the loads above; unaligned store.
            unsafe { v128_store(ap.add(i * hd + d0) as *mut v128, r) };
        }
        d0 += 4;
    }
    if hd4 < hd {
        for (i, row) in acc.chunks_exact_mut(hd).enumerate() {
            if let Some(r) = rescale {
                let c = r[l0 + i];
                row[hd4..].iter_mut().for_each(|a| *a *= c);
            }
            acc_keys_tail(row, hd4, keys, w, l0 + i, v, stride);
        }
    }
}

/// simd128 [`super::attn::attn_scores_rows`]: the same bits ([`wasm_simd128_attn_scores_tile`],
/// then the tile transposed 4 x 4 into the lane-major rows).
#[allow(clippy::too_many_arguments)]
pub fn wasm_simd128_attn_scores_rows(
    qt: &[f32],
    hd: usize,
    k: &[f32],
    stride: usize,
    nk: usize,
    scale: f32,
    rows: &mut [f32],
    rs: usize,
) {
    let nk = nk.min(ATTN_TILE);
    let mut s = [0f32; ATTN_BLOCK];
    wasm_simd128_attn_scores_tile(qt, hd, k, stride, nk, scale, &mut s);
    let nk4 = nk & !3;
    for l4 in (0..ATTN_LANES).step_by(4) {
        for j4 in (0..nk4).step_by(4) {
            let keys: [v128; 4] = core::array::from_fn(|i| ld4(&s[(j4 + i) * ATTN_LANES + l4..]));
            for (i, lane) in transpose4(keys).into_iter().enumerate() {
                st4(&mut rows[(l4 + i) * rs + j4..], lane);
            }
        }
        for j in nk4..nk {
            for i in 0..4 {
                rows[(l4 + i) * rs + j] = s[j * ATTN_LANES + l4 + i];
            }
        }
    }
}

/// simd128 [`super::attn::attn_softmax_lanes`]: the same bits. Per query the weights
/// `e^(s_i - m)` of 4 slots at a time ([`wasm_simd128_exp_f32x4`], the bits of
/// [`super::attn::exp_poly`]), their sum in slot order, and the weighted value rows 16
/// columns at a time in registers (a multiply, then an add, per element and slot in slot
/// order, as the generic loop).
#[allow(clippy::too_many_arguments)]
pub fn wasm_simd128_attn_softmax_lanes(
    scores: &[f32],
    idx: &[u16],
    lens: &[u32],
    k: usize,
    v: &[f32],
    stride: usize,
    hd: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let mut w = [0f32; super::attn::ATTN_SELECT_MAX_K + 4];
    for (l, &n) in lens.iter().enumerate().take(ATTN_LANES) {
        let n = (n as usize).min(k);
        if n > super::attn::ATTN_SELECT_MAX_K {
            // Only the block selection's k reaches this kernel; larger ones take the generic.
            super::attn::attn_softmax_rows(
                &scores[l * k..][..n],
                &idx[l * k..][..n],
                v,
                stride,
                hd,
                &mut out[l * out_stride..][..hd],
            );
            continue;
        }
        let (sc, ix) = (&scores[l * k..][..n], &idx[l * k..][..n]);
        let o = &mut out[l * out_stride..][..hd];
        o.fill(0.0);
        if n == 0 {
            continue;
        }
        let m = sc
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        let mv = f32x4_splat(m);
        for (i, c) in sc.chunks(4).enumerate() {
            let x = [0, 1, 2, 3].map(|j| c.get(j).copied().unwrap_or(m));
            let e = wasm_simd128_exp_f32x4(f32x4_sub(f32x4(x[0], x[1], x[2], x[3]), mv));
            st4(&mut w[4 * i..], e);
        }
        let sum = w[..n].iter().fold(0.0f32, |s, &x| s + x);
        // Every named row lies in v (the generic kernel's slices panic otherwise).
        assert!(ix.iter().all(|&j| j as usize * stride + hd <= v.len()));
        let hd4 = hd & !3;
        let mut d = 0;
        while d < hd4 {
            let wd = (hd4 - d).min(16) / 4;
            let mut acc = [f32x4_splat(0.0); 4];
            for (&wi, &j) in w[..n].iter().zip(ix) {
                let (ws, row) = (f32x4_splat(wi), &v[j as usize * stride + d..]);
                for (a, c) in acc.iter_mut().zip(row.chunks_exact(4)).take(wd) {
                    *a = f32x4_add(*a, f32x4_mul(ws, ld4(c)));
                }
            }
            for (c, a) in o[d..].chunks_exact_mut(4).zip(&acc).take(wd) {
                st4(c, *a);
            }
            d += 4 * wd;
        }
        for (dd, od) in o.iter_mut().enumerate().skip(hd4) {
            for (&wi, &j) in w[..n].iter().zip(ix) {
                *od += wi * v[j as usize * stride + dd];
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// [`super::attn::attn_rank`] of 4 lanes.
#[inline(always)]
fn rank4(x: v128) -> v128 {
    let b = f32x4_add(x, f32x4_splat(0.0));
    let r = v128_xor(b, u32x4_shr(i32x4_shr(b, 31), 1));
    v128_bitselect(i32x4_splat(super::attn::ATTN_RANK_NAN), r, f32x4_ne(x, x))
}

/// simd128 [`super::attn::attn_topk_block`]: the same slots. The generic kernel's group
/// bound (the two best visible scores of each of the 16 groups of keys, one group per lane
/// of 4 vectors) and the candidates' ranks by vector compares; the exact selection of the
/// `k`-th best as there.
#[allow(clippy::too_many_arguments)]
pub fn wasm_simd128_attn_topk_block(
    row: &[f32],
    vis: &[u16],
    kb0: usize,
    k: usize,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut super::attn::AttnTopkWork,
) -> usize {
    use super::attn::{ATTN_RANK_NAN, attn_rank, full_slots_bound, keep_best, topk_block_sizes};
    let (k, nt, len) = topk_block_sizes(row, vis, k, scores, idx, len);
    let (row, vis) = (&row[..nt * ATTN_TILE], &vis[..nt]);
    if k == 0 {
        return 0;
    }
    let ninf = f32x4_splat(f32::NEG_INFINITY);
    let (mut m1, mut m2) = ([ninf; 4], [ninf; 4]);
    for (x, &v) in row.chunks_exact(ATTN_TILE).zip(vis) {
        let masks = lane_masks(v);
        for g in 0..4 {
            let x = v128_bitselect(ld4(&x[4 * g..]), ninf, masks[g]);
            // if x > m1 { m2 = m1; m1 = x } else if x > m2 { m2 = x }, as generic (an
            // invisible key is -inf, and NaN compares false: neither changes anything).
            let (gt1, gt2) = (f32x4_gt(x, m1[g]), f32x4_gt(x, m2[g]));
            m2[g] = v128_bitselect(m1[g], v128_bitselect(x, m2[g], gt2), gt1);
            m1[g] = v128_bitselect(x, m1[g], gt1);
        }
    }
    let m = if k <= ATTN_TILE { &m1 } else { &m2 };
    let b = m
        .iter()
        .flat_map(|&v| lanes4(v))
        .fold(f32::INFINITY, |b, x| if x < b { x } else { b });
    let group = if b > f32::NEG_INFINITY {
        attn_rank(b)
    } else {
        ATTN_RANK_NAN
    };
    let bound = full_slots_bound(&scores[..len], k, group);
    // Candidates in increasing key order: the old slots, then the block.
    let super::attn::AttnTopkWork { s, j: ci, r, .. } = work;
    let mut n = 0;
    let mut push = |x: f32, j: usize, rank: i32| {
        s[n] = x;
        ci[n] = j as i32;
        r[n] = rank;
        n += 1;
    };
    for (&x, &j) in scores[..len].iter().zip(&idx[..len]) {
        let rank = attn_rank(x);
        if rank >= bound {
            push(x, j as usize, rank);
        }
    }
    let bv = i32x4_splat(bound);
    for (t, (x, &v)) in row.chunks_exact(ATTN_TILE).zip(vis).enumerate() {
        for g in 0..4 {
            let mut m = (i32x4_bitmask(i32x4_ge(rank4(ld4(&x[4 * g..])), bv)) as u16)
                & (v >> (4 * g))
                & 0xF;
            while m != 0 {
                let i = 4 * g + m.trailing_zeros() as usize;
                m &= m - 1;
                let xi = x[i];
                push(xi, kb0 + t * ATTN_TILE + i, attn_rank(xi));
            }
        }
    }
    keep_best(work, n, k, scores, idx)
}
