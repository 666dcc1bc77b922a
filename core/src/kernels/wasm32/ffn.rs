//! The down projection of int8 tokens (`accumulate`) and the fused dense int8 feed-forward,
//! which share the packing of the down rows.

use core::arch::wasm32::*;

use super::act::gelu_erf_f32x4;
use super::q8::*;
use super::simd::*;
use crate::kernels::args::FfnArgs;

/// `out[t][c] += (sum_j hq[t][j] * q[j][c]) as f32 * hs[t]` for the token groups `hw` (`k`
/// values per token, `pairs = pairs_of(k)` pairs, each token's pair word broadcast to a
/// vector: vector `p * Q8_GROUP + t` of a group, `gs` tokens per group) and the `k` int8 rows of
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
    let gw = pairs * Q8_GROUP * 4;
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
                    let acc =
                        tile::<4, 2>(&hg[t4 * 4..], Q8_GROUP * 4, &qpw[c * pairs..], DC, pairs);
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

/// Packs the `g <= Q8_GROUP` int8 rows `hq` (`k` values each) for `down_groups`: vector `p * Q8_GROUP
/// + t` (words `4 (p Q8_GROUP + t)..`) broadcasts values `2p`, `2p + 1` of row `t` (zeros past `k`
/// up to `pairs` pairs and for the rows `g..Q8_GROUP`). Writes exactly `pairs * Q8_GROUP * 4` words.
fn pack_down_group(hq: &[i8], k: usize, g: usize, pairs: usize, out: &mut [MaybeUninit<i32>]) {
    assert!(g <= Q8_GROUP && hq.len() >= g * k && out.len() >= pairs * Q8_GROUP * 4);
    let k8 = k & !7;
    for t in 0..Q8_GROUP {
        let row = if t < g { &hq[t * k..(t + 1) * k] } else { &[] };
        let mut c = 0;
        while c < k8 && t < g {
            // SAFETY: c + 8 <= k8 <= k, the length of the row.
            let v = unsafe { load_i8x8(row, c) };
            for (j, s) in splat_lanes(v).into_iter().enumerate() {
                store_words(out, ((c / 2 + j) * Q8_GROUP + t) * 4, s);
            }
            c += 8;
        }
        for p in if t < g { k8 / 2 } else { 0 }..pairs {
            store_words(out, (p * Q8_GROUP + t) * 4, i32x4_splat(pair_word(row, p)));
        }
    }
}

/// simd128 [`crate::kernels::accumulate_q8_tokens`]: the same bits (exact i32 sums, then one multiply
/// and one add per element). Shapes as there; `k > 128` goes to the generic kernel.
///
/// The tokens' rows are packed in groups of 16 (16-bit pairs along `k`, each broadcast to a
/// vector), the rows of `q` by pairs of rows per panel of columns, once for all the groups
/// (`down_groups`).
pub fn wasm_simd128_accumulate_q8_tokens(out: &mut [f32], q: &[i8], cols: usize, h: Q8Rows<'_>) {
    let Q8Rows { q: hq, s: hs, n } = h;
    if n == 0 {
        return;
    }
    let k = hq.len() / n;
    if k == 0
        || k > ACC_MAX_K
        || cols == 0
        || cols > Q8_MAX_COLS
        || hq.len() != n * k
        || hs.len() < n
        || out.len() < n * cols
        || q.len() < k * cols
    {
        return generic::accumulate_q8_tokens(out, q, cols, h);
    }
    let pairs = pairs_of(k);
    let gw = pairs * Q8_GROUP * 4;
    let mut hw = [MaybeUninit::<i32>::uninit(); 4 * Q8_GROUP * ACC_MAX_K / 2 * 4];
    let mut gs = [0usize; MAX_GROUPS];
    let per_pass = (hw.len() / gw).min(MAX_GROUPS);
    let mut t0 = 0;
    while t0 < n {
        let (mut m, mut t) = (0, t0);
        while m < per_pass && t < n {
            let g = Q8_GROUP.min(n - t);
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
/// fast kernels that [`crate::model::ffn::ffn_with`] runs otherwise on wasm
/// ([`wasm_simd128_matmul_q8_tokens`], [`wasm_simd128_gelu_erf`] or
/// [`crate::kernels::activate_fast`], the down scales, [`wasm_simd128_quantize_i8_token`] per 64 units,
/// [`wasm_simd128_accumulate_q8_tokens`]); `up` (`d_ff x d`) and `down_t` (`d_ff x d`, row
/// scales `s_j`) are int8, `out` holds the down bias (or zeros) on entry.
///
/// All the tokens of a pass (up to 16 groups of 16) share each step of 64 hidden units: its
/// up rows are widened once and their tiles (2 units x 16 tokens, lane = token) stay in
/// registers through the activation and the down scales into a stack buffer; each token's
/// 64 values then get one int8 scale (lane by lane: the maximum over the units is exact in
/// any order), and the step's down rows are packed once per panel of columns for all the
/// tokens. Returns `false`, having done nothing, when the shapes are not the fused kernel's:
/// `d` up to `FFN_MAX_D`, `d_ff` a multiple of 64, int8 weights.
pub fn wasm_simd128_ffn_q8(a: &FfnArgs<'_>, out: &mut [f32]) -> bool {
    let Some(((up_q, up_s), (down_q, down_s), (d, d_ff))) = a.int8(out.len(), UNITS, FFN_MAX_D)
    else {
        return false;
    };
    let (up_bias, act, x, n) = (a.up_bias, a.act, a.x, a.n);
    let gw = UNIT_PAIRS * Q8_GROUP * 4;
    // The step's values, [group][unit][Q8_GROUP] (lane = token).
    let mut h = [MaybeUninit::<v128>::uninit(); MAX_GROUPS * UNITS * Q8_GROUP / 4];
    let mut hw = [MaybeUninit::<i32>::uninit(); MAX_GROUPS * UNIT_PAIRS * Q8_GROUP * 4];
    let mut hs = [0f32; MAX_GROUPS * Q8_GROUP];
    let activate = |v: v128| {
        if act == Activation::GeluErf {
            gelu_erf_f32x4(v)
        } else {
            let l = lanes4(v).map(|x| generic::activate_fast(act, x));
            f32x4(l[0], l[1], l[2], l[3])
        }
    };
    let mut q = [0i8; 4 * Q8_MAX_COLS];
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
                rows_times_groups(uq, us, (UNITS, d), bias, (xw, sw, gs.len()), emit);
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

/// [`crate::kernels::quantize_i8`] of each token's 64 values `h` (`[unit][Q8_GROUP]` as 4 vectors per unit,
/// lane = token) lane by lane, the same bits as [`quantize_block`] on the token's values:
/// packs them for `down_groups` (vector `p * Q8_GROUP + t` broadcasts units `2p`, `2p + 1` of
/// token `t`) and returns the scales (lane = token).
fn quantize_units(h: &[v128], out: &mut [MaybeUninit<i32>]) -> [v128; 4] {
    assert!(h.len() >= UNITS * 4 && out.len() >= UNIT_PAIRS * Q8_GROUP * 4);
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
                store_words(out, (p * Q8_GROUP + 4 * v + j) * 4, s);
            }
        }
    }
    mx.map(|m| f32x4_div(m, k127))
}
