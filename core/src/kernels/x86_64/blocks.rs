//! Products of block weights ([`BlockType`]) and of int8 weights with row-major int8 tokens
//! ([`Q8Rows`]), vectorised over weight rows: the bits of [`generic::matmul_q8_tokens`].
//!
//! A tile is [`BR`] = 8 weight rows, one lane of a 256-bit register each. Per weight block
//! (32 columns) the 8 rows' integers are unpacked once into registers for every token of the
//! call (weight-stationary: a prefill chunk of up to [`BT`] tokens reuses them; a decode step
//! has one token), each token's exact i32 block dots go to the 8 lanes by one transposing
//! horizontal add, and the float steps of the generic kernel run lane-wise in its order (per
//! block `v += (isum * xs) * d`, then `v += (sum(xq) * xs) * m` for the kinds with a min;
//! multiply then add, no FMA), so every output has the generic kernel's bits. The int8
//! weights' tile is the same with blocks of [`Q8_BLOCK`] columns and row scales at the end.
//!
//! Integer dots: AVX2 multiplies the unsigned 4/5-bit integers (stored with their `_0`
//! offset, taken off afterwards as `offset * sum(xq)`) by the signed tokens with `vpmaddubsw`
//! (pairs of at most `2 * 31 * 128`: no i16 saturation) and widens the signed 8-bit weights
//! to i16 (`vpmaddwd`); AVX-512 VNNI (`vpdpbusd` on 256-bit vectors, AVX-512 VL) takes the
//! 4/5-bit integers as the unsigned operand and, for signed weights, the tokens as
//! `u8 = x + 128` with `128 * sum(w)` taken off. Every dot is exact for any int8 input.
//!
//! More than 4 tokens come packed by groups of 16 (AVX-512 VNNI, the layout of
//! [`super::q8`]): then 16 weight rows are unpacked to int8 on the stack (88 KiB with their
//! scales, mins and sums) once for every group, and each block's dots run as the int8
//! kernel's, tokens in lanes (`vpdpbusd` of the packed tokens and a broadcast of 4 weights),
//! followed by the generic block steps lane-wise.

use super::cpu::*;
use super::q8::{store_row1, store_rows16};
use crate::kernels::blocks::{BLOCK, BlockType};

/// Weight rows per tile (lanes of a 256-bit register).
const BR: usize = 8;
/// Most tokens one pass over a tile's weights takes (8 KiB of f32x8 accumulators).
const BT: usize = 256;

// The block types as const parameters.
const Q4_0: u8 = 0;
const Q4_1: u8 = 1;
const Q5_0: u8 = 2;
const Q5_1: u8 = 3;
const Q8_0: u8 = 4;

const fn code(ty: BlockType) -> u8 {
    match ty {
        BlockType::Q4_0 => Q4_0,
        BlockType::Q4_1 => Q4_1,
        BlockType::Q5_0 => Q5_0,
        BlockType::Q5_1 => Q5_1,
        BlockType::Q8_0 => Q8_0,
    }
}

const fn ty_of(t: u8) -> BlockType {
    match t {
        Q4_0 => BlockType::Q4_0,
        Q4_1 => BlockType::Q4_1,
        Q5_0 => BlockType::Q5_0,
        Q5_1 => BlockType::Q5_1,
        _ => BlockType::Q8_0,
    }
}

/// Byte offset of the 16 nibble bytes (4/5-bit kinds).
const fn qs_at(t: u8) -> usize {
    match t {
        Q4_1 => 4,
        Q5_0 => 6,
        Q5_1 => 8,
        _ => 2,
    }
}

