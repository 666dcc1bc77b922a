//! The memory plan: the byte size of every working buffer of one forward pass, and the peak.
//!
//! [`plan()`] is the one place that says how much memory an inference needs; the engines
//! ([`crate::model::forward`] for encoders, [`crate::decoder`] for causal models) take exactly
//! these buffers from the [`crate::Arena`], in the same order, so the arena's measured
//! high-water mark equals [`Plan::peak_bytes`] byte for byte. Every buffer is rounded up to
//! the arena alignment with [`padded`].
//!
//! # Layout
//!
//! With `N = run.seq_len`, `C = min(run.chunk, N)`, `d = d_model`, `kv = kv_dim`,
//! `L = n_layers`, `V = vocab_size` and `pre = 1` for pre-norm blocks ([`Arch::Llama`]), `0`
//! for post-norm blocks ([`Arch::Bert`]). There are two layouts, chosen by
//! [`ModelConfig::causal`]:
//!
//! - **encoder** (`causal == false`, [`crate::model::forward`]): the whole sequence at once;
//!   `keys` and `values` hold the current layer's K and V of all `N` tokens;
//! - **decoder** (`causal == true`, [`crate::decoder`]): tokens arrive a chunk at a time
//!   (prefill) or one at a time (decode) and run through every layer; `keys` and `values` are
//!   the KV cache of all `L` layers for `N` positions (the longest context), the hidden
//!   states are one chunk's, and one row of logits holds the output head's result.
//!
//! | phase | buffer | encoder bytes | decoder bytes |
//! |---|---|---|---|
//! | persistent | `hidden` states | `padded(4 N d)` | `padded(4 C d)` |
//! | persistent | `keys` (decoder: `k_cache`) | `padded(4 N kv)` | `padded(4 L N kv)` |
//! | persistent | `values` (decoder: `v_cache`) | `padded(4 N kv)` | `padded(4 L N kv)` |
//! | persistent | `logits` | 0 | `padded(4 V)` |
//! | K/V projection | normed token chunk | `pre * padded(4 C d)` | 0 |
//! | K/V projection | `kv_stage`, f32 K/V of a chunk (stored keys only) | `padded(4 C kv)` | 0 |
//! | attention | queries, then the output projection | `padded(4 C d)` | `padded(4 C d)` |
//! | attention | normed chunk, then the attention context | `padded(4 C d)` | `padded(4 C d)` |
//! | attention | attention scratch, top-k | `padded(4 C k) + padded(2 C k) + padded(4 C)` | same |
//! | attention | attention scratch, dense | `padded(8 C)` | same |
//! | attention | `kv_work`, tile (and decoder staging; stored keys only) | `padded(128 hd)` | `padded(128 hd) + padded(4 C kv)` |
//! | feed-forward | normed token chunk | `pre * padded(4 C d)` | same |
//! | feed-forward | FFN output | `padded(4 C d)` | same |
//! | feed-forward | FFN scratch, top-k (`k' = min(k_ff, d_ff)`) | `padded(4 C k') + padded(2 C k') + padded(4 C)` | same |
//! | feed-forward | FFN scratch, dense | 0 | 0 |
//!
//! The scratch rows are [`attention::scratch_bytes`] (per query: `k` kept f32 scores, `k` u16
//! key indices and a u32 fill count; dense: running max and sum) and [`ffn::scratch_bytes`]
//! (per token: the `k'` kept activations and unit indices; the dense FFN streams its hidden
//! units and needs none). `padded` rounds up to 16 bytes. The decoder projects a chunk's K and
//! V straight into its cache rows from the normed chunk of the attention phase, so it has no
//! K/V projection phase.
//!
//! The encoder's fast path ([`crate::kernels::Kernels::Fast`], dense feed-forward, post-norm
//! blocks, `kv >= d`) runs the feed-forward of all `N` tokens in one call with its output in
//! the `keys` buffer, which holds nothing live in that phase: the same bytes, one call instead
//! of `N / C` (see [`crate::model`]).
//!
//! The keys and values above are f32 (`4` bytes per value, [`KvType::F32`], the default). With
//! [`KvType::F16`] they take 2 bytes per value, with [`KvType::Int8`] 1 byte per value plus
//! one f32 scale per group of 32 values ([`cache_bytes`]; [`plan_kv`] and [`try_plan_kv`]
//! take the type). Stored keys add `kv_stage` (the encoder projects a chunk at a time into f32
//! and stores it; its `kv_fast` is then sized for `C` tokens) and `kv_work` (`hd =
//! head_dim`: 16 key and 16 value rows of one head dequantized for the attention, and the
//! decoder's f32 K/V of a chunk), 0 for f32.
//!
//! The phases run one after the other in every layer and reuse the same bytes, so
//!
//! ```text
//! peak_bytes = persistent + max(kv_phase, attention_phase, ffn_phase)
//! ```
//!
//! # Linear in N
//!
//! Only the persistent `hidden` (encoder), `keys` and `values` depend on `N`; the phases
//! depend on `C`, `k_attn`, `k_ff` and the model widths. When `d_model` and `kv_dim` are
//! multiples of 4 (so no padding is needed) and `N >= chunk` (so `C = chunk`):
//!
//! ```text
//! peak_bytes(N) = a * N + b
//! encoder: a = 4 * (d_model + 2 * kv_dim)                     bytes per token
//!          b = max(kv_phase, attention_phase, ffn_phase)
//! decoder: a = 8 * n_layers * kv_dim                          bytes per context token
//!          b = padded(4 C d) + padded(4 V) + max(attention_phase, ffn_phase)
//! ```
//!
//! For example all-MiniLM-L6-v2 (`d = kv = 384`, `d_ff = 1536`) with top-32 attention and
//! `C = 16`: `a = 4608`, `b = 2 * 24576 + 3136 = 52288`, so 128 tokens need 642112 bytes,
//! while the `n_heads x N x N` f32 score matrix of vanilla attention
//! ([`Plan::vanilla_scores_bytes`]) grows with `N^2`.
//!
//! SmolLM2-135M (30 layers, `d = 576`, 3 KV heads of 64, so `kv = 192`, `d_ff = 1536`,
//! `V = 49152`) as a decoder with top-32 attention and `C = 16`: `a = 46080` bytes per context
//! token (the f32 KV cache), `b = 36864 + 196608 + (2 * 36864 + 3136) = 310336`, so a
//! 2048-token context needs 94682176 bytes (90.3 MiB), 99.7 % of it the cache.
//!
//! [`Arch::Llama`]: crate::Arch::Llama
//! [`Arch::Bert`]: crate::Arch::Bert
//! [`ModelConfig::causal`]: crate::ModelConfig::causal

