//! The block top-k of the fast attention path (AVX-512 F, BW, VL, POPCNT): candidates by
//! vector compares and compress, the `k`-th best by counting against 16 thresholds at once.

use core::arch::x86_64::*;

use super::cpu::x86_avx512_attn_available as available;
use super::cpu::{lanes_mask, load16, store16};
use crate::kernels::args::AttnTopkArgs;
use crate::kernels::generic::attention::{
    self as generic, ATTN_KEY_BLOCK, ATTN_RANK_NAN, ATTN_SELECT_MAX_K, ATTN_TILE, AttnTopkWork,
};

/// [`generic::attn_rank`] on 16 lanes.
#[inline]
#[target_feature(enable = "avx512f")]
fn rank16(x: __m512) -> __m512i {
    let b = _mm512_castps_si512(_mm512_add_ps(x, _mm512_setzero_ps()));
    let r = _mm512_xor_si512(b, _mm512_srli_epi32::<1>(_mm512_srai_epi32::<31>(b)));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(ATTN_RANK_NAN))
}

#[inline]
#[target_feature(enable = "avx512f")]
fn load16i(x: &[i32]) -> __m512i {
    let x = &x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_loadu_si512(x.as_ptr() as *const __m512i) }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store16i(x: &mut [i32], v: __m512i) {
    let x = &mut x[..16];
    // SAFETY: x has exactly 16 elements.
    unsafe { _mm512_storeu_si512(x.as_mut_ptr() as *mut __m512i, v) }
}

/// The `need`-th largest of the 16 lanes of `v` (`1 <= need <=` the lanes above `i32::MIN`,
/// which pads): the smallest lane with fewer than `need` lanes above it. All pairs are
/// compared by the 15 rotations (independent, unlike the stages of a sorting network).
#[inline]
#[target_feature(enable = "avx512f")]
fn kth_of_16(v: __m512i, need: usize) -> i32 {
    let ones = _mm512_set1_epi32(1);
    let mut above = [_mm512_setzero_si512(); 3];
    macro_rules! rotations {
        ($($r:literal)*) => {$(
            let p = _mm512_alignr_epi32::<$r>(v, v);
            let a = &mut above[$r % 3];
            *a = _mm512_mask_add_epi32(*a, _mm512_cmpgt_epi32_mask(p, v), *a, ones);
        )*};
    }
    rotations!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    let above = _mm512_add_epi32(_mm512_add_epi32(above[0], above[1]), above[2]);
    let cand = _mm512_cmplt_epi32_mask(above, _mm512_set1_epi32(need as i32));
    _mm512_mask_reduce_min_epi32(cand, v)
}

/// The two largest per lane `(m1, m2)` updated with the lanes `v` of `x`. A NaN `x`:
/// `min(m1, x)` is `x`, and `max(NaN, m)` is `m`, so NaN never enters `m1` or `m2`.
#[inline]
#[target_feature(enable = "avx512f")]
fn top2((m1, m2): (__m512, __m512), x: __m512, v: __mmask16) -> (__m512, __m512) {
    let mn = _mm512_min_ps(m1, x);
    (
        _mm512_mask_max_ps(m1, v, x, m1),
        _mm512_mask_max_ps(m2, v, mn, m2),
    )
}

/// Two sorted pairs `(a1 >= a2)`, `(b1 >= b2)` merged, per lane: four sorted values.
#[inline]
#[target_feature(enable = "avx512f")]
fn merge2((a1, a2): (__m512, __m512), (b1, b2): (__m512, __m512)) -> [__m512; 4] {
    let (lo1, hi2) = (_mm512_min_ps(a1, b1), _mm512_max_ps(a2, b2));
    [
        _mm512_max_ps(a1, b1),
        _mm512_max_ps(lo1, hi2),
        _mm512_min_ps(lo1, hi2),
        _mm512_min_ps(a2, b2),
    ]
}

/// The best four of two sorted lists of four, per lane (sorted): the r-th largest of the
/// union is the largest `min(a_i, b_(r - i))` (`a_0 = b_0 = +inf`).
#[inline]
#[target_feature(enable = "avx512f")]
fn best4(a: [__m512; 4], b: [__m512; 4]) -> [__m512; 4] {
    let (mx, mn) = (_mm512_max_ps, _mm512_min_ps);
    [
        mx(a[0], b[0]),
        mx(mx(a[1], b[1]), mn(a[0], b[0])),
        mx(mx(a[2], b[2]), mx(mn(a[0], b[1]), mn(a[1], b[0]))),
        mx(
            mx(a[3], b[3]),
            mx(mn(a[0], b[2]), mx(mn(a[1], b[1]), mn(a[2], b[0]))),
        ),
    ]
}

