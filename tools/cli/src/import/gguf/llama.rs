//! The llama architecture of a GGUF file: its configuration metadata and the llama.cpp tensor
//! names mapped onto topkit's.

use anyhow::{Result, anyhow, ensure};
use topkit::format::{FileConfig, Pooling};
use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind};

use super::file::{Gguf, Value};
use crate::import::{Mapping, Source, Transform};

/// Longest packed context when `--max-seq` is not given (the KV cache is linear in it).
pub const DEFAULT_MAX_SEQ_CAP: usize = 2048;

/// Reads the configuration, tokenizer and tensor mapping of a llama-architecture GGUF.
///
/// # Errors
/// When the architecture is not llama, a required metadata key or tensor is missing or
/// invalid, `max_seq` is out of range, the configuration is invalid, or the tokenizer
/// metadata is.
pub fn source(g: &Gguf, max_seq: Option<usize>) -> Result<Source> {
    let arch = g
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("metadata general.architecture is missing"))?;
    ensure!(
        arch == "llama",
        "general.architecture {arch:?} is not supported (only \"llama\")"
    );
    let d_model = g.get_usize("llama.embedding_length")?;
    let n_heads = g.get_usize("llama.attention.head_count")?;
    let n_kv_heads = match g.get("llama.attention.head_count_kv") {
        Some(_) => g.get_usize("llama.attention.head_count_kv")?,
        None => n_heads,
    };
    ensure!(
        n_heads > 0 && d_model % n_heads == 0,
        "embedding_length {d_model} is not a multiple of head_count {n_heads}"
    );
    let head_dim = d_model / n_heads;
    if let Some(v) = g.get("llama.rope.dimension_count") {
        let rd = v.as_u64().ok_or_else(|| {
            anyhow!("metadata \"llama.rope.dimension_count\" must be a non-negative integer, found {v:?}")
        })?;
        ensure!(
            rd == head_dim as u64,
            "llama.rope.dimension_count {rd} differs from the head size {head_dim} (partial RoPE is not supported)"
        );
    }
    let ctx = g.get_usize("llama.context_length")?;
    let max_seq = max_seq.unwrap_or(ctx.min(DEFAULT_MAX_SEQ_CAP));
    ensure!(
        (1..=ctx).contains(&max_seq),
        "--max-seq {max_seq} must be in 1..={ctx} (the model's context_length)"
    );
    let emb = g
        .tensor("token_embd.weight")
        .ok_or_else(|| anyhow!("tensor token_embd.weight is missing"))?;
    let vocab_size = match g.get("llama.vocab_size") {
        Some(_) => g.get_usize("llama.vocab_size")?,
        None => usize::try_from(*emb.dims.get(1).unwrap_or(&0))?,
    };
    // A positive finite f32: 0, a negative or an overflowing value would pack and fail (or
    // give NaN) only when the model runs.
    let f = |k: &str, default: f64| -> Result<f32> {
        match g.get(k) {
            None => Ok(default as f32),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite() && *x > 0.0)
                .ok_or_else(|| anyhow!("metadata {k:?} must be a positive number, found {v:?}")),
        }
    };
    let tie = g.tensor("output.weight").is_none();
    let model = ModelConfig {
        arch: Arch::Llama,
        vocab_size,
        d_model,
        n_layers: g.get_usize("llama.block_count")?,
        n_heads,
        n_kv_heads,
        head_dim,
        d_ff: g.get_usize("llama.feed_forward_length")?,
        max_seq,
        type_vocab_size: 0,
        norm: Norm::RmsNorm,
        norm_eps: f("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
        act: Activation::Silu,
        ffn: FfnKind::Gated,
        pos: PosKind::Rope,
        rope_theta: f("llama.rope.freq_base", 10000.0)?,
        causal: true,
        tie_embeddings: tie,
    };
    model
        .validate()
        .map_err(|e| anyhow!("GGUF metadata: {e}"))?;
    crate::import::check_runnable(&model, "metadata llama.block_count")?;

    let mut mappings = vec![Mapping::new(
        "token_embd.weight",
        "tok_emb",
        Transform::None,
    )];
    for i in 0..model.n_layers {
        for (gguf, ours, transform) in [
            ("attn_q", "q", Transform::UnpermuteRows(n_heads)),
            ("attn_k", "k", Transform::UnpermuteRows(n_kv_heads)),
            ("attn_v", "v", Transform::None),
            ("attn_output", "o", Transform::None),
            ("attn_norm", "attn_norm", Transform::None),
            ("ffn_gate", "ffn.gate", Transform::None),
            ("ffn_up", "ffn.up", Transform::None),
            // The engine adds rows of the transposed down projection.
            ("ffn_down", "ffn.down_t", Transform::Transpose),
            ("ffn_norm", "ffn_norm", Transform::None),
        ] {
            mappings.push(Mapping::new(
                format!("blk.{i}.{gguf}.weight"),
                format!("l{i}.{ours}.w"),
                transform,
            ));
        }
    }
    mappings.push(Mapping::new(
        "output_norm.weight",
        "final_norm.w",
        Transform::None,
    ));
    if !tie {
        mappings.push(Mapping::new("output.weight", "lm_head.w", Transform::None));
    }
    for m in &mappings {
        ensure!(
            g.tensor(&m.source).is_some(),
            "tensor {:?} (topkit name {}) is missing from the GGUF file",
            m.source,
            m.name
        );
    }
    let skipped = crate::import::unused(g.tensors.iter().map(|t| t.name.as_str()), &mappings);
    let tokenizer = super::tokenizer::tokenizer(g, vocab_size)?;
    Ok(Source {
        config: FileConfig {
            model,
            pooling: Pooling::None,
            normalize: false,
        },
        tokenizer,
        mappings,
        skipped,
    })
}