use crate::arena::padded;
use crate::config::{Arch, FfnKind, KvType, ModelConfig, RunConfig};
use crate::kernels::{self, Kernels};
use crate::model::attention::{self, AttnDims, AttnParams};
use crate::{Error, ffn};

// Here rather than in `arena`, which the plan builds on and which knows no plan.
#[cfg(feature = "alloc")]
impl crate::arena::ArenaBuf {
    /// Storage for the plan's peak: `ArenaBuf::new(plan.peak_bytes)`.
    pub fn for_plan(plan: &Plan) -> Self {
        Self::new(plan.peak_bytes)
    }
}

/// The phase of a forward pass in which a buffer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Phase {
    /// Lives for the whole forward pass.
    Persistent,
    /// Key and value projection of all tokens (per layer).
    KvProjection,
    /// Attention of one query chunk at a time (per layer).
    Attention,
    /// Feed-forward of one token chunk at a time (per layer).
    FeedForward,
}

/// One working buffer of the plan (a row of `topkit budget`'s table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Buffer {
    /// Short name of the buffer.
    pub name: &'static str,
    /// Size in bytes, padded to the arena alignment (0 when the model does not need it).
    pub bytes: usize,
    /// Start of the buffer, in bytes from the start of the arena.
    pub offset: usize,
    /// When the buffer is live.
    pub phase: Phase,
}

