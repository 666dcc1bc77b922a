//! The block kernels of the fast attention path (dense and top-k) on 4 lanes per vector.

use core::arch::wasm32::*;

use super::act::wasm_simd128_exp_f32x4;
use super::simd::*;
use crate::kernels::args::{AttnScoresArgs, AttnSoftmaxArgs, AttnTile, AttnTopkArgs};

/// `acc[..4 * W] += w[j][l] * v[off[j] + d..][..4 * W]` for the keys `j` of the bits of
/// `seen`, in increasing order (a multiply, then an add, per element: the generic rounding).
/// The caller checked that every `off[j] + d + 4 * W` of a key in `seen` is within `v`.
#[inline(always)]
fn acc_keys<const W: usize>(
    acc: &mut [f32],
    seen: u16,
    w: &[f32; ATTN_BLOCK],
    l: usize,
    v: &[f32],
    off: &[usize; ATTN_TILE],
    d: usize,
) {
    let acc = &mut acc[..4 * W];
    let mut a: [v128; W] = core::array::from_fn(|i| ld4(&acc[4 * i..]));
    let mut m = seen;
    while m != 0 {
        let j = m.trailing_zeros() as usize & (ATTN_TILE - 1);
        m &= m - 1;
        let wj = f32x4_splat(w[j * ATTN_LANES + l]);
        let vj = v.as_ptr().wrapping_add(off[j] + d);
        for (i, ai) in a.iter_mut().enumerate() {
            // SAFETY: off[j] + d + 4 * W <= v.len() (checked by the caller); unaligned load.
            let x = unsafe { v128_load(vj.add(4 * i) as *const v128) };
            *ai = f32x4_add(*ai, f32x4_mul(wj, x));
        }
    }
    for (i, ai) in a.iter().enumerate() {
        st4(&mut acc[4 * i..], *ai);
    }
}

/// simd128 [`generic::attn_scores_tile`]: the same bits (each lane sums `q * k` over `d`
/// in increasing order from `+0.0`, then multiplies by `scale`). Two keys at a time: 8
/// accumulators, the 4 query vectors of a column and the 2 key broadcasts.
pub fn wasm_simd128_attn_scores_tile(a: &AttnScoresArgs<'_>, s: &mut [f32; ATTN_BLOCK]) {
    const G: usize = ATTN_LANES / 4;
    let nk = a.nk.min(ATTN_TILE);
    let qt = &a.qt[..a.hd * ATTN_LANES];
    let sc = f32x4_splat(a.scale);
    let zero = f32x4_splat(0.0);
    let key = |j: usize| a.key(j);
    let mut j = 0;
    while j + 2 <= nk {
        let (k0, k1) = (key(j), key(j + 1));
        let mut a0 = [zero; G];
        let mut a1 = [zero; G];
        for (qd, (&x0, &x1)) in qt.chunks_exact(ATTN_LANES).zip(k0.iter().zip(k1)) {
            let (b0, b1) = (f32x4_splat(x0), f32x4_splat(x1));
            for g in 0..G {
                let q = ld4(&qd[4 * g..]);
                a0[g] = f32x4_add(a0[g], f32x4_mul(q, b0));
                a1[g] = f32x4_add(a1[g], f32x4_mul(q, b1));
            }
        }
        for g in 0..G {
            st4(&mut s[j * ATTN_LANES + 4 * g..], f32x4_mul(a0[g], sc));
            st4(&mut s[(j + 1) * ATTN_LANES + 4 * g..], f32x4_mul(a1[g], sc));
        }
        j += 2;
    }
    if j < nk {
        let k0 = key(j);
        let mut a0 = [zero; G];
        for (qd, &x0) in qt.chunks_exact(ATTN_LANES).zip(k0) {
            let b0 = f32x4_splat(x0);
            for (g, a) in a0.iter_mut().enumerate() {
                *a = f32x4_add(*a, f32x4_mul(ld4(&qd[4 * g..]), b0));
            }
        }
        for (g, a) in a0.iter().enumerate() {
            st4(&mut s[j * ATTN_LANES + 4 * g..], f32x4_mul(*a, sc));
        }
    }
}

