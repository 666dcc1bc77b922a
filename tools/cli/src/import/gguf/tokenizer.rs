//! The `tokenizer.ggml.*` metadata of a GGUF file as topkit's byte-level BPE tables.

use anyhow::{Result, anyhow, bail, ensure};
use topkit::format::{Special, TokenizerKind};

use super::file::{Gguf, Value};
use crate::writer::Tokenizer;

/// The byte-level BPE tokenizer of `tokenizer.ggml.model = "gpt2"` (no tokenizer when the
/// file has none).
///
/// # Errors
/// When the tokenizer model or pre-tokenizer is not supported, the tokens, merges or token
/// types are missing or malformed, or there are more tokens than `vocab_size`.
pub fn tokenizer(g: &Gguf, vocab_size: usize) -> Result<Tokenizer> {
    let Some(model) = g.get("tokenizer.ggml.model") else {
        return Ok(Tokenizer::none());
    };
    let model = model.as_str().unwrap_or("");
    ensure!(
        model == "gpt2",
        "tokenizer.ggml.model {model:?} is not supported (only \"gpt2\", byte-level BPE)"
    );
    let strings = |key: &str| -> Result<Vec<String>> {
        match g.get(key) {
            Some(Value::Array(v)) => v
                .values()
                .map(|x| match x? {
                    Value::Str(s) => Ok(s),
                    _ => Err(anyhow!("{key} holds a non-string")),
                })
                .collect(),
            Some(_) => bail!("{key} is not an array"),
            None => bail!("{key} is missing"),
        }
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    ensure!(
        tokens.len() <= vocab_size,
        "the tokenizer has {} tokens, more than the model's vocab_size {vocab_size}",
        tokens.len()
    );
    let index: std::collections::HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u32))
        .collect();
    let merges = strings("tokenizer.ggml.merges")?
        .iter()
        .enumerate()
        .map(|(r, m)| {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| anyhow!("merge {r} {m:?} is not two tokens separated by a space"))?;
            let id = |s: &str| {
                index
                    .get(s)
                    .copied()
                    .ok_or_else(|| anyhow!("merge {r} {m:?} names {s:?}, which is not a token"))
            };
            let pair = (id(a)?, id(b)?);
            // The core merges by looking the concatenation up: it must be a token.
            ensure!(
                index.contains_key(format!("{a}{b}").as_str()),
                "merge {r} {m:?} makes {:?}, which is not a token",
                format!("{a}{b}")
            );
            Ok(pair)
        })
        .collect::<Result<Vec<_>>>()?;
    let n = tokens.len() as u64;
    let special = |key: &str| -> Option<u32> {
        g.get(key)
            .and_then(Value::as_u64)
            .filter(|&id| id < n)
            .and_then(|id| u32::try_from(id).ok())
    };
    let mut specials = [None; topkit::format::SPECIALS];
    specials[Special::Unk as usize] = special("tokenizer.ggml.unknown_token_id");
    specials[Special::Bos as usize] = special("tokenizer.ggml.bos_token_id");
    specials[Special::Eos as usize] = special("tokenizer.ggml.eos_token_id");
    specials[Special::Pad as usize] = special("tokenizer.ggml.padding_token_id");
    let pre = match g
        .get("tokenizer.ggml.pre")
        .map(|v| v.as_str().unwrap_or("?"))
    {
        None | Some("gpt-2") | Some("gpt2") => topkit::format::BPE_PRE_GPT2,
        Some("smollm") => topkit::format::BPE_PRE_DIGITS_GPT2,
        Some(other) => {
            bail!("tokenizer.ggml.pre {other:?} is not supported (supported: gpt-2, smollm)")
        }
    };
    // Control and user-defined tokens (ggml token types 3 and 4) are matched whole in the
    // text, as the Hugging Face tokenizer does with its added tokens.
    let added = match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(types)) => {
            ensure!(
                types.len() == tokens.len(),
                "tokenizer.ggml.token_type has {} entries for {} tokens",
                types.len(),
                tokens.len()
            );
            let mut added = Vec::new();
            for (i, t) in types.values().enumerate() {
                if matches!(t?, Value::I32(3) | Value::I32(4)) && !tokens[i].is_empty() {
                    added.push(i as u32);
                }
            }
            added
        }
        Some(_) => bail!("tokenizer.ggml.token_type is not an array"),
        None => Vec::new(),
    };
    Ok(Tokenizer {
        kind: TokenizerKind::Bpe,
        lowercase: false,
        strip_accents: false,
        max_word_chars: 0,
        tokens,
        merges,
        specials,
        pre,
        added,
    })
}
