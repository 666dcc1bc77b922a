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
//! [`crate::kernels::attention`] (AVX-512 on x86-64 std builds when the CPU has it):
//!
//! - dense: tiles of 16 keys, the scores of a tile one vector per key, an online softmax per
//!   tile (tile maximum, one rescale, vector `exp` by [`crate::kernels::exp_poly`]);
//!   masked keys get weight 0 in a lane of a tile another lane sees, which adds exactly
//!   nothing to finite values;
//! - top-k, `k <= ATTN_SELECT_MAX_K` (32): blocks of [`crate::kernels::ATTN_KEY_BLOCK`] (256) keys; the
//!   scores of a block are stored lane-major (each query's scores contiguous), then each
//!   query's slots are merged with the block by [`crate::kernels::attention::attn_topk_block`]: a
//!   lower bound on the k-th best score (from the best scores of groups of keys, and the k-th
//!   best kept so far) filters the candidates, and the k-th best candidate is found without
//!   sorting; the slots hold the exact top-k in increasing key order, and the kept rows are
//!   summed in that order. NaN scores rank below every other score (kept only when fewer
//!   than `k` visible keys have a non-NaN score), `-0.0` ties `0.0`;
//! - top-k, larger `k`: tiles of 16 keys compared against each query's current k-th best
//!   before they reach the heap of [`crate::topk::TopK`]; the kept rows are summed in heap
//!   order.
//!
//! Both keep the promises above (ties, masks, chunk independence). Heads wider than
//! [`ATTN_MAX_HEAD_DIM`] run the reference loops. The block buffers (transposed queries,
//! accumulators, lane-major scores, candidates) are a second part of the scratch,
//! [`fast_scratch_bytes`], taken by [`AttnScratch::new_fast`]; the key blocks of the top-k
//! path hold [`fast_key_block`] keys (fewer than [`crate::kernels::ATTN_KEY_BLOCK`] for a short context; the
//! kept keys do not depend on it).
//!
//! Stored keys and values ([`attention_kv`], [`KvKeys`]: f16, or int8 with one scale per head
//! row, see [`crate::KvType`]) are read as stored: each tile of 16 key rows (and value rows) of
//! one head is dequantized by [`crate::kernels::kv_rows_to_f32`] into the scratch's tile
//! buffer ([`AttnScratch::take_kv_tile`], `2 * 16 * head_dim` f32) and scored (and weighted)
//! there by the same kernels as f32 rows; the top-k outputs dequantize their kept value rows
//! one at a time ([`crate::kernels::attn_softmax_kv_rows`]). No dequantized copy of the cache
//! exists; an f32 cache is read in place as before.
//!
//! Grouped KV heads: query head `h` reads KV head `h / (n_heads / n_kv_heads)`. Scores are
//! `q . k / sqrt(head_dim)`.

use crate::Error;
use crate::kernels::attention::{ATTN_MAX_HEAD_DIM, ATTN_SELECT_MAX_K};
use crate::kernels::{AttnScoresArgs, Kernels, KvRows, kv_rows_to_f32};
use crate::math;

/// The kernels of the blocked paths (only [`Kernels::Fast`] takes them).
const FAST: Kernels = Kernels::Fast;

mod blocked;
mod params;
mod reference;
mod scratch;

use params::check_params;
pub use params::{AttnDims, AttnParams, Keys, KvKeys, MAX_KEYS};
use scratch::fast_parts;
pub use scratch::{AttnScratch, fast_key_block, fast_scratch_bytes, kv_tile_bytes, scratch_bytes};

/// Keys streamed per tile: a tile's rows stay in cache while every query of the chunk uses them.
const KEY_TILE: usize = 16;

/// Multi-head attention of the queries `q` (`n_q x (n_heads * head_dim)`, the first at absolute
/// position `q_pos`) over `keys`, into `out` (same shape as `q`). Scores are scaled by
/// `1/sqrt(head_dim)`. A query with no visible key gets zeros.
///
/// # Errors
/// [`Error::InvalidConfig`] for bad parameters or a scratch made for smaller
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
///
/// # Errors
/// As [`attention`].
pub fn attention_with(
    kernels: Kernels,
    p: &AttnParams,
    q: &[f32],
    q_pos: usize,
    keys: &Keys<'_>,
    scratch: &mut AttnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    attention_kv(kernels, p, q, q_pos, &KvKeys::from(keys), scratch, out)
}

