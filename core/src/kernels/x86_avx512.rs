//! x86-64 AVX-512 kernels (F, BW, VNNI), compiled in std builds and chosen at run time
//! (`is_x86_feature_detected!`) by [`super::Kernels::Fast`]; each falls back to the AVX2 or
//! generic kernel on a CPU without them, and is tested against [`super::generic`].
//!
//! Register-tiled matrix products in broadcast form: a tile of [`ROWS`] weight rows times
//! [`super::QT_GROUP`] = 16 tokens (one 16-lane register per weight row) keeps its
//! accumulators in registers over the whole reduction; each step loads one vector of the
//! tokens' activations (packed, 4 int8 or 1 f32 per token per lane) and
//! multiplies it by a broadcast of the weight row (4 int8 or 1 f32 read in place: the
//! row-major `[out, in]` weights are never repacked). No horizontal sums.
//!
//! - int8 (`vpdpbusd`): the activations are stored as `u8 = x + 128`, so each lane sums
//!   `(x + 128) w` exactly in i32 and starts from `-128 * sum(w)`: the exact i32 dot,
//!   bit-identical results to [`super::matmul_q8_tokens`]. The tokens are quantized straight
//!   into the packed layout, in the caller's scratch ([`super::quantize_q8_by`], up to
//!   [`generic::Q8_MAX_GROUPS`] groups of 16 tokens, sized by the memory plan); the weight
//!   block sums are taken once per 16 rows for every packed group, and a tile pair's 16 rows x
//!   16 tokens go to the output by one 16 x 16 register transpose.
//! - The dense int8 feed-forward ([`x86_avx512_ffn_q8`]) runs fused per 64 hidden units: up
//!   projection tiles, bias, activation and the down projection's row scales on the tile
//!   registers (units x tokens), the per-token quantization of the 64 units lane-wise, then the
//!   down projection with the weights as `u8 = w + 128` (a `vpermb` transpose of 4 rows) and
//!   the activations broadcast in place; the same bits as the unfused kernels.
//! - f32 (`vfmadd231ps`): fused, in another order than [`super::matmul`] (rounding only).
//!
//! Stack: the int8 kernels keep only register tiles and small per-call buffers on the stack
//! (the block sums of 16 rows, 4 KiB; the fused feed-forward's 64 units, about 9 KiB); the
//! packed int8 activations are in the planned scratch. The f32 kernels pack 16 tokens of up to
//! [`F32_MAX_COLS`] f32 on the stack (64 KiB, plus 16 KiB of hidden values in the feed-forward):
//! host-only paths (std builds on x86-64), bounded by these constants.

use core::arch::x86_64::*;

use super::{Matrix, Weights, generic};
use crate::config::Activation;

/// Weight rows per register tile (accumulators: 8 registers of 16 tokens).
pub const ROWS: usize = 8;
const T: usize = generic::QT_GROUP;
const QB: usize = generic::QT_BLOCK;
const _: () = assert!(T == 2 * ROWS && QB <= 64 && QB.is_multiple_of(16));
/// Column blocks of one row (`Q8_MAX_COLS / QT_BLOCK`).
const MAX_NB: usize = generic::Q8_MAX_COLS / QB;

/// Whether this CPU runs the int8 kernels of this module (AVX-512 F, BW and VNNI). Cached by
/// std.
pub fn available_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// Asks for the cache lines of `part` of `parts` of `b` to be brought into L2: the weights of
/// the next rows stream in while these rows' tiles run (the block sums would otherwise wait
/// for them). A hint only: no memory is read.
#[inline(always)]
fn prefetch_part(b: &[i8], part: usize, parts: usize) {
    let len = b.len().div_ceil(parts.max(1));
    let (start, end) = ((part * len).min(b.len()), ((part + 1) * len).min(b.len()));
    for off in (start..end).step_by(64) {
        // SAFETY: a prefetch never faults, and the address is inside `b`.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(b.as_ptr().add(off)) };
    }
}

/// `quantize_i8` of one block (`x.len() <= 64`) as [`quantize_block_avx512`] computes it (the
/// same bits), the 64 bytes returned in a register (bytes past `x.len()` are 0) with the scale.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_block_vec(x: &[f32]) -> (f32, __m512i) {
    let n = x.len().min(QB);
    let v: [__m512; 4] = core::array::from_fn(|i| {
        if 16 * i < n {
            // SAFETY: the masked load reads x[16 i..min(16 i + 16, n)] only.
            unsafe { _mm512_maskz_loadu_ps(tail_mask(n, 16 * i), x.as_ptr().add(16 * i)) }
        } else {
            _mm512_setzero_ps()
        }
    });
    let mx = v.iter().fold(_mm512_setzero_ps(), |m, &v| {
        _mm512_max_ps(m, _mm512_abs_ps(v))
    });
    let max = _mm512_reduce_max_ps(mx);
    if max == 0.0 {
        return (0.0, _mm512_setzero_si512());
    }
    let scale = max / 127.0;
    let inv = _mm512_set1_ps(127.0 / max);
    let half = _mm512_set1_ps(0.5);
    let sign = _mm512_set1_ps(-0.0);
    let q: [__m128i; 4] = core::array::from_fn(|i| {
        let t = _mm512_mul_ps(v[i], inv);
        // t - 0.5 for t < 0, else t + 0.5 (as quantize_block_avx512).
        let h = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(half),
            _mm512_and_si512(_mm512_castps_si512(t), _mm512_castps_si512(sign)),
        ));
        _mm512_cvtsepi32_epi8(_mm512_cvttps_epi32(_mm512_add_ps(t, h)))
    });
    let r = _mm512_castsi128_si512(q[0]);
    let r = _mm512_inserti32x4::<1>(r, q[1]);
    let r = _mm512_inserti32x4::<2>(r, q[2]);
    (scale, _mm512_inserti32x4::<3>(r, q[3]))
}

/// Quantizes `g <= 16` f32 token rows of `x` (`cols`, a multiple of 4, each) by blocks of
/// [`generic::QT_BLOCK`] (the bits of [`generic::quantize_i8_token`]) straight into the packed
/// form: `u8 = q + 128` in `[cols / 4][16][4]` order in `out`, the block scales `[nb][16]` in
/// `sx`, missing tokens `x = 0` with scale 0. Per block, each token's 64 bytes in a register,
/// then one 16 x 16 transpose of 4-byte words.
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_pack(x: &[f32], g: usize, cols: usize, out: &mut [u32], sx: &mut [f32]) {
    let nb = generic::qt_blocks(cols);
    let flip = _mm512_set1_epi8(i8::MIN);
    for b in 0..nb {
        let (c0, c1) = (b * QB, ((b + 1) * QB).min(cols));
        let mut v = [_mm512_setzero_ps(); T];
        for (t, vt) in v.iter_mut().enumerate() {
            let (s, q) = if t < g {
                quantize_block_vec(&x[t * cols + c0..t * cols + c1])
            } else {
                (0.0, _mm512_setzero_si512())
            };
            sx[b * T + t] = s;
            // u8 = q + 128; a missing token is x = 0.
            *vt = _mm512_castsi512_ps(_mm512_xor_si512(q, flip));
        }
        transpose16(&mut v);
        for (i, w) in v.iter().enumerate().take((c1 - c0) / 4) {
            let o = &mut out[(c0 / 4 + i) * T..(c0 / 4 + i + 1) * T];
            // SAFETY: o has 16 u32; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr() as *mut f32, *w) };
        }
    }
}

