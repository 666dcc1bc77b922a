//! The transformer layer stack, run over the arena without allocating.
//!
//! [`Model`] is a set of zero-copy weight views checked against a [`ModelConfig`];
//! [`forward`] runs every layer of a non-causal model (an encoder) on `n x d_model` hidden
//! states at once. Causal models (decoders) run token chunk by token chunk over a KV cache
//! with [`crate::decoder`], which shares the blocks' code below. The arena holds everything,
//! in the order and sizes of [`crate::plan_with`]'s encoder layout for the model's kernels:
//!
//! 1. `hidden` (`N x d_model`), `keys` and `values` (`N x kv_dim`, reused by every layer);
//! 2. per layer, three phases that reuse the same bytes one after the other
//!    ([`crate::Arena::scope`]):
//!    - K/V projection of all tokens (pre-norm models norm one token chunk at a time),
//!    - attention, one query chunk at a time: queries, attention, output projection and
//!      residual, written straight back into that chunk's rows of `hidden`. This is safe
//!      because K and V of the layer were computed from the old `hidden` before any row
//!      changed, and each chunk reads only its own rows;
//!    - feed-forward, one token chunk at a time, again in place. With [`Kernels::Fast`], a
//!      dense feed-forward and a post-norm block whose `kv_dim >= d_model` (BERT), all tokens
//!      go in one call instead, the output written into `keys`: this layer's keys are dead by
//!      then and the next layer's K projection overwrites them, so the output takes no byte
//!      of the plan (the phase still takes its chunk-sized output buffer, unused; its fast
//!      buffers are sized for all tokens, [`Plan::ffn_tokens`]).
//!
//! Keys and values stored as f16 or int8 ([`Model::with_kv`], [`crate::KvType`]) are projected
//! a chunk at a time into an f32 staging buffer (RoPE applied there) and stored from it; the
//! feed-forward then runs a chunk at a time (the `keys` buffer is too small for its output).
//!
//! Each phase's last buffer is the fast kernels' scratch (none with [`Kernels::Reference`]):
//! the int8 activations of the projections and the attention's and feed-forward's block
//! buffers, so nothing large is on the stack. After a run, `arena.high_water()` (minus what
//! the arena held before) equals `plan_with(&model.config, run, model.kernels()).peak_bytes`
//! exactly.
//!
//! Block layouts: [`Arch::Bert`] is post-norm (`x = norm(x + attn(x)); x = norm(x + ffn(x))`),
//! [`Arch::Llama`] is pre-norm (`x = x + attn(norm(x)); x = x + ffn(norm(x))`); the norm kind
//! (LayerNorm or RMSNorm) comes from [`ModelConfig::norm`].
//!
//! RoPE ([`PosKind::Rope`]) follows the Hugging Face Llama "rotate_half" convention: within
//! each head of width `h`, element `i < h/2` is paired with element `i + h/2` (not with its
//! neighbour), rotated by the angle `pos * theta^(-2i/h)`:
//!
//! ```text
//! x'[i]       = x[i] cos - x[i + h/2] sin
//! x'[i + h/2] = x[i + h/2] cos + x[i] sin
//! ```
//!
//! Checkpoints converted from Meta's interleaved layout must have their q/k rows permuted
//! accordingly (as the HF conversion script does).

use crate::Error;
use crate::arena::Arena;
use crate::config::{Arch, FfnKind, KvType, ModelConfig, Norm, PosKind, RunConfig};
use crate::kernels::{
    Kernels, KvRows, KvRowsMut, Matrix, f16, kv_int8_scales, kv_store_rows, rms_norm,
};
use crate::plan::{Plan, attn_params, ffn_wide, try_plan_kv};
use attention::{AttnScratch, KvKeys};
use ffn::{FfnScratch, FfnWeights};

pub mod attention;
pub mod decoder;
pub mod encoder;
pub mod ffn;
pub mod weights;

/// Gain and optional bias of one normalisation layer (`d_model` values each).
#[derive(Debug, Clone, Copy)]
pub struct NormWeights<'a> {
    /// Per-channel gain.
    pub gain: &'a [f32],
    /// Per-channel bias: required by LayerNorm, must be `None` for RMSNorm.
    pub bias: Option<&'a [f32]>,
}