/// Byte size of every working buffer of one forward pass, and the peak. All sizes are in bytes
/// and already padded to the arena alignment (16 bytes). See the [module docs](self) for the
/// formulas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plan {
    /// The kernels the buffers are sized for: [`Kernels::Fast`] adds its working buffers
    /// (`kv_fast_bytes`, `attn_fast_bytes`, `ffn_fast_bytes`), 0 for [`Kernels::Reference`].
    pub kernels: Kernels,
    /// Storage type of the keys and values (the KV cache): sizes `keys_bytes`,
    /// `values_bytes`, and for types other than [`KvType::F32`] adds `kv_stage_bytes` and
    /// `kv_work_bytes`.
    pub kv: KvType,
    /// Tokens the buffers are sized for (`run.seq_len`).
    pub seq_len: usize,
    /// Effective chunk: `min(run.chunk, run.seq_len)` tokens.
    pub chunk: usize,
    /// The decoder layout ([`ModelConfig::causal`]): a KV cache of all layers, one chunk of
    /// hidden states and a row of logits. `false`: the encoder layout.
    pub decoder: bool,
    /// Hidden states. Encoder: `seq_len x d_model` f32, `padded(4 N d_model)`; decoder: one
    /// chunk's, `chunk x d_model` f32, `padded(4 C d_model)`.
    pub hidden_bytes: usize,
    /// Keys. Encoder: the current layer's, `seq_len x kv_dim` values, `padded(4 N kv_dim)`
    /// in f32; decoder: the key cache of every layer, `n_layers x seq_len x kv_dim` values,
    /// `padded(4 L N kv_dim)` in f32. With `R` rows of `kv_dim` ([`cache_bytes`]): f16
    /// `padded(2 R kv_dim)`, int8 `padded(R kv_dim) + padded(4 R kv_dim / 32)` (the values,
    /// then one f32 scale per 32 values; per head row when 32 does not divide `head_dim`).
    pub keys_bytes: usize,
    /// Values, the same size as the keys.
    pub values_bytes: usize,
    /// Decoder: one row of output logits, `vocab_size` f32, `padded(4 V)`; encoder: 0.
    pub logits_bytes: usize,
    /// Normed token chunk for the K/V projection, `chunk x d_model` f32 (pre-norm encoder
    /// only, else 0).
    pub kv_norm_bytes: usize,
    /// [`Kernels::Fast`], encoder: the int8 activations of the K/V projections
    /// ([`kernels::q8_scratch_bytes`] of `d_model` columns and `chunk` tokens, pre-norm, or
    /// `seq_len` tokens, post-norm). Else 0.
    pub kv_fast_bytes: usize,
    /// Encoder with a [`KvType`] other than f32: the f32 K (then V) projection of one chunk
    /// before it is stored, `chunk x kv_dim` f32 (the projections then run a chunk at a time,
    /// so `kv_fast_bytes` is sized for `chunk` tokens). Else 0.
    pub kv_stage_bytes: usize,
    /// Queries of a chunk, later its output projection, `chunk x d_model` f32.
    pub q_bytes: usize,
    /// Normed chunk (pre-norm), later the attention context, `chunk x d_model` f32.
    pub ctx_bytes: usize,
    /// Scratch of one attention call ([`attention::scratch_bytes`]).
    pub attn_scratch_bytes: usize,
    /// [`Kernels::Fast`]: the attention's block buffers ([`attention::fast_scratch_bytes`] for
    /// `seq_len` keys), which also hold the int8 activations of the projections of a chunk
    /// ([`kernels::q8_scratch_bytes`]), whichever is larger. Else 0.
    pub attn_fast_bytes: usize,
    /// A [`KvType`] other than f32: a tile of 16 key rows and 16 value rows of one head
    /// dequantized to f32, `padded(4 * 32 * head_dim)`, and (decoder) the f32 K (then V)
    /// projection of a chunk before it is stored, `padded(4 C kv_dim)`. Else 0.
    pub kv_work_bytes: usize,
    /// Normed token chunk for the feed-forward, `chunk x d_model` f32 (pre-norm only, else 0).
    pub ffn_norm_bytes: usize,
    /// Feed-forward output of a chunk, `chunk x d_model` f32.
    pub ffn_out_bytes: usize,
    /// Scratch of one feed-forward call ([`ffn::scratch_bytes`]).
    pub ffn_scratch_bytes: usize,
    /// Tokens per feed-forward call: `chunk`, or `seq_len` for the encoder's fast path (see
    /// the module docs).
    pub ffn_tokens: usize,
    /// [`Kernels::Fast`]: the feed-forward's working buffers ([`ffn::fast_scratch_bytes`] of
    /// `ffn_tokens` tokens). Else 0.
    pub ffn_fast_bytes: usize,
    /// Sum of the persistent buffers (hidden, keys, values, logits).
    pub persistent_bytes: usize,
    /// Sum of the K/V projection phase buffers.
    pub kv_phase_bytes: usize,
    /// Sum of the attention phase buffers.
    pub attn_phase_bytes: usize,
    /// Sum of the feed-forward phase buffers.
    pub ffn_phase_bytes: usize,
    /// Largest number of arena bytes in use at once: the arena size to provide.
    /// `persistent_bytes + max(kv_phase_bytes, attn_phase_bytes, ffn_phase_bytes)`.
    pub peak_bytes: usize,
    /// For comparison only: bytes of the `n_heads x N x N` f32 score matrix that vanilla
    /// attention materialises per layer (`4 n_heads N^2`).
    pub vanilla_scores_bytes: usize,
}

