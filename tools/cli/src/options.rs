//! Options and checks that several commands share.

use anyhow::Result;
use topkit::RunConfig;

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

/// Checks the command-line parts of `run` against a model whose feed-forward width is `d_ff`
/// (`--k-attn` and `--chunk` at least 1, `--k-ff` in `1..=d_ff`), with messages that name the
/// flags. `plan()` checks the same, but its errors speak of config fields, not flags.
///
/// # Errors
/// When `--k-attn` or `--chunk` is 0 or `--k-ff` is not in `1..=d_ff`.
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

/// `--kv`: how the attention keys and values (the decoder's KV cache, the encoder's keys and
/// values) are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum KvChoice {
    /// 4 bytes per value: exact.
    #[default]
    F32,
    /// 2 bytes per value (IEEE half).
    F16,
    /// 1 byte per value and one f32 scale per head row.
    Int8,
}

impl From<KvChoice> for topkit::KvType {
    fn from(k: KvChoice) -> Self {
        match k {
            KvChoice::F32 => topkit::KvType::F32,
            KvChoice::F16 => topkit::KvType::F16,
            KvChoice::Int8 => topkit::KvType::Int8,
        }
    }
}

/// Bytes of memory this machine can still give (available RAM plus free swap, from
/// `/proc/meminfo`), or `None` where that cannot be read.
fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        let line = info.lines().find(|l| l.starts_with(key))?;
        line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()
    };
    Some(
        kib("MemAvailable:")?
            .saturating_add(kib("SwapFree:").unwrap_or(0))
            .saturating_mul(1024),
    )
}

/// The arena of `plan`, allocated only after checking that the machine can give it: an error
/// with the bytes needed instead of an abort when it cannot (`what` names the flags that size
/// it, for the message).
///
/// # Errors
/// When the plan's peak is more than the memory available, or the allocation fails.
pub fn arena_for(plan: &topkit::Plan, what: &str) -> Result<topkit::ArenaBuf> {
    let bytes = plan.peak_bytes;
    let too_much = |avail: &str| {
        anyhow::anyhow!(
            "the arena needs {bytes} bytes ({}), more than {avail}: give a smaller {what}",
            crate::size::human(bytes)
        )
    };
    if let Some(avail) = memory_available()
        && bytes as u64 > avail
    {
        return Err(too_much(&format!(
            "this machine has available ({})",
            crate::size::human(usize::try_from(avail).unwrap_or(usize::MAX))
        )));
    }
    topkit::ArenaBuf::try_new(bytes).map_err(|_| too_much("the allocator could give"))
}