/// Weights of one transformer block, as zero-copy views. Linear layers use the PyTorch
/// `[out, in]` layout.
#[derive(Debug, Clone, Copy)]
pub struct LayerWeights<'a> {
    /// Query projection, `q_dim x d_model`.
    pub q: Matrix<'a>,
    /// Query bias (`q_dim`), if any.
    pub q_bias: Option<&'a [f32]>,
    /// Key projection, `kv_dim x d_model`.
    pub k: Matrix<'a>,
    /// Key bias (`kv_dim`), if any.
    pub k_bias: Option<&'a [f32]>,
    /// Value projection, `kv_dim x d_model`.
    pub v: Matrix<'a>,
    /// Value bias (`kv_dim`), if any.
    pub v_bias: Option<&'a [f32]>,
    /// Output projection, `d_model x q_dim`.
    pub o: Matrix<'a>,
    /// Output bias (`d_model`), if any.
    pub o_bias: Option<&'a [f32]>,
    /// Attention norm: after the residual add in post-norm blocks (BERT's
    /// `attention.output.LayerNorm`), before attention in pre-norm blocks (Llama's
    /// `input_layernorm`).
    pub attn_norm: NormWeights<'a>,
    /// Feed-forward weights.
    pub ffn: FfnWeights<'a>,
    /// Feed-forward norm: BERT's `output.LayerNorm` (post), Llama's
    /// `post_attention_layernorm` (pre).
    pub ffn_norm: NormWeights<'a>,
}

/// A model: its configuration and one [`LayerWeights`] per block, held by the caller (an array,
/// a slice in flash, or built by the packed-file loader). Construct with [`Model::new`], which
/// checks every shape.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    config: ModelConfig,
    layers: &'a [LayerWeights<'a>],
    final_norm: Option<NormWeights<'a>>,
    kernels: Kernels,
    kv: KvType,
}

/// Keys (or values) taken from the arena in a [`KvType`]: rows of `kv_dim` values (and, int8,
/// one scale per head row), in the plan's order (values, then scales).
pub(crate) enum KvStore<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    Int8(&'a mut [i8], &'a mut [f32]),
}

impl<'a> KvStore<'a> {
    /// Takes `rows` rows of the model's `kv_dim` stored as `kv` ([`crate::plan::cache_bytes`]).
    pub(crate) fn take(
        arena: &mut Arena<'a>,
        kv: KvType,
        rows: usize,
        c: &ModelConfig,
    ) -> Result<Self, Error> {
        let n = rows
            .checked_mul(c.kv_dim())
            .ok_or(Error::InvalidConfig("keys overflow"))?;
        Ok(match kv {
            KvType::F32 => KvStore::F32(arena.take(n)?),
            KvType::F16 => KvStore::F16(arena.take(n)?),
            KvType::Int8 => {
                let q = arena.take(n)?;
                let per_row = c.n_kv_heads * kv_int8_scales(c.head_dim);
                KvStore::Int8(q, arena.take(rows * per_row)?)
            }
        })
    }

    /// Rows `r0..r0 + n` (of `kv_dim` values, `nkv` int8 scales each) for the attention.
    pub(crate) fn rows(&self, (r0, n): (usize, usize), kv_dim: usize, nkv: usize) -> KvRows<'_> {
        let v = r0 * kv_dim..(r0 + n) * kv_dim;
        match self {
            KvStore::F32(x) => KvRows::F32(&x[v]),
            KvStore::F16(x) => KvRows::F16(&x[v]),
            KvStore::Int8(q, s) => KvRows::Int8 {
                q: &q[v],
                scales: &s[r0 * nkv..(r0 + n) * nkv],
            },
        }
    }

    /// Rows `r0..r0 + n`, writable.
    pub(crate) fn rows_mut(
        &mut self,
        (r0, n): (usize, usize),
        kv_dim: usize,
        nkv: usize,
    ) -> KvRowsMut<'_> {
        let v = r0 * kv_dim..(r0 + n) * kv_dim;
        match self {
            KvStore::F32(x) => KvRowsMut::F32(&mut x[v]),
            KvStore::F16(x) => KvRowsMut::F16(&mut x[v]),
            KvStore::Int8(q, s) => KvRowsMut::Int8 {
                q: &mut q[v],
                scales: &mut s[r0 * nkv..(r0 + n) * nkv],
            },
        }
    }

    /// The f32 rows `r0..r0 + n`, `None` for other storage types.
    pub(crate) fn f32_rows(
        &mut self,
        (r0, n): (usize, usize),
        kv_dim: usize,
    ) -> Option<&mut [f32]> {
        match self {
            KvStore::F32(x) => Some(&mut x[r0 * kv_dim..(r0 + n) * kv_dim]),
            _ => None,
        }
    }
}