/// Block sums of 16 int8 rows: lane `r` of the result is `sum w[r][c]` over the columns
/// `c0..c1` (`c1 - c0 <= 64`) of row `r` of `w` (rows of `cols` values).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn row_sums16(w: &[i8], cols: usize, c0: usize, c1: usize) -> __m512i {
    debug_assert!(c1 - c0 <= 64 && w.len() >= 15 * cols + c1);
    let ones = _mm512_set1_epi8(1);
    let mask: __mmask64 = if c1 - c0 == 64 {
        !0
    } else {
        (1u64 << (c1 - c0)) - 1
    };
    let v: [__m512i; 16] = core::array::from_fn(|r| {
        // SAFETY: the masked load reads bytes r * cols + c0 .. r * cols + c1 only, inside w
        // (checked by the caller: w holds 16 rows of cols >= c1 values).
        let x = unsafe { _mm512_maskz_loadu_epi8(mask, w.as_ptr().add(r * cols + c0)) };
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), ones, x)
    });
    // Transpose-and-add: pairs of rows interleaved, then quads, then 128-bit lanes.
    let l1: [__m512i; 8] = core::array::from_fn(|i| {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    });
    let l2: [__m512i; 4] = core::array::from_fn(|i| {
        let (a, b) = (l1[2 * i], l1[2 * i + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    let lanes = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b),
        )
    };
    let l3 = [lanes(l2[0], l2[1]), lanes(l2[2], l2[3])];
    lanes(l3[0], l3[1])
}

/// `-128 * sum w` of each column block of 16 rows `w16` (`cols` each) as `[nb][16 rows]`
/// in `corr`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn corr16(w16: &[i8], cols: usize, corr: &mut [i32]) {
    for b in 0..generic::qt_blocks(cols) {
        let (c0, c1) = (b * QB, ((b + 1) * QB).min(cols));
        let s = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_slli_epi32::<7>(row_sums16(w16, cols, c0, c1)),
        );
        let o = &mut corr[b * T..(b + 1) * T];
        // SAFETY: o has 16 i32; unaligned store.
        unsafe { _mm512_storeu_si512(o.as_mut_ptr() as *mut __m512i, s) };
    }
}

/// `-128 * sum w` of each column block of one row `w`, at `corr[b * 16]` (the layout of
/// [`corr16`], one row).
fn corr1(w: &[i8], corr: &mut [i32]) {
    for (b, blk) in w.chunks(QB).enumerate() {
        corr[b * T] = -128 * blk.iter().map(|&v| v as i32).sum::<i32>();
    }
}

/// One tile: the `RR` rows `wt` (`cols` each, row scales `ws`, biases `bias`) times a packed
/// group `px` with its block scales `sx` (`[nb][16]`) and the row corrections at
/// `corr[b * 16 + r]`: lane `t` of the result `r` is token `t`'s output of row `r`, the bits of
/// [`generic::matmul_q8_tokens`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile_q8<const RR: usize>(
    wt: &[i8],
    cols: usize,
    ws: &[f32],
    bias: Option<&[f32]>,
    px: &[u32],
    sx: &[f32],
    corr: &[i32],
) -> [__m512; RR] {
    const KB: usize = QB / 4;
    let k4n = cols / 4;
    let wt = &wt[..RR * cols];
    let px = &px[..k4n * T];
    let mut facc = [_mm512_setzero_ps(); RR];
    let mut k0 = 0;
    while k0 < k4n {
        let k1 = (k0 + KB).min(k4n);
        let b = k0 / KB;
        let mut acc: [__m512i; RR] = core::array::from_fn(|r| _mm512_set1_epi32(corr[b * T + r]));
        for k4 in k0..k1 {
            // SAFETY: (k4 + 1) * 16 <= k4n * 16 = px.len() u32; unaligned load.
            let xv = unsafe { _mm512_loadu_si512(px.as_ptr().add(k4 * T) as *const __m512i) };
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r * cols + 4 * k4 + 4 <= RR * cols = wt.len() (cols = 4 * k4n);
                // the 4 bytes are read unaligned.
                let w4 =
                    unsafe { (wt.as_ptr().add(r * cols + 4 * k4) as *const i32).read_unaligned() };
                *a = _mm512_dpbusd_epi32(*a, xv, _mm512_set1_epi32(w4));
            }
        }
        // SAFETY: b < nb, and sx holds nb * 16 f32; unaligned load.
        let sv = unsafe { _mm512_loadu_ps(sx.as_ptr().add(b * T)) };
        for (f, a) in facc.iter_mut().zip(&acc) {
            *f = _mm512_add_ps(*f, _mm512_mul_ps(_mm512_cvtepi32_ps(*a), sv));
        }
        k0 = k1;
    }
    core::array::from_fn(|r| {
        // The epilogue of generic::q8_token_out, lane by lane.
        let v = _mm512_mul_ps(facc[r], _mm512_set1_ps(ws[r]));
        match bias {
            Some(b) => _mm512_add_ps(v, _mm512_set1_ps(b[r])),
            None => v,
        }
    })
}

/// In-register transpose of 16 x 16 f32: lane `j` of row `i` goes to lane `i` of row `j`.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        r[4 * i] = ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        r[4 * i + 1] = ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        r[4 * i + 2] = ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        r[4 * i + 3] = ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    for i in 0..2 {
        for j in 0..4 {
            let (a, b) = (r[8 * i + j], r[8 * i + j + 4]);
            t[8 * i + j] = _mm512_shuffle_f32x4::<0x88>(a, b);
            t[8 * i + j + 4] = _mm512_shuffle_f32x4::<0xdd>(a, b);
        }
    }
    for j in 0..8 {
        r[j] = _mm512_shuffle_f32x4::<0x88>(t[j], t[j + 8]);
        r[j + 8] = _mm512_shuffle_f32x4::<0xdd>(t[j], t[j + 8]);
    }
}

/// The products of 16 rows `r0..r0 + 16` (lanes: tokens) into `y` (rows of `rows` outputs per
/// token, from the group's first token), `g` tokens.
#[inline]
#[target_feature(enable = "avx512f")]
fn store_rows16(mut f: [__m512; 16], y: &mut [f32], rows: usize, r0: usize, g: usize) {
    transpose16(&mut f);
    for (t, v) in f.iter().enumerate().take(g) {
        let o = &mut y[t * rows + r0..t * rows + r0 + T];
        // SAFETY: o has 16 f32; unaligned store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *v) };
    }
}

/// The products of one row `r` (lanes: tokens) into `y`, `g` tokens.
#[inline]
#[target_feature(enable = "avx512f")]
fn store_row1(f: __m512, y: &mut [f32], rows: usize, r: usize, g: usize) {
    let mut l = [0.0f32; T];
    // SAFETY: l has 16 f32; unaligned store.
    unsafe { _mm512_storeu_ps(l.as_mut_ptr(), f) };
    for (t, &v) in l.iter().enumerate().take(g) {
        y[t * rows + r] = v;
    }
}

