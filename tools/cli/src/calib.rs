//! Calibration for `pack --flash`: the inputs every linear layer of a sentence encoder sees
//! on calibration texts, summed as `H = X^T X` per layer (what [`crate::gptq`] compensates
//! with and what the output error of a quantized layer is measured on).
//!
//! The activations come from a host-side f32 forward of the encoder (BERT: post-norm layers,
//! learned positions, GELU feed-forward, dense attention) built on the core's public kernels
//! (`Kernels::Fast.matmul` for the products, `layer_norm`, `activate_slice`, `softmax`), so
//! the core needs no observer. It follows `topkit::encoder` closely but is not bit-identical
//! to it (the fast products sum in another order), which calibration does not need.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use topkit::format::Pooling;
use topkit::kernels::{self, Kernels, Matrix, Weights};
use topkit::{Arch, FfnKind, ModelConfig, Norm, PosKind};

/// The shipped calibration texts, one per line: written for topkit (prose on many topics,
/// lists, code and numbers; none of the test texts).
pub const DEFAULT_TEXTS: &str = include_str!("../data/calibration.txt");

/// `H = X^T X` of one linear layer's inputs.
#[derive(Debug, Clone)]
pub struct Hessian {
    /// Inputs of the layer (`H` is `n x n`).
    pub n: usize,
    /// Row-major `n x n`, summed over every calibration token.
    pub h: Vec<f64>,
}

/// The calibration statistics of a model: per linear layer input, two `H`, one over the
/// even-numbered texts and one over the odd-numbered ones, so that a quantizer fitted on one
/// half can be measured on the other (with a few thousand tokens and 1536 inputs, an error
/// measured on the fitting tokens flatters GPTQ, which moves error where those tokens do
/// not look).
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Tokens the forward ran over.
    pub tokens: usize,
    /// Texts.
    pub texts: usize,
    /// Per layer input (see [`Calibration::key`]): the even and the odd half.
    inputs: HashMap<String, [Hessian; 2]>,
}

impl Calibration {
    /// The name of the inputs of the linear layer whose weight tensor is `name` (`l3.q.w`,
    /// `l3.ffn.down_t.w`, ...): `l3.qkv` (`q`, `k` and `v` share their inputs), `l3.o`,
    /// `l3.up`, `l3.down`; `None` for other tensors.
    pub fn key(name: &str) -> Option<String> {
        let (layer, rest) = name.split_once('.')?;
        let key = match rest {
            "q.w" | "k.w" | "v.w" => "qkv",
            "o.w" => "o",
            "ffn.up.w" => "up",
            "ffn.down_t.w" => "down",
            _ => return None,
        };
        Some(format!("{layer}.{key}"))
    }

    /// The two halves' `H` of the inputs named `key` ([`Calibration::key`]).
    pub fn halves(&self, key: &str) -> Option<&[Hessian; 2]> {
        self.inputs.get(key)
    }
}

/// Whether [`collect`] can run this model: a BERT-style encoder (layer norm, learned
/// positions, plain feed-forward, non-causal).
pub fn supported(c: &ModelConfig) -> bool {
    c.arch == Arch::Bert
        && c.norm == Norm::LayerNorm
        && c.pos == PosKind::Learned
        && c.ffn == FfnKind::Plain
        && !c.causal
        && c.n_kv_heads == c.n_heads
        && c.head_dim * c.n_heads == c.d_model
}

/// Adds `X^T X` of the `n` rows of `x` (`cols` each) into `acc`.
fn accumulate(acc: &mut [f64], x: &[f32], n: usize, cols: usize) -> Result<()> {
    // X^T as a matrix of `cols` rows of `n` tokens: X^T (X^T)^T = X^T X with the fast
    // f32 product, summed into f64 per text.
    let mut xt = vec![0f32; cols * n];
    for t in 0..n {
        for c in 0..cols {
            xt[c * n + t] = x[t * cols + c];
        }
    }
    let m = Matrix::new(cols, n, Weights::F32(&xt)).map_err(|e| anyhow!("{e}"))?;
    let mut g = vec![0f32; cols * cols];
    Kernels::Fast.matmul(&m, &xt, cols, None, &mut g, &mut []);
    for (a, &v) in acc.iter_mut().zip(&g) {
        *a += f64::from(v);
    }
    Ok(())
}

