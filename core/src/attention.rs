//! Multi-head attention over a key/value sequence, dense or top-k, in fixed memory.
//!
//! Both modes process the queries in chunks of `C` ([`AttnParams::chunk`]) and one head at a
//! time, streaming every visible key once per chunk and head; neither ever holds an `N x N` (or
//! `C x N`) score buffer. The output buffer itself accumulates the weighted value rows.
//!
//! - Dense (the exact reference): a streaming (online) softmax per query, keeping a running
//!   maximum and a running sum (2 f32 per query).
//! - Top-k: the `k` largest scaled scores per query are kept in `k` slots (f32 score + u16 key
//!   index, 6 bytes per slot), then a softmax over the kept scores weights the kept value rows,
//!   summed in increasing key order. With `k >=` the number of visible keys this is the dense
//!   result up to rounding. Ties go to the lower key index.
//!
//! Visibility: key `j` is visible to query `i` (absolute position `q_pos + i`) when
//! `valid[j]` holds and, for causal attention, `j <= q_pos + i`. Masked keys never enter the
//! softmax or the slots. A query that sees no key at all gets an output of zeros.
//!
//! Kernels ([`attention_with`]): [`Kernels::Reference`] runs the loops below one query and one
//! key at a time with the generic kernels (bit-identical on every target).
//! [`Kernels::Fast`] runs blocks of up to 16 queries (lanes) with the block kernels of
//! [`crate::kernels::attn`] (AVX-512 on x86-64 std builds when the CPU has it):
//!
//! - dense: tiles of 16 keys, the scores of a tile one vector per key, an online softmax per
//!   tile (tile maximum, one rescale, vector `exp` by [`crate::kernels::attn::exp_poly`]);
//!   masked keys get weight 0 in a lane of a tile another lane sees, which adds exactly
//!   nothing to finite values;
//! - top-k, `k <= ATTN_SELECT_MAX_K` (32): blocks of [`ATTN_KEY_BLOCK`] (256) keys; the
//!   scores of a block are stored lane-major (each query's scores contiguous), then each
//!   query's slots are merged with the block by [`crate::kernels::attn::attn_topk_block`]: a
//!   lower bound on the k-th best score (from the best scores of groups of keys, and the k-th
//!   best kept so far) filters the candidates, and the k-th best candidate is found without
//!   sorting; the slots hold the exact top-k in increasing key order, and the kept rows are
//!   summed in that order. NaN scores rank below every other score (kept only when fewer
//!   than `k` visible keys have a non-NaN score), `-0.0` ties `0.0`;
//! - top-k, larger `k`: tiles of 16 keys compared against each query's current k-th best
//!   before they reach the heap of [`TopK`]; the kept rows are summed in heap order.
//!
//! Both keep the promises above (ties, masks, chunk independence). Heads wider than
//! [`ATTN_MAX_HEAD_DIM`] run the reference loops. The block buffers (transposed queries,
//! accumulators, lane-major scores, candidates) are a second part of the scratch,
//! [`fast_scratch_bytes`], taken by [`AttnScratch::new_fast`]; the key blocks of the top-k
//! path hold [`fast_key_block`] keys (fewer than [`ATTN_KEY_BLOCK`] for a short context; the
//! kept keys do not depend on it).
//!
//! Grouped KV heads: query head `h` reads KV head `h / (n_heads / n_kv_heads)`. Scores are
//! `q . k / sqrt(head_dim)`.

use crate::Error;
use crate::arena::{Arena, padded};
use crate::kernels::attn::{
    ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_MAX_HEAD_DIM, ATTN_SELECT_MAX_K, ATTN_TILE,
    AttnDenseState, AttnTopkWork, attn_transpose_queries, candidates_fast, dense_tile_fast,
    scores_rows_fast, scores_tile_fast, softmax_lanes_fast, topk_block_fast,
};
use crate::kernels::{Kernels, axpy, dot, scale};
use crate::math;
use crate::topk::{Rank, TopK};

/// Largest number of keys: key indices are stored as `u16` in the top-k slots.
pub const MAX_KEYS: usize = 1 << 16;

/// Keys streamed per tile: a tile's rows stay in cache while every query of the chunk uses them.
const KEY_TILE: usize = 16;

/// Most tiles per key block of the fast top-k path.
const VIS_STRIDE: usize = ATTN_KEY_BLOCK / ATTN_TILE;

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnDims {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// How an attention call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttnParams {
    /// Head layout.
    pub dims: AttnDims,
    /// Query `i` (absolute position `q_pos + i`) sees only keys `0..=q_pos + i`.
    pub causal: bool,
    /// Keys kept per query and head; `None` is dense.
    pub k_attn: Option<usize>,
    /// Queries processed together (C).
    pub chunk: usize,
}