/// The 32 integers of the block at `p` as stored: u8 0..=15 or 0..=31 for the 4/5-bit kinds
/// (the `_0` offset not taken off), i8 for `Q8_0`.
///
/// # Safety
/// `p` points to a whole block of type `T`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn unpack<const T: u8>(p: *const u8) -> __m256i {
    // SAFETY: the block at p has ty_of(T).block_bytes() bytes (the caller's contract); each
    // load below stays inside it (Q8_0: bytes 2..34; nibbles: qs_at..qs_at + 16; qh: 4 bytes
    // before the nibbles), unaligned.
    unsafe {
        if T == Q8_0 {
            return _mm256_loadu_si256(p.add(2) as *const __m256i);
        }
        let v = _mm_loadu_si128(p.add(qs_at(T)) as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(v, m);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(v), m);
        let q = _mm256_set_m128i(hi, lo);
        if T == Q5_0 || T == Q5_1 {
            // Bit j of qh is the fifth bit of integer j: byte j takes qh's byte j / 8, keeps
            // bit j % 8 and turns it into 0x10.
            let qh = (p.add(qs_at(T) - 4) as *const u32).read_unaligned();
            let b = _mm256_set1_epi32(qh as i32);
            let idx = _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            );
            let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let set = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(b, idx), bits), bits);
            return _mm256_or_si256(q, _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
        }
        q
    }
}

/// Lane `r` of the result is the sum of the 8 lanes of `v[r]` (exact i32 adds).
#[inline]
#[target_feature(enable = "avx2")]
fn reduce8(v: &[__m256i; BR]) -> __m256i {
    let h01 = _mm256_hadd_epi32(v[0], v[1]);
    let h23 = _mm256_hadd_epi32(v[2], v[3]);
    let h45 = _mm256_hadd_epi32(v[4], v[5]);
    let h67 = _mm256_hadd_epi32(v[6], v[7]);
    // 128-bit lane 0: rows 0..4's low halves; lane 1: their high halves.
    let a = _mm256_hadd_epi32(h01, h23);
    let b = _mm256_hadd_epi32(h45, h67);
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(a, b),
        _mm256_permute2x128_si256::<0x31>(a, b),
    )
}

/// `sum x` of 32 int8 values.
#[inline]
#[target_feature(enable = "avx2")]
fn sum_i8(x: __m256i) -> i32 {
    let s = _mm256_sad_epu8(
        _mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN)),
        _mm256_setzero_si256(),
    );
    let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi64(s, _mm_unpackhi_epi64(s, s));
    _mm_cvtsi128_si32(s) - 32 * 128
}

/// Partial sums (8 lanes) of `w . x` of 32 values: `w` unsigned (0..=31) or, when `signed`,
/// int8 (AVX2). `signed` is a constant of the caller.
#[inline]
#[target_feature(enable = "avx2")]
fn dot32_avx2(signed: bool, w: __m256i, x: __m256i, _xu: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    if signed {
        let lo = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(w)),
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(x)),
        );
        let hi = _mm256_madd_epi16(
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(w)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(x)),
        );
        _mm256_add_epi32(lo, hi)
    } else {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones)
    }
}

/// As [`dot32_avx2`] with `vpdpbusd`; for `signed` weights the result lacks `-128 * sum(w)`
/// (`xu = x + 128` as u8), which the caller adds.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn dot32_vnni(signed: bool, w: __m256i, x: __m256i, xu: __m256i) -> __m256i {
    if signed {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), xu, w)
    } else {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x)
    }
}

/// `-128 * sum(w)` of each weight row's 32 values (lanes: rows), for [`dot32_vnni`]'s
/// signed weights.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn corr_vnni(w: &[__m256i; BR]) -> __m256i {
    let ones = _mm256_set1_epi8(1);
    let s: [__m256i; BR] =
        core::array::from_fn(|r| _mm256_dpbusd_epi32(_mm256_setzero_si256(), ones, w[r]));
    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(reduce8(&s)))
}

/// `-128 * sum(w)` of one row's 32 values as 8 partial sums (lanes), for [`dot32_vnni`]'s
/// signed weights.
#[inline]
#[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
fn corr_row_vnni(w: __m256i) -> __m256i {
    let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(1), w);
    _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(s))
}

