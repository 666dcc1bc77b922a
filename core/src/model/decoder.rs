//! Causal language models (the Llama family): token embeddings, the pre-norm layer stack of
//! [`crate::model`] over a KV cache, the final norm and the output head, in fixed memory.
//!
//! A [`Decoder`] holds the weight views; [`Decoder::start`] takes the plan's buffers from an
//! arena and returns a [`Session`], which keeps the KV cache of every layer for up to
//! `run.seq_len` positions (the context). [`Session::feed`] runs tokens through the model:
//!
//! - **prefill**: a prompt of any length (up to the context) runs in chunks of
//!   `C = min(run.chunk, run.seq_len)` tokens; each chunk goes through every layer, writing its
//!   keys and values into the cache rows of its positions, its queries attending causally over
//!   the cache (the chunk's own rows included);
//! - **decode**: one token per call, attending over every cached position. With
//!   `run.k_attn = Some(k)` each query keeps only its `k` best-scoring keys
//!   ([`crate::model::attention`]); `k` at least the context is dense attention up to rounding.
//!
//! After the last token of a call, its final hidden state goes through the final norm and the
//! output head (`lm_head.w`, or the token embeddings when they are tied) into one row of
//! `vocab_size` logits. [`Session::feed_each`] gives the logits of every token instead
//! (teacher forcing: perplexity, or comparing attention modes position by position).
//!
//! Memory: exactly [`crate::plan_with`]'s decoder layout for the model's kernels (see [module
//! `plan`](mod@crate::plan)): the cache (`8 n_layers kv_dim` bytes per context position), one
//! chunk of hidden states, the logits row, and per layer the attention and feed-forward phases
//! of one chunk (with [`crate::kernels::Kernels::Fast`], each with its fast scratch). Once a
//! call has run, the arena's high-water mark equals [`crate::Plan::peak_bytes`]; nothing is allocated, and
//! [`Decoder::start`] refuses an arena that is too small before taking anything.
//!
//! # Example
//!
//! The plan is a `const fn`, so the arena of a decoder is known at compile time too, e.g.
//! SmolLM2-135M with a 2048-token context:
//!
//! ```
//! use topkit::{Activation, Arch, FfnKind, ModelConfig, Norm, Plan, PosKind, RunConfig, plan};
//!
//! const SMOLLM2: ModelConfig = ModelConfig {
//!     arch: Arch::Llama, vocab_size: 49152, d_model: 576, n_layers: 30, n_heads: 9,
//!     n_kv_heads: 3, head_dim: 64, d_ff: 1536, max_seq: 8192, type_vocab_size: 0,
//!     norm: Norm::RmsNorm, norm_eps: 1e-5, act: Activation::Silu, ffn: FfnKind::Gated,
//!     pos: PosKind::Rope, rope_theta: 100000.0, causal: true, tie_embeddings: true,
//! };
//! const RUN: RunConfig = RunConfig { seq_len: 2048, chunk: 16, k_attn: Some(32), k_ff: None };
//! const PLAN: Plan = plan(&SMOLLM2, &RUN);
//! // The f32 KV cache: 8 bytes x 30 layers x 192 (3 KV heads of 64) per context token.
//! const _: () = assert!(PLAN.keys_bytes + PLAN.values_bytes == 2048 * 46080);
//! const _: () = assert!(PLAN.peak_bytes == 94_682_176);
//! ```
//!
//! Greedy generation from a packed file (`topkit generate` does this, streaming the text):
//!
//! ```no_run
//! use topkit::{Arena, Decoder, RunConfig, encoder::layers, format::PackedModel};
//! use topkit::sample::Sampler;
//!
//! fn generate(file: &[u8], prompt: &[u32], out: &mut [u32], arena_mem: &mut [u8])
//!     -> Result<(), topkit::Error> {
//!     let packed = PackedModel::parse(file)?;
//!     let layers = layers(&packed)?;
//!     let dec = Decoder::from_packed(&packed, &layers)?;
//!     let run = RunConfig::dense(prompt.len() + out.len(), 16);
//!     let mut arena = Arena::new(arena_mem)?; // at least dec.plan(&run)?.peak_bytes
//!     let mut session = dec.start(&run, &mut arena)?;
//!     let mut sampler = Sampler::greedy();
//!     let mut logits = session.feed(prompt)?; // prefill
//!     for i in 0..out.len() {
//!         out[i] = sampler.sample(logits)?;
//!         if i + 1 < out.len() {
//!             logits = session.feed(&out[i..i + 1])?; // one decode step
//!         }
//!     }
//!     Ok(())
//! }
//! ```

