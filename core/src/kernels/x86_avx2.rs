//! x86-64 AVX2 (+FMA) kernels, compiled in std builds and chosen at run time
//! (`is_x86_feature_detected!`) by [`super::Kernels::Fast`]. Each overlays a kernel of
//! [`super::generic`] and is tested against it:
//! - `dot_i8_i8`: exact i32 (`vpmovsxbw` + `vpmaddwd`), so bit-identical to the generic one;
//! - `dot_f32`: 8-wide fused multiply-add in another summation order, so it differs from
//!   the generic [`super::dot`] by rounding only (a few ulp of `sum |a_i b_i|`).

use core::arch::x86_64::*;

use super::{Matrix, Weights, generic};

/// Whether this CPU runs the kernels of this module (AVX2 and FMA). Cached by std.
pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// Horizontal sum of the 8 i32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

/// Horizontal sum of the 8 f32 lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2")]
fn dot_i8_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n <= len of both slices, and loadu has no alignment requirement.
        let (a0, a1, b0, b1) = unsafe {
            let pa = a.as_ptr().add(i) as *const __m128i;
            let pb = b.as_ptr().add(i) as *const __m128i;
            (
                _mm_loadu_si128(pa),
                _mm_loadu_si128(pa.add(1)),
                _mm_loadu_si128(pb),
                _mm_loadu_si128(pb.add(1)),
            )
        };
        // Sign-extended to i16, each product pair summed into i32: exact.
        acc0 = _mm256_add_epi32(
            acc0,
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(a0), _mm256_cvtepi8_epi16(b0)),
        );
        acc1 = _mm256_add_epi32(
            acc1,
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(a1), _mm256_cvtepi8_epi16(b1)),
        );
        i += 32;
    }
    let mut s = hsum_i32(_mm256_add_epi32(acc0, acc1));
    while i < n {
        s += a[i] as i32 * b[i] as i32;
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2")]
fn dot_i8_q8_blocks_avx2(w: &[i8], xq: &[i8], s: &[f32]) -> f32 {
    const B: usize = generic::Q8_BLOCK;
    let n = w.len().min(xq.len());
    let full = (n / B).min(s.len());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for (b, &sb) in s.iter().enumerate().take(full) {
        // SAFETY: b * 32 + 32 <= full * 32 <= n <= len of both slices; unaligned loads.
        let (vw, vx) = unsafe {
            (
                _mm256_loadu_si256(w.as_ptr().add(b * B) as *const __m256i),
                _mm256_loadu_si256(xq.as_ptr().add(b * B) as *const __m256i),
            )
        };
        // |w| (u8, 128 for -128) times x with w's sign: pairs of products fit i16 without
        // saturation (2 * 128 * 127 < 2^15) as x is never -128. Then quads in i32: exact.
        let p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(vw), _mm256_sign_epi8(vx, vw));
        let quads = _mm256_madd_epi16(p16, ones);
        let term = _mm256_mul_ps(_mm256_cvtepi32_ps(quads), _mm256_set1_ps(sb));
        acc = _mm256_add_ps(acc, term);
    }
    let mut a = [0.0f32; 8];
    // SAFETY: a has 8 f32; unaligned store.
    unsafe { _mm256_storeu_ps(a.as_mut_ptr(), acc) };
    if full * B < n && full < s.len() {
        let (wb, xb) = (&w[full * B..n], &xq[full * B..n]);
        for (l, (wq, xq)) in wb.chunks(4).zip(xb.chunks(4)).enumerate() {
            a[l] += generic::dot_i8_i8(wq, xq) as f32 * s[full];
        }
    }
    ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
}