/// The AVX2 path needs no correction (its signed dots are exact as they are).
#[inline]
#[target_feature(enable = "avx2")]
fn corr_row_avx2(_w: __m256i) -> __m256i {
    _mm256_setzero_si256()
}

/// The AVX2 path needs no correction (its signed dots are exact as they are).
#[inline]
#[target_feature(enable = "avx2")]
fn corr_avx2(_w: &[__m256i; BR]) -> __m256i {
    _mm256_setzero_si256()
}

/// The epilogue of `generic::q8_token_out` on a tile's lanes: `v * ws + bias`, stored to the
/// `rows - r0` (at most 8) outputs of row `r0..` of one token's `y` row.
#[inline]
#[target_feature(enable = "avx2")]
fn store_tile(v: __m256, ws: __m256, bias: Option<__m256>, y: &mut [f32], r0: usize) {
    let v = _mm256_mul_ps(v, ws);
    let v = match bias {
        Some(b) => _mm256_add_ps(v, b),
        None => v,
    };
    let n = (y.len() - r0).min(BR);
    if n == BR {
        let o = &mut y[r0..r0 + BR];
        // SAFETY: o has 8 f32; unaligned store.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), v) };
    } else {
        let mut l = [0.0f32; BR];
        // SAFETY: l has 8 f32; unaligned store.
        unsafe { _mm256_storeu_ps(l.as_mut_ptr(), v) };
        y[r0..r0 + n].copy_from_slice(&l[..n]);
    }
}

/// 8 f32 values from `v(r)` for the tile's rows (`r` clamped to the last row).
#[inline(always)]
fn lanes(f: impl Fn(usize) -> f32) -> [f32; BR] {
    core::array::from_fn(f)
}