// The shape checks below are private to `model`: the encoder and decoder (its children) use
// them for their embedding and output matrices.

/// [`Error::ShapeMismatch`] unless `found == expected` (elements).
fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), Error> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            what,
            expected,
            found,
        })
    }
}

/// [`Error::ShapeMismatch`] unless `m` is `rows x cols`.
fn check_matrix(what: &'static str, m: &Matrix<'_>, rows: usize, cols: usize) -> Result<(), Error> {
    check_len(what, rows * cols, m.rows() * m.cols())?;
    check_len(what, rows, m.rows())
}

/// [`Error::ShapeMismatch`] unless `m` has `d` columns and at least `min_rows` rows (an
/// embedding table may be longer than the model uses).
fn check_rows(what: &'static str, m: &Matrix<'_>, min_rows: usize, d: usize) -> Result<(), Error> {
    check_len(what, d, m.cols())?;
    if m.rows() < min_rows {
        return Err(Error::ShapeMismatch {
            what,
            expected: min_rows,
            found: m.rows(),
        });
    }
    Ok(())
}

fn check_bias(what: &'static str, b: Option<&[f32]>, len: usize) -> Result<(), Error> {
    match b {
        Some(b) => check_len(what, len, b.len()),
        None => Ok(()),
    }
}

fn check_norm(what: &'static str, w: &NormWeights<'_>, c: &ModelConfig) -> Result<(), Error> {
    check_len(what, c.d_model, w.gain.len())?;
    match (c.norm, w.bias) {
        (Norm::LayerNorm, Some(b)) => check_len(what, c.d_model, b.len()),
        (Norm::LayerNorm, None) => check_len(what, c.d_model, 0),
        (Norm::RmsNorm, Some(b)) => check_len(what, 0, b.len()),
        (Norm::RmsNorm, None) => Ok(()),
    }
}

fn check_layer(l: &LayerWeights<'_>, c: &ModelConfig) -> Result<(), Error> {
    let (d, q, kv) = (c.d_model, c.q_dim(), c.kv_dim());
    check_matrix("attention q", &l.q, q, d)?;
    check_bias("attention q bias", l.q_bias, q)?;
    check_matrix("attention k", &l.k, kv, d)?;
    check_bias("attention k bias", l.k_bias, kv)?;
    check_matrix("attention v", &l.v, kv, d)?;
    check_bias("attention v bias", l.v_bias, kv)?;
    check_matrix("attention output", &l.o, d, q)?;
    check_bias("attention output bias", l.o_bias, d)?;
    check_norm("attention norm", &l.attn_norm, c)?;
    check_norm("ffn norm", &l.ffn_norm, c)?;
    let f = &l.ffn;
    check_matrix("ffn up", &f.up, c.d_ff, d)?;
    check_bias("ffn up bias", f.up_bias, c.d_ff)?;
    match f.down_layout {
        ffn::DownLayout::Transposed => check_matrix("ffn down (transposed)", &f.down_t, c.d_ff, d)?,
        ffn::DownLayout::Columns => check_matrix("ffn down", &f.down_t, d, c.d_ff)?,
    }
    check_bias("ffn down bias", f.down_bias, d)?;
    match (c.ffn, &f.gate) {
        (FfnKind::Gated, Some(g)) => check_matrix("ffn gate", g, c.d_ff, d)?,
        (FfnKind::Gated, None) => check_len("ffn gate", c.d_ff * d, 0)?,
        (FfnKind::Plain, Some(g)) => check_len("ffn gate", 0, g.rows() * g.cols())?,
        (FfnKind::Plain, None) => {}
    }
    if f.act != c.act {
        return Err(Error::InvalidConfig(
            "ffn activation differs from the model config",
        ));
    }
    Ok(())
}

