//! `topkit inspect`: what a packed file holds.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Value, json};
use topkit::format::{self, PackedModel, Special, TokenizerKind};
use topkit::kernels::DType;

use crate::size::human;

/// The name `--dtype` and the reports give `d`.
pub fn dtype_name(d: DType) -> &'static str {
    d.name()
}

/// `s` with its control characters (C0, DEL, C1: terminal escape sequences start with them)
/// written as Rust escapes (`\u{1b}`, `\n`), for printing strings that come from a file.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn specials(m: &PackedModel<'_>) -> Vec<(&'static str, u32, String)> {
    let t = m.tokenizer();
    [
        ("unk", Special::Unk),
        ("cls", Special::Cls),
        ("sep", Special::Sep),
        ("pad", Special::Pad),
        ("mask", Special::Mask),
        ("bos", Special::Bos),
        ("eos", Special::Eos),
    ]
    .into_iter()
    .filter_map(|(name, s)| {
        let id = t.special(s)?;
        Some((name, id, t.vocab().token(id).unwrap_or("").to_string()))
    })
    .collect()
}

/// The model configuration as JSON (also used by `budget --json`).
pub fn config_json(m: &PackedModel<'_>) -> Value {
    let c = m.config();
    let f = m.file_config();
    json!({
        "arch": format!("{:?}", c.arch),
        "vocab_size": c.vocab_size,
        "d_model": c.d_model,
        "n_layers": c.n_layers,
        "n_heads": c.n_heads,
        "n_kv_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "d_ff": c.d_ff,
        "max_seq": c.max_seq,
        "type_vocab_size": c.type_vocab_size,
        "norm": format!("{:?}", c.norm),
        "norm_eps": c.norm_eps,
        "act": format!("{:?}", c.act),
        "ffn": format!("{:?}", c.ffn),
        "pos": format!("{:?}", c.pos),
        "rope_theta": c.rope_theta,
        "causal": c.causal,
        "tie_embeddings": c.tie_embeddings,
        "pooling": format!("{:?}", f.pooling),
        "normalize": f.normalize,
    })
}

/// Bytes per dtype over all tensors (data and scales).
pub fn bytes_by_dtype(m: &PackedModel<'_>) -> Vec<(&'static str, usize, usize)> {
    let mut out: Vec<(&'static str, usize, usize)> = Vec::new();
    for t in m.tensors() {
        let name = dtype_name(t.dtype);
        match out.iter_mut().find(|e| e.0 == name) {
            Some(e) => {
                e.1 += 1;
                e.2 += t.bytes();
            }
            None => out.push((name, 1, t.bytes())),
        }
    }
    out
}

/// [`bytes_by_dtype`] as JSON: `{dtype: {"tensors": count, "bytes": bytes}}` (`inspect
/// --json`'s `bytes_by_dtype`, `budget --json`'s `flash.weight_bytes_by_dtype`).
pub fn by_dtype_json(by: &[(&str, usize, usize)]) -> Value {
    by.iter()
        .map(|&(n, c, b)| (n.to_string(), json!({"tensors": c, "bytes": b})))
        .collect::<serde_json::Map<String, Value>>()
        .into()
}

/// ggml's name of a block dtype's type (`"Q4_1"`), `None` for the other dtypes.
pub fn block_type_name(d: DType) -> Option<&'static str> {
    match d {
        DType::Block(ty) => Some(crate::import::gguf::dequant::type_name(ty.ggml_code())),
        _ => None,
    }
}

/// Arguments of `topkit inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// Packed model file.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not check the CRC-32 (report it as not checked).
    #[arg(long)]
    pub no_verify: bool,
}