/// Four [`dot_i8_q8_blocks_avx2`] of one weight row, loading each weight block once; the same
/// bits as four separate calls.
#[target_feature(enable = "avx2")]
fn dot4_i8_q8_blocks_avx2(w: &[i8], xs: [&[i8]; 4], ss: [&[f32]; 4]) -> [f32; 4] {
    const B: usize = generic::Q8_BLOCK;
    let n = xs.iter().fold(w.len(), |m, x| m.min(x.len()));
    let full = ss.iter().fold(n / B, |m, s| m.min(s.len()));
    if full * B < n {
        // A short last block: one row at a time (rare: cols not a multiple of 32).
        return core::array::from_fn(|j| dot_i8_q8_blocks_avx2(w, xs[j], ss[j]));
    }
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); 4];
    // `b` indexes the weight row, four activation rows and their four scale rows alike.
    #[allow(clippy::needless_range_loop)]
    for b in 0..full {
        // SAFETY: b * 32 + 32 <= full * 32 <= n <= len of w; unaligned load.
        let vw = unsafe { _mm256_loadu_si256(w.as_ptr().add(b * B) as *const __m256i) };
        let aw = _mm256_abs_epi8(vw);
        for j in 0..4 {
            // SAFETY: as above, n <= len of xs[j].
            let vx = unsafe { _mm256_loadu_si256(xs[j].as_ptr().add(b * B) as *const __m256i) };
            let p16 = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(vx, vw));
            let quads = _mm256_madd_epi16(p16, ones);
            let term = _mm256_mul_ps(_mm256_cvtepi32_ps(quads), _mm256_set1_ps(ss[j][b]));
            acc[j] = _mm256_add_ps(acc[j], term);
        }
    }
    core::array::from_fn(|j| {
        let mut a = [0.0f32; 8];
        // SAFETY: a has 8 f32; unaligned store.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), acc[j]) };
        ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]))
    })
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (k, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8k + 8 <= i + 32 <= n <= len of both slices; loadu is unaligned.
            let (va, vb) = unsafe {
                (
                    _mm256_loadu_ps(a.as_ptr().add(i + 8 * k)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8 * k)),
                )
            };
            *acc = _mm256_fmadd_ps(va, vb, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= len of both slices.
        let (va, vb) = unsafe {
            (
                _mm256_loadu_ps(a.as_ptr().add(i)),
                _mm256_loadu_ps(b.as_ptr().add(i)),
            )
        };
        acc[0] = _mm256_fmadd_ps(va, vb, acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum_f32(v);
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2")]
fn axpy_i8_avx2(y: &mut [f32], s: f32, q: &[i8]) {
    let n = y.len().min(q.len());
    let vs = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= len of both slices; the loads and the store are unaligned.
        unsafe {
            let qi = _mm_loadl_epi64(q.as_ptr().add(i) as *const __m128i);
            let qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(qi));
            let py = y.as_mut_ptr().add(i);
            // Multiply, then add (no FMA): the same two roundings as the generic kernel.
            _mm256_storeu_ps(
                py,
                _mm256_add_ps(_mm256_loadu_ps(py), _mm256_mul_ps(vs, qf)),
            );
        }
        i += 8;
    }
    while i < n {
        y[i] += s * q[i] as f32;
        i += 1;
    }
}

#[target_feature(enable = "avx2")]
fn accumulate_rows_i8_avx2(acc: &mut [i32], q: &[i8], h: &[i8]) {
    let cols = acc.len();
    let rows = h.len().min(q.len().checked_div(cols).unwrap_or(0));
    let wide = cols & !15;
    let mut b = 0;
    while b + 2 <= rows {
        // (h[b], h[b+1]) as an i16 pair in every i32 lane: vpmaddwd then takes
        // h[b] q[b][c] + h[b+1] q[b+1][c] for the interleaved columns.
        let pair = (h[b] as i16 as u16 as u32) | ((h[b + 1] as i16 as u16 as u32) << 16);
        let hp = _mm256_set1_epi32(pair as i32);
        let (r0, r1) = (
            &q[b * cols..(b + 1) * cols],
            &q[(b + 1) * cols..(b + 2) * cols],
        );
        let mut c = 0;
        while c < wide {
            // SAFETY: c + 16 <= wide <= cols = len of r0, r1 and acc; unaligned accesses.
            unsafe {
                let a = _mm_loadu_si128(r0.as_ptr().add(c) as *const __m128i);
                let bb = _mm_loadu_si128(r1.as_ptr().add(c) as *const __m128i);
                let lo = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_unpacklo_epi8(a, bb)), hp);
                let hi = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_unpackhi_epi8(a, bb)), hp);
                let pa = acc.as_mut_ptr().add(c) as *mut __m256i;
                _mm256_storeu_si256(pa, _mm256_add_epi32(_mm256_loadu_si256(pa), lo));
                let pb = pa.add(1);
                _mm256_storeu_si256(pb, _mm256_add_epi32(_mm256_loadu_si256(pb), hi));
            }
            c += 16;
        }
        for c in wide..cols {
            acc[c] += h[b] as i32 * r0[c] as i32 + h[b + 1] as i32 * r1[c] as i32;
        }
        b += 2;
    }
    if b < rows {
        generic::accumulate_rows_i8(acc, &q[b * cols..(b + 1) * cols], &h[b..b + 1]);
    }
}