/// Keys and values of the whole sequence (or cache), row-major `n x (n_kv_heads * head_dim)`.
#[derive(Debug, Clone, Copy)]
pub struct Keys<'a> {
    /// Key rows.
    pub k: &'a [f32],
    /// Value rows.
    pub v: &'a [f32],
    /// Number of key rows.
    pub n: usize,
    /// Padding mask: `valid[j] == false` hides key `j`. `None`: all keys visible.
    pub valid: Option<&'a [bool]>,
}

/// `padded(n * size)`, saturating at `usize::MAX` (then [`AttnScratch::new`] reports the arena
/// too small instead of overflowing).
const fn buf_bytes(n: usize, size: usize) -> usize {
    match n.checked_mul(size) {
        Some(b) if b <= usize::MAX - crate::arena::ALIGN => padded(b),
        _ => usize::MAX,
    }
}

/// Scratch bytes for one attention call (what [`AttnScratch::new`] takes from the arena),
/// independent of the number of keys, queries and heads. With `C = chunk`:
///
/// - top-k (`k_attn = Some(k)`): `padded(4*C*k) + padded(2*C*k) + padded(4*C)` bytes: the
///   `C*k` f32 kept scores, the `C*k` u16 kept key indices, and one u32 selection state (fill count) per query;
/// - dense (`k_attn = None`): `padded(8*C)` bytes: running maximum and running sum (f32) per
///   query.
///
/// `padded` rounds up to 16 bytes ([`crate::arena::padded`]). Saturates at `usize::MAX` on
/// overflow.
pub const fn scratch_bytes(p: &AttnParams) -> usize {
    let c = p.chunk;
    match p.k_attn {
        Some(k) => {
            let slots = match c.checked_mul(k) {
                Some(s) => s,
                None => return usize::MAX,
            };
            buf_bytes(slots, 4)
                .saturating_add(buf_bytes(slots, 2))
                .saturating_add(buf_bytes(c, 4))
        }
        None => buf_bytes(c, 8),
    }
}

/// Keys per block of the fast top-k path when calls see at most `max_keys` keys: whole tiles
/// of [`ATTN_TILE`] (16) covering them, at most [`ATTN_KEY_BLOCK`] (256).
pub const fn fast_key_block(max_keys: usize) -> usize {
    let kb = max_keys.div_ceil(ATTN_TILE) * ATTN_TILE;
    if kb < ATTN_TILE {
        ATTN_TILE
    } else if kb > ATTN_KEY_BLOCK {
        ATTN_KEY_BLOCK
    } else {
        kb
    }
}

/// The parts of the fast scratch for `p` and key blocks of `kb` keys, in f32 words:
/// transposed queries, then per path (dense: accumulators and a tile of scores; top-k with
/// `k <= ATTN_SELECT_MAX_K`: lane-major scores, per-lane visibility and the candidates; larger
/// `k`: a tile of scores). All zero when the fast kernels run the reference loops (heads wider
/// than [`ATTN_MAX_HEAD_DIM`]).
const fn fast_parts(p: &AttnParams, kb: usize) -> [usize; 4] {
    let hd = p.dims.head_dim;
    if hd > ATTN_MAX_HEAD_DIM {
        return [0; 4];
    }
    let qt = ATTN_LANES * hd;
    match p.k_attn {
        None => [qt, ATTN_LANES * hd, ATTN_BLOCK, 0],
        Some(k) if k <= ATTN_SELECT_MAX_K => {
            let vis = padded(2 * ATTN_LANES * (kb / ATTN_TILE)) / 4;
            [qt, ATTN_LANES * kb, vis, AttnTopkWork::words(k, kb)]
        }
        Some(_) => [qt, ATTN_BLOCK, 0, 0],
    }
}

/// Bytes of the [`Kernels::Fast`] part of an attention scratch (what [`AttnScratch::new_fast`]
/// takes after [`scratch_bytes`]) for calls with parameters `p` over at most `max_keys` keys.
/// With `hd = head_dim`, `L = ATTN_LANES` (16 queries per block) and `kb =
/// fast_key_block(max_keys)`:
///
/// - dense: `4 L hd` (the block's queries, transposed) `+ 4 L hd` (its accumulators) `+ 4 *
///   256` (a tile of scores);
/// - top-k, `k <= 32`: `4 L hd + 4 L kb` (a block of keys' scores, lane-major) `+ padded(2 L
///   kb / 16)` (per-lane visibility) `+ 16 (min(k, 32) + kb + 16)` (one lane's candidates);
/// - top-k, larger `k`: `4 L hd + 4 * 256`.
///
/// 0 for heads wider than [`ATTN_MAX_HEAD_DIM`] (the reference loops run). A multiple of 16.
pub const fn fast_scratch_bytes(p: &AttnParams, max_keys: usize) -> usize {
    let w = fast_parts(p, fast_key_block(max_keys));
    4 * (w[0] + w[1] + w[2] + w[3])
}