use crate::Error;
use crate::arena::Arena;
use crate::config::{Arch, KvType, ModelConfig, PosKind, RunConfig};
use crate::format::{PackedModel, TensorName};
use crate::kernels::{Matrix, axpy_row, kv_store_rows, row_to_f32};
use crate::model::attention::{self, AttnParams, AttnScratch, KvKeys};
use crate::model::{
    KvStore, LayerWeights, Model, apply_rope, check_len, check_matrix, check_rows, ffn_phase,
    norm_row, norm_rows, residual,
};
use crate::plan::{Plan, attn_params};

/// A causal language model: the layer stack and its embedding and output matrices, as
/// zero-copy views. Construct with [`Decoder::new`] or [`Decoder::from_packed`].
#[derive(Debug, Clone, Copy)]
pub struct Decoder<'a> {
    model: Model<'a>,
    tokens: Matrix<'a>,
    positions: Option<Matrix<'a>>,
    head: Matrix<'a>,
}

impl<'a> Decoder<'a> {
    /// Checks that `model` is a causal pre-norm model and the shapes of its matrices:
    /// `tokens` is `vocab_size x d_model`; `positions` (learned positions only, else `None`)
    /// has at least `max_seq` rows of `d_model`; `lm_head` is `vocab_size x d_model`, and may
    /// be `None` only when the config ties the embeddings.
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a model that is not causal or not pre-norm;
    /// [`Error::ShapeMismatch`] for a matrix of the wrong shape; [`Error::InvalidConfig`] for
    /// no `lm_head` without tied embeddings.
    pub fn new(
        model: Model<'a>,
        tokens: Matrix<'a>,
        positions: Option<Matrix<'a>>,
        lm_head: Option<Matrix<'a>>,
    ) -> Result<Self, Error> {
        let c = model.config();
        if !c.causal {
            return Err(Error::Unsupported("the decoder needs a causal model"));
        }
        if c.arch != Arch::Llama {
            return Err(Error::Unsupported(
                "the decoder runs pre-norm (Llama-family) blocks",
            ));
        }
        let (v, d) = (c.vocab_size, c.d_model);
        check_matrix("token embeddings", &tokens, v, d)?;
        match (c.pos, &positions) {
            (PosKind::Learned, Some(p)) => check_rows("position embeddings", p, c.max_seq, d)?,
            (PosKind::Learned, None) => check_len("position embeddings", c.max_seq * d, 0)?,
            (PosKind::Rope, Some(p)) => check_len("position embeddings", 0, p.rows() * p.cols())?,
            (PosKind::Rope, None) => {}
        }
        let head = match lm_head {
            Some(h) => {
                check_matrix("output head", &h, v, d)?;
                h
            }
            None if c.tie_embeddings => tokens,
            None => {
                return Err(Error::InvalidConfig(
                    "a model without tied embeddings needs an output head",
                ));
            }
        };
        Ok(Decoder {
            model,
            tokens,
            positions,
            head,
        })
    }