/// Every row of the int8 matrix `q` (`rows x cols`, row scales `scales`) times the packed
/// token groups `px` (`[group][cols / 4][16]`, block scales `sx` as `[group][nb][16]`, `gs[i]`
/// valid tokens in group `i`), into `y` (from the first group's first token). Rows go 16 at
/// a time, the block sums taken once for all the groups.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn rows_times_groups(
    q: &[i8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    bias: Option<&[f32]>,
    px: &[u32],
    sx: &[f32],
    gs: &[usize],
    y: &mut [f32],
) {
    let (gw, nb) = (cols / 4 * T, generic::qt_blocks(cols));
    let mut corr = [0i32; T * MAX_NB];
    let bias_of = |r0: usize, rr: usize| bias.map(|b| &b[r0..r0 + rr]);
    let mut r0 = 0;
    while r0 + T <= rows {
        corr16(&q[r0 * cols..(r0 + T) * cols], cols, &mut corr);
        let next = &q[((r0 + T) * cols).min(q.len())..((r0 + 2 * T) * cols).min(q.len())];
        let mut y0 = 0;
        for (i, &g) in gs.iter().enumerate() {
            prefetch_part(next, i, gs.len());
            let (pxi, sxi) = (&px[i * gw..(i + 1) * gw], &sx[i * nb * T..(i + 1) * nb * T]);
            let lo = tile_q8::<ROWS>(
                &q[r0 * cols..],
                cols,
                &scales[r0..],
                bias_of(r0, ROWS),
                pxi,
                sxi,
                &corr,
            );
            let r1 = r0 + ROWS;
            let hi = tile_q8::<ROWS>(
                &q[r1 * cols..],
                cols,
                &scales[r1..],
                bias_of(r1, ROWS),
                pxi,
                sxi,
                &corr[ROWS..],
            );
            let f = core::array::from_fn(|r| if r < ROWS { lo[r] } else { hi[r - ROWS] });
            store_rows16(f, &mut y[y0 * rows..], rows, r0, g);
            y0 += g;
        }
        r0 += T;
    }
    while r0 < rows {
        corr1(&q[r0 * cols..(r0 + 1) * cols], &mut corr);
        let mut y0 = 0;
        for (i, &g) in gs.iter().enumerate() {
            let (pxi, sxi) = (&px[i * gw..(i + 1) * gw], &sx[i * nb * T..(i + 1) * nb * T]);
            let f = tile_q8::<1>(
                &q[r0 * cols..],
                cols,
                &scales[r0..],
                bias_of(r0, 1),
                pxi,
                sxi,
                &corr,
            );
            store_row1(f[0], &mut y[y0 * rows..], rows, r0, g);
            y0 += g;
        }
        r0 += 1;
    }
}

/// Whether [`super::quantize_q8_by`] packs tokens of `cols` columns for these kernels: `cols`
/// a multiple of 4 up to [`generic::Q8_MAX_COLS`], and a CPU with AVX-512 F, BW and VNNI.
pub(crate) fn packs_q8(cols: usize) -> bool {
    cols.is_multiple_of(4) && cols > 0 && cols <= generic::Q8_MAX_COLS && available_vnni()
}

/// Quantizes the token rows of `x` (`cols` each, [`packs_q8`]) into groups of 16 in the packed
/// form of [`quantize_pack`]: group `i`'s words at `px[i * 4 cols..]` and its scales at
/// `sx[i * 16 nb..]` (`px` and `sx` hold every group).
pub(crate) fn quantize_pack_groups(x: &[f32], cols: usize, px: &mut [u32], sx: &mut [f32]) {
    let (gw, nb) = (cols / 4 * T, generic::qt_blocks(cols));
    let n = x.len() / cols.max(1);
    if !packs_q8(cols) || px.len() < n.div_ceil(T) * gw || sx.len() < n.div_ceil(T) * nb * T {
        debug_assert!(
            false,
            "quantize_pack_groups: no VNNI or too small a scratch"
        );
        return;
    }
    for (i, xg) in x[..n * cols].chunks(T * cols).enumerate() {
        let g = xg.len() / cols;
        let (pxi, sxi) = (
            &mut px[i * gw..(i + 1) * gw],
            &mut sx[i * nb * T..(i + 1) * nb * T],
        );
        // SAFETY: the CPU has AVX-512 F and BW (packs_q8 checked VNNI, which comes with them).
        unsafe { quantize_pack(xg, g, cols, pxi, sxi) };
    }
}

/// `y = Xq W^T + b` of `n` tokens packed by [`quantize_pack_groups`] (`px`, `sx`) and the int8
/// matrix `w` ([`packs_q8`] of its columns): the bits of [`generic::matmul_q8_tokens`].
pub(crate) fn matmul_packed_groups(
    w: &Matrix<'_>,
    px: &[u32],
    sx: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let (gw, nb, groups) = (cols / 4 * T, generic::qt_blocks(cols), n.div_ceil(T));
    let Weights::I8 { q, scales } = w.weights() else {
        debug_assert!(false, "matmul_packed_groups needs int8 weights");
        return;
    };
    if !packs_q8(cols)
        || groups > generic::Q8_MAX_GROUPS
        || px.len() < groups * gw
        || sx.len() < groups * nb * T
        || y.len() != n * rows
        || bias.is_some_and(|b| b.len() != rows)
    {
        debug_assert!(false, "matmul_packed_groups: shapes");
        return;
    }
    let gs: [usize; generic::Q8_MAX_GROUPS] =
        core::array::from_fn(|i| T.min(n.saturating_sub(i * T)));
    // SAFETY: the CPU has AVX-512 F, BW and VNNI (packs_q8), and the shapes were checked.
    unsafe {
        rows_times_groups(
            q,
            scales,
            rows,
            cols,
            bias,
            &px[..groups * gw],
            &sx[..groups * nb * T],
            &gs[..groups],
            y,
        )
    }
}

/// `quantize_i8` of one block (`x.len() <= 64`), the same bits as the generic one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_block_avx512(x: &[f32], q: &mut [i8]) -> f32 {
    let n = x.len().min(q.len());
    let mask = |i: usize| -> __mmask16 {
        let m = (n - i).min(16);
        if m == 16 { !0 } else { (1u16 << m) - 1 }
    };
    let mut mx = _mm512_setzero_ps();
    let mut i = 0;
    while i < n {
        // SAFETY: the masked load reads x[i..min(i + 16, n)] only.
        let v = unsafe { _mm512_maskz_loadu_ps(mask(i), x.as_ptr().add(i)) };
        mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
        i += 16;
    }
    let max = _mm512_reduce_max_ps(mx);
    if max == 0.0 {
        q[..n].fill(0);
        return 0.0;
    }
    let scale = max / 127.0;
    let inv = _mm512_set1_ps(127.0 / max);
    let half = _mm512_set1_ps(0.5);
    let sign = _mm512_set1_ps(-0.0);
    let mut i = 0;
    while i < n {
        let m = mask(i);
        // SAFETY: the masked load reads x[i..min(i + 16, n)] only.
        let v = unsafe { _mm512_maskz_loadu_ps(m, x.as_ptr().add(i)) };
        let t = _mm512_mul_ps(v, inv);
        // t - 0.5 for t < 0, else t + 0.5 (-0.0 gives -0.5, which truncates to 0 as well).
        let h = _mm512_castsi512_ps(_mm512_or_si512(
            _mm512_castps_si512(half),
            _mm512_and_si512(_mm512_castps_si512(t), _mm512_castps_si512(sign)),
        ));
        let r = _mm512_cvttps_epi32(_mm512_add_ps(t, h));
        // SAFETY: the masked store writes q[i..min(i + 16, n)] only.
        unsafe { _mm512_mask_cvtsepi32_storeu_epi8(q.as_mut_ptr().add(i), m, r) };
        i += 16;
    }
    scale
}

#[target_feature(enable = "avx512f,avx512bw")]
fn quantize_i8_token_avx512(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    for ((xb, qb), sb) in x
        .chunks(generic::QT_BLOCK)
        .zip(q.chunks_mut(generic::QT_BLOCK))
        .zip(s)
    {
        *sb = quantize_block_avx512(xb, qb);
    }
}

/// AVX-512 [`super::quantize_i8_token`]: the same bits (for finite inputs).
pub fn x86_avx512_quantize_i8_token(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    if available_vnni() {
        // SAFETY: the CPU has AVX-512 F and BW (checked above).
        unsafe { quantize_i8_token_avx512(x, q, s) }
    } else {
        generic::quantize_i8_token(x, q, s)
    }
}

/// Whether this CPU runs [`x86_avx512_accumulate_q8_tokens`]'s fast kernel (also AVX-512
/// VBMI, for the byte transpose).
fn available_vbmi() -> bool {
    available_vnni() && is_x86_feature_detected!("avx512vbmi")
}

