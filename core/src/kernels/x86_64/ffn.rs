//! The fused dense feed-forward blocks (int8 VNNI and f32 AVX-512).

use core::arch::x86_64::*;

use super::cpu::*;
use super::linear::{F32_MAX_COLS, PackedF32, pack_f32, tile_f32};
use super::q8::*;
use crate::kernels::args::FfnArgs;

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

/// `act` of every lane of `h`, the bits of [`crate::kernels::Kernels::activate_slice`] with `Kernels::Fast`,
/// then each vector `i` times `scales[i]` if given. One call for a whole block of vectors, so
/// that the long dependency chains of the GELU's of different vectors overlap.
#[target_feature(enable = "avx512f")]
fn activate_units(act: Activation, h: &mut [__m512], scales: Option<&[f32]>) {
    for (i, v) in h.iter_mut().enumerate() {
        let a = if act == Activation::GeluErf {
            gelu_erf_avx512(*v)
        } else {
            let mut l = [0.0f32; Q8_GROUP];
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
const UNITS: usize = Q8_BLOCK;
/// Widest `d_model` of the fused feed-forward (its packed tokens: 16 x 1024 bytes of stack).
pub const FFN_MAX_D: usize = 1024;

/// [`generic::quantize_i8`] of each token's [`UNITS`] values `h[j]` (lane `t` of `h[j]`:
/// token `t`, unit `j`), lane by lane: the scales go to `hs`, `-128 * sum q` to `hcorr`, and
/// the values as `hpk[j4 * 16 + t]`, the word of units `4 j4 .. 4 j4 + 4` of token `t`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
fn quantize_units(
    h: &[__m512; UNITS],
    hpk: &mut [u32],
    hcorr: &mut [i32; Q8_GROUP],
    hs: &mut [f32; Q8_GROUP],
) {
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
    for (j4, hq) in hpk.chunks_exact_mut(Q8_GROUP).take(UNITS / 4).enumerate() {
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
fn down_tile<const TT: usize>(
    out: &mut [f32],
    q: &[i8],
    (d, c0): (usize, usize),
    (hpk, hcorr, hs): (&[u32], &[i32; Q8_GROUP], &[f32; Q8_GROUP]),
    t0: usize,
) {
    let idx = transpose_4x16_idx();
    let flip = _mm512_set1_epi8(i8::MIN);
    let mut acc: [__m512i; TT] = core::array::from_fn(|t| _mm512_set1_epi32(hcorr[t0 + t]));
    for j4 in 0..UNITS / 4 {
        let wv = _mm512_xor_si512(load_4x16_transposed(q, 4 * j4, d, c0, idx), flip);
        // A fixed-size view and a loop of exactly TT steps, so that the accumulators stay in
        // registers wherever this is inlined.
        let Ok(hq) = <&[u32; TT]>::try_from(&hpk[j4 * Q8_GROUP + t0..j4 * Q8_GROUP + t0 + TT])
        else {
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
fn ffn_q8_vnni(
    (up_q, up_s, up_bias): (&[i8], &[f32], Option<&[f32]>),
    act: Activation,
    (down_q, down_s): (&[i8], &[f32]),
    (x, n): (&[f32], usize),
    (d, d_ff): (usize, usize),
    out: &mut [f32],
    (px, sx, per_pass): (&mut [u32], &mut [f32], usize),
) {
    const NB: usize = FFN_MAX_D / Q8_BLOCK;
    let (gw, nb) = (d / 4 * Q8_GROUP, q8_blocks(d));
    // Block sums of the 64 up rows of a step, [4][nb][16].
    let mut corr = [0i32; UNITS / Q8_GROUP * NB * Q8_GROUP];
    let mut h = [_mm512_setzero_ps(); UNITS];
    let mut hpk = [0u32; UNITS / 4 * Q8_GROUP];
    let (mut hcorr, mut hs) = ([0i32; Q8_GROUP], [0.0f32; Q8_GROUP]);
    let mut gs = [0usize; Q8_MAX_GROUPS];
    let mut t0 = 0;
    while t0 < n {
        // Up to `per_pass` groups of 16 tokens share each step's weights and block sums.
        let mut m = 0;
        let mut t = t0;
        while m < per_pass && t < n {
            let g = Q8_GROUP.min(n - t);
            let (pxm, sxm) = (
                &mut px[m * gw..(m + 1) * gw],
                &mut sx[m * nb * Q8_GROUP..(m + 1) * nb * Q8_GROUP],
            );
            quantize_pack(&x[t * d..(t + g) * d], g, d, pxm, sxm);
            gs[m] = g;
            t += g;
            m += 1;
        }
        for j0 in (0..d_ff).step_by(UNITS) {
            for r16 in 0..UNITS / Q8_GROUP {
                let r0 = j0 + r16 * Q8_GROUP;
                let c = &mut corr[r16 * nb * Q8_GROUP..(r16 + 1) * nb * Q8_GROUP];
                corr16(&up_q[r0 * d..(r0 + Q8_GROUP) * d], d, c);
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
                    &sx[i * nb * Q8_GROUP..(i + 1) * nb * Q8_GROUP],
                );
                for r16 in 0..UNITS / Q8_GROUP {
                    let c = &corr[r16 * nb * Q8_GROUP..(r16 + 1) * nb * Q8_GROUP];
                    for half in 0..2 {
                        let rr = j0 + r16 * Q8_GROUP + half * ROWS;
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
                let hq = (&hpk[..], &hcorr, &hs);
                for c0 in (0..d).step_by(16) {
                    let mut t = 0;
                    while t + 16 <= g {
                        down_tile::<16>(og, dq, (d, c0), hq, t);
                        t += 16;
                    }
                    while t + 4 <= g {
                        down_tile::<4>(og, dq, (d, c0), hq, t);
                        t += 4;
                    }
                    while t < g {
                        down_tile::<1>(og, dq, (d, c0), hq, t);
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
/// kernels that [`crate::model::ffn::ffn_with`] runs otherwise ([`crate::kernels::matmul_q8_tokens`],
/// [`crate::kernels::Kernels::activate_slice`], [`crate::kernels::quantize_i8_token`] per 64 units,
/// [`crate::kernels::accumulate_q8_tokens`]); `up` (`d_ff x d`) and `down_t` (`d_ff x d`, row scales
/// `s_j`) are int8, `out` holds the down bias (or zeros) on entry.
///
/// The tokens are quantized into `scratch` (f32 words), up to [`q8_groups`]`(d, n)`
/// groups of 16 at a time (as many as it holds: [`q8_scratch_bytes`]`(d, n) / 4`
/// words for all of them).
///
/// Returns `false`, having done nothing, when the CPU lacks AVX-512 F, BW, VNNI or VBMI (or
/// AVX2 and FMA, whose GELU bits the fused one repeats) or the shapes are not the fused
/// kernel's: `d` a multiple of 16 up to `FFN_MAX_D`, `d_ff` a multiple of 64, int8 weights,
/// `scratch` of one group ([`q8_group_words`]) or more.
pub fn x86_avx512_ffn_q8(a: &FfnArgs<'_>, out: &mut [f32], scratch: &mut [f32]) -> bool {
    let Some((up, down, (d, d_ff))) = a.int8(out.len(), UNITS, FFN_MAX_D) else {
        return false;
    };
    let groups = q8_groups(d, a.n).min(scratch.len() / q8_group_words(d));
    let cpu = available_vbmi() && super::x86_avx2_available();
    if !(d.is_multiple_of(16) && groups > 0 && cpu) {
        return false;
    }
    let (pw, rest) = scratch.split_at_mut(groups * d / 4 * Q8_GROUP);
    let px: &mut [u32] = bytemuck::cast_slice_mut(pw);
    let sx = &mut rest[..groups * q8_blocks(d) * Q8_GROUP];
    // SAFETY: the CPU has AVX-512 F, BW, VNNI and VBMI (checked above).
    unsafe {
        ffn_q8_vnni(
            (up.0, up.1, a.up_bias),
            a.act,
            down,
            (a.x, a.n),
            (d, d_ff),
            out,
            (px, sx, groups),
        )
    };
    true
}

/// Hidden units the f32 feed-forward computes at a time (a 16 KiB buffer for 16 tokens).
const F32_UNITS: usize = 256;

/// The tile form of the down projection: outputs `c0 + r` (`r < 16`, columns of `down_t`)
/// for 16 tokens, summed over the `k` hidden units whose values `h` are packed as `[k][16]`
/// (`w` starts at column `c0` of the block's first row, rows of `d`): lane `t` of result `r`
/// is token `t`'s sum for column `c0 + r`.
#[inline]
#[target_feature(enable = "avx512f")]
fn tile_f32_down(w: &[f32], d: usize, h: &[f32], k: usize) -> [__m512; Q8_GROUP] {
    let w = &w[..(k - 1) * d + Q8_GROUP];
    let h = &h[..k * Q8_GROUP];
    let mut acc = [_mm512_setzero_ps(); Q8_GROUP];
    for j in 0..k {
        // SAFETY: (j + 1) * 16 <= k * 16 = h.len(); unaligned load.
        let hv = unsafe { _mm512_loadu_ps(h.as_ptr().add(j * Q8_GROUP)) };
        for (r, a) in acc.iter_mut().enumerate() {
            // SAFETY: j * d + r < (k - 1) * d + 16 = w.len().
            let wv = unsafe { *w.get_unchecked(j * d + r) };
            *a = _mm512_fmadd_ps(hv, _mm512_set1_ps(wv), *a);
        }
    }
    acc
}

#[target_feature(enable = "avx512f")]
fn ffn_f32_avx512(
    a: &FfnArgs<'_>,
    (up, down): (&[f32], &[f32]),
    (d, d_ff): (usize, usize),
    out: &mut [f32],
) {
    let (up_bias, act, x, n) = (a.up_bias, a.act, a.x, a.n);
    let mut packed = PackedF32([0.0; Q8_GROUP * F32_MAX_COLS]);
    let px = &mut packed.0[..d * Q8_GROUP];
    // The hidden values of a block, packed as the down projection's input: [unit][16].
    let mut hb = [_mm512_setzero_ps(); F32_UNITS];
    let mut t0 = 0;
    while t0 < n {
        let g = Q8_GROUP.min(n - t0);
        pack_f32(&x[t0 * d..(t0 + g) * d], g, d, px);
        let og = &mut out[t0 * d..(t0 + g) * d];
        let mut j0 = 0;
        while j0 < d_ff {
            let bl = F32_UNITS.min(d_ff - j0);
            let mut r = 0;
            while r + Q8_GROUP <= bl {
                let rr = j0 + r;
                let f = tile_f32::<Q8_GROUP>(
                    &up[rr * d..],
                    d,
                    px,
                    up_bias.map(|b| &b[rr..rr + Q8_GROUP]),
                );
                hb[r..r + Q8_GROUP].copy_from_slice(&f);
                // Tile by tile: the activation overlaps the next tile's multiply-adds.
                activate_units(act, &mut hb[r..r + Q8_GROUP], None);
                r += Q8_GROUP;
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
            let hf =
                unsafe { core::slice::from_raw_parts(hb.as_ptr() as *const f32, bl * Q8_GROUP) };
            let dw = &down[j0 * d..(j0 + bl) * d];
            for c0 in (0..d).step_by(Q8_GROUP) {
                let mut f = tile_f32_down(&dw[c0..], d, hf, bl);
                transpose16(&mut f);
                for (t, v) in f.iter().enumerate().take(g) {
                    let o = &mut og[t * d + c0..t * d + c0 + Q8_GROUP];
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
/// 16 up to `F32_MAX_COLS`.
pub fn x86_avx512_ffn_f32(a: &FfnArgs<'_>, out: &mut [f32]) -> bool {
    let &FfnArgs { up_bias, x, n, .. } = a;
    let (Weights::F32(up), Weights::F32(down_t)) = (a.up.weights(), a.down_t.weights()) else {
        return false;
    };
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
    unsafe { ffn_f32_avx512(a, (up, down_t), (d, d_ff), out) };
    true
}