/// Number of buffers [`Plan::buffers`] lists.
pub const N_BUFFERS: usize = 16;

impl Plan {
    /// Every working buffer with its size, offset and phase, in the order the engine takes
    /// them. The phases start at `persistent_bytes` and overlap each other.
    pub const fn buffers(&self) -> [Buffer; N_BUFFERS] {
        use Phase::*;
        let (keys, values) = if self.decoder {
            ("k_cache", "v_cache")
        } else {
            ("keys", "values")
        };
        let list = [
            ("hidden", self.hidden_bytes, Persistent),
            (keys, self.keys_bytes, Persistent),
            (values, self.values_bytes, Persistent),
            ("logits", self.logits_bytes, Persistent),
            ("kv_norm", self.kv_norm_bytes, KvProjection),
            ("kv_stage", self.kv_stage_bytes, KvProjection),
            ("kv_fast", self.kv_fast_bytes, KvProjection),
            ("q", self.q_bytes, Attention),
            ("ctx", self.ctx_bytes, Attention),
            ("attn_scratch", self.attn_scratch_bytes, Attention),
            ("kv_work", self.kv_work_bytes, Attention),
            ("attn_fast", self.attn_fast_bytes, Attention),
            ("ffn_norm", self.ffn_norm_bytes, FeedForward),
            ("ffn_out", self.ffn_out_bytes, FeedForward),
            ("ffn_scratch", self.ffn_scratch_bytes, FeedForward),
            ("ffn_fast", self.ffn_fast_bytes, FeedForward),
        ];
        let mut out = [Buffer {
            name: "",
            bytes: 0,
            offset: 0,
            phase: Persistent,
        }; N_BUFFERS];
        // Each buffer follows the one before it in its phase; every phase after the
        // persistent buffers starts at `persistent_bytes` (they reuse the same bytes).
        // Saturating: the fields are public, so a hand-made Plan must not overflow here.
        let mut offset = 0;
        let mut i = 0;
        while i < N_BUFFERS {
            let (name, bytes, phase) = list[i];
            if i > 0 && phase as u8 != list[i - 1].2 as u8 {
                offset = self.persistent_bytes;
            }
            out[i] = Buffer {
                name,
                bytes,
                offset,
                phase,
            };
            offset = offset.saturating_add(bytes);
            i += 1;
        }
        out
    }
}

