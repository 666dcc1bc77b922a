//! The packed model file (`.tkm`): one little-endian, versioned, checksummed file holding the
//! model configuration, the tokenizer and the weights, viewed zero-copy from a `&[u8]` (flash,
//! `include_bytes!`, a JS `ArrayBuffer`, a mmap).
//!
//! [`PackedModel::parse`] checks every field, range and code before anything is viewed, so a
//! bad file is a typed [`Error`], never a panic or an out-of-bounds read. The host tool
//! (`topkit pack`) writes files with the `encode` functions of this module, so reader and
//! writer share one layout.
//!
//! # Usage
//!
//! On a microcontroller the file stays in flash; a `#[repr(align(16))]` wrapper gives
//! `include_bytes!` the alignment the views need:
//!
//! ```
//! use topkit::format::{PackedModel, ParseOptions, Special, TensorName};
//!
//! #[repr(C, align(16))]
//! struct Aligned<T: ?Sized>(T);
//! // In firmware: `static MODEL: &Aligned<[u8]> = &Aligned(*include_bytes!("minilm-int8.tkm"));`
//!
//! fn load(flash: &'static Aligned<[u8]>) -> Result<(), topkit::Error> {
//!     let model = PackedModel::parse_with(&flash.0, ParseOptions { verify_crc: false })?;
//!     let _q0 = model.matrix(TensorName::layer(0, "q.w"))?; // a zero-copy `Matrix`
//!     let _cls = model.tokenizer().special(Special::Cls);
//!     Ok(())
//! }
//! ```
//!
//! Anything else is refused with a typed error:
//!
//! ```
//! use topkit::format::PackedModel;
//! #[repr(C, align(16))]
//! struct Aligned([u8; 16]);
//! let bytes = Aligned(*b"GGUF model bytes");
//! assert_eq!(PackedModel::parse(&bytes.0).unwrap_err(), topkit::Error::BadMagic);
//! ```
//!
//! # Layout (version 1)
//!
//! All integers are little-endian; offsets are bytes from the start of the file; every section
//! and every tensor's data starts on a multiple of [`ALIGN`] (16) bytes. The buffer handed to
//! [`PackedModel::parse`] must itself start on a 16-byte boundary, so that f32 and f16 data can
//! be viewed in place (embed the file with a `#[repr(align(16))]` wrapper, or copy it into
//! 16-aligned memory). The buffer may be longer than the file (e.g. a padded flash partition).
//!
//! | bytes   | header field                                                            |
//! |---------|-------------------------------------------------------------------------|
//! | 0..8    | magic [`MAGIC`] `"TOPKIT\0\0"`                                          |
//! | 8..12   | format version (u32, [`VERSION`])                                       |
//! | 12..16  | header size, bytes (u32, [`HEADER_BYTES`])                              |
//! | 16..24  | file size, bytes (u64)                                                  |
//! | 24..28  | CRC-32 (IEEE) of the whole file, this field excluded (u32)              |
//! | 28..32  | flags (u32, reserved, 0)                                                |
//! | 32..48  | config section: offset, length (u64, u64)                               |
//! | 48..64  | tokenizer section: offset, length                                       |
//! | 64..80  | tensor table: offset, number of entries                                 |
//! | 80..96  | tensor names: offset, length (UTF-8 strings, concatenated)              |
//! | 96..112 | tensor data: offset, length                                             |
//! | 112..128| reserved, 0                                                             |
//!
//! **Config section** ([`CONFIG_BYTES`] bytes, u32 words unless noted): arch, vocab_size,
//! d_model, n_layers, n_heads, n_kv_heads, head_dim, d_ff, max_seq, type_vocab_size, norm,
//! norm_eps (f32), act, ffn, pos, rope_theta (f32), causal (0/1), tie_embeddings (0/1),
//! pooling, normalize (0/1), then 4 reserved zero words. Enum codes: [`Arch`](crate::Arch)
//! Bert 0, Llama 1; [`Norm`](crate::Norm) LayerNorm 0, RmsNorm 1;
//! [`Activation`](crate::Activation) Relu 0, GeluErf 1, GeluTanh 2, Silu 3;
//! [`FfnKind`](crate::FfnKind) Plain 0, Gated 1; [`PosKind`](crate::PosKind) Learned 0, Rope 1;
//! [`Pooling`] None 0, Cls 1, Mean 2. `max_seq` is the longest input of the packed file (the
//! position table is cut to it).
//!
//! **Tokenizer section**: a [`TOKENIZER_HEADER_BYTES`]-byte header (u32 words: kind
//! ([`TokenizerKind`] None 0, WordPiece 1, Bpe 2), flags (bit 0 lower-case, bit 1 strip
//! accents), token count `n`, merge count `m`, string bytes `s`, longest word in characters,
//! the [`Special`] token ids (unk, cls, sep, pad, mask, bos, eos; [`NO_TOKEN`] when absent), the
//! BPE pre-tokenizer code `p` ([`BPE_PRE_GPT2`] 0, [`BPE_PRE_DIGITS_GPT2`] 1; 0 unless Bpe), the
//! added-token count `a` (0 unless Bpe), one reserved zero word), then `n + 1` u32 string
//! offsets (token `i` is `strings[off[i]..off[i+1]]`), `n` u32 ids sorted by token bytes (for
//! binary search on a microcontroller), `m` BPE merges as (left id, right id) u32 pairs in rank
//! order, the merge index (`m` u32 ranks sorted by their (left, right) pair, strictly
//! increasing, for a binary-search pair -> rank lookup), `a` u32 ids of the added tokens (BPE:
//! matched whole in the text before pre-tokenizing, e.g. `<|im_start|>`; non-empty, distinct),
//! and the `s` bytes of concatenated UTF-8 token strings. Token strings are unique. Byte-level
//! BPE token strings are stored as in GPT-2's vocabulary: each byte as its printable
//! character (see [`crate::tokenizer::Bpe`]).
//!
//! **Tensor table**: `n` entries of [`TENSOR_ENTRY_BYTES`] bytes, sorted by name (unique), see
//! [`TensorEntry`]. dtype codes: f32 0, f16 1, int8 2 (symmetric, one f32 scale per row: the
//! row is every dimension but the last), 3 reserved for int4 grouped (rejected), and the ggml
//! block types at 0x100 + ggml's type code (`Q4_0` 0x102, `Q4_1` 0x103, `Q5_0` 0x106, `Q5_1`
//! 0x107, `Q8_0` 0x108; [`crate::kernels::BlockType`]): each row (the last dimension) a whole
//! number of 32-weight blocks laid out as ggml's, `group` 32, the data length exactly the
//! blocks' bytes. 1-D tensors are f32.
//!
//! Which tensors a model needs (names, shapes) and how they become the engine's
//! [`LayerWeights`](crate::LayerWeights) is the model's side of the file:
//! [`crate::model::weights`]. This module is the container only and imports no model code.