/// Working buffers of an attention call, sliced from the arena.
pub struct AttnScratch<'a> {
    /// Top-k: `C*k` kept scores. Dense: running maximum (`C`) then running sum (`C`).
    scores: &'a mut [f32],
    /// Top-k: `C*k` kept key indices. Dense: empty.
    idx: &'a mut [u16],
    /// Top-k: selection state per query ([`TopK::state`]). Dense: empty.
    lens: &'a mut [u32],
    /// Queries per chunk the buffers hold.
    chunk: usize,
    /// Slots per query (top-k), `None` for dense.
    k: Option<usize>,
    /// [`Kernels::Fast`]'s block buffers (and, in the engine, the int8 activations of the
    /// projections), f32 words; empty when made by [`AttnScratch::new`].
    fast: &'a mut [f32],
    /// Keys per block of the fast top-k path ([`fast_key_block`]).
    key_block: usize,
}

impl<'a> AttnScratch<'a> {
    /// Takes exactly [`scratch_bytes`] from the arena: the buffers of [`Kernels::Reference`]
    /// (a call with [`Kernels::Fast`] then fails, see [`AttnScratch::new_fast`]).
    pub fn new(arena: &mut Arena<'a>, p: &AttnParams) -> Result<Self, Error> {
        check_params(p)?;
        let c = p.chunk;
        match p.k_attn {
            Some(k) => {
                let slots = c
                    .checked_mul(k)
                    .ok_or(Error::InvalidConfig("chunk * k_attn overflows"))?;
                let scores = arena.take(slots)?;
                let idx = arena.take(slots)?;
                let lens = arena.take(c)?;
                Ok(AttnScratch {
                    scores,
                    idx,
                    lens,
                    chunk: c,
                    k: Some(k),
                    fast: &mut [],
                    key_block: ATTN_KEY_BLOCK,
                })
            }
            None => {
                let n = c
                    .checked_mul(2)
                    .ok_or(Error::InvalidConfig("chunk overflows"))?;
                let scores = arena.take(n)?;
                Ok(AttnScratch {
                    scores,
                    idx: &mut [],
                    lens: &mut [],
                    chunk: c,
                    k: None,
                    fast: &mut [],
                    key_block: ATTN_KEY_BLOCK,
                })
            }
        }
    }

    /// Takes [`scratch_bytes`] and then [`fast_scratch_bytes`]`(p, max_keys)` from the arena:
    /// the buffers of both kernel choices, for calls over at most `max_keys` keys (more keys
    /// still work, in more key blocks).
    pub fn new_fast(arena: &mut Arena<'a>, p: &AttnParams, max_keys: usize) -> Result<Self, Error> {
        Self::with_fast(arena, p, max_keys, fast_scratch_bytes(p, max_keys))
    }

    /// [`AttnScratch::new`], then `fast_bytes` (0, or at least [`fast_scratch_bytes`]`(p,
    /// max_keys)`) of fast buffers: the engine's attention phase, whose fast buffers also hold
    /// the int8 activations of its projections ([`AttnScratch::fast_words`]).
    pub(crate) fn with_fast(
        arena: &mut Arena<'a>,
        p: &AttnParams,
        max_keys: usize,
        fast_bytes: usize,
    ) -> Result<Self, Error> {
        let mut s = Self::new(arena, p)?;
        if fast_bytes > 0 {
            if fast_bytes < fast_scratch_bytes(p, max_keys) {
                return Err(Error::InvalidConfig(
                    "attention fast buffers smaller than fast_scratch_bytes",
                ));
            }
            s.fast = arena.take(fast_bytes / 4)?;
            s.key_block = fast_key_block(max_keys);
        }
        Ok(s)
    }

    /// The fast buffers, free between attention calls (the engine quantizes the projections'
    /// inputs there).
    pub(crate) fn fast_words(&mut self) -> &mut [f32] {
        self.fast
    }

    /// Whether these buffers can serve an attention call with parameters `p`.
    fn fits(&self, p: &AttnParams) -> bool {
        match (p.k_attn, self.k) {
            (Some(k), Some(have)) => p.chunk <= self.chunk && k <= have,
            (None, _) => p
                .chunk
                .checked_mul(2)
                .is_some_and(|n| n <= self.scores.len()),
            (Some(_), None) => false,
        }
    }
}

fn check_params(p: &AttnParams) -> Result<(), Error> {
    let d = &p.dims;
    if d.n_heads == 0 || d.n_kv_heads == 0 || d.head_dim == 0 {
        return Err(Error::InvalidConfig(
            "attention heads and head_dim must be at least 1",
        ));
    }
    if !d.n_heads.is_multiple_of(d.n_kv_heads) {
        return Err(Error::InvalidConfig("n_kv_heads must divide n_heads"));
    }
    if p.chunk == 0 {
        return Err(Error::InvalidConfig("chunk must be at least 1"));
    }
    if p.k_attn == Some(0) {
        return Err(Error::InvalidConfig("k_attn must be at least 1"));
    }
    Ok(())
}