/// `TT` tokens (u8 rows `hu` of `k` values, `k % 4 == 0`) times 16 columns `c0..c0 + 16`
/// of `k` int8 rows of `q`, into `out` (rows of `cols`, from the group's first token).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[allow(clippy::too_many_arguments)]
fn tile_down<const TT: usize>(
    out: &mut [f32],
    q: &[i8],
    cols: usize,
    c0: usize,
    hu: &[u32],
    kw: usize,
    hs: &[f32],
    k: usize,
) {
    // Byte 4c + i of a step's weight vector is row i, column c: the index of byte c of
    // 128-bit lane i.
    let idx = _mm512_set_epi32(
        0x3f2f1f0f, 0x3e2e1e0e, 0x3d2d1d0d, 0x3c2c1c0c, 0x3b2b1b0b, 0x3a2a1a0a, 0x39291909,
        0x38281808, 0x37271707, 0x36261606, 0x35251505, 0x34241404, 0x33231303, 0x32221202,
        0x31211101, 0x30201000,
    );
    let ones = _mm512_set1_epi8(1);
    let mut acc = [_mm512_setzero_si512(); TT];
    let mut colsum = _mm512_setzero_si512();
    for j4 in 0..k / 4 {
        let wv = load_4x16_transposed(q, 4 * j4, cols, c0, idx);
        colsum = _mm512_dpbusd_epi32(colsum, ones, wv);
        for (t, a) in acc.iter_mut().enumerate() {
            *a = _mm512_dpbusd_epi32(*a, _mm512_set1_epi32(hu[t * kw + j4] as i32), wv);
        }
    }
    // Each lane summed (h + 128) w: take 128 sum w off.
    let corr = _mm512_slli_epi32::<7>(colsum);
    for (t, a) in acc.iter().enumerate() {
        let v = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_sub_epi32(*a, corr)),
            _mm512_set1_ps(hs[t]),
        );
        let o = &mut out[t * cols + c0..t * cols + c0 + 16];
        // SAFETY: o has 16 f32; unaligned load and store.
        unsafe {
            _mm512_storeu_ps(
                o.as_mut_ptr(),
                _mm512_add_ps(_mm512_loadu_ps(o.as_ptr()), v),
            )
        };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn accumulate_q8_tokens_vnni(
    out: &mut [f32],
    q: &[i8],
    cols: usize,
    hq: &[i8],
    hs: &[f32],
    n: usize,
    k: usize,
) {
    const KW: usize = 64;
    debug_assert!(k <= 4 * KW);
    // The tokens' values as u8 = h + 128, 4 to a word, 16 tokens of up to 256 values.
    let mut hu = [0u32; T * KW];
    let mut t0 = 0;
    while t0 < n {
        let g = T.min(n - t0);
        for t in 0..g {
            let row = &hq[(t0 + t) * k..(t0 + t + 1) * k];
            for (o, c) in hu[t * KW..].iter_mut().zip(row.chunks_exact(4)) {
                *o = u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8])
                    ^ 0x8080_8080;
            }
        }
        let og = &mut out[t0 * cols..(t0 + g) * cols];
        let hs = &hs[t0..t0 + g];
        for c0 in (0..cols).step_by(16) {
            let mut t = 0;
            while t + 16 <= g {
                tile_down::<16>(
                    &mut og[t * cols..],
                    q,
                    cols,
                    c0,
                    &hu[t * KW..],
                    KW,
                    &hs[t..],
                    k,
                );
                t += 16;
            }
            while t + 4 <= g {
                tile_down::<4>(
                    &mut og[t * cols..],
                    q,
                    cols,
                    c0,
                    &hu[t * KW..],
                    KW,
                    &hs[t..],
                    k,
                );
                t += 4;
            }
            while t < g {
                tile_down::<1>(
                    &mut og[t * cols..],
                    q,
                    cols,
                    c0,
                    &hu[t * KW..],
                    KW,
                    &hs[t..],
                    k,
                );
                t += 1;
            }
        }
        t0 += g;
    }
}

/// AVX-512 VNNI [`super::accumulate_q8_tokens`]: the same bits. The fast kernel needs `cols`
/// a multiple of 16 and `k <= 256` a multiple of 4 (else the generic kernel).
pub fn x86_avx512_accumulate_q8_tokens(
    out: &mut [f32],
    q: &[i8],
    cols: usize,
    hq: &[i8],
    hs: &[f32],
    n: usize,
) {
    let k = hq.len().checked_div(n).unwrap_or(0);
    let fits = cols.is_multiple_of(16)
        && k.is_multiple_of(4)
        && k <= 256
        && q.len() == k * cols
        && hq.len() == n * k
        && hs.len() == n
        && out.len() == n * cols;
    if fits && n > 0 && available_vbmi() {
        // SAFETY: the CPU has AVX-512 F, BW, VNNI and VBMI (checked above).
        unsafe { accumulate_q8_tokens_vnni(out, q, cols, hq, hs, n, k) }
    } else {
        generic::accumulate_q8_tokens(out, q, cols, hq, hs, n)
    }
}

/// `e^x` for 16 lanes, `x` in `[-87, 0]`: the steps of the AVX2 kernel's `exp_neg_avx2`
/// lane by lane (the same bits).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp_neg_avx512(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-87.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::LOG2_E)),
    );
    // Cody-Waite: ln 2 in two parts so that r is exact enough.
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let pow2n = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(pow2n))
}

/// GELU (erf form) of 16 lanes: the steps of [`super::x86_avx2_gelu_erf`] lane by lane (the
/// same bits).
#[inline]
#[target_feature(enable = "avx512f")]
fn gelu_erf_avx512(x: __m512) -> __m512 {
    let z = _mm512_mul_ps(x, _mm512_set1_ps(core::f32::consts::FRAC_1_SQRT_2));
    let sbit = _mm512_set1_epi32(i32::MIN);
    let zi = _mm512_castps_si512(z);
    let sign = _mm512_and_si512(zi, sbit);
    let az = _mm512_castsi512_ps(_mm512_andnot_si512(sbit, zi));
    let one = _mm512_set1_ps(1.0);
    let t = _mm512_div_ps(one, _mm512_fmadd_ps(_mm512_set1_ps(0.327_591_1), az, one));
    let mut p = _mm512_set1_ps(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c));
    }
    p = _mm512_mul_ps(p, t);
    let e = exp_neg_avx512(_mm512_mul_ps(_mm512_sub_ps(_mm512_setzero_ps(), az), az));
    let erf = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_castps_si512(_mm512_fnmadd_ps(p, e, one)),
        sign,
    ));
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), x),
        _mm512_add_ps(one, erf),
    )
}

/// `act` of every lane of `h`, the bits of [`super::activate_slice_by`]`(Kernels::Fast, ..)`,
/// then each vector `i` times `scales[i]` if given. One call for a whole block of vectors, so
/// that the long dependency chains of the GELU's of different vectors overlap.
#[target_feature(enable = "avx512f")]
fn activate_units(act: Activation, h: &mut [__m512], scales: Option<&[f32]>) {
    for (i, v) in h.iter_mut().enumerate() {
        let a = if act == Activation::GeluErf {
            gelu_erf_avx512(*v)
        } else {
            let mut l = [0.0f32; T];
            // SAFETY: l has 16 f32; unaligned store and load.
            unsafe { _mm512_storeu_ps(l.as_mut_ptr(), *v) };
            for x in l.iter_mut() {
                *x = generic::activate_fast(act, *x);
            }
            // SAFETY: as above.
            unsafe { _mm512_loadu_ps(l.as_ptr()) }
        };
        *v = match scales {
            Some(s) => _mm512_mul_ps(a, _mm512_set1_ps(s[i])),
            None => a,
        };
    }
}

