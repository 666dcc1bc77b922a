//! The `topkit` command-line tool: pack a Hugging Face model into one `.tkm` file, inspect a
//! packed file, check a memory budget before flashing, embed texts with a packed sentence
//! encoder, sweep top-k settings for accuracy against peak RAM, and generate text with a
//! packed causal language model.
//!
//! Exit codes: 0 success (and "fits"), 1 "does not fit" (`budget` with `--ram`/`--flash`),
//! 2 any error (bad arguments, unreadable or malformed files), with a message naming it.
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
pub mod gguf;
pub mod hf;
pub mod inspect;
pub mod pack;
pub mod quant;
pub mod size;
pub mod writer;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::{Parser, Subcommand};
use topkit::format::{PackedModel, ParseOptions};

use crate::quant::StoreDType;
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
    Pack {
        /// Hugging Face model directory.
        src: PathBuf,
        /// Output file (conventionally .tkm).
        #[arg(short, long)]
        output: PathBuf,
        /// Storage of the matrices: f32 (exact), f16 (half size, relative error <= 2^-11) or
        /// int8 (quarter size, symmetric, one f32 scale per row, error <= scale/2).
        #[arg(long, value_enum, default_value_t = StoreDType::F32)]
        dtype: StoreDType,
        /// Longest input the packed model accepts, tokens; the position table is cut to it.
        /// Default: the model's max_position_embeddings.
        #[arg(long)]
        max_seq: Option<usize>,
    },
    /// Show a packed file: configuration, tokenizer, tensors (dtype, shape, bytes) and the
    /// checksum.
    Inspect {
        /// Packed model file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Do not check the CRC-32 (report it as not checked).
        #[arg(long)]
        no_verify: bool,
    },
    /// Plan the RAM of one inference and check it (and the flash) against a budget.
    ///
    /// Prints every working buffer of the core's memory plan (topkit::try_plan_with, for the
    /// chosen kernels) with its phase and size, the peak (the arena to provide), the N x N
    /// score matrix vanilla attention would need, and the flash the packed file takes. With
    /// --ram and/or --flash, exits 0 if the model fits and 1 if not, naming the buffer that
    /// overflows. SIZE is a byte count
    /// with an optional binary suffix: 65536, 64K (= 65536), 4M (= 4 * 1024 * 1024), 1G.
    Budget {
        /// Packed model file.
        file: PathBuf,
        /// Tokens per inference (the buffers are sized for it).
        #[arg(long)]
        seq: usize,
        /// Keys kept per query (top-k attention); default: dense attention.
        #[arg(long)]
        k_attn: Option<usize>,
        /// Hidden units kept per token in the feed-forward layers; default: dense.
        #[arg(long)]
        k_ff: Option<usize>,
        /// Queries (and tokens) processed together.
        #[arg(long, default_value_t = 16)]
        chunk: usize,
        /// RAM budget for the arena, SIZE (e.g. 64K, 4M).
        #[arg(long, value_parser = size::parse_size)]
        ram: Option<usize>,
        /// Flash budget for the packed file, SIZE (e.g. 1M, 32M).
        #[arg(long, value_parser = size::parse_size)]
        flash: Option<usize>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Write Rust constants (MODEL, RUN, KERNELS, PLAN, PEAK_BYTES, ...) for a firmware
        /// to include.
        #[arg(long, value_name = "PATH")]
        emit_rust: Option<PathBuf>,
        /// Kernels the plan is for: `fast` adds the fast kernels' working buffers (int8
        /// activations, attention blocks), `reference` (the generic kernels, what the firmware
        /// runs by default). Default: what `topkit embed` (encoders: fast) or `topkit generate`
        /// (causal models: reference) runs the file with.
        #[arg(long, value_enum)]
        kernels: Option<KernelChoice>,
    },
    /// Embed texts with a packed sentence encoder (e.g. all-MiniLM-L6-v2).
    ///
    /// Tokenizes with the file's WordPiece tokenizer, runs the encoder in one arena of the
    /// plan's peak bytes (sized for the file's max_seq tokens) and prints one embedding per
    /// text: a line of space-separated values, or with --json {"embeddings": [[...], ...]}.
    /// Texts longer than max_seq tokens are truncated as the reference tokenizer does, with a
    /// note on stderr. Attention and feed-forward are dense unless --k-attn / --k-ff are given.
    Embed {
        /// Packed model file.
        file: PathBuf,
        /// Keys kept per query (top-k attention); default: dense attention.
        #[arg(long)]
        k_attn: Option<usize>,
        /// Hidden units kept per token in the feed-forward layers; default: dense.
        #[arg(long)]
        k_ff: Option<usize>,
        /// Tokens processed together.
        #[arg(long, default_value_t = 16)]
        chunk: usize,
        /// Print {"embeddings": [[...], ...]} instead of one line per text.
        #[arg(long)]
        json: bool,
        /// Kernels: `fast` (int8 activations with blocked dynamic scales, AVX2/FMA when the
        /// CPU has them) or `reference` (the generic kernels every target runs, bit for bit;
        /// what the firmware and WASM builds compute).
        #[arg(long, value_enum, default_value_t = KernelChoice::Fast)]
        kernels: KernelChoice,
        /// Read texts from PATH, one per line (blank lines skipped), before any TEXT.
        #[arg(long = "file", value_name = "PATH")]
        text_file: Option<PathBuf>,
        /// Texts to embed.
        texts: Vec<String>,
    },
    /// Sweep top-k settings: accuracy (cosine to dense) against peak RAM, to choose k.
    ///
    /// Every setting of the cross product (k_attn in --k-attn or dense) x (k_ff in --k-ff or
    /// off) embeds every text of --file; the table gives, per setting, the plan's peak RAM
    /// (the arena to provide), the arena's measured high-water mark, and the min and mean
    /// cosine to the dense embeddings. Progress goes to stderr.
    Eval {
        /// Packed model file.
        file: PathBuf,
        /// Texts, one per line (blank lines skipped).
        #[arg(long = "file", value_name = "TEXTS")]
        text_file: PathBuf,
        /// Keys kept per query to try, comma-separated (dense is always included).
        #[arg(long, value_name = "LIST", value_parser = eval::parse_k, value_delimiter = ',', default_value = "8,16,32,64,128")]
        k_attn: Vec<usize>,
        /// Feed-forward hidden units kept per token to try, comma-separated (off is always
        /// included); default: only off.
        #[arg(long, value_name = "LIST", value_parser = eval::parse_k, value_delimiter = ',')]
        k_ff: Vec<usize>,
        /// Tokens processed together.
        #[arg(long, default_value_t = 16)]
        chunk: usize,
        /// Draw mean and min cosine vs peak RAM into this SVG file, one series per k_ff.
        #[arg(long, value_name = "OUT.svg")]
        plot: Option<PathBuf>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Generate text with a packed causal language model (e.g. SmolLM2), streaming it.
    ///
    /// Tokenizes the prompt with the file's tokenizer (or takes --prompt-ids), prefills it in
    /// chunks of --chunk tokens, then decodes one token at a time over the KV cache: greedy
    /// by default, sampled with --temperature and --top-p from a seeded generator. The text is
    /// streamed to stdout; prefill and decode speeds (tokens/s) and the arena (planned peak
    /// and measured high-water) go to stderr. Stops at the end-of-sequence token, after
    /// --max-tokens, or when the context (--seq) is full.
    Generate {
        /// Packed model file.
        file: PathBuf,
        /// Prompt text.
        #[arg(long)]
        prompt: Option<String>,
        /// Prompt as comma-separated token ids instead of text.
        #[arg(long, value_name = "IDS", value_delimiter = ',')]
        prompt_ids: Option<Vec<u32>>,
        /// Wrap the prompt in the chat template (ChatML, as SmolLM2-Instruct expects).
        #[arg(long)]
        chat: bool,
        /// System message of the chat template (default: SmolLM2's).
        #[arg(long, requires = "chat")]
        system: Option<String>,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_tokens: usize,
        /// Keys kept per query (top-k attention over the cache); default: dense attention.
        #[arg(long)]
        k_attn: Option<usize>,
        /// Hidden units kept per token in the feed-forward layers; default: dense.
        #[arg(long)]
        k_ff: Option<usize>,
        /// Prompt tokens processed together (prefill).
        #[arg(long, default_value_t = 16)]
        chunk: usize,
        /// Sampling temperature; 0 is greedy (ties to the lowest id).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Top-p: sample only from the smallest set of tokens with this much probability.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler (PCG32).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Context the KV cache is sized for, tokens (default: prompt + max-tokens, at most
        /// the model's max_seq).
        #[arg(long)]
        seq: Option<usize>,
        /// Do not stop at the end-of-sequence token.
        #[arg(long)]
        ignore_eos: bool,
        /// Print {"prompt_ids", "ids", "text", speeds, bytes} as JSON instead of streaming.
        #[arg(long)]
        json: bool,
    },
    /// Compare top-k attention with dense on a language model over one long text.
    ///
    /// For dense and every --k-attn: the next-token distributions at every position of the
    /// text (teacher-forced) against dense's (mean and max KL(dense || top-k), agreement of
    /// the most likely token), a greedy continuation of --generate tokens against dense's,
    /// prefill and decode speeds (tokens/s), and the arena (planned and measured). Prints a
    /// Markdown table (or JSON); progress goes to stderr.
    EvalLm {
        /// Packed model file.
        file: PathBuf,
        /// The text, tokenized with the file's tokenizer.
        #[arg(long, value_name = "PATH")]
        text_file: Option<PathBuf>,
        /// The text as token ids (whitespace or comma separated) instead.
        #[arg(long, value_name = "PATH", conflicts_with = "text_file")]
        ids_file: Option<PathBuf>,
        /// Keys kept per query to compare with dense, comma-separated.
        #[arg(long, value_name = "LIST", value_parser = eval::parse_k, value_delimiter = ',', default_value = "16,32,64")]
        k_attn: Vec<usize>,
        /// Tokens processed together (prefill).
        #[arg(long, default_value_t = 16)]
        chunk: usize,
        /// Greedy tokens to generate after the text.
        #[arg(long, default_value_t = 32)]
        generate: usize,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
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
    let result = match cli.command {
        Command::Pack {
            src,
            output,
            dtype,
            max_seq,
        } => pack::run(&pack::PackArgs {
            src,
            output,
            dtype,
            max_seq,
        })
        .map(|_| EXIT_OK),
        Command::Inspect {
            file,
            json,
            no_verify,
        } => inspect::run(&file, json, !no_verify).map(|_| EXIT_OK),
        Command::Budget {
            file,
            seq,
            k_attn,
            k_ff,
            chunk,
            ram,
            flash,
            json,
            emit_rust,
            kernels,
        } => budget::run(&budget::BudgetArgs {
            file,
            seq,
            k_attn,
            k_ff,
            chunk,
            ram,
            flash,
            json,
            emit_rust,
            kernels: kernels.map(Into::into),
        }),
        Command::Embed {
            file,
            k_attn,
            k_ff,
            chunk,
            json,
            kernels,
            text_file,
            texts,
        } => embed::run(&embed::EmbedArgs {
            file,
            k_attn,
            k_ff,
            chunk,
            json,
            kernels: kernels.into(),
            text_file,
            texts,
        })
        .map(|_| EXIT_OK),
        Command::Eval {
            file,
            text_file,
            k_attn,
            k_ff,
            chunk,
            plot,
            json,
        } => eval::run(&eval::EvalArgs {
            file,
            text_file,
            k_attn,
            k_ff,
            chunk,
            plot,
            json,
        })
        .map(|_| EXIT_OK),
        Command::Generate {
            file,
            prompt,
            prompt_ids,
            chat,
            system,
            max_tokens,
            k_attn,
            k_ff,
            chunk,
            temperature,
            top_p,
            seed,
            seq,
            ignore_eos,
            json,
        } => generate::run(&generate::GenerateArgs {
            file,
            prompt,
            prompt_ids,
            chat,
            system,
            max_tokens,
            k_attn,
            k_ff,
            chunk,
            temperature,
            top_p,
            seed,
            seq,
            ignore_eos,
            json,
        })
        .map(|_| EXIT_OK),
        Command::EvalLm {
            file,
            text_file,
            ids_file,
            k_attn,
            chunk,
            generate,
            json,
        } => eval_lm::run(&eval_lm::EvalLmArgs {
            file,
            text_file,
            ids_file,
            k_attn,
            chunk,
            generate,
            json,
        })
        .map(|_| EXIT_OK),
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
pub fn check_run_args(run: &topkit::RunConfig, d_ff: usize) -> Result<()> {
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
