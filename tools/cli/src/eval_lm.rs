//! `topkit eval-lm`: top-k attention against dense on a language model, over one long text.
//!
//! For dense attention and every k of the list:
//! - **teacher forcing**: the text's tokens are fed once ([`topkit::Session::feed_each`]) and
//!   the next-token distribution at every position is compared with dense's: mean and max of
//!   `KL(dense || top-k)` (nats; the mean also over only the positions whose context is
//!   longer than k, where top-k can differ), and how often the most likely token is the same;
//! - **greedy continuation**: `--generate` tokens after the text, compared with dense's
//!   continuation (tokens identical before the first difference, and in total);
//! - **speed**: prefill of the text (one call, chunks of `--chunk`) and the decode steps of the
//!   continuation, tokens/s;
//! - **memory**: the plan's peak (the arena) and the measured high-water mark, bytes.
//!
//! The baseline is always dense attention over an f32 KV cache. With `--kv f16` or `--kv
//! int8`, a row "dense, int8 cache" compares the stored cache with it, and the top-k rows run
//! over that cache too. `--kernels fast` runs every setting (the baseline too) with the fast
//! kernels.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use topkit::sample::Sampler;
use topkit::{KvType, RunConfig};

use crate::eval::parse_k;
use crate::generate::{self, Lm, check_run, encode, with_lm};
use crate::options::{KernelChoice, KvChoice};
use crate::size::human;

/// Arguments of `topkit eval-lm`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalLmArgs {
    /// Packed model file.
    pub file: PathBuf,
    /// The text, tokenized with the file's tokenizer.
    #[arg(long, value_name = "PATH")]
    pub text_file: Option<PathBuf>,
    /// The text as token ids (whitespace or comma separated) instead.
    #[arg(long, value_name = "PATH", conflicts_with = "text_file")]
    pub ids_file: Option<PathBuf>,
    /// Keys kept per query to compare with dense, comma-separated.
    #[arg(long, value_name = "LIST", value_parser = parse_k, value_delimiter = ',', default_value = "16,32,64")]
    pub k_attn: Vec<usize>,
    /// Tokens processed together (prefill).
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
    /// Greedy tokens to generate after the text.
    #[arg(long, default_value_t = 32)]
    pub generate: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Instead of the top-k sweep: compare FILE (dense) with this file (e.g. the f32 packing
    /// of the same model) on the text: KL(reference || FILE), top-1 agreement and the greedy
    /// continuation, what a quantization recipe costs.
    #[arg(long, value_name = "REFERENCE", conflicts_with = "k_attn")]
    pub against: Option<PathBuf>,
    /// KV cache of the compared settings: `f32`, `f16` or `int8` (the baseline is always
    /// dense over an f32 cache; other types add a dense row over that cache).
    #[arg(long, value_enum, default_value_t = KvChoice::F32)]
    pub kv: KvChoice,
    /// Kernels of every setting: `reference` or `fast`.
    #[arg(long, value_enum, default_value_t = KernelChoice::Reference)]
    pub kernels: KernelChoice,
}

/// One attention setting's results.
#[derive(Debug, Clone)]
pub struct Row {
    /// Keys kept per query; `None`: dense.
    pub k_attn: Option<usize>,
    /// Storage of the KV cache.
    pub kv: KvType,
    /// Mean over positions of KL(dense || this), nats.
    pub kl_mean: f64,
    /// Mean KL over the positions whose context has more than k tokens (where top-k can
    /// differ from dense), nats; 0 for dense.
    pub kl_mean_past_k: f64,
    /// Largest KL over positions, nats.
    pub kl_max: f64,
    /// Fraction of positions whose most likely next token is dense's.
    pub top1_agree: f64,
    /// Greedy continuation tokens identical to dense's before the first difference.
    pub same_prefix: usize,
    /// Greedy continuation tokens identical to dense's at the same position.
    pub same_total: usize,
    /// Prefill speed, tokens/s.
    pub prefill_tps: f64,
    /// Decode speed, tokens/s.
    pub decode_tps: f64,
    /// Plan peak, bytes.
    pub peak_bytes: usize,
    /// Measured high-water mark, bytes.
    pub high_water: usize,
    /// Greedy continuation.
    pub continuation: Vec<u32>,
}

fn log_softmax(x: &[f32]) -> Vec<f64> {
    let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
    let z: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
    let lz = m + z.ln();
    x.iter().map(|&v| v as f64 - lz).collect()
}

/// `KL(p || q)` of two log-distributions, nats.
fn kl(lp: &[f64], lq: &[f64]) -> f64 {
    lp.iter()
        .zip(lq)
        .map(|(&a, &b)| if a > -700.0 { a.exp() * (a - b) } else { 0.0 })
        .sum()
}

fn read_ids(path: &std::path::Path) -> Result<Vec<u32>> {
    let s = crate::files::read_text(path).context("cannot read ids")?;
    s.split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| anyhow!("{}: {t:?} is not a token id", path.display()))
        })
        .collect()
}