mod bytes;
mod config;
mod crc32;
mod header;
mod tensors;
mod tokenizer;

pub use crate::name::{MAX_NAME_BYTES, TensorName};
pub use config::{CONFIG_BYTES, FileConfig, Pooling};
pub use crc32::{Crc32, crc32};
pub use header::{
    ALIGN, CRC_OFFSET, HEADER_BYTES, Header, MAGIC, Section, VERSION, align_up, file_crc,
};
pub use tensors::{
    DTYPE_BLOCK_BASE, DTYPE_F16, DTYPE_F32, DTYPE_I4_GROUPED, DTYPE_I8, MAX_RANK,
    TENSOR_ENTRY_BYTES, TensorEntry, TensorInfo, TensorView, data_bytes, dtype_code, dtype_of_code,
};
pub use tokenizer::{
    BPE_PRE_DIGITS_GPT2, BPE_PRE_GPT2, NO_TOKEN, SPECIALS, Special, TOKENIZER_HEADER_BYTES,
    TokenizerHeader, TokenizerKind, TokenizerView, VocabView,
};

use crate::Error;
use crate::config::ModelConfig;
use crate::kernels::Matrix;
use bytes::{aligned, range, sat};
use tensors::TensorTable;

/// Options of [`PackedModel::parse_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ParseOptions {
    /// Check the CRC-32 of the whole file (one pass over every byte: on a microcontroller
    /// with a large model in external flash this can take a second or more).
    pub verify_crc: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions { verify_crc: true }
    }
}

/// A parsed packed model file: every field checked, nothing copied. Made by
/// [`PackedModel::parse`], which also checks the tensors against the model
/// ([`crate::model::weights`]).
#[derive(Debug, Clone, Copy)]
pub struct PackedModel<'a> {
    file: &'a [u8],
    header: Header,
    config: FileConfig,
    tokenizer: TokenizerView<'a>,
    tensors: TensorTable<'a>,
}