/// [`attention_with`] over keys and values stored in any [`crate::KvType`]: f32 rows are read
/// in place, f16 and int8 rows a tile at a time through the scratch's tile buffer (see the
/// module doc), so the results are those of the f32 attention over the dequantized rows.
///
/// # Errors
/// As [`attention`]; [`Error::InvalidConfig`] for f16 or int8 rows and a scratch without the
/// tile buffer ([`AttnScratch::take_kv_tile`]); [`Error::ShapeMismatch`] for int8 scales that
/// are not one per group ([`crate::kernels::kv_int8_group`]).
pub fn attention_kv(
    kernels: Kernels,
    p: &AttnParams,
    q: &[f32],
    q_pos: usize,
    keys: &KvKeys<'_>,
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
    for rows in [&keys.k, &keys.v] {
        let per_row = d.n_kv_heads * crate::kernels::kv_int8_scales(d.head_dim);
        if let KvRows::Int8 { scales, .. } = rows
            && scales.len() != n * per_row
        {
            return Err(Error::ShapeMismatch {
                what: "attention int8 scales",
                expected: n * per_row,
                found: scales.len(),
            });
        }
    }
    let stored = keys.k.as_f32().is_none() || keys.v.as_f32().is_none();
    if stored && scratch.tile.len() < 2 * KEY_TILE * d.head_dim {
        return Err(Error::InvalidConfig(
            "attention over f16 or int8 keys needs the tile buffer (AttnScratch::take_kv_tile)",
        ));
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
    let tile_words = core::mem::take(&mut scratch.tile);
    // The tile only (the engine's buffer may hold its K/V staging rows after it).
    let tile_len = (2 * KEY_TILE * d.head_dim).min(tile_words.len());
    let tile = &mut tile_words[..tile_len];
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
                let hk = (d.n_heads, k.min(n));
                ctx.fast_topk_chunk(hk, (qc, pos0), scratch, (w, kb, &mut *tile), oc)
            }
            _ => {
                for h in 0..d.n_heads {
                    let (w, t) = (&mut *fast_words, &mut *tile);
                    match (p.k_attn, fast) {
                        (Some(k), false) => {
                            ctx.topk_head((h, k.min(n)), (qc, pos0), scratch, t, oc)
                        }
                        (None, false) => ctx.dense_head(h, (qc, pos0), scratch, t, oc),
                        (Some(k), true) => {
                            ctx.fast_topk_heap_head((h, k.min(n)), (qc, pos0), scratch, (w, t), oc)
                        }
                        (None, true) => ctx.fast_dense_head(h, (qc, pos0), (w, t), oc),
                    }
                }
            }
        }
        c0 = c1;
    }
    scratch.fast = fast_words;
    scratch.tile = tile_words;
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
    keys: &'k KvKeys<'k>,
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

    /// The scores of the transposed queries `qt` against the `nk` f32 key rows from `k`
    /// (stride `stride`).
    fn scores_args<'a>(
        &self,
        qt: &'a [f32],
        (k, stride): (&'a [f32], usize),
        nk: usize,
    ) -> AttnScoresArgs<'a> {
        AttnScoresArgs {
            qt,
            hd: self.hd,
            k,
            stride,
            nk,
            scale: self.scale,
        }
    }

    /// Rows `t0..t0 + nk` of KV head `kvh` of `rows` as f32 rows and their stride: the rows
    /// themselves (stride `kv_dim`) when they are f32, else dequantized into `buf` (stride
    /// `hd`, at most [`KEY_TILE`] rows).
    fn tile_rows<'b>(
        &self,
        rows: &'b KvRows<'b>,
        (t0, nk, kvh): (usize, usize, usize),
        buf: &'b mut [f32],
    ) -> (&'b [f32], usize) {
        let o = t0 * self.kv_dim + kvh * self.hd;
        match rows {
            KvRows::F32(x) => (&x[o..], self.kv_dim),
            _ => {
                kv_rows_to_f32(rows, o, self.kv_dim, nk, self.hd, buf);
                (&buf[..nk * self.hd], self.hd)
            }
        }
    }
}