/// `?` for `const fn` (the `Try` trait is not const yet).
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}

const OVERFLOW: Error = Error::InvalidConfig("working buffers exceed the address space");

/// `padded(4 * rows * cols)`: an f32 buffer, checked.
const fn f32_buf(rows: usize, cols: usize) -> Result<usize, Error> {
    match rows.checked_mul(cols) {
        Some(n) => match n.checked_mul(4) {
            Some(b) if b <= usize::MAX - 15 => Ok(padded(b)),
            _ => Err(OVERFLOW),
        },
        None => Err(OVERFLOW),
    }
}

const fn add(a: usize, b: usize) -> Result<usize, Error> {
    match a.checked_add(b) {
        Some(s) => Ok(s),
        None => Err(OVERFLOW),
    }
}

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// The attention parameters the engine uses for a run (effective chunk `min(chunk, seq_len)`).
pub const fn attn_params(model: &ModelConfig, run: &RunConfig) -> AttnParams {
    let chunk = if run.chunk < run.seq_len {
        run.chunk
    } else {
        run.seq_len
    };
    AttnParams {
        dims: AttnDims {
            n_heads: model.n_heads,
            n_kv_heads: model.n_kv_heads,
            head_dim: model.head_dim,
        },
        causal: model.causal,
        k_attn: run.k_attn,
        chunk,
    }
}

/// Bytes of `rows` rows of `kv_dim` keys (or values) stored as `kv`, checked: f32
/// `padded(4 rows kv_dim)`, f16 `padded(2 rows kv_dim)`, int8 `padded(rows kv_dim) +
/// padded(4 rows kv_dim / g)` (the values, then one f32 scale per group of
/// `g = kernels::kv_int8_group(head_dim)` values).
///
/// # Errors
///
/// [`Error::InvalidConfig`] when the count overflows `usize`.
pub const fn cache_bytes(model: &ModelConfig, kv: KvType, rows: usize) -> Result<usize, Error> {
    let n = match rows.checked_mul(model.kv_dim()) {
        Some(n) => n,
        None => return Err(OVERFLOW),
    };
    let values = match n.checked_mul(kv.value_bytes()) {
        Some(b) if b <= usize::MAX - 15 => padded(b),
        _ => return Err(OVERFLOW),
    };
    match kv {
        KvType::Int8 => {
            let per_row = model.n_kv_heads * kernels::kv_int8_scales(model.head_dim);
            add(values, tri!(f32_buf(rows, per_row)))
        }
        _ => Ok(values),
    }
}

/// Whether the feed-forward of a layer runs all `seq_len` tokens in one call (the encoder's
/// fast path, see the module docs): [`Kernels::Fast`], an encoder of post-norm blocks, a dense
/// feed-forward, `kv_dim >= d_model` and f32 keys (its output goes to the `keys` buffer).
pub(crate) const fn ffn_wide(
    model: &ModelConfig,
    run: &RunConfig,
    kernels: Kernels,
    kv: KvType,
) -> bool {
    matches!(kv, KvType::F32)
        && matches!(kernels, Kernels::Fast)
        && !model.causal
        && matches!(model.arch, Arch::Bert)
        && run.k_ff.is_none()
        && model.kv_dim() >= model.d_model
}

