//! MiniLM speed, one thread, tokenization included: topkit (dense f32, dense int8, top-k int8)
//! side by side with candle-transformers' BERT on the same safetensors.
//!
//! Both engines get the same token ids from topkit's WordPiece tokenizer (its cost is in both
//! timings), so the comparison is of the model code. The engines are timed round-robin, one
//! run of each per round, so that load changes on the machine hit all of them alike; the
//! table gives medians and the ratio candle / topkit of the medians of the same run.
//! Accuracy: cosine of each topkit embedding to candle's f32 embedding of the same text (candle
//! matches sentence-transformers to about 1e-6).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail, ensure};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::json;
use topkit::encoder::Encoder;
use topkit::kernels::Kernels;
use topkit::{ArenaBuf, RunConfig};
use topkit_cli::embed::{Session, with_session};

use crate::{median, opt};

/// Words that are one WordPiece token each in the uncased vocabulary, so a text of `n - 2`
/// of them is exactly `n` tokens with `[CLS]` and `[SEP]`.
const WORDS: &str = "the quick brown fox jumps over the lazy dog while a small bird sings in the \
old tree near the river and people walk along the road to the market every morning";

fn model_dir() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/topkit/models")
}

/// A text of exactly `n` tokens (with `[CLS]` and `[SEP]`).
fn text_of(n: usize) -> String {
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    (0..n.saturating_sub(2))
        .map(|i| words[i % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

/// One topkit setting: name, weights, attention, kernels.
struct Setting {
    name: &'static str,
    int8: bool,
    k_attn: Option<usize>,
    kernels: Kernels,
}

const fn setting(
    name: &'static str,
    int8: bool,
    k_attn: Option<usize>,
    kernels: Kernels,
) -> Setting {
    Setting {
        name,
        int8,
        k_attn,
        kernels,
    }
}

const SETTINGS: [Setting; 6] = [
    setting(
        "topkit f32 dense (reference kernels)",
        false,
        None,
        Kernels::Reference,
    ),
    setting("topkit f32 dense (fast)", false, None, Kernels::Fast),
    setting(
        "topkit int8 dense (reference kernels)",
        true,
        None,
        Kernels::Reference,
    ),
    setting("topkit int8 dense (fast)", true, None, Kernels::Fast),
    setting(
        "topkit int8 top-k 32 (reference kernels)",
        true,
        Some(32),
        Kernels::Reference,
    ),
    setting("topkit int8 top-k 32 (fast)", true, Some(32), Kernels::Fast),
];

struct Candle {
    model: BertModel,
}

impl Candle {
    fn load(dir: &Path) -> Result<Self> {
        let cfg: Config = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
        let bytes = std::fs::read(dir.join("model.safetensors"))?;
        let vb = VarBuilder::from_buffered_safetensors(bytes, DType::F32, &Device::Cpu)?;
        Ok(Candle {
            model: BertModel::load(vb, &cfg)?,
        })
    }

    /// Mean-pooled, L2-normalised embedding (sentence-transformers' MiniLM head).
    fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let dev = Device::Cpu;
        let input = Tensor::new(ids, &dev)?.unsqueeze(0)?;
        let types = input.zeros_like()?;
        let out = self.model.forward(&input, &types, None)?; // 1 x n x d
        let mean = out.mean(1)?.squeeze(0)?;
        let norm = mean.sqr()?.sum_all()?.sqrt()?;
        let e = mean.broadcast_div(&norm)?;
        Ok(e.to_vec1::<f32>()?)
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        ab += x as f64 * y as f64;
        aa += x as f64 * x as f64;
        bb += y as f64 * y as f64;
    }
    ab / (aa.sqrt() * bb.sqrt())
}

/// Runs `f` and returns its wall time, ms.
fn time_ms<T>(f: impl FnOnce() -> Result<T>) -> Result<(f64, T)> {
    let t = Instant::now();
    let v = f()?;
    Ok((t.elapsed().as_secs_f64() * 1e3, v))
}

/// A topkit embedding of `text`: tokenization and the forward pass in `mem` (the plan's
/// peak bytes, allocated once outside the timing).
fn topkit_embed(
    s: &Session<'_, '_>,
    enc: &Encoder<'_>,
    run: &RunConfig,
    mem: &mut ArenaBuf,
    text: &str,
) -> Result<Vec<f32>> {
    let tokens = s.tokenize(text)?;
    let mut arena = mem.arena();
    let mut e = vec![0f32; enc.config().d_model];
    enc.embed(run, &tokens.ids, &mut arena, &mut e)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(e)
}

/// One row of the table.
struct Row {
    seq: usize,
    name: &'static str,
    ms: f64,
    candle_ms: f64,
    cosine: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let iters: usize = opt(args, "--iters").unwrap_or("15").parse()?;
    let seqs: Vec<usize> = opt(args, "--seqs")
        .unwrap_or("32,128,256")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let json_out = args.iter().any(|a| a == "--json");
    // `--only TEXT`: time only the engines whose name contains TEXT (for profiling).
    let only = opt(args, "--only");
    let wanted = |name: &str| only.is_none_or(|o| name.contains(o));
    let threads = candle_core::utils::get_num_threads();
    if threads != 1 {
        bail!(
            "candle would use {threads} threads: run with RAYON_NUM_THREADS=1 (cargo xtask bench does)"
        );
    }
    let dir = model_dir();
    let candle = Candle::load(&dir.join("all-MiniLM-L6-v2")).context("loading candle BERT")?;
    let mut rows = Vec::new();
    with_session(
        &dir.join("all-MiniLM-L6-v2-f32.tkm"),
        Kernels::Reference,
        |f32s| {
            with_session(
                &dir.join("all-MiniLM-L6-v2-int8.tkm"),
                Kernels::Reference,
                |i8s| {
                    for &seq in &seqs {
                        ensure!(
                            seq <= f32s.max_seq,
                            "seq {seq} above the model's max_seq {}",
                            f32s.max_seq
                        );
                        let text = text_of(seq);
                        let n = f32s.tokenize(&text)?.ids.len();
                        ensure!(n == seq, "the text of {seq} tokens has {n}");
                        type Prepared<'s, 'a, 'v> =
                            (&'s Session<'a, 'v>, Encoder<'a>, RunConfig, ArenaBuf);
                        let sessions: Vec<Prepared<'_, '_, '_>> = SETTINGS
                            .iter()
                            .map(|st| {
                                let s = if st.int8 { i8s } else { f32s };
                                let run = RunConfig {
                                    seq_len: seq,
                                    chunk: 16,
                                    k_attn: st.k_attn,
                                    k_ff: None,
                                };
                                // Checks the run's arguments.
                                s.plan(&run)?;
                                // The arena of the plan of the kernels this setting runs.
                                let enc = s.encoder.with_kernels(st.kernels);
                                let plan = enc.plan(&run).map_err(|e| anyhow!("{e}"))?;
                                Ok((s, enc, run, ArenaBuf::for_plan(&plan)))
                            })
                            .collect::<Result<_>>()?;
                        let mut sessions = sessions;
                        let reference = candle.embed(&f32s.tokenize(&text)?.ids)?;
                        let mut times = vec![Vec::new(); SETTINGS.len() + 1];
                        let mut cos = vec![0f64; SETTINGS.len()];
                        // Two warm-up rounds, then `iters` timed ones.
                        for round in 0..iters + 2 {
                            for (i, (s, enc, run, mem)) in sessions.iter_mut().enumerate() {
                                if !wanted(SETTINGS[i].name) {
                                    continue;
                                }
                                let (ms, e) = time_ms(|| topkit_embed(s, enc, run, mem, &text))?;
                                cos[i] = cosine(&e, &reference);
                                if round >= 2 {
                                    times[i].push(ms);
                                }
                            }
                            if !wanted("candle f32") {
                                continue;
                            }
                            let (ms, _) = time_ms(|| candle.embed(&f32s.tokenize(&text)?.ids))?;
                            if round >= 2 {
                                times[SETTINGS.len()].push(ms);
                            }
                        }
                        let candle_ms = median(&mut times[SETTINGS.len()]);
                        for (i, st) in SETTINGS.iter().enumerate() {
                            rows.push(Row {
                                seq,
                                name: st.name,
                                ms: median(&mut times[i]),
                                candle_ms,
                                cosine: cos[i],
                            });
                        }
                        rows.push(Row {
                            seq,
                            name: "candle f32",
                            ms: candle_ms,
                            candle_ms,
                            cosine: 1.0,
                        });
                    }
                    Ok(())
                },
            )
        },
    )?;
    if json_out {
        let v: Vec<_> = rows
            .iter()
            .map(|r| {
                json!({"seq": r.seq, "engine": r.name, "median_ms": r.ms,
                       "candle_over_this": r.candle_ms / r.ms, "cosine_to_candle_f32": r.cosine})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"iters": iters, "rows": v}))?
        );
    } else {
        println!("one thread, tokenization included, {iters} timed runs each (medians)");
        println!("| seq | engine | median ms | candle / this | cosine to candle f32 |");
        println!("|---:|---|---:|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {} | {:.2} | {:.2} | {:.6} |",
                r.seq,
                r.name,
                r.ms,
                r.candle_ms / r.ms,
                r.cosine
            );
        }
    }
    Ok(())
}
