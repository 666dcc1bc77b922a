//! The `topkit` command-line tool: pack a Hugging Face model into one `.tkm` file, inspect a
//! packed file, check a memory budget before flashing, embed texts with a packed sentence
//! encoder, sweep top-k settings for accuracy against peak RAM, and generate text with a
//! packed causal language model.
//!
//! Exit codes: 0 success (and "fits"), 1 "does not fit" (`budget` with `--ram`/`--flash`),
//! 2 any error (bad arguments, unreadable or malformed files), with a message naming it.
//!
//! Each command is a module that owns its clap arguments (`pack::PackArgs`, ...) and its
//! `run`; [`RunOpts`] are the run options several commands share. `pack` reads its source
//! with [`import`] (Hugging Face directories and GGUF files), converts the weights with
//! [`quant`] and writes the file with [`writer`].
#![forbid(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!(
    "topkit-cli writes little-endian files by casting host values: it needs a little-endian host"
);

/// `println!` that ignores write errors: when stdout is a closed pipe (`topkit inspect | head`)
/// the tool keeps going and still exits with its verdict, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod budget;
pub mod embed;
pub mod eval;
pub mod eval_lm;
pub mod generate;
pub mod import;
pub mod inspect;
pub mod pack;
pub mod quant;
pub mod size;
pub mod writer;

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand};
use topkit::RunConfig;
use topkit::format::{PackedModel, ParseOptions};

use crate::writer::AlignedBytes;

/// Exit code: success, or the model fits the budget.
pub const EXIT_OK: i32 = 0;
/// Exit code: the model does not fit the `--ram`/`--flash` budget.
pub const EXIT_DOES_NOT_FIT: i32 = 1;
/// Exit code: an error (arguments, files, malformed model).
pub const EXIT_ERROR: i32 = 2;

/// Transformer inference in fixed memory: pack models, inspect them, plan memory budgets.
#[derive(Debug, Parser)]
#[command(name = "topkit", version, about, long_about = None)]
#[command(after_help = "Exit codes: 0 ok (fits), 1 does not fit (budget), 2 error.")]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack a Hugging Face model directory into one .tkm file (weights, config, tokenizer).
    ///
    /// SRC holds config.json, model.safetensors and the tokenizer (vocab.txt or
    /// tokenizer.json). Supported model_type: bert. Matrices (including embeddings) are stored
    /// in --dtype; biases and norm weights stay f32. The quantization error of every tensor
    /// (largest absolute error, relative RMS error) is printed while packing.
    Pack(pack::PackArgs),
    /// Show a packed file: configuration, tokenizer, tensors (dtype, shape, bytes) and the
    /// checksum.
    Inspect(inspect::InspectArgs),
    /// Plan the RAM of one inference and check it (and the flash) against a budget.
    ///
    /// Prints every working buffer of the core's memory plan (topkit::try_plan_with, for the
    /// chosen kernels) with its phase and size, the peak (the arena to provide), the N x N
    /// score matrix vanilla attention would need, and the flash the packed file takes. With
    /// --ram and/or --flash, exits 0 if the model fits and 1 if not, naming the buffer that
    /// overflows. SIZE is a byte count
    /// with an optional binary suffix: 65536, 64K (= 65536), 4M (= 4 * 1024 * 1024), 1G.
    Budget(budget::BudgetArgs),
    /// Embed texts with a packed sentence encoder (e.g. all-MiniLM-L6-v2).
    ///
    /// Tokenizes with the file's WordPiece tokenizer, runs the encoder in one arena of the
    /// plan's peak bytes (sized for the file's max_seq tokens) and prints one embedding per
    /// text: a line of space-separated values, or with --json {"embeddings": [[...], ...]}.
    /// Texts longer than max_seq tokens are truncated as the reference tokenizer does, with a
    /// note on stderr. Attention and feed-forward are dense unless --k-attn / --k-ff are given.
    Embed(embed::EmbedArgs),
    /// Sweep top-k settings: accuracy (cosine to dense) against peak RAM, to choose k.
    ///
    /// Every setting of the cross product (k_attn in --k-attn or dense) x (k_ff in --k-ff or
    /// off) embeds every text of --file; the table gives, per setting, the plan's peak RAM
    /// (the arena to provide), the arena's measured high-water mark, and the min and mean
    /// cosine to the dense embeddings. Progress goes to stderr.
    Eval(eval::EvalArgs),
    /// Generate text with a packed causal language model (e.g. SmolLM2), streaming it.
    ///
    /// Tokenizes the prompt with the file's tokenizer (or takes --prompt-ids), prefills it in
    /// chunks of --chunk tokens, then decodes one token at a time over the KV cache: greedy
    /// by default, sampled with --temperature and --top-p from a seeded generator. The text is
    /// streamed to stdout; prefill and decode speeds (tokens/s) and the arena (planned peak
    /// and measured high-water) go to stderr. Stops at the end-of-sequence token, after
    /// --max-tokens, or when the context (--seq) is full.
    Generate(generate::GenerateArgs),
    /// Compare top-k attention with dense on a language model over one long text.
    ///
    /// For dense and every --k-attn: the next-token distributions at every position of the
    /// text (teacher-forced) against dense's (mean and max KL(dense || top-k), agreement of
    /// the most likely token), a greedy continuation of --generate tokens against dense's,
    /// prefill and decode speeds (tokens/s), and the arena (planned and measured). Prints a
    /// Markdown table (or JSON); progress goes to stderr.
    EvalLm(eval_lm::EvalLmArgs),
}