/// Hidden units the fused feed-forward computes, quantizes and projects down at a time: one
/// quantization block of the down projection.
const UNITS: usize = QB;
/// Widest `d_model` of the fused feed-forward (its packed tokens: 16 x 1024 bytes of stack).
pub const FFN_MAX_D: usize = 1024;

/// Byte `4 t + i` of the result is byte `16 i + t` of the source: 4 rows of 16 bytes (one per
/// 128-bit lane) to 16 words of 4 bytes (one per row).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose_4x16_idx() -> __m512i {
    _mm512_set_epi32(
        0x3f2f1f0f, 0x3e2e1e0e, 0x3d2d1d0d, 0x3c2c1c0c, 0x3b2b1b0b, 0x3a2a1a0a, 0x39291909,
        0x38281808, 0x37271707, 0x36261606, 0x35251505, 0x34241404, 0x33231303, 0x32221202,
        0x31211101, 0x30201000,
    )
}

/// The 16 bytes at columns `c0..c0 + 16` of rows `r0..r0 + 4` of a row-major int8 matrix of
/// `stride` columns, permuted by `idx` ([`transpose_4x16_idx`]: one 4-byte word per column,
/// holding its 4 rows).
#[inline]
#[target_feature(enable = "avx512f,avx512vbmi")]
fn load_4x16_transposed(q: &[i8], r0: usize, stride: usize, c0: usize, idx: __m512i) -> __m512i {
    let p = &q[r0 * stride + c0..(r0 + 3) * stride + c0 + 16];
    // SAFETY: rows r0 .. r0 + 3 at columns c0..c0 + 16 lie in p (checked by the slice above);
    // unaligned loads.
    let wv = unsafe {
        let l = |i: usize| _mm_loadu_si128(p.as_ptr().add(i * stride) as *const __m128i);
        let a = _mm512_castsi128_si512(l(0));
        let a = _mm512_inserti32x4::<1>(a, l(1));
        let a = _mm512_inserti32x4::<2>(a, l(2));
        _mm512_inserti32x4::<3>(a, l(3))
    };
    _mm512_permutexvar_epi8(idx, wv)
}

/// [`generic::quantize_i8`] of each token's [`UNITS`] values `h[j]` (lane `t` of `h[j]`:
/// token `t`, unit `j`), lane by lane: the scales go to `hs`, `-128 * sum q` to `hcorr`, and
/// the values as `hpk[j4 * 16 + t]`, the word of units `4 j4 .. 4 j4 + 4` of token `t`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn quantize_units(h: &[__m512; UNITS], hpk: &mut [u32], hcorr: &mut [i32; T], hs: &mut [f32; T]) {
    let abs = _mm512_set1_epi32(i32::MAX);
    let mut mx = _mm512_setzero_ps();
    for v in h {
        let a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(*v), abs));
        mx = _mm512_max_ps(mx, a);
    }
    // A token whose units are all zero gets scale 0 and zeros (as generic::quantize_i8).
    let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(mx, _mm512_setzero_ps());
    let c127 = _mm512_set1_ps(127.0);
    let scale = _mm512_maskz_div_ps(nz, mx, c127);
    let inv = _mm512_div_ps(c127, mx);
    // SAFETY: hs has 16 f32; unaligned store.
    unsafe { _mm512_storeu_ps(hs.as_mut_ptr(), scale) };
    let (half, sign) = (_mm512_set1_ps(0.5), _mm512_set1_epi32(i32::MIN));
    let (lo, hi) = (_mm512_set1_epi32(-128), _mm512_set1_epi32(127));
    let idx = transpose_4x16_idx();
    let mut qsum = _mm512_setzero_si512();
    for (j4, hq) in hpk.chunks_exact_mut(T).take(UNITS / 4).enumerate() {
        let b: [__m128i; 4] = core::array::from_fn(|i| {
            let t = _mm512_mul_ps(h[4 * j4 + i], inv);
            // t - 0.5 for t < 0, else t + 0.5 (as quantize_block_avx512).
            let hh = _mm512_or_si512(
                _mm512_castps_si512(half),
                _mm512_and_si512(_mm512_castps_si512(t), sign),
            );
            let r = _mm512_cvttps_epi32(_mm512_add_ps(t, _mm512_castsi512_ps(hh)));
            // Saturated to i8 as the byte conversion below does, so that the sum is of the
            // stored values.
            let r = _mm512_min_epi32(_mm512_max_epi32(_mm512_maskz_mov_epi32(nz, r), lo), hi);
            qsum = _mm512_add_epi32(qsum, r);
            _mm512_cvtepi32_epi8(r)
        });
        let v = _mm512_castsi128_si512(b[0]);
        let v = _mm512_inserti32x4::<1>(v, b[1]);
        let v = _mm512_inserti32x4::<2>(v, b[2]);
        let v = _mm512_permutexvar_epi8(idx, _mm512_inserti32x4::<3>(v, b[3]));
        // SAFETY: hq has 16 u32; unaligned store.
        unsafe { _mm512_storeu_si512(hq.as_mut_ptr() as *mut __m512i, v) };
    }
    let c = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<7>(qsum));
    // SAFETY: hcorr has 16 i32; unaligned store.
    unsafe { _mm512_storeu_si512(hcorr.as_mut_ptr() as *mut __m512i, c) };
}