/// Runs one setting: teacher forcing (against `dense` log-probs, or filling them), then prefill
/// and greedy decode for the speeds and the continuation.
fn run_setting(
    lm: &Lm<'_>,
    ids: &[u32],
    run: &RunConfig,
    generate: usize,
    dense: &mut Vec<Vec<f64>>,
    dense_cont: Option<&[u32]>,
) -> Result<Row> {
    let plan = check_run(lm, run)?;
    let mut mem = crate::options::arena_for(&plan, "--seq or --max-tokens")?;

    // Teacher forcing.
    let fill = dense.is_empty();
    let (mut kl_sum, mut kl_max, mut agree) = (0.0, 0.0f64, 0usize);
    let (mut past_sum, mut past_n) = (0.0, 0usize);
    {
        let mut arena = mem.arena();
        let mut s = lm.decoder.start(run, &mut arena)?;
        s.feed_each(ids, |pos, logits| {
            let lq = log_softmax(logits);
            if fill {
                agree += 1;
                dense.push(lq);
            } else {
                let lp = &dense[pos];
                let k = kl(lp, &lq);
                kl_sum += k;
                kl_max = kl_max.max(k);
                // Position `pos` attends over `pos + 1` keys.
                if run.k_attn.is_some_and(|ka| pos + 1 > ka) {
                    past_sum += k;
                    past_n += 1;
                }
                if argmax_f64(lp) == argmax_f64(&lq) {
                    agree += 1;
                }
            }
        })?;
    }

    // Prefill, then greedy decode (no end-of-sequence stop: every setting makes as many).
    let g = generate::generate(lm, run, ids, generate, Sampler::greedy(), None, |_| Ok(()))?;
    let cont = &g.ids;
    let (same_prefix, same_total) = match dense_cont {
        Some(d) => (
            d.iter().zip(cont).take_while(|(a, b)| a == b).count(),
            d.iter().zip(cont).filter(|(a, b)| a == b).count(),
        ),
        None => (cont.len(), cont.len()),
    };
    Ok(Row {
        k_attn: run.k_attn,
        kv: lm.decoder.model().kv(),
        kl_mean: kl_sum / ids.len() as f64,
        kl_mean_past_k: if past_n > 0 {
            past_sum / past_n as f64
        } else {
            0.0
        },
        kl_max,
        top1_agree: agree as f64 / ids.len() as f64,
        same_prefix,
        same_total,
        prefill_tps: g.prefill_tps(),
        decode_tps: g.decode_tps(),
        peak_bytes: plan.peak_bytes,
        high_water: g.high_water,
        continuation: g.ids,
    })
}

/// "dense" or "top-k", and the cache type when it is not f32.
fn label(r: &Row) -> String {
    let a = r.k_attn.map_or("dense".into(), |k| format!("top-{k}"));
    match r.kv {
        KvType::F32 => a,
        kv => format!("{a}, {} cache", kv.name()),
    }
}

fn argmax_f64(x: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// The text's token ids (`--text-file` through the file's tokenizer, or `--ids-file`).
fn text_ids(args: &EvalLmArgs, lm: &Lm<'_>) -> Result<Vec<u32>> {
    match (&args.text_file, &args.ids_file) {
        (Some(t), None) => {
            let text = crate::files::read_text(t)?;
            encode(lm, &text)
        }
        (None, Some(p)) => read_ids(p),
        _ => bail!("give exactly one of --text-file and --ids-file"),
    }
}

/// `eval-lm --against`: dense FILE against dense REFERENCE on the text.
fn against(args: &EvalLmArgs, reference: &std::path::Path) -> Result<()> {
    let mut dense = Vec::new();
    let (ids, want) = with_lm(reference, topkit::kernels::Kernels::Reference, |lm| {
        let ids = text_ids(args, lm)?;
        let run = checked_run(args, lm, &ids)?;
        errln!(
            "{}: {} tokens, teacher-forced and {} generated",
            reference.display(),
            ids.len(),
            args.generate
        );
        let row = run_setting(lm, &ids, &run, args.generate, &mut dense, None)?;
        Ok((ids, row.continuation))
    })?;
    let row = with_lm(&args.file, topkit::kernels::Kernels::Reference, |lm| {
        if text_ids(args, lm)? != ids {
            bail!("the two files tokenize the text differently: not the same model");
        }
        let run = checked_run(args, lm, &ids)?;
        errln!("{}: the same", args.file.display());
        run_setting(lm, &ids, &run, args.generate, &mut dense, Some(&want))
    })?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "text_tokens": ids.len(), "kl_mean": row.kl_mean, "kl_max": row.kl_max,
                "top1_agreement": row.top1_agree, "greedy_same_prefix": row.same_prefix,
                "greedy_same_total": row.same_total, "generated": args.generate,
            }))?
        );
    } else {
        outln!(
            "{} against {} ({} positions): mean KL {:.3e} nats, max {:.3e}, top-1 agreement {:.2} %, greedy continuation equal for {} of {} tokens ({} before the first difference)",
            args.file.display(),
            reference.display(),
            ids.len(),
            row.kl_mean,
            row.kl_max,
            100.0 * row.top1_agree,
            row.same_total,
            args.generate,
            row.same_prefix
        );
    }
    Ok(())
}

