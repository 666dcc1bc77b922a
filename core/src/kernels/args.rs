//! Argument structs of the kernels whose inputs outnumber what a signature reads well: the
//! attention block kernels and the fused feed-forward blocks. Every implementation of an op
//! (generic, x86-64, wasm32) takes the same struct.

use super::matrix::{Matrix, f16};
use crate::config::Activation;

// The block shapes of the attention kernels (the arrays of the structs below).

/// Queries per block (lanes of a vector).
pub const ATTN_LANES: usize = 16;
/// Keys per tile.
pub const ATTN_TILE: usize = 16;
/// Largest head width the fast path takes (the register tiles of the arch kernels are sized for
/// it); wider heads run the reference path.
pub const ATTN_MAX_HEAD_DIM: usize = 128;
/// Scores of one block: `ATTN_TILE` keys x `ATTN_LANES` lanes.
pub const ATTN_BLOCK: usize = ATTN_TILE * ATTN_LANES;
/// Largest `k` of the block selection ([`super::attn_topk_block`]); larger `k` use the heap of
/// [`crate::topk::TopK`].
pub const ATTN_SELECT_MAX_K: usize = 32;
/// Most keys per selection block ([`super::attn_topk_block`]); the lane-major scores of a block of
/// lanes and keys take `ATTN_LANES` times as many f32 (16 KiB). Fewer keys in all make the
/// block smaller ([`crate::model::attention::fast_key_block`]).
pub const ATTN_KEY_BLOCK: usize = 256;

/// Scores of a tile (or block) of keys against a block of transposed queries: for the `nk`
/// (at most [`super::ATTN_TILE`]) key rows `k_j = k[j * stride..][..hd]`, the sums
/// `(sum_d qt[d * ATTN_LANES + lane] * k_j[d]) * scale` in increasing `d`.
#[derive(Debug, Clone, Copy)]
pub struct AttnScoresArgs<'a> {
    /// Transposed queries, `hd x ATTN_LANES` ([`super::attn_transpose_queries`]).
    pub qt: &'a [f32],
    /// Head width (`<= ATTN_MAX_HEAD_DIM` for the arch kernels).
    pub hd: usize,
    /// Key rows from the tile's first key.
    pub k: &'a [f32],
    /// Stride of the key rows (f32).
    pub stride: usize,
    /// Keys in the tile.
    pub nk: usize,
    /// Factor of every score.
    pub scale: f32,
}

/// One lane's scores of a block of keys for the top-k merge ([`super::attn_topk_block`]):
/// `row[t * ATTN_TILE + j]` is the score of key `kb0 + t * ATTN_TILE + j`, visible when bit
/// `j` of `vis[t]` is set; `k` is the slot capacity.
#[derive(Debug, Clone, Copy)]
pub struct AttnTopkArgs<'a> {
    /// Lane-major scores of the block.
    pub row: &'a [f32],
    /// Visibility of each tile's keys.
    pub vis: &'a [u16],
    /// First key of the block.
    pub kb0: usize,
    /// Slots (at most [`super::ATTN_SELECT_MAX_K`] are used).
    pub k: usize,
}

/// The kept slots of up to [`super::ATTN_LANES`] queries and the value rows they name, for the
/// softmax of the top-k path ([`super::attn_softmax_lanes`]): query `l` has the slots
/// `scores[l * k..][..lens[l]]`, `idx[l * k..][..lens[l]]`, naming rows
/// `v[idx * stride..][..hd]`.
#[derive(Debug, Clone, Copy)]
pub struct AttnSoftmaxArgs<'a> {
    /// Kept scores, `k` slots per lane.
    pub scores: &'a [f32],
    /// Kept key indices, `k` slots per lane.
    pub idx: &'a [u16],
    /// Slots in use per lane.
    pub lens: &'a [u32],
    /// Slots per lane.
    pub k: usize,
    /// Value rows.
    pub v: &'a [f32],
    /// Stride of the value rows (f32).
    pub stride: usize,
    /// Head width.
    pub hd: usize,
}

impl<'a> AttnScoresArgs<'a> {
    /// Key row `j` of the tile: `k[j * stride..][..hd]`.
    #[inline]
    pub fn key(&self, j: usize) -> &'a [f32] {
        &self.k[j * self.stride..][..self.hd]
    }
}

impl<'a> AttnSoftmaxArgs<'a> {
    /// Lanes of the block: `lens.len()`, at most [`super::ATTN_LANES`].
    #[inline]
    pub fn lanes(&self) -> usize {
        self.lens.len().min(ATTN_LANES)
    }

    /// Lane `l`'s kept slots: its `min(lens[l], k)` scores and key indices.
    #[inline]
    pub fn slots(&self, l: usize) -> (&'a [f32], &'a [u16]) {
        let n = (self.lens[l] as usize).min(self.k);
        (
            &self.scores[l * self.k..][..n],
            &self.idx[l * self.k..][..n],
        )
    }
}