impl<'a> PackedModel<'a> {
    /// Parses and checks the container in `bytes` (16-byte aligned): header, CRC (when
    /// `verify_crc`), the config, tokenizer (its O(vocabulary) checks when `check_tokens`)
    /// and every tensor table entry; not whether the tensors are those the model needs.
    pub(crate) fn parse_container(
        bytes: &'a [u8],
        verify_crc: bool,
        check_tokens: bool,
    ) -> Result<Self, Error> {
        if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned {
                what: "model buffer",
                align: ALIGN,
            });
        }
        let header = Header::decode(bytes)?;
        let file = &bytes[..sat(header.file_bytes)];
        if verify_crc {
            model_crc(file, &header)?;
        }
        let size = file.len();
        let section = |what: &'static str, s: Section| -> Result<&'a [u8], Error> {
            let r = range(what, s.offset, s.len, size)?;
            aligned(what, r.start, ALIGN)?;
            if r.start < HEADER_BYTES {
                return Err(Error::Malformed("a section overlaps the header"));
            }
            file.get(r)
                .ok_or(Error::Malformed("a section is outside the file"))
        };
        let config = FileConfig::decode(section("config section", header.config)?)?;
        let tokenizer = TokenizerView::parse(
            section("tokenizer section", header.tokenizer)?,
            check_tokens,
        )?;
        let n_tensors = sat(header.tensors.len);
        let table_len = (n_tensors as u64).saturating_mul(TENSOR_ENTRY_BYTES as u64);
        let table = section(
            "tensor table",
            Section {
                offset: header.tensors.offset,
                len: table_len,
            },
        )?;
        let names = section("tensor names", header.names)?;
        let data = range(
            "tensor data section",
            header.data.offset,
            header.data.len,
            size,
        )?;
        aligned("tensor data section", data.start, ALIGN)?;
        if tokenizer.kind() != TokenizerKind::None
            && tokenizer.vocab().len() > config.model.vocab_size
        {
            return Err(Error::Malformed(
                "tokenizer has more tokens than the model's vocab_size",
            ));
        }
        let tensors = TensorTable::parse(file, table, names, n_tensors, data)?;
        Ok(PackedModel {
            file,
            header,
            config,
            tokenizer,
            tensors,
        })
    }

    /// The tensor `name` names, if present.
    pub(crate) fn lookup(&self, name: TensorName) -> Option<TensorInfo<'a>> {
        let mut buf = [0u8; MAX_NAME_BYTES];
        self.find(name.write(&mut buf)?)
    }

    /// The tensor called `name` (full name, e.g. `"l0.q.w"`), if present.
    pub fn find(&self, name: &str) -> Option<TensorInfo<'a>> {
        self.tensors.find(name)
    }

    /// A tensor, viewed for compute.
    ///
    /// # Errors
    ///
    /// [`Error::MissingTensor`] when the file has no such tensor; the errors of
    /// [`TensorInfo::view`].
    pub fn tensor(&self, name: TensorName) -> Result<TensorView<'a>, Error> {
        self.lookup(name).ok_or(Error::MissingTensor(name))?.view()
    }

    /// A 2-D tensor as a [`Matrix`].
    ///
    /// # Errors
    ///
    /// As [`PackedModel::tensor`]; [`Error::TensorShape`] for a 1-D tensor.
    pub fn matrix(&self, name: TensorName) -> Result<Matrix<'a>, Error> {
        match self.tensor(name)? {
            TensorView::Matrix(m) => Ok(m),
            TensorView::Vector(_) => Err(rank_error(name, 2, 1)),
        }
    }

    /// A 1-D f32 tensor as a slice.
    ///
    /// # Errors
    ///
    /// As [`PackedModel::tensor`]; [`Error::TensorShape`] for a 2-D tensor.
    pub fn vector(&self, name: TensorName) -> Result<&'a [f32], Error> {
        match self.tensor(name)? {
            TensorView::Vector(v) => Ok(v),
            TensorView::Matrix(_) => Err(rank_error(name, 1, 2)),
        }
    }

    /// A 1-D f32 tensor as a slice, or `None` when the file has none (optional biases).
    ///
    /// # Errors
    ///
    /// As [`PackedModel::vector`] for a tensor that is present.
    pub fn optional_vector(&self, name: TensorName) -> Result<Option<&'a [f32]>, Error> {
        match self.lookup(name) {
            None => Ok(None),
            Some(_) => self.vector(name).map(Some),
        }
    }

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Every tensor, in name order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'a>> + '_ {
        (0..self.tensors.len()).filter_map(move |i| self.tensors.entry(i).ok())
    }

    /// The model configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config.model
    }

    /// The whole config section (model, pooling, normalisation).
    pub fn file_config(&self) -> &FileConfig {
        &self.config
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TokenizerView<'a> {
        &self.tokenizer
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's bytes (without any padding after its end).
    pub fn bytes(&self) -> &'a [u8] {
        self.file
    }

    /// Checks the CRC-32 (for a file parsed with `verify_crc: false`).
    ///
    /// # Errors
    ///
    /// [`Error::ChecksumMismatch`] when the CRC-32 of the file differs from the header's.
    pub fn verify_crc(&self) -> Result<(), Error> {
        model_crc(self.file, &self.header)
    }
}

/// Compares the CRC-32 of `file` with the one in its header.
fn model_crc(file: &[u8], header: &Header) -> Result<(), Error> {
    let computed = file_crc(file);
    if computed != header.crc {
        return Err(Error::ChecksumMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok(())
}

/// A tensor of rank `found` where one of rank `expected` was asked for.
fn rank_error(tensor: TensorName, expected: usize, found: usize) -> Error {
    Error::TensorShape {
        tensor,
        what: "rank",
        expected,
        found,
    }
}