impl<'a> Model<'a> {
    /// Checks the configuration and the shape of every weight against it. `final_norm` is the
    /// norm after the last block (pre-norm models have one; BERT does not).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] for a bad config (see [`ModelConfig::validate`]; with RoPE,
    /// also a `rope_theta` that is not finite and above 1) or a feed-forward activation other
    /// than the config's; [`Error::ShapeMismatch`] for a wrong number of layers or a weight of
    /// the wrong size.
    pub fn new(
        config: ModelConfig,
        layers: &'a [LayerWeights<'a>],
        final_norm: Option<NormWeights<'a>>,
    ) -> Result<Self, Error> {
        config.validate()?;
        if matches!(config.pos, PosKind::Rope)
            && !(config.rope_theta > 1.0 && config.rope_theta.is_finite())
        {
            return Err(Error::InvalidConfig(
                "rope_theta must be a finite number above 1",
            ));
        }
        check_len("layers", config.n_layers, layers.len())?;
        for l in layers {
            check_layer(l, &config)?;
        }
        if let Some(n) = &final_norm {
            check_norm("final norm", n, &config)?;
        }
        Ok(Model {
            config,
            layers,
            final_norm,
            kernels: Kernels::Reference,
            kv: KvType::F32,
        })
    }

    /// The same model run with `kernels` (default [`Kernels::Reference`]; hosts use
    /// [`Kernels::Fast`] for speed).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    /// The same model with its keys and values (the encoder's, the decoder's KV cache) stored
    /// as `kv` (default [`KvType::F32`]); the plan changes accordingly ([`crate::plan_kv`]).
    pub fn with_kv(mut self, kv: KvType) -> Self {
        self.kv = kv;
        self
    }

    /// How this model stores its keys and values.
    pub fn kv(&self) -> KvType {
        self.kv
    }

    /// The kernels this model runs with.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// The model's configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The blocks' weights.
    pub fn layers(&self) -> &'a [LayerWeights<'a>] {
        self.layers
    }

    /// The norm after the last block, if any.
    pub fn final_norm(&self) -> Option<NormWeights<'a>> {
        self.final_norm
    }

    /// The memory plan of a run of this model with its kernels and KV storage
    /// ([`try_plan_kv`]): provide `peak_bytes` of arena.
    ///
    /// # Errors
    ///
    /// As [`try_plan_kv`].
    pub fn plan(&self, run: &RunConfig) -> Result<Plan, Error> {
        try_plan_kv(&self.config, run, self.kernels, self.kv)
    }
}

pub(crate) fn norm_row(k: Kernels, c: &ModelConfig, w: &NormWeights<'_>, x: &mut [f32]) {
    match (c.norm, w.bias) {
        (Norm::LayerNorm, Some(b)) => k.layer_norm(x, w.gain, b, c.norm_eps),
        // Model::new rejects a LayerNorm without bias; RMSNorm has none.
        _ => rms_norm(x, w.gain, c.norm_eps),
    }
}

/// Copies `src` rows into `dst` and normalises each row of `d` values.
pub(crate) fn norm_rows(
    k: Kernels,
    c: &ModelConfig,
    w: &NormWeights<'_>,
    src: &[f32],
    dst: &mut [f32],
) {
    dst.copy_from_slice(src);
    for row in dst.chunks_exact_mut(c.d_model) {
        norm_row(k, c, w, row);
    }
}

/// `hidden += delta`, then (post-norm blocks) `hidden = norm(hidden)`, row by row.
pub(crate) fn residual(
    k: Kernels,
    c: &ModelConfig,
    w: &NormWeights<'_>,
    hidden: &mut [f32],
    delta: &[f32],
) {
    for (h, x) in hidden.iter_mut().zip(delta) {
        *h += *x;
    }
    if matches!(c.arch, Arch::Bert) {
        for row in hidden.chunks_exact_mut(c.d_model) {
            norm_row(k, c, w, row);
        }
    }
}

