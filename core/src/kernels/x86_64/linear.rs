//! Products with f32 activations (AVX2+FMA, AVX-512 F).

use core::arch::x86_64::*;

use super::cpu::*;
use super::q8::{store_row1, store_rows16, transpose16};

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
/// of two, so within 1 ulp of `|a x_i|` of the generic [`crate::kernels::axpy`].
pub fn x86_avx2_axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    debug_assert_eq!(y.len(), x.len());
    if x86_avx2_available() {
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

/// AVX2+FMA `a . b` of two f32 slices of equal length (elements); rounding differs from
/// [`crate::kernels::dot`] (the generic kernel when the CPU lacks AVX2 or FMA).
pub fn x86_avx2_dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    if x86_avx2_available() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        unsafe { dot_f32_avx2(a, b) }
    } else {
        generic::dot(a, b)
    }
}

/// AVX2 `y += s * q` (int8 `q`, f32 `y`, equal lengths in elements): bit-identical to the
/// generic int8 [`crate::kernels::axpy_row`] (multiply then add, no FMA).
pub fn x86_avx2_axpy_i8(y: &mut [f32], s: f32, q: &[i8]) {
    debug_assert_eq!(y.len(), q.len());
    if x86_avx2_available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { axpy_i8_avx2(y, s, q) }
    } else {
        for (yi, &qi) in y.iter_mut().zip(q) {
            *yi += s * qi as f32;
        }
    }
}

/// AVX2+FMA [`crate::kernels::matmul`] for f32 weights: `y = x W^T + b` with the dot products of
/// [`x86_avx2_dot_f32`] (rounding differs from the generic kernel). Other weight types take
/// the generic kernel. Shapes as in [`crate::kernels::matmul`].
pub fn x86_avx2_matmul_f32(
    w: &Matrix<'_>,
    x: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    match w.weights() {
        Weights::F32(d) if x86_avx2_available() && w.cols() > 0 => {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            unsafe { matmul_f32_avx2(d, w.cols(), x, n, bias, y) }
        }
        _ => generic::matmul(w, x, n, bias, y),
    }
}

/// Longest f32 row the AVX-512 matmul packs (16 tokens x 1024 f32 = 64 KiB of stack).
pub const F32_MAX_COLS: usize = 1024;

#[repr(align(64))]
pub(super) struct PackedF32(pub(super) [f32; Q8_GROUP * F32_MAX_COLS]);

/// Packs `g <= 16` f32 rows of `x` (`cols` values each) as `[cols][16]` in `px` (missing
/// tokens 0), 16 columns at a time by a register transpose.
#[target_feature(enable = "avx512f")]
pub(super) fn pack_f32(x: &[f32], g: usize, cols: usize, px: &mut [f32]) {
    for c0 in (0..cols).step_by(Q8_GROUP) {
        let m = tail_mask(cols, c0);
        let mut v: [__m512; Q8_GROUP] = core::array::from_fn(|t| {
            if t < g {
                let row = &x[t * cols..(t + 1) * cols];
                // SAFETY: the masked load reads row[c0..min(c0 + 16, cols)] only.
                unsafe { _mm512_maskz_loadu_ps(m, row.as_ptr().add(c0)) }
            } else {
                _mm512_setzero_ps()
            }
        });
        transpose16(&mut v);
        for (i, r) in v.iter().enumerate().take((cols - c0).min(Q8_GROUP)) {
            let o = &mut px[(c0 + i) * Q8_GROUP..(c0 + i + 1) * Q8_GROUP];
            // SAFETY: o has 16 f32; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *r) };
        }
    }
}