/// The plan of a run with [`Kernels::Reference`], checked, so that a config read from a file
/// cannot make the plan wrap around.
///
/// # Errors
///
/// The errors of [`ModelConfig::validate`] and [`RunConfig::validate`];
/// [`Error::InvalidConfig`] when a byte count would overflow `usize`.
pub const fn try_plan(model: &ModelConfig, run: &RunConfig) -> Result<Plan, Error> {
    try_plan_with(model, run, Kernels::Reference)
}

/// The plan of a run with `kernels`, checked (as [`try_plan`]). [`Kernels::Reference`] gives
/// [`try_plan`]'s plan; [`Kernels::Fast`] adds the fast kernels' working buffers.
///
/// # Errors
///
/// As [`try_plan`].
pub const fn try_plan_with(
    model: &ModelConfig,
    run: &RunConfig,
    kernels: Kernels,
) -> Result<Plan, Error> {
    try_plan_kv(model, run, kernels, KvType::F32)
}

/// The plan of a run with `kernels` and keys and values stored as `kv`, checked (as
/// [`try_plan`]). [`KvType::F32`] gives [`try_plan_with`]'s plan.
///
/// # Errors
///
/// As [`try_plan`].
pub const fn try_plan_kv(
    model: &ModelConfig,
    run: &RunConfig,
    kernels: Kernels,
    kv_type: KvType,
) -> Result<Plan, Error> {
    tri!(model.validate());
    tri!(run.validate(model));
    let n = run.seq_len;
    let p = attn_params(model, run);
    let c = p.chunk;
    let d = model.d_model;
    let kv = model.kv_dim();
    // Pre-norm blocks normalise a copy of the residual stream; post-norm blocks read it as is.
    let pre_norm = matches!(model.arch, Arch::Llama);

    // Encoder: the residual stream, and K and V of the current layer for all tokens (computed
    // before any query so that each query chunk can update its own rows of `hidden` in place).
    // Decoder: one chunk of the residual stream (each chunk runs through every layer), the K/V
    // cache of every layer, and one row of logits.
    let decoder = model.causal;
    let chunk_bytes = tri!(f32_buf(c, d));
    let (hidden_bytes, cache_rows, logits_bytes) = if decoder {
        let rows = match n.checked_mul(model.n_layers) {
            Some(r) => r,
            None => return Err(OVERFLOW),
        };
        (chunk_bytes, rows, tri!(f32_buf(1, model.vocab_size)))
    } else {
        (tri!(f32_buf(n, d)), n, 0)
    };
    let keys_bytes = tri!(cache_bytes(model, kv_type, cache_rows));
    let values_bytes = keys_bytes;
    let persistent_bytes = tri!(add(
        tri!(add(tri!(add(hidden_bytes, keys_bytes)), values_bytes)),
        logits_bytes
    ));

    // K/V projection: a post-norm encoder projects `hidden` directly, a pre-norm one needs a
    // normed chunk; the decoder projects from the attention phase's normed chunk.
    let kv_norm_bytes = if pre_norm && !decoder { chunk_bytes } else { 0 };
    // The fast kernels quantize the projections' inputs to int8 (d_model columns each): a
    // chunk at a time, or (post-norm encoder) all tokens at once.
    // Keys and values stored as other than f32 are projected a chunk at a time into an f32
    // staging buffer first.
    let fast = matches!(kernels, Kernels::Fast);
    let staged = !matches!(kv_type, KvType::F32);
    let kv_fast_bytes = if fast && !decoder {
        kernels::q8_scratch_bytes(d, if pre_norm || staged { c } else { n })
    } else {
        0
    };
    let kv_stage_bytes = if staged && !decoder {
        tri!(f32_buf(c, kv))
    } else {
        0
    };
    let kv_phase_bytes = tri!(add(tri!(add(kv_norm_bytes, kv_fast_bytes)), kv_stage_bytes));

    // Attention, per query chunk. `q_dim == d_model` (validated), so the queries' buffer can
    // take the output projection and the normed chunk's buffer can take the context.
    let q_bytes = chunk_bytes;
    let ctx_bytes = chunk_bytes;
    let attn_scratch_bytes = attention::scratch_bytes(&p);
    // One buffer serves the projections (one at a time) and the attention call between them.
    let attn_fast_bytes = if fast {
        max(
            kernels::q8_scratch_bytes(d, c),
            attention::fast_scratch_bytes(&p, n),
        )
    } else {
        0
    };
    // The attention dequantizes a tile of 16 key rows and 16 value rows of one head; the
    // decoder stages a chunk's K and V projections.
    let kv_work_bytes = if staged {
        let tile = tri!(f32_buf(2 * kernels::ATTN_TILE, model.head_dim));
        if decoder {
            tri!(add(tile, tri!(f32_buf(c, kv))))
        } else {
            tile
        }
    } else {
        0
    };
    let attn_phase_bytes = tri!(add(
        tri!(add(
            tri!(add(tri!(add(q_bytes, ctx_bytes)), attn_scratch_bytes)),
            attn_fast_bytes
        )),
        kv_work_bytes
    ));

    // Feed-forward, per token chunk.
    let ffn_norm_bytes = if pre_norm { chunk_bytes } else { 0 };
    let ffn_out_bytes = chunk_bytes;
    let ffn_scratch_bytes = ffn::scratch_bytes(model.d_ff, c, run.k_ff);
    let ffn_tokens = if ffn_wide(model, run, kernels, kv_type) {
        n
    } else {
        c
    };
    let gated = matches!(model.ffn, FfnKind::Gated);
    let ffn_fast_bytes = if fast {
        ffn::fast_scratch_bytes(d, model.d_ff, ffn_tokens, gated)
    } else {
        0
    };
    let ffn_phase_bytes = tri!(add(
        tri!(add(
            tri!(add(ffn_norm_bytes, ffn_out_bytes)),
            ffn_scratch_bytes
        )),
        ffn_fast_bytes
    ));

    let phase_max = max(max(kv_phase_bytes, attn_phase_bytes), ffn_phase_bytes);
    let peak_bytes = tri!(add(persistent_bytes, phase_max));

    // 4 * n_heads * N * N, for comparison; saturates instead of failing since nothing is
    // allocated from it.
    let vanilla_scores_bytes = match n.checked_mul(n) {
        Some(nn) => match nn.checked_mul(model.n_heads) {
            Some(x) => x.saturating_mul(4),
            None => usize::MAX,
        },
        None => usize::MAX,
    };

    Ok(Plan {
        kernels,
        kv: kv_type,
        seq_len: n,
        chunk: c,
        decoder,
        hidden_bytes,
        keys_bytes,
        values_bytes,
        logits_bytes,
        kv_norm_bytes,
        kv_fast_bytes,
        kv_stage_bytes,
        q_bytes,
        ctx_bytes,
        attn_scratch_bytes,
        attn_fast_bytes,
        kv_work_bytes,
        ffn_norm_bytes,
        ffn_out_bytes,
        ffn_scratch_bytes,
        ffn_tokens,
        ffn_fast_bytes,
        persistent_bytes,
        kv_phase_bytes,
        attn_phase_bytes,
        ffn_phase_bytes,
        peak_bytes,
        vanilla_scores_bytes,
    })
}