/// `TT` tokens from `t0` times 16 columns `c0..c0 + 16` of the [`UNITS`] int8 rows `q`
/// (`d` columns each), added to `out` (rows of `d`): the bits of
/// [`generic::accumulate_q8_tokens`]. The weights enter `vpdpbusd` as `u8 = w + 128` (4 rows
/// byte-transposed by `vpermb`), the activations `hpk` (`[j4][16]` words of int8) as
/// broadcasts read in place, each lane starting from the token's `-128 * sum h`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[allow(clippy::too_many_arguments)]
fn down_tile<const TT: usize>(
    out: &mut [f32],
    q: &[i8],
    d: usize,
    c0: usize,
    hpk: &[u32],
    hcorr: &[i32; T],
    hs: &[f32; T],
    t0: usize,
) {
    let idx = transpose_4x16_idx();
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc: [__m512i; TT] = core::array::from_fn(|t| _mm512_set1_epi32(hcorr[t0 + t]));
    for j4 in 0..UNITS / 4 {
        let wv = _mm512_xor_si512(load_4x16_transposed(q, 4 * j4, d, c0, idx), flip);
        // A fixed-size view and a loop of exactly TT steps, so that the accumulators stay in
        // registers wherever this is inlined.
        let Ok(hq) = <&[u32; TT]>::try_from(&hpk[j4 * T + t0..j4 * T + t0 + TT]) else {
            return;
        };
        for t in 0..TT {
            acc[t] = _mm512_dpbusd_epi32(acc[t], wv, _mm512_set1_epi32(hq[t] as i32));
        }
    }
    for (t, a) in acc.iter().enumerate() {
        let v = _mm512_mul_ps(_mm512_cvtepi32_ps(*a), _mm512_set1_ps(hs[t0 + t]));
        let o = &mut out[(t0 + t) * d + c0..(t0 + t) * d + c0 + 16];
        // SAFETY: o has 16 f32; unaligned load and store.
        unsafe {
            _mm512_storeu_ps(
                o.as_mut_ptr(),
                _mm512_add_ps(_mm512_loadu_ps(o.as_ptr()), v),
            )
        };
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
#[allow(clippy::too_many_arguments)]
fn ffn_q8_vnni(
    up_q: &[i8],
    up_s: &[f32],
    up_bias: Option<&[f32]>,
    act: Activation,
    down_q: &[i8],
    down_s: &[f32],
    x: &[f32],
    n: usize,
    d: usize,
    d_ff: usize,
    out: &mut [f32],
    px: &mut [u32],
    sx: &mut [f32],
    per_pass: usize,
) {
    const NB: usize = FFN_MAX_D / QB;
    let (gw, nb) = (d / 4 * T, generic::qt_blocks(d));
    // Block sums of the 64 up rows of a step, [4][nb][16].
    let mut corr = [0i32; UNITS / T * NB * T];
    let mut h = [_mm512_setzero_ps(); UNITS];
    let mut hpk = [0u32; UNITS / 4 * T];
    let (mut hcorr, mut hs) = ([0i32; T], [0.0f32; T]);
    let mut gs = [0usize; generic::Q8_MAX_GROUPS];
    let mut t0 = 0;
    while t0 < n {
        // Up to `per_pass` groups of 16 tokens share each step's weights and block sums.
        let mut m = 0;
        let mut t = t0;
        while m < per_pass && t < n {
            let g = T.min(n - t);
            let (pxm, sxm) = (
                &mut px[m * gw..(m + 1) * gw],
                &mut sx[m * nb * T..(m + 1) * nb * T],
            );
            quantize_pack(&x[t * d..(t + g) * d], g, d, pxm, sxm);
            gs[m] = g;
            t += g;
            m += 1;
        }
        for j0 in (0..d_ff).step_by(UNITS) {
            for r16 in 0..UNITS / T {
                let r0 = j0 + r16 * T;
                let c = &mut corr[r16 * nb * T..(r16 + 1) * nb * T];
                corr16(&up_q[r0 * d..(r0 + T) * d], d, c);
            }
            let dq = &down_q[j0 * d..(j0 + UNITS) * d];
            let next =
                &up_q[((j0 + UNITS) * d).min(up_q.len())..((j0 + 2 * UNITS) * d).min(up_q.len())];
            let mut tg = t0;
            let pxf = &px[..m * gw];
            for (i, &g) in gs[..m].iter().enumerate() {
                prefetch_part(next, i, m);
                let (pxi, sxi) = (
                    &pxf[i * gw..(i + 1) * gw],
                    &sx[i * nb * T..(i + 1) * nb * T],
                );
                for r16 in 0..UNITS / T {
                    let c = &corr[r16 * nb * T..(r16 + 1) * nb * T];
                    for half in 0..2 {
                        let rr = j0 + r16 * T + half * ROWS;
                        let bias = up_bias.map(|b| &b[rr..rr + ROWS]);
                        let c = &c[half * ROWS..];
                        let f = tile_q8::<ROWS>(&up_q[rr * d..], d, &up_s[rr..], bias, pxi, sxi, c);
                        h[rr - j0..rr - j0 + ROWS].copy_from_slice(&f);
                    }
                }
                // Each unit's value times the row scale of down_t, as ffn_q8 does.
                activate_units(act, &mut h, Some(&down_s[j0..j0 + UNITS]));
                quantize_units(&h, &mut hpk, &mut hcorr, &mut hs);
                let og = &mut out[tg * d..(tg + g) * d];
                for c0 in (0..d).step_by(16) {
                    let mut t = 0;
                    while t + 16 <= g {
                        down_tile::<16>(og, dq, d, c0, &hpk, &hcorr, &hs, t);
                        t += 16;
                    }
                    while t + 4 <= g {
                        down_tile::<4>(og, dq, d, c0, &hpk, &hcorr, &hs, t);
                        t += 4;
                    }
                    while t < g {
                        down_tile::<1>(og, dq, d, c0, &hpk, &hcorr, &hs, t);
                        t += 1;
                    }
                }
                tg += g;
            }
        }
        t0 = t;
    }
}

/// The dense int8 feed-forward of `n` tokens `x` (`n x d`), fused: `out[t] += sum_j
/// quantized(act(up_j . x_t + up_bias_j) * s_j) * down_t[j]`, with the bits of the unfused fast
/// kernels that [`crate::ffn::ffn_with`] runs otherwise ([`super::matmul_q8_tokens`],
/// [`super::activate_slice_by`], [`super::quantize_i8_token`] per 64 units,
/// [`super::accumulate_q8_tokens`]); `up` (`d_ff x d`) and `down_t` (`d_ff x d`, row scales
/// `s_j`) are int8, `out` holds the down bias (or zeros) on entry.
///
/// The tokens are quantized into `scratch` (f32 words), up to [`generic::q8_groups`]`(d, n)`
/// groups of 16 at a time (as many as it holds: [`generic::q8_scratch_bytes`]`(d, n) / 4`
/// words for all of them).
///
/// Returns `false`, having done nothing, when the CPU lacks AVX-512 F, BW, VNNI or VBMI (or
/// AVX2 and FMA, whose GELU bits the fused one repeats) or the shapes are not the fused
/// kernel's: `d` a multiple of 16 up to [`FFN_MAX_D`], `d_ff` a multiple of 64, int8 weights,
/// `scratch` of one group ([`generic::q8_group_words`]) or more.
#[allow(clippy::too_many_arguments)]
pub fn x86_avx512_ffn_q8(
    up: &Matrix<'_>,
    up_bias: Option<&[f32]>,
    act: Activation,
    down_t: &Matrix<'_>,
    x: &[f32],
    n: usize,
    out: &mut [f32],
    scratch: &mut [f32],
) -> bool {
    let (d_ff, d) = (up.rows(), up.cols());
    let (Some((up_q, up_s)), Some((down_q, down_s))) = (up.int8(), down_t.int8()) else {
        return false;
    };
    let fits = d.is_multiple_of(16)
        && d > 0
        && d <= FFN_MAX_D
        && d_ff.is_multiple_of(UNITS)
        && down_t.rows() == d_ff
        && down_t.cols() == d
        && up_bias.is_none_or(|b| b.len() == d_ff)
        && x.len() == n * d
        && out.len() == n * d;
    let groups = generic::q8_groups(d, n).min(scratch.len() / generic::q8_group_words(d));
    if !(fits && groups > 0 && available_vbmi() && super::x86_avx2_available()) {
        return false;
    }
    let (pw, rest) = scratch.split_at_mut(groups * d / 4 * T);
    let px: &mut [u32] = bytemuck::cast_slice_mut(pw);
    let sx = &mut rest[..groups * generic::qt_blocks(d) * T];
    // SAFETY: the CPU has AVX-512 F, BW, VNNI and VBMI (checked above).
    unsafe {
        ffn_q8_vnni(
            up_q, up_s, up_bias, act, down_q, down_s, x, n, d, d_ff, out, px, sx, groups,
        )
    };
    true
}

/// Whether this CPU runs the f32 kernels of this module (AVX-512 F).
fn available_f32() -> bool {
    is_x86_feature_detected!("avx512f")
}

/// Mask of the lanes `i..min(i + 16, n)`.
#[inline(always)]
fn tail_mask(n: usize, i: usize) -> __mmask16 {
    let m = (n - i).min(16);
    if m == 16 { !0 } else { (1u16 << m) - 1 }
}

#[target_feature(enable = "avx512f")]
fn layer_norm_avx512(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = x.len();
    let inv_n = 1.0 / n as f32;
    let load = |x: &[f32], i: usize| {
        // SAFETY: the masked load reads x[i..min(i + 16, n)] only.
        unsafe { _mm512_maskz_loadu_ps(tail_mask(n, i), x.as_ptr().add(i)) }
    };
    let mut s = _mm512_setzero_ps();
    for i in (0..n).step_by(16) {
        s = _mm512_add_ps(s, load(x, i));
    }
    let m = _mm512_reduce_add_ps(s) * inv_n;
    // The corrected two-pass form of generic::layer_norm: c is the rounding error of m.
    let mv = _mm512_set1_ps(m);
    let (mut s1, mut s2) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    for i in (0..n).step_by(16) {
        let d = _mm512_maskz_sub_ps(tail_mask(n, i), load(x, i), mv);
        s1 = _mm512_add_ps(s1, d);
        s2 = _mm512_fmadd_ps(d, d, s2);
    }
    let c = _mm512_reduce_add_ps(s1) * inv_n;
    let var = _mm512_reduce_add_ps(s2) * inv_n - c * c;
    let var = if var > 0.0 { var } else { 0.0 };
    let inv = _mm512_set1_ps(1.0 / (var + eps).sqrt());
    let cv = _mm512_set1_ps(c);
    for i in (0..n).step_by(16) {
        let k = tail_mask(n, i);
        // SAFETY: the masked loads read gamma and beta at i..min(i + 16, n) only (both hold
        // n values, checked by the caller); the masked store writes x there only.
        unsafe {
            let g = _mm512_maskz_loadu_ps(k, gamma.as_ptr().add(i));
            let b = _mm512_maskz_loadu_ps(k, beta.as_ptr().add(i));
            let t = _mm512_mul_ps(_mm512_sub_ps(_mm512_sub_ps(load(x, i), mv), cv), inv);
            _mm512_mask_storeu_ps(x.as_mut_ptr().add(i), k, _mm512_fmadd_ps(t, g, b));
        }
    }
}

/// AVX-512 [`super::layer_norm`]: the same formula (corrected two-pass variance) with the
/// sums taken 16 lanes at a time and the affine step fused, so the rounding differs. Shapes as
/// there; the generic kernel without AVX-512.
pub fn x86_avx512_layer_norm(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    if !x.is_empty() && gamma.len() == x.len() && beta.len() == x.len() && available_f32() {
        // SAFETY: the CPU has AVX-512 F (checked above).
        unsafe { layer_norm_avx512(x, gamma, beta, eps) }
    } else {
        generic::layer_norm(x, gamma, beta, eps)
    }
}

/// Longest f32 row the AVX-512 matmul packs (16 tokens x 1024 f32 = 64 KiB of stack).
pub const F32_MAX_COLS: usize = 1024;

#[repr(align(64))]
struct PackedF32([f32; T * F32_MAX_COLS]);

/// Packs `g <= 16` f32 rows of `x` (`cols` values each) as `[cols][16]` in `px` (missing
/// tokens 0), 16 columns at a time by a register transpose.
#[target_feature(enable = "avx512f")]
fn pack_f32(x: &[f32], g: usize, cols: usize, px: &mut [f32]) {
    for c0 in (0..cols).step_by(T) {
        let m = tail_mask(cols, c0);
        let mut v: [__m512; T] = core::array::from_fn(|t| {
            if t < g {
                let row = &x[t * cols..(t + 1) * cols];
                // SAFETY: the masked load reads row[c0..min(c0 + 16, cols)] only.
                unsafe { _mm512_maskz_loadu_ps(m, row.as_ptr().add(c0)) }
            } else {
                _mm512_setzero_ps()
            }
        });
        transpose16(&mut v);
        for (i, r) in v.iter().enumerate().take((cols - c0).min(T)) {
            let o = &mut px[(c0 + i) * T..(c0 + i + 1) * T];
            // SAFETY: o has 16 f32; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *r) };
        }
    }
}

/// The `RR` rows `wt` (`cols` each) times the packed tokens `px` (`[cols][16]`), plus the
/// biases: lane `t` of result `r` is token `t`'s output of row `r`.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile_f32<const RR: usize>(
    wt: &[f32],
    cols: usize,
    px: &[f32],
    bias: Option<&[f32]>,
) -> [__m512; RR] {
    let wt = &wt[..RR * cols];
    let px = &px[..cols * T];
    let mut acc = [_mm512_setzero_ps(); RR];
    for k in 0..cols {
        // SAFETY: (k + 1) * 16 <= cols * 16 = px.len(); unaligned load.
        let xv = unsafe { _mm512_loadu_ps(px.as_ptr().add(k * T)) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: r * cols + k < RR * cols = wt.len().
            let wv = unsafe { *wt.get_unchecked(r * cols + k) };
            *a = _mm512_fmadd_ps(xv, _mm512_set1_ps(wv), *a);
        }
    }
    core::array::from_fn(|r| match bias {
        Some(b) => _mm512_add_ps(acc[r], _mm512_set1_ps(b[r])),
        None => acc[r],
    })
}

/// Every row of `w` (`rows x cols`) times one packed group `px` of `g` tokens, plus the bias,
/// into `y` (rows of `rows` outputs per token): 16 rows x 16 tokens per tile, written by one
/// register transpose.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn f32_rows_times_group(
    w: &[f32],
    rows: usize,
    cols: usize,
    px: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    g: usize,
) {
    let bias_of = |r0: usize, rr: usize| bias.map(|b| &b[r0..r0 + rr]);
    let mut r0 = 0;
    while r0 + T <= rows {
        let f = tile_f32::<T>(&w[r0 * cols..], cols, px, bias_of(r0, T));
        store_rows16(f, y, rows, r0, g);
        r0 += T;
    }
    while r0 < rows {
        let f = tile_f32::<1>(&w[r0 * cols..], cols, px, bias_of(r0, 1));
        store_row1(f[0], y, rows, r0, g);
        r0 += 1;
    }
}