/// A dense feed-forward block for the fused kernels: `out += down(act(up x + up_bias))` for
/// the `n` token rows of `x` (`up` is `d_ff x d`, `down_t` is `d_ff x d`, the transposed down
/// projection).
#[derive(Debug, Clone, Copy)]
pub struct FfnArgs<'a> {
    /// Up projection, `d_ff x d`.
    pub up: &'a Matrix<'a>,
    /// Bias of the up projection, `d_ff`.
    pub up_bias: Option<&'a [f32]>,
    /// Activation of the hidden units.
    pub act: Activation,
    /// Transposed down projection, `d_ff x d`.
    pub down_t: &'a Matrix<'a>,
    /// Token rows, `n x d`.
    pub x: &'a [f32],
    /// Tokens.
    pub n: usize,
}

/// The scores of a tile ([`super::attn_scores_tile`]'s `s[j * ATTN_LANES + lane]`) and which
/// lanes see which of its `nk` keys (`vis[j]` bit `lane`).
#[derive(Debug, Clone, Copy)]
pub struct AttnTile<'a> {
    /// Scores, `ATTN_TILE` keys x `ATTN_LANES` lanes.
    pub s: &'a [f32; ATTN_BLOCK],
    /// Visibility per key (bit `lane`).
    pub vis: &'a [u16; ATTN_TILE],
    /// Keys in the tile.
    pub nk: usize,
}

/// The int8 weights of a dense block as the fused kernels read them: `(up_q, up_s)` and
/// `(down_q, down_s)` (values and row scales, `d_ff x d` each) and `(d, d_ff)`.
pub type FfnInt8<'a> = ((&'a [i8], &'a [f32]), (&'a [i8], &'a [f32]), (usize, usize));

impl<'a> FfnArgs<'a> {
    /// The block's int8 weights ([`FfnInt8`]) when its shapes are those of the fused int8
    /// kernels: `up` and `down_t` int8 `d_ff x d`, `1 <= d <= max_d`, `d_ff` a multiple of
    /// `units`, the bias `d_ff` long, `x` and the output (`out_len` values) `n x d`; `None`
    /// otherwise.
    pub fn int8(&self, out_len: usize, units: usize, max_d: usize) -> Option<FfnInt8<'a>> {
        let (d_ff, d) = (self.up.rows(), self.up.cols());
        let (up, down) = (self.up.int8()?, self.down_t.int8()?);
        let fits = d > 0
            && d <= max_d
            && d_ff.is_multiple_of(units)
            && self.down_t.rows() == d_ff
            && self.down_t.cols() == d
            && self.up_bias.is_none_or(|b| b.len() == d_ff)
            && self.x.len() == self.n * d
            && out_len == self.n * d;
        fits.then_some((up, down, (d, d_ff)))
    }
}

/// Values per scale of int8 keys and values ([`KvRows::Int8`]) when it divides the head width
/// (else one scale per head row, see [`kv_int8_group`]): RoPE puts a head's large channels in
/// both of its halves, so groups smaller than a head keep the other channels' steps small.
pub const KV_INT8_GROUP: usize = 32;

/// Values per scale of int8 keys and values of heads of `head_dim`: [`KV_INT8_GROUP`] when it
/// divides `head_dim`, else `head_dim` (at least 1).
pub const fn kv_int8_group(head_dim: usize) -> usize {
    if head_dim.is_multiple_of(KV_INT8_GROUP) {
        KV_INT8_GROUP
    } else if head_dim == 0 {
        1
    } else {
        head_dim
    }
}

/// Scales per head row of int8 keys and values: `head_dim / kv_int8_group(head_dim)`.
pub const fn kv_int8_scales(head_dim: usize) -> usize {
    head_dim / kv_int8_group(head_dim)
}

/// Key or value rows as the attention reads them: row-major `n x kv_dim` values in one of the
/// storage types of [`crate::KvType`]. The head row at offset `o` (a multiple of `head_dim`:
/// `position * kv_dim + kv_head * head_dim`) is `head_dim` values from `o`; int8 value `i`
/// has the scale `scales[i / g]`, `g = kv_int8_group(head_dim)`.
#[derive(Debug, Clone, Copy)]
pub enum KvRows<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// IEEE half values.
    F16(&'a [f16]),
    /// int8 values, `x[i] ~ scales[i / g] * q[i]`, one scale per group of
    /// `g = kv_int8_group(head_dim)` values.
    Int8 {
        /// Values.
        q: &'a [i8],
        /// One scale per group.
        scales: &'a [f32],
    },
}

impl KvRows<'_> {
    /// Stored values (`n * kv_dim` for `n` rows).
    pub fn len(&self) -> usize {
        match self {
            KvRows::F32(x) => x.len(),
            KvRows::F16(x) => x.len(),
            KvRows::Int8 { q, .. } => q.len(),
        }
    }

    /// No values stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The f32 values, `None` for other storage types.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            KvRows::F32(x) => Some(x),
            _ => None,
        }
    }
}

/// Writable key or value rows ([`KvRows`]) for storing projections.
#[derive(Debug)]
pub enum KvRowsMut<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// IEEE half values.
    F16(&'a mut [f16]),
    /// int8 values and one scale per group ([`kv_int8_group`]).
    Int8 {
        /// Values.
        q: &'a mut [i8],
        /// One scale per group.
        scales: &'a mut [f32],
    },
}
