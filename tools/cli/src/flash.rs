//! `topkit pack --flash BUDGET`: a dtype per tensor so that the whole file fits the budget,
//! losing the least accuracy.
//!
//! 1. Every tensor's candidates are the dtypes it [fits](StoreDType::fits) (vectors stay f32;
//!    a `--dtype-for` override leaves only its dtype).
//! 2. Each candidate's error is measured: for the linear layers of an encoder the calibration
//!    makes possible ([`crate::calib`]), the relative output error on the calibration
//!    activations, `||X (W - W')^T|| / ||X W^T||`, with the better of round-to-nearest and
//!    GPTQ ([`crate::gptq`]) for the block dtypes; for the others (embeddings, decoders), the
//!    relative RMS error of the weights. GPTQ is fitted on half the calibration texts and
//!    measured on the other half (see [`Calibration`]); the file gets GPTQ fitted on all.
//! 3. Greedy allocation: every tensor starts at its smallest candidate; then, while the file
//!    fits, the upgrade with the largest decrease of the summed squared errors per byte added
//!    is taken. The file's size is the real writer's: header, configuration, tokenizer,
//!    table, names and 16-byte alignment, measured by writing the f32 file once.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use topkit::format::PackedModel;
use topkit::kernels::BLOCK;
use topkit::tokenizer::WordPiece;

use crate::calib::{self, Calibration};
use crate::gptq::{self, Layout};
use crate::import::Source;
use crate::quant::{self, QuantError, StoreDType};
use crate::writer::{self, AlignedBytes, Tensor, TensorData};

/// A tensor loaded as f32.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// topkit name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub values: Vec<f32>,
}

/// How a candidate was quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Exact (f32), or the dtype's own rounding (f16, int8).
    Plain,
    /// Round-to-nearest blocks.
    Rtn,
    /// GPTQ blocks.
    Gptq,
}

impl Method {
    /// Short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Plain => "-",
            Method::Rtn => "rtn",
            Method::Gptq => "gptq",
        }
    }
}

/// One candidate of a tensor.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The dtype.
    pub dtype: StoreDType,
    /// Bytes in the file, alignment padding included.
    pub bytes: usize,
    /// Relative error (output error on calibration activations or weight error, see
    /// [`Choice::on_outputs`]).
    pub error: f64,
    /// How it is quantized.
    pub method: Method,
    /// What the allocation minimizes the sum of: with calibration, the predicted mean
    /// `1 - cosine` of the embeddings of the held-out calibration texts to f32's when only
    /// this tensor is quantized (the error squared times the tensor's measured sensitivity);
    /// without, the error squared.
    pub loss: f64,
}

/// What `--flash` chose for one tensor.
#[derive(Debug, Clone)]
pub struct Choice {
    /// topkit name.
    pub name: String,
    /// The chosen candidate.
    pub chosen: Candidate,
    /// `true`: the error is the relative output error on calibration activations; `false`:
    /// the relative RMS error of the weights.
    pub on_outputs: bool,
    /// Every candidate measured, smallest first.
    pub candidates: Vec<Candidate>,
}

/// The result of the allocation.
#[derive(Debug)]
pub struct Allocation {
    /// The tensors to write.
    pub tensors: Vec<Tensor>,
    /// Per tensor, in order.
    pub choices: Vec<Choice>,
    /// The predicted size of the file, bytes.
    pub file_bytes: usize,
    /// Calibration tokens (0 without calibration).
    pub calib_tokens: usize,
    /// Per tensor, the error of the data written against the f32 values.
    pub errors: Vec<QuantError>,
}

fn padded(bytes: usize) -> usize {
    bytes.div_ceil(topkit::format::ALIGN) * topkit::format::ALIGN
}

/// The linear layout of a tensor that calibration covers.
fn layout(name: &str) -> Layout {
    if name.ends_with("ffn.down_t.w") {
        Layout::InOut
    } else {
        Layout::OutIn
    }
}