/// The plan of a run with [`Kernels::Reference`], for `const` items: fails compilation when
/// the configuration is invalid. Use [`try_plan`] for configurations known only at run time.
///
/// # Example
///
/// A small BERT with top-32 attention over 256 tokens:
///
/// ```
/// use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, Plan, PosKind, RunConfig, plan};
///
/// const MODEL: ModelConfig = ModelConfig {
///     arch: Arch::Bert, vocab_size: 30522, d_model: 128, n_layers: 2, n_heads: 2,
///     n_kv_heads: 2, head_dim: 64, d_ff: 512, max_seq: 512, type_vocab_size: 2,
///     norm: Norm::LayerNorm, norm_eps: 1e-12, act: Activation::GeluErf, ffn: FfnKind::Plain,
///     pos: PosKind::Learned, rope_theta: 10000.0, causal: false, tie_embeddings: false,
/// };
/// const RUN: RunConfig = RunConfig { seq_len: 256, chunk: 16, k_attn: Some(32), k_ff: None };
/// const PLAN: Plan = plan(&MODEL, &RUN);
/// // Hidden states, keys and values of 256 tokens, 128 f32 each, for the whole run...
/// assert_eq!(PLAN.persistent_bytes, 3 * 256 * 128 * 4);
/// // ...and the largest phase: 16 queries, their context and the top-32 scratch.
/// assert_eq!(PLAN.attn_phase_bytes, 2 * 16 * 128 * 4 + 16 * 32 * (4 + 2) + 16 * 4);
/// assert_eq!(PLAN.peak_bytes, PLAN.persistent_bytes + PLAN.attn_phase_bytes);
/// // Every buffer, in the order the engine takes them from the arena.
/// let names = PLAN.buffers().map(|b| b.name);
/// assert_eq!(names[..4], ["hidden", "keys", "values", "logits"]);
/// assert!(PLAN.buffers().iter().all(|b| b.offset + b.bytes <= PLAN.peak_bytes));
/// ```
pub const fn plan(model: &ModelConfig, run: &RunConfig) -> Plan {
    plan_with(model, run, Kernels::Reference)
}

