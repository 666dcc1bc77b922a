//! `topkit embed`: sentence embeddings of texts with a packed encoder (WordPiece tokenizer from
//! the file, dense or top-k attention and feed-forward), in one arena of the plan's peak bytes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use topkit::encoder::{Encoder, layers};
use topkit::format::{PackedModel, TokenizerKind, VocabView};
use topkit::kernels::Kernels;
use topkit::tokenizer::WordPiece;
use topkit::{KvType, Plan, RunConfig};

use crate::options::{KernelChoice, KvChoice, RunOpts};

/// Arguments of `topkit embed`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmbedArgs {
    /// Packed model file.
    pub file: PathBuf,
    /// Top-k settings and the chunk.
    #[command(flatten)]
    pub run: RunOpts,
    /// Print {"embeddings": [[...], ...]} instead of one line per text.
    #[arg(long)]
    pub json: bool,
    /// Kernels: `fast` (int8 activations with blocked dynamic scales, AVX2/FMA when the
    /// CPU has them) or `reference` (the generic kernels every target runs, bit for bit;
    /// what the firmware and WASM builds compute).
    #[arg(long, value_enum, default_value_t = KernelChoice::Fast)]
    pub kernels: KernelChoice,
    /// Storage of the attention keys and values: `f32` (exact), `f16`, or `int8` (one scale
    /// per head row; about 3.5x less memory than f32).
    #[arg(long, value_enum, default_value_t = KvChoice::F32)]
    pub kv: KvChoice,
    /// Read texts from PATH, one per line (blank lines skipped), before any TEXT.
    #[arg(long = "file", value_name = "PATH")]
    pub text_file: Option<PathBuf>,
    /// Texts to embed.
    pub texts: Vec<String>,
}

/// A tokenized text.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Token ids, `[CLS]` and `[SEP]` included, at most the model's max_seq.
    pub ids: Vec<u32>,
    /// Tokens of the whole text before truncation (`[CLS]` and `[SEP]` included).
    pub full_len: usize,
}

impl Tokens {
    /// Whether the text was cut to the model's max_seq.
    pub fn truncated(&self) -> bool {
        self.full_len > self.ids.len()
    }
}

/// A packed encoder ready to embed: the encoder, its tokenizer and the longest input.
pub struct Session<'a, 'v> {
    /// The encoder over the file's weights.
    pub encoder: Encoder<'a>,
    tokenizer: WordPiece<'v, VocabView<'a>>,
    /// Longest input, tokens (the file's max_seq).
    pub max_seq: usize,
}

/// Opens `path` and calls `f` with the encoder (run with `kernels`) and the tokenizer it
/// holds. Errors name the file.
///
/// # Errors
/// When the file cannot be read or parsed, is not a sentence encoder or has no WordPiece
/// tokenizer, and whatever `f` returns.
pub fn with_session<R>(
    path: &Path,
    kernels: Kernels,
    f: impl FnOnce(&Session<'_, '_>) -> Result<R>,
) -> Result<R> {
    with_session_kv(path, kernels, KvType::F32, f)
}

/// [`with_session`] with the keys and values stored as `kv`.
///
/// # Errors
/// As [`with_session`].
pub fn with_session_kv<R>(
    path: &Path,
    kernels: Kernels,
    kv: KvType,
    f: impl FnOnce(&Session<'_, '_>) -> Result<R>,
) -> Result<R> {
    let bytes = crate::packed::read_packed(path)?;
    let pm = crate::packed::parse_packed(path, bytes.as_slice(), true)?;
    let ctx = |what: &str| format!("{}: {what}", path.display());
    let layers = layers(&pm).map_err(|e| anyhow!("{}: {e}", ctx("cannot view the layers")))?;
    let encoder = Encoder::from_packed(&pm, &layers)
        .map_err(|e| anyhow!("{}: {e}", ctx("not a sentence encoder")))?
        .with_kernels(kernels)
        .with_kv(kv);
    let tok = pm.tokenizer();
    if tok.kind() != TokenizerKind::WordPiece {
        bail!(
            "{}: the file's tokenizer is {:?}; embed needs a WordPiece tokenizer",
            path.display(),
            tok.kind()
        );
    }
    let tokenizer = WordPiece::from_view(tok)
        .map_err(|e| anyhow!("{}: {e}", ctx("bad WordPiece vocabulary")))?;
    let max_seq = max_seq(&pm);
    f(&Session {
        encoder,
        tokenizer,
        max_seq,
    })
}

fn max_seq(pm: &PackedModel<'_>) -> usize {
    pm.config().max_seq
}