/// The options of one run that `budget`, `embed` and `generate` share: top-k settings and
/// the chunk. A command whose help says more about one of them overrides its text with
/// `mut_arg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct RunOpts {
    /// Keys kept per query (top-k attention); default: dense attention.
    #[arg(long)]
    pub k_attn: Option<usize>,
    /// Hidden units kept per token in the feed-forward layers; default: dense.
    #[arg(long)]
    pub k_ff: Option<usize>,
    /// Tokens processed together.
    #[arg(long, default_value_t = 16)]
    pub chunk: usize,
}

impl RunOpts {
    /// The run of these options over `seq_len` tokens.
    pub fn config(&self, seq_len: usize) -> RunConfig {
        RunConfig {
            seq_len,
            chunk: self.chunk,
            k_attn: self.k_attn,
            k_ff: self.k_ff,
        }
    }
}

/// Runs the tool on `args` (the first is the program name) and returns the exit code.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version requests are not errors; bad arguments are.
            return if e.use_stderr() { EXIT_ERROR } else { EXIT_OK };
        }
    };
    let result = match &cli.command {
        Command::Pack(a) => pack::run(a).map(|_| EXIT_OK),
        Command::Inspect(a) => inspect::run(a).map(|_| EXIT_OK),
        Command::Budget(a) => budget::run(a),
        Command::Embed(a) => embed::run(a).map(|_| EXIT_OK),
        Command::Eval(a) => eval::run(a).map(|_| EXIT_OK),
        Command::Generate(a) => generate::run(a).map(|_| EXIT_OK),
        Command::EvalLm(a) => eval_lm::run(a).map(|_| EXIT_OK),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

/// Checks the command-line parts of `run` against a model whose feed-forward width is `d_ff`
/// (`--k-attn` and `--chunk` at least 1, `--k-ff` in `1..=d_ff`), with messages that name the
/// flags. `plan()` checks the same, but its errors speak of config fields, not flags.
pub fn check_run_args(run: &RunConfig, d_ff: usize) -> Result<()> {
    if run.k_attn == Some(0) {
        anyhow::bail!("--k-attn must be at least 1 (keys kept per query)");
    }
    if let Some(k) = run.k_ff
        && (k == 0 || k > d_ff)
    {
        anyhow::bail!("--k-ff must be in 1..={d_ff} (the model's feed-forward width), got {k}");
    }
    if run.chunk == 0 {
        anyhow::bail!("--chunk must be at least 1");
    }
    Ok(())
}

/// Reads a packed file into aligned memory.
pub fn read_packed(path: &Path) -> Result<AlignedBytes> {
    AlignedBytes::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))
}

/// Parses a packed file, with an error that names the file (and the tensor, when a table
/// entry is at fault).
pub fn parse_packed<'a>(path: &Path, bytes: &'a [u8], verify_crc: bool) -> Result<PackedModel<'a>> {
    PackedModel::parse_with(bytes, ParseOptions { verify_crc }).map_err(|e| {
        let hint = match e {
            topkit::Error::BadTensorEntry { index, .. }
            | topkit::Error::TensorSize { index, .. } => inspect::raw_tensor_name(bytes, index)
                .map(|n| format!(" (tensor {n:?})"))
                .unwrap_or_default(),
            _ => String::new(),
        };
        anyhow!("{}: {e}{hint}", path.display())
    })
}

/// `--kernels` of `topkit embed` and `topkit budget`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelChoice {
    /// Host speed: int8 activations, AVX2/FMA when present.
    Fast,
    /// The generic kernels, bit-identical on every target.
    Reference,
}

impl From<KernelChoice> for topkit::kernels::Kernels {
    fn from(k: KernelChoice) -> Self {
        match k {
            KernelChoice::Fast => topkit::kernels::Kernels::Fast,
            KernelChoice::Reference => topkit::kernels::Kernels::Reference,
        }
    }
}
