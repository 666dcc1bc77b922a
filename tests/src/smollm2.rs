//! The packed SmolLM2-135M-Instruct (f32) that the CI `models` job makes in the cache, and the
//! golden file of the reference (tools/reference/smollm2_golden.py: Hugging Face transformers
//! on the same Q4_1 GGUF, float32).

use std::path::PathBuf;

use crate::cache::{cache_dir, read_aligned};
use crate::golden::{f64s, ids, list, parse, string};
use serde_json::Value;

/// Where the packed f32 model is: `$TOPKIT_SMOLLM2` if set, else
/// `<cache>/models/SmolLM2-135M-Instruct-f32.tkm`.
pub fn packed_path() -> PathBuf {
    match std::env::var_os("TOPKIT_SMOLLM2") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("models/SmolLM2-135M-Instruct-f32.tkm"),
    }
}

/// The bytes of the packed model, in 16-byte aligned memory. Panics with instructions when the
/// file is missing: tests on the real model never skip.
pub fn packed() -> Vec<u128> {
    read_aligned(&packed_path(), "cargo xtask models")
}

/// Where the model packed with its ggml blocks kept (`topkit pack` of the Q4_1 GGUF without
/// `--dtype`) is: `$TOPKIT_SMOLLM2_BLOCKS` if set, else
/// `<cache>/models/SmolLM2-135M-Instruct-blocks.tkm`.
pub fn blocks_path() -> PathBuf {
    match std::env::var_os("TOPKIT_SMOLLM2_BLOCKS") {
        Some(p) => PathBuf::from(p),
        None => cache_dir().join("models/SmolLM2-135M-Instruct-blocks.tkm"),
    }
}

/// The bytes of the blocks-kept model, in 16-byte aligned memory (panics as [`packed`]).
pub fn packed_blocks() -> Vec<u128> {
    read_aligned(&blocks_path(), "cargo xtask models")
}

/// The Q4_1 GGUF both packed files are made from: `<cache>/models/SmolLM2-135M-Instruct/
/// SmolLM2-135M-Instruct.Q4_1.gguf`.
pub fn gguf_path() -> PathBuf {
    cache_dir().join("models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The reference's logits at one greedy step.
pub struct Step {
    /// Greedy step: 0 is the logits after the whole prompt.
    pub step: usize,
    /// The 64 largest logits, `(id, logit)`, largest first.
    pub top: Vec<(u32, f64)>,
    /// `log(sum(exp(logits)))` over the whole vocabulary.
    pub logsumexp: f64,
}

/// One golden prompt.
pub struct Prompt {
    /// Short name.
    pub name: String,
    /// Prompt ids (chat prompts already in the chat template).
    pub ids: Vec<u32>,
    /// The reference's greedy continuation.
    pub greedy: Vec<u32>,
    /// Top-1 minus top-2 logit at every greedy step.
    pub margins: Vec<f64>,
    /// Logits at a few steps.
    pub steps: Vec<Step>,
}

/// The golden prompts, and the ids of the long (500+ token) text.
pub fn golden() -> (Vec<Prompt>, Vec<u32>) {
    let v = parse(include_str!("../data/smollm2_golden.json"));
    let step = |s: &Value| Step {
        step: s["step"].as_u64().unwrap() as usize,
        top: list(&s["top"], |t| {
            (t[0].as_u64().unwrap() as u32, t[1].as_f64().unwrap())
        }),
        logsumexp: s["logsumexp"].as_f64().unwrap(),
    };
    let prompts = list(&v["prompts"], |p| Prompt {
        name: string(&p["name"]),
        ids: ids(&p["ids"]),
        greedy: ids(&p["greedy"]["ids"]),
        margins: f64s(&p["margins"]),
        steps: list(&p["steps"], step),
    });
    (prompts, ids(&v["long"]["ids"]))
}