/// One product kernel per instruction set from one body: `$feat` enables the instructions of
/// `$dot` and `$corr`.
macro_rules! block_kernels {
    ($blocks:ident, $int8:ident, $feat:literal, $dot:ident, $corr:ident, $corr_row:ident) => {
        /// Block weights `data` (`rows x cols`, type `T`) times the row-major tokens
        /// (`xq`: `n * cols`, `xs`: `n * q8_blocks(cols)`), plus `bias`, into `y`
        /// (`n x rows`): the bits of the generic kernel. `cols` is a positive multiple of
        /// [`BLOCK`] and the slices have these lengths (checked by the caller).
        #[target_feature(enable = $feat)]
        fn $blocks<const T: u8>(
            data: &[u8],
            (rows, cols): (usize, usize),
            (xq, xs, n): (&[i8], &[f32], usize),
            bias: Option<&[f32]>,
            y: &mut [f32],
        ) {
            let ty = ty_of(T);
            let (bb, nw, nb) = (ty.block_bytes(), cols / BLOCK, q8_blocks(cols));
            let rb = nw * bb;
            let off = ty.offset();
            let (signed, min) = (T == Q8_0, ty.has_min());
            let mut acc = [_mm256_setzero_ps(); BT];
            let one = _mm256_set1_ps(1.0);
            for r0 in (0..rows).step_by(BR) {
                // Rows past the last repeat it; their lanes are never stored.
                let rr: [usize; BR] = core::array::from_fn(|i| (r0 + i).min(rows - 1));
                let rows8: [&[u8]; BR] = core::array::from_fn(|i| &data[rr[i] * rb..][..rb]);
                let bv = bias.map(|b| {
                    let l = lanes(|i| b[rr[i]]);
                    // SAFETY: l has 8 f32; unaligned load.
                    unsafe { _mm256_loadu_ps(l.as_ptr()) }
                });
                let mut t0 = 0;
                while t0 < n {
                    let tn = BT.min(n - t0);
                    acc[..tn].fill(_mm256_setzero_ps());
                    // The next tile's 8 rows stream in while these run (a hint: never faults).
                    let ahead = data[((r0 + BR) * rb).min(data.len())..].as_ptr();
                    let left = data.len().saturating_sub((r0 + BR) * rb);
                    for b in 0..nw {
                        let o = b * bb;
                        for c in (0..BR * bb).step_by(64) {
                            let at = (b * BR * bb + c).min(left.saturating_sub(1));
                            if left > 0 {
                                // SAFETY: a prefetch never faults; at < left keeps it inside.
                                unsafe { _mm_prefetch::<_MM_HINT_T0>(ahead.add(at).cast()) };
                            }
                        }
                        // SAFETY: each row slice holds nw whole blocks, so o + bb <= rb.
                        let w: [__m256i; BR] = core::array::from_fn(|i| unsafe {
                            unpack::<T>(rows8[i].as_ptr().add(o))
                        });
                        let h = |i: usize, at: usize| {
                            u16::from_le_bytes([rows8[i][o + at], rows8[i][o + at + 1]])
                        };
                        let dh: [u16; BR] = core::array::from_fn(|i| h(i, 0));
                        // SAFETY: dh has 8 u16 (16 bytes); unaligned load.
                        let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(dh.as_ptr().cast()) });
                        let m = if min {
                            let mh: [u16; BR] = core::array::from_fn(|i| h(i, 2));
                            // SAFETY: mh has 8 u16; unaligned load.
                            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(mh.as_ptr().cast()) })
                        } else {
                            _mm256_setzero_ps()
                        };
                        let corr = if signed {
                            $corr(&w)
                        } else {
                            _mm256_setzero_si256()
                        };
                        for (t, a) in (t0..t0 + tn).zip(acc.iter_mut()) {
                            let xt = &xq[t * cols + b * BLOCK..][..BLOCK];
                            // SAFETY: xt has 32 i8; unaligned load.
                            let x = unsafe { _mm256_loadu_si256(xt.as_ptr().cast()) };
                            let xu = _mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN));
                            let s = xs[t * nb + b * BLOCK / Q8_BLOCK];
                            let p: [__m256i; BR] =
                                core::array::from_fn(|i| $dot(signed, w[i], x, xu));
                            let mut isum = _mm256_add_epi32(reduce8(&p), corr);
                            let xsum = if off != 0 || min { sum_i8(x) } else { 0 };
                            if off != 0 {
                                isum = _mm256_sub_epi32(isum, _mm256_set1_epi32(off * xsum));
                            }
                            let sv = _mm256_set1_ps(s);
                            let v = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum), sv), d);
                            *a = _mm256_add_ps(*a, v);
                            if min {
                                let sm = _mm256_set1_ps(xsum as f32 * s);
                                *a = _mm256_add_ps(*a, _mm256_mul_ps(sm, m));
                            }
                        }
                    }
                    for (t, a) in (t0..t0 + tn).zip(acc.iter()) {
                        store_tile(*a, one, bv, &mut y[t * rows..(t + 1) * rows], r0);
                    }
                    t0 += tn;
                }
            }
        }

        /// Int8 weights `q` (`rows x cols`, row scales `scales`) times the row-major tokens,
        /// as [`$blocks`]: blocks of [`Q8_BLOCK`] columns (the last may be 32 short), `cols`
        /// a positive multiple of 32.
        #[target_feature(enable = $feat)]
        fn $int8(
            (q, scales): (&[i8], &[f32]),
            (rows, cols): (usize, usize),
            (xq, xs, n): (&[i8], &[f32], usize),
            bias: Option<&[f32]>,
            y: &mut [f32],
        ) {
            let (nw, nb) = (cols / BLOCK, q8_blocks(cols));
            let mut acc = [_mm256_setzero_ps(); BT];
            for r0 in (0..rows).step_by(BR) {
                let rr: [usize; BR] = core::array::from_fn(|i| (r0 + i).min(rows - 1));
                let rows8: [&[i8]; BR] = core::array::from_fn(|i| &q[rr[i] * cols..][..cols]);
                let l = lanes(|i| scales[rr[i]]);
                // SAFETY: l has 8 f32; unaligned load.
                let ws = unsafe { _mm256_loadu_ps(l.as_ptr()) };
                let bv = bias.map(|b| {
                    let l = lanes(|i| b[rr[i]]);
                    // SAFETY: l has 8 f32; unaligned load.
                    unsafe { _mm256_loadu_ps(l.as_ptr()) }
                });
                let mut t0 = 0;
                while t0 < n {
                    let tn = BT.min(n - t0);
                    acc[..tn].fill(_mm256_setzero_ps());
                    for k in 0..nb {
                        // One activation block: one or two weight blocks of 32.
                        let (w0, w1) = (2 * k, (2 * k + 2).min(nw));
                        let mut w = [[_mm256_setzero_si256(); BR]; 2];
                        for (j, wj) in w.iter_mut().enumerate().take(w1 - w0) {
                            let c = (w0 + j) * BLOCK;
                            // SAFETY: c + 32 <= cols = each row's length; unaligned load.
                            *wj = core::array::from_fn(|i| unsafe {
                                _mm256_loadu_si256(rows8[i].as_ptr().add(c).cast())
                            });
                        }
                        // Each row's correction as partial sums: one reduction per token.
                        let corr: [__m256i; BR] = core::array::from_fn(|i| {
                            _mm256_add_epi32($corr_row(w[0][i]), $corr_row(w[1][i]))
                        });
                        for (t, a) in (t0..t0 + tn).zip(acc.iter_mut()) {
                            let xt = &xq[t * cols..(t + 1) * cols];
                            let mut p = corr;
                            for (j, wj) in w.iter().enumerate().take(w1 - w0) {
                                let xb = &xt[(w0 + j) * BLOCK..][..BLOCK];
                                // SAFETY: xb has 32 i8; unaligned load.
                                let x = unsafe { _mm256_loadu_si256(xb.as_ptr().cast()) };
                                let xu = _mm256_xor_si256(x, _mm256_set1_epi8(i8::MIN));
                                for (pi, &wi) in p.iter_mut().zip(wj) {
                                    *pi = _mm256_add_epi32(*pi, $dot(true, wi, x, xu));
                                }
                            }
                            let isum = reduce8(&p);
                            let sv = _mm256_set1_ps(xs[t * nb + k]);
                            *a = _mm256_add_ps(*a, _mm256_mul_ps(_mm256_cvtepi32_ps(isum), sv));
                        }
                    }
                    for (t, a) in (t0..t0 + tn).zip(acc.iter()) {
                        store_tile(*a, ws, bv, &mut y[t * rows..(t + 1) * rows], r0);
                    }
                    t0 += tn;
                }
            }
        }
    };
}