/// Lane masks (all ones where lane `4 * g + i` sees the key) of the visibility bits `m`, for
/// the 4 groups of 4 lanes.
#[inline(always)]
fn lane_masks(m: u16) -> [v128; ATTN_LANES / 4] {
    let bits = u32x4_splat(m as u32);
    core::array::from_fn(|g| {
        let b = 4 * g as u32;
        let sel = u32x4(1 << b, 1 << (b + 1), 1 << (b + 2), 1 << (b + 3));
        i32x4_ne(v128_and(bits, sel), i32x4_splat(0))
    })
}

/// simd128 [`generic::attn_dense_tile`]: the same bits. The lanes' maxima, rescale
/// factors, weights `e^(s - max)` and sums run 4 lanes per vector ([`wasm_simd128_exp_f32x4`] is
/// [`generic::exp_poly`] lane by lane; a key a lane does not see adds `+0.0` to its sum,
/// which is never `-0.0`, so nothing); each lane's accumulator then takes its visible keys'
/// `w * v_j` in key order, 4 columns per vector, as the generic loop does.
pub fn wasm_simd128_attn_dense_tile(
    t: &AttnTile<'_>,
    v: &[f32],
    stride: usize,
    hd: usize,
    st: &mut AttnDenseState,
) {
    let &AttnTile { s, vis, nk } = t;
    const G: usize = ATTN_LANES / 4;
    let nk = nk.min(ATTN_TILE);
    let neg_inf = f32x4_splat(f32::NEG_INFINITY);
    let zero = f32x4_splat(0.0);
    let masks: [[v128; G]; ATTN_TILE] = core::array::from_fn(|j| {
        if j < nk {
            lane_masks(vis[j])
        } else {
            [i32x4_splat(0); G]
        }
    });
    // Weights of the tile, w[j * ATTN_LANES + lane] (0 where the lane does not see key j).
    let mut w = [0f32; ATTN_BLOCK];
    let mut rescale = [1f32; ATTN_LANES];
    let mut rescaled = 0u16;
    for g in 0..G {
        let mut bm = neg_inf;
        for (j, m) in masks.iter().enumerate().take(nk) {
            let x = v128_bitselect(ld4(&s[j * ATTN_LANES + 4 * g..]), neg_inf, m[g]);
            // pmax(bm, x) = if bm < x { x } else { bm }: the generic comparison.
            bm = f32x4_pmax(bm, x);
        }
        let mut max = ld4(&st.max[4 * g..]);
        let up = f32x4_gt(bm, max);
        let c = v128_bitselect(
            wasm_simd128_exp_f32x4(f32x4_sub(max, bm)),
            f32x4_splat(1.0),
            up,
        );
        // Lanes that keep their maximum multiply their sum by exactly 1.
        let mut sum = f32x4_mul(ld4(&st.sum[4 * g..]), c);
        max = v128_bitselect(bm, max, up);
        st4(&mut st.max[4 * g..], max);
        st4(&mut rescale[4 * g..], c);
        rescaled |= (i32x4_bitmask(up) as u16) << (4 * g);
        for (j, m) in masks.iter().enumerate().take(nk) {
            let e = wasm_simd128_exp_f32x4(f32x4_sub(ld4(&s[j * ATTN_LANES + 4 * g..]), max));
            let e = v128_bitselect(e, zero, m[g]);
            sum = f32x4_add(sum, e);
            st4(&mut w[j * ATTN_LANES + 4 * g..], e);
        }
        st4(&mut st.sum[4 * g..], sum);
    }
    let hd4 = hd & !3;
    if nk == 0 {
        return;
    }
    // Key j's value row starts at off[j]; every row of the tile ends inside v.
    let off: [usize; ATTN_TILE] = core::array::from_fn(|j| j * stride);
    assert!(v.len() >= off[nk - 1] + hd);
    // The visible keys of each lane (bits j); usually every lane of the block sees every key.
    let same = vis[..nk].iter().all(|&m| m == vis[0]);
    let all_keys: u16 = if nk == ATTN_TILE {
        u16::MAX
    } else {
        (1 << nk) - 1
    };
    for h in 0..ATTN_LANES / 8 {
        let hm = 0xFFu16 << (8 * h);
        // The keys every lane of this half sees; the half is uniform when no key is seen by
        // only some of its lanes (always so inside a sequence without padding or causal mask).
        let (mut keys, mut uniform) = (0u16, true);
        for (j, &m) in vis[..nk].iter().enumerate() {
            if m & hm == hm {
                keys |= 1 << j;
            } else if m & hm != 0 {
                uniform = false;
            }
        }
        let up = rescaled & hm != 0;
        if uniform {
            if keys != 0 || up {
                let tile = (&w, v, stride, &off);
                acc_keys_half(st.acc, hd, 8 * h, keys, up.then_some(&rescale), tile);
            }
            continue;
        }
        for (l, &c) in rescale.iter().enumerate().skip(8 * h).take(8) {
            let seen: u16 = if same {
                if vis[0] >> l & 1 != 0 { all_keys } else { 0 }
            } else {
                (0..nk).fold(0, |a, j| a | ((vis[j] >> l & 1) << j))
            };
            let up = rescaled >> l & 1 != 0;
            if seen == 0 && !up {
                continue;
            }
            let acc = &mut st.acc[l * hd..][..hd];
            if up {
                acc.iter_mut().for_each(|a| *a *= c);
            }
            // 32 columns (8 vectors) at a time in registers, then 4, over the visible keys.
            let mut d = 0;
            while d + 32 <= hd4 {
                acc_keys::<8>(&mut acc[d..], seen, &w, l, v, &off, d);
                d += 32;
            }
            while d < hd4 {
                acc_keys::<1>(&mut acc[d..], seen, &w, l, v, &off, d);
                d += 4;
            }
            acc_keys_tail(acc, hd4, seen, &w, l, v, stride);
        }
    }
}

