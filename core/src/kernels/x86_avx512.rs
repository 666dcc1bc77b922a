//! x86-64 AVX-512 kernels (F, BW, VNNI), compiled in std builds and chosen at run time
//! (`is_x86_feature_detected!`) by [`super::Kernels::Fast`]; each falls back to the AVX2 or
//! generic kernel on a CPU without them, and is tested against [`super::generic`].
//!
//! Register-tiled matrix products in broadcast form: a tile of [`ROWS`] weight rows times
//! [`super::QT_GROUP`] = 16 tokens (one 16-lane register per weight row) keeps its
//! accumulators in registers over the whole reduction; each step loads one vector of the
//! tokens' activations (packed on the stack, 4 int8 or 1 f32 per token per lane) and
//! multiplies it by a broadcast of the weight row (4 int8 or 1 f32 read in place: the
//! row-major `[out, in]` weights are never repacked). No horizontal sums.
//!
//! - int8 (`vpdpbusd`): the activations are stored as `u8 = x + 128`, so each lane sums
//!   `(x + 128) w` exactly in i32 and starts from `-128 * sum(w)`: the exact i32 dot,
//!   bit-identical results to [`super::matmul_q8_tokens`].
//! - f32 (`vfmadd231ps`): fused, in another order than [`super::matmul`] (rounding only).

use core::arch::x86_64::*;

use super::{Matrix, Weights, generic};

/// Weight rows per register tile (accumulators: 8 registers of 16 tokens).
pub const ROWS: usize = 8;
const T: usize = generic::QT_GROUP;
const _: () =
    assert!(T == 2 * ROWS && generic::QT_BLOCK <= 64 && generic::QT_BLOCK.is_multiple_of(4));
/// Packed int8 activations of one token group: 16 tokens x `Q8_MAX_COLS` bytes (64 KiB).
const PACK_WORDS: usize = T * generic::Q8_MAX_COLS / 4;

/// Whether this CPU runs the int8 kernels of this module (AVX-512 F, BW and VNNI). Cached by
/// std.
pub fn available_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

#[repr(align(64))]
struct Packed([u32; PACK_WORDS]);

