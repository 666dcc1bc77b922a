//! `topkit generate`: text generation with a packed causal language model (e.g. SmolLM2):
//! tokenize the prompt, prefill it in chunks, then decode one token at a time over the KV
//! cache (dense or top-k attention), greedy or sampled, streaming the text as it comes.
//! Speeds (prefill and decode, tokens/s) and the arena (planned and measured) go to stderr.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use topkit::decoder::Decoder;
use topkit::encoder::layers;
use topkit::format::{PackedModel, Special};
use topkit::kernels::Kernels;
use topkit::sample::Sampler;
use topkit::tokenizer::{Bpe, Utf8Stream};
use topkit::{KvType, Plan, RunConfig};

use crate::options::{KernelChoice, KvChoice, RunOpts};

/// Arguments of `topkit generate`.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("k_attn", |a| a.help(
    "Keys kept per query (top-k attention over the cache); default: dense attention"
)))]
#[command(mut_arg("chunk", |a| a.help("Prompt tokens processed together (prefill)")))]
pub struct GenerateArgs {
    /// Packed model file.
    pub file: PathBuf,
    /// Prompt text.
    #[arg(long)]
    pub prompt: Option<String>,
    /// Prompt as comma-separated token ids instead of text.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub prompt_ids: Option<Vec<u32>>,
    /// Wrap the prompt in the chat template (ChatML, as SmolLM2-Instruct expects).
    #[arg(long)]
    pub chat: bool,
    /// System message of the chat template (default: SmolLM2's).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Top-k settings and the prefill chunk.
    #[command(flatten)]
    pub run: RunOpts,
    /// Sampling temperature; 0 is greedy (ties to the lowest id).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Top-p: sample only from the smallest set of tokens with this much probability.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampler (PCG32).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Context the KV cache is sized for, tokens (default: prompt + max-tokens, at most
    /// the model's max_seq).
    #[arg(long)]
    pub seq: Option<usize>,
    /// Do not stop at the end-of-sequence token.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print {"prompt_ids", "ids", "text", speeds, bytes} as JSON instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Kernels: `reference` (the generic kernels, bit for bit what every target computes) or
    /// `fast` (int8 activations, the block attention kernels, AVX2/FMA when present).
    #[arg(long, value_enum, default_value_t = KernelChoice::Reference)]
    pub kernels: KernelChoice,
    /// Storage of the KV cache: `f32` (exact), `f16`, or `int8` (one f32 scale per head row,
    /// about 3.8x smaller than f32).
    #[arg(long, value_enum, default_value_t = KvChoice::F32)]
    pub kv: KvChoice,
}

/// A packed causal language model, ready to run.
pub struct Lm<'a> {
    /// The decoder over the file's weights.
    pub decoder: Decoder<'a>,
    /// The parsed file (tokenizer, specials).
    pub packed: PackedModel<'a>,
}

/// Opens `path` and calls `f` with its decoder. Errors name the file.
///
/// # Errors
/// When the file cannot be read or parsed or is not a causal language model, and whatever
/// `f` returns.
pub fn with_lm<R>(
    path: &Path,
    kernels: Kernels,
    f: impl FnOnce(&Lm<'_>) -> Result<R>,
) -> Result<R> {
    let bytes = crate::packed::read_packed(path)?;
    let packed = crate::packed::parse_packed(path, bytes.as_slice(), true)?;
    let layers =
        layers(&packed).map_err(|e| anyhow!("{}: cannot view the layers: {e}", path.display()))?;
    let decoder = Decoder::from_packed(&packed, &layers)
        .map_err(|e| anyhow!("{}: not a causal language model: {e}", path.display()))?
        .with_kernels(kernels);
    f(&Lm { decoder, packed })
}

impl<'a> Lm<'a> {
    /// The same model run with `kernels` and its KV cache stored as `kv`.
    pub fn with(&self, kernels: Kernels, kv: KvType) -> Lm<'a> {
        Lm {
            decoder: self.decoder.with_kernels(kernels).with_kv(kv),
            packed: self.packed,
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The model produced its end-of-sequence token.
    Eos,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context (`--seq`) is full.
    ContextFull,
}

impl Stop {
    /// Name for the JSON output and the note.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Eos => "eos",
            Stop::MaxTokens => "max_tokens",
            Stop::ContextFull => "context_full",
        }
    }
}