/// Columns `hd4..` of lane `l`'s accumulator (`hd4` the head width rounded down to 4), one
/// by one over the keys of `seen`, as the generic loop does.
#[inline(always)]
fn acc_keys_tail(
    acc: &mut [f32],
    hd4: usize,
    seen: u16,
    w: &[f32; ATTN_BLOCK],
    l: usize,
    v: &[f32],
    stride: usize,
) {
    for (dd, a) in acc.iter_mut().enumerate().skip(hd4) {
        let mut m = seen;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            m &= m - 1;
            *a += w[j * ATTN_LANES + l] * v[j * stride + dd];
        }
    }
}

/// One key of [`acc_keys_half`]: `at[d][x] += wj[4x..4x + 4] * vj[d]` (`wj`: the key's 8
/// weights of the half, `vj`: its 4 values).
///
/// # Safety
/// `wj` and `vj` point at 8 and 4 readable f32.
#[inline(always)]
unsafe fn half_key(at: &mut [[v128; 2]; 4], wj: *const f32, vj: *const f32) {
    // SAFETY: as the caller guarantees; the loads are unaligned.
    let (wv, vv) = unsafe {
        (
            [
                v128_load(wj as *const v128),
                v128_load(wj.add(4) as *const v128),
            ],
            v128_load(vj as *const v128),
        )
    };
    let sp = splat_lanes(vv);
    for (a, &x) in at.iter_mut().zip(&sp) {
        a[0] = f32x4_add(a[0], f32x4_mul(wv[0], x));
        a[1] = f32x4_add(a[1], f32x4_mul(wv[1], x));
    }
}