/// Where a linear layer's inputs are observed: layer and [`Calibration::key`] suffix
/// (`qkv`, `o`, `up`, `down`).
pub type Observer<'o> = dyn FnMut(usize, &'static str, &[f32], usize, usize) -> Result<()> + 'o;

/// The f32 forward of a BERT-style encoder (see [`supported`]) whose tensors `get` returns by
/// topkit name, over one token sequence `ids` (with `[CLS]` and `[SEP]`): returns the pooled
/// embedding (first token for [`Pooling::Cls`], else the mean; not normalized). `observe`
/// sees every linear layer's input rows (`n` tokens of `cols`) before the layer runs (the
/// `qkv` inputs of layer `i` are its input hidden states). With `start = Some((i, x))` the
/// forward begins at layer `i` with hidden states `x` (what `observe` saw there), skipping
/// the embeddings and the earlier layers.
///
/// # Errors
/// When the model is not supported, a tensor is missing or has the wrong size, an id is out
/// of the vocabulary or `ids` is longer than the position table.
pub fn forward<'a>(
    c: &ModelConfig,
    pooling: Pooling,
    get: &dyn Fn(&str) -> Option<&'a [f32]>,
    ids: &[u32],
    start: Option<(usize, &[f32])>,
    observe: &mut Observer<'_>,
) -> Result<Vec<f32>> {
    if !supported(c) {
        bail!("calibration runs BERT-style encoders only");
    }
    let (d, ff, heads, hd) = (c.d_model, c.d_ff, c.n_heads, c.head_dim);
    let t = |name: &str, len: usize| -> Result<&'a [f32]> {
        let v = get(name).ok_or_else(|| anyhow!("calibration: no tensor {name}"))?;
        if v.len() != len {
            bail!(
                "calibration: tensor {name} has {} values, expected {len}",
                v.len()
            );
        }
        Ok(v)
    };
    let mat = |name: &str, rows: usize, cols: usize| -> Result<Matrix<'a>> {
        Matrix::new(rows, cols, Weights::F32(t(name, rows * cols)?)).map_err(|e| anyhow!("{e}"))
    };
    let scale = 1.0 / (hd as f32).sqrt();
    let n = ids.len();
    if n == 0 || n > c.max_seq {
        bail!(
            "a calibration text has {n} tokens, not in 1..={}",
            c.max_seq
        );
    }
    let (first, mut x) = match start {
        Some((i, x)) if x.len() == n * d => (i, x.to_vec()),
        Some(_) => bail!("calibration: hidden states of the wrong size"),
        None => (0, embed(c, &t, ids)?),
    };
    let mut down = vec![0f32; d * ff];
    for i in first..c.n_layers {
        let l = |s: &str| format!("l{i}.{s}");
        observe(i, "qkv", &x, n, d)?;
        let lin = |name: &str, x: &[f32], rows: usize, cols: usize| -> Result<Vec<f32>> {
            let w = mat(&l(&format!("{name}.w")), rows, cols)?;
            let b = t(&l(&format!("{name}.b")), rows)?;
            let mut y = vec![0f32; n * rows];
            Kernels::Fast.matmul(&w, x, n, Some(b), &mut y, &mut []);
            Ok(y)
        };
        let (q, k, v) = (
            lin("q", &x, d, d)?,
            lin("k", &x, d, d)?,
            lin("v", &x, d, d)?,
        );
        let mut ctx = vec![0f32; n * d];
        let mut s = vec![0f32; n];
        for h in 0..heads {
            let o = h * hd;
            for a in 0..n {
                let qa = &q[a * d + o..a * d + o + hd];
                for (bb, sv) in s.iter_mut().enumerate() {
                    *sv = kernels::dot(qa, &k[bb * d + o..bb * d + o + hd]) * scale;
                }
                kernels::softmax(&mut s);
                let out = &mut ctx[a * d + o..a * d + o + hd];
                for (bb, &p) in s.iter().enumerate() {
                    for (y, &vv) in out.iter_mut().zip(&v[bb * d + o..bb * d + o + hd]) {
                        *y += p * vv;
                    }
                }
            }
        }
        observe(i, "o", &ctx, n, d)?;
        let att = lin("o", &ctx, d, d)?;
        for (xv, a) in x.iter_mut().zip(&att) {
            *xv += a;
        }
        let (g, b) = (t(&l("attn_norm.w"), d)?, t(&l("attn_norm.b"), d)?);
        x.chunks_exact_mut(d)
            .for_each(|r| kernels::layer_norm(r, g, b, c.norm_eps));
        observe(i, "up", &x, n, d)?;
        let mut hid = lin("ffn.up", &x, ff, d)?;
        kernels::activate_slice(c.act, &mut hid);
        observe(i, "down", &hid, n, ff)?;
        // The down projection is stored transposed ([ff, d]); the product wants [d, ff].
        let dt = t(&l("ffn.down_t.w"), ff * d)?;
        for f in 0..ff {
            for o in 0..d {
                down[o * ff + f] = dt[f * d + o];
            }
        }
        let wd = Matrix::new(d, ff, Weights::F32(&down)).map_err(|e| anyhow!("{e}"))?;
        let mut y = vec![0f32; n * d];
        Kernels::Fast.matmul(&wd, &hid, n, Some(t(&l("ffn.down.b"), d)?), &mut y, &mut []);
        for (xv, a) in x.iter_mut().zip(&y) {
            *xv += a;
        }
        let (g, b) = (t(&l("ffn_norm.w"), d)?, t(&l("ffn_norm.b"), d)?);
        x.chunks_exact_mut(d)
            .for_each(|r| kernels::layer_norm(r, g, b, c.norm_eps));
    }
    Ok(match pooling {
        Pooling::Cls => x[..d].to_vec(),
        _ => {
            let mut out = vec![0f32; d];
            for row in x.chunks_exact(d) {
                out.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
            out.iter_mut().for_each(|o| *o /= n as f32);
            out
        }
    })
}