/// Runs every block of `model` on the hidden states `input` (`n x d_model` f32, `n <=
/// run.seq_len`) and returns the result: `n x d_model` f32 in the arena's `hidden` buffer.
///
/// `valid` is the padding mask (`n` flags, `false` hides that token as a key; `None`: all
/// visible); the causal mask comes from the config. Every buffer is taken from `arena` as
/// sized by [`Model::plan`] for `run` (whatever `n` is), so the arena must have at least
/// `plan.peak_bytes` free; nothing is allocated.
///
/// # Errors
///
/// The config and run checks of [`crate::try_plan`], [`Error::Unsupported`] for a causal model
/// (use [`crate::decoder`]), [`Error::ShapeMismatch`] when `input` is not a whole number of
/// non-zero rows or `valid` has the wrong length, [`Error::SeqTooLong`] when
/// `n > run.seq_len`, [`Error::ArenaTooSmall`].
pub fn forward<'a>(
    model: &Model<'_>,
    run: &RunConfig,
    input: &[f32],
    valid: Option<&[bool]>,
    arena: &mut Arena<'a>,
) -> Result<&'a mut [f32], Error> {
    let d = model.config.d_model;
    let n = input.len() / d;
    if n == 0 || !input.len().is_multiple_of(d) {
        let rows = if n == 0 { 1 } else { n + 1 };
        return Err(Error::ShapeMismatch {
            what: "input hidden states",
            expected: rows * d,
            found: input.len(),
        });
    }
    forward_with(model, run, n, valid, arena, |hidden| {
        hidden.copy_from_slice(input);
        Ok(())
    })
}

