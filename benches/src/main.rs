//! `topkit-bench`: host benchmarks of topkit side by side with candle, and the memory scaling
//! table. Run through `cargo xtask bench` (release build, one thread).
//!
//! - `topkit-bench speed [--iters N] [--seqs 32,128,256] [--json]`: MiniLM embedding of one
//!   text, tokenization included, for topkit dense f32, dense int8, top-k int8 and candle f32.
//! - `topkit-bench attention [--seqs 128,256] [--iters N] [--k 32]`: one MiniLM-shaped
//!   attention layer, dense and top-k, reference and fast kernels.
//! - `topkit-bench memory [--out DIR] [--max-seq N]`: plan peak and measured arena high-water
//!   for seq 128..8192 on a seeded random BERT-shaped model, with an SVG plot.

#![forbid(unsafe_code)]

mod attention;
mod memory;
mod speed;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("speed") => speed::run(&args[1..]),
        Some("memory") => memory::run(&args[1..]),
        Some("attention") => attention::run(&args[1..]),
        _ => bail!("usage: topkit-bench speed|memory|attention [options] (see the module docs)"),
    }
}

/// Value of `--name VALUE` in `args`, if present.
pub fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// Median of `v` (sorted in place), `NaN` when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