/// Appends the lanes `m` of `x` and `j` (compressed) to the candidates `s`, `jx` at `n`: the
/// register form of compress and a full-width store (the memory form is microcoded and slow on
/// AMD Zen 4); the buffers have a vector of slack.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
fn push_candidates(
    s: &mut [f32],
    jx: &mut [i32],
    n: &mut usize,
    m: __mmask16,
    x: __m512,
    j: __m512i,
) {
    store16(&mut s[*n..], _mm512_maskz_compress_ps(m, x));
    store16i(&mut jx[*n..], _mm512_maskz_compress_epi32(m, j));
    *n += m.count_ones() as usize;
}

/// Appends the visible keys of a block (`row`, `vis` as in [`generic::attn_topk_block`], keys
/// from `kb0`) to the candidates `s`, `j` after the first `n <= ATTN_SELECT_MAX_K`: all of
/// them (`ALL`) or those scoring at least `bf`. Returns the new count.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
fn push_block<const ALL: bool>(
    row: &[f32],
    vis: &[u16],
    bf: __m512,
    kb0: usize,
    s: &mut [f32],
    j: &mut [i32],
    n: usize,
) -> usize {
    let mut n = n.min(ATTN_SELECT_MAX_K);
    let nt = vis
        .len()
        .min(row.len() / ATTN_TILE)
        .min(ATTN_KEY_BLOCK / ATTN_TILE);
    if n + (nt + 1) * ATTN_TILE > s.len().min(j.len()) {
        debug_assert!(false, "push_block: candidate buffers too short");
        return n;
    }
    let mut key = _mm512_add_epi32(
        _mm512_set1_epi32(kb0 as i32),
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    );
    let (sp, jp) = (s.as_mut_ptr(), j.as_mut_ptr());
    for (x, &v) in row[..nt * ATTN_TILE]
        .chunks_exact(ATTN_TILE)
        .zip(&vis[..nt])
    {
        let x = load16(x);
        let m = if ALL {
            v
        } else {
            _mm512_mask_cmp_ps_mask::<_CMP_GE_OQ>(v, x, bf)
        };
        // Compress in registers and store whole vectors: the memory form of compress is
        // microcoded and slow on AMD Zen 4.
        // SAFETY: before tile t, n <= n0 + 16 t (a tile adds at most 16), and s and j hold
        // n0 + 16 (nt + 1) or more (checked above), so the 16 lanes from n are inside them.
        unsafe {
            _mm512_storeu_ps(sp.add(n), _mm512_maskz_compress_ps(m, x));
            _mm512_storeu_si512(
                jp.add(n) as *mut __m512i,
                _mm512_maskz_compress_epi32(m, key),
            );
        }
        n += m.count_ones() as usize;
        key = _mm512_add_epi32(key, _mm512_set1_epi32(ATTN_TILE as i32));
    }
    n
}

/// Stores the lanes `m` of `x` and `j` (compressed, `j` as u16) at `o` in the slots.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
fn store_slots(
    scores: &mut [f32],
    idx: &mut [u16],
    o: &mut usize,
    m: __mmask16,
    x: __m512,
    j: __m512i,
) {
    let c = m.count_ones() as usize;
    let (ss, is) = (&mut scores[*o..][..c], &mut idx[*o..][..c]);
    let cm = lanes_mask(c);
    // SAFETY: the stores are masked to the first c lanes, the c elements of ss and is.
    unsafe {
        _mm512_mask_storeu_ps(ss.as_mut_ptr(), cm, _mm512_maskz_compress_ps(m, x));
        let j16 = _mm512_cvtepi32_epi16(_mm512_maskz_compress_epi32(m, j));
        _mm256_mask_storeu_epi16(is.as_mut_ptr() as *mut i16, cm, j16);
    }
    *o += c;
}