block_kernels!(
    blocks_avx2,
    int8_avx2,
    "avx2,fma,f16c",
    dot32_avx2,
    corr_avx2,
    corr_row_avx2
);
block_kernels!(
    blocks_vnni,
    int8_vnni,
    "avx2,fma,f16c,avx512f,avx512vl,avx512vnni",
    dot32_vnni,
    corr_vnni,
    corr_row_vnni
);

/// Which of the two kernel sets runs.
#[derive(Clone, Copy, PartialEq)]
enum Isa {
    Avx2,
    Vnni,
}

fn avx2_f16c() -> bool {
    x86_avx2_available() && is_x86_feature_detected!("f16c")
}

fn vnni256() -> bool {
    avx2_f16c() && x86_avx512_vnni_available() && is_x86_feature_detected!("avx512vl")
}

/// Runs `isa`'s kernel when the matrix and the tokens fit it; `false` when it ran nothing.
fn run(isa: Isa, w: &Matrix<'_>, x: Q8Rows<'_>, bias: Option<&[f32]>, y: &mut [f32]) -> bool {
    let Q8Rows { q: xq, s: xs, n } = x;
    let (rows, cols) = (w.rows(), w.cols());
    let fits = cols > 0
        && cols.is_multiple_of(BLOCK)
        && cols <= Q8_MAX_COLS
        && rows > 0
        && xq.len() == n * cols
        && xs.len() == n * q8_blocks(cols)
        && y.len() == n * rows
        && bias.is_none_or(|b| b.len() == rows);
    if !fits {
        return false;
    }
    let xt = (xq, xs, n);
    match w.weights() {
        Weights::Blocks { ty, data } if data.len() == rows * cols / BLOCK * ty.block_bytes() => {
            macro_rules! by_type {
                ($k:ident) => {
                    // SAFETY: the CPU has the kernel's features (the caller checked them), and
                    // the shapes were checked above.
                    unsafe {
                        match code(ty) {
                            Q4_0 => $k::<Q4_0>(data, (rows, cols), xt, bias, y),
                            Q4_1 => $k::<Q4_1>(data, (rows, cols), xt, bias, y),
                            Q5_0 => $k::<Q5_0>(data, (rows, cols), xt, bias, y),
                            Q5_1 => $k::<Q5_1>(data, (rows, cols), xt, bias, y),
                            _ => $k::<Q8_0>(data, (rows, cols), xt, bias, y),
                        }
                    }
                };
            }
            match isa {
                Isa::Avx2 => by_type!(blocks_avx2),
                Isa::Vnni => by_type!(blocks_vnni),
            }
            true
        }
        Weights::I8 { q, scales } if q.len() == rows * cols && scales.len() == rows => {
            // SAFETY: as above.
            unsafe {
                match isa {
                    Isa::Avx2 => int8_avx2((q, scales), (rows, cols), xt, bias, y),
                    Isa::Vnni => int8_vnni((q, scales), (rows, cols), xt, bias, y),
                }
            }
            true
        }
        _ => false,
    }
}

