//! `topkit pack`: a Hugging Face model directory or a GGUF file to one packed file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use safetensors::SafeTensors;
use topkit::format::PackedModel;
use topkit::kernels::DType;

use crate::files;
use crate::flash;
use crate::import::gguf::{self, Gguf};
use crate::import::{self, RawTensor, Source, hf};
use crate::inspect::dtype_name;
use crate::quant::{self, QuantError, StoreDType};
use crate::size::human;
use crate::writer::{self, AlignedBytes, Tensor};

/// Arguments of `topkit pack`.
#[derive(Debug, Clone, clap::Args)]
pub struct PackArgs {
    /// Hugging Face model directory, or GGUF file.
    pub src: PathBuf,
    /// Output file (conventionally .tkm).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Storage of the matrices: f32 (exact), f16 (half size, relative error <= 2^-11), int8
    /// (quarter size, symmetric, one f32 scale per row, error <= scale/2), or ggml blocks of
    /// 32 weights along a row (q4_0, q4_1, q5_0, q5_1, q8_0; round-to-nearest); every matrix
    /// is dequantized first. Matrices whose rows are not whole blocks are stored int8 (said
    /// in the report); vectors (biases, norms) stay f32. Default: f32 for a Hugging Face
    /// directory; for a GGUF file, each tensor as it is stored: Q4_0, Q4_1, Q5_0, Q5_1 and
    /// Q8_0 blocks byte for byte (the FFN down projection in ggml's layout, l{i}.ffn.down.w),
    /// F16 matrices as f16, F32, BF16 and the k-quants (Q2_K..Q6_K, which topkit does not
    /// run) dequantized to f32.
    #[arg(long, value_enum, conflicts_with = "flash")]
    pub dtype: Option<StoreDType>,
    /// Per-tensor dtype, PATTERN=DTYPE (repeatable; the last match wins). PATTERN is a glob
    /// (`*`, `?`) on the topkit tensor names when it has `*` or `?`, else a substring:
    /// `tok_emb`, `pos_emb`, `seg_emb`, `l3.q.w`, `l3.ffn.up.w`, `l3.ffn.down_t.w`, `ffn`,
    /// `l*.o.w` (`topkit inspect` lists the names). With --flash, fixes those tensors.
    #[arg(long, value_name = "PATTERN=DTYPE", value_parser = DTypeFor::parse)]
    pub dtype_for: Vec<DTypeFor>,
    /// Flash budget for the whole file (tokenizer, table and alignment included): choose
    /// each tensor's dtype so that the file fits, losing the least accuracy on calibration
    /// texts (GPTQ for the block dtypes of an encoder's linear layers). SIZE: bytes, or with
    /// a 1024-based suffix K, M, G (KB, KiB, MB, MiB, ...): 16MiB.
    #[arg(long, value_name = "SIZE", value_parser = crate::size::parse_size)]
    pub flash: Option<usize>,
    /// Calibration texts for --flash, one per line (default: the shipped
    /// tools/cli/data/calibration.txt).
    #[arg(long, value_name = "FILE", requires = "flash")]
    pub calib: Option<PathBuf>,
    /// With --flash: round-to-nearest only, no GPTQ (to see what GPTQ gains).
    #[arg(long, requires = "flash")]
    pub no_gptq: bool,
    /// Longest input the packed model accepts, tokens; the position table is cut to it.
    /// Default: the model's max_position_embeddings.
    #[arg(long)]
    pub max_seq: Option<usize>,
}

/// One `--dtype-for PATTERN=DTYPE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DTypeFor {
    /// Glob (with `*` or `?`) or substring of tensor names.
    pub pattern: String,
    /// The dtype of the tensors it matches.
    pub dtype: StoreDType,
}

impl DTypeFor {
    /// Parses `PATTERN=DTYPE`.
    ///
    /// # Errors
    /// A message when there is no `=`, the pattern is empty or the dtype is unknown.
    pub fn parse(s: &str) -> std::result::Result<DTypeFor, String> {
        let (p, d) = s
            .rsplit_once('=')
            .ok_or_else(|| format!("{s:?}: expected PATTERN=DTYPE, e.g. tok_emb=q4_1"))?;
        if p.is_empty() {
            return Err(format!("{s:?}: empty pattern"));
        }
        Ok(DTypeFor {
            pattern: p.to_owned(),
            dtype: d.trim().parse()?,
        })
    }

