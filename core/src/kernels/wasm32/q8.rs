//! Int8-activation products (tokens packed by groups, weight rows widened once per pass)
//! and the quantization of token rows.

use core::arch::wasm32::*;

use super::simd::*;

/// 8 int8 values from `s[i..i + 8]`, sign-extended to 16-bit lanes (4 words of 2 values).
///
/// # Safety
/// `i + 8 <= s.len()`.
#[inline(always)]
pub(super) unsafe fn load_i8x8(s: &[i8], i: usize) -> v128 {
    debug_assert!(i + 8 <= s.len());
    // SAFETY: the caller guarantees that s[i..i + 8] is in bounds; the load is unaligned.
    unsafe { i16x8_load_extend_i8x8(s.as_ptr().add(i)) }
}

/// Columns `2p` and `2p + 1` of an int8 row as one word of two i16 (low half first), zeros
/// past the row.
#[inline(always)]
pub(super) fn pair_word(row: &[i8], p: usize) -> i32 {
    let at = |c: usize| row.get(c).map_or(0, |&v| v as i16 as u16 as u32);
    (at(2 * p) | at(2 * p + 1) << 16) as i32
}

/// Rows `t..t + nr` of the `cols`-wide rows `x` (empty when `nr == 0`, whatever `t`).
#[inline(always)]
pub(super) fn quad_rows<T>(x: &[T], cols: usize, t: usize, nr: usize) -> &[T] {
    if nr == 0 {
        &[]
    } else {
        &x[t * cols..(t + nr) * cols]
    }
}

/// Packs the `rows.len() / cols <= 4` int8 rows `rows` as the tokens `t4..t4 + 4` of a group
/// for the product tiles: word `p * Q8_GROUP + t4 + j` holds columns `2p`, `2p + 1` of row `j`;
/// zeros past `cols` (up to `pairs` pairs) and for the missing rows. Writes exactly those
/// words.
pub(super) fn pack_quad(
    rows: &[i8],
    cols: usize,
    pairs: usize,
    t4: usize,
    out: &mut [MaybeUninit<i32>],
) {
    let nr = rows.len() / cols;
    assert!(nr <= 4 && t4 + 4 <= Q8_GROUP && 2 * pairs >= cols && out.len() >= pairs * Q8_GROUP);
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
            store_words(out, (c / 2 + k) * Q8_GROUP + t4, o);
        }
        c += 8;
    }
    for p in c8 / 2..pairs {
        for j in 0..4 {
            let w = if j < nr { pair_word(row(j), p) } else { 0 };
            out[p * Q8_GROUP + t4 + j].write(w);
        }
    }
}

/// Words of one pair of columns of 2 weight rows packed by [`pack_rows2`]: each word
/// broadcast to a vector (`SPLAT`), or the 2 words alone.
pub(super) const fn pair_words(splat: bool) -> usize {
    if splat { 8 } else { 2 }
}

