//! Sentence embeddings with a BERT-family encoder: token + position + segment embeddings and
//! their LayerNorm, the layer stack of [`crate::model`], then pooling (mean over the tokens,
//! or the `[CLS]` state) and L2 normalisation, as sentence-transformers does.
//!
//! The embedding lookup writes straight into the arena's hidden-state buffer
//! ([`crate::model::forward_with`]), so an embedding needs exactly [`crate::plan()`]'s peak
//! bytes of arena and the caller's output slice, nothing else.

use crate::arena::Arena;
use crate::config::{ModelConfig, RunConfig};
use crate::format::{PackedModel, Pooling, TensorName};
#[cfg(not(feature = "std"))]
use crate::kernels::layer_norm;
use crate::kernels::{Matrix, axpy_row, row_to_f32};
use crate::model::{LayerWeights, Model, NormWeights, check_rows, forward_with};
use crate::{Error, Norm, math};

pub use super::weights::{Layers, MAX_LAYERS, layers};

/// The embedding tables of a BERT-family model.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    /// Token embeddings, `vocab_size x d_model`.
    pub tokens: Matrix<'a>,
    /// Learned position embeddings, `max_seq x d_model`.
    pub positions: Matrix<'a>,
    /// Segment (token type) embeddings, `type_vocab_size x d_model`; segment 0 is used.
    pub segments: Option<Matrix<'a>>,
    /// LayerNorm over the summed embeddings.
    pub norm: NormWeights<'a>,
}

/// A sentence encoder: embeddings, layer stack, pooling.
///
/// # Example
///
/// A one-block BERT with seeded random weights, viewed from slices as a packed file's would
/// be ([`Encoder::from_packed`]), embeds four tokens in an arena sized at compile time:
///
/// ```
/// use topkit::encoder::{Embeddings, Encoder};
/// use topkit::format::Pooling;
/// use topkit::kernels::{Matrix, Weights};
/// use topkit::{Activation, Arch, ArenaStorage, Error, FfnKind, LayerWeights, Model};
/// use topkit::{ModelConfig, Norm, NormWeights, Plan, PosKind, RunConfig, plan};
///
/// const CFG: ModelConfig = ModelConfig {
///     arch: Arch::Bert, vocab_size: 12, d_model: 8, n_layers: 1, n_heads: 2, n_kv_heads: 2,
///     head_dim: 4, d_ff: 16, max_seq: 8, type_vocab_size: 0, norm: Norm::LayerNorm,
///     norm_eps: 1e-12, act: Activation::GeluErf, ffn: FfnKind::Plain, pos: PosKind::Learned,
///     rope_theta: 10000.0, causal: false, tie_embeddings: false,
/// };
/// const RUN: RunConfig = RunConfig { seq_len: 8, chunk: 4, k_attn: Some(4), k_ff: None };
/// const PLAN: Plan = plan(&CFG, &RUN);
///
/// /// `rows x 8` weights, row-major.
/// fn matrix(w: &[f32]) -> Result<Matrix<'_>, Error> {
///     Matrix::new(w.len() / 8, 8, Weights::F32(w))
/// }
/// let mut rng = topkit::sample::Pcg32::new(7);
/// let mut random = |n: usize| -> Vec<f32> {
///     (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()
/// };
/// let (q, k, v, o) = (random(64), random(64), random(64), random(64));
/// let (up, down_t, tokens, positions) = (random(128), random(128), random(96), random(64));
/// let (gain, bias) = ([1.0; 8], [0.0; 8]);
/// let norm = NormWeights { gain: &gain, bias: Some(&bias) };
/// let layers = [LayerWeights {
///     q: matrix(&q)?, q_bias: None, k: matrix(&k)?, k_bias: None,
///     v: matrix(&v)?, v_bias: None, o: matrix(&o)?, o_bias: None,
///     attn_norm: norm,
///     ffn: topkit::ffn::FfnWeights {
///         up: matrix(&up)?, up_bias: None, gate: None, down_t: matrix(&down_t)?,
///         down_layout: topkit::ffn::DownLayout::Transposed,
///         down_bias: None, act: Activation::GeluErf,
///     },
///     ffn_norm: norm,
/// }];
/// let emb = Embeddings {
///     tokens: matrix(&tokens)?, positions: matrix(&positions)?, segments: None, norm,
/// };
/// let encoder = Encoder::new(Model::new(CFG, &layers, None)?, emb, Pooling::Mean, true)?;
///
/// let mut storage = ArenaStorage::<{ PLAN.peak_bytes }>::new();
/// let mut arena = storage.arena();
/// let mut embedding = [0.0f32; 8];
/// encoder.embed(&RUN, &[1, 5, 3, 2], &mut arena, &mut embedding)?;
/// let length: f32 = embedding.iter().map(|x| x * x).sum::<f32>().sqrt();
/// assert!((length - 1.0).abs() < 1e-5); // mean-pooled, then L2-normalised
/// assert_eq!(arena.high_water(), PLAN.peak_bytes); // the plan is exact
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Encoder<'a> {
    model: Model<'a>,
    emb: Embeddings<'a>,
    pooling: Pooling,
    normalize: bool,
}