/// Multi-head attention of the queries `q` (`n_q x (n_heads * head_dim)`, the first at absolute
/// position `q_pos`) over `keys`, into `out` (same shape as `q`). Scores are scaled by
/// `1/sqrt(head_dim)`. A query with no visible key gets zeros.
///
/// Errors: [`Error::InvalidConfig`] for bad parameters or a scratch made for smaller
/// parameters, [`Error::ShapeMismatch`] for slices of the wrong length, [`Error::SeqTooLong`]
/// for more than [`MAX_KEYS`] keys.
pub fn attention(
    p: &AttnParams,
    q: &[f32],
    q_pos: usize,
    keys: &Keys<'_>,
    scratch: &mut AttnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    attention_with(Kernels::Reference, p, q, q_pos, keys, scratch, out)
}

/// [`attention`] with the chosen kernels (see the module doc): [`Kernels::Reference`] is
/// [`attention`]; [`Kernels::Fast`] runs the block kernels, whose results differ from the
/// reference by rounding (summation order, FMA, the polynomial `exp`) and, for top-k, by
/// the order in which the kept rows are summed.
pub fn attention_with(
    kernels: Kernels,
    p: &AttnParams,
    q: &[f32],
    q_pos: usize,
    keys: &Keys<'_>,
    scratch: &mut AttnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    check_params(p)?;
    if !scratch.fits(p) {
        return Err(Error::InvalidConfig(
            "attention scratch was made for other parameters",
        ));
    }
    let d = p.dims;
    let q_dim = d
        .n_heads
        .checked_mul(d.head_dim)
        .ok_or(Error::InvalidConfig("q_dim overflows"))?;
    let kv_dim = d
        .n_kv_heads
        .checked_mul(d.head_dim)
        .ok_or(Error::InvalidConfig("kv_dim overflows"))?;
    if !q.len().is_multiple_of(q_dim) {
        let expected = q.len() - q.len() % q_dim;
        return Err(Error::ShapeMismatch {
            what: "attention queries",
            expected,
            found: q.len(),
        });
    }
    if out.len() != q.len() {
        return Err(Error::ShapeMismatch {
            what: "attention output",
            expected: q.len(),
            found: out.len(),
        });
    }
    let n = keys.n;
    if n > MAX_KEYS {
        return Err(Error::SeqTooLong {
            len: n,
            max: MAX_KEYS,
        });
    }
    let kv_len = n
        .checked_mul(kv_dim)
        .ok_or(Error::InvalidConfig("keys overflow"))?;
    if keys.k.len() != kv_len {
        return Err(Error::ShapeMismatch {
            what: "attention keys",
            expected: kv_len,
            found: keys.k.len(),
        });
    }
    if keys.v.len() != kv_len {
        return Err(Error::ShapeMismatch {
            what: "attention values",
            expected: kv_len,
            found: keys.v.len(),
        });
    }
    if let Some(valid) = keys.valid
        && valid.len() != n
    {
        return Err(Error::ShapeMismatch {
            what: "attention padding mask",
            expected: n,
            found: valid.len(),
        });
    }

    let n_q = q.len() / q_dim;
    let ctx = Ctx {
        hd: d.head_dim,
        q_dim,
        kv_dim,
        group: d.n_heads / d.n_kv_heads,
        scale: 1.0 / math::sqrt(d.head_dim as f32),
        causal: p.causal,
        keys,
    };
    let fast = kernels == Kernels::Fast && d.head_dim <= ATTN_MAX_HEAD_DIM;
    let parts = fast_parts(p, scratch.key_block);
    if fast && scratch.fast.len() < parts.iter().sum() {
        return Err(Error::InvalidConfig(
            "attention scratch was made without the fast kernels' buffers (AttnScratch::new_fast)",
        ));
    }
    // Out of the scratch while the fast paths run (they borrow both), back at the end.
    let fast_words = core::mem::take(&mut scratch.fast);
    let mut c0 = 0;
    while c0 < n_q {
        let c1 = n_q.min(c0 + p.chunk);
        let pos0 = q_pos.saturating_add(c0);
        let qc = &q[c0 * q_dim..c1 * q_dim];
        let oc = &mut out[c0 * q_dim..c1 * q_dim];
        match (p.k_attn, fast) {
            // The path follows the requested k, not k.min(n), so that a query's kept rows (and
            // their summation order) do not depend on the number of keys it cannot see.
            (Some(k), true) if k <= ATTN_SELECT_MAX_K => {
                let (kb, w) = (scratch.key_block, &mut *fast_words);
                ctx.fast_topk_chunk(d.n_heads, k.min(n), qc, pos0, scratch, (w, kb), oc)
            }
            _ => {
                for h in 0..d.n_heads {
                    let w = &mut *fast_words;
                    match (p.k_attn, fast) {
                        (Some(k), false) => ctx.topk_head(h, k.min(n), qc, pos0, scratch, oc),
                        (None, false) => ctx.dense_head(h, qc, pos0, scratch, oc),
                        (Some(k), true) => {
                            ctx.fast_topk_heap_head(h, k.min(n), qc, pos0, scratch, w, oc)
                        }
                        (None, true) => ctx.fast_dense_head(h, qc, pos0, w, oc),
                    }
                }
            }
        }
        c0 = c1;
    }
    scratch.fast = fast_words;
    Ok(())
}