/// What one generation did and cost.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids (the end-of-sequence token included when it stopped there).
    pub ids: Vec<u32>,
    /// Why it stopped.
    pub stop: Stop,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Wall time of the prefill (prompt through the model, logits of its last token), seconds.
    pub prefill_secs: f64,
    /// Decode steps run (one token through the model each).
    pub decode_steps: usize,
    /// Wall time of the decode steps, seconds.
    pub decode_secs: f64,
    /// The plan.
    pub plan: Plan,
    /// Arena high-water mark, bytes.
    pub high_water: usize,
}

impl Generation {
    /// Prefill speed, prompt tokens per second.
    pub fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    /// Decode speed, tokens per second.
    pub fn decode_tps(&self) -> f64 {
        self.decode_steps as f64 / self.decode_secs.max(1e-9)
    }
}

/// Checks the k and chunk arguments against the model.
///
/// # Errors
/// When `--k-attn`, `--k-ff` or `--chunk` is out of range, or the core cannot plan `run`.
pub fn check_run(lm: &Lm<'_>, run: &RunConfig) -> Result<Plan> {
    crate::options::check_run_args(run, lm.decoder.config().d_ff)?;
    lm.decoder
        .plan(run)
        .map_err(|e| anyhow!("cannot plan this run: {e}"))
}

/// Prefills `prompt` and generates up to `max_tokens` tokens with `sampler`, calling
/// `on_token` with each new id as soon as it is chosen. Stops at `eos` (if given), at
/// `max_tokens`, or when the context (`run.seq_len`) is full.
///
/// # Errors
/// When `run` cannot be planned, the prompt is empty or longer than the context, sampling or
/// the decoder fails, and whatever `on_token` returns.
pub fn generate(
    lm: &Lm<'_>,
    run: &RunConfig,
    prompt: &[u32],
    max_tokens: usize,
    mut sampler: Sampler,
    eos: Option<u32>,
    mut on_token: impl FnMut(u32) -> Result<()>,
) -> Result<Generation> {
    let plan = check_run(lm, run)?;
    if prompt.is_empty() {
        bail!("the prompt has no tokens");
    }
    if prompt.len() > plan.seq_len {
        bail!(
            "the prompt has {} tokens, more than the context of {} (--seq)",
            prompt.len(),
            plan.seq_len
        );
    }
    let mut mem = crate::options::arena_for(&plan, "--seq or --max-tokens")?;
    let mut arena = mem.arena();
    let mut s = lm.decoder.start(run, &mut arena)?;
    let t0 = Instant::now();
    let mut logits = s.feed(prompt)?.to_vec();
    let prefill_secs = t0.elapsed().as_secs_f64();
    let mut ids = Vec::new();
    let (mut decode_steps, mut decode_secs) = (0, 0.0);
    let stop = loop {
        if ids.len() == max_tokens {
            break Stop::MaxTokens;
        }
        let next = sampler.sample(&mut logits)?;
        ids.push(next);
        on_token(next)?;
        if Some(next) == eos {
            break Stop::Eos;
        }
        if ids.len() == max_tokens {
            break Stop::MaxTokens;
        }
        if s.len() == s.capacity() {
            break Stop::ContextFull;
        }
        let t = Instant::now();
        logits.copy_from_slice(s.feed(&[next])?);
        decode_secs += t.elapsed().as_secs_f64();
        decode_steps += 1;
    };
    let high_water = s.high_water();
    Ok(Generation {
        ids,
        stop,
        prompt_tokens: prompt.len(),
        prefill_secs,
        decode_steps,
        decode_secs,
        plan,
        high_water,
    })
}

/// Calls `emit` with the bytes token `id` stands for: byte-level BPE tokens their bytes,
/// special tokens (`<|im_end|>`) their text; other tokenizers the token's string.
pub fn token_bytes(lm: &Lm<'_>, id: u32, mut emit: impl FnMut(u8)) {
    let tok = lm.packed.tokenizer();
    if let Ok(bpe) = Bpe::new(tok)
        && bpe.token_bytes(id, &mut emit).is_ok()
    {
        return;
    }
    if let Some(s) = tok.vocab().token(id) {
        s.bytes().for_each(emit);
    }
}

