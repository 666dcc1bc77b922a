//! The shapes of an attention call ([`AttnDims`], [`AttnParams`], [`Keys`]) and their checks.

use crate::Error;
use crate::kernels::KvRows;
use crate::kernels::attention::{ATTN_KEY_BLOCK, ATTN_TILE};

/// Largest number of keys: key indices are stored as `u16` in the top-k slots.
pub const MAX_KEYS: usize = 1 << 16;

/// Most tiles per key block of the fast top-k path.
pub(super) const VIS_STRIDE: usize = ATTN_KEY_BLOCK / ATTN_TILE;

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

/// Keys and values stored in any [`crate::KvType`] ([`KvRows`]), row-major `n x (n_kv_heads *
/// head_dim)` values: what [`super::attention_kv`] reads (the decoder's cache, the encoder's
/// keys and values). [`Keys`] is the f32 case.
#[derive(Debug, Clone, Copy)]
pub struct KvKeys<'a> {
    /// Key rows.
    pub k: KvRows<'a>,
    /// Value rows.
    pub v: KvRows<'a>,
    /// Number of key rows.
    pub n: usize,
    /// Padding mask: `valid[j] == false` hides key `j`. `None`: all keys visible.
    pub valid: Option<&'a [bool]>,
}

impl<'a> From<&Keys<'a>> for KvKeys<'a> {
    fn from(k: &Keys<'a>) -> Self {
        KvKeys {
            k: KvRows::F32(k.k),
            v: KvRows::F32(k.v),
            n: k.n,
            valid: k.valid,
        }
    }
}

pub(super) fn check_params(p: &AttnParams) -> Result<(), Error> {
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