/// [`forward`] whose input is written by `fill` straight into the arena's `hidden` buffer
/// (`n x d_model` f32, zeroed), e.g. by an embedding lookup, so that the input needs no
/// buffer of its own outside the plan.
///
/// # Errors
///
/// As [`forward`], [`Error::ShapeMismatch`] when `n == 0`, and whatever `fill` returns.
pub fn forward_with<'a>(
    model: &Model<'_>,
    run: &RunConfig,
    n: usize,
    valid: Option<&[bool]>,
    arena: &mut Arena<'a>,
    fill: impl FnOnce(&mut [f32]) -> Result<(), Error>,
) -> Result<&'a mut [f32], Error> {
    let c = &model.config;
    let plan = model.plan(run)?;
    if c.causal {
        // A causal model's plan is the decoder's (KV cache of all layers, one chunk of hidden
        // states), not this whole-sequence layout.
        return Err(Error::Unsupported(
            "causal models run with topkit::decoder (KV cache)",
        ));
    }
    let d = c.d_model;
    let kv = c.kv_dim();
    if n == 0 {
        return Err(Error::ShapeMismatch {
            what: "input hidden states",
            expected: d,
            found: 0,
        });
    }
    if n > run.seq_len {
        return Err(Error::SeqTooLong {
            len: n,
            max: run.seq_len,
        });
    }
    if let Some(v) = valid {
        check_len("padding mask", n, v.len())?;
    }
    let params = attn_params(c, run);
    let chunk = plan.chunk;
    let pre_norm = matches!(c.arch, Arch::Llama);
    let rope = matches!(c.pos, PosKind::Rope);

    let hidden = arena.take::<f32>(plan.seq_len * d)?;
    let mut keys = KvStore::take(arena, plan.kv, plan.seq_len, c)?;
    let mut values = KvStore::take(arena, plan.kv, plan.seq_len, c)?;
    let hidden_n = &mut hidden[..n * d];
    fill(hidden_n)?;
    let (hd, nkv) = (c.head_dim, c.n_kv_heads * kv_int8_scales(c.head_dim));

    for l in model.layers {
        // K/V projection of all tokens.
        arena.scope(|s| -> Result<(), Error> {
            let mut xn = if pre_norm {
                Some(s.take::<f32>(chunk * d)?)
            } else {
                None
            };
            let stage = s.take::<f32>(plan.kv_stage_bytes / 4)?;
            let fast = s.take::<f32>(plan.kv_fast_bytes / 4)?;
            if let (Some(keys_n), Some(values_n)) =
                (keys.f32_rows((0, n), kv), values.f32_rows((0, n), kv))
            {
                if let Some(xn) = xn.as_deref_mut() {
                    for start in (0..n).step_by(chunk) {
                        let m = chunk.min(n - start);
                        let xn = &mut xn[..m * d];
                        let rows = &hidden_n[start * d..(start + m) * d];
                        norm_rows(model.kernels, c, &l.attn_norm, rows, xn);
                        let rows = start * kv..(start + m) * kv;
                        let k_rows = &mut keys_n[rows.clone()];
                        model.kernels.matmul(&l.k, xn, m, l.k_bias, k_rows, fast);
                        let v_rows = &mut values_n[rows];
                        model.kernels.matmul(&l.v, xn, m, l.v_bias, v_rows, fast);
                    }
                } else {
                    model
                        .kernels
                        .matmul(&l.k, hidden_n, n, l.k_bias, keys_n, fast);
                    model
                        .kernels
                        .matmul(&l.v, hidden_n, n, l.v_bias, values_n, fast);
                }
                if rope {
                    apply_rope(keys_n, kv, hd, 0, c.rope_theta);
                }
                return Ok(());
            }
            // Stored keys: project a chunk into `stage`, then store it.
            for start in (0..n).step_by(chunk) {
                let m = chunk.min(n - start);
                let rows = &hidden_n[start * d..(start + m) * d];
                let x: &[f32] = match xn.as_deref_mut() {
                    Some(xn) => {
                        let xn = &mut xn[..m * d];
                        norm_rows(model.kernels, c, &l.attn_norm, rows, xn);
                        xn
                    }
                    None => rows,
                };
                let st = &mut stage[..m * kv];
                model.kernels.matmul(&l.k, x, m, l.k_bias, st, fast);
                if rope {
                    apply_rope(st, kv, hd, start, c.rope_theta);
                }
                kv_store_rows(st, hd, &mut keys.rows_mut((0, n), kv, nkv), start * kv);
                model.kernels.matmul(&l.v, x, m, l.v_bias, st, fast);
                kv_store_rows(st, hd, &mut values.rows_mut((0, n), kv, nkv), start * kv);
            }
            Ok(())
        })?;

        // Attention, one query chunk at a time, in place.
        let keys_view = KvKeys {
            k: keys.rows((0, n), kv, nkv),
            v: values.rows((0, n), kv, nkv),
            n,
            valid,
        };
        arena.scope(|s| -> Result<(), Error> {
            let q = s.take::<f32>(chunk * d)?;
            let ctx = s.take::<f32>(chunk * d)?;
            let bufs = (plan.kv_work_bytes, plan.attn_fast_bytes);
            let mut scratch = AttnScratch::with_fast(s, &params, plan.seq_len, bufs)?;
            for start in (0..n).step_by(chunk) {
                let m = chunk.min(n - start);
                let (q, ctx) = (&mut q[..m * d], &mut ctx[..m * d]);
                let rows = &mut hidden_n[start * d..(start + m) * d];
                let fast = scratch.fast_words();
                if pre_norm {
                    norm_rows(model.kernels, c, &l.attn_norm, rows, ctx);
                    model.kernels.matmul(&l.q, ctx, m, l.q_bias, q, fast);
                } else {
                    model.kernels.matmul(&l.q, rows, m, l.q_bias, q, fast);
                }
                if rope {
                    apply_rope(q, d, c.head_dim, start, c.rope_theta);
                }
                attention::attention_kv(
                    model.kernels,
                    &params,
                    q,
                    start,
                    &keys_view,
                    &mut scratch,
                    ctx,
                )?;
                // The queries are spent: their buffer takes the output projection.
                let fast = scratch.fast_words();
                model.kernels.matmul(&l.o, ctx, m, l.o_bias, q, fast);
                residual(model.kernels, c, &l.attn_norm, rows, q);
            }
            Ok(())
        })?;

        // Feed-forward, in place. With the fast kernels and a dense post-norm block all
        // tokens go in one call (the fused int8 kernel then shares each step of weights among
        // up to 16 groups of 16 tokens), the output in `keys`: nothing reads this layer's keys
        // any more, and the next layer's K projection overwrites them. Else one token chunk
        // at a time.
        if ffn_wide(c, run, model.kernels, plan.kv)
            && let Some(keys_n) = keys.f32_rows((0, n), kv)
        {
            let out = &mut keys_n[..n * d];
            ffn_phase_wide(c, model.kernels, l, &plan, hidden_n, out, arena)?;
            continue;
        }
        ffn_phase(c, model.kernels, l, run.k_ff, chunk, hidden_n, arena)?;
    }

    if let Some(w) = &model.final_norm {
        for row in hidden_n.chunks_exact_mut(d) {
            norm_row(model.kernels, c, w, row);
        }
    }
    Ok(&mut hidden[..n * d])
}

