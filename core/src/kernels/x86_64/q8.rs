//! Int8-activation products, quantization and accumulation (AVX2, AVX-512 VNNI).

use core::arch::x86_64::*;

use super::cpu::*;

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

/// AVX2 [`crate::kernels::dot_i8_i8`]: the same exact i32 (the generic kernel when the CPU lacks
/// AVX2).
pub fn x86_avx2_dot_i8_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    if x86_avx2_available() {
        // SAFETY: the CPU has AVX2 (checked above).
        unsafe { dot_i8_i8_avx2(a, b) }
    } else {
        generic::dot_i8_i8(a, b)
    }
}

/// Asks for the cache lines of `part` of `parts` of `b` to be brought into L2: the weights of
/// the next rows stream in while these rows' tiles run (the block sums would otherwise wait
/// for them). A hint only: no memory is read.
#[inline(always)]
pub(super) fn prefetch_part(b: &[i8], part: usize, parts: usize) {
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
pub(super) fn quantize_block_vec(x: &[f32]) -> (f32, __m512i) {
    let n = x.len().min(Q8_BLOCK);
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
/// [`Q8_BLOCK`] (the bits of [`generic::quantize_i8_token`]) straight into the packed
/// form: `u8 = q + 128` in `[cols / 4][16][4]` order in `out`, the block scales `[nb][16]` in
/// `sx`, missing tokens `x = 0` with scale 0. Per block, each token's 64 bytes in a register,
/// then one 16 x 16 transpose of 4-byte words.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn quantize_pack(x: &[f32], g: usize, cols: usize, out: &mut [u32], sx: &mut [f32]) {
    let nb = q8_blocks(cols);
    let flip = _mm512_set1_epi8(i8::MIN);
    for b in 0..nb {
        let (c0, c1) = (b * Q8_BLOCK, ((b + 1) * Q8_BLOCK).min(cols));
        let mut v = [_mm512_setzero_ps(); Q8_GROUP];
        for (t, vt) in v.iter_mut().enumerate() {
            let (s, q) = if t < g {
                quantize_block_vec(&x[t * cols + c0..t * cols + c1])
            } else {
                (0.0, _mm512_setzero_si512())
            };
            sx[b * Q8_GROUP + t] = s;
            // u8 = q + 128; a missing token is x = 0.
            *vt = _mm512_castsi512_ps(_mm512_xor_si512(q, flip));
        }
        transpose16(&mut v);
        for (i, w) in v.iter().enumerate().take((c1 - c0) / 4) {
            let o = &mut out[(c0 / 4 + i) * Q8_GROUP..(c0 / 4 + i + 1) * Q8_GROUP];
            // SAFETY: o has 16 u32; unaligned store.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr() as *mut f32, *w) };
        }
    }
}

/// Block sums of 16 int8 rows: lane `r` of the result is `sum w[r][c]` over the columns
/// `c0..c1` (`c1 - c0 <= 64`) of row `r` of `w` (rows of `cols` values).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) fn row_sums16(w: &[i8], cols: usize, c0: usize, c1: usize) -> __m512i {
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
pub(super) fn corr16(w16: &[i8], cols: usize, corr: &mut [i32]) {
    for b in 0..q8_blocks(cols) {
        let (c0, c1) = (b * Q8_BLOCK, ((b + 1) * Q8_BLOCK).min(cols));
        let s = _mm512_sub_epi32(
            _mm512_setzero_si512(),
            _mm512_slli_epi32::<7>(row_sums16(w16, cols, c0, c1)),
        );
        let o = &mut corr[b * Q8_GROUP..(b + 1) * Q8_GROUP];
        // SAFETY: o has 16 i32; unaligned store.
        unsafe { _mm512_storeu_si512(o.as_mut_ptr() as *mut __m512i, s) };
    }
}

/// `-128 * sum w` of each column block of one row `w`, at `corr[b * 16]` (the layout of
/// [`corr16`], one row).
pub(super) fn corr1(w: &[i8], corr: &mut [i32]) {
    for (b, blk) in w.chunks(Q8_BLOCK).enumerate() {
        corr[b * Q8_GROUP] = -128 * blk.iter().map(|&v| v as i32).sum::<i32>();
    }
}

/// One tile: the `RR` rows `wt` (`cols` each, row scales `ws`, biases `bias`) times a packed
/// group `px` with its block scales `sx` (`[nb][16]`) and the row corrections at
/// `corr[b * 16 + r]`: lane `t` of the result `r` is token `t`'s output of row `r`, the bits of
/// [`generic::matmul_q8_tokens`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) fn tile_q8<const RR: usize>(
    wt: &[i8],
    cols: usize,
    ws: &[f32],
    bias: Option<&[f32]>,
    px: &[u32],
    sx: &[f32],
    corr: &[i32],
) -> [__m512; RR] {
    const KB: usize = Q8_BLOCK / 4;
    let k4n = cols / 4;
    let wt = &wt[..RR * cols];
    let px = &px[..k4n * Q8_GROUP];
    let mut facc = [_mm512_setzero_ps(); RR];
    let mut k0 = 0;
    while k0 < k4n {
        let k1 = (k0 + KB).min(k4n);
        let b = k0 / KB;
        let mut acc: [__m512i; RR] =
            core::array::from_fn(|r| _mm512_set1_epi32(corr[b * Q8_GROUP + r]));
        for k4 in k0..k1 {
            // SAFETY: (k4 + 1) * 16 <= k4n * 16 = px.len() u32; unaligned load.
            let xv =
                unsafe { _mm512_loadu_si512(px.as_ptr().add(k4 * Q8_GROUP) as *const __m512i) };
            for (r, a) in acc.iter_mut().enumerate() {
                // SAFETY: r * cols + 4 * k4 + 4 <= RR * cols = wt.len() (cols = 4 * k4n);
                // the 4 bytes are read unaligned.
                let w4 =
                    unsafe { (wt.as_ptr().add(r * cols + 4 * k4) as *const i32).read_unaligned() };
                *a = _mm512_dpbusd_epi32(*a, xv, _mm512_set1_epi32(w4));
            }
        }
        // SAFETY: b < nb, and sx holds nb * 16 f32; unaligned load.
        let sv = unsafe { _mm512_loadu_ps(sx.as_ptr().add(b * Q8_GROUP)) };
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
pub(super) fn transpose16(r: &mut [__m512; 16]) {
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
pub(super) fn store_rows16(mut f: [__m512; 16], y: &mut [f32], rows: usize, r0: usize, g: usize) {
    transpose16(&mut f);
    for (t, v) in f.iter().enumerate().take(g) {
        let o = &mut y[t * rows + r0..t * rows + r0 + Q8_GROUP];
        // SAFETY: o has 16 f32; unaligned store.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), *v) };
    }
}

/// The products of one row `r` (lanes: tokens) into `y`, `g` tokens.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn store_row1(f: __m512, y: &mut [f32], rows: usize, r: usize, g: usize) {
    let mut l = [0.0f32; Q8_GROUP];
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
pub(super) fn rows_times_groups(
    q: &[i8],
    scales: &[f32],
    (rows, cols): (usize, usize),
    bias: Option<&[f32]>,
    (px, sx, gs): (&[u32], &[f32], &[usize]),
    y: &mut [f32],
) {
    let (gw, nb) = (cols / 4 * Q8_GROUP, q8_blocks(cols));
    let mut corr = [0i32; Q8_GROUP * MAX_NB];
    let bias_of = |r0: usize, rr: usize| bias.map(|b| &b[r0..r0 + rr]);
    let mut r0 = 0;
    while r0 + Q8_GROUP <= rows {
        corr16(&q[r0 * cols..(r0 + Q8_GROUP) * cols], cols, &mut corr);
        let next =
            &q[((r0 + Q8_GROUP) * cols).min(q.len())..((r0 + 2 * Q8_GROUP) * cols).min(q.len())];
        let mut y0 = 0;
        for (i, &g) in gs.iter().enumerate() {
            prefetch_part(next, i, gs.len());
            let (pxi, sxi) = (
                &px[i * gw..(i + 1) * gw],
                &sx[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP],
            );
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
        r0 += Q8_GROUP;
    }
    while r0 < rows {
        corr1(&q[r0 * cols..(r0 + 1) * cols], &mut corr);
        let mut y0 = 0;
        for (i, &g) in gs.iter().enumerate() {
            let (pxi, sxi) = (
                &px[i * gw..(i + 1) * gw],
                &sx[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP],
            );
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

/// Whether [`crate::kernels::Kernels::quantize_q8`] packs tokens of `cols` columns for these kernels: `cols`
/// a multiple of 4 up to [`Q8_MAX_COLS`], and a CPU with AVX-512 F, BW and VNNI.
pub(crate) fn packs_q8(cols: usize) -> bool {
    cols.is_multiple_of(4) && cols > 0 && cols <= Q8_MAX_COLS && x86_avx512_vnni_available()
}

/// Quantizes the token rows of `x` (`cols` each, [`packs_q8`]) into groups of 16 in the packed
/// form of [`quantize_pack`]: group `i`'s words at `px[i * 4 cols..]` and its scales at
/// `sx[i * 16 nb..]` (`px` and `sx` hold every group).
pub(crate) fn quantize_pack_groups(x: &[f32], cols: usize, px: &mut [u32], sx: &mut [f32]) {
    let (gw, nb) = (cols / 4 * Q8_GROUP, q8_blocks(cols));
    let n = x.len() / cols.max(1);
    if !packs_q8(cols)
        || px.len() < n.div_ceil(Q8_GROUP) * gw
        || sx.len() < n.div_ceil(Q8_GROUP) * nb * Q8_GROUP
    {
        debug_assert!(
            false,
            "quantize_pack_groups: no VNNI or too small a scratch"
        );
        return;
    }
    for (i, xg) in x[..n * cols].chunks(Q8_GROUP * cols).enumerate() {
        let g = xg.len() / cols;
        let (pxi, sxi) = (
            &mut px[i * gw..(i + 1) * gw],
            &mut sx[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP],
        );
        // SAFETY: the CPU has AVX-512 F and BW (packs_q8 checked VNNI, which comes with them).
        unsafe { quantize_pack(xg, g, cols, pxi, sxi) };
    }
}

/// `y = Xq W^T + b` of `n` tokens packed by [`quantize_pack_groups`] (`px`, `sx`) and the int8
/// matrix `w` ([`packs_q8`] of its columns): the bits of [`generic::matmul_q8_tokens`]
/// (block weights: `super::blocks::matmul_packed`).
pub(crate) fn matmul_packed_groups(
    w: &Matrix<'_>,
    px: &[u32],
    sx: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let (gw, nb, groups) = (cols / 4 * Q8_GROUP, q8_blocks(cols), n.div_ceil(Q8_GROUP));
    let Weights::I8 { q, scales } = w.weights() else {
        debug_assert!(false, "matmul_packed_groups needs int8 weights");
        return;
    };
    if !packs_q8(cols)
        || groups > Q8_MAX_GROUPS
        || px.len() < groups * gw
        || sx.len() < groups * nb * Q8_GROUP
        || y.len() != n * rows
        || bias.is_some_and(|b| b.len() != rows)
    {
        debug_assert!(false, "matmul_packed_groups: shapes");
        return;
    }
    let gs: [usize; Q8_MAX_GROUPS] =
        core::array::from_fn(|i| Q8_GROUP.min(n.saturating_sub(i * Q8_GROUP)));
    // SAFETY: the CPU has AVX-512 F, BW and VNNI (packs_q8), and the shapes were checked.
    unsafe {
        let packed = (
            &px[..groups * gw],
            &sx[..groups * nb * Q8_GROUP],
            &gs[..groups],
        );
        rows_times_groups(q, scales, (rows, cols), bias, packed, y)
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
    for ((xb, qb), sb) in x.chunks(Q8_BLOCK).zip(q.chunks_mut(Q8_BLOCK)).zip(s) {
        *sb = quantize_block_avx512(xb, qb);
    }
}

/// AVX-512 [`crate::kernels::quantize_i8_token`]: the same bits (for finite inputs).
pub fn x86_avx512_quantize_i8_token(x: &[f32], q: &mut [i8], s: &mut [f32]) {
    debug_assert_eq!(x.len(), q.len());
    if x86_avx512_vnni_available() {
        // SAFETY: the CPU has AVX-512 F and BW (checked above).
        unsafe { quantize_i8_token_avx512(x, q, s) }
    } else {
        generic::quantize_i8_token(x, q, s)
    }
}

/// `TT` tokens (u8 rows `hu` of `k` values, `k % 4 == 0`) times 16 columns `c0..c0 + 16`
/// of `k` int8 rows of `q`, into `out` (rows of `cols`, from the group's first token).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx512vbmi")]
fn tile_down<const TT: usize>(
    out: &mut [f32],
    q: &[i8],
    (cols, c0): (usize, usize),
    (hu, kw): (&[u32], usize),
    (hs, k): (&[f32], usize),
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
fn accumulate_q8_tokens_vnni(out: &mut [f32], q: &[i8], cols: usize, h: Q8Rows<'_>, k: usize) {
    let Q8Rows { q: hq, s: hs, n } = h;
    const KW: usize = 64;
    debug_assert!(k <= 4 * KW);
    // The tokens' values as u8 = h + 128, 4 to a word, 16 tokens of up to 256 values.
    let mut hu = [0u32; Q8_GROUP * KW];
    let mut t0 = 0;
    while t0 < n {
        let g = Q8_GROUP.min(n - t0);
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
                let (ht, st) = ((&hu[t * KW..], KW), (&hs[t..], k));
                tile_down::<16>(&mut og[t * cols..], q, (cols, c0), ht, st);
                t += 16;
            }
            while t + 4 <= g {
                let (ht, st) = ((&hu[t * KW..], KW), (&hs[t..], k));
                tile_down::<4>(&mut og[t * cols..], q, (cols, c0), ht, st);
                t += 4;
            }
            while t < g {
                let (ht, st) = ((&hu[t * KW..], KW), (&hs[t..], k));
                tile_down::<1>(&mut og[t * cols..], q, (cols, c0), ht, st);
                t += 1;
            }
        }
        t0 += g;
    }
}

/// AVX-512 VNNI [`crate::kernels::accumulate_q8_tokens`]: the same bits. The fast kernel needs `cols`
/// a multiple of 16 and `k <= 256` a multiple of 4 (else the generic kernel).
pub fn x86_avx512_accumulate_q8_tokens(out: &mut [f32], q: &[i8], cols: usize, h: Q8Rows<'_>) {
    let Q8Rows { q: hq, s: hs, n } = h;
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
        unsafe { accumulate_q8_tokens_vnni(out, q, cols, h, k) }
    } else {
        generic::accumulate_q8_tokens(out, q, cols, h)
    }
}

/// Byte `4 t + i` of the result is byte `16 i + t` of the source: 4 rows of 16 bytes (one per
/// 128-bit lane) to 16 words of 4 bytes (one per row).
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn transpose_4x16_idx() -> __m512i {
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
pub(super) fn load_4x16_transposed(
    q: &[i8],
    r0: usize,
    stride: usize,
    c0: usize,
    idx: __m512i,
) -> __m512i {
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
