//! Sizing of the attention scratch ([`scratch_bytes`], [`fast_scratch_bytes`]) and the
//! scratch itself ([`AttnScratch`]): the top-k slots of a chunk and the fast path's block
//! buffers, taken from the arena once.

use super::params::{AttnParams, check_params};
use crate::Error;
use crate::arena::{Arena, padded};
use crate::kernels::attention::{
    ATTN_BLOCK, ATTN_KEY_BLOCK, ATTN_LANES, ATTN_MAX_HEAD_DIM, ATTN_SELECT_MAX_K, ATTN_TILE,
    AttnTopkWork,
};

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
/// of [`ATTN_TILE`] (16) covering them, at most [`crate::kernels::ATTN_KEY_BLOCK`] (256).
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
pub(super) const fn fast_parts(p: &AttnParams, kb: usize) -> [usize; 4] {
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

/// Bytes of the [`crate::kernels::Kernels::Fast`] part of an attention scratch (what [`AttnScratch::new_fast`]
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

/// Bytes of the tile buffer of an attention call over stored (f16, int8) keys and values
/// ([`AttnScratch::take_kv_tile`]): 16 key rows and 16 value rows of `head_dim` f32,
/// `padded(4 * 32 * head_dim)`. Saturates at `usize::MAX` on overflow.
pub const fn kv_tile_bytes(head_dim: usize) -> usize {
    buf_bytes(2 * ATTN_TILE, head_dim.saturating_mul(4))
}

/// Working buffers of an attention call, sliced from the arena.
pub struct AttnScratch<'a> {
    /// Top-k: `C*k` kept scores. Dense: running maximum (`C`) then running sum (`C`).
    pub(super) scores: &'a mut [f32],
    /// Top-k: `C*k` kept key indices. Dense: empty.
    pub(super) idx: &'a mut [u16],
    /// Top-k: selection state per query ([`TopK::state`]). Dense: empty.
    pub(super) lens: &'a mut [u32],
    /// Queries per chunk the buffers hold.
    pub(super) chunk: usize,
    /// Slots per query (top-k), `None` for dense.
    pub(super) k: Option<usize>,
    /// [`crate::kernels::Kernels::Fast`]'s block buffers (and, in the engine, the int8 activations of the
    /// projections), f32 words; empty when made by [`AttnScratch::new`].
    pub(super) fast: &'a mut [f32],
    /// Keys per block of the fast top-k path ([`fast_key_block`]).
    pub(super) key_block: usize,
    /// Stored (f16, int8) keys and values: a tile of key rows, then a tile of value rows,
    /// dequantized ([`kv_tile_bytes`]); empty otherwise.
    pub(super) tile: &'a mut [f32],
}

impl<'a> AttnScratch<'a> {
    /// Takes exactly [`scratch_bytes`] from the arena: the buffers of [`crate::kernels::Kernels::Reference`]
    /// (a call with [`crate::kernels::Kernels::Fast`] then fails, see [`AttnScratch::new_fast`]).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for bad parameters, the arena's error when it is too small.
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
                    tile: &mut [],
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
                    tile: &mut [],
                })
            }
        }
    }

    /// Takes [`scratch_bytes`] and then [`fast_scratch_bytes`]`(p, max_keys)` from the arena:
    /// the buffers of both kernel choices, for calls over at most `max_keys` keys (more keys
    /// still work, in more key blocks).
    ///
    /// # Errors
    /// As [`AttnScratch::new`].
    pub fn new_fast(arena: &mut Arena<'a>, p: &AttnParams, max_keys: usize) -> Result<Self, Error> {
        Self::with_fast(arena, p, max_keys, (0, fast_scratch_bytes(p, max_keys)))
    }

    /// [`AttnScratch::new`], then `kv_work_bytes` (0, or the plan's `kv_work_bytes`: the tile
    /// buffer of stored keys, [`kv_tile_bytes`], then the decoder's K/V staging rows,
    /// [`AttnScratch::stage_and_fast`]), then `fast_bytes` (0, or at least
    /// [`fast_scratch_bytes`]`(p, max_keys)`) of fast buffers: the engine's attention phase,
    /// whose fast buffers also hold the int8 activations of its projections
    /// ([`AttnScratch::fast_words`]).
    pub(crate) fn with_fast(
        arena: &mut Arena<'a>,
        p: &AttnParams,
        max_keys: usize,
        (kv_work_bytes, fast_bytes): (usize, usize),
    ) -> Result<Self, Error> {
        let mut s = Self::new(arena, p)?;
        if kv_work_bytes > 0 {
            if kv_work_bytes < kv_tile_bytes(p.dims.head_dim) {
                return Err(Error::InvalidConfig(
                    "attention tile buffer smaller than kv_tile_bytes",
                ));
            }
            s.tile = arena.take(kv_work_bytes / 4)?;
        }
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

    /// Takes the tile buffer that an attention call over stored (f16, int8) keys and values
    /// needs ([`kv_tile_bytes`]`(head_dim)`) from the arena.
    ///
    /// # Errors
    /// The arena's error when it is too small.
    pub fn take_kv_tile(&mut self, arena: &mut Arena<'a>, head_dim: usize) -> Result<(), Error> {
        let words = 2usize
            .checked_mul(ATTN_TILE)
            .and_then(|n| n.checked_mul(head_dim))
            .ok_or(Error::InvalidConfig("head_dim overflows"))?;
        self.tile = arena.take(words)?;
        Ok(())
    }

    /// The decoder's K/V staging rows (what follows the tile in the `kv_work` buffer, see
    /// [`AttnScratch::with_fast`]) and the fast buffers, both free between attention calls.
    pub(crate) fn stage_and_fast(&mut self, head_dim: usize) -> (&mut [f32], &mut [f32]) {
        let t = (2 * ATTN_TILE * head_dim).min(self.tile.len());
        (&mut self.tile[t..], self.fast)
    }

    /// The fast buffers, free between attention calls (the engine quantizes the projections'
    /// inputs there).
    pub(crate) fn fast_words(&mut self) -> &mut [f32] {
        self.fast
    }

    /// Whether these buffers can serve an attention call with parameters `p`.
    pub(super) fn fits(&self, p: &AttnParams) -> bool {
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