    /// Whether the pattern matches tensor `name`.
    pub fn matches(&self, name: &str) -> bool {
        if self.pattern.contains(['*', '?']) {
            glob(self.pattern.as_bytes(), name.as_bytes())
        } else {
            name.contains(&self.pattern)
        }
    }
}

/// `*` any run of bytes, `?` one byte, the rest literal; the whole name must match.
fn glob(p: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point: the last `*` seen.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < s.len() {
        if i < p.len() && (p[i] == b'?' || p[i] == s[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// The dtype `--dtype-for` gives `name` (the last matching override), if any.
fn override_for(overrides: &[DTypeFor], name: &str) -> Option<StoreDType> {
    overrides
        .iter()
        .rev()
        .find(|o| o.matches(name))
        .map(|o| o.dtype)
}

/// What was packed, per tensor.
#[derive(Debug, Clone)]
pub struct PackedTensor {
    /// topkit name.
    pub name: String,
    /// Source name.
    pub source: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Stored dtype.
    pub dtype: DType,
    /// Bytes in the file (data and scales).
    pub bytes: usize,
    /// Conversion error.
    pub error: QuantError,
    /// With --flash: the relative error the choice was made on (output error on calibration
    /// activations, or the weights' relative RMS) and the method.
    pub flash: Option<(f64, crate::flash::Method)>,
}

/// Summary of a pack.
#[derive(Debug, Clone)]
pub struct PackReport {
    /// Every tensor.
    pub tensors: Vec<PackedTensor>,
    /// Size of the file, bytes.
    pub file_bytes: usize,
    /// Bytes of the tokenizer section.
    pub tokenizer_bytes: usize,
    /// The --flash budget, bytes.
    pub budget: Option<usize>,
}

/// The source file in memory: a safetensors file or a GGUF file.
enum Tensors {
    Safetensors(Vec<u8>),
    Gguf { bytes: Vec<u8>, g: Gguf },
}

/// What `topkit pack` reads: the mapped model and the file its tensors are in.
struct Input {
    src: PathBuf,
    source: Source,
    tensors: Tensors,
}

impl Input {
    fn open(args: &PackArgs) -> Result<Input> {
        if gguf::is_gguf(&args.src) {
            let bytes = files::read_model(&args.src)?;
            let g = Gguf::parse(&bytes).with_context(|| format!("{}", args.src.display()))?;
            let source = gguf::source(&g, args.max_seq)
                .with_context(|| format!("{}", args.src.display()))?;
            return Ok(Input {
                src: args.src.clone(),
                source,
                tensors: Tensors::Gguf { bytes, g },
            });
        }
        let st_path = args.src.join("model.safetensors");
        if !args.src.join("config.json").exists() {
            anyhow::bail!(
                "{} has no config.json: not a Hugging Face model directory (nor a GGUF file)",
                args.src.display()
            );
        }
        let bytes = files::read_model(&st_path)?;
        let st =
            SafeTensors::deserialize(&bytes).map_err(|e| anyhow!("{}: {e}", st_path.display()))?;
        let source = hf::read_dir(&args.src, &st, args.max_seq)
            .with_context(|| format!("{}", args.src.display()))?;
        Ok(Input {
            src: args.src.clone(),
            source,
            tensors: Tensors::Safetensors(bytes),
        })
    }

    /// The files this input was read from, which the output may not overwrite.
    fn files(&self) -> Vec<PathBuf> {
        match self.tensors {
            Tensors::Gguf { .. } => vec![self.src.clone()],
            Tensors::Safetensors(_) => hf::INPUT_FILES.iter().map(|f| self.src.join(f)).collect(),
        }
    }

    /// The stored bytes of source tensor `name`.
    fn raw<'a>(&'a self, name: &'a str) -> Result<RawTensor<'a>> {
        match &self.tensors {
            Tensors::Safetensors(bytes) => {
                let st = SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{e}"))?;
                hf::raw(&st, name)
            }
            Tensors::Gguf { bytes, g } => g.raw(bytes, name),
        }
    }
}

/// Packs `args.src` (a Hugging Face model directory or a GGUF file) into `args.output`,
/// printing per-tensor errors and a summary.
///
/// # Errors
/// When the source cannot be read or is not supported (see [`hf::read_dir`] and
/// [`gguf::source`]), a tensor cannot be loaded or converted, the written file does not parse
/// back, or the output cannot be written.
pub fn run(args: &PackArgs) -> Result<PackReport> {
    let input = Input::open(args)?;
    let inputs = input.files();
    let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
    // Refused before the conversion too, so that the mistake costs no time.
    files::check_not_input(&args.output, &inputs)?;
    let src = &input.source;
    let cfg = &src.config.model;
    outln!(
        "packing {} ({:?}, {} layers, d_model {}, {} heads, d_ff {}, vocab {}, max_seq {}) as {}",
        args.src.display(),
        cfg.arch,
        cfg.n_layers,
        cfg.d_model,
        cfg.n_heads,
        cfg.d_ff,
        cfg.vocab_size,
        cfg.max_seq,
        match (args.flash, args.dtype, &input.tensors) {
            (Some(b), _, _) => format!("dtypes chosen to fit {b} bytes ({})", human(b)),
            (None, Some(d), _) => d.to_string(),
            (None, None, Tensors::Gguf { .. }) => "stored (ggml blocks kept)".into(),
            (None, None, Tensors::Safetensors(_)) => StoreDType::F32.to_string(),
        }
    );
    if !src.skipped.is_empty() {
        let skipped: Vec<_> = src
            .skipped
            .iter()
            .map(|n| crate::inspect::escape_controls(n))
            .collect();
        outln!("not packed (unused by topkit): {}", skipped.join(", "));
    }

    // Bytes in the source per tensor, for the progress bar.
    let sizes: Vec<u64> = src
        .mappings
        .iter()
        .map(|m| input.raw(&m.source).map_or(0, |r| r.data.len() as u64))
        .collect();
    let total: u64 = sizes.iter().sum();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let say = |line: String| {
        if bar.is_hidden() {
            outln!("{line}")
        } else {
            bar.println(line)
        }
    };
    let mut tensors = Vec::with_capacity(src.mappings.len());
    let mut report = Vec::with_capacity(src.mappings.len());
    if let Some(budget) = args.flash {
        // Every tensor in memory as f32 first: the allocation compares them all.
        let mut loaded = Vec::with_capacity(src.mappings.len());
        for (m, &src_bytes) in src.mappings.iter().zip(&sizes) {
            bar.set_message(m.name.clone());
            let (shape, values) = import::load(input.raw(&m.source)?, m.transform)?;
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                bail!("tensor {}: value at element {i} is not finite", m.name);
            }
            loaded.push(flash::Loaded {
                name: m.name.clone(),
                shape,
                values,
            });
            bar.inc(src_bytes);
        }
        bar.finish_and_clear();
        let texts = match &args.calib {
            Some(p) => crate::embed::read_texts(Some(p), &[])?,
            None => crate::calib::DEFAULT_TEXTS
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect(),
        };
        let alloc = flash::allocate(
            src,
            loaded,
            budget,
            |name| override_for(&args.dtype_for, name),
            &texts,
            !args.no_gptq,
        )?;
        outln!(
            "{:<22} {:<14} {:<5} {:<4} {:>11}  {:>10}  {:>10}  {:>10}",
            "tensor",
            "shape",
            "dtype",
            "meth",
            "bytes",
            "rel err",
            "max |err|",
            "rel RMS"
        );
        for ((t, c), &error) in alloc
            .tensors
            .into_iter()
            .zip(&alloc.choices)
            .zip(&alloc.errors)
        {
            let pt = PackedTensor {
                name: t.name.clone(),
                source: src
                    .mappings
                    .iter()
                    .find(|m| m.name == t.name)
                    .map_or_else(String::new, |m| m.source.clone()),
                shape: t.shape.clone(),
                dtype: t.data.dtype(),
                bytes: t.data.bytes(),
                error,
                flash: Some((c.chosen.error, c.chosen.method)),
            };
            outln!(
                "{:<22} {:<14} {:<5} {:<4} {:>11}  {:>10.3e}{} {:>10.3e}  {:>10.3e}",
                pt.name,
                format!("{:?}", pt.shape),
                dtype_name(pt.dtype),
                c.chosen.method.name(),
                pt.bytes,
                c.chosen.error,
                if c.on_outputs { "o" } else { "w" },
                pt.error.max_abs,
                pt.error.rel_rms
            );
            report.push(pt);
            tensors.push(t);
        }
        outln!(
            "rel err: o = relative output error on {} calibration tokens, w = relative RMS of the weights; meth: rtn round-to-nearest, gptq error-compensated",
            alloc.calib_tokens
        );
    } else {
        say(format!(
            "{:<22} {:<14} {:<5} {:>11}  {:>10}  {:>10}",
            "tensor", "shape", "dtype", "bytes", "max |err|", "rel RMS"
        ));
        let gguf = matches!(input.tensors, Tensors::Gguf { .. });
        for (m, &src_bytes) in src.mappings.iter().zip(&sizes) {
            let raw = input.raw(&m.source)?;
            let over = override_for(&args.dtype_for, &m.name);
            // A GGUF's tensors stay as they are stored unless a dtype is asked for.
            let (name, shape, data, error) = if gguf && args.dtype.is_none() && over.is_none() {
                match import::keep::keep_blocks(&raw, m)? {
                    Some(k) => (k.name, k.shape, k.data, QuantError::default()),
                    None => {
                        let dtype = import::keep::default_dtype(&raw);
                        convert(raw, m, dtype)?
                    }
                }
            } else {
                let (shape, values) = import::load(raw, m.transform)?;
                let name = m.name.clone();
                let cols = *shape.last().unwrap_or(&1);
                let wanted = over.unwrap_or(args.dtype.unwrap_or(StoreDType::F32));
                // Vectors (biases, norms) are small and stay exact; matrices whose rows are
                // not whole blocks take int8 instead of a block dtype.
                let dtype = if wanted.fits(&shape) {
                    wanted
                } else if shape.len() >= 2 {
                    say(format!(
                        "note: {name}: rows of {cols} are not whole blocks of {}; stored int8 instead of {wanted}",
                        topkit::kernels::BLOCK
                    ));
                    StoreDType::Int8
                } else {
                    StoreDType::F32
                };
                let (data, error) = quant::convert(&name, values, cols, dtype)?;
                (name, shape, data, error)
            };
            bar.set_message(name.clone());
            let t = PackedTensor {
                name: name.clone(),
                source: m.source.clone(),
                shape: shape.clone(),
                dtype: data.dtype(),
                bytes: data.bytes(),
                error,
                flash: None,
            };
            say(format!(
                "{:<22} {:<14} {:<5} {:>11}  {:>10.3e}  {:>10.3e}",
                t.name,
                format!("{:?}", t.shape),
                dtype_name(t.dtype),
                t.bytes,
                t.error.max_abs,
                t.error.rel_rms
            ));
            report.push(t);
            tensors.push(Tensor { name, shape, data });
            bar.inc(src_bytes);
        }
        bar.finish_and_clear();
    }

    let tokenizer_bytes = src.tokenizer.encode()?.len();
    let file = writer::write_file(&src.config, &src.tokenizer, &tensors)?;
    drop(tensors);
    // Self-check: the core must accept what we wrote, CRC and required tensors included.
    let aligned = AlignedBytes::new(file);
    let parsed = PackedModel::parse(aligned.as_slice()).map_err(|e| {
        anyhow!(
            "{}: the weights do not match the configuration: {e}",
            args.src.display()
        )
    })?;
    files::write_atomic(&args.output, aligned.as_slice(), &inputs)?;

    let file_bytes = aligned.as_slice().len();
    if let Some(budget) = args.flash {
        // The allocation predicted the writer's size; the file written is what counts.
        if file_bytes > budget {
            bail!(
                "the packed file takes {file_bytes} bytes, more than the --flash budget of {budget} bytes"
            );
        }
    }
    outln!(
        "wrote {}: {} ({file_bytes} bytes), {} tensors, CRC {:#010x}",
        args.output.display(),
        human(file_bytes),
        report.len(),
        parsed.header().crc
    );
    let mut by_dtype: BTreeMap<&str, (usize, usize, f64, f64)> = BTreeMap::new();
    for t in &report {
        let e = by_dtype.entry(dtype_name(t.dtype)).or_default();
        e.0 += 1;
        e.1 += t.bytes;
        e.2 = e.2.max(t.error.max_abs);
        e.3 = e.3.max(t.error.rel_rms);
    }
    for (name, (n, bytes, max_abs, rel)) in &by_dtype {
        outln!(
            "  {name:<5} {n:>4} tensors {:>12}  largest max |err| {max_abs:.3e}, largest rel RMS {rel:.3e}",
            human(*bytes)
        );
    }
    outln!(
        "  tokenizer: {} tokens, {}",
        src.tokenizer.tokens.len(),
        human(tokenizer_bytes)
    );
    if let Some(budget) = args.flash {
        outln!(
            "  budget met: {file_bytes} of {budget} bytes ({} of {}), {} bytes to spare",
            human(file_bytes),
            human(budget),
            budget - file_bytes
        );
    }
    Ok(PackReport {
        tensors: report,
        file_bytes,
        tokenizer_bytes,
        budget: args.flash,
    })
}

/// Loads `raw` as f32 with `m`'s transform and converts it to `dtype` (matrices only: vectors,
/// biases and norms, are small and stay exact); returns `(name, shape, data, error)`.
fn convert(
    raw: RawTensor<'_>,
    m: &import::Mapping,
    dtype: StoreDType,
) -> Result<(String, Vec<usize>, writer::TensorData, QuantError)> {
    let (shape, values) = import::load(raw, m.transform)?;
    let cols = *shape.last().unwrap_or(&1);
    let dtype = if shape.len() >= 2 {
        dtype
    } else {
        StoreDType::F32
    };
    let (data, error) = quant::convert(&m.name, values, cols, dtype)?;
    Ok((m.name.clone(), shape, data, error))
}

/// Tensor data of a packed file as f32 (dequantized), for comparisons.
pub fn dequantize(t: &topkit::format::TensorInfo<'_>) -> Vec<f32> {
    let cols = *t.shape().last().unwrap_or(&1);
    match t.dtype {
        DType::F32 => t
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        DType::F16 => t
            .data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        DType::I8 => {
            let scales: Vec<f32> = t
                .scales
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            t.data
                .iter()
                .enumerate()
                .map(|(i, &q)| f32::from(q as i8) * scales[i / cols])
                .collect()
        }
        DType::Block(ty) => {
            let mut out = vec![0f32; t.elements()];
            for (o, b) in out
                .chunks_exact_mut(topkit::kernels::BLOCK)
                .zip(t.data.chunks_exact(ty.block_bytes()))
            {
                ty.dequantize(b, o);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_substrings() {
        let o = |p: &str| DTypeFor::parse(&format!("{p}=q4_1")).unwrap();
        assert!(o("tok_emb").matches("tok_emb"));
        assert!(o("ffn").matches("l3.ffn.up.w"));
        assert!(!o("ffn").matches("l3.q.w"));
        assert!(o("l*.q.w").matches("l0.q.w") && o("l*.q.w").matches("l11.q.w"));
        assert!(!o("l*.q.w").matches("l0.q.b") && !o("l*.q.w").matches("xl0.q.w"));
        assert!(o("l?.o.w").matches("l5.o.w") && !o("l?.o.w").matches("l15.o.w"));
        assert!(o("*").matches("anything") && o("*down_t*").matches("l1.ffn.down_t.w"));
        assert!(!o("*.w").matches("l1.ffn.up.b"));
        assert_eq!(o("x").dtype, StoreDType::Q4_1);
        assert!(DTypeFor::parse("tok_emb").is_err());
        assert!(DTypeFor::parse("=f16").is_err());
        assert!(DTypeFor::parse("a=q9").is_err());
        // The last matching override wins.
        let list = [o("l*"), DTypeFor::parse("l1.*=f16").unwrap()];
        assert_eq!(override_for(&list, "l1.q.w"), Some(StoreDType::F16));
        assert_eq!(override_for(&list, "l0.q.w"), Some(StoreDType::Q4_1));
        assert_eq!(override_for(&list, "tok_emb"), None);
    }
}