/// Widens the `rt <= 2` rows `r0..r0 + rt` of `q` (`cols` each) for the product tiles: the
/// word of columns `2p`, `2p + 1` of row `r0 + r` at `(p * 2 + r) * 4`, broadcast to 4 words
/// (`SPLAT`), else at `p * 2 + r`; zeros past `cols` (up to `pairs` pairs) and for the rows
/// `rt..2`. Writes exactly `pairs * pair_words(SPLAT)` words.
pub(super) fn pack_rows2<const SPLAT: bool>(
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
pub(super) fn pack_row_pairs(
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

/// One register tile: the exact i32 sums over `np` pairs of `A` broadcast words of `a` (a
/// vector each, `sa` words from one pair to the next) times `B` vectors of `b` (`sb` words
/// from one pair to the next): `acc[i][j] = sum_p dot(b[p][j], a[p][i])`, two products per
/// lane (`i32x4.dot_i16x8_s`). Every load is a plain `v128.load` at a constant offset from
/// one of the two pointers, which V8 compiles to one instruction (a broadcast load,
/// `v128.load32_splat`, costs two when it has an offset).
#[inline(always)]
#[allow(clippy::needless_range_loop)] // acc[i][j]: the tile's two indices read best as such
pub(super) fn tile<const A: usize, const B: usize>(
    a: &[i32],
    sa: usize,
    b: &[i32],
    sb: usize,
    np: usize,
) -> [[v128; B]; A] {
    assert!(np >= 1 && a.len() >= (np - 1) * sa + 4 * A && b.len() >= (np - 1) * sb + 4 * B);
    // SAFETY: pair p < np reads a's words p * sa..p * sa + 4A and b's words p * sb..p
    // * sb + 4B, inside the slices (asserted above). The first pair starts the sums.
    let mut acc = unsafe { tile_dots::<A, B>(a.as_ptr(), b.as_ptr()) };
    let (mut pa, mut pb) = (a.as_ptr(), b.as_ptr());
    for _ in 1..np {
        pa = pa.wrapping_add(sa);
        pb = pb.wrapping_add(sb);
        // SAFETY: pair p < np, in bounds as said above.
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
pub(super) unsafe fn tile_dots<const A: usize, const B: usize>(
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

/// Pairs of one block of [`Q8_BLOCK`] columns.
const BP: usize = Q8_BLOCK / 2;

/// One product tile over all the blocks of a row: the packed pair of weight rows `wp`
/// ([`pack_rows2`], `pairs` pairs) times the packed group `xg` ([`pack_quad`]) with its block
/// scales `sg` (`[block][Q8_GROUP]`): `f[r][v]` lane `l` is `sum_b (dot_b as f32) * scale_b`
/// from `+0.0` for row `r` and token `4v + l`, block by block as the generic kernel sums.
#[inline(always)]
pub(super) fn product_tile<const SPLAT: bool>(
    wp: &[i32],
    xg: &[i32],
    sg: &[f32],
    pairs: usize,
) -> [[v128; 4]; 2] {
    let nb = pairs.div_ceil(BP);
    let pw = pair_words(SPLAT);
    assert!(pairs.is_multiple_of(4) && wp.len() >= pairs * pw && xg.len() >= pairs * Q8_GROUP);
    assert!(sg.len() >= nb * Q8_GROUP);
    let mut f = [[f32x4_splat(0.0); 4]; 2];
    let (mut pa, mut pb) = (wp.as_ptr(), xg.as_ptr());
    for b in 0..nb {
        let np = BP.min(pairs - b * BP);
        // SAFETY: pair p < pairs reads wp's words pw p..pw (p + 1) and xg's words
        // Q8_GROUP p..Q8_GROUP p + 16, inside the slices (asserted above). The block's first
        // pair starts the sums (np >= 4), the others add to them.
        let [mut acc0, mut acc1] = unsafe { pair_dots::<SPLAT>(pa, pb) };
        (pa, pb) = (pa.wrapping_add(pw), pb.wrapping_add(Q8_GROUP));
        for _ in 1..np {
            // SAFETY: pair p < pairs, in bounds as said above.
            let [d0, d1] = unsafe { pair_dots::<SPLAT>(pa, pb) };
            for v in 0..4 {
                acc0[v] = i32x4_add(acc0[v], d0[v]);
                acc1[v] = i32x4_add(acc1[v], d1[v]);
            }
            (pa, pb) = (pa.wrapping_add(pw), pb.wrapping_add(Q8_GROUP));
        }
        // SAFETY: block b < nb has its Q8_GROUP scales at sg[b * Q8_GROUP..] (asserted above); unaligned.
        let s: [v128; 4] = core::array::from_fn(|v| unsafe {
            v128_load(sg.as_ptr().add(b * Q8_GROUP + 4 * v) as *const v128)
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
pub(super) unsafe fn pair_dots<const SPLAT: bool>(
    pa: *const i32,
    pb: *const i32,
) -> [[v128; 4]; 2] {
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
pub(super) const SPLAT_GROUPS: usize = 6;

/// Every row of the int8 matrix `q` (`rows x cols`, row scales `ws`, `bias`) times the
/// packed token groups of one pass (`xw`: `ngroups` groups of `pairs_of(cols) * Q8_GROUP` words;
/// `sw`: their block scales, `[group][block][Q8_GROUP]`), with the generic kernel's bits: per token
/// and row, the exact i32 block sums times the token's block scale summed block by block
/// from `+0.0`, times the row scale, plus the bias. The rows are widened two at a time, once
/// per pass, into register tiles of 2 rows x 16 tokens; `emit(r0, rt, i, o)` takes the
/// results of rows `r0..r0 + rt` for group `i`, `o[r][v]` lane `l` being token `4v + l` of
/// the group (lanes past the group's tokens are to be ignored).
pub(super) fn rows_times_groups(
    q: &[i8],
    ws: &[f32],
    (rows, cols): (usize, usize),
    bias: Option<&[f32]>,
    (xw, sw, ngroups): (&[i32], &[f32], usize),
    mut emit: impl FnMut(usize, usize, usize, &[[v128; 4]; 2]),
) {
    let (pairs, nb) = (pairs_of(cols), q8_blocks(cols));
    let gw = pairs * Q8_GROUP;
    let mut wp = [MaybeUninit::<i32>::uninit(); 8 * Q8_MAX_COLS / 2];
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
                &sw[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP],
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
pub(super) fn store_rows(
    y: &mut [f32],
    rows: usize,
    (r0, rt, g): (usize, usize, usize),
    o: &[[v128; 4]; 2],
) {
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
/// the `g <= Q8_GROUP` tokens from `t` (all `pairs_of(cols) * Q8_GROUP` words and `q8_blocks(cols) * Q8_GROUP`
/// scales, zeros for missing tokens), then `run(t0, groups, words, scales)` takes the pass of
/// the tokens from `t0`.
pub(super) fn passes(
    cols: usize,
    n: usize,
    mut pack: impl FnMut(usize, usize, &mut [MaybeUninit<i32>], &mut [f32]),
    mut run: impl FnMut(usize, &[usize], &[i32], &[f32]),
) {
    let (gw, gs_len) = (pairs_of(cols) * Q8_GROUP, q8_blocks(cols) * Q8_GROUP);
    let per_pass = groups_per_pass(cols);
    let mut xw = [MaybeUninit::<i32>::uninit(); PACK_WORDS];
    let mut sw = [0f32; SP_LEN];
    let mut gs = [0usize; MAX_GROUPS];
    let mut t0 = 0;
    while t0 < n {
        let (mut m, mut t) = (0, t0);
        while m < per_pass && t < n {
            let g = Q8_GROUP.min(n - t);
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
pub(super) fn pack_q8_group(
    xq: &[i8],
    xs: &[f32],
    (g, cols): (usize, usize),
    out: &mut [MaybeUninit<i32>],
    sp: &mut [f32],
) {
    let (pairs, nb) = (pairs_of(cols), q8_blocks(cols));
    for t4 in (0..Q8_GROUP).step_by(4) {
        let nr = g.saturating_sub(t4).min(4);
        pack_quad(quad_rows(xq, cols, t4, nr), cols, pairs, t4, out);
    }
    for b in 0..nb {
        for t in 0..Q8_GROUP {
            sp[b * Q8_GROUP + t] = if t < g { xs[t * nb + b] } else { 0.0 };
        }
    }
}

/// Scratch of [`quantize_group`]: 4 quantized tokens.
type QuadScratch = [i8; 4 * Q8_MAX_COLS];

/// Quantizes the `g` f32 tokens `x` (`cols` each, [`wasm_simd128_quantize_i8_token`]) and
/// packs them as a group, 4 tokens at a time (through `q`).
pub(super) fn quantize_group(
    x: &[f32],
    (g, cols): (usize, usize),
    q: &mut QuadScratch,
    out: &mut [MaybeUninit<i32>],
    sp: &mut [f32],
) {
    let (pairs, nb) = (pairs_of(cols), q8_blocks(cols));
    let mut s = [0f32; 4 * Q8_MAX_COLS / Q8_BLOCK];
    for t4 in (0..Q8_GROUP).step_by(4) {
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
                sp[b * Q8_GROUP + t4 + j] = if j < nr { s[j * nb + b] } else { 0.0 };
            }
        }
    }
}

/// simd128 [`crate::kernels::matmul_q8_tokens`]: the same bits (exact i32 block dots, the generic float
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
    x: Q8Rows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let Q8Rows { q: xq, s: xs, n } = x;
    let (rows, cols) = (w.rows(), w.cols());
    let Weights::I8 { q, scales } = w.weights() else {
        return generic::matmul_q8_tokens(w, x, bias, y);
    };
    let nb = q8_blocks(cols);
    if cols == 0
        || cols > Q8_MAX_COLS
        || xq.len() != n * cols
        || xs.len() != n * nb
        || y.len() != n * rows
    {
        return generic::matmul_q8_tokens(w, x, bias, y);
    }
    passes(
        cols,
        n,
        |t, g, out, sp| {
            let (xq, xs) = (&xq[t * cols..(t + g) * cols], &xs[t * nb..(t + g) * nb]);
            pack_q8_group(xq, xs, (g, cols), out, sp);
        },
        |t0, gs, xw, sw| product_pass(q, scales, (rows, cols), bias, (t0, gs), (xw, sw), y),
    );
}

/// One pass of [`wasm_simd128_matmul_q8_tokens`]: the groups `gs` of tokens from `t0`.
pub(super) fn product_pass(
    q: &[i8],
    scales: &[f32],
    (rows, cols): (usize, usize),
    bias: Option<&[f32]>,
    (t0, gs): (usize, &[usize]),
    (xw, sw): (&[i32], &[f32]),
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
    rows_times_groups(q, scales, (rows, cols), bias, (xw, sw, gs.len()), emit);
}

/// simd128 [`crate::kernels::matmul_i8_i8_token`]: the same bits. Each token is quantized
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
            if cols > 0 && cols <= Q8_MAX_COLS && generic::tokens_fit(w, x, n, y) =>
        {
            let mut qs = [0i8; 4 * Q8_MAX_COLS];
            passes(
                cols,
                n,
                |t, g, out, sp| {
                    quantize_group(&x[t * cols..(t + g) * cols], (g, cols), &mut qs, out, sp)
                },
                |t0, gs, xw, sw| product_pass(q, scales, (rows, cols), bias, (t0, gs), (xw, sw), y),
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

/// [`crate::kernels::quantize_i8`] of one block (`q.len() == x.len()`), the same bits for finite
/// inputs: maximum of `|x|` on 4 lanes (exact in any order), then per lane
/// `t = x * (127 / max)`, `t + 0.5` or `t - 0.5` by the sign of `t`, converted toward zero with
/// saturation (`as i8` does the same).
#[inline(always)]
pub(super) fn quantize_block(x: &[f32], q: &mut [i8]) -> f32 {
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

/// simd128 [`crate::kernels::quantize_i8_token`]: the same bits for finite inputs. Shapes as there.
pub fn wasm_simd128_quantize_i8_token(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    debug_assert_eq!(s.len(), q8_blocks(x.len()));
    for ((xb, qb), sb) in x.chunks(Q8_BLOCK).zip(q.chunks_mut(Q8_BLOCK)).zip(s) {
        *sb = quantize_block(xb, qb);
    }
}
