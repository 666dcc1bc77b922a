//! Helpers shared by the fuzz targets: aligned copies of the input, a small text vocabulary,
//! and the tiny Hugging Face BERT that the seed corpora are made from.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod gguf;

use topkit::format::{FileConfig, PackedModel};
use topkit::tokenizer::{Vocab, cmp_concat};
use topkit_cli::quant::{self, StoreDType};
use topkit_cli::writer::{self, AlignedBytes, Tensor, Tokenizer};

/// The model cache of `cargo xtask fetch-model` (`TOPKIT_CACHE`, else
/// `$XDG_CACHE_HOME/topkit`, else `~/.cache/topkit`), as the xtask finds it.
pub fn cache_dir() -> PathBuf {
    let var = |k| std::env::var_os(k).filter(|d| !d.is_empty());
    if let Some(d) = var("TOPKIT_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("topkit");
    }
    PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache/topkit")
}

/// The stored dtype of matrices picked by an input byte (f32, f16, int8).
pub fn store_dtype(byte: Option<u8>) -> StoreDType {
    match byte.map(|b| b % 3) {
        Some(0) => StoreDType::F32,
        Some(1) => StoreDType::F16,
        _ => StoreDType::Int8,
    }
}

/// One tensor converted as `topkit pack` converts it: matrices stored as `dtype`, vectors
/// (biases, norms) as f32.
pub fn convert(
    name: &str,
    shape: Vec<usize>,
    values: Vec<f32>,
    dtype: StoreDType,
) -> anyhow::Result<Tensor> {
    let cols = *shape.last().unwrap_or(&1);
    let dtype = if shape.len() >= 2 {
        dtype
    } else {
        StoreDType::F32
    };
    let (data, _err) = quant::convert(name, values, cols, dtype)?;
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        data,
    })
}

/// Writes a packed file and parses it back with its CRC (the packer's self-check: weights
/// that do not match the configuration are an error, not a panic).
pub fn write_checked(
    config: &FileConfig,
    tokenizer: &Tokenizer,
    tensors: &[Tensor],
) -> anyhow::Result<AlignedBytes> {
    let aligned = AlignedBytes::new(writer::write_file(config, tokenizer, tensors)?);
    PackedModel::parse(aligned.as_slice())
        .map_err(|e| anyhow::anyhow!("the weights do not match the configuration: {e}"))?;
    Ok(aligned)
}

/// `bytes` copied into 16-byte aligned memory (the packed format requires it; libFuzzer's
/// buffer has no such promise). View it with [`aligned_view`].
pub fn aligned(bytes: &[u8]) -> Vec<u128> {
    let mut v = vec![0u128; bytes.len().div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

/// The first `len` bytes of an [`aligned`] buffer.
pub fn aligned_view(v: &[u128], len: usize) -> &[u8] {
    &bytemuck::cast_slice::<u128, u8>(v)[..len]
}

/// Tokens in id order and the ids sorted by string (a `vocab.txt` in memory).
pub struct TextVocab {
    tokens: Vec<String>,
    sorted: Vec<u32>,
}

impl TextVocab {
    /// One token per line.
    pub fn parse(text: &str) -> Self {
        let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut sorted: Vec<u32> = (0..tokens.len() as u32).collect();
        sorted.sort_by(|&a, &b| tokens[a as usize].cmp(&tokens[b as usize]));
        TextVocab { tokens, sorted }
    }
}

impl Vocab for TextVocab {
    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    fn find(&self, prefix: &str, piece: &str) -> Option<u32> {
        self.sorted
            .binary_search_by(|&id| cmp_concat(prefix, piece, &self.tokens[id as usize]).reverse())
            .ok()
            .map(|i| self.sorted[i])
    }
}

/// Shape of the tiny BERT.
pub const VOCAB: usize = 40;
/// Hidden width.
pub const D: usize = 8;
/// Blocks.
pub const LAYERS: usize = 2;
/// Attention heads.
pub const HEADS: usize = 2;
/// Feed-forward width.
pub const FF: usize = 16;
/// Positions.
pub const MAX_POS: usize = 16;

/// The tiny BERT's `vocab.txt` lines: BERT's specials, words, `##` pieces, one multi-byte token.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = [
        "[PAD]",
        "[unused0]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "é",
        "the",
    ]
    .iter()
    .map(|t| t.to_string())
    .collect();
    let mut i = 0;
    while v.len() < VOCAB {
        let c = (b'a' + (i % 26) as u8) as char;
        v.push(if i < 26 {
            c.to_string()
        } else {
            format!("##{c}")
        });
        i += 1;
    }
    v
}

/// The tiny BERT's `config.json`.
pub fn config_json() -> String {
    format!(
        r#"{{"architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
  "hidden_size": {D}, "intermediate_size": {FF}, "layer_norm_eps": 1e-12,
  "max_position_embeddings": {MAX_POS}, "num_attention_heads": {HEADS},
  "num_hidden_layers": {LAYERS}, "position_embedding_type": "absolute",
  "type_vocab_size": 2, "vocab_size": {VOCAB}}}"#
    )
}

/// The tiny BERT's `model.safetensors` (deterministic values in [-1, 1), an LCG).
pub fn safetensors_bytes() -> Vec<u8> {
    let mut state = 7u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut t: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        let b = (0..n).flat_map(|_| next().to_le_bytes()).collect();
        t.insert(name, (shape, b));
    };
    add("embeddings.word_embeddings.weight".into(), vec![VOCAB, D]);
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POS, D],
    );
    add("embeddings.token_type_embeddings.weight".into(), vec![2, D]);
    add("embeddings.LayerNorm.weight".into(), vec![D]);
    add("embeddings.LayerNorm.bias".into(), vec![D]);
    for i in 0..LAYERS {
        let l = format!("encoder.layer.{i}");
        for (m, rows, cols) in [
            ("attention.self.query", D, D),
            ("attention.self.key", D, D),
            ("attention.self.value", D, D),
            ("attention.output.dense", D, D),
            ("intermediate.dense", FF, D),
            ("output.dense", D, FF),
        ] {
            add(format!("{l}.{m}.weight"), vec![rows, cols]);
            add(format!("{l}.{m}.bias"), vec![rows]);
        }
        for m in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{l}.{m}.weight"), vec![D]);
            add(format!("{l}.{m}.bias"), vec![D]);
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = t
        .iter()
        .map(|(k, (shape, b))| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .expect("consistent tiny tensor");
            (k.clone(), v)
        })
        .collect();
    safetensors::serialize(views, None).expect("tiny safetensors")
}

/// Writes the tiny BERT's directory (config, vocab, tokenizer config, safetensors) to `dir`.
pub fn write_hf_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("config.json"), config_json())?;
    std::fs::write(dir.join("vocab.txt"), vocab().join("\n") + "\n")?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"do_lower_case": true}"#,
    )?;
    // sentence-transformers modules: mean pooling and normalisation (an encoder needs pooling).
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
            {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
            {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
    )?;
    std::fs::create_dir_all(dir.join("1_Pooling"))?;
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#,
    )?;
    std::fs::write(dir.join("model.safetensors"), safetensors_bytes())
}