/// Prints the contents of `args.file`; checks the CRC unless `--no-verify`.
///
/// # Errors
/// When the file cannot be read or parsed (or its CRC is wrong, unless `--no-verify`).
pub fn run(args: &InspectArgs) -> Result<()> {
    let (path, json_out, verify) = (args.file.as_path(), args.json, !args.no_verify);
    let bytes = crate::packed::read_packed(path)?;
    let m = crate::packed::parse_packed(path, bytes.as_slice(), verify)?;
    let crc_status = if verify { "ok" } else { "not checked" };
    let t = m.tokenizer();
    let kind = match t.kind() {
        TokenizerKind::None => "none",
        TokenizerKind::WordPiece => "wordpiece",
        TokenizerKind::Bpe => "bpe",
    };
    if json_out {
        let tensors: Vec<Value> = m
            .tensors()
            .map(|t| json!({"name": t.name, "dtype": dtype_name(t.dtype), "block_type": block_type_name(t.dtype), "shape": t.shape(), "bytes": t.bytes()}))
            .collect();
        let sp: serde_json::Map<String, Value> = specials(&m)
            .into_iter()
            .map(|(n, id, s)| (n.to_string(), json!({"id": id, "token": s})))
            .collect();
        let by = by_dtype_json(&bytes_by_dtype(&m));
        let out = json!({
            "file": path.display().to_string(),
            "format_version": format::VERSION,
            "file_bytes": m.bytes().len(),
            "crc": format!("{:#010x}", m.header().crc),
            "crc_status": crc_status,
            "config": config_json(&m),
            "tokenizer": {
                "kind": kind,
                "tokens": t.vocab().len(),
                "merges": t.n_merges(),
                "lowercase": t.lowercase(),
                "strip_accents": t.strip_accents(),
                "max_word_chars": t.max_word_chars(),
                "bytes": m.header().tokenizer.len,
                "specials": sp,
            },
            "tensors": tensors,
            "bytes_by_dtype": by,
        });
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let c = m.config();
    let f = m.file_config();
    outln!(
        "{}: topkit model, format version {}",
        path.display(),
        format::VERSION
    );
    outln!(
        "  size      {} ({} bytes)",
        human(m.bytes().len()),
        m.bytes().len()
    );
    outln!("  checksum  CRC-32 {:#010x}: {crc_status}", m.header().crc);
    outln!("config");
    outln!(
        "  {:?}: {} layers, d_model {}, {} heads ({} kv heads) of {}, d_ff {}, vocab {}, max_seq {}, {} segments",
        c.arch,
        c.n_layers,
        c.d_model,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim,
        c.d_ff,
        c.vocab_size,
        c.max_seq,
        c.type_vocab_size
    );
    outln!(
        "  {:?} (eps {:e}), {:?}, {:?} FFN, {:?} positions{}, causal {}, tied embeddings {}",
        c.norm,
        c.norm_eps,
        c.act,
        c.ffn,
        c.pos,
        if c.pos == topkit::PosKind::Rope {
            format!(" (theta {})", c.rope_theta)
        } else {
            String::new()
        },
        c.causal,
        c.tie_embeddings
    );
    outln!("  pooling {:?}, normalize {}", f.pooling, f.normalize);
    outln!("tokenizer");
    outln!(
        "  {kind}: {} tokens, {} merges, lowercase {}, strip accents {}, {}",
        t.vocab().len(),
        t.n_merges(),
        t.lowercase(),
        t.strip_accents(),
        human(m.header().tokenizer.len as usize)
    );
    let sp: Vec<String> = specials(&m)
        .iter()
        .map(|(n, id, s)| format!("{n}={}({id})", escape_controls(s)))
        .collect();
    if !sp.is_empty() {
        outln!("  special: {}", sp.join(" "));
    }
    outln!("tensors ({})", m.tensor_count());
    outln!(
        "  {:<22} {:<5} {:<14} {:>11}",
        "name",
        "dtype",
        "shape",
        "bytes"
    );
    for t in m.tensors() {
        outln!(
            "  {:<22} {:<5} {:<14} {:>11}",
            escape_controls(t.name),
            dtype_name(t.dtype),
            format!("{:?}", t.shape()),
            t.bytes()
        );
    }
    let by: Vec<String> = bytes_by_dtype(&m)
        .iter()
        .map(|(n, c, b)| format!("{n}: {c} tensors, {} ({b} bytes)", human(*b)))
        .collect();
    outln!("  total: {}", by.join("; "));
    let overhead = m.bytes().len()
        - m.tensors().map(|t| t.bytes()).sum::<usize>()
        - m.header().tokenizer.len as usize;
    outln!("  header, tables and padding: {}", human(overhead));
    Ok(())
}
