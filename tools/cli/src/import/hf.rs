//! Reading a Hugging Face model directory: `config.json`, `model.safetensors`, the tokenizer
//! files (`vocab.txt` or `tokenizer.json`, `tokenizer_config.json`,
//! `special_tokens_map.json`) and, for sentence-transformers models, `modules.json` with the
//! pooling settings.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail, ensure};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use topkit::format::{FileConfig, Pooling, SPECIALS, Special, TokenizerKind};
use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind};

use super::gguf::dequant::GgmlType;
use super::{Mapping, RawTensor, Source, Transform};
use crate::writer::Tokenizer;

/// The files of a model directory that `topkit pack` may read (besides the pooling module's
/// `config.json` that `modules.json` names).
pub const INPUT_FILES: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
];

/// `model_type` values `topkit pack` converts.
pub const SUPPORTED_MODEL_TYPES: &[&str] = &["bert"];

fn read_json(path: &Path) -> Result<Value> {
    let text = crate::files::read_text(path)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn read_json_opt(path: &Path) -> Result<Option<Value>> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

/// `key` of the JSON object `obj` read from `file`, converted by `conv`: `None` when absent or
/// null, an error naming the file, the key and the expected type (`what`) when `conv` refuses
/// it, never a silent default.
fn field<'v, T>(
    obj: Option<&'v Value>,
    file: &str,
    key: &str,
    what: &str,
    conv: impl Fn(&'v Value) -> Option<T>,
) -> Result<Option<T>> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => conv(v)
            .map(Some)
            .ok_or_else(|| anyhow!("{file}: {key:?} must be {what}, found {v}")),
    }
}

fn get_usize(cfg: &Value, key: &str) -> Result<usize> {
    let v = cfg
        .get(key)
        .ok_or_else(|| anyhow!("config.json has no {key:?}"))?;
    v.as_u64()
        .and_then(|x| usize::try_from(x).ok())
        .ok_or_else(|| anyhow!("config.json: {key:?} must be a non-negative integer, found {v}"))
}

/// Reads `dir` and maps its tensors for a packed file with at most `max_seq` positions
/// (`None`: the model's own maximum).
///
/// # Errors
/// When a JSON file cannot be read or parsed, the model type, activation, position
/// embeddings, pooling or tokenizer is not supported, a configuration value is missing or
/// invalid, `max_seq` is out of range, or a tensor is missing from `st`.
pub fn read_dir(dir: &Path, st: &SafeTensors<'_>, max_seq: Option<usize>) -> Result<Source> {
    let cfg = read_json(&dir.join("config.json"))?;
    let model_type = cfg
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("(none)");
    match model_type {
        "bert" => bert(dir, &cfg, st, max_seq),
        other => bail!(
            "unsupported model_type {other:?} in {}: supported model types are {}",
            dir.join("config.json").display(),
            SUPPORTED_MODEL_TYPES.join(", ")
        ),
    }
}

fn activation(name: &str) -> Result<Activation> {
    Ok(match name {
        "gelu" => Activation::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => bail!(
            "unsupported hidden_act {other:?} (supported: gelu, gelu_new, gelu_pytorch_tanh, relu, silu)"
        ),
    })
}