impl<'a> Encoder<'a> {
    /// Checks the embedding shapes against the model and that the pooling is one an encoder
    /// can do ([`Pooling::Mean`] or [`Pooling::Cls`]).
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] for an embedding table without `d_model` columns or with
    /// fewer rows than the model's vocabulary (tokens) or positions, or an embedding
    /// LayerNorm that is not `d_model` gains and biases of a LayerNorm model;
    /// [`Error::Unsupported`] for [`Pooling::None`].
    pub fn new(
        model: Model<'a>,
        emb: Embeddings<'a>,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Self, Error> {
        let c = model.config();
        let d = c.d_model;
        check_rows("token embeddings", &emb.tokens, c.vocab_size, d)?;
        check_rows("position embeddings", &emb.positions, c.max_seq, d)?;
        if let Some(seg) = &emb.segments {
            check_rows("segment embeddings", seg, 1, d)?;
        }
        let norm_len = emb.norm.bias.map_or(0, <[f32]>::len);
        if emb.norm.gain.len() != d || norm_len != d || c.norm != Norm::LayerNorm {
            return Err(Error::ShapeMismatch {
                what: "embedding LayerNorm",
                expected: d,
                found: emb.norm.gain.len().min(norm_len),
            });
        }
        if matches!(pooling, Pooling::None) {
            return Err(Error::Unsupported(
                "a sentence encoder needs mean or CLS pooling",
            ));
        }
        Ok(Encoder {
            model,
            emb,
            pooling,
            normalize,
        })
    }

    /// The encoder of a packed BERT-family file, over layer views made by [`layers`].
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`] for an embedding table the file lacks; the errors of
    /// [`Model::from_packed`], [`PackedModel::matrix`] and [`Encoder::new`].
    pub fn from_packed(
        packed: &PackedModel<'a>,
        layers: &'a [LayerWeights<'a>],
    ) -> Result<Self, Error> {
        let fc = packed.file_config();
        let g = TensorName::global;
        let model = Model::from_packed(packed, layers)?;
        let emb = Embeddings {
            tokens: packed.matrix(g("tok_emb"))?,
            positions: packed.matrix(g("pos_emb"))?,
            segments: match packed.find("seg_emb") {
                Some(_) => Some(packed.matrix(g("seg_emb"))?),
                None => None,
            },
            norm: NormWeights {
                gain: packed.vector(g("emb_norm.w"))?,
                bias: packed.optional_vector(g("emb_norm.b"))?,
            },
        };
        Self::new(model, emb, fc.pooling, fc.normalize)
    }

    /// The same encoder with its layer stack run by `kernels` ([`Model::with_kernels`]).
    pub fn with_kernels(mut self, kernels: crate::kernels::Kernels) -> Self {
        self.model = self.model.with_kernels(kernels);
        self
    }

    /// The same encoder with its keys and values stored as `kv` ([`Model::with_kv`]; default
    /// [`crate::KvType::F32`]).
    pub fn with_kv(mut self, kv: crate::KvType) -> Self {
        self.model = self.model.with_kv(kv);
        self
    }

    /// The layer stack.
    pub fn model(&self) -> &Model<'a> {
        &self.model
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The memory plan of an embedding with the encoder's kernels ([`Model::plan`]): provide
    /// `peak_bytes` of arena.
    ///
    /// # Errors
    ///
    /// As [`crate::try_plan`].
    pub fn plan(&self, run: &RunConfig) -> Result<crate::Plan, Error> {
        self.model.plan(run)
    }

    /// Embeds one tokenized text (`ids`, `[CLS]` and `[SEP]` included, at most `run.seq_len`)
    /// into `out` (`d_model` values), using only `arena` (at least [`Encoder::plan`]'s peak
    /// bytes).
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when `out` is not `d_model` values or `ids` is empty;
    /// [`Error::TokenOutOfRange`] for an id `>= vocab_size`; the errors of
    /// [`crate::model::forward`] ([`Error::SeqTooLong`], [`Error::ArenaTooSmall`], ...).
    pub fn embed(
        &self,
        run: &RunConfig,
        ids: &[u32],
        arena: &mut Arena<'_>,
        out: &mut [f32],
    ) -> Result<(), Error> {
        let c = self.model.config();
        let d = c.d_model;
        if out.len() != d {
            return Err(Error::ShapeMismatch {
                what: "embedding output",
                expected: d,
                found: out.len(),
            });
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::TokenOutOfRange {
                id,
                vocab_size: c.vocab_size,
            });
        }
        let emb = &self.emb;
        // `d >= 1` (validated config): `max(1)` keeps the zero-chunk panic out of the binary.
        let hidden = forward_with(&self.model, run, ids.len(), None, arena, |hidden| {
            for (pos, (row, &id)) in hidden.chunks_exact_mut(d.max(1)).zip(ids).enumerate() {
                // Same order of additions as the reference: token + segment, then + position.
                row_to_f32(&emb.tokens, id as usize, row);
                if let Some(seg) = &emb.segments {
                    axpy_row(seg, 0, 1.0, row);
                }
                axpy_row(&emb.positions, pos, 1.0, row);
                let (g, b) = (emb.norm.gain, emb.norm.bias.unwrap_or(&[]));
                // The fast LayerNorm exists in std builds only; without std this closure stays
                // as small as it was (the firmware's stack peak is in it).
                #[cfg(feature = "std")]
                self.model.kernels().layer_norm(row, g, b, c.norm_eps);
                #[cfg(not(feature = "std"))]
                layer_norm(row, g, b, c.norm_eps);
            }
            Ok(())
        })?;
        let n = ids.len();
        match self.pooling {
            // `hidden` holds `n >= 1` rows of `d` (forward_with checked the shapes).
            Pooling::Cls => out.iter_mut().zip(hidden).for_each(|(o, x)| *o = *x),
            _ => {
                out.fill(0.0);
                for row in hidden.chunks_exact(d.max(1)).take(n) {
                    out.iter_mut().zip(row).for_each(|(o, x)| *o += x);
                }
                let inv = 1.0 / n as f32;
                out.iter_mut().for_each(|o| *o *= inv);
            }
        }
        if self.normalize {
            let norm = math::sqrt(out.iter().map(|x| x * x).sum::<f32>());
            // As torch.nn.functional.normalize: divide by max(norm, 1e-12).
            let inv = 1.0 / norm.max(1e-12);
            out.iter_mut().for_each(|o| *o *= inv);
        }
        Ok(())
    }
}