/// The plan of a run with `kernels`, for `const` items (as [`plan`]; [`try_plan_with`] at run
/// time).
pub const fn plan_with(model: &ModelConfig, run: &RunConfig, kernels: Kernels) -> Plan {
    match try_plan_with(model, run, kernels) {
        Ok(p) => p,
        Err(_) => panic!("invalid model or run configuration"),
    }
}

/// The plan of a run with `kernels` and keys and values stored as `kv`, for `const` items (as
/// [`plan`]; [`try_plan_kv`] at run time).
///
/// # Example
///
/// SmolLM2-135M's KV cache for 2048 tokens in int8: 30 layers x (192 values + 6 scales of 4
/// bytes, one per 32 values) per token for the keys, as many for the values, 3.56 times
/// smaller than in f32.
///
/// ```
/// use topkit::kernels::Kernels;
/// use topkit::{Activation, Arch, FfnKind, KvType, ModelConfig, Norm, PosKind, RunConfig};
/// use topkit::{plan_kv, plan_with};
///
/// const SMOLLM2: ModelConfig = ModelConfig {
///     arch: Arch::Llama, vocab_size: 49152, d_model: 576, n_layers: 30, n_heads: 9,
///     n_kv_heads: 3, head_dim: 64, d_ff: 1536, max_seq: 8192, type_vocab_size: 0,
///     norm: Norm::RmsNorm, norm_eps: 1e-5, act: Activation::Silu, ffn: FfnKind::Gated,
///     pos: PosKind::Rope, rope_theta: 100000.0, causal: true, tie_embeddings: true,
/// };
/// const RUN: RunConfig = RunConfig::dense(2048, 16);
/// let f32_plan = plan_with(&SMOLLM2, &RUN, Kernels::Fast);
/// let int8 = plan_kv(&SMOLLM2, &RUN, Kernels::Fast, KvType::Int8);
/// assert_eq!(int8.keys_bytes, 2048 * 30 * (192 + 6 * 4));
/// assert!(3.5 * (int8.keys_bytes + int8.values_bytes) as f64
///     <= (f32_plan.keys_bytes + f32_plan.values_bytes) as f64);
/// ```
pub const fn plan_kv(model: &ModelConfig, run: &RunConfig, kernels: Kernels, kv: KvType) -> Plan {
    match try_plan_kv(model, run, kernels, kv) {
        Ok(p) => p,
        Err(_) => panic!("invalid model or run configuration"),
    }
}