fn bert(dir: &Path, cfg: &Value, st: &SafeTensors<'_>, max_seq: Option<usize>) -> Result<Source> {
    let config = "config.json";
    if let Some(p) = field(
        Some(cfg),
        config,
        "position_embedding_type",
        "a string",
        Value::as_str,
    )? {
        ensure!(
            p == "absolute",
            "unsupported position_embedding_type {p:?} (only \"absolute\")"
        );
    }
    let d_model = get_usize(cfg, "hidden_size")?;
    let n_heads = get_usize(cfg, "num_attention_heads")?;
    ensure!(
        n_heads > 0 && d_model % n_heads == 0,
        "hidden_size {d_model} is not a multiple of num_attention_heads {n_heads}"
    );
    let max_pos = get_usize(cfg, "max_position_embeddings")?;
    let max_seq = match (max_seq, sentence_max_seq(dir)?) {
        (Some(m), _) => m,
        // sentence-transformers truncates to its own max_seq_length: so does the packed file.
        (None, Some(m)) => {
            ensure!(
                (1..=max_pos).contains(&m),
                "sentence_bert_config.json: max_seq_length {m} must be in 1..={max_pos} (config.json's max_position_embeddings)"
            );
            m
        }
        (None, None) => max_pos,
    };
    ensure!(
        (1..=max_pos).contains(&max_seq),
        "--max-seq {max_seq} must be in 1..={max_pos} (the model's max_position_embeddings)"
    );
    let act = field(Some(cfg), config, "hidden_act", "a string", Value::as_str)?.unwrap_or("gelu");
    let norm_eps = field(
        Some(cfg),
        config,
        "layer_norm_eps",
        "a positive number",
        |v| {
            v.as_f64()
                .map(|x| x as f32)
                .filter(|x| x.is_finite() && *x > 0.0)
        },
    )?
    .unwrap_or(1e-12);
    let model = ModelConfig {
        arch: Arch::Bert,
        vocab_size: get_usize(cfg, "vocab_size")?,
        d_model,
        n_layers: get_usize(cfg, "num_hidden_layers")?,
        n_heads,
        n_kv_heads: n_heads,
        head_dim: d_model / n_heads,
        d_ff: get_usize(cfg, "intermediate_size")?,
        max_seq,
        type_vocab_size: cfg
            .get("type_vocab_size")
            .map_or(Ok(0), |_| get_usize(cfg, "type_vocab_size"))?,
        norm: Norm::LayerNorm,
        norm_eps,
        act: activation(act)?,
        ffn: FfnKind::Plain,
        pos: PosKind::Learned,
        rope_theta: 0.0,
        causal: false,
        tie_embeddings: false,
    };
    model.validate().map_err(|e| anyhow!("config.json: {e}"))?;
    super::check_runnable(&model, "config.json: num_hidden_layers")?;
    let (pooling, normalize) = sentence_transformers(dir)?;
    let tokenizer = wordpiece(dir, model.vocab_size)?;

    // Checkpoints of task models (BertForMaskedLM, ...) prefix the encoder with "bert.".
    let prefix = if st.names().iter().any(|n| n.starts_with("bert.embeddings.")) {
        "bert."
    } else {
        ""
    };
    let mut mappings = Vec::new();
    let mut map = |source: String, name: &str, transform| {
        mappings.push(Mapping::new(source, name, transform))
    };
    let e = format!("{prefix}embeddings");
    map(
        format!("{e}.word_embeddings.weight"),
        "tok_emb",
        Transform::None,
    );
    map(
        format!("{e}.position_embeddings.weight"),
        "pos_emb",
        Transform::FirstRows(max_seq),
    );
    if model.type_vocab_size > 0 {
        map(
            format!("{e}.token_type_embeddings.weight"),
            "seg_emb",
            Transform::None,
        );
    }
    map(
        format!("{e}.LayerNorm.weight"),
        "emb_norm.w",
        Transform::None,
    );
    map(format!("{e}.LayerNorm.bias"), "emb_norm.b", Transform::None);
    for i in 0..model.n_layers {
        let l = format!("{prefix}encoder.layer.{i}");
        for (hf, ours) in [
            ("attention.self.query", "q"),
            ("attention.self.key", "k"),
            ("attention.self.value", "v"),
            ("attention.output.dense", "o"),
            ("attention.output.LayerNorm", "attn_norm"),
            ("intermediate.dense", "ffn.up"),
            ("output.dense", "ffn.down"),
            ("output.LayerNorm", "ffn_norm"),
        ] {
            // The engine adds rows of the transposed down projection ("values" of the FFN memory).
            let (w, t) = if ours == "ffn.down" {
                ("ffn.down_t", Transform::Transpose)
            } else {
                (ours, Transform::None)
            };
            map(format!("{l}.{hf}.weight"), &format!("l{i}.{w}.w"), t);
            map(
                format!("{l}.{hf}.bias"),
                &format!("l{i}.{ours}.b"),
                Transform::None,
            );
        }
    }
    // Older checkpoints name LayerNorm parameters gamma/beta.
    for m in &mut mappings {
        if st.tensor(&m.source).is_err() && m.source.contains("LayerNorm.") {
            let alt = m
                .source
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            if st.tensor(&alt).is_ok() {
                m.source = alt;
            }
        }
    }
    for m in &mappings {
        if st.tensor(&m.source).is_err() {
            bail!(
                "missing tensor {:?} (topkit name {}) in model.safetensors",
                m.source,
                m.name
            );
        }
    }
    let mut skipped = super::unused(st.names(), &mappings);
    skipped.sort();
    Ok(Source {
        config: FileConfig {
            model,
            pooling,
            normalize,
        },
        tokenizer,
        mappings,
        skipped,
    })
}