#[target_feature(enable = "avx512f")]
fn matmul_f32_avx512(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let mut packed = PackedF32([0.0; T * F32_MAX_COLS]);
    let px = &mut packed.0[..cols * T];
    let mut i0 = 0;
    while i0 < n {
        let g = T.min(n - i0);
        pack_f32(&x[i0 * cols..(i0 + g) * cols], g, cols, px);
        let yg = &mut y[i0 * rows..(i0 + g) * rows];
        f32_rows_times_group(w, rows, cols, px, bias, yg, g);
        i0 += g;
    }
}

/// Hidden units the f32 feed-forward computes at a time (a 16 KiB buffer for 16 tokens).
const F32_UNITS: usize = 256;

/// The tile form of the down projection: outputs `c0 + r` (`r < 16`, columns of `down_t`)
/// for 16 tokens, summed over the `k` hidden units whose values `h` are packed as `[k][16]`
/// (`w` starts at column `c0` of the block's first row, rows of `d`): lane `t` of result `r`
/// is token `t`'s sum for column `c0 + r`.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile_f32_down(w: &[f32], d: usize, h: &[f32], k: usize) -> [__m512; T] {
    let w = &w[..(k - 1) * d + T];
    let h = &h[..k * T];
    let mut acc = [_mm512_setzero_ps(); T];
    for j in 0..k {
        // SAFETY: (j + 1) * 16 <= k * 16 = h.len(); unaligned load.
        let hv = unsafe { _mm512_loadu_ps(h.as_ptr().add(j * T)) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: j * d + r < (k - 1) * d + 16 = w.len().
            let wv = unsafe { *w.get_unchecked(j * d + r) };
            *a = _mm512_fmadd_ps(hv, _mm512_set1_ps(wv), *a);
        }
    }
    acc
}