/// The embedding layer's output (token + segment 0 + position, layer-normed) of `ids`.
fn embed<'a>(
    c: &ModelConfig,
    t: &dyn Fn(&str, usize) -> Result<&'a [f32]>,
    ids: &[u32],
) -> Result<Vec<f32>> {
    let d = c.d_model;
    let tok = t("tok_emb", c.vocab_size * d)?;
    let pos = t("pos_emb", c.max_seq * d)?;
    let seg = if c.type_vocab_size > 0 {
        Some(t("seg_emb", c.type_vocab_size * d)?)
    } else {
        None
    };
    let mut x = vec![0f32; ids.len() * d];
    for (p, &id) in ids.iter().enumerate() {
        let id = id as usize;
        if id >= c.vocab_size {
            bail!("calibration: token id {id} out of the vocabulary");
        }
        let row = &mut x[p * d..(p + 1) * d];
        for k in 0..d {
            row[k] = tok[id * d + k] + seg.map_or(0.0, |s| s[k]) + pos[p * d + k];
        }
    }
    let (g, b) = (t("emb_norm.w", d)?, t("emb_norm.b", d)?);
    x.chunks_exact_mut(d)
        .for_each(|r| kernels::layer_norm(r, g, b, c.norm_eps));
    Ok(x)
}

/// Runs [`forward`] over every token sequence of `texts`, summing each linear layer's
/// `X^T X` (even and odd texts apart); `progress(i)` is called after text `i`.
///
/// # Errors
/// Those of [`forward`].
pub fn collect<'a>(
    c: &ModelConfig,
    get: &dyn Fn(&str) -> Option<&'a [f32]>,
    texts: &[Vec<u32>],
    mut progress: impl FnMut(usize),
) -> Result<Calibration> {
    let mut inputs: HashMap<String, [Hessian; 2]> = HashMap::new();
    for i in 0..c.n_layers {
        for (key, n) in [
            ("qkv", c.d_model),
            ("o", c.d_model),
            ("up", c.d_model),
            ("down", c.d_ff),
        ] {
            let h = Hessian {
                n,
                h: vec![0.0; n * n],
            };
            inputs.insert(format!("l{i}.{key}"), [h.clone(), h]);
        }
    }
    let mut tokens = 0;
    for (ti, ids) in texts.iter().enumerate() {
        forward(
            c,
            Pooling::Mean,
            get,
            ids,
            None,
            &mut |layer, key, x, n, cols| {
                let h = inputs
                    .get_mut(&format!("l{layer}.{key}"))
                    .ok_or_else(|| anyhow!("calibration: no inputs l{layer}.{key}"))?;
                accumulate(&mut h[ti % 2].h, x, n, cols)
            },
        )?;
        tokens += ids.len();
        progress(ti);
    }
    Ok(Calibration {
        tokens,
        texts: texts.len(),
        inputs,
    })
}