/// `max_seq_length` of a sentence-transformers model's `sentence_bert_config.json`, if any:
/// the longest input sentence-transformers embeds (longer texts are truncated to it).
fn sentence_max_seq(dir: &Path) -> Result<Option<usize>> {
    let cfg = read_json_opt(&dir.join("sentence_bert_config.json"))?;
    field(
        cfg.as_ref(),
        "sentence_bert_config.json",
        "max_seq_length",
        "a non-negative integer",
        |v| v.as_u64().and_then(|x| usize::try_from(x).ok()),
    )
}

/// Pooling and normalisation of a sentence-transformers model (`modules.json`).
fn sentence_transformers(dir: &Path) -> Result<(Pooling, bool)> {
    let Some(modules) = read_json_opt(&dir.join("modules.json"))? else {
        return Ok((Pooling::None, false));
    };
    let modules = modules
        .as_array()
        .ok_or_else(|| anyhow!("modules.json: must be an array of modules, found {modules}"))?;
    let mut types = Vec::with_capacity(modules.len());
    for m in modules {
        types
            .push(field(Some(m), "modules.json", "type", "a string", Value::as_str)?.unwrap_or(""));
    }
    let normalize = types.iter().any(|t| t.ends_with(".Normalize"));
    let mut pooling = Pooling::None;
    if let Some(i) = types.iter().position(|t| t.ends_with(".Pooling")) {
        let path = field(
            Some(&modules[i]),
            "modules.json",
            "path",
            "a string",
            Value::as_str,
        )?
        .unwrap_or("1_Pooling");
        let pc = read_json(&dir.join(path).join("config.json"))?;
        let file = format!("{path}/config.json");
        let flag = |k: &str| -> Result<bool> {
            Ok(field(Some(&pc), &file, k, "true or false", Value::as_bool)?.unwrap_or(false))
        };
        pooling = if flag("pooling_mode_mean_tokens")? {
            Pooling::Mean
        } else if flag("pooling_mode_cls_token")? {
            Pooling::Cls
        } else {
            bail!(
                "{}: only mean and CLS pooling are supported",
                dir.join(path).join("config.json").display()
            );
        };
    }
    Ok((pooling, normalize))
}

