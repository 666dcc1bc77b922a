//! Attention: dense reference (streaming softmax) and top-k (skeleton).

use crate::Error;
use crate::arena::Arena;

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

/// Scratch bytes for one attention call (what [`AttnScratch::new`] takes from the arena).
pub const fn scratch_bytes(p: &AttnParams) -> usize {
    let _ = p;
    0
}

/// Working buffers of an attention call, sliced from the arena.
pub struct AttnScratch<'a> {
    _bufs: &'a mut [f32],
}

impl<'a> AttnScratch<'a> {
    /// Takes exactly [`scratch_bytes`] from the arena.
    pub fn new(arena: &mut Arena<'a>, p: &AttnParams) -> Result<Self, Error> {
        let _ = p;
        Ok(AttnScratch {
            _bufs: arena.take(0)?,
        })
    }
}

/// Multi-head attention of the queries `q` (`n_q x (n_heads * head_dim)`, the first at absolute
/// position `q_pos`) over `keys`, into `out` (same shape as `q`). Scores are scaled by
/// `1/sqrt(head_dim)`.
pub fn attention(
    p: &AttnParams,
    q: &[f32],
    q_pos: usize,
    keys: &Keys<'_>,
    scratch: &mut AttnScratch<'_>,
    out: &mut [f32],
) -> Result<(), Error> {
    let _ = (p, q, q_pos, keys, scratch, out);
    todo!()
}
