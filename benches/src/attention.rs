//! `topkit-bench attention [--seqs 128,256] [--iters N] [--k 32] [--kernels both|fast]`: one
//! attention layer of all-MiniLM-L6-v2's shape (12 heads of 32, chunk 16, no mask) on seeded
//! random queries, keys and values in [-1, 1], for dense and top-k with the reference and the
//! fast kernels (`--kernels fast`: the fast ones only, e.g. for a profiler).
//! The variants run round-robin, one layer each per round; the table gives the median
//! per layer and times 6 (MiniLM's layers), i.e. the attention part of one embedding, and the
//! fastest layer (the least disturbed by other processes on a shared machine).

use std::time::Instant;

use anyhow::Result;
use topkit::attention::{
    AttnDims, AttnParams, AttnScratch, Keys, attention_with, fast_scratch_bytes, scratch_bytes,
};
use topkit::kernels::Kernels;
use topkit::{Arena, ArenaStorage};

use crate::{median, opt};

/// A small xorshift generator: the same inputs on every run.
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 * 2.0 - 1.0
        })
        .collect()
}

pub fn run(args: &[String]) -> Result<()> {
    let seqs: Vec<usize> = opt(args, "--seqs")
        .unwrap_or("128,256")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let iters: usize = opt(args, "--iters").unwrap_or("30").parse()?;
    let k: usize = opt(args, "--k").unwrap_or("32").parse()?;
    let fast_only = match opt(args, "--kernels").unwrap_or("both") {
        "both" => false,
        "fast" => true,
        other => anyhow::bail!("--kernels {other}: expected both or fast"),
    };
    let dims = AttnDims {
        n_heads: 12,
        n_kv_heads: 12,
        head_dim: 32,
    };
    let d = 384;
    println!("| seq | attention | kernels | median ms per layer | x 6 layers | min ms per layer |");
    println!("|---:|---|---|---:|---:|---:|");
    for &n in &seqs {
        let (q, kk, v) = (values(n * d, 1), values(n * d, 2), values(n * d, 3));
        let variants: &[(Option<usize>, Kernels)] = if fast_only {
            &[(None, Kernels::Fast), (Some(k), Kernels::Fast)]
        } else {
            &[
                (None, Kernels::Reference),
                (Some(k), Kernels::Reference),
                (None, Kernels::Fast),
                (Some(k), Kernels::Fast),
            ]
        };
        let mut times = vec![Vec::new(); variants.len()];
        let mut out = vec![0f32; 16 * d];
        let keys = Keys {
            k: &kk,
            v: &v,
            n,
            valid: None,
        };
        for round in 0..iters + 2 {
            for (vi, &(k_attn, kern)) in variants.iter().enumerate() {
                let p = AttnParams {
                    dims,
                    causal: false,
                    k_attn,
                    chunk: 16,
                };
                let mut storage = Box::new(ArenaStorage::<65536>::new());
                let mut arena: Arena<'_> = storage.arena();
                assert!(scratch_bytes(&p) + fast_scratch_bytes(&p, n) <= 65536);
                let mut s = match kern {
                    Kernels::Reference => AttnScratch::new(&mut arena, &p)?,
                    Kernels::Fast => AttnScratch::new_fast(&mut arena, &p, n)?,
                };
                let t = Instant::now();
                // One layer: the queries chunk by chunk, as the encoder calls it.
                for start in (0..n).step_by(16) {
                    let m = 16.min(n - start);
                    attention_with(
                        kern,
                        &p,
                        &q[start * d..(start + m) * d],
                        start,
                        &keys,
                        &mut s,
                        &mut out[..m * d],
                    )?;
                }
                let ms = t.elapsed().as_secs_f64() * 1e3;
                if round >= 2 {
                    times[vi].push(ms);
                }
            }
        }
        for (vi, &(k_attn, kern)) in variants.iter().enumerate() {
            let m = median(&mut times[vi]);
            let min = times[vi].iter().copied().fold(f64::INFINITY, f64::min);
            let mode = k_attn.map_or("dense".to_string(), |k| format!("top-k {k}"));
            println!(
                "| {n} | {mode} | {kern:?} | {m:.3} | {:.2} | {min:.3} |",
                m * 6.0
            );
        }
    }
    Ok(())
}
