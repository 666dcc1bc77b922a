//! The model's side of a packed file: which tensors a model needs, with which shapes, and how
//! they become the engine's [`LayerWeights`] (zero-copy views). [`crate::format`] is the
//! container only; this module adds the model checks to [`PackedModel::parse`] and the
//! bindings ([`PackedModel::layer_weights`], [`layers`], [`Model::from_packed`]).
//!
//! # Tensor names
//!
//! Names are topkit's own, independent of the source framework. Matrices are row-major
//! `rows x cols` with PyTorch's `[out, in]` convention (rows are outputs), so int8 scales are
//! per output row. `D` = d_model, `Q` = n_heads * head_dim, `KV` = n_kv_heads * head_dim,
//! `F` = d_ff, `V` = vocab_size, `S` = max_seq, `T` = type_vocab_size.
//!
//! | name                | shape     | notes                                                  |
//! |---------------------|-----------|--------------------------------------------------------|
//! | `tok_emb`           | `V x D`   | token embeddings                                       |
//! | `pos_emb`           | `S x D`   | learned positions (`PosKind::Learned`)                 |
//! | `seg_emb`           | `T x D`   | segment (token type) embeddings, when `T > 0`          |
//! | `emb_norm.w`, `.b`  | `D`       | norm after the embeddings (BERT)                       |
//! | `l{i}.q.w`, `.b`    | `Q x D`, `Q`   | query projection of block `i` (0-based)           |
//! | `l{i}.k.w`, `.b`    | `KV x D`, `KV` | key projection                                    |
//! | `l{i}.v.w`, `.b`    | `KV x D`, `KV` | value projection                                  |
//! | `l{i}.o.w`, `.b`    | `D x Q`, `D`   | attention output projection                       |
//! | `l{i}.attn_norm.w`, `.b` | `D`  | BERT: after attention (post-norm); Llama: before it    |
//! | `l{i}.ffn.up.w`, `.b` | `F x D`, `F` | FFN input projection (the memory's "keys")        |
//! | `l{i}.ffn.gate.w`   | `F x D`   | gate of a gated FFN (SwiGLU)                           |
//! | `l{i}.ffn.down_t.w` | `F x D`   | down projection **transposed**: row `j` is the "value" added with weight `h_j` |
//! | `l{i}.ffn.down.w`   | `D x F`   | the same in ggml's layout (column `j` is the value): a file has exactly one of the two per layer |
//! | `l{i}.ffn.down.b`   | `D`       | bias of the down projection                            |
//! | `l{i}.ffn_norm.w`, `.b` | `D`   | BERT: after the FFN; Llama: before it                  |
//! | `final_norm.w`, `.b`| `D`       | norm after the last block (pre-norm decoders)          |
//! | `lm_head.w`         | `V x D`   | output head, absent when `tie_embeddings`              |
//!
//! `.b` is a bias (or a LayerNorm shift), `.w` a weight (or a norm gain). BERT needs every
//! bias; a Llama-family model may have none. [`PackedModel::parse`] checks that every tensor
//! the configuration needs is present with the right shape; other tensors are allowed and
//! ignored.

use crate::Error;
use crate::config::{Arch, FfnKind, Norm, PosKind};
use crate::format::{PackedModel, ParseOptions, TensorName};
use crate::model::ffn::{DownLayout, FfnWeights};

use super::{LayerWeights, Model, NormWeights};

/// Largest number of layers [`Layers`] holds (no allocation: a fixed array).
pub const MAX_LAYERS: usize = 48;

/// The layer views of a packed model, in a fixed-capacity vector.
pub type Layers<'a> = heapless::Vec<LayerWeights<'a>, MAX_LAYERS>;

/// Views of every layer of a packed model, for [`Model::new`].
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a model of more than [`MAX_LAYERS`] layers; the errors of
/// [`PackedModel::layer_weights`].
pub fn layers<'a>(packed: &PackedModel<'a>) -> Result<Layers<'a>, Error> {
    let mut layers = Layers::new();
    for i in 0..packed.config().n_layers {
        layers
            .push(packed.layer_weights(i)?)
            .map_err(|_| Error::InvalidConfig("more layers than topkit::encoder::MAX_LAYERS"))?;
    }
    Ok(layers)
}

impl<'a> Model<'a> {
    /// The layer stack of a packed file: its configuration, `layers` (made by [`layers`]) and
    /// its final norm.
    ///
    /// # Errors
    ///
    /// The errors of [`PackedModel::final_norm`] and [`Model::new`].
    pub fn from_packed(
        packed: &PackedModel<'a>,
        layers: &'a [LayerWeights<'a>],
    ) -> Result<Self, Error> {
        Model::new(*packed.config(), layers, packed.final_norm()?)
    }
}