/// The feed-forward phase of one block over `rows` (`n x d_model`), one token chunk of at
/// most `chunk` tokens at a time, in place; takes its buffers (normed chunk for pre-norm
/// blocks, output, scratch, and the fast kernels' scratch) from `arena` in a scope, in
/// [`crate::Plan::buffers`] order.
pub(crate) fn ffn_phase(
    c: &ModelConfig,
    kernels: Kernels,
    l: &LayerWeights<'_>,
    k_ff: Option<usize>,
    chunk: usize,
    rows: &mut [f32],
    arena: &mut Arena<'_>,
) -> Result<(), Error> {
    let d = c.d_model;
    let n = rows.len() / d;
    let pre_norm = matches!(c.arch, Arch::Llama);
    arena.scope(|s| -> Result<(), Error> {
        let mut xn = if pre_norm {
            Some(s.take::<f32>(chunk * d)?)
        } else {
            None
        };
        let out = s.take::<f32>(chunk * d)?;
        let gated = matches!(c.ffn, FfnKind::Gated);
        let mut scratch = match kernels {
            Kernels::Fast => FfnScratch::new_fast(s, d, c.d_ff, chunk, k_ff, gated)?,
            Kernels::Reference => FfnScratch::new(s, c.d_ff, chunk, k_ff)?,
        };
        for start in (0..n).step_by(chunk) {
            let m = chunk.min(n - start);
            let out = &mut out[..m * d];
            let rows = &mut rows[start * d..(start + m) * d];
            match xn.as_deref_mut() {
                Some(xn) => {
                    let xn = &mut xn[..m * d];
                    norm_rows(kernels, c, &l.ffn_norm, rows, xn);
                    ffn::ffn_with(kernels, &l.ffn, xn, k_ff, &mut scratch, out)?;
                }
                None => ffn::ffn_with(kernels, &l.ffn, rows, k_ff, &mut scratch, out)?,
            }
            residual(kernels, c, &l.ffn_norm, rows, out);
        }
        Ok(())
    })
}

/// [`ffn_phase`] of a dense post-norm block over all of `rows` in one call
/// ([`crate::plan::ffn_wide`]), the output in `out` (`rows.len()` values, a buffer of the plan
/// that is free in this phase). Takes the phase's buffers from `arena` as the plan lists them:
/// the chunk-sized output (unused), the dense scratch (no bytes) and the fast scratch for
/// [`Plan::ffn_tokens`] tokens, so that the arena's high-water mark stays the plan's.
fn ffn_phase_wide(
    c: &ModelConfig,
    kernels: Kernels,
    l: &LayerWeights<'_>,
    plan: &Plan,
    rows: &mut [f32],
    out: &mut [f32],
    arena: &mut Arena<'_>,
) -> Result<(), Error> {
    let gated = matches!(c.ffn, FfnKind::Gated);
    arena.scope(|s| -> Result<(), Error> {
        s.take::<f32>(plan.chunk * c.d_model)?;
        let (d, tokens) = (c.d_model, plan.ffn_tokens);
        let mut all = FfnScratch::new_fast(s, d, c.d_ff, tokens, None, gated)?;
        ffn::ffn_with(kernels, &l.ffn, rows, None, &mut all, out)?;
        residual(kernels, c, &l.ffn_norm, rows, out);
        Ok(())
    })
}

/// Rotates every head of `rows` (rows of `width` values at positions `first_pos..`, heads of
/// `head_dim` values) with the HF "rotate_half" pairing (see the module docs).
///
/// The angles are computed in f64 with the series below rather than the f32 math shim: the
/// angle `pos * theta^(-2i/h)` reaches thousands of radians, where a 1e-3 relative error (the
/// micromath approximations) would scramble the rotation. Per frequency, the rotation of the
/// first row is evaluated directly and each next row's by one complex multiplication with
/// the one-step rotation (error below 1e-11 after 65536 steps in f64). Only `+ - * /` are
/// used, so the rotation is bit-identical on every target and in both math builds.
pub(crate) fn apply_rope(
    rows: &mut [f32],
    width: usize,
    head_dim: usize,
    first_pos: usize,
    theta: f32,
) {
    let half = head_dim / 2;
    let ln_theta = ln(theta as f64);
    for i in 0..half {
        let inv_freq = exp(-((2 * i) as f64) / head_dim as f64 * ln_theta);
        let (mut sin, mut cos) = sin_cos(first_pos as f64 * inv_freq);
        let (step_sin, step_cos) = sin_cos(inv_freq);
        for row in rows.chunks_exact_mut(width) {
            let (s, c) = (sin as f32, cos as f32);
            for head in row.chunks_exact_mut(head_dim) {
                let (a, b) = (head[i], head[i + half]);
                head[i] = a * c - b * s;
                head[i + half] = b * c + a * s;
            }
            (sin, cos) = (
                sin * step_cos + cos * step_sin,
                cos * step_cos - sin * step_sin,
            );
        }
    }
}