/// The f32 values `data` decodes to (`cols` per row).
pub fn decode(data: &TensorData, cols: usize) -> Vec<f32> {
    match data {
        TensorData::F32(v) => v.clone(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
        TensorData::I8 { q, scales } => q
            .iter()
            .enumerate()
            .map(|(i, &v)| f32::from(v) * scales[i / cols])
            .collect(),
        TensorData::Blocks { ty, data } => quant::dequantize_blocks(data, *ty),
    }
}

/// Quantizes `t` to `dtype` by `method` (`u` the GPTQ factor of its inputs).
fn make(t: &Loaded, dtype: StoreDType, method: Method, u: Option<&[f64]>) -> Result<TensorData> {
    let cols = *t.shape.last().unwrap_or(&1);
    match (method, dtype.block(), u) {
        (Method::Gptq, Some(ty), Some(u)) => {
            let (n_in, n_out) = dims(t);
            Ok(TensorData::Blocks {
                ty,
                data: gptq::quantize(ty, &t.values, layout(&t.name), n_in, n_out, u),
            })
        }
        (Method::Gptq, None, Some(u)) if dtype == StoreDType::Int8 => {
            let (n_in, n_out) = dims(t);
            let (q, scales) = gptq::quantize_int8(&t.values, layout(&t.name), n_in, n_out, u);
            Ok(TensorData::I8 { q, scales })
        }
        _ => Ok(quant::convert(&t.name, t.values.clone(), cols, dtype)?.0),
    }
}

/// Inputs and outputs of a linear weight.
fn dims(t: &Loaded) -> (usize, usize) {
    let (r, c) = (t.shape[0], *t.shape.last().unwrap_or(&1));
    match layout(&t.name) {
        Layout::OutIn => (c, r),
        Layout::InOut => (r, c),
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}

/// Tokenizes `texts` with the WordPiece tokenizer of `pm`, each cut to its `max_seq`.
///
/// # Errors
/// When the file has no WordPiece tokenizer or a text cannot be tokenized.
pub fn tokenize(pm: &PackedModel<'_>, texts: &[String]) -> Result<Vec<Vec<u32>>> {
    let wp = WordPiece::from_view(pm.tokenizer())
        .map_err(|e| anyhow!("calibration needs the WordPiece tokenizer: {e}"))?;
    let max = pm.config().max_seq;
    texts
        .iter()
        .map(|text| {
            let mut ids = vec![0u32; max];
            let n = wp.encode(text, &mut ids)?.len;
            ids.truncate(n);
            Ok(ids)
        })
        .collect()
}

/// Chooses each tensor's dtype so that the file fits `budget` bytes (see the module doc).
/// `fixed` gives a tensor's forced dtype (a `--dtype-for` override); `texts` are the
/// calibration texts; `gptq` allows GPTQ (else round-to-nearest only). Progress goes to
/// stderr.
///
/// # Errors
/// When even the smallest choices do not fit, a tensor cannot be converted, or the f32 file
/// cannot be built.
pub fn allocate(
    src: &Source,
    tensors: Vec<Loaded>,
    budget: usize,
    fixed: impl Fn(&str) -> Option<StoreDType>,
    texts: &[String],
    gptq: bool,
) -> Result<Allocation> {
    let started = std::time::Instant::now();
    // The f32 file: its size gives the fixed part of every file, its tokenizer and weights
    // the calibration.
    let f32_file = writer::write_file(
        &src.config,
        &src.tokenizer,
        &tensors
            .iter()
            .map(|t| Tensor {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data: TensorData::F32(t.values.clone()),
            })
            .collect::<Vec<_>>(),
    )?;
    let overhead = f32_file.len()
        - tensors
            .iter()
            .map(|t| padded(t.values.len() * 4))
            .sum::<usize>();
    let cfg = &src.config.model;
    let pooling = src.config.pooling;
    let by_name: HashMap<&str, &[f32]> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.values.as_slice()))
        .collect();
    // Calibration token ids: the even texts fit, the odd ones measure.
    let mut held_out: Vec<Vec<u32>> = Vec::new();
    let calibration: Option<Calibration> = if calib::supported(cfg) {
        let aligned = AlignedBytes::new(f32_file);
        let pm = PackedModel::parse(aligned.as_slice()).map_err(|e| anyhow!("{e}"))?;
        let ids = tokenize(&pm, texts)?;
        if ids.len() < 2 {
            bail!("--flash calibration needs at least 2 texts (half fit, half measure)");
        }
        let n = ids.len();
        let c = calib::collect(cfg, &|name| by_name.get(name).copied(), &ids, |i| {
            if (i + 1) % 20 == 0 || i + 1 == n {
                errln!("calibration forward: {}/{n} texts", i + 1);
            }
        })?;
        errln!(
            "calibration: {} texts, {} tokens ({:.1} s)",
            c.texts,
            c.tokens,
            started.elapsed().as_secs_f64()
        );
        held_out = ids.into_iter().skip(1).step_by(2).collect();
        Some(c)
    } else {
        errln!("note: no calibration for this architecture; errors are the weights' relative RMS");
        None
    };
    // f32 embeddings of the held-out texts, for the sensitivities, and every layer's input
    // hidden states, so that a tensor's sensitivity is measured from its own layer on.
    let mut reference: Vec<Vec<f32>> = Vec::with_capacity(held_out.len());
    let mut layer_in: Vec<Vec<Vec<f32>>> = Vec::with_capacity(held_out.len());
    for ids in &held_out {
        let mut ins = Vec::with_capacity(cfg.n_layers);
        let e = calib::forward(
            cfg,
            pooling,
            &|n| by_name.get(n).copied(),
            ids,
            None,
            &mut |_, key, x, _, _| {
                if key == "qkv" {
                    ins.push(x.to_vec());
                }
                Ok(())
            },
        )?;
        reference.push(e);
        layer_in.push(ins);
    }

    // Per distinct input (q, k and v share theirs): the GPTQ factor fitted on the even half,
    // the one fitted on all texts, and the odd half's H to measure on.
    struct Inputs {
        u_half: Vec<f64>,
        u_all: Vec<f64>,
        eval: Vec<f64>,
    }
    let mut inputs: std::collections::HashMap<String, Inputs> = Default::default();
    let mut choices = Vec::with_capacity(tensors.len());
    for (k, t) in tensors.iter().enumerate() {
        let key = Calibration::key(&t.name).filter(|key| {
            calibration
                .as_ref()
                .is_some_and(|c| c.halves(key).is_some())
        });
        if let (Some(key), Some(cal)) = (&key, &calibration)
            && !inputs.contains_key(key)
            && let Some([a, b]) = cal.halves(key)
        {
            let all: Vec<f64> = a.h.iter().zip(&b.h).map(|(x, y)| x + y).collect();
            let bad = || anyhow!("calibration of {}: H is not positive definite", t.name);
            inputs.insert(
                key.clone(),
                Inputs {
                    u_half: gptq::inverse_factor(&a.h, a.n).ok_or_else(bad)?,
                    u_all: gptq::inverse_factor(&all, a.n).ok_or_else(bad)?,
                    eval: b.h.clone(),
                },
            );
        }
        let inp = key.as_ref().and_then(|k| inputs.get(k));
        let h = inp.map(|i| i.eval.as_slice());
        let u = inp.filter(|_| gptq).map(|i| i.u_half.as_slice());
        let dtypes: Vec<StoreDType> = match fixed(&t.name) {
            Some(d) if d.fits(&t.shape) => vec![d],
            Some(d) => bail!(
                "--dtype-for: tensor {} of shape {:?} cannot be stored as {d} (rows must be whole blocks of {BLOCK}; vectors stay f32)",
                t.name,
                t.shape
            ),
            None => StoreDType::BY_SIZE
                .into_iter()
                .filter(|d| d.fits(&t.shape))
                .collect(),
        };
        let cols = *t.shape.last().unwrap_or(&1);
        let mut candidates = Vec::new();
        for d in dtypes {
            let bytes = padded(d.bytes(&t.shape).ok_or_else(|| anyhow!("size overflow"))?);
            let measure = |data: &TensorData| -> f64 {
                let back = decode(data, cols);
                match h {
                    Some(h) => {
                        let (n_in, n_out) = dims(t);
                        gptq::output_error(h, &t.values, &back, layout(&t.name), n_in, n_out)
                    }
                    None => QuantError::measure(&t.values, back.into_iter()).rel_rms,
                }
            };
            let first = if d.block().is_some() {
                Method::Rtn
            } else {
                Method::Plain
            };
            let error = if d == StoreDType::F32 {
                0.0
            } else {
                measure(&make(t, d, first, None)?)
            };
            let mut best = Candidate {
                dtype: d,
                bytes,
                error,
                method: first,
                loss: error * error,
            };
            if (d.block().is_some() || d == StoreDType::Int8) && u.is_some() {
                let e = measure(&make(t, d, Method::Gptq, u)?);
                if e < best.error {
                    best.error = e;
                    best.method = Method::Gptq;
                    best.loss = e * e;
                }
            }
            candidates.push(best);
        }
        // The sensitivity of the final embeddings to this tensor: one forward of the held-out
        // texts with only it quantized, at its smallest dtype (fitted on the other half), gives
        // the mean 1 - cosine per unit of squared error; the other dtypes scale with theirs.
        if !reference.is_empty()
            && candidates.len() > 1
            && let Some(small) = candidates.first().copied()
            && small.error > 0.0
        {
            let back = decode(&make(t, small.dtype, small.method, u)?, cols);
            let get = |n: &str| {
                if n == t.name {
                    Some(back.as_slice())
                } else {
                    by_name.get(n).copied()
                }
            };
            let layer = t
                .name
                .strip_prefix('l')
                .and_then(|r| r.split_once('.'))
                .and_then(|(i, _)| i.parse::<usize>().ok())
                .filter(|&i| i < cfg.n_layers);
            let mut loss = 0.0;
            for ((ids, want), ins) in held_out.iter().zip(&reference).zip(&layer_in) {
                let start = layer.map(|i| (i, ins[i].as_slice()));
                let e =
                    calib::forward(cfg, pooling, &get, ids, start, &mut |_, _, _, _, _| Ok(()))?;
                loss += 1.0 - cosine(&e, want);
            }
            let sens = (loss / held_out.len() as f64).max(0.0) / (small.error * small.error);
            for c in &mut candidates {
                c.loss = sens * c.error * c.error;
            }
        }
        errln!(
            "[{}/{}, {:.0} s] {}: {}",
            k + 1,
            tensors.len(),
            started.elapsed().as_secs_f64(),
            t.name,
            candidates
                .iter()
                .map(|c| format!(
                    "{} {:.2e}{} ({:.1e})",
                    c.dtype,
                    c.error,
                    if c.method == Method::Gptq { "*" } else { "" },
                    c.loss
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let chosen = *candidates
            .iter()
            .min_by_key(|c| c.bytes)
            .ok_or_else(|| anyhow!("tensor {}: no dtype fits", t.name))?;
        choices.push(Choice {
            name: t.name.clone(),
            chosen,
            on_outputs: h.is_some(),
            candidates,
        });
    }

    let mut total = overhead + choices.iter().map(|c| c.chosen.bytes).sum::<usize>();
    if total > budget {
        bail!(
            "even the smallest dtypes do not fit: the file would take {total} bytes ({}), the budget is {budget} bytes ({})",
            crate::size::human(total),
            crate::size::human(budget)
        );
    }
    loop {
        let mut best: Option<(f64, usize, Candidate)> = None;
        for (i, c) in choices.iter().enumerate() {
            for cand in &c.candidates {
                if cand.bytes <= c.chosen.bytes
                    || cand.loss >= c.chosen.loss
                    || total - c.chosen.bytes + cand.bytes > budget
                {
                    continue;
                }
                let gain = (c.chosen.loss - cand.loss) / (cand.bytes - c.chosen.bytes) as f64;
                if best.as_ref().is_none_or(|b| gain > b.0) {
                    best = Some((gain, i, *cand));
                }
            }
        }
        let Some((_, i, cand)) = best else { break };
        total = total - choices[i].chosen.bytes + cand.bytes;
        choices[i].chosen = cand;
    }

    let mut out = Vec::with_capacity(tensors.len());
    let mut errors = Vec::with_capacity(tensors.len());
    for (t, c) in tensors.iter().zip(&choices) {
        let u = Calibration::key(&t.name)
            .and_then(|k| inputs.get(&k))
            .map(|i| i.u_all.as_slice());
        let data = make(t, c.chosen.dtype, c.chosen.method, u)?;
        let cols = *t.shape.last().unwrap_or(&1);
        errors.push(QuantError::measure(
            &t.values,
            decode(&data, cols).into_iter(),
        ));
        out.push(Tensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            data,
        });
    }
    Ok(Allocation {
        tensors: out,
        choices,
        file_bytes: total,
        calib_tokens: calibration.as_ref().map_or(0, |c| c.tokens),
        errors,
    })
}