/// The accumulators of the 8 lanes `l0..l0 + 8` that all see exactly the keys `keys`: each
/// row times its lane's `rescale` factor (when given; 1 for the lanes that keep their
/// maximum, which changes no bits), then `+= w_j * v_j` for the keys in increasing order, the
/// generic operations element by element. 4 columns at a time with the lanes as vector lanes
/// (the rows transposed in and out): each key then needs 2 weight vectors, as stored, and
/// one value vector whose 4 columns are broadcast by shuffles, for 2 x 4 accumulators.
#[inline(always)]
fn acc_keys_half(
    acc: &mut [f32],
    hd: usize,
    l0: usize,
    keys: u16,
    rescale: Option<&[f32; ATTN_LANES]>,
    (w, v, stride, off): (&[f32; ATTN_BLOCK], &[f32], usize, &[usize; ATTN_TILE]),
) {
    let hd4 = hd & !3;
    let acc = &mut acc[l0 * hd..(l0 + 8) * hd];
    assert!(acc.len() == 8 * hd);
    let cv = rescale.map(|r| [ld4(&r[l0..]), ld4(&r[l0 + 4..])]);
    // A contiguous run of keys from 0 (the usual case) runs as a counted loop.
    let run = if keys.trailing_ones() + keys.leading_zeros() == 16 {
        Some(keys.trailing_ones() as usize)
    } else {
        None
    };
    let last = 15 - keys.leading_zeros() as usize;
    assert!(l0 + 8 <= ATTN_LANES && (keys == 0 || v.len() >= off[last] + hd));
    let ap = acc.as_mut_ptr();
    let mut d0 = 0;
    while d0 < hd4 {
        // SAFETY: row i < 8 holds columns d0..d0 + 4 <= hd4 <= hd at i * hd + d0 (acc has 8
        // rows of hd); unaligned loads.
        let row = |i: usize| unsafe { v128_load(ap.add(i * hd + d0) as *const v128) };
        let (t0, t1) = (
            transpose4([row(0), row(1), row(2), row(3)]),
            transpose4([row(4), row(5), row(6), row(7)]),
        );
        // at[d][x]: column d0 + d of the lanes l0 + 4x..l0 + 4x + 4.
        let mut at: [[v128; 2]; 4] = core::array::from_fn(|d| [t0[d], t1[d]]);
        if let Some(cv) = &cv {
            for a in at.iter_mut() {
                a[0] = f32x4_mul(a[0], cv[0]);
                a[1] = f32x4_mul(a[1], cv[1]);
            }
        }
        // SAFETY (both loops): key j < nk has its weights w[j * 16 + l0..][..8] inside w (l0
        // + 8 <= 16) and its values v[off[j] + d0..][..4] inside v (d0 + 4 <= hd, asserted).
        match run {
            Some(n) => {
                let (mut wj, mut vj) = (w[l0..].as_ptr(), v[d0..].as_ptr());
                for _ in 0..n {
                    // SAFETY: keys j0..j0 + n of the run, in bounds as said above.
                    unsafe { half_key(&mut at, wj, vj) };
                    wj = wj.wrapping_add(ATTN_LANES);
                    vj = vj.wrapping_add(stride);
                }
            }
            None => {
                let mut m = keys;
                while m != 0 {
                    let j = m.trailing_zeros() as usize & (ATTN_TILE - 1);
                    m &= m - 1;
                    let (wj, vj) = (&w[j * ATTN_LANES + l0..], &v[off[j] + d0..]);
                    // SAFETY: key j < nk, in bounds as said above.
                    unsafe { half_key(&mut at, wj.as_ptr(), vj.as_ptr()) };
                }
            }
        }
        let r0 = transpose4([at[0][0], at[1][0], at[2][0], at[3][0]]);
        let r1 = transpose4([at[0][1], at[1][1], at[2][1], at[3][1]]);
        for (i, &r) in r0.iter().chain(&r1).enumerate() {
            // SAFETY: as the loads above; unaligned store.
            unsafe { v128_store(ap.add(i * hd + d0) as *mut v128, r) };
        }
        d0 += 4;
    }
    if hd4 < hd {
        for (i, row) in acc.chunks_exact_mut(hd).enumerate() {
            if let Some(r) = rescale {
                let c = r[l0 + i];
                row[hd4..].iter_mut().for_each(|a| *a *= c);
            }
            acc_keys_tail(row, hd4, keys, w, l0 + i, v, stride);
        }
    }
}