/// AVX2 (+F16C) [`crate::kernels::matmul_q8_tokens`] of row-major tokens and block or int8
/// weights (`cols` a multiple of 32): the same bits, vectorised over 8 weight rows (module
/// doc). Other shapes and weights, or a CPU without AVX2, FMA and F16C, take the generic
/// kernel.
pub fn x86_avx2_matmul_q8_rows(w: &Matrix<'_>, x: Q8Rows<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    if !(avx2_f16c() && run(Isa::Avx2, w, x, bias, y)) {
        generic::matmul_q8_tokens(w, x, bias, y);
    }
}

/// AVX-512 VNNI (256-bit `vpdpbusd`, AVX-512 VL) [`crate::kernels::matmul_q8_tokens`] of
/// row-major tokens and block or int8 weights: the same bits; on a CPU without them the AVX2
/// kernel ([`x86_avx2_matmul_q8_rows`]).
pub fn x86_avx512_matmul_q8_rows(
    w: &Matrix<'_>,
    x: Q8Rows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    if !(vnni256() && run(Isa::Vnni, w, x, bias, y)) {
        x86_avx2_matmul_q8_rows(w, x, bias, y);
    }
}

/// Weight blocks per row at most ([`Q8_MAX_COLS`] / 32).
const MAX_W: usize = Q8_MAX_COLS / BLOCK;

/// 16 weight rows unpacked for [`blocks_times_groups`]: their integers (`ints`, row-major,
/// `cols` each), scales, mins and `-128 * sum` per block (`[row][block]`).
#[repr(align(64))]
struct Unpacked16 {
    q: [i8; Q8_GROUP * Q8_MAX_COLS],
    d: [f32; Q8_GROUP * MAX_W],
    m: [f32; Q8_GROUP * MAX_W],
    corr: [i32; Q8_GROUP * MAX_W],
}