#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn ffn_f32_avx512(
    up: &[f32],
    up_bias: Option<&[f32]>,
    act: Activation,
    down: &[f32],
    x: &[f32],
    n: usize,
    d: usize,
    d_ff: usize,
    out: &mut [f32],
) {
    let mut packed = PackedF32([0.0; T * F32_MAX_COLS]);
    let px = &mut packed.0[..d * T];
    // The hidden values of a block, packed as the down projection's input: [unit][16].
    let mut hb = [_mm512_setzero_ps(); F32_UNITS];
    let mut t0 = 0;
    while t0 < n {
        let g = T.min(n - t0);
        pack_f32(&x[t0 * d..(t0 + g) * d], g, d, px);
        let og = &mut out[t0 * d..(t0 + g) * d];
        let mut j0 = 0;
        while j0 < d_ff {
            let bl = F32_UNITS.min(d_ff - j0);
            let mut r = 0;
            while r + T <= bl {
                let rr = j0 + r;
                let f = tile_f32::<T>(&up[rr * d..], d, px, up_bias.map(|b| &b[rr..rr + T]));
                hb[r..r + T].copy_from_slice(&f);
                // Tile by tile: the activation overlaps the next tile's multiply-adds.
                activate_units(act, &mut hb[r..r + T], None);
                r += T;
            }
            while r < bl {
                let rr = j0 + r;
                let f = tile_f32::<1>(&up[rr * d..], d, px, up_bias.map(|b| &b[rr..rr + 1]));
                hb[r] = f[0];
                activate_units(act, &mut hb[r..r + 1], None);
                r += 1;
            }
            // SAFETY: a __m512 is 16 f32 (the same size, a stricter alignment), so the block's
            // vectors are bl * 16 f32.
            let hf = unsafe { core::slice::from_raw_parts(hb.as_ptr() as *const f32, bl * T) };
            let dw = &down[j0 * d..(j0 + bl) * d];
            for c0 in (0..d).step_by(T) {
                let mut f = tile_f32_down(&dw[c0..], d, hf, bl);
                transpose16(&mut f);
                for (t, v) in f.iter().enumerate().take(g) {
                    let o = &mut og[t * d + c0..t * d + c0 + T];
                    // SAFETY: o has 16 f32; unaligned load and store.
                    unsafe {
                        _mm512_storeu_ps(
                            o.as_mut_ptr(),
                            _mm512_add_ps(_mm512_loadu_ps(o.as_ptr()), *v),
                        )
                    };
                }
            }
            j0 += bl;
        }
        t0 += g;
    }
}

/// The dense f32 feed-forward of `n` tokens `x` (`n x d`): `out[t] += sum_j act(up_j . x_t +
/// up_bias_j) * down_t[j]` (`up` and `down_t` are `d_ff x d` f32, `out` holds the down bias
/// or zeros on entry): the hidden values stay in the tiles' layout (units x 16 tokens), which
/// is the packed input of the down projection's tiles (output columns x tokens, weights
/// broadcast in place from `down_t`'s rows). Fused multiply-adds and the fast GELU, so the
/// rounding differs from the reference kernels.
/// Returns `false`, having done nothing, without AVX-512 F or when `d` is not a multiple of
/// 16 up to [`F32_MAX_COLS`].
#[allow(clippy::too_many_arguments)]
pub fn x86_avx512_ffn_f32(
    up: &[f32],
    up_bias: Option<&[f32]>,
    act: Activation,
    down_t: &[f32],
    x: &[f32],
    n: usize,
    out: &mut [f32],
) -> bool {
    let d = x.len().checked_div(n).unwrap_or(0);
    let d_ff = up.len().checked_div(d).unwrap_or(0);
    let fits = d.is_multiple_of(16)
        && d > 0
        && d <= F32_MAX_COLS
        && x.len() == n * d
        && out.len() == n * d
        && up.len() == d_ff * d
        && down_t.len() == d_ff * d
        && up_bias.is_none_or(|b| b.len() == d_ff);
    if !(fits && available_f32()) {
        return false;
    }
    // SAFETY: the CPU has AVX-512 F (checked above).
    unsafe { ffn_f32_avx512(up, up_bias, act, down_t, x, n, d, d_ff, out) };
    true
}

/// AVX-512 [`super::matmul`] for f32 weights: `y = x W^T + b`, 16 weight rows times 16
/// tokens per register tile, fused multiply-adds over the columns in order (rounding differs
/// from the generic kernel). Other weight types, rows longer than 1024 or a CPU
/// without AVX-512 take the AVX2 kernel. Shapes as in [`super::matmul`].
pub fn x86_avx512_matmul_f32(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    match w.weights() {
        Weights::F32(d)
            if cols > 0
                && cols <= F32_MAX_COLS
                && x.len() == n * cols
                && y.len() == n * rows
                && available_f32() =>
        {
            // SAFETY: the CPU has AVX-512 F (checked above).
            unsafe { matmul_f32_avx512(d, rows, cols, x, n, bias, y) }
        }
        _ => super::x86_avx2_matmul_f32(w, x, n, bias, y),
    }
}

/// `TT` tokens times `CV` vectors of 16 columns from `c0`: `out[t][c] += sum_j h[t][j]
/// w[j][c]` over the `k` rows of `w`.
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn tile_acc_f32<const TT: usize, const CV: usize>(
    out: &mut [f32],
    w: &[f32],
    cols: usize,
    c0: usize,
    h: &[f32],
    k: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); CV]; TT];
    for j in 0..k {
        let wr = &w[j * cols + c0..j * cols + c0 + 16 * CV];
        // SAFETY: wr holds 16 * CV f32; unaligned loads.
        let wv: [__m512; CV] =
            core::array::from_fn(|v| unsafe { _mm512_loadu_ps(wr.as_ptr().add(16 * v)) });
        for (t, at) in acc.iter_mut().enumerate() {
            let hv = _mm512_set1_ps(h[t * k + j]);
            for (a, &wv) in at.iter_mut().zip(&wv) {
                *a = _mm512_fmadd_ps(hv, wv, *a);
            }
        }
    }
    for (t, at) in acc.iter().enumerate() {
        let o = &mut out[t * cols + c0..t * cols + c0 + 16 * CV];
        for (v, a) in at.iter().enumerate() {
            // SAFETY: o holds 16 * CV f32; unaligned load and store.
            unsafe {
                let p = o.as_mut_ptr().add(16 * v);
                _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), *a));
            }
        }
    }
}

#[target_feature(enable = "avx512f")]
fn accumulate_f32_tokens_avx512(
    out: &mut [f32],
    w: &[f32],
    cols: usize,
    h: &[f32],
    n: usize,
    k: usize,
) {
    let mut t = 0;
    while t < n {
        let tt = if n - t >= 4 { 4 } else { 1 };
        let (o, ht) = (&mut out[t * cols..], &h[t * k..]);
        let mut c0 = 0;
        while c0 + 64 <= cols {
            match tt {
                4 => tile_acc_f32::<4, 4>(o, w, cols, c0, ht, k),
                _ => tile_acc_f32::<1, 4>(o, w, cols, c0, ht, k),
            }
            c0 += 64;
        }
        while c0 < cols {
            match tt {
                4 => tile_acc_f32::<4, 1>(o, w, cols, c0, ht, k),
                _ => tile_acc_f32::<1, 1>(o, w, cols, c0, ht, k),
            }
            c0 += 16;
        }
        t += tt;
    }
}

/// AVX-512 [`super::accumulate_f32_tokens`]: fused multiply-adds, summed over the rows in
/// order then added to `out` (rounding differs from the generic kernel). Needs `cols` a
/// multiple of 16 (else the generic kernel).
pub fn x86_avx512_accumulate_f32_tokens(
    out: &mut [f32],
    w: &[f32],
    cols: usize,
    h: &[f32],
    n: usize,
) {
    let k = h.len().checked_div(n).unwrap_or(0);
    let fits = cols.is_multiple_of(16)
        && cols > 0
        && w.len() == k * cols
        && h.len() == n * k
        && out.len() == n * cols;
    if fits && available_f32() {
        // SAFETY: the CPU has AVX-512 F (checked above).
        unsafe { accumulate_f32_tokens_avx512(out, w, cols, h, n, k) }
    } else {
        generic::accumulate_f32_tokens(out, w, cols, h, n)
    }
}