/// `counts[i] = #{x in w : x >= t[i]}`, four chains of broadcast compares.
#[inline]
#[target_feature(enable = "avx512f")]
fn count_at_least(w: &[i32], t: __m512i) -> __m512i {
    let ones = _mm512_set1_epi32(1);
    let mut c = [_mm512_setzero_si512(); 4];
    let mut chunks = w.chunks_exact(4);
    for q in &mut chunks {
        for u in 0..4 {
            let m = _mm512_cmple_epi32_mask(t, _mm512_set1_epi32(q[u]));
            c[u] = _mm512_mask_add_epi32(c[u], m, c[u], ones);
        }
    }
    for &x in chunks.remainder() {
        let m = _mm512_cmple_epi32_mask(t, _mm512_set1_epi32(x));
        c[0] = _mm512_mask_add_epi32(c[0], m, c[0], ones);
    }
    _mm512_add_epi32(_mm512_add_epi32(c[0], c[1]), _mm512_add_epi32(c[2], c[3]))
}

/// The elements of `src[..n]` in `[lo, hi]`, compressed to the front of `dst` (which may be
/// `src` itself: element `o <= 16 c` is written after vector `c` is read, so a store never
/// reaches a vector not yet read); returns their number.
#[inline]
#[target_feature(enable = "avx512f,popcnt")]
fn keep_range(src: Option<&[i32]>, dst: &mut [i32], n: usize, lo: i32, hi: i32) -> usize {
    let (lv, hv) = (_mm512_set1_epi32(lo), _mm512_set1_epi32(hi));
    let mut o = 0;
    for c in 0..n.div_ceil(16) {
        let x = load16i(&src.unwrap_or(dst)[c * 16..]);
        let m = _mm512_mask_cmpge_epi32_mask(lanes_mask(n - c * 16), x, lv)
            & _mm512_cmple_epi32_mask(x, hv);
        store16i(&mut dst[o..], _mm512_maskz_compress_epi32(m, x));
        o += m.count_ones() as usize;
    }
    o
}