/// The decoded text of `ids` (invalid UTF-8 as U+FFFD).
pub fn decode(lm: &Lm<'_>, ids: &[u32]) -> String {
    let mut bytes = Vec::new();
    for &id in ids {
        token_bytes(lm, id, |b| bytes.push(b));
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Token ids of `text` with the file's byte-level BPE tokenizer (special tokens written in
/// the text, such as `<|im_start|>`, become their ids).
///
/// # Errors
/// When the file's tokenizer is not byte-level BPE or fails on `text`.
pub fn encode(lm: &Lm<'_>, text: &str) -> Result<Vec<u32>> {
    let bpe = Bpe::new(lm.packed.tokenizer())
        .map_err(|e| anyhow!("cannot tokenize text with this file's tokenizer: {e}"))?;
    // Every id covers at least one byte of the text; the rest is the merge queue, which
    // keeps hostile text (one 1 MB word) near-linear.
    let slots = text
        .len()
        .checked_add(1)
        .and_then(|n| n.checked_mul(Bpe::FAST_SLOTS_PER_BYTE))
        .ok_or_else(|| anyhow!("the text is too long to tokenize"))?;
    let mut ids = Vec::new();
    ids.try_reserve_exact(slots)
        .map_err(|_| anyhow!("cannot allocate {} bytes to tokenize the text", slots * 4))?;
    ids.resize(slots, 0u32);
    let n = bpe.encode(text, &mut ids)?;
    ids.truncate(n);
    Ok(ids)
}

/// The SmolLM2-Instruct default system message.
pub const DEFAULT_SYSTEM: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// The chat template (ChatML, as SmolLM2-Instruct's) around a user message: the text before
/// and after it.
pub fn chat_template(system: &str) -> (String, String) {
    (
        format!("<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"),
        "<|im_end|>\n<|im_start|>assistant\n".to_string(),
    )
}

/// A prompt in the chat template, as token ids: the user message as ids (`--prompt-ids`)
/// between the template's, or (`--prompt`) the whole template text tokenized at once, as the
/// reference tokenizer does.
///
/// # Errors
/// When the vocabulary has no `<|im_start|>` or `<|im_end|>` token, or the template text
/// cannot be encoded.
pub fn chat_ids(lm: &Lm<'_>, system: &str, user: &UserPrompt) -> Result<Vec<u32>> {
    let vocab = lm.packed.tokenizer().vocab();
    for s in ["<|im_start|>", "<|im_end|>"] {
        if vocab.find(s).is_none() {
            bail!("--chat: the vocabulary has no {s} token");
        }
    }
    let (before, after) = chat_template(system);
    match user {
        UserPrompt::Text(t) => encode(lm, &format!("{before}{t}{after}")),
        UserPrompt::Ids(ids) => {
            let mut out = encode(lm, &before)?;
            out.extend_from_slice(ids);
            out.extend(encode(lm, &after)?);
            Ok(out)
        }
    }
}

/// The user's prompt as given on the command line.
#[derive(Debug, Clone)]
pub enum UserPrompt {
    /// Text (`--prompt`).
    Text(String),
    /// Token ids (`--prompt-ids`).
    Ids(Vec<u32>),
}

/// The end-of-sequence id: the file's EOS special, or `<|im_end|>` in chat mode.
pub fn eos_id(lm: &Lm<'_>, chat: bool) -> Option<u32> {
    let tok = lm.packed.tokenizer();
    if chat && let Some(id) = tok.vocab().find("<|im_end|>") {
        return Some(id);
    }
    tok.special(Special::Eos)
}

/// Runs `topkit generate`.
///
/// # Errors
/// When the prompt is missing, given twice or has an id out of the vocabulary, `--seq` exceeds
/// max_seq, the run or sampler options are out of range, generation fails, or the arena's
/// high-water mark differs from the plan's peak.
pub fn run(args: &GenerateArgs) -> Result<()> {
    with_lm(&args.file, args.kernels.into(), |lm| {
        let lm = &lm.with(args.kernels.into(), args.kv.into());
        let c = *lm.decoder.config();
        let user = match (&args.prompt, &args.prompt_ids) {
            (Some(_), Some(_)) => bail!("give --prompt or --prompt-ids, not both"),
            (None, None) => bail!("give a prompt: --prompt TEXT or --prompt-ids 1,2,3"),
            (Some(text), None) => UserPrompt::Text(text.clone()),
            (None, Some(ids)) => UserPrompt::Ids(ids.clone()),
        };
        if let UserPrompt::Ids(ids) = &user
            && let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size)
        {
            bail!(
                "token id {id} is not below the vocabulary size {}",
                c.vocab_size
            );
        }
        let prompt = match (&user, args.chat) {
            (_, true) => chat_ids(lm, args.system.as_deref().unwrap_or(DEFAULT_SYSTEM), &user)?,
            (UserPrompt::Text(t), false) => encode(lm, t)?,
            (UserPrompt::Ids(ids), false) => ids.clone(),
        };
        let seq = args
            .seq
            .unwrap_or_else(|| prompt.len().saturating_add(args.max_tokens).min(c.max_seq));
        if seq > c.max_seq {
            bail!(
                "--seq {seq} is longer than the model's max_seq {}",
                c.max_seq
            );
        }
        let run = args.run.config(seq);
        let sampler = Sampler::new(args.temperature, args.top_p, args.seed)
            .map_err(|e| anyhow!("--temperature/--top-p: {e}"))?;
        let eos = if args.ignore_eos {
            None
        } else {
            eos_id(lm, args.chat)
        };
        let mut stream = Utf8Stream::new();
        let json = args.json;
        let g = generate(lm, &run, &prompt, args.max_tokens, sampler, eos, |id| {
            if !json && Some(id) != eos {
                let mut text = String::new();
                token_bytes(lm, id, |b| stream.push(b, &mut |ch| text.push(ch)));
                // A closed pipe ends the output, not the run.
                crate::stdio::out_bytes(text.as_bytes());
            }
            Ok(())
        })
        .with_context(|| format!("{}", args.file.display()))?;
        if json {
            let out = json!({
                "prompt_ids": prompt,
                "ids": g.ids,
                "text": decode(lm, g.ids.strip_suffix(&[eos.unwrap_or(u32::MAX)]).unwrap_or(&g.ids)),
                "stop": g.stop.name(),
                "prefill": {"tokens": g.prompt_tokens, "seconds": g.prefill_secs, "tokens_per_s": g.prefill_tps()},
                "decode": {"tokens": g.decode_steps, "seconds": g.decode_secs, "tokens_per_s": g.decode_tps()},
                "run": {"seq_len": run.seq_len, "chunk": run.chunk, "k_attn": run.k_attn, "k_ff": run.k_ff},
                "kernels": if g.plan.kernels.is_fast() { "fast" } else { "reference" },
                "kv": g.plan.kv.name(),
                "kv_cache_bytes": g.plan.keys_bytes + g.plan.values_bytes,
                "peak_bytes": g.plan.peak_bytes,
                "high_water_bytes": g.high_water,
            });
            outln!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            let mut rest = String::new();
            stream.finish(&mut |ch| rest.push(ch));
            outln!("{rest}");
        }
        let attn = run.k_attn.map_or("dense".into(), |k| format!("top-{k}"));
        errln!(
            "prefill: {} tokens in {:.3} s ({:.1} tokens/s); decode: {} tokens in {:.3} s ({:.1} tokens/s); attention {attn}, chunk {}, kernels {}",
            g.prompt_tokens,
            g.prefill_secs,
            g.prefill_tps(),
            g.decode_steps,
            g.decode_secs,
            g.decode_tps(),
            g.plan.chunk,
            if g.plan.kernels.is_fast() {
                "fast"
            } else {
                "reference"
            }
        );
        errln!(
            "arena: planned {} bytes ({}), measured high-water {} bytes; KV cache ({}) {} bytes for {} tokens; stopped: {}",
            g.plan.peak_bytes,
            crate::size::human(g.plan.peak_bytes),
            g.high_water,
            g.plan.kv.name(),
            g.plan.keys_bytes + g.plan.values_bytes,
            g.plan.seq_len,
            g.stop.name()
        );
        if g.high_water != g.plan.peak_bytes {
            bail!(
                "the arena's high-water mark {} differs from the plan's peak {}",
                g.high_water,
                g.plan.peak_bytes
            );
        }
        Ok(())
    })
}