const LN2: f64 = core::f64::consts::LN_2;

/// Natural log of `x > 0` (normal numbers): `x = m 2^e`, `ln m = 2 atanh((m-1)/(m+1))`.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
    let s = (m - 1.0) / (m + 1.0); // |s| <= 1/3: 30 terms reach f64 precision
    let s2 = s * s;
    let (mut term, mut sum) = (s, 0.0);
    for k in 0..30 {
        sum += term / (2 * k + 1) as f64;
        term *= s2;
    }
    e as f64 * LN2 + 2.0 * sum
}

/// `e^x` for `x <= 0` (what RoPE needs): `x = k ln2 + r`, Taylor series of `e^r`, `|r| < ln2`.
fn exp(x: f64) -> f64 {
    let k = (x / LN2) as i64;
    let r = x - k as f64 * LN2;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..25 {
        term *= r / i as f64;
        sum += term;
    }
    let mut scale = 1.0;
    for _ in 0..k.unsigned_abs() {
        scale *= if k < 0 { 0.5 } else { 2.0 };
    }
    sum * scale
}

/// `(sin x, cos x)` for `x >= 0`: reduction by multiples of pi/2 (the quadrant), Taylor series
/// on `[0, pi/2)`.
fn sin_cos(x: f64) -> (f64, f64) {
    let q = (x / core::f64::consts::FRAC_PI_2) as u64;
    let r = x - q as f64 * core::f64::consts::FRAC_PI_2;
    let r2 = r * r;
    let (mut s_term, mut c_term) = (r, 1.0);
    let (mut s, mut c) = (0.0, 0.0);
    for k in 0..14 {
        s += s_term;
        c += c_term;
        s_term *= -r2 / ((2 * k + 2) * (2 * k + 3)) as f64;
        c_term *= -r2 / ((2 * k + 1) * (2 * k + 2)) as f64;
    }
    match q % 4 {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn series_match_std() {
        for &x in &[1.0, 2.5, 10.0, 10000.0, 500000.0, 1.0e6] {
            assert!((ln(x) - x.ln()).abs() < 1e-12, "ln {x}");
        }
        for i in 0..200 {
            let x = -(i as f64) * 0.1;
            assert!(
                (exp(x) - x.exp()).abs() <= 1e-14 * x.exp().max(1e-300) + 1e-300,
                "exp {x}"
            );
        }
        for i in 0..5000 {
            let x = i as f64 * 1.37;
            let (s, c) = sin_cos(x);
            assert!(
                (s - x.sin()).abs() < 1e-11 && (c - x.cos()).abs() < 1e-11,
                "sin_cos {x}"
            );
        }
    }

    /// The recurrence over positions against direct std evaluation, far into the sequence.
    #[test]
    fn rope_matches_direct_rotation() {
        let (h, heads, theta) = (64, 2, 10000.0f32);
        let n = 5000;
        let row: std::vec::Vec<f32> = (0..h * heads)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let mut rows = row.repeat(n);
        apply_rope(&mut rows[h * heads * 1000..], h * heads, h, 1000, theta);
        for pos in (1000..n).step_by(7) {
            for head in 0..heads {
                for i in 0..h / 2 {
                    let ang = pos as f64 * (theta as f64).powf(-2.0 * i as f64 / h as f64);
                    let (s, c) = ang.sin_cos();
                    let (a, b) = (row[head * h + i] as f64, row[head * h + i + h / 2] as f64);
                    let got = &rows[pos * h * heads + head * h..];
                    assert!(
                        (got[i] as f64 - (a * c - b * s)).abs() < 2e-6,
                        "pos {pos} i {i}"
                    );
                    assert!((got[i + h / 2] as f64 - (b * c + a * s)).abs() < 2e-6);
                }
            }
        }
    }
}