/// One tile: 8 unpacked rows (`u`, rows `r0..r0 + 8` of it) times a packed group `px` with
/// block scales `sx`: lane `t` of result `r` is token `t`'s sum over the blocks (the generic
/// order: `v += (isum * xs) * d`, then `v += (sum(xq) * xs) * m` with `MIN`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tile_blocks<const MIN: bool>(
    u: &Unpacked16,
    r0: usize,
    (cols, nw): (usize, usize),
    px: &[u32],
    sx: &[f32],
) -> [__m512; ROWS] {
    const K4: usize = BLOCK / 4;
    let px = &px[..cols / 4 * Q8_GROUP];
    let ones = _mm512_set1_epi8(1);
    let mut f = [_mm512_setzero_ps(); ROWS];
    for b in 0..nw {
        let mut acc: [__m512i; ROWS] =
            core::array::from_fn(|r| _mm512_set1_epi32(u.corr[(r0 + r) * MAX_W + b]));
        let mut xsum = _mm512_setzero_si512();
        for k4 in b * K4..(b + 1) * K4 {
            // SAFETY: (k4 + 1) * 16 <= cols / 4 * 16 = px.len(); unaligned load.
            let xv =
                unsafe { _mm512_loadu_si512(px.as_ptr().add(k4 * Q8_GROUP) as *const __m512i) };
            for (r, a) in acc.iter_mut().enumerate() {
                let w = &u.q[(r0 + r) * Q8_MAX_COLS + 4 * k4..][..4];
                // SAFETY: w has 4 bytes; unaligned read.
                let w4 = unsafe { (w.as_ptr() as *const i32).read_unaligned() };
                *a = _mm512_dpbusd_epi32(*a, xv, _mm512_set1_epi32(w4));
            }
            if MIN {
                xsum = _mm512_dpbusd_epi32(xsum, xv, ones);
            }
        }
        // SAFETY: the block's activation block b / 2 < nb, and sx holds nb * 16 f32.
        let sv = unsafe { _mm512_loadu_ps(sx.as_ptr().add(b * BLOCK / Q8_BLOCK * Q8_GROUP)) };
        for (r, (fr, a)) in f.iter_mut().zip(&acc).enumerate() {
            let d = _mm512_set1_ps(u.d[(r0 + r) * MAX_W + b]);
            *fr = _mm512_add_ps(
                *fr,
                _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(*a), sv), d),
            );
        }
        if MIN {
            // The tokens summed u8 = x + 128 over 32 columns.
            let xs = _mm512_sub_epi32(xsum, _mm512_set1_epi32(32 * 128));
            let xsv = _mm512_mul_ps(_mm512_cvtepi32_ps(xs), sv);
            for (r, fr) in f.iter_mut().enumerate() {
                let m = _mm512_set1_ps(u.m[(r0 + r) * MAX_W + b]);
                *fr = _mm512_add_ps(*fr, _mm512_mul_ps(xsv, m));
            }
        }
    }
    f
}

