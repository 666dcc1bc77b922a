//! Model and run configuration: plain `Copy` structs, usable in `const` items.

use crate::Error;

/// Model family: decides the block layout (post-norm encoder or pre-norm decoder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Arch {
    /// BERT-style encoder: learned positions, post-LayerNorm blocks, bidirectional attention.
    Bert,
    /// Llama-style decoder: RoPE, pre-RMSNorm blocks, causal attention, gated FFN.
    Llama,
}

/// Normalisation layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Norm {
    /// LayerNorm with gain and bias.
    LayerNorm,
    /// RMSNorm with gain only.
    RmsNorm,
}

/// Activation of the feed-forward hidden layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// GELU, exact erf form (BERT).
    GeluErf,
    /// GELU, tanh approximation.
    GeluTanh,
    /// SiLU (swish), `x * sigmoid(x)`.
    Silu,
}

/// Feed-forward block kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FfnKind {
    /// `down(act(up(x)))`.
    Plain,
    /// `down(act(gate(x)) * up(x))` (SwiGLU with `Activation::Silu`).
    Gated,
}

/// Position encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PosKind {
    /// Learned absolute position embeddings (`max_seq` rows).
    Learned,
    /// Rotary embeddings with base `ModelConfig::rope_theta`.
    Rope,
}

/// Shape and kind of a model. All sizes in elements, not bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ModelConfig {
    /// Model family.
    pub arch: Arch,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads; divides `n_heads` (grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the feed-forward hidden layer.
    pub d_ff: usize,
    /// Longest sequence the model accepts (positions).
    pub max_seq: usize,
    /// Number of segment (token type) embeddings; 0 when the model has none.
    pub type_vocab_size: usize,
    /// Normalisation kind.
    pub norm: Norm,
    /// Epsilon of the normalisation layers.
    pub norm_eps: f32,
    /// Feed-forward activation.
    pub act: Activation,
    /// Feed-forward kind.
    pub ffn: FfnKind,
    /// Position encoding.
    pub pos: PosKind,
    /// RoPE base (ignored for learned positions).
    pub rope_theta: f32,
    /// Causal (decoder) attention.
    pub causal: bool,
    /// Output head shares the token embedding matrix.
    pub tie_embeddings: bool,
}

/// How one inference runs: sequence length, query chunk and the top-k settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RunConfig {
    /// Largest number of tokens the run processes (buffers are sized for it).
    pub seq_len: usize,
    /// Queries processed together (C); also the token chunk of the feed-forward pass.
    pub chunk: usize,
    /// Keys kept per query; `None` is dense attention.
    pub k_attn: Option<usize>,
    /// Hidden units kept per token in the feed-forward layers; `None` is dense.
    pub k_ff: Option<usize>,
}

/// Storage type of the attention keys and values: the decoder's KV cache and the encoder's
/// keys and values of the current layer (a run option, see [`crate::plan_kv`]).
///
/// Every type stores rows of `head_dim` values, one per position and KV head, in the same
/// order as the f32 rows (`position * kv_dim + kv_head * head_dim`). The attention reads them
/// as stored, a tile of 16 rows at a time dequantized to f32 on the fly
/// ([`crate::kernels::kv_rows_to_f32`]), never as a dequantized copy of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KvType {
    /// f32 values (4 bytes each): the exact results, the default.
    #[default]
    F32,
    /// IEEE half values (2 bytes each), rounded to nearest even.
    F16,
    /// int8 values with one f32 scale per group of 32 values of a head row (per head row when
    /// 32 does not divide `head_dim`, [`crate::kernels::kv_int8_group`]): `scale = max|x| /
    /// 127` over the group, `q = round(x / scale)` (half away from zero), `x ~ scale * q`.
    /// Heads of 64: 72 bytes per head row, 3.56 times less than f32.
    Int8,
}

impl KvType {
    /// The name the CLI's `--kv` takes: `f32`, `f16`, `int8`.
    pub const fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Int8 => "int8",
        }
    }

    /// Bytes of one stored value (the scales of [`KvType::Int8`] not counted).
    pub const fn value_bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 => 2,
            KvType::Int8 => 1,
        }
    }
}

/// Largest value accepted for any dimension; keeps every byte count far from overflow on
/// 32-bit targets and makes key indices fit in `u16` slots.
pub const MAX_DIM: usize = 1 << 16;

impl ModelConfig {
    /// Width of the key (and value) projection: `n_kv_heads * head_dim`.
    pub const fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Width of the query projection: `n_heads * head_dim`.
    pub const fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Checks every field; `Ok` means all the products the plan computes fit in `usize`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the first rule broken: a dimension of 0 or above
    /// [`MAX_DIM`], `n_kv_heads` not dividing `n_heads`, `n_heads * head_dim != d_model`, an
    /// odd `head_dim` with RoPE, `norm_eps` outside `(0, 1)`.
    pub const fn validate(&self) -> Result<(), Error> {
        let dims = [
            self.vocab_size,
            self.d_model,
            self.n_layers,
            self.n_heads,
            self.n_kv_heads,
            self.head_dim,
            self.d_ff,
            self.max_seq,
        ];
        let mut i = 0;
        while i < dims.len() {
            if dims[i] == 0 {
                return Err(Error::InvalidConfig("model dimensions must be at least 1"));
            }
            if dims[i] > MAX_DIM {
                return Err(Error::InvalidConfig("model dimension above 65536"));
            }
            i += 1;
        }
        if self.type_vocab_size > MAX_DIM {
            return Err(Error::InvalidConfig("type_vocab_size above 65536"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(Error::InvalidConfig("n_kv_heads must divide n_heads"));
        }
        if self.q_dim() != self.d_model {
            return Err(Error::InvalidConfig(
                "n_heads * head_dim must equal d_model",
            ));
        }
        if matches!(self.pos, PosKind::Rope) && !self.head_dim.is_multiple_of(2) {
            return Err(Error::InvalidConfig("RoPE needs an even head_dim"));
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return Err(Error::InvalidConfig("norm_eps must be in (0, 1)"));
        }
        Ok(())
    }
}

impl RunConfig {
    /// Dense attention and dense feed-forward.
    pub const fn dense(seq_len: usize, chunk: usize) -> Self {
        RunConfig {
            seq_len,
            chunk,
            k_attn: None,
            k_ff: None,
        }
    }

    /// Checks the run against the model: lengths, chunk and k values.
    ///
    /// # Errors
    ///
    /// [`Error::SeqTooLong`] when `seq_len > model.max_seq`; [`Error::InvalidConfig`] for a
    /// `seq_len` of 0, a `chunk` or `k_attn` outside `1..=MAX_DIM`, a `k_ff` outside
    /// `1..=d_ff`.
    pub const fn validate(&self, model: &ModelConfig) -> Result<(), Error> {
        if self.seq_len == 0 {
            return Err(Error::InvalidConfig("seq_len must be at least 1"));
        }
        if self.seq_len > model.max_seq {
            return Err(Error::SeqTooLong {
                len: self.seq_len,
                max: model.max_seq,
            });
        }
        if self.chunk == 0 || self.chunk > MAX_DIM {
            return Err(Error::InvalidConfig("chunk must be in 1..=65536"));
        }
        if let Some(k) = self.k_attn
            && (k == 0 || k > MAX_DIM)
        {
            return Err(Error::InvalidConfig("k_attn must be in 1..=65536"));
        }
        if let Some(k) = self.k_ff
            && (k == 0 || k > model.d_ff)
        {
            return Err(Error::InvalidConfig("k_ff must be in 1..=d_ff"));
        }
        Ok(())
    }
}