/// The `RR` rows `wt` (`cols` each) times the packed tokens `px` (`[cols][16]`), plus the
/// biases: lane `t` of result `r` is token `t`'s output of row `r`.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn tile_f32<const RR: usize>(
    wt: &[f32],
    cols: usize,
    px: &[f32],
    bias: Option<&[f32]>,
) -> [__m512; RR] {
    let wt = &wt[..RR * cols];
    let px = &px[..cols * Q8_GROUP];
    let mut acc = [_mm512_setzero_ps(); RR];
    for k in 0..cols {
        // SAFETY: (k + 1) * 16 <= cols * 16 = px.len(); unaligned load.
        let xv = unsafe { _mm512_loadu_ps(px.as_ptr().add(k * Q8_GROUP)) };
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
pub(super) fn f32_rows_times_group(
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
    while r0 + Q8_GROUP <= rows {
        let f = tile_f32::<Q8_GROUP>(&w[r0 * cols..], cols, px, bias_of(r0, Q8_GROUP));
        store_rows16(f, y, rows, r0, g);
        r0 += Q8_GROUP;
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
    let mut packed = PackedF32([0.0; Q8_GROUP * F32_MAX_COLS]);
    let px = &mut packed.0[..cols * Q8_GROUP];
    let mut i0 = 0;
    while i0 < n {
        let g = Q8_GROUP.min(n - i0);
        pack_f32(&x[i0 * cols..(i0 + g) * cols], g, cols, px);
        let yg = &mut y[i0 * rows..(i0 + g) * rows];
        f32_rows_times_group(w, rows, cols, px, bias, yg, g);
        i0 += g;
    }
}

/// Tokens up to which [`x86_avx512_matmul_f32`] runs matrix-vector products (one token at a
/// time, [`MV_ROWS`] rows per step) rather than 16-token tiles.
const MV_TOKENS: usize = 3;
/// Weight rows per step of the matrix-vector product.
const MV_ROWS: usize = 4;

/// `y = x W^T + b` one token at a time: [`MV_ROWS`] rows share each 16 columns of the token,
/// fused multiply-adds per lane, then one horizontal sum per row (rounding differs from the
/// generic kernel).
#[target_feature(enable = "avx512f")]
fn matvec_f32_avx512(
    w: &[f32],
    (rows, cols): (usize, usize),
    (x, n): (&[f32], usize),
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let b = |r: usize| bias.map_or(0.0, |b| b[r]);
    for (xt, yt) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)).take(n) {
        let mut r = 0;
        while r + MV_ROWS <= rows {
            let v = mv_rows::<MV_ROWS>(&w[r * cols..(r + MV_ROWS) * cols], cols, xt);
            for (i, v) in v.into_iter().enumerate() {
                yt[r + i] = v + b(r + i);
            }
            r += MV_ROWS;
        }
        while r < rows {
            yt[r] = mv_rows::<1>(&w[r * cols..(r + 1) * cols], cols, xt)[0] + b(r);
            r += 1;
        }
    }
}

/// The `RR` rows `wr` (`cols` each) dotted with `xt`.
#[inline]
#[target_feature(enable = "avx512f")]
fn mv_rows<const RR: usize>(wr: &[f32], cols: usize, xt: &[f32]) -> [f32; RR] {
    let (wr, xt) = (&wr[..RR * cols], &xt[..cols]);
    let mut acc = [_mm512_setzero_ps(); RR];
    let mut c = 0;
    while c + 16 <= cols {
        // SAFETY: c + 16 <= cols = xt.len(); unaligned load.
        let xv = unsafe { _mm512_loadu_ps(xt.as_ptr().add(c)) };
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: i * cols + c + 16 <= RR * cols = wr.len(); unaligned load.
            let wv = unsafe { _mm512_loadu_ps(wr.as_ptr().add(i * cols + c)) };
            *a = _mm512_fmadd_ps(wv, xv, *a);
        }
        c += 16;
    }
    if c < cols {
        let m = tail_mask(cols, c);
        // SAFETY: the masked loads read columns c..cols only, of xt and of each row of wr.
        let xv = unsafe { _mm512_maskz_loadu_ps(m, xt.as_ptr().add(c)) };
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let wv = unsafe { _mm512_maskz_loadu_ps(m, wr.as_ptr().add(i * cols + c)) };
            *a = _mm512_fmadd_ps(wv, xv, *a);
        }
    }
    core::array::from_fn(|i| _mm512_reduce_add_ps(acc[i]))
}

/// AVX-512 [`crate::kernels::matmul`] for f32 weights: `y = x W^T + b`, 16 weight rows times 16
/// tokens per register tile, fused multiply-adds over the columns in order (rounding differs
/// from the generic kernel); up to 3 tokens (decoding) go one at a time, 4 rows per step,
/// each row's 16 lanes summed at the end. Other weight types, rows longer than 1024 (more
/// than 3 tokens) or a CPU without AVX-512 take the AVX2 kernel. Shapes as in
/// [`crate::kernels::matmul`].
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
            if cols > 0 && n <= MV_TOKENS && generic::tokens_fit(w, x, n, y) && available_f32() =>
        {
            // SAFETY: the CPU has AVX-512 F (checked above), and the shapes were checked.
            unsafe { matvec_f32_avx512(d, (rows, cols), (x, n), bias, y) }
        }
        Weights::F32(d)
            if cols > 0
                && cols <= F32_MAX_COLS
                && generic::tokens_fit(w, x, n, y)
                && available_f32() =>
        {
            // SAFETY: the CPU has AVX-512 F (checked above).
            unsafe { matmul_f32_avx512(d, rows, cols, x, n, bias, y) }
        }
        _ => x86_avx2_matmul_f32(w, x, n, bias, y),
    }
}

/// `TT` tokens times `CV` vectors of 16 columns from `c0`: `out[t][c] += sum_j h[t][j]
/// w[j][c]` over the `k` rows of `w`.
#[inline]
#[target_feature(enable = "avx512f")]
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

/// AVX-512 [`crate::kernels::accumulate_f32_tokens`]: fused multiply-adds, summed over the rows in
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