/// Block weights `data` (`rows x cols`, `ty`) times the packed token groups (`px`, `sx`, `gs`
/// as [`super::q8::rows_times_groups`] takes them), plus `bias`, into `y`: 16 rows unpacked
/// at a time for every group, the bits of the generic kernel.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn blocks_times_groups(
    (ty, data): (BlockType, &[u8]),
    (rows, cols): (usize, usize),
    bias: Option<&[f32]>,
    (px, sx, gs): (&[u32], &[f32], &[usize]),
    y: &mut [f32],
) {
    let (bb, nw, nb) = (ty.block_bytes(), cols / BLOCK, q8_blocks(cols));
    let (rb, gw) = (nw * bb, cols / 4 * Q8_GROUP);
    let mut u = Unpacked16 {
        q: [0; Q8_GROUP * Q8_MAX_COLS],
        d: [0.0; Q8_GROUP * MAX_W],
        m: [0.0; Q8_GROUP * MAX_W],
        corr: [0; Q8_GROUP * MAX_W],
    };
    let mut q32 = [0i8; BLOCK];
    for r0 in (0..rows).step_by(Q8_GROUP) {
        for r in 0..Q8_GROUP {
            // Rows past the last repeat it; their lanes are never stored.
            let row = &data[(r0 + r).min(rows - 1) * rb..][..rb];
            for (b, blk) in row.chunks_exact(bb).enumerate() {
                ty.ints(blk, &mut q32);
                let (d, m) = ty.scale_min(blk);
                u.q[r * Q8_MAX_COLS + b * BLOCK..][..BLOCK].copy_from_slice(&q32);
                u.d[r * MAX_W + b] = d;
                u.m[r * MAX_W + b] = m;
                u.corr[r * MAX_W + b] = -128 * q32.iter().map(|&v| v as i32).sum::<i32>();
            }
        }
        let rr = Q8_GROUP.min(rows - r0);
        let mut y0 = 0;
        for (i, &g) in gs.iter().enumerate() {
            let (pxi, sxi) = (
                &px[i * gw..(i + 1) * gw],
                &sx[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP],
            );
            let tile = |h: usize| {
                if ty.has_min() {
                    tile_blocks::<true>(&u, h, (cols, nw), pxi, sxi)
                } else {
                    tile_blocks::<false>(&u, h, (cols, nw), pxi, sxi)
                }
            };
            let (lo, hi) = (tile(0), tile(ROWS));
            let f: [__m512; Q8_GROUP] = core::array::from_fn(|r| {
                let v = if r < ROWS { lo[r] } else { hi[r - ROWS] };
                // The epilogue of generic::q8_token_out with a row scale of 1.
                let v = _mm512_mul_ps(v, _mm512_set1_ps(1.0));
                match bias {
                    Some(b) => _mm512_add_ps(v, _mm512_set1_ps(b[(r0 + r).min(rows - 1)])),
                    None => v,
                }
            });
            let yg = &mut y[y0 * rows..];
            if rr == Q8_GROUP {
                store_rows16(f, yg, rows, r0, g);
            } else {
                for (r, &fr) in f.iter().enumerate().take(rr) {
                    store_row1(fr, yg, rows, r0 + r, g);
                }
            }
            y0 += g;
        }
    }
}

/// `y = Xq W^T + b` of `n` tokens packed by `quantize_pack_groups` (`px`, `sx`): block weights
/// by [`blocks_times_groups`], int8 weights by [`super::q8::matmul_packed_groups`]; the bits
/// of [`generic::matmul_q8_tokens`].
pub(crate) fn matmul_packed(
    w: &Matrix<'_>,
    px: &[u32],
    sx: &[f32],
    n: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (rows, cols) = (w.rows(), w.cols());
    let (gw, nb, groups) = (cols / 4 * Q8_GROUP, q8_blocks(cols), n.div_ceil(Q8_GROUP));
    let Weights::Blocks { ty, data } = w.weights() else {
        super::q8::matmul_packed_groups(w, px, sx, n, bias, y);
        return;
    };
    if !super::q8::packs_q8(cols)
        || !cols.is_multiple_of(BLOCK)
        || rows == 0
        || data.len() != rows * cols / BLOCK * ty.block_bytes()
        || groups > Q8_MAX_GROUPS
        || px.len() < groups * gw
        || sx.len() < groups * nb * Q8_GROUP
        || y.len() != n * rows
        || bias.is_some_and(|b| b.len() != rows)
    {
        debug_assert!(false, "matmul_packed: shapes");
        return;
    }
    let gs: [usize; Q8_MAX_GROUPS] =
        core::array::from_fn(|i| Q8_GROUP.min(n.saturating_sub(i * Q8_GROUP)));
    let packed = (
        &px[..groups * gw],
        &sx[..groups * nb * Q8_GROUP],
        &gs[..groups],
    );
    // SAFETY: the CPU has AVX-512 F, BW and VNNI (packs_q8), and the shapes were checked.
    unsafe { blocks_times_groups((ty, data), (rows, cols), bias, packed, y) }
}