/// Shapes and inputs of one validated call.
struct Ctx<'k> {
    hd: usize,
    q_dim: usize,
    kv_dim: usize,
    group: usize,
    scale: f32,
    causal: bool,
    keys: &'k Keys<'k>,
}

impl Ctx<'_> {
    /// Keys `0..end` can be visible to some query of a chunk whose last query is at `last_pos`.
    fn key_end(&self, last_pos: usize) -> usize {
        if self.causal {
            self.keys.n.min(last_pos.saturating_add(1))
        } else {
            self.keys.n
        }
    }

    fn visible(&self, j: usize, pos: usize) -> bool {
        self.keys.valid.is_none_or(|v| v[j]) && !(self.causal && j > pos)
    }

    fn key_row(&self, j: usize, kvh: usize) -> &[f32] {
        let o = j * self.kv_dim + kvh * self.hd;
        &self.keys.k[o..o + self.hd]
    }

    fn value_row(&self, j: usize, kvh: usize) -> &[f32] {
        let o = j * self.kv_dim + kvh * self.hd;
        &self.keys.v[o..o + self.hd]
    }

    /// Dense head `h` for one chunk of queries `qc` (the first at `pos0`), into `oc`.
    fn dense_head(
        &self,
        h: usize,
        qc: &[f32],
        pos0: usize,
        s: &mut AttnScratch<'_>,
        oc: &mut [f32],
    ) {
        let nc = qc.len() / self.q_dim;
        let kvh = h / self.group;
        let (max, rest) = s.scores.split_at_mut(nc);
        let sum = &mut rest[..nc];
        sum.fill(0.0);
        for i in 0..nc {
            oc[i * self.q_dim + h * self.hd..][..self.hd].fill(0.0);
        }
        let end = self.key_end(pos0.saturating_add(nc - 1));
        let mut t0 = 0;
        while t0 < end {
            let t1 = end.min(t0 + KEY_TILE);
            for i in 0..nc {
                let pos = pos0.saturating_add(i);
                let qr = &qc[i * self.q_dim + h * self.hd..][..self.hd];
                let acc = &mut oc[i * self.q_dim + h * self.hd..][..self.hd];
                for j in t0..t1 {
                    if !self.visible(j, pos) {
                        continue;
                    }
                    let sc = dot(qr, self.key_row(j, kvh)) * self.scale;
                    let v = self.value_row(j, kvh);
                    // The sum is 0 exactly until the first visible key (weights are > 0).
                    if sum[i] == 0.0 {
                        max[i] = sc;
                        sum[i] = 1.0;
                        acc.copy_from_slice(v);
                    } else if sc > max[i] {
                        // New maximum: rescale what was accumulated relative to it.
                        let c = math::exp(max[i] - sc);
                        scale(acc, c);
                        sum[i] = sum[i] * c + 1.0;
                        max[i] = sc;
                        axpy(acc, 1.0, v);
                    } else {
                        let w = math::exp(sc - max[i]);
                        sum[i] += w;
                        axpy(acc, w, v);
                    }
                }
            }
            t0 = t1;
        }
        for i in 0..nc {
            if sum[i] > 0.0 {
                scale(
                    &mut oc[i * self.q_dim + h * self.hd..][..self.hd],
                    1.0 / sum[i],
                );
            }
        }
    }

    /// Top-k head `h` (keeping `k` keys per query) for one chunk of queries `qc`, into `oc`.
    fn topk_head(
        &self,
        h: usize,
        k: usize,
        qc: &[f32],
        pos0: usize,
        s: &mut AttnScratch<'_>,
        oc: &mut [f32],
    ) {
        let nc = qc.len() / self.q_dim;
        let kvh = h / self.group;
        let lens = &mut s.lens[..nc];
        lens.fill(0);
        let end = self.key_end(pos0.saturating_add(nc - 1));
        let mut t0 = 0;
        while t0 < end {
            let t1 = end.min(t0 + KEY_TILE);
            for (i, len) in lens.iter_mut().enumerate() {
                let pos = pos0.saturating_add(i);
                let qr = &qc[i * self.q_dim + h * self.hd..][..self.hd];
                let mut sel = TopK::resume(
                    &mut s.scores[i * k..(i + 1) * k],
                    &mut s.idx[i * k..(i + 1) * k],
                    *len,
                    Rank::Value,
                );
                for j in t0..t1 {
                    if self.visible(j, pos) {
                        // j < MAX_KEYS was checked, so it fits in u16.
                        sel.push(dot(qr, self.key_row(j, kvh)) * self.scale, j as u16);
                    }
                }
                *len = sel.state();
            }
            t0 = t1;
        }
        for (i, &len) in lens.iter().enumerate() {
            let acc = &mut oc[i * self.q_dim + h * self.hd..][..self.hd];
            acc.fill(0.0);
            let mut sel = TopK::resume(
                &mut s.scores[i * k..(i + 1) * k],
                &mut s.idx[i * k..(i + 1) * k],
                len,
                Rank::Value,
            );
            let (sc, ix) = sel.sorted_by_index();
            if sc.is_empty() {
                continue;
            }
            let m = sc
                .iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
            let mut sum = 0.0;
            for (&x, &j) in sc.iter().zip(ix) {
                let w = math::exp(x - m);
                sum += w;
                axpy(acc, w, self.value_row(j as usize, kvh));
            }
            scale(acc, 1.0 / sum);
        }
    }

    /// Visibility of the tile of keys `t0..t0 + nk` to the lanes `0..lanes` of a block whose
    /// first query is at `pos0`: `vis[j]` has bit `l` when query `l` sees key `t0 + j`.
    /// Returns whether any lane sees any key of the tile.
    fn tile_vis(
        &self,
        t0: usize,
        nk: usize,
        pos0: usize,
        lanes: usize,
        vis: &mut [u16; ATTN_TILE],
    ) -> bool {
        let all = if lanes >= ATTN_LANES {
            u16::MAX
        } else {
            (1u16 << lanes) - 1
        };
        let mut any = 0;
        for (j, m) in vis.iter_mut().enumerate() {
            let key = t0 + j;
            *m = if j >= nk || !self.keys.valid.is_none_or(|v| v[key]) {
                0
            } else if self.causal && key > pos0 {
                // Lanes l with pos0 + l >= key.
                let first = key - pos0;
                if first >= lanes {
                    0
                } else {
                    all & !((1u16 << first) - 1)
                }
            } else {
                all
            };
            any |= *m;
        }
        any != 0
    }

    /// Dense head `h` for one chunk of queries `qc` (the first at `pos0`), into `oc`, by the
    /// block kernels: per block of lanes, the blocked online softmax over the key tiles.
    /// Its block buffers are in `fast` ([`fast_parts`]: transposed queries, accumulators, a
    /// tile of scores).
    fn fast_dense_head(&self, h: usize, qc: &[f32], pos0: usize, fast: &mut [f32], oc: &mut [f32]) {
        let (hd, q_dim, kv_dim) = (self.hd, self.q_dim, self.kv_dim);
        let nc = qc.len() / q_dim;
        let kvh = h / self.group;
        let (qt, rest) = fast.split_at_mut(ATTN_LANES * hd);
        let (acc, rest) = rest.split_at_mut(ATTN_LANES * hd);
        let Ok(sc) = <&mut [f32; ATTN_BLOCK]>::try_from(&mut rest[..ATTN_BLOCK]) else {
            return;
        };
        let mut vis = [0u16; ATTN_TILE];
        let mut st = AttnDenseState::new(acc);
        for g0 in (0..nc).step_by(ATTN_LANES) {
            let lanes = ATTN_LANES.min(nc - g0);
            let gpos = pos0.saturating_add(g0);
            attn_transpose_queries(&qc[g0 * q_dim + h * hd..], q_dim, lanes, hd, qt);
            st.max = [f32::NEG_INFINITY; ATTN_LANES];
            st.sum = [0.0; ATTN_LANES];
            st.acc[..lanes * hd].fill(0.0);
            let end = self.key_end(gpos.saturating_add(lanes - 1));
            for t0 in (0..end).step_by(ATTN_TILE) {
                let nk = ATTN_TILE.min(end - t0);
                if !self.tile_vis(t0, nk, gpos, lanes, &mut vis) {
                    continue;
                }
                let o = t0 * kv_dim + kvh * hd;
                scores_tile_fast(qt, hd, &self.keys.k[o..], kv_dim, nk, self.scale, sc);
                dense_tile_fast(sc, &vis, nk, &self.keys.v[o..], kv_dim, hd, &mut st);
            }
            for l in 0..lanes {
                let out = &mut oc[(g0 + l) * q_dim + h * hd..][..hd];
                let acc = &st.acc[l * hd..][..hd];
                if st.sum[l] > 0.0 {
                    let inv = 1.0 / st.sum[l];
                    out.iter_mut().zip(acc).for_each(|(o, &a)| *o = a * inv);
                } else {
                    out.fill(0.0);
                }
            }
        }
    }

    /// Visibility of the keys `kb0..kb1` (whole tiles from `kb0`, at most [`VIS_STRIDE`]) to
    /// the lanes `0..lanes` of a block whose first query is at `pos0`: `valid[t]` has bit `j`
    /// when key `kb0 + t * ATTN_TILE + j` exists and is not padding (what every lane sees
    /// without a causal mask); when causal, `vis[lane * stride + t]` is that lane's part of it.
    /// Returns, per tile, whether any lane sees any of its keys (bit `t`).
    fn lane_vis(
        &self,
        (kb0, kb1): (usize, usize),
        pos0: usize,
        lanes: usize,
        valid: &mut [u16; VIS_STRIDE],
        (vis, stride): (&mut [u16], usize),
    ) -> u16 {
        let mut any = 0u16;
        for (t, t0) in (kb0..kb1).step_by(ATTN_TILE).enumerate() {
            let nk = ATTN_TILE.min(kb1 - t0);
            let mut m = if nk >= ATTN_TILE {
                u16::MAX
            } else {
                (1u16 << nk) - 1
            };
            if let Some(v) = self.keys.valid {
                for (j, &ok) in v[t0..t0 + nk].iter().enumerate() {
                    m &= !(u16::from(!ok) << j);
                }
            }
            valid[t] = m;
            let mut seen = m;
            if self.causal {
                seen = 0;
                for l in 0..lanes {
                    // Keys t0 + j <= pos0 + l: the first pos0 + l + 1 - t0 of the tile.
                    let lim = (pos0.saturating_add(l) + 1).saturating_sub(t0);
                    let ml = if lim < ATTN_TILE {
                        m & ((1u16 << lim) - 1)
                    } else {
                        m
                    };
                    vis[l * stride + t] = ml;
                    seen |= ml;
                }
            }
            if seen != 0 {
                any |= 1 << t;
            }
        }
        any
    }

    /// Top-k attention (keeping `k <= ATTN_SELECT_MAX_K` keys per query) of the heads
    /// `0..n_heads` for one chunk of queries `qc`, into `oc`, by the block kernels: per head,
    /// block of lanes and block of [`ATTN_KEY_BLOCK`] keys, the lane-major scores of the visible
    /// tiles, then each lane's slots merged with the block
    /// ([`crate::kernels::attn::attn_topk_block`]: exact top-k, slots in key order), then the
    /// softmax over the slots. The block buffers, in `fast` ([`fast_parts`] for blocks of `kb`
    /// keys), serve the whole chunk, all heads.
    #[allow(clippy::too_many_arguments)]
    fn fast_topk_chunk(
        &self,
        n_heads: usize,
        k: usize,
        qc: &[f32],
        pos0: usize,
        s: &mut AttnScratch<'_>,
        (fast, kb): (&mut [f32], usize),
        oc: &mut [f32],
    ) {
        let (hd, q_dim, kv_dim) = (self.hd, self.q_dim, self.kv_dim);
        let nc = qc.len() / q_dim;
        let stride = kb / ATTN_TILE;
        let (qt, rest) = fast.split_at_mut(ATTN_LANES * hd);
        let (rows, rest) = rest.split_at_mut(ATTN_LANES * kb);
        let (vis, rest) = rest.split_at_mut(padded(2 * ATTN_LANES * stride) / 4);
        let vis: &mut [u16] = bytemuck::cast_slice_mut(vis);
        let mut valid = [0u16; VIS_STRIDE];
        let mut work = AttnTopkWork::new(&mut rest[..AttnTopkWork::words(k, kb)]);
        for h in 0..n_heads {
            let kvh = h / self.group;
            for g0 in (0..nc).step_by(ATTN_LANES) {
                let lanes = ATTN_LANES.min(nc - g0);
                let gpos = pos0.saturating_add(g0);
                attn_transpose_queries(&qc[g0 * q_dim + h * hd..], q_dim, lanes, hd, qt);
                let lens = &mut s.lens[g0..g0 + lanes];
                lens.fill(0);
                let end = self.key_end(gpos.saturating_add(lanes - 1));
                for kb0 in (0..end).step_by(kb) {
                    let kb1 = end.min(kb0 + kb);
                    let nt = (kb1 - kb0).div_ceil(ATTN_TILE);
                    let lv = (&mut *vis, stride);
                    let any = self.lane_vis((kb0, kb1), gpos, lanes, &mut valid, lv);
                    if any == 0 {
                        continue;
                    }
                    for t in (0..nt).filter(|&t| any >> t & 1 != 0) {
                        let t0 = kb0 + t * ATTN_TILE;
                        let nk = ATTN_TILE.min(kb1 - t0);
                        let k_rows = &self.keys.k[t0 * kv_dim + kvh * hd..];
                        let r = &mut rows[t * ATTN_TILE..];
                        scores_rows_fast(qt, hd, k_rows, kv_dim, nk, self.scale, r, kb);
                    }
                    for (l, len) in lens.iter_mut().enumerate() {
                        let lv = if self.causal {
                            &vis[l * stride..][..nt]
                        } else {
                            &valid[..nt]
                        };
                        if self.causal && lv.iter().all(|&m| m == 0) {
                            continue;
                        }
                        let qi = g0 + l;
                        // Visible keys are below MAX_KEYS (checked): their indices fit in u16.
                        *len = topk_block_fast(
                            &rows[l * kb..][..nt * ATTN_TILE],
                            lv,
                            kb0,
                            k,
                            &mut s.scores[qi * k..(qi + 1) * k],
                            &mut s.idx[qi * k..(qi + 1) * k],
                            *len as usize,
                            &mut work,
                        ) as u32;
                    }
                }
            }
            self.fast_topk_output(h, k, nc, s, oc);
        }
    }

    /// The output of the fast top-k paths: per query, the softmax over its `s.lens` kept
    /// slots weighting their value rows, in slot order.
    fn fast_topk_output(
        &self,
        h: usize,
        k: usize,
        nc: usize,
        s: &mut AttnScratch<'_>,
        oc: &mut [f32],
    ) {
        let (hd, q_dim, kv_dim) = (self.hd, self.q_dim, self.kv_dim);
        let kvh = h / self.group;
        if k == 0 {
            // No keys (k is at most their number): every query gets zeros.
            for qi in 0..nc {
                oc[qi * q_dim + h * hd..][..hd].fill(0.0);
            }
            return;
        }
        for g0 in (0..nc).step_by(ATTN_LANES) {
            let lanes = ATTN_LANES.min(nc - g0);
            softmax_lanes_fast(
                &s.scores[g0 * k..],
                &s.idx[g0 * k..],
                &s.lens[g0..g0 + lanes],
                k,
                &self.keys.v[kvh * hd..],
                kv_dim,
                hd,
                &mut oc[g0 * q_dim + h * hd..],
                q_dim,
            );
        }
    }

    /// Top-k head `h` for `k > ATTN_SELECT_MAX_K` by the block kernels and the heap of
    /// [`TopK`]: each tile's scores are compared with every lane's threshold (its k-th best so
    /// far, or none while it has free slots) and only the candidates are pushed; keys reach a
    /// lane's heap in increasing order, so a later key loses ties. The kept rows are summed in
    /// heap order.
    /// Its block buffers are in `fast` ([`fast_parts`]: transposed queries, a tile of scores).
    #[allow(clippy::too_many_arguments)]
    fn fast_topk_heap_head(
        &self,
        h: usize,
        k: usize,
        qc: &[f32],
        pos0: usize,
        s: &mut AttnScratch<'_>,
        fast: &mut [f32],
        oc: &mut [f32],
    ) {
        let (hd, q_dim, kv_dim) = (self.hd, self.q_dim, self.kv_dim);
        let nc = qc.len() / q_dim;
        let kvh = h / self.group;
        let (qt, rest) = fast.split_at_mut(ATTN_LANES * hd);
        let Ok(sc) = <&mut [f32; ATTN_BLOCK]>::try_from(&mut rest[..ATTN_BLOCK]) else {
            return;
        };
        let mut vis = [0u16; ATTN_TILE];
        let mut cand = [0u16; ATTN_TILE];
        s.lens[..nc].fill(0);
        for g0 in (0..nc).step_by(ATTN_LANES) {
            let lanes = ATTN_LANES.min(nc - g0);
            let gpos = pos0.saturating_add(g0);
            attn_transpose_queries(&qc[g0 * q_dim + h * hd..], q_dim, lanes, hd, qt);
            let mut thr = [f32::NEG_INFINITY; ATTN_LANES];
            let mut open: u16 = if lanes >= ATTN_LANES {
                u16::MAX
            } else {
                (1 << lanes) - 1
            };
            let end = self.key_end(gpos.saturating_add(lanes - 1));
            for t0 in (0..end).step_by(ATTN_TILE) {
                let nk = ATTN_TILE.min(end - t0);
                if !self.tile_vis(t0, nk, gpos, lanes, &mut vis) {
                    continue;
                }
                let o = t0 * kv_dim + kvh * hd;
                scores_tile_fast(qt, hd, &self.keys.k[o..], kv_dim, nk, self.scale, sc);
                if candidates_fast(sc, &vis, nk, &thr, open, &mut cand) == 0 {
                    continue;
                }
                for (j, &cj) in cand[..nk].iter().enumerate() {
                    let mut cm = cj;
                    while cm != 0 {
                        let l = cm.trailing_zeros() as usize;
                        cm &= cm - 1;
                        let qi = g0 + l;
                        let slots = &mut s.scores[qi * k..(qi + 1) * k];
                        let idx = &mut s.idx[qi * k..(qi + 1) * k];
                        let mut sel = TopK::resume(slots, idx, s.lens[qi], Rank::Value);
                        // t0 + j < MAX_KEYS (checked): the key index fits in u16.
                        sel.push(sc[j * ATTN_LANES + l], (t0 + j) as u16);
                        s.lens[qi] = sel.state();
                        if let Some(w) = sel.worst() {
                            thr[l] = w;
                            open &= !(1 << l);
                        }
                    }
                }
            }
        }
        for qi in 0..nc {
            let slots = &mut s.scores[qi * k..(qi + 1) * k];
            let idx = &mut s.idx[qi * k..(qi + 1) * k];
            s.lens[qi] = TopK::resume(slots, idx, s.lens[qi], Rank::Value).len() as u32;
        }
        self.fast_topk_output(h, k, nc, s, oc);
    }
}
