//! The packed all-MiniLM-L6-v2 files that `cargo xtask fetch-model` makes in the cache, and
//! the golden embeddings of the reference (tools/reference/minilm_golden.py).

use crate::cache::{cache_dir, read_aligned};
use crate::golden::{f64s, ids, list, parse, string};

/// The bytes of `models/all-MiniLM-L6-v2-<dtype>.tkm`, in 16-byte aligned memory.
/// Panics with instructions when the file is missing: tests on the real model never skip.
pub fn packed(dtype: &str) -> Vec<u128> {
    let path = cache_dir().join(format!("models/all-MiniLM-L6-v2-{dtype}.tkm"));
    read_aligned(&path, "cargo xtask fetch-model")
}

/// One golden case: text, the reference's token ids, its embedding.
pub struct Case {
    /// Input text.
    pub text: String,
    /// Token ids the reference fed the model.
    pub ids: Vec<u32>,
    /// The reference embedding (mean-pooled, L2-normalised).
    pub embedding: Vec<f32>,
}

/// The golden cases and the max_seq_length they were made with.
pub fn golden() -> (usize, Vec<Case>) {
    let v = parse(include_str!("../data/minilm_golden.json"));
    let cases = list(&v["cases"], |c| Case {
        text: string(&c["text"]),
        ids: ids(&c["ids"]),
        embedding: f64s(&c["embedding"])
            .into_iter()
            .map(|x| x as f32)
            .collect(),
    });
    (v["max_seq_length"].as_u64().unwrap() as usize, cases)
}

/// Cosine similarity, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
