//! The command line: the commands, their dispatch and the exit codes.

use std::ffi::OsString;
use std::io::Write as _;

use clap::{Parser, Subcommand};

use crate::{budget, embed, eval, eval_lm, generate, inspect, pack};

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
    /// in --dtype (or --dtype-for's); biases and norm weights stay f32. With --flash SIZE the
    /// dtypes are chosen per tensor so that the file fits, by measured loss on calibration
    /// texts. The quantization error of every tensor (largest absolute error, relative RMS
    /// error) is printed while packing.
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
    /// With --against REFERENCE: FILE's embeddings against another file's instead (min and
    /// mean cosine), what a quantization recipe costs.
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
    /// With --against REFERENCE: FILE against another file instead (KL(reference || FILE),
    /// top-1 agreement, greedy continuation), what a quantization recipe costs.
    EvalLm(eval_lm::EvalLmArgs),
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
    crate::stdio::reset();
    let result = match &cli.command {
        Command::Pack(a) => pack::run(a).map(|_| EXIT_OK),
        Command::Inspect(a) => inspect::run(a).map(|_| EXIT_OK),
        Command::Budget(a) => {
            budget::run(a).map(|fits| if fits { EXIT_OK } else { EXIT_DOES_NOT_FIT })
        }
        Command::Embed(a) => embed::run(a).map(|_| EXIT_OK),
        Command::Eval(a) => eval::run(a).map(|_| EXIT_OK),
        Command::Generate(a) => generate::run(a).map(|_| EXIT_OK),
        Command::EvalLm(a) => eval_lm::run(a).map(|_| EXIT_OK),
    };
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            errln!("error: {e:#}");
            EXIT_ERROR
        }
    };
    match crate::stdio::finish() {
        Some(failure) => {
            // Best effort: stderr may be the stream that failed.
            let _ = writeln!(std::io::stderr(), "error: {failure}");
            EXIT_ERROR
        }
        None => code,
    }
}