impl<'a> PackedModel<'a> {
    /// Parses and validates `bytes` (16-byte aligned), CRC included: the container (header,
    /// sections, tokenizer, tensor table) and then that every tensor the configuration needs
    /// is present with its shape (see the [module docs](self)).
    ///
    /// # Errors
    ///
    /// A typed error for the first rule the bytes break: [`Error::Misaligned`] for a buffer
    /// not on a 16-byte boundary, [`Error::BadMagic`], [`Error::UnsupportedVersion`],
    /// [`Error::Truncated`], [`Error::ChecksumMismatch`], [`Error::OutOfBounds`],
    /// [`Error::UnknownCode`], [`Error::Malformed`], [`Error::InvalidConfig`],
    /// [`Error::BadTensorEntry`], [`Error::TensorSize`], [`Error::Unsupported`] (int4 tensors)
    /// for the container; [`Error::MissingTensor`] and [`Error::TensorShape`] for the model's
    /// tensors.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_with(bytes, ParseOptions::default())
    }

    /// Parses and validates `bytes` (16-byte aligned) with `options`.
    ///
    /// # Errors
    ///
    /// As [`PackedModel::parse`] (no [`Error::ChecksumMismatch`] without `verify_crc`).
    // Never inlined: inlined into a firmware's `main`, the parse's temporaries (copies of the
    // model view) would stay in that frame for the whole inference.
    #[inline(never)]
    pub fn parse_with(bytes: &'a [u8], options: ParseOptions) -> Result<Self, Error> {
        let packed = Self::parse_container(bytes, options.verify_crc, true)?;
        packed.check_expected()?;
        Ok(packed)
    }

    /// Views again `bytes` that [`PackedModel::parse_with`] accepted before and that have not
    /// changed since: for a caller that keeps the file in memory and needs its views on every
    /// call (they borrow the buffer, so they cannot be stored next to it). The header, the
    /// sections, the tensor table and the expected tensors are decoded and checked as
    /// `parse_with` does (O(tensors)); the CRC and the checks of the tokenizer section that
    /// cost O(vocabulary) are skipped (the UTF-8 and offsets of every token string, the order
    /// of the sorted token table, the BPE merges and the added tokens). Every view stays
    /// bounds-checked, so other bytes can never cause a panic or an out-of-bounds read, but
    /// their tokens may come out wrong where `parse_with` would return an error.
    ///
    /// # Errors
    ///
    /// As [`PackedModel::parse`], less the checks skipped.
    pub fn parse_again(bytes: &'a [u8]) -> Result<Self, Error> {
        let packed = Self::parse_container(bytes, false, false)?;
        packed.check_expected()?;
        Ok(packed)
    }

    fn norm(&self, gain: TensorName, bias: TensorName) -> Result<NormWeights<'a>, Error> {
        Ok(NormWeights {
            gain: self.vector(gain)?,
            bias: self.optional_vector(bias)?,
        })
    }

    /// The weights of block `layer` (0-based), as zero-copy views for [`Model::new`].
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`] for a required tensor the file lacks (a `layer` past the last
    /// one); the view errors of [`PackedModel::tensor`].
    pub fn layer_weights(&self, layer: usize) -> Result<LayerWeights<'a>, Error> {
        let l = |name| TensorName::layer(layer, name);
        let c = self.config();
        let gate = match c.ffn {
            FfnKind::Gated => Some(self.matrix(l("ffn.gate.w"))?),
            FfnKind::Plain => None,
        };
        let (down_t, down_layout) = match self.lookup(l("ffn.down.w")) {
            Some(_) => (self.matrix(l("ffn.down.w"))?, DownLayout::Columns),
            None => (self.matrix(l("ffn.down_t.w"))?, DownLayout::Transposed),
        };
        Ok(LayerWeights {
            q: self.matrix(l("q.w"))?,
            q_bias: self.optional_vector(l("q.b"))?,
            k: self.matrix(l("k.w"))?,
            k_bias: self.optional_vector(l("k.b"))?,
            v: self.matrix(l("v.w"))?,
            v_bias: self.optional_vector(l("v.b"))?,
            o: self.matrix(l("o.w"))?,
            o_bias: self.optional_vector(l("o.b"))?,
            attn_norm: self.norm(l("attn_norm.w"), l("attn_norm.b"))?,
            ffn: FfnWeights {
                up: self.matrix(l("ffn.up.w"))?,
                up_bias: self.optional_vector(l("ffn.up.b"))?,
                gate,
                down_t,
                down_layout,
                down_bias: self.optional_vector(l("ffn.down.b"))?,
                act: c.act,
            },
            ffn_norm: self.norm(l("ffn_norm.w"), l("ffn_norm.b"))?,
        })
    }

    /// The norm after the last block (pre-norm models), `None` when the file has none.
    ///
    /// # Errors
    ///
    /// The view errors of [`PackedModel::vector`].
    pub fn final_norm(&self) -> Result<Option<NormWeights<'a>>, Error> {
        if self.lookup(TensorName::global("final_norm.w")).is_none() {
            return Ok(None);
        }
        self.norm(
            TensorName::global("final_norm.w"),
            TensorName::global("final_norm.b"),
        )
        .map(Some)
    }

    /// Checks that every tensor the configuration needs is present with its shape.
    // Never inlined: one copy serves `parse_with` and `parse_again`.
    #[inline(never)]
    fn check_expected(&self) -> Result<(), Error> {
        let c = self.config();
        let (v, d, q, kv, f) = (c.vocab_size, c.d_model, c.q_dim(), c.kv_dim(), c.d_ff);
        let bert = c.arch == Arch::Bert;
        let ln = c.norm == Norm::LayerNorm;
        let g = TensorName::global;
        self.expect(g("tok_emb"), &[v, d], true)?;
        if c.pos == PosKind::Learned {
            self.expect(g("pos_emb"), &[c.max_seq, d], true)?;
        }
        if c.type_vocab_size > 0 {
            self.expect(g("seg_emb"), &[c.type_vocab_size, d], true)?;
        }
        if bert {
            self.expect(g("emb_norm.w"), &[d], true)?;
            self.expect(g("emb_norm.b"), &[d], ln)?;
        }
        for i in 0..c.n_layers {
            let l = |name| TensorName::layer(i, name);
            self.expect(l("q.w"), &[q, d], true)?;
            self.expect(l("q.b"), &[q], bert)?;
            self.expect(l("k.w"), &[kv, d], true)?;
            self.expect(l("k.b"), &[kv], bert)?;
            self.expect(l("v.w"), &[kv, d], true)?;
            self.expect(l("v.b"), &[kv], bert)?;
            self.expect(l("o.w"), &[d, q], true)?;
            self.expect(l("o.b"), &[d], bert)?;
            self.expect(l("attn_norm.w"), &[d], true)?;
            self.expect(l("attn_norm.b"), &[d], ln)?;
            self.expect(l("ffn.up.w"), &[f, d], true)?;
            self.expect(l("ffn.up.b"), &[f], bert)?;
            if c.ffn == FfnKind::Gated {
                self.expect(l("ffn.gate.w"), &[f, d], true)?;
            }
            // Exactly one of the two layouts of the down projection.
            let down = l("ffn.down.w");
            if self.lookup(down).is_some() {
                if self.lookup(l("ffn.down_t.w")).is_some() {
                    return Err(Error::Malformed(
                        "a layer has both ffn.down.w and ffn.down_t.w",
                    ));
                }
                self.expect(down, &[d, f], true)?;
            } else {
                self.expect(l("ffn.down_t.w"), &[f, d], true)?;
            }
            self.expect(l("ffn.down.b"), &[d], bert)?;
            self.expect(l("ffn_norm.w"), &[d], true)?;
            self.expect(l("ffn_norm.b"), &[d], ln)?;
        }
        if !bert {
            self.expect(g("final_norm.w"), &[d], true)?;
            self.expect(g("final_norm.b"), &[d], ln)?;
        }
        self.expect(g("lm_head.w"), &[v, d], !bert && !c.tie_embeddings)?;
        Ok(())
    }

    fn expect(&self, name: TensorName, shape: &[usize], required: bool) -> Result<(), Error> {
        let Some(t) = self.lookup(name) else {
            return if required {
                Err(Error::MissingTensor(name))
            } else {
                Ok(())
            };
        };
        let mismatch = |what, expected, found| Error::TensorShape {
            tensor: name,
            what,
            expected,
            found,
        };
        if t.shape().len() != shape.len() {
            return Err(mismatch("rank", shape.len(), t.shape().len()));
        }
        let whats: &[&'static str] = if shape.len() == 1 {
            &["length"]
        } else {
            &["rows", "columns"]
        };
        for ((&want, &got), &what) in shape.iter().zip(t.shape()).zip(whats) {
            if want != got {
                return Err(mismatch(what, want, got));
            }
        }
        Ok(())
    }
}