/// `e^x` for 8 lanes, `x` in `[-87, 0]` (all [`gelu_erf_avx2`] needs): `2^n e^r` with
/// `|r| <= ln2 / 2` and a degree-6 Taylor polynomial (relative error about 1e-7).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn exp_neg_avx2(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(core::f32::consts::LOG2_E),
    ));
    // Cody-Waite: ln 2 in two parts so that r is exact enough.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm256_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let pow2n = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow2n))
}

/// GELU (erf form) of 8 lanes: [`super::erf_fast`]'s formula with [`exp_neg_avx2`].
#[inline]
#[target_feature(enable = "avx2,fma")]
fn gelu_erf_avx2(x: __m256) -> __m256 {
    let z = _mm256_mul_ps(x, _mm256_set1_ps(core::f32::consts::FRAC_1_SQRT_2));
    let sign = _mm256_and_ps(z, _mm256_set1_ps(-0.0));
    let az = _mm256_andnot_ps(_mm256_set1_ps(-0.0), z);
    let one = _mm256_set1_ps(1.0);
    let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.327_591_1), az, one));
    let mut p = _mm256_set1_ps(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
        p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(c));
    }
    p = _mm256_mul_ps(p, t);
    let e = exp_neg_avx2(_mm256_mul_ps(_mm256_sub_ps(_mm256_setzero_ps(), az), az));
    let erf = _mm256_or_ps(_mm256_fnmadd_ps(p, e, one), sign);
    _mm256_mul_ps(
        _mm256_mul_ps(_mm256_set1_ps(0.5), x),
        _mm256_add_ps(one, erf),
    )
}

#[target_feature(enable = "avx2,fma")]
fn gelu_erf_slice_avx2(x: &mut [f32]) {
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: c has exactly 8 elements; unaligned load and store.
        unsafe { _mm256_storeu_ps(c.as_mut_ptr(), gelu_erf_avx2(_mm256_loadu_ps(c.as_ptr()))) };
    }
    for v in chunks.into_remainder() {
        *v = generic::activate_fast(crate::config::Activation::GeluErf, *v);
    }
}

/// AVX2+FMA GELU (erf form) in place: within `|x| * 2e-7` (plus rounding) of
/// [`super::activate_fast`] (same formula, vector `exp`).
pub fn x86_avx2_gelu_erf(x: &mut [f32]) {
    if available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { gelu_erf_slice_avx2(x) }
    } else {
        for v in x.iter_mut() {
            *v = generic::activate_fast(crate::config::Activation::GeluErf, *v);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
fn axpy_f32_avx2(y: &mut [f32], a: f32, x: &[f32]) {
    let n = y.len().min(x.len());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n <= len of both slices; unaligned loads and store.
        unsafe {
            let py = y.as_mut_ptr().add(i);
            let vx = _mm256_loadu_ps(x.as_ptr().add(i));
            _mm256_storeu_ps(py, _mm256_fmadd_ps(va, vx, _mm256_loadu_ps(py)));
        }
        i += 8;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// AVX2+FMA `y += a * x` (f32, equal lengths in elements): one rounding per element instead
/// of two, so within 1 ulp of `|a x_i|` of the generic [`super::axpy`].
pub fn x86_avx2_axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    if available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { axpy_f32_avx2(y, a, x) }
    } else {
        generic::axpy(y, a, x)
    }
}

/// AVX2 [`super::accumulate_rows_i8`]: the same exact i32 sums. Shapes as there.
pub fn x86_avx2_accumulate_rows_i8(acc: &mut [i32], q: &[i8], h: &[i8]) {
    debug_assert_eq!(q.len(), h.len() * acc.len());
    if available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { accumulate_rows_i8_avx2(acc, q, h) }
    } else {
        generic::accumulate_rows_i8(acc, q, h)
    }
}