impl Session<'_, '_> {
    /// Tokenizes `text`, truncating to max_seq as the reference tokenizer does, and counts the
    /// tokens of the whole text (for the truncation note).
    ///
    /// # Errors
    /// When the tokenizer fails on `text`.
    pub fn tokenize(&self, text: &str) -> Result<Tokens> {
        // Every token but [CLS]/[SEP] comes from at least one byte of the text, so this buffer
        // never truncates (normalisation can grow a character, hence the factor 2).
        let mut all = vec![0u32; 2 * text.len() + 2];
        let full_len = self.tokenizer.encode(text, &mut all)?.len;
        let mut ids = vec![0u32; self.max_seq];
        let n = self.tokenizer.encode(text, &mut ids)?.len;
        ids.truncate(n);
        Ok(Tokens { ids, full_len })
    }

    /// The run of `opts` for inputs up to max_seq tokens.
    pub fn run_config(&self, opts: &RunOpts) -> RunConfig {
        opts.config(self.max_seq)
    }

    /// Checks `run` against the model (k within range, chunk) and plans its memory.
    ///
    /// # Errors
    /// When `--k-attn`, `--k-ff` or `--chunk` is out of range, or the core cannot plan `run`.
    pub fn plan(&self, run: &RunConfig) -> Result<Plan> {
        crate::options::check_run_args(run, self.encoder.config().d_ff)?;
        self.encoder
            .model()
            .plan(run)
            .map_err(|e| anyhow!("cannot plan this run: {e}"))
    }

    /// Embeds tokenized texts with `run` in one arena of exactly `plan.peak_bytes`, calling
    /// `each(index, embedding)`. Returns the arena's high-water mark, bytes (the most any
    /// text used).
    ///
    /// # Errors
    /// When the encoder fails on a text (the error names it), and whatever `each` returns.
    pub fn embed_all(
        &self,
        run: &RunConfig,
        plan: &Plan,
        texts: &[Tokens],
        mut each: impl FnMut(usize, Vec<f32>) -> Result<()>,
    ) -> Result<usize> {
        let mut mem = crate::options::arena_for(plan, "--chunk or --k-attn")?;
        let d = self.encoder.config().d_model;
        let mut high = 0;
        for (i, t) in texts.iter().enumerate() {
            let mut arena = mem.arena();
            let mut e = vec![0f32; d];
            self.encoder
                .embed(run, &t.ids, &mut arena, &mut e)
                .with_context(|| format!("text {}", i + 1))?;
            high = high.max(arena.high_water());
            each(i, e)?;
        }
        Ok(high)
    }
}

/// Texts of `--file` (one per line, blank lines skipped) and then those of the command line.
///
/// # Errors
/// When `file` cannot be read, or there is no text at all.
pub fn read_texts(file: Option<&Path>, texts: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if let Some(path) = file {
        let s = crate::files::read_text(path).context("cannot read texts")?;
        out.extend(
            s.lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned),
        );
    }
    out.extend(texts.iter().cloned());
    if out.is_empty() {
        bail!("no text to embed: give TEXT arguments or --file with one text per line");
    }
    Ok(out)
}

/// Tokenizes every text, with a note on stderr for each one cut to max_seq.
///
/// # Errors
/// When the tokenizer fails on a text.
pub fn tokenize_all(s: &Session<'_, '_>, texts: &[String]) -> Result<Vec<Tokens>> {
    texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let t = s.tokenize(text)?;
            if t.truncated() {
                errln!(
                    "note: text {} has {} tokens ([CLS] and [SEP] included); truncated to {} \
                     (the model's max_seq), as the reference does",
                    i + 1,
                    t.full_len,
                    t.ids.len()
                );
            }
            Ok(t)
        })
        .collect()
}

/// Runs `topkit embed`.
///
/// # Errors
/// When the texts or the model cannot be read, the run options are out of range or the
/// encoder fails.
pub fn run(args: &EmbedArgs) -> Result<()> {
    let texts = read_texts(args.text_file.as_deref(), &args.texts)?;
    with_session_kv(&args.file, args.kernels.into(), args.kv.into(), |s| {
        let run = s.run_config(&args.run);
        let plan = s.plan(&run)?;
        let tokens = tokenize_all(s, &texts)?;
        let mut all = Vec::with_capacity(tokens.len());
        s.embed_all(&run, &plan, &tokens, |_, e| {
            if !args.json {
                let line: Vec<String> = e.iter().map(|x| format!("{x:.7}")).collect();
                outln!("{}", line.join(" "));
            } else {
                all.push(e);
            }
            Ok(())
        })?;
        if args.json {
            outln!("{}", json!({ "embeddings": all }));
        }
        Ok(())
    })
}