/// The WordPiece vocabulary and settings of a BERT tokenizer.
fn wordpiece(dir: &Path, vocab_size: usize) -> Result<Tokenizer> {
    let tok_json = read_json_opt(&dir.join("tokenizer.json"))?;
    let tok_cfg = read_json_opt(&dir.join("tokenizer_config.json"))?;
    let vocab_txt = dir.join("vocab.txt");
    let tokens: Vec<String> = if vocab_txt.exists() {
        let text = crate::files::read_text(&vocab_txt)?;
        text.lines().map(str::to_owned).collect()
    } else if let Some(vocab) = tok_json
        .as_ref()
        .and_then(|t| t.pointer("/model/vocab"))
        .and_then(Value::as_object)
    {
        let mut tokens = vec![None; vocab.len()];
        for (tok, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|&i| i < tokens.len());
            let id =
                id.ok_or_else(|| anyhow!("tokenizer.json: token {tok:?} has an id out of range"))?;
            tokens[id] = Some(tok.clone());
        }
        tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.ok_or_else(|| anyhow!("tokenizer.json: no token with id {i}")))
            .collect::<Result<_>>()?
    } else {
        bail!(
            "{} has no vocab.txt and no tokenizer.json with a WordPiece vocabulary",
            dir.display()
        );
    };
    ensure!(
        tokens.len() <= vocab_size,
        "the vocabulary has {} tokens, more than the model's vocab_size {vocab_size}",
        tokens.len()
    );
    let normalizer = tok_json.as_ref().and_then(|t| t.get("normalizer"));
    let (tj, tc) = ("tokenizer.json normalizer", "tokenizer_config.json");
    let bool_of = |obj: Option<&Value>, file: &str, key: &str| {
        field(obj, file, key, "true or false", Value::as_bool)
    };
    let lowercase = match bool_of(normalizer, tj, "lowercase")? {
        Some(b) => b,
        None => bool_of(tok_cfg.as_ref(), tc, "do_lower_case")?.unwrap_or(true),
    };
    // BERT strips accents when lower-casing unless told otherwise (`strip_accents: null`).
    // A key in the normalizer, even null, decides over tokenizer_config.json.
    let strip_accents = match normalizer.and_then(|n| n.get("strip_accents")) {
        Some(_) => bool_of(normalizer, tj, "strip_accents")?,
        None => bool_of(tok_cfg.as_ref(), tc, "strip_accents")?,
    }
    .unwrap_or(lowercase);
    let max_word_chars = field(
        tok_json.as_ref().and_then(|t| t.get("model")),
        "tokenizer.json model",
        "max_input_chars_per_word",
        "an integer in 0..=4294967295",
        |v| v.as_u64().and_then(|x| u32::try_from(x).ok()),
    )?
    .unwrap_or(100);
    let special_map = read_json_opt(&dir.join("special_tokens_map.json"))?;
    let special_name = |key: &str, default: &str| -> String {
        let v = special_map.as_ref().and_then(|m| m.get(key));
        // Either a plain string or {"content": "..."}.
        v.and_then(|v| {
            v.as_str()
                .or_else(|| v.get("content").and_then(Value::as_str))
        })
        .unwrap_or(default)
        .to_string()
    };
    let id_of = |s: &str| tokens.iter().position(|t| t == s).map(|i| i as u32);
    let mut specials = [None; SPECIALS];
    specials[Special::Unk as usize] = id_of(&special_name("unk_token", "[UNK]"));
    specials[Special::Cls as usize] = id_of(&special_name("cls_token", "[CLS]"));
    specials[Special::Sep as usize] = id_of(&special_name("sep_token", "[SEP]"));
    specials[Special::Pad as usize] = id_of(&special_name("pad_token", "[PAD]"));
    specials[Special::Mask as usize] = id_of(&special_name("mask_token", "[MASK]"));
    for (slot, name) in [
        (Special::Unk, "unk"),
        (Special::Cls, "cls"),
        (Special::Sep, "sep"),
    ] {
        ensure!(
            specials[slot as usize].is_some(),
            "the vocabulary has no {name} token"
        );
    }
    Ok(Tokenizer {
        kind: TokenizerKind::WordPiece,
        lowercase,
        strip_accents,
        max_word_chars,
        tokens,
        merges: Vec::new(),
        specials,
        pre: 0,
        added: Vec::new(),
    })
}

/// The stored bytes of tensor `name` (f32, f16 or bf16).
///
/// # Errors
/// When `st` has no tensor `name`, or its dtype is not F32, F16 or BF16.
pub fn raw<'a>(st: &SafeTensors<'a>, name: &'a str) -> Result<RawTensor<'a>> {
    let t = st
        .tensor(name)
        .map_err(|e| anyhow!("tensor {name:?}: {e}"))?;
    let ty = match t.dtype() {
        Dtype::F32 => GgmlType::F32,
        Dtype::F16 => GgmlType::F16,
        Dtype::BF16 => GgmlType::Bf16,
        other => bail!(
            "tensor {name:?} has dtype {other:?}; only F32, F16 and BF16 weights are supported"
        ),
    };
    Ok(RawTensor {
        source: name,
        shape: t.shape().to_vec(),
        ty,
        data: t.data(),
    })
}

/// Loads a source tensor as f32 (from f32, f16 or bf16) and applies its transform; returns
/// the shape and the row-major values.
///
/// # Errors
/// As [`raw`] and [`crate::import::load`].
pub fn load(st: &SafeTensors<'_>, m: &Mapping) -> Result<(Vec<usize>, Vec<f32>)> {
    super::load(raw(st, &m.source)?, m.transform)
}