/// The dense run of the text and its continuation, checked against the model.
fn checked_run(args: &EvalLmArgs, lm: &Lm<'_>, ids: &[u32]) -> Result<RunConfig> {
    if ids.is_empty() {
        bail!("the text has no tokens");
    }
    let c = *lm.decoder.config();
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
        bail!(
            "token id {id} is not below the vocabulary size {}",
            c.vocab_size
        );
    }
    let seq = ids.len().saturating_add(args.generate);
    if seq > c.max_seq {
        bail!(
            "{} tokens of text + {} generated exceed the model's max_seq {}",
            ids.len(),
            args.generate,
            c.max_seq
        );
    }
    Ok(RunConfig {
        seq_len: seq,
        chunk: args.chunk,
        k_attn: None,
        k_ff: None,
    })
}

/// Runs `topkit eval-lm`.
///
/// # Errors
/// When the text (or ids) or the model cannot be read, the text has no tokens or an id out
/// of the vocabulary, text and continuation exceed max_seq, a setting cannot be planned, or
/// the arena's high-water mark differs from the plan's peak.
pub fn run(args: &EvalLmArgs) -> Result<()> {
    if let Some(reference) = &args.against {
        return against(args, reference);
    }
    with_lm(&args.file, topkit::kernels::Kernels::Reference, |lm| {
        let ids = text_ids(args, lm)?;
        if ids.is_empty() {
            bail!("the text has no tokens");
        }
        let c = *lm.decoder.config();
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            bail!(
                "token id {id} is not below the vocabulary size {}",
                c.vocab_size
            );
        }
        let seq = ids.len().saturating_add(args.generate);
        if seq > c.max_seq {
            bail!(
                "{} tokens of text + {} generated exceed the model's max_seq {}",
                ids.len(),
                args.generate,
                c.max_seq
            );
        }
        errln!(
            "{} tokens of text, {} generated; context {seq}, chunk {}",
            ids.len(),
            args.generate,
            args.chunk
        );
        let mut dense = Vec::new();
        let mut rows: Vec<Row> = Vec::new();
        let (kernels, kv): (topkit::kernels::Kernels, KvType) =
            (args.kernels.into(), args.kv.into());
        let mut settings = vec![(None, KvType::F32)];
        if kv != KvType::F32 {
            settings.push((None, kv));
        }
        settings.extend(args.k_attn.iter().map(|&k| (Some(k), kv)));
        for (k, kv) in settings {
            let lm = &lm.with(kernels, kv);
            let run = RunConfig {
                seq_len: seq,
                chunk: args.chunk,
                k_attn: k,
                k_ff: None,
            };
            let t = Instant::now();
            let dense_cont = rows.first().map(|r| r.continuation.clone());
            let row = run_setting(
                lm,
                &ids,
                &run,
                args.generate,
                &mut dense,
                dense_cont.as_deref(),
            )?;
            errln!(
                "  {}: done in {:.1} s",
                label(&row),
                t.elapsed().as_secs_f64()
            );
            if row.high_water != row.peak_bytes {
                bail!(
                    "high-water {} differs from the plan's peak {}",
                    row.high_water,
                    row.peak_bytes
                );
            }
            rows.push(row);
        }
        if args.json {
            let out: Vec<_> = rows
                .iter()
                .map(|r| {
                    json!({
                        "k_attn": r.k_attn, "kv": r.kv.name(), "kl_mean": r.kl_mean, "kl_mean_past_k": r.kl_mean_past_k, "kl_max": r.kl_max,
                        "top1_agreement": r.top1_agree, "greedy_same_prefix": r.same_prefix,
                        "greedy_same_total": r.same_total, "generated": args.generate,
                        "prefill_tokens_per_s": r.prefill_tps, "decode_tokens_per_s": r.decode_tps,
                        "peak_bytes": r.peak_bytes, "high_water_bytes": r.high_water,
                        "continuation": r.continuation,
                    })
                })
                .collect();
            outln!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"text_tokens": ids.len(), "chunk": args.chunk, "kernels": if kernels.is_fast() { "fast" } else { "reference" }, "rows": out})
                )?
            );
            return Ok(());
        }
        outln!(
            "| attention | mean KL(dense ‖ this), nats | mean KL where context > k | max KL | top-1 agreement (teacher-forced, {} positions) | greedy continuation = dense ({} tokens): before first difference / in total | prefill tokens/s | decode tokens/s | peak arena bytes |",
            ids.len(),
            args.generate
        );
        outln!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &rows {
            outln!(
                "| {} | {:.2e} | {:.2e} | {:.2e} | {:.2} % | {} / {} | {:.1} | {:.2} | {} ({}) |",
                label(r),
                r.kl_mean,
                r.kl_mean_past_k,
                r.kl_max,
                100.0 * r.top1_agree,
                r.same_prefix,
                r.same_total,
                r.prefill_tps,
                r.decode_tps,
                r.peak_bytes,
                human(r.peak_bytes)
            );
        }
        Ok(())
    })
}