/// simd128 [`generic::attn_scores_rows`]: the same bits ([`wasm_simd128_attn_scores_tile`],
/// then the tile transposed 4 x 4 into the lane-major rows).
pub fn wasm_simd128_attn_scores_rows(a: &AttnScoresArgs<'_>, rows: &mut [f32], rs: usize) {
    let nk = a.nk.min(ATTN_TILE);
    let mut s = [0f32; ATTN_BLOCK];
    wasm_simd128_attn_scores_tile(a, &mut s);
    let nk4 = nk & !3;
    for l4 in (0..ATTN_LANES).step_by(4) {
        for j4 in (0..nk4).step_by(4) {
            let keys: [v128; 4] = core::array::from_fn(|i| ld4(&s[(j4 + i) * ATTN_LANES + l4..]));
            for (i, lane) in transpose4(keys).into_iter().enumerate() {
                st4(&mut rows[(l4 + i) * rs + j4..], lane);
            }
        }
        for j in nk4..nk {
            for i in 0..4 {
                rows[(l4 + i) * rs + j] = s[j * ATTN_LANES + l4 + i];
            }
        }
    }
}

/// simd128 [`generic::attn_softmax_lanes`]: the same bits. Per query the weights
/// `e^(s_i - m)` of 4 slots at a time ([`wasm_simd128_exp_f32x4`], the bits of
/// [`generic::exp_poly`]), their sum in slot order, and the weighted value rows 16
/// columns at a time in registers (a multiply, then an add, per element and slot in slot
/// order, as the generic loop).
pub fn wasm_simd128_attn_softmax_lanes(
    a: &AttnSoftmaxArgs<'_>,
    out: &mut [f32],
    out_stride: usize,
) {
    let (v, stride, hd) = (a.v, a.stride, a.hd);
    let mut w = [0f32; generic::ATTN_SELECT_MAX_K + 4];
    for l in 0..a.lanes() {
        let (sc, ix) = a.slots(l);
        let n = sc.len();
        let o = &mut out[l * out_stride..][..hd];
        if n > generic::ATTN_SELECT_MAX_K {
            // Only the block selection's k reaches this kernel; larger ones take the generic.
            generic::attn_softmax_rows(sc, ix, v, stride, hd, o);
            continue;
        }
        o.fill(0.0);
        if n == 0 {
            continue;
        }
        let m = sc
            .iter()
            .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
        let mv = f32x4_splat(m);
        for (i, c) in sc.chunks(4).enumerate() {
            let x = [0, 1, 2, 3].map(|j| c.get(j).copied().unwrap_or(m));
            let e = wasm_simd128_exp_f32x4(f32x4_sub(f32x4(x[0], x[1], x[2], x[3]), mv));
            st4(&mut w[4 * i..], e);
        }
        let sum = w[..n].iter().fold(0.0f32, |s, &x| s + x);
        // Every named row lies in v (the generic kernel's slices panic otherwise).
        assert!(ix.iter().all(|&j| j as usize * stride + hd <= v.len()));
        let hd4 = hd & !3;
        let mut d = 0;
        while d < hd4 {
            let wd = (hd4 - d).min(16) / 4;
            let mut acc = [f32x4_splat(0.0); 4];
            for (&wi, &j) in w[..n].iter().zip(ix) {
                let (ws, row) = (f32x4_splat(wi), &v[j as usize * stride + d..]);
                for (a, c) in acc.iter_mut().zip(row.chunks_exact(4)).take(wd) {
                    *a = f32x4_add(*a, f32x4_mul(ws, ld4(c)));
                }
            }
            for (c, a) in o[d..].chunks_exact_mut(4).zip(&acc).take(wd) {
                st4(c, *a);
            }
            d += 4 * wd;
        }
        for (dd, od) in o.iter_mut().enumerate().skip(hd4) {
            for (&wi, &j) in w[..n].iter().zip(ix) {
                *od += wi * v[j as usize * stride + dd];
            }
        }
        let inv = 1.0 / sum;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}

/// [`generic::attn_rank`] of 4 lanes.
#[inline(always)]
fn rank4(x: v128) -> v128 {
    let b = f32x4_add(x, f32x4_splat(0.0));
    let r = v128_xor(b, u32x4_shr(i32x4_shr(b, 31), 1));
    v128_bitselect(i32x4_splat(generic::ATTN_RANK_NAN), r, f32x4_ne(x, x))
}

/// simd128 [`generic::attn_topk_block`]: the same slots. The generic kernel's group
/// bound (the two best visible scores of each of the 16 groups of keys, one group per lane
/// of 4 vectors) and the candidates' ranks by vector compares; the exact selection of the
/// `k`-th best as there.
pub fn wasm_simd128_attn_topk_block(
    a: &AttnTopkArgs<'_>,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut generic::AttnTopkWork,
) -> usize {
    use generic::{ATTN_RANK_NAN, attn_rank, full_slots_bound, keep_best, topk_block_sizes};
    let &AttnTopkArgs { row, vis, kb0, .. } = a;
    let (k, nt, len) = topk_block_sizes(a, scores, idx, len);
    let (row, vis) = (&row[..nt * ATTN_TILE], &vis[..nt]);
    if k == 0 {
        return 0;
    }
    let ninf = f32x4_splat(f32::NEG_INFINITY);
    let (mut m1, mut m2) = ([ninf; 4], [ninf; 4]);
    for (x, &v) in row.chunks_exact(ATTN_TILE).zip(vis) {
        let masks = lane_masks(v);
        for g in 0..4 {
            let x = v128_bitselect(ld4(&x[4 * g..]), ninf, masks[g]);
            // if x > m1 { m2 = m1; m1 = x } else if x > m2 { m2 = x }, as generic (an
            // invisible key is -inf, and NaN compares false: neither changes anything).
            let (gt1, gt2) = (f32x4_gt(x, m1[g]), f32x4_gt(x, m2[g]));
            m2[g] = v128_bitselect(m1[g], v128_bitselect(x, m2[g], gt2), gt1);
            m1[g] = v128_bitselect(x, m1[g], gt1);
        }
    }
    let m = if k <= ATTN_TILE { &m1 } else { &m2 };
    let b = m
        .iter()
        .flat_map(|&v| lanes4(v))
        .fold(f32::INFINITY, |b, x| if x < b { x } else { b });
    let group = if b > f32::NEG_INFINITY {
        attn_rank(b)
    } else {
        ATTN_RANK_NAN
    };
    let bound = full_slots_bound(&scores[..len], k, group);
    // Candidates in increasing key order: the old slots, then the block.
    let generic::AttnTopkWork { s, j: ci, r, .. } = work;
    let mut n = 0;
    let mut push = |x: f32, j: usize, rank: i32| {
        s[n] = x;
        ci[n] = j as i32;
        r[n] = rank;
        n += 1;
    };
    for (&x, &j) in scores[..len].iter().zip(&idx[..len]) {
        let rank = attn_rank(x);
        if rank >= bound {
            push(x, j as usize, rank);
        }
    }
    let bv = i32x4_splat(bound);
    for (t, (x, &v)) in row.chunks_exact(ATTN_TILE).zip(vis).enumerate() {
        for g in 0..4 {
            let mut m = (i32x4_bitmask(i32x4_ge(rank4(ld4(&x[4 * g..])), bv)) as u16)
                & (v >> (4 * g))
                & 0xF;
            while m != 0 {
                let i = 4 * g + m.trailing_zeros() as usize;
                m &= m - 1;
                let xi = x[i];
                push(xi, kb0 + t * ATTN_TILE + i, attn_rank(xi));
            }
        }
    }
    keep_best(work, n, k, scores, idx)
}