/// Packs `g <= 16` int8 rows of `cols` (a multiple of 4) values as `u8 = x + 128` in
/// `[cols / 4][16][4]` order; missing tokens are `x = 0`.
fn pack_q8(xq: &[i8], g: usize, cols: usize, out: &mut [u32]) {
    let k4n = cols / 4;
    for t in 0..T {
        if t < g {
            let row = &xq[t * cols..(t + 1) * cols];
            for (k4, c) in row.chunks_exact(4).enumerate() {
                // x + 128 of an i8 is its bits with the sign bit flipped.
                let v = u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]);
                out[k4 * T + t] = v ^ 0x8080_8080;
            }
        } else {
            for k4 in 0..k4n {
                out[k4 * T + t] = 0x8080_8080;
            }
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

/// `-128 * sum w` of each [`generic::QT_BLOCK`] of row `r`, scalar (rows outside a group of
/// 16).
fn row_corr(w: &[i8], out: &mut [i32]) {
    for (o, b) in out.iter_mut().zip(w.chunks(generic::QT_BLOCK)) {
        *o = -128 * b.iter().map(|&v| v as i32).sum::<i32>();
    }
}

/// Writes a tile `tmp` (`[row][token]`) of rows `r0..r0 + RR` and `g` tokens into `y` (rows
/// of `rows` outputs per token).
fn store_tile<const RR: usize>(
    tmp: &[[f32; T]; RR],
    y: &mut [f32],
    rows: usize,
    r0: usize,
    g: usize,
) {
    for t in 0..g {
        let yt = &mut y[t * rows + r0..t * rows + r0 + RR];
        for (r, v) in yt.iter_mut().enumerate() {
            *v = tmp[r][t];
        }
    }
}

/// One tile: rows `r0..r0 + RR` times the packed group (`g` valid tokens) with the block
/// scales `sx` (`[nb][16]`) and the row corrections `corr` (`[RR][nb]`, `-128 * sum w`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn tile_q8<const RR: usize>(
    q: &[i8],
    scales: &[f32],
    cols: usize,
    r0: usize,
    packed: &[u32],
    sx: &[f32],
    corr: &[i32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    g: usize,
) {
    const KB: usize = generic::QT_BLOCK / 4;
    let k4n = cols / 4;
    let nb = generic::qt_blocks(cols);
    let wt = &q[r0 * cols..(r0 + RR) * cols];
    let px = &packed[..k4n * T];
    let mut facc = [_mm512_setzero_ps(); RR];
    let mut k0 = 0;
    while k0 < k4n {
        let k1 = (k0 + KB).min(k4n);
        let b = k0 / KB;
        let mut acc: [__m512i; RR] = core::array::from_fn(|r| _mm512_set1_epi32(corr[r * nb + b]));
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
    let mut tmp = [[0.0f32; T]; RR];
    for (r, (f, o)) in facc.iter().zip(tmp.iter_mut()).enumerate() {
        // The epilogue of generic::q8_token_out, lane by lane.
        let mut v = _mm512_mul_ps(*f, _mm512_set1_ps(scales[r0 + r]));
        if let Some(b) = bias {
            v = _mm512_add_ps(v, _mm512_set1_ps(b[r0 + r]));
        }
        // SAFETY: o has 16 f32; unaligned store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    store_tile(&tmp, y, rows, r0, g);
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
fn matmul_q8_tokens_vnni(
    q: &[i8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    const MAX_NB: usize = generic::Q8_MAX_COLS / generic::QT_BLOCK;
    let nb = generic::qt_blocks(cols);
    let mut packed = Packed([0; PACK_WORDS]);
    let mut sx = [0.0f32; T * MAX_NB];
    // Row corrections of 16 rows, [16][nb].
    let mut corr = [0i32; T * MAX_NB];
    let mut i0 = 0;
    while i0 < n {
        let g = T.min(n - i0);
        pack_q8(&xq[i0 * cols..(i0 + g) * cols], g, cols, &mut packed.0);
        // Block scales as [nb][16 tokens]; missing tokens scale 0.
        for b in 0..nb {
            for t in 0..T {
                sx[b * T + t] = if t < g { xs[(i0 + t) * nb + b] } else { 0.0 };
            }
        }
        let sx = &sx[..nb * T];
        let yg = &mut y[i0 * rows..(i0 + g) * rows];
        let mut r0 = 0;
        while r0 + T <= rows {
            let w16 = &q[r0 * cols..(r0 + T) * cols];
            for b in 0..nb {
                let (c0, c1) = (
                    b * generic::QT_BLOCK,
                    ((b + 1) * generic::QT_BLOCK).min(cols),
                );
                let s = _mm512_sub_epi32(
                    _mm512_setzero_si512(),
                    _mm512_slli_epi32::<7>(row_sums16(w16, cols, c0, c1)),
                );
                let mut l = [0i32; T];
                // SAFETY: l has 16 i32; unaligned store.
                unsafe { _mm512_storeu_si512(l.as_mut_ptr() as *mut __m512i, s) };
                for (r, &v) in l.iter().enumerate() {
                    corr[r * nb + b] = v;
                }
            }
            for half in 0..2 {
                let rr = r0 + half * ROWS;
                let c = &corr[half * ROWS * nb..(half + 1) * ROWS * nb];
                tile_q8::<ROWS>(q, scales, cols, rr, &packed.0, sx, c, bias, yg, rows, g);
            }
            r0 += T;
        }
        while r0 < rows {
            row_corr(&q[r0 * cols..(r0 + 1) * cols], &mut corr[..nb]);
            tile_q8::<1>(
                q,
                scales,
                cols,
                r0,
                &packed.0,
                sx,
                &corr[..nb],
                bias,
                yg,
                rows,
                g,
            );
            r0 += 1;
        }
        i0 += g;
    }
}

/// AVX-512 VNNI [`super::matmul_q8_tokens`]: the same bits (exact i32 dots, same epilogue).
/// Falls back to the generic kernel without AVX-512 VNNI or when `cols` is not a multiple of
/// 4. Shapes as there.
pub fn x86_avx512_matmul_q8_tokens(
    w: &Matrix<'_>,
    xq: &[i8],
    xs: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    match w.weights() {
        Weights::I8 { q, scales }
            if cols.is_multiple_of(4) && cols <= generic::Q8_MAX_COLS && available_vnni() =>
        {
            // SAFETY: the CPU has AVX-512 F, BW and VNNI (checked above).
            unsafe { matmul_q8_tokens_vnni(q, scales, rows, cols, xq, xs, n, bias, y) }
        }
        _ => generic::matmul_q8_tokens(w, xq, xs, n, bias, y),
    }
}

/// AVX-512 VNNI [`super::matmul_i8_i8_token`]: the same bits. Shapes as there.
pub fn x86_avx512_matmul_i8_i8_token(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    generic::matmul_i8_i8_token_with(
        x86_avx512_quantize_i8_token,
        x86_avx512_matmul_q8_tokens,
        w,
        x,
        n,
        bias,
        y,
    );
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
        let p = &q[4 * j4 * cols + c0..(4 * j4 + 3) * cols + c0 + 16];
        // SAFETY: rows 4 j4 .. 4 j4 + 3 at columns c0..c0 + 16 lie in p (checked by the
        // slice above); unaligned loads.
        let wv = unsafe {
            let l = |i: usize| _mm_loadu_si128(p.as_ptr().add(i * cols) as *const __m128i);
            let a = _mm512_castsi128_si512(l(0));
            let a = _mm512_inserti32x4::<1>(a, l(1));
            let a = _mm512_inserti32x4::<2>(a, l(2));
            _mm512_inserti32x4::<3>(a, l(3))
        };
        let wv = _mm512_permutexvar_epi8(idx, wv);
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

/// Weight rows per f32 register tile.
const ROWS_F32: usize = 12;
/// Longest f32 row the AVX-512 matmul packs (16 tokens x 1024 f32 = 64 KiB of stack).
pub const F32_MAX_COLS: usize = 1024;

/// Whether this CPU runs the f32 kernels of this module (AVX-512 F).
fn available_f32() -> bool {
    is_x86_feature_detected!("avx512f")
}

#[repr(align(64))]
struct PackedF32([f32; T * F32_MAX_COLS]);

/// Rows `r0..r0 + RR` of `w` (`cols` each) times the packed tokens `px` (`[cols][16]`), plus
/// the bias, into `y` (rows of `rows`, `g` valid tokens).
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
fn tile_f32<const RR: usize>(
    w: &[f32],
    cols: usize,
    r0: usize,
    px: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    rows: usize,
    g: usize,
) {
    let wt = &w[r0 * cols..(r0 + RR) * cols];
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
    let mut tmp = [[0.0f32; T]; RR];
    for (r, (a, o)) in acc.iter().zip(tmp.iter_mut()).enumerate() {
        let v = match bias {
            Some(b) => _mm512_add_ps(*a, _mm512_set1_ps(b[r0 + r])),
            None => *a,
        };
        // SAFETY: o has 16 f32; unaligned store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    store_tile(&tmp, y, rows, r0, g);
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
    let mut i0 = 0;
    while i0 < n {
        let g = T.min(n - i0);
        let px = &mut packed.0[..cols * T];
        if g < T {
            px.fill(0.0);
        }
        for t in 0..g {
            for (k, &v) in x[(i0 + t) * cols..(i0 + t + 1) * cols].iter().enumerate() {
                px[k * T + t] = v;
            }
        }
        let yg = &mut y[i0 * rows..(i0 + g) * rows];
        let mut r0 = 0;
        while r0 + ROWS_F32 <= rows {
            tile_f32::<ROWS_F32>(w, cols, r0, px, bias, yg, rows, g);
            r0 += ROWS_F32;
        }
        while r0 < rows {
            tile_f32::<1>(w, cols, r0, px, bias, yg, rows, g);
            r0 += 1;
        }
        i0 += g;
    }
}

/// AVX-512 [`super::matmul`] for f32 weights: `y = x W^T + b`, 12 weight rows times 16
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