    /// The decoder of a packed causal model (`tok_emb`, `pos_emb` for learned positions,
    /// `lm_head.w` unless the embeddings are tied), over layer views made by
    /// [`crate::encoder::layers`].
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`] for a matrix the file lacks; the errors of
    /// [`Model::from_packed`], [`PackedModel::matrix`] and [`Decoder::new`].
    pub fn from_packed(
        packed: &PackedModel<'a>,
        layers: &'a [LayerWeights<'a>],
    ) -> Result<Self, Error> {
        let c = *packed.config();
        let g = TensorName::global;
        let model = Model::from_packed(packed, layers)?;
        let positions = match c.pos {
            PosKind::Learned => Some(packed.matrix(g("pos_emb"))?),
            PosKind::Rope => None,
        };
        let lm_head = if c.tie_embeddings {
            None
        } else {
            Some(packed.matrix(g("lm_head.w"))?)
        };
        Self::new(model, packed.matrix(g("tok_emb"))?, positions, lm_head)
    }

    /// The same decoder with its KV cache stored as `kv` ([`Model::with_kv`]; default
    /// [`KvType::F32`]).
    pub fn with_kv(mut self, kv: KvType) -> Self {
        self.model = self.model.with_kv(kv);
        self
    }

    /// The same decoder run with `kernels` ([`Model::with_kernels`]).
    pub fn with_kernels(mut self, kernels: crate::kernels::Kernels) -> Self {
        self.model = self.model.with_kernels(kernels);
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

    /// The memory plan of a run with the model's kernels ([`crate::try_plan_with`], decoder
    /// layout): provide `peak_bytes` of arena.
    ///
    /// # Errors
    ///
    /// As [`crate::try_plan_with`].
    pub fn plan(&self, run: &RunConfig) -> Result<Plan, Error> {
        self.model.plan(run)
    }

    /// Starts a session with an empty context of `run.seq_len` positions: takes the
    /// persistent buffers (hidden chunk, K and V caches, logits) from `arena`, in the plan's
    /// order. The phases take the rest of the plan's peak at each call.
    ///
    /// The persistent buffers stay taken from `arena` after the session ends: to start over
    /// with the same context size, [`Session::reset`] the session, or make a new [`Arena`]
    /// over the same memory.
    ///
    /// # Errors
    ///
    /// The checks of [`crate::try_plan_with`]; [`Error::ArenaTooSmall`] when `arena` has less
    /// than `plan.peak_bytes` free (checked before anything is taken).
    pub fn start<'s, 'm>(
        &'s self,
        run: &RunConfig,
        arena: &'s mut Arena<'m>,
    ) -> Result<Session<'s, 'm>, Error> {
        let c = self.model.config();
        let plan = self.plan(run)?;
        if arena.remaining() < plan.peak_bytes {
            return Err(Error::ArenaTooSmall {
                needed: arena.used().saturating_add(plan.peak_bytes),
                available: arena.used() + arena.remaining(),
            });
        }
        let cache = c.n_layers * plan.seq_len;
        let hidden = arena.take::<f32>(plan.chunk * c.d_model)?;
        let k_cache = KvStore::take(arena, plan.kv, cache, c)?;
        let v_cache = KvStore::take(arena, plan.kv, cache, c)?;
        let logits = arena.take::<f32>(c.vocab_size)?;
        Ok(Session {
            dec: self,
            run: *run,
            plan,
            params: attn_params(c, run),
            hidden,
            k_cache,
            v_cache,
            logits,
            arena,
            len: 0,
        })
    }
}

/// A generation in progress: the KV cache of the tokens fed so far and the buffers of one
/// step, all in the arena given to [`Decoder::start`].
///
/// # Example
///
/// Greedy generation with a one-block Llama-family model (grouped-query attention, RoPE,
/// SwiGLU, tied embeddings) whose weights are seeded random slices:
///
/// ```
/// use topkit::kernels::{Matrix, Weights};
/// use topkit::sample::{Pcg32, Sampler};
/// use topkit::{Activation, Arch, ArenaStorage, Decoder, Error, FfnKind, LayerWeights, Model};
/// use topkit::{ModelConfig, Norm, NormWeights, Plan, PosKind, RunConfig, plan};
///
/// const CFG: ModelConfig = ModelConfig {
///     arch: Arch::Llama, vocab_size: 12, d_model: 8, n_layers: 1, n_heads: 2, n_kv_heads: 1,
///     head_dim: 4, d_ff: 16, max_seq: 16, type_vocab_size: 0, norm: Norm::RmsNorm,
///     norm_eps: 1e-5, act: Activation::Silu, ffn: FfnKind::Gated, pos: PosKind::Rope,
///     rope_theta: 10000.0, causal: true, tie_embeddings: true,
/// };
/// // A context of 10 tokens, prefill in chunks of 4, top-4 attention.
/// const RUN: RunConfig = RunConfig { seq_len: 10, chunk: 4, k_attn: Some(4), k_ff: None };
/// const PLAN: Plan = plan(&CFG, &RUN);
///
/// # fn matrix(w: &[f32]) -> Result<Matrix<'_>, Error> {
/// #     Matrix::new(w.len() / 8, 8, Weights::F32(w))
/// # }
/// # let mut rng = Pcg32::new(3);
/// # let mut random = |n: usize| -> Vec<f32> {
/// #     (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect()
/// # };
/// # let (q, k, v, o) = (random(64), random(32), random(32), random(64));
/// # let (up, gate, down_t, tokens) = (random(128), random(128), random(128), random(96));
/// # let gain = [1.0; 8];
/// # let norm = NormWeights { gain: &gain, bias: None };
/// # let layers = [LayerWeights {
/// #     q: matrix(&q)?, q_bias: None, k: matrix(&k)?, k_bias: None,
/// #     v: matrix(&v)?, v_bias: None, o: matrix(&o)?, o_bias: None,
/// #     attn_norm: norm,
/// #     ffn: topkit::ffn::FfnWeights {
/// #         up: matrix(&up)?, up_bias: None, gate: Some(matrix(&gate)?),
/// #         down_t: matrix(&down_t)?, down_layout: topkit::ffn::DownLayout::Transposed,
/// #         down_bias: None, act: Activation::Silu,
/// #     },
/// #     ffn_norm: norm,
/// # }];
/// // `layers`: one block of zero-copy views (hidden here; see `Encoder` for one in full).
/// let model = Model::new(CFG, &layers, Some(norm))?;
/// let decoder = Decoder::new(model, matrix(&tokens)?, None, None)?;
///
/// let mut storage = ArenaStorage::<{ PLAN.peak_bytes }>::new();
/// let mut arena = storage.arena();
/// let mut session = decoder.start(&RUN, &mut arena)?;
/// let mut sampler = Sampler::greedy();
/// let mut text = vec![sampler.sample(session.feed(&[1, 4, 2, 7, 5])?)?]; // prefill
/// while session.len() < RUN.seq_len {
///     let last = text[text.len() - 1];
///     text.push(sampler.sample(session.feed(&[last])?)?); // one decode step
/// }
/// assert_eq!(text.len(), 6);
/// assert!(text.iter().all(|&id| id < 12));
/// assert_eq!(session.high_water(), PLAN.peak_bytes); // the plan is exact
/// // The context is full: one more token is an error, and the session is unchanged.
/// assert!(matches!(session.feed(&[0]), Err(Error::SeqTooLong { len: 11, max: 10 })));
/// # Ok::<(), Error>(())
/// ```
pub struct Session<'s, 'a> {
    dec: &'s Decoder<'s>,
    run: RunConfig,
    plan: Plan,
    params: AttnParams,
    /// One chunk of hidden states, `chunk x d_model`.
    hidden: &'a mut [f32],
    /// Keys of every layer: layer `l`, position `p` at row `l * seq_len + p` of `kv_dim`
    /// (stored as `plan.kv`).
    k_cache: KvStore<'a>,
    /// Values, laid out as the keys.
    v_cache: KvStore<'a>,
    /// Logits of the last token that went through the head, `vocab_size`.
    logits: &'a mut [f32],
    arena: &'s mut Arena<'a>,
    /// Positions in the cache: the next token goes to position `len`.
    len: usize,
}

impl core::fmt::Debug for Session<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("len", &self.len)
            .field("run", &self.run)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl<'s, 'a> Session<'s, 'a> {
    /// Tokens in the context so far (the position the next token takes).
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` before any token was fed (or after [`Session::reset`]).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Largest number of tokens the context holds (`run.seq_len`).
    pub fn capacity(&self) -> usize {
        self.plan.seq_len
    }

    /// The run this session was started with.
    pub fn run(&self) -> &RunConfig {
        &self.run
    }

    /// The memory plan of this session (decoder layout).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The arena's high-water mark, bytes from its start: `plan().peak_bytes` (plus what the
    /// arena held before [`Decoder::start`]) once a call has run.
    pub fn high_water(&self) -> usize {
        self.arena.high_water()
    }

    /// Empties the context (the cache rows are overwritten by the next tokens).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Runs `ids` through the model at positions `len()..len() + ids.len()` (prefill in
    /// chunks, or one decode step for a single id) and returns the logits of the last one
    /// (`vocab_size` values; the caller may overwrite them, e.g. [`crate::sample::Sampler`]).
    ///
    /// # Errors
    ///
    /// Checked before anything runs (the session is unchanged): [`Error::ShapeMismatch`] for
    /// no ids, [`Error::SeqTooLong`] when the context would exceed `run.seq_len` tokens,
    /// [`Error::TokenOutOfRange`] for an id `>= vocab_size`.
    pub fn feed(&mut self, ids: &[u32]) -> Result<&mut [f32], Error> {
        self.check(ids)?;
        let c = self.plan.chunk;
        let n_chunks = ids.len().div_ceil(c);
        for (i, chunk) in ids.chunks(c).enumerate() {
            self.run_chunk(chunk)?;
            if i + 1 == n_chunks {
                self.head(chunk.len() - 1);
            }
        }
        Ok(self.logits)
    }

    /// [`Session::feed`] that computes the logits of every token: `f(position, logits)` is
    /// called for each id in order, `position` being its place in the context. Costs one
    /// output-head product (`vocab_size x d_model`) per token instead of one per call.
    ///
    /// # Errors
    ///
    /// As [`Session::feed`].
    pub fn feed_each(
        &mut self,
        ids: &[u32],
        mut f: impl FnMut(usize, &mut [f32]),
    ) -> Result<(), Error> {
        self.check(ids)?;
        for chunk in ids.chunks(self.plan.chunk) {
            let p0 = self.len;
            self.run_chunk(chunk)?;
            for i in 0..chunk.len() {
                self.head(i);
                f(p0 + i, self.logits);
            }
        }
        Ok(())
    }

    fn check(&self, ids: &[u32]) -> Result<(), Error> {
        if ids.is_empty() {
            return Err(Error::ShapeMismatch {
                what: "token ids",
                expected: 1,
                found: 0,
            });
        }
        let total = self.len.saturating_add(ids.len());
        if total > self.plan.seq_len {
            return Err(Error::SeqTooLong {
                len: total,
                max: self.plan.seq_len,
            });
        }
        let vocab_size = self.dec.config().vocab_size;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::TokenOutOfRange { id, vocab_size });
        }
        Ok(())
    }

    /// Runs one chunk (`ids.len() <= chunk`, checked ids) through every layer, appending its
    /// keys and values to the cache; leaves the last layer's output in `hidden`.
    fn run_chunk(&mut self, ids: &[u32]) -> Result<(), Error> {
        let dec = self.dec;
        let c = dec.config();
        let kernels = dec.model.kernels();
        let (d, kv, hd) = (c.d_model, c.kv_dim(), c.head_dim);
        let (chunk, n) = (self.plan.chunk, self.plan.seq_len);
        let (m, p0) = (ids.len(), self.len);
        let rope = matches!(c.pos, PosKind::Rope);
        let x = &mut self.hidden[..m * d];
        for (i, (row, &id)) in x.chunks_exact_mut(d).zip(ids).enumerate() {
            row_to_f32(&dec.tokens, id as usize, row);
            if let Some(p) = &dec.positions {
                axpy_row(p, p0 + i, 1.0, row);
            }
        }
        let params = &self.params;
        let attn_fast = self.plan.attn_fast_bytes;
        // int8 scales per cache row.
        let nkv = c.n_kv_heads * crate::kernels::kv_int8_scales(hd);
        let (kcache, vcache) = (&mut self.k_cache, &mut self.v_cache);
        for (li, l) in dec.model.layers().iter().enumerate() {
            // This layer's cache rows: `n` positions from row `li * n`.
            let layer = (li * n, n);
            self.arena.scope(|s| -> Result<(), Error> {
                // Same order as `Plan::buffers`: queries, normed chunk / context, scratch, for a
                // stored cache its tile and the chunk's K/V staging, fast scratch.
                let q = &mut s.take::<f32>(chunk * d)?[..m * d];
                let xn = &mut s.take::<f32>(chunk * d)?[..m * d];
                let bufs = (self.plan.kv_work_bytes, attn_fast);
                let mut scratch = AttnScratch::with_fast(s, params, n, bufs)?;
                norm_rows(kernels, c, &l.attn_norm, x, xn);
                let fast = scratch.fast_words();
                kernels.matmul(&l.q, xn, m, l.q_bias, q, fast);
                if let (Some(kc), Some(vc)) =
                    (kcache.f32_rows(layer, kv), vcache.f32_rows(layer, kv))
                {
                    let rows = p0 * kv..(p0 + m) * kv;
                    kernels.matmul(&l.k, xn, m, l.k_bias, &mut kc[rows.clone()], fast);
                    kernels.matmul(&l.v, xn, m, l.v_bias, &mut vc[rows.clone()], fast);
                    if rope {
                        apply_rope(&mut kc[rows], kv, hd, p0, c.rope_theta);
                    }
                } else {
                    let (stage, fast) = scratch.stage_and_fast(hd);
                    let stage = &mut stage[..m * kv];
                    kernels.matmul(&l.k, xn, m, l.k_bias, stage, fast);
                    if rope {
                        apply_rope(stage, kv, hd, p0, c.rope_theta);
                    }
                    kv_store_rows(stage, hd, &mut kcache.rows_mut(layer, kv, nkv), p0 * kv);
                    kernels.matmul(&l.v, xn, m, l.v_bias, stage, fast);
                    kv_store_rows(stage, hd, &mut vcache.rows_mut(layer, kv, nkv), p0 * kv);
                }
                if rope {
                    apply_rope(q, d, hd, p0, c.rope_theta);
                }
                let keys = KvKeys {
                    k: kcache.rows((li * n, p0 + m), kv, nkv),
                    v: vcache.rows((li * n, p0 + m), kv, nkv),
                    n: p0 + m,
                    valid: None,
                };
                attention::attention_kv(kernels, params, q, p0, &keys, &mut scratch, xn)?;
                // The queries are spent: their buffer takes the output projection.
                kernels.matmul(&l.o, xn, m, l.o_bias, q, scratch.fast_words());
                residual(kernels, c, &l.attn_norm, x, q);
                Ok(())
            })?;
            ffn_phase(c, kernels, l, self.run.k_ff, chunk, x, self.arena)?;
        }
        self.len = p0 + m;
        Ok(())
    }

    /// Final norm of row `i` of `hidden` (in place: the row is spent) and the output head.
    fn head(&mut self, i: usize) {
        let dec = self.dec;
        let c = dec.config();
        let d = c.d_model;
        let row = &mut self.hidden[i * d..(i + 1) * d];
        if let Some(w) = dec.model.final_norm() {
            norm_row(dec.model.kernels(), c, &w, row);
        }
        // One token: the kernels' product needs no scratch (the fast ones quantize it on
        // the stack), and the reference kernels give `matvec`'s bits.
        dec.model
            .kernels()
            .matmul(&dec.head, row, 1, None, self.logits, &mut []);
    }
}