#[target_feature(enable = "avx2")]
fn matmul_i8_i8_avx2(w: &Matrix<'_>, x: &[f32], n: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    generic::matmul_i8_i8_with(
        |a, b, s| dot_i8_q8_blocks_avx2(a, b, s),
        |a, xs, ss| dot4_i8_q8_blocks_avx2(a, xs, ss),
        w,
        x,
        n,
        bias,
        y,
    );
}

#[target_feature(enable = "avx2,fma")]
fn matmul_f32_avx2(
    w: &[f32],
    cols: usize,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let rows = w.len() / cols;
    for (r, wr) in w.chunks_exact(cols).enumerate() {
        let b = bias.map_or(0.0, |b| b[r]);
        for (i, xi) in x.chunks_exact(cols).take(n).enumerate() {
            y[i * rows + r] = dot_f32_avx2(wr, xi) + b;
        }
    }
}

/// AVX2 [`super::dot_i8_i8`]: the same exact i32 (the generic kernel when the CPU lacks
/// AVX2).
pub fn x86_avx2_dot_i8_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    if available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { dot_i8_i8_avx2(a, b) }
    } else {
        generic::dot_i8_i8(a, b)
    }
}

/// AVX2 [`super::dot_i8_q8_blocks`]: the same bits (exact quad sums, same float ops), for
/// `xq` without `-128` (as [`super::quantize_i8_blocks`] makes it).
pub fn x86_avx2_dot_i8_q8_blocks(w: &[i8], xq: &[i8], s: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), xq.len());
    if available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { dot_i8_q8_blocks_avx2(w, xq, s) }
    } else {
        generic::dot_i8_q8_blocks(w, xq, s)
    }
}

/// AVX2 [`super::dot4_i8_q8_blocks`]: the same bits, each weight block loaded once.
pub fn x86_avx2_dot4_i8_q8_blocks(w: &[i8], xs: [&[i8]; 4], ss: [&[f32]; 4]) -> [f32; 4] {
    if available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { dot4_i8_q8_blocks_avx2(w, xs, ss) }
    } else {
        generic::dot4_i8_q8_blocks(w, xs, ss)
    }
}

/// AVX2+FMA `a . b` of two f32 slices of equal length (elements); rounding differs from
/// [`super::dot`] (the generic kernel when the CPU lacks AVX2 or FMA).
pub fn x86_avx2_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    if available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { dot_f32_avx2(a, b) }
    } else {
        generic::dot(a, b)
    }
}

/// AVX2 `y += s * q` (int8 `q`, f32 `y`, equal lengths in elements): bit-identical to the
/// generic int8 [`super::axpy_row`] (multiply then add, no FMA).
pub fn x86_avx2_axpy_i8(y: &mut [f32], s: f32, q: &[i8]) {
    debug_assert_eq!(y.len(), q.len());
    if available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { axpy_i8_avx2(y, s, q) }
    } else {
        for (yi, &qi) in y.iter_mut().zip(q) {
            *yi += s * qi as f32;
        }
    }
}

/// AVX2 [`super::matmul_i8_i8`]: bit-identical (the dot products are exact integers).
/// Shapes as there.
pub fn x86_avx2_matmul_i8_i8(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    if available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { matmul_i8_i8_avx2(w, x, n, bias, y) }
    } else {
        generic::matmul_i8_i8(w, x, n, bias, y)
    }
}

/// AVX2+FMA [`super::matmul`] for f32 weights: `y = x W^T + b` with the dot products of
/// [`x86_avx2_dot_f32`] (rounding differs from the generic kernel). Other weight types take
/// the generic kernel. Shapes as in [`super::matmul`].
pub fn x86_avx2_matmul_f32(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    match w.weights() {
        Weights::F32(d) if available() && w.cols() > 0 => {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { matmul_f32_avx2(d, w.cols(), x, n, bias, y) }
        }
        _ => generic::matmul(w, x, n, bias, y),
    }
}
