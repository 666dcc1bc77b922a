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
    // The tail through the same vector code (padded), so that each value's result never
    // depends on its position in the slice.
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let mut l = [0.0f32; 8];
        l[..rest.len()].copy_from_slice(rest);
        // SAFETY: l has exactly 8 elements; unaligned load and store.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), gelu_erf_avx2(_mm256_loadu_ps(l.as_ptr()))) };
        rest.copy_from_slice(&l[..rest.len()]);
    }
}

/// AVX2+FMA GELU (erf form) in place: within `|x| * 2e-7` (plus rounding) of
/// [`super::activate_fast`] (same formula, vector `exp`). Elementwise: a value's result does
/// not depend on its position in `x`.
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