/// The cut of the `k` best of `r[..n]` (`k <= n`, all ranks in `[lo, hi]`): a rank `t` and
/// `gt = #{r > t} <= k` with `#{r >= t} >= k`, so that the best are the ranks above `t` and
/// the first `k - gt` equal to it. Counts against 16 thresholds at once narrow the range to
/// the bucket that holds the `k`-th largest and the working set (`r`, then `w`) to its
/// elements, until 16 or fewer remain ([`kth_of_16`]) or they are all equal. The first
/// round's thresholds are a sample of the candidates; the later ones are evenly spaced in
/// `[lo, hi]`, which shrinks 16-fold per round, so there are at most 9 rounds.
#[target_feature(enable = "avx512f,popcnt")]
fn kth_rank(r: &[i32], w: &mut [i32], n: usize, k: usize, lo: i32, hi: i32) -> (i32, usize) {
    let (mut lo, mut hi, mut need, mut nw) = (lo as i64, hi as i64, k, n);
    let mut first = true;
    let iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    loop {
        let ws: &[i32] = if first { r } else { &w[..] };
        if nw <= 16 {
            let v = _mm512_mask_mov_epi32(_mm512_set1_epi32(i32::MIN), lanes_mask(nw), load16i(ws));
            let t = kth_of_16(v, need);
            let gt = _mm512_cmpgt_epi32_mask(v, _mm512_set1_epi32(t)).count_ones() as usize;
            return (t, k - need + gt);
        }
        if lo == hi {
            return (lo as i32, k - need);
        }
        let tv = if first {
            // The first round: 16 of the candidates at a stride of nw / 16 (they are in key
            // order, so a sample of the ranks), lane 0 replaced by lo: thresholds near the
            // quantiles of the candidates, whatever their spread (real attention has a few
            // scores far above the rest, which even spacing would put in one bucket).
            let pos =
                _mm512_srli_epi32::<4>(_mm512_mullo_epi32(iota, _mm512_set1_epi32(nw as i32)));
            // SAFETY: the positions (i * nw) / 16 are below nw <= r.len().
            let sample = unsafe { _mm512_i32gather_epi32::<4>(pos, r.as_ptr()) };
            _mm512_mask_mov_epi32(sample, 1, _mm512_set1_epi32(lo as i32))
        } else {
            // Later rounds: evenly spaced, T_i = lo + i * step, so that the range shrinks
            // 16-fold (T_15 <= hi + 15: no overflow, hi <= attn_rank(inf)).
            let step = ((hi - lo) >> 4) + 1;
            _mm512_add_epi32(
                _mm512_set1_epi32(lo as i32),
                _mm512_mullo_epi32(iota, _mm512_set1_epi32(step as i32)),
            )
        };
        let cv = count_at_least(&ws[..nw], tv);
        // The thresholds with at least `need` elements at or above them (lane 0, lo, is one):
        // the largest of them, blo, and the smallest of the others, bhi + 1, bound the bucket
        // that holds the need-th largest (a larger threshold has a smaller count; the
        // thresholds need not be sorted).
        let ge = _mm512_cmpge_epi32_mask(cv, _mm512_set1_epi32(need as i32));
        let blo = _mm512_mask_reduce_max_epi32(ge, tv) as i64;
        let at_lo = _mm512_mask_reduce_min_epi32(ge, cv) as usize;
        let (bhi, above) = if ge == u16::MAX {
            (hi, 0)
        } else {
            let lt = !ge;
            let next = _mm512_mask_reduce_min_epi32(lt, tv) as i64;
            (
                hi.min(next - 1),
                _mm512_mask_reduce_max_epi32(lt, cv) as usize,
            )
        };
        let nb = at_lo - above;
        need -= above;
        if nb == need {
            // Everything from blo up is kept: exactly k above blo - 1.
            return ((blo - 1) as i32, k);
        }
        let src = if first { Some(r) } else { None };
        nw = keep_range(src, &mut w[..], nw, blo as i32, bhi as i32);
        (lo, hi, first) = (blo, bhi, false);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,popcnt")]
fn topk_block_avx512(
    a: &AttnTopkArgs<'_>,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut AttnTopkWork,
) -> usize {
    let &AttnTopkArgs { row, vis, kb0, .. } = a;
    let (k, nt, len) = generic::topk_block_sizes(a, scores, idx, len);
    if k == 0 {
        return 0;
    }
    // Every candidate buffer holds the old slots, the block's keys and a vector of slack (the
    // stores below write whole vectors).
    let cap = generic::attn_cand_cap(k, nt * ATTN_TILE);
    let lens = [work.s.len(), work.j.len(), work.r.len(), work.w.len()];
    if lens.into_iter().any(|l| l < cap) {
        return generic::attn_topk_block(&AttnTopkArgs { k, ..*a }, scores, idx, len, work);
    }
    // A lower bound on the block's k-th best (finer than the generic kernel's, same idea).
    // Per lane (16 keys apart) and tile mod 4 (four chains), the two best visible non-NaN
    // scores: eight distinct keys per lane, whose best four are merged below.
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut c = [(ninf, ninf); 4];
    let (rows4, rest) = row[..nt * ATTN_TILE].split_at(nt / 4 * 4 * ATTN_TILE);
    for (x, v) in rows4.chunks_exact(4 * ATTN_TILE).zip(vis.chunks_exact(4)) {
        let [c0, c1, c2, c3] = c;
        c = [
            top2(c0, load16(&x[..ATTN_TILE]), v[0]),
            top2(c1, load16(&x[ATTN_TILE..2 * ATTN_TILE]), v[1]),
            top2(c2, load16(&x[2 * ATTN_TILE..3 * ATTN_TILE]), v[2]),
            top2(c3, load16(&x[3 * ATTN_TILE..]), v[3]),
        ];
    }
    for (t, x) in rest.chunks_exact(ATTN_TILE).enumerate() {
        c[t] = top2(c[t], load16(x), vis[nt / 4 * 4 + t]);
    }
    let top = best4(merge2(c[0], c[1]), merge2(c[2], c[3]));
    // Lanes g and g + 8 paired: 8 groups of 32 keys, each with the 4 best above (sorted). The
    // r-th largest of two sorted lists is the largest min(a_i, b_(r - i)); each group has r
    // keys at least its value, so with 8 r >= k the smallest over the groups is at most the
    // k-th best.
    let c = [
        _mm512_set1_ps(f32::INFINITY),
        top[0],
        top[1],
        top[2],
        top[3],
    ];
    let r = k.div_ceil(8);
    let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
    for i in r.saturating_sub(4)..=r.min(4) {
        let other = c[r - i];
        let swapped = _mm512_shuffle_f32x4::<0x4E>(other, other);
        best = _mm512_max_ps(best, _mm512_min_ps(c[i], swapped));
    }
    let b = _mm512_reduce_min_ps(best);
    let mut bound = if b > f32::NEG_INFINITY {
        generic::attn_rank(b)
    } else {
        ATTN_RANK_NAN
    };
    // Candidates, in increasing key order: first the old slots (two vectors, len <= k <= 32).
    let AttnTopkWork { s, j, r, w } = work;
    let mut n = 0;
    if len > 0 {
        let (m_lo, m_hi) = (lanes_mask(len), lanes_mask(len.saturating_sub(16)));
        // SAFETY: the loads are masked to lanes below len <= k, inside scores and idx (the
        // high halves start at element 16, which exists when their mask is not empty).
        let (olo, ohi, ilo, ihi) = unsafe {
            let (sp, ip) = (scores.as_ptr(), idx.as_ptr());
            (
                _mm512_maskz_loadu_ps(m_lo, sp),
                _mm512_maskz_loadu_ps(m_hi, sp.wrapping_add(16)),
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m_lo, ip as *const i16)),
                _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(
                    m_hi,
                    ip.wrapping_add(16) as *const i16,
                )),
            )
        };
        let (rlo, rhi) = (rank16(olo), rank16(ohi));
        if len == k {
            let worst = _mm512_mask_reduce_min_epi32(m_lo, rlo)
                .min(_mm512_mask_reduce_min_epi32(m_hi, rhi));
            bound = bound.max(worst);
        }
        let bv = _mm512_set1_epi32(bound);
        let keep_lo = _mm512_mask_cmpge_epi32_mask(m_lo, rlo, bv);
        let keep_hi = _mm512_mask_cmpge_epi32_mask(m_hi, rhi, bv);
        push_candidates(s, j, &mut n, keep_lo, olo, ilo);
        push_candidates(s, j, &mut n, keep_hi, ohi, ihi);
    }
    // A bound of NaN's rank takes every visible key; any other is the rank of a score `bf`,
    // and `x >= bf` (false for NaN) is `attn_rank(x) >= bound`.
    let all = bound < generic::attn_rank(f32::NEG_INFINITY);
    let bf = _mm512_set1_ps(generic::attn_rank_score(bound));
    n = if all {
        push_block::<true>(row, vis, bf, kb0, s, j, n)
    } else {
        push_block::<false>(row, vis, bf, kb0, s, j, n)
    };
    let nv = n.div_ceil(16);
    let mut o = 0;
    if n <= k {
        for c in 0..nv {
            let m = lanes_mask(n - c * 16);
            let (x, jc) = (load16(&s[c * 16..]), load16i(&j[c * 16..]));
            store_slots(scores, idx, &mut o, m, x, jc);
        }
        return n;
    }
    // The ranks, the lanes past n below every rank (so that hi is the largest candidate's).
    let min = _mm512_set1_epi32(i32::MIN);
    let mut hv = min;
    for c in 0..nv {
        let rc = _mm512_mask_mov_epi32(min, lanes_mask(n - c * 16), rank16(load16(&s[c * 16..])));
        store16i(&mut r[c * 16..], rc);
        hv = _mm512_max_epi32(hv, rc);
    }
    let hi = _mm512_reduce_max_epi32(hv);
    let (t, gt) = kth_rank(&r[..], w, n, k, bound, hi);
    // Keep every rank above t and the first (in key order) of those equal to t.
    let tv = _mm512_set1_epi32(t);
    let mut ties = k - gt;
    for c in 0..nv {
        let lm = lanes_mask(n - c * 16);
        let rc = load16i(&r[c * 16..]);
        let mut m = _mm512_mask_cmpgt_epi32_mask(lm, rc, tv);
        if ties > 0 {
            let mut eq = _mm512_mask_cmpeq_epi32_mask(lm, rc, tv);
            while eq != 0 && ties > 0 {
                let low = eq & eq.wrapping_neg();
                m |= low;
                eq ^= low;
                ties -= 1;
            }
        }
        let (x, jc) = (load16(&s[c * 16..]), load16i(&j[c * 16..]));
        store_slots(scores, idx, &mut o, m, x, jc);
    }
    o
}

/// AVX-512 [`generic::attn_topk_block`]: the same slots. The group bound and the candidates
/// by vector compares and compress; the `k`-th best by `kth_rank` instead of a sort.
pub fn x86_avx512_attn_topk_block(
    a: &AttnTopkArgs<'_>,
    scores: &mut [f32],
    idx: &mut [u16],
    len: usize,
    work: &mut AttnTopkWork,
) -> usize {
    if available() {
        // SAFETY: the CPU has AVX-512F, BW and VL and POPCNT (checked above).
        unsafe { topk_block_avx512(a, scores, idx, len, work) }
    } else {
        generic::attn_topk_block(a, scores, idx, len, work)
    }
}
