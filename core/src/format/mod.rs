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
//! pooling, normalize (0/1), then 4 reserved zero words. Enum codes: [`Arch`] Bert 0, Llama 1;
//! [`Norm`] LayerNorm 0, RmsNorm 1; [`Activation`] Relu 0, GeluErf 1, GeluTanh 2, Silu 3;
//! [`FfnKind`] Plain 0, Gated 1; [`PosKind`] Learned 0, Rope 1; [`Pooling`] None 0, Cls 1,
//! Mean 2. `max_seq` is the longest input of the packed file (the position table is cut to it).
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
//! row is every dimension but the last), 3 reserved for int4 grouped (rejected for now). 1-D
//! tensors are f32.
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
//! | `l{i}.ffn.down.b`   | `D`       | bias of the down projection                            |
//! | `l{i}.ffn_norm.w`, `.b` | `D`   | BERT: after the FFN; Llama: before it                  |
//! | `final_norm.w`, `.b`| `D`       | norm after the last block (pre-norm decoders)          |
//! | `lm_head.w`         | `V x D`   | output head, absent when `tie_embeddings`              |
//!
//! `.b` is a bias (or a LayerNorm shift), `.w` a weight (or a norm gain). BERT needs every
//! bias; a Llama-family model may have none. [`PackedModel::parse`] checks that every tensor
//! the configuration needs is present with the right shape; other tensors are allowed and
//! ignored.

mod crc32;

pub use crc32::{Crc32, crc32};

use core::fmt;
use core::ops::Range;

use crate::Error;
use crate::config::{Activation, Arch, FfnKind, ModelConfig, Norm, PosKind};
use crate::ffn::FfnWeights;
use crate::kernels::{DType, Matrix, Weights};
use crate::model::{LayerWeights, NormWeights};
use half::f16;

/// The first 8 bytes of every packed model file.
pub const MAGIC: [u8; 8] = *b"TOPKIT\0\0";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Size of the file header, bytes.
pub const HEADER_BYTES: usize = 128;
/// Alignment of every section and tensor, relative to the file start, and of the buffer the
/// file is parsed from, bytes.
pub const ALIGN: usize = 16;
/// Byte offset of the CRC-32 field in the header; the CRC covers every other byte of the file.
pub const CRC_OFFSET: usize = 24;
/// Size of the config section, bytes.
pub const CONFIG_BYTES: usize = 96;
/// Size of the tokenizer section's fixed header, bytes.
pub const TOKENIZER_HEADER_BYTES: usize = 64;
/// BPE pre-tokenizer code: the GPT-2 pattern
/// (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
pub const BPE_PRE_GPT2: u32 = 0;
/// BPE pre-tokenizer code: every numeric character (`\p{N}`) split off alone, then the GPT-2
/// pattern (SmolLM2, llama.cpp's `smollm`).
pub const BPE_PRE_DIGITS_GPT2: u32 = 1;
/// Size of one tensor table entry, bytes.
pub const TENSOR_ENTRY_BYTES: usize = 72;
/// Largest tensor rank.
pub const MAX_RANK: usize = 4;
/// Longest tensor name, bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// A special-token slot that holds no token.
pub const NO_TOKEN: u32 = u32::MAX;

const TOKENIZER_LOWERCASE: u32 = 1;
const TOKENIZER_STRIP_ACCENTS: u32 = 2;

// The readers' callers check the buffer's length first; reading through `first_chunk` (0 past
// the end, never in practice) keeps a panic branch out of every inlined copy.
fn le_u32(b: &[u8], off: usize) -> u32 {
    debug_assert!(off.checked_add(4).is_some_and(|e| e <= b.len()));
    b.get(off..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |a| u32::from_le_bytes(*a))
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    debug_assert!(off.checked_add(8).is_some_and(|e| e <= b.len()));
    b.get(off..)
        .and_then(<[u8]>::first_chunk)
        .map_or(0, |a| u64::from_le_bytes(*a))
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn sat(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// `offset..offset + len` as a range of a buffer of `size` bytes, or `OutOfBounds`.
fn range(what: &'static str, offset: u64, len: u64, size: usize) -> Result<Range<usize>, Error> {
    let oob = Error::OutOfBounds {
        what,
        offset: sat(offset),
        len: sat(len),
        size,
    };
    let start = usize::try_from(offset).map_err(|_| oob)?;
    let n = usize::try_from(len).map_err(|_| oob)?;
    let end = start.checked_add(n).ok_or(oob)?;
    if end > size {
        return Err(oob);
    }
    Ok(start..end)
}

fn aligned(what: &'static str, offset: usize, align: usize) -> Result<(), Error> {
    if !offset.is_multiple_of(align) {
        return Err(Error::Misaligned { what, align });
    }
    Ok(())
}

/// A byte range of the file (offset and length, bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Section {
    /// Offset from the start of the file, bytes.
    pub offset: u64,
    /// Length, bytes (for the tensor table: number of entries).
    pub len: u64,
}

/// The fixed 128-byte file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Size of the whole file, bytes.
    pub file_bytes: u64,
    /// CRC-32 of the file with the CRC field left out.
    pub crc: u32,
    /// Config section.
    pub config: Section,
    /// Tokenizer section.
    pub tokenizer: Section,
    /// Tensor table: offset (bytes) and number of entries (not bytes).
    pub tensors: Section,
    /// Tensor names (concatenated UTF-8).
    pub names: Section,
    /// Tensor data.
    pub data: Section,
}

impl Header {
    /// The header's bytes ([`MAGIC`], [`VERSION`], sizes, sections).
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u32(&mut b, 12, HEADER_BYTES as u32);
        put_u64(&mut b, 16, self.file_bytes);
        put_u32(&mut b, CRC_OFFSET, self.crc);
        let sections = [
            self.config,
            self.tokenizer,
            self.tensors,
            self.names,
            self.data,
        ];
        for (i, s) in sections.iter().enumerate() {
            put_u64(&mut b, 32 + 16 * i, s.offset);
            put_u64(&mut b, 40 + 16 * i, s.len);
        }
        b
    }

    /// Reads and checks the header at the start of `buf` (the whole buffer): magic, version,
    /// sizes (the file must fit in `buf`), reserved fields. Section bounds are checked by
    /// [`PackedModel::parse`].
    pub fn decode(buf: &[u8]) -> Result<Header, Error> {
        let truncated = |needed: usize| Error::Truncated {
            needed,
            found: buf.len(),
        };
        if buf.len() < MAGIC.len() {
            return Err(truncated(HEADER_BYTES));
        }
        if buf[..MAGIC.len()] != MAGIC {
            return Err(Error::BadMagic);
        }
        if buf.len() < 12 {
            return Err(truncated(HEADER_BYTES));
        }
        let version = le_u32(buf, 8);
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        if buf.len() < HEADER_BYTES {
            return Err(truncated(HEADER_BYTES));
        }
        if le_u32(buf, 12) as usize != HEADER_BYTES {
            return Err(Error::Malformed("header size field is not 128"));
        }
        let file_bytes = le_u64(buf, 16);
        if file_bytes > buf.len() as u64 {
            return Err(truncated(sat(file_bytes)));
        }
        if file_bytes < HEADER_BYTES as u64 {
            return Err(Error::Malformed(
                "file size field is smaller than the header",
            ));
        }
        if le_u32(buf, 28) != 0 || buf[112..HEADER_BYTES].iter().any(|&x| x != 0) {
            return Err(Error::Malformed("reserved header fields are not zero"));
        }
        let section = |i: usize| Section {
            offset: le_u64(buf, 32 + 16 * i),
            len: le_u64(buf, 40 + 16 * i),
        };
        Ok(Header {
            file_bytes,
            crc: le_u32(buf, CRC_OFFSET),
            config: section(0),
            tokenizer: section(1),
            tensors: section(2),
            names: section(3),
            data: section(4),
        })
    }
}

/// CRC-32 of a whole file (`file` is exactly the file's bytes), skipping the CRC field.
pub fn file_crc(file: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(&file[..CRC_OFFSET.min(file.len())]);
    if file.len() > CRC_OFFSET + 4 {
        c.update(&file[CRC_OFFSET + 4..]);
    }
    c.finish()
}

/// How sentence embeddings are pooled from the token states (sentence-transformers models).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Pooling {
    /// No pooling recorded (a language model, or a bare encoder).
    None,
    /// The first token's state (`[CLS]`).
    Cls,
    /// Mean over the non-padding tokens.
    Mean,
}

/// The config section: the model's shape and how its output is pooled.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FileConfig {
    /// The model.
    pub model: ModelConfig,
    /// Sentence-embedding pooling.
    pub pooling: Pooling,
    /// L2-normalise the pooled embedding.
    pub normalize: bool,
}

fn dim_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl FileConfig {
    /// The section's bytes. Dimensions above `u32::MAX` are written as `u32::MAX`, which
    /// [`FileConfig::decode`] rejects (validate the config first).
    pub fn encode(&self) -> [u8; CONFIG_BYTES] {
        let m = &self.model;
        let mut b = [0u8; CONFIG_BYTES];
        let words = [
            match m.arch {
                Arch::Bert => 0,
                Arch::Llama => 1,
            },
            dim_u32(m.vocab_size),
            dim_u32(m.d_model),
            dim_u32(m.n_layers),
            dim_u32(m.n_heads),
            dim_u32(m.n_kv_heads),
            dim_u32(m.head_dim),
            dim_u32(m.d_ff),
            dim_u32(m.max_seq),
            dim_u32(m.type_vocab_size),
            match m.norm {
                Norm::LayerNorm => 0,
                Norm::RmsNorm => 1,
            },
            m.norm_eps.to_bits(),
            match m.act {
                Activation::Relu => 0,
                Activation::GeluErf => 1,
                Activation::GeluTanh => 2,
                Activation::Silu => 3,
            },
            match m.ffn {
                FfnKind::Plain => 0,
                FfnKind::Gated => 1,
            },
            match m.pos {
                PosKind::Learned => 0,
                PosKind::Rope => 1,
            },
            m.rope_theta.to_bits(),
            u32::from(m.causal),
            u32::from(m.tie_embeddings),
            match self.pooling {
                Pooling::None => 0,
                Pooling::Cls => 1,
                Pooling::Mean => 2,
            },
            u32::from(self.normalize),
        ];
        for (i, w) in words.iter().enumerate() {
            put_u32(&mut b, 4 * i, *w);
        }
        b
    }

    /// Reads the section (exactly [`CONFIG_BYTES`] bytes) and validates the model config.
    pub fn decode(b: &[u8]) -> Result<FileConfig, Error> {
        if b.len() != CONFIG_BYTES {
            return Err(Error::Malformed("config section is not 96 bytes"));
        }
        let w = |i: usize| le_u32(b, 4 * i);
        let code = |what: &'static str, i: usize, n: u32| -> Result<u32, Error> {
            let c = w(i);
            if c < n {
                Ok(c)
            } else {
                Err(Error::UnknownCode { what, code: c })
            }
        };
        if (20..24).any(|i| w(i) != 0) {
            return Err(Error::Malformed("reserved config words are not zero"));
        }
        let norm_eps = f32::from_bits(w(11));
        let rope_theta = f32::from_bits(w(15));
        if !rope_theta.is_finite() || rope_theta < 0.0 {
            return Err(Error::InvalidConfig(
                "rope_theta must be finite and non-negative",
            ));
        }
        let model = ModelConfig {
            arch: [Arch::Bert, Arch::Llama][code("arch", 0, 2)? as usize],
            vocab_size: w(1) as usize,
            d_model: w(2) as usize,
            n_layers: w(3) as usize,
            n_heads: w(4) as usize,
            n_kv_heads: w(5) as usize,
            head_dim: w(6) as usize,
            d_ff: w(7) as usize,
            max_seq: w(8) as usize,
            type_vocab_size: w(9) as usize,
            norm: [Norm::LayerNorm, Norm::RmsNorm][code("norm", 10, 2)? as usize],
            norm_eps,
            act: [
                Activation::Relu,
                Activation::GeluErf,
                Activation::GeluTanh,
                Activation::Silu,
            ][code("activation", 12, 4)? as usize],
            ffn: [FfnKind::Plain, FfnKind::Gated][code("ffn kind", 13, 2)? as usize],
            pos: [PosKind::Learned, PosKind::Rope][code("position kind", 14, 2)? as usize],
            rope_theta,
            causal: code("causal flag", 16, 2)? == 1,
            tie_embeddings: code("tie_embeddings flag", 17, 2)? == 1,
        };
        let pooling =
            [Pooling::None, Pooling::Cls, Pooling::Mean][code("pooling", 18, 3)? as usize];
        let normalize = code("normalize flag", 19, 2)? == 1;
        model.validate()?;
        Ok(FileConfig {
            model,
            pooling,
            normalize,
        })
    }
}

/// Tokenizer algorithm of a packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TokenizerKind {
    /// No tokenizer: the caller supplies token ids.
    None,
    /// BERT WordPiece (`##` continuation prefix).
    WordPiece,
    /// Byte-pair encoding with ranked merges.
    Bpe,
}

/// Special tokens, in the order of their slots in the tokenizer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Special {
    /// Unknown token (`[UNK]`).
    Unk,
    /// Classification / start of an encoder input (`[CLS]`).
    Cls,
    /// Separator / end of an encoder input (`[SEP]`).
    Sep,
    /// Padding (`[PAD]`).
    Pad,
    /// Mask (`[MASK]`).
    Mask,
    /// Beginning of sequence (decoders).
    Bos,
    /// End of sequence (decoders).
    Eos,
}

/// Number of special-token slots.
pub const SPECIALS: usize = 7;

/// The fixed header of the tokenizer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TokenizerHeader {
    /// Algorithm.
    pub kind: TokenizerKind,
    /// Lower-case the text before splitting.
    pub lowercase: bool,
    /// Strip accents before splitting.
    pub strip_accents: bool,
    /// Number of tokens.
    pub n_tokens: u32,
    /// Number of BPE merges.
    pub n_merges: u32,
    /// Bytes of concatenated token strings.
    pub string_bytes: u32,
    /// Longest word WordPiece splits, characters (longer words become the unknown token).
    pub max_word_chars: u32,
    /// Special token ids by [`Special`] slot, [`NO_TOKEN`] when absent.
    pub specials: [u32; SPECIALS],
    /// BPE pre-tokenizer ([`BPE_PRE_GPT2`] or [`BPE_PRE_DIGITS_GPT2`]; 0 unless Bpe).
    pub pre: u32,
    /// Number of added tokens (BPE: matched whole in the text; 0 unless Bpe).
    pub n_added: u32,
}

impl TokenizerHeader {
    /// Bytes of the whole tokenizer section this header describes, or `None` on overflow.
    pub fn section_bytes(&self) -> Option<usize> {
        let n = self.n_tokens as usize;
        let offsets = n.checked_add(1)?.checked_mul(4)?;
        let sorted = n.checked_mul(4)?;
        let merges = (self.n_merges as usize).checked_mul(12)?;
        let added = (self.n_added as usize).checked_mul(4)?;
        TOKENIZER_HEADER_BYTES
            .checked_add(offsets)?
            .checked_add(sorted)?
            .checked_add(merges)?
            .checked_add(added)?
            .checked_add(self.string_bytes as usize)
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; TOKENIZER_HEADER_BYTES] {
        let mut b = [0u8; TOKENIZER_HEADER_BYTES];
        let kind = match self.kind {
            TokenizerKind::None => 0,
            TokenizerKind::WordPiece => 1,
            TokenizerKind::Bpe => 2,
        };
        let flags = if self.lowercase {
            TOKENIZER_LOWERCASE
        } else {
            0
        } | if self.strip_accents {
            TOKENIZER_STRIP_ACCENTS
        } else {
            0
        };
        let words = [
            kind,
            flags,
            self.n_tokens,
            self.n_merges,
            self.string_bytes,
            self.max_word_chars,
        ];
        let tail = [self.pre, self.n_added];
        for (i, w) in words
            .iter()
            .chain(self.specials.iter())
            .chain(tail.iter())
            .enumerate()
        {
            put_u32(&mut b, 4 * i, *w);
        }
        b
    }

    /// Reads the header from the first [`TOKENIZER_HEADER_BYTES`] bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<TokenizerHeader, Error> {
        if b.len() < TOKENIZER_HEADER_BYTES {
            return Err(Error::Malformed(
                "tokenizer section shorter than its header",
            ));
        }
        let w = |i: usize| le_u32(b, 4 * i);
        let kind = match w(0) {
            0 => TokenizerKind::None,
            1 => TokenizerKind::WordPiece,
            2 => TokenizerKind::Bpe,
            code => {
                return Err(Error::UnknownCode {
                    what: "tokenizer kind",
                    code,
                });
            }
        };
        let flags = w(1);
        if flags & !(TOKENIZER_LOWERCASE | TOKENIZER_STRIP_ACCENTS) != 0 {
            return Err(Error::UnknownCode {
                what: "tokenizer flags",
                code: flags,
            });
        }
        if (8 + SPECIALS..TOKENIZER_HEADER_BYTES / 4).any(|i| w(i) != 0) {
            return Err(Error::Malformed("reserved tokenizer words are not zero"));
        }
        let (pre, n_added) = (w(6 + SPECIALS), w(7 + SPECIALS));
        if pre > BPE_PRE_DIGITS_GPT2 {
            return Err(Error::UnknownCode {
                what: "BPE pre-tokenizer",
                code: pre,
            });
        }
        if kind != TokenizerKind::Bpe && (pre != 0 || n_added != 0) {
            return Err(Error::Malformed(
                "pre-tokenizer or added tokens on a tokenizer that is not BPE",
            ));
        }
        Ok(TokenizerHeader {
            kind,
            lowercase: flags & TOKENIZER_LOWERCASE != 0,
            strip_accents: flags & TOKENIZER_STRIP_ACCENTS != 0,
            n_tokens: w(2),
            n_merges: w(3),
            string_bytes: w(4),
            max_word_chars: w(5),
            specials: core::array::from_fn(|i| w(6 + i)),
            pre,
            n_added,
        })
    }
}

/// A view of `n` little-endian u32 values (read with `from_le_bytes`, so unaligned is fine).
#[derive(Debug, Clone, Copy)]
struct U32s<'a>(&'a [u8]);

impl U32s<'_> {
    /// Value `i`, 0 past the end: a table that was not checked ([`PackedModel::parse_again`])
    /// can hold indices past its neighbours' ends, which must read as nothing, not panic.
    fn get(&self, i: usize) -> u32 {
        i.checked_mul(4)
            .and_then(|at| self.0.get(at..))
            .and_then(<[u8]>::first_chunk)
            .map_or(0, |a| u32::from_le_bytes(*a))
    }
}

/// The vocabulary of a packed file: token strings by id, and a lookup by string.
#[derive(Debug, Clone, Copy)]
pub struct VocabView<'a> {
    n: usize,
    offsets: U32s<'a>,
    sorted: U32s<'a>,
    strings: &'a [u8],
}

impl<'a> VocabView<'a> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` when there is no token.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn bytes(&self, id: usize) -> &'a [u8] {
        let start = self.offsets.get(id) as usize;
        let end = self.offsets.get(id.saturating_add(1)) as usize;
        // Offsets checked by parse_with: never decreasing, within the string bytes (offsets
        // that were not checked give an empty token instead).
        self.strings.get(start..end).unwrap_or(&[])
    }

    /// The string of token `id`, if `id < len()`.
    pub fn token(&self, id: u32) -> Option<&'a str> {
        let id = id as usize;
        if id >= self.n {
            return None;
        }
        // Checked at parse time: every token is valid UTF-8.
        core::str::from_utf8(self.bytes(id)).ok()
    }

    /// The id of the token `prefix` followed by `piece` (WordPiece looks up `"##" + piece`
    /// without building the string), by binary search over the sorted id table.
    pub fn find_concat(&self, prefix: &str, piece: &str) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let id = self.sorted.get(mid);
            let tok = self.bytes(id as usize);
            match prefix.bytes().chain(piece.bytes()).cmp(tok.iter().copied()) {
                core::cmp::Ordering::Equal => return Some(id),
                core::cmp::Ordering::Less => hi = mid,
                core::cmp::Ordering::Greater => lo = mid + 1,
            }
        }
        None
    }

    /// The id of token `s`.
    pub fn find(&self, s: &str) -> Option<u32> {
        self.find_concat("", s)
    }

    /// The id at position `rank` of the table sorted by token bytes.
    pub fn sorted_id(&self, rank: usize) -> Option<u32> {
        (rank < self.n).then(|| self.sorted.get(rank))
    }
}

impl crate::tokenizer::Vocab for VocabView<'_> {
    fn len(&self) -> usize {
        VocabView::len(self)
    }

    fn token(&self, id: u32) -> Option<&str> {
        VocabView::token(self, id)
    }

    fn find(&self, prefix: &str, piece: &str) -> Option<u32> {
        self.find_concat(prefix, piece)
    }
}

/// The tokenizer section: settings, special tokens, vocabulary and BPE merges.
#[derive(Debug, Clone, Copy)]
pub struct TokenizerView<'a> {
    header: TokenizerHeader,
    vocab: VocabView<'a>,
    merges: U32s<'a>,
    merge_index: U32s<'a>,
    added: U32s<'a>,
}

impl<'a> TokenizerView<'a> {
    /// The section `b`, every field checked; with `check_tokens == false` the checks that
    /// cost O(vocabulary) are skipped ([`PackedModel::parse_again`]).
    fn parse(b: &'a [u8], check_tokens: bool) -> Result<Self, Error> {
        let h = TokenizerHeader::decode(b)?;
        let need = h
            .section_bytes()
            .ok_or(Error::Malformed("tokenizer section size overflows"))?;
        if need != b.len() {
            return Err(Error::Malformed(
                "tokenizer section length does not match its header",
            ));
        }
        let n = h.n_tokens as usize;
        let mut at = TOKENIZER_HEADER_BYTES;
        let mut take = |len: usize| {
            // In range: the lengths add up to `need == b.len()`.
            let s = b.get(at..at + len).unwrap_or(&[]);
            at += len;
            s
        };
        let offsets = U32s(take(4 * (n + 1)));
        let sorted = U32s(take(4 * n));
        let merges = U32s(take(8 * h.n_merges as usize));
        let merge_index = U32s(take(4 * h.n_merges as usize));
        let added = U32s(take(4 * h.n_added as usize));
        let strings = take(h.string_bytes as usize);
        if h.kind == TokenizerKind::None && (n != 0 || h.n_merges != 0) {
            return Err(Error::Malformed("tokenizer kind None with tokens"));
        }
        if offsets.get(0) != 0 || offsets.get(n) as usize != strings.len() {
            return Err(Error::Malformed(
                "token offsets do not span the string bytes",
            ));
        }
        for &s in &h.specials {
            if s != NO_TOKEN && s as usize >= n {
                return Err(Error::Malformed("special token id out of range"));
            }
        }
        let vocab = VocabView {
            n,
            offsets,
            sorted,
            strings,
        };
        let view = TokenizerView {
            header: h,
            vocab,
            merges,
            merge_index,
            added,
        };
        if !check_tokens {
            return Ok(view);
        }
        // Offsets: never decrease, and cut on character boundaries of a valid UTF-8 blob (so
        // every token is valid UTF-8).
        let text = core::str::from_utf8(strings)
            .map_err(|_| Error::Malformed("token strings are not valid UTF-8"))?;
        for i in 0..n {
            let (a, z) = (offsets.get(i), offsets.get(i + 1));
            if z < a || !text.is_char_boundary(z as usize) {
                return Err(Error::Malformed(
                    "token offsets decrease or split a character",
                ));
            }
        }
        // Sorted table: ids in range, token strings strictly increasing (which also makes the
        // ids distinct, so it is a permutation, and the tokens unique).
        for r in 0..n {
            if sorted.get(r) as usize >= n {
                return Err(Error::Malformed(
                    "sorted token table holds an id out of range",
                ));
            }
            if r > 0
                && vocab.bytes(sorted.get(r - 1) as usize) >= vocab.bytes(sorted.get(r) as usize)
            {
                return Err(Error::Malformed(
                    "sorted token table is not strictly sorted",
                ));
            }
        }
        for i in 0..2 * h.n_merges as usize {
            if merges.get(i) as usize >= n {
                return Err(Error::Malformed("BPE merge names a token out of range"));
            }
        }
        // Merge index: ranks in range whose pairs strictly increase (so it is a permutation
        // and the merges are distinct pairs).
        let m = h.n_merges as usize;
        let pair = |r: u32| (merges.get(2 * r as usize), merges.get(2 * r as usize + 1));
        for i in 0..m {
            let r = merge_index.get(i);
            if r as usize >= m {
                return Err(Error::Malformed(
                    "BPE merge index holds a rank out of range",
                ));
            }
            if i > 0 && pair(merge_index.get(i - 1)) >= pair(r) {
                return Err(Error::Malformed(
                    "BPE merge index is not strictly sorted by pair",
                ));
            }
        }
        for i in 0..h.n_added as usize {
            let id = added.get(i);
            if id as usize >= n || vocab.bytes(id as usize).is_empty() {
                return Err(Error::Malformed(
                    "added token out of range or with an empty string",
                ));
            }
            if (0..i).any(|j| added.get(j) == id) {
                return Err(Error::Malformed("added token listed twice"));
            }
        }
        Ok(view)
    }

    /// Algorithm.
    pub fn kind(&self) -> TokenizerKind {
        self.header.kind
    }

    /// Lower-case the text first.
    pub fn lowercase(&self) -> bool {
        self.header.lowercase
    }

    /// Strip accents first.
    pub fn strip_accents(&self) -> bool {
        self.header.strip_accents
    }

    /// Longest word WordPiece splits, characters.
    pub fn max_word_chars(&self) -> usize {
        self.header.max_word_chars as usize
    }

    /// The id of a special token, if the file has one.
    pub fn special(&self, which: Special) -> Option<u32> {
        let id = self.header.specials[which as usize];
        (id != NO_TOKEN).then_some(id)
    }

    /// The vocabulary.
    pub fn vocab(&self) -> VocabView<'a> {
        self.vocab
    }

    /// Number of BPE merges.
    pub fn n_merges(&self) -> usize {
        self.header.n_merges as usize
    }

    /// BPE merge of rank `rank` (0 = applied first): the (left, right) token ids.
    pub fn merge(&self, rank: usize) -> Option<(u32, u32)> {
        (rank < self.n_merges()).then(|| (self.merges.get(2 * rank), self.merges.get(2 * rank + 1)))
    }

    /// Rank of the BPE merge of `left` then `right` (0 = applied first), by binary search
    /// over the merge index.
    pub fn merge_rank(&self, left: u32, right: u32) -> Option<u32> {
        let (mut lo, mut hi) = (0, self.n_merges());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let r = self.merge_index.get(mid);
            let p = (
                self.merges.get(2 * r as usize),
                self.merges.get(2 * r as usize + 1),
            );
            match p.cmp(&(left, right)) {
                core::cmp::Ordering::Equal => return Some(r),
                core::cmp::Ordering::Less => lo = mid + 1,
                core::cmp::Ordering::Greater => hi = mid,
            }
        }
        None
    }

    /// BPE pre-tokenizer code ([`BPE_PRE_GPT2`], [`BPE_PRE_DIGITS_GPT2`]).
    pub fn pre_tokenizer(&self) -> u32 {
        self.header.pre
    }

    /// Number of added tokens (matched whole in the text by BPE).
    pub fn n_added(&self) -> usize {
        self.header.n_added as usize
    }

    /// The id of added token `i`, if `i < n_added()`.
    pub fn added(&self, i: usize) -> Option<u32> {
        (i < self.n_added()).then(|| self.added.get(i))
    }

    /// The fixed header.
    pub fn header(&self) -> &TokenizerHeader {
        &self.header
    }
}

/// One tensor table entry as stored: [`TENSOR_ENTRY_BYTES`] bytes, little-endian, at byte
/// offsets 0 `name_offset` (u32), 4 `name_len` (u32), 8 `dtype` (u32), 12 `rank` (u32), 16
/// `shape` (4 x u32), 32 `data_offset` (u64), 40 `data_len` (u64), 48 `scales_offset` (u64),
/// 56 `scales_len` (u64), 64 `group` (u32), 68 reserved (u32, 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorEntry {
    /// Offset of the name in the names section, bytes.
    pub name_offset: u32,
    /// Length of the name, bytes.
    pub name_len: u32,
    /// Element type code (f32 0, f16 1, int8 2, int4 grouped 3 reserved).
    pub dtype: u32,
    /// Number of dimensions, 1..=4.
    pub rank: u32,
    /// Dimensions, outermost first; unused ones are 0.
    pub shape: [u32; MAX_RANK],
    /// Offset of the data from the start of the file, bytes.
    pub data_offset: u64,
    /// Length of the data, bytes.
    pub data_len: u64,
    /// Offset of the int8 row scales (f32), bytes; 0 when none.
    pub scales_offset: u64,
    /// Length of the scales, bytes; 0 when none.
    pub scales_len: u64,
    /// Group size of grouped quantization (int4, later); 0 now.
    pub group: u32,
}

/// dtype code of f32 tensors.
pub const DTYPE_F32: u32 = 0;
/// dtype code of f16 tensors.
pub const DTYPE_F16: u32 = 1;
/// dtype code of int8 tensors with per-row f32 scales.
pub const DTYPE_I8: u32 = 2;
/// dtype code reserved for int4 tensors with grouped scales (not supported yet).
pub const DTYPE_I4_GROUPED: u32 = 3;

/// The file code of a dtype.
pub fn dtype_code(d: DType) -> u32 {
    match d {
        DType::F32 => DTYPE_F32,
        DType::F16 => DTYPE_F16,
        DType::I8 => DTYPE_I8,
    }
}

/// Bytes of one element of `d`.
pub fn dtype_bytes(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::F16 => 2,
        DType::I8 => 1,
    }
}

impl TensorEntry {
    /// The entry's bytes.
    pub fn encode(&self) -> [u8; TENSOR_ENTRY_BYTES] {
        let mut b = [0u8; TENSOR_ENTRY_BYTES];
        put_u32(&mut b, 0, self.name_offset);
        put_u32(&mut b, 4, self.name_len);
        put_u32(&mut b, 8, self.dtype);
        put_u32(&mut b, 12, self.rank);
        for (i, d) in self.shape.iter().enumerate() {
            put_u32(&mut b, 16 + 4 * i, *d);
        }
        put_u64(&mut b, 32, self.data_offset);
        put_u64(&mut b, 40, self.data_len);
        put_u64(&mut b, 48, self.scales_offset);
        put_u64(&mut b, 56, self.scales_len);
        put_u32(&mut b, 64, self.group);
        b
    }

    /// Reads an entry from exactly [`TENSOR_ENTRY_BYTES`] bytes (no checks).
    pub fn decode(b: &[u8]) -> TensorEntry {
        TensorEntry {
            name_offset: le_u32(b, 0),
            name_len: le_u32(b, 4),
            dtype: le_u32(b, 8),
            rank: le_u32(b, 12),
            shape: core::array::from_fn(|i| le_u32(b, 16 + 4 * i)),
            data_offset: le_u64(b, 32),
            data_len: le_u64(b, 40),
            scales_offset: le_u64(b, 48),
            scales_len: le_u64(b, 56),
            group: le_u32(b, 64),
        }
    }
}

/// The name of a tensor the engine asks for: a global one (`tok_emb`) or one of block `layer`
/// (`l3.q.w` is `TensorName::layer(3, "q.w")`). Static parts, so errors can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorName {
    /// Block index, for per-block tensors.
    pub layer: Option<u32>,
    /// The name, or the part after `l{layer}.`.
    pub name: &'static str,
}

impl TensorName {
    /// A model-wide tensor, e.g. `tok_emb`.
    pub const fn global(name: &'static str) -> Self {
        TensorName { layer: None, name }
    }

    /// A tensor of block `layer`, e.g. `layer(0, "q.w")` for `l0.q.w`.
    pub const fn layer(layer: usize, name: &'static str) -> Self {
        TensorName {
            layer: Some(layer as u32),
            name,
        }
    }

    /// Writes the full name into `buf`; `None` when it does not fit.
    pub fn write<'b>(&self, buf: &'b mut [u8; MAX_NAME_BYTES]) -> Option<&'b str> {
        let mut n = 0;
        let mut push = |bytes: &[u8], n: &mut usize| -> Option<()> {
            buf.get_mut(*n..*n + bytes.len())?.copy_from_slice(bytes);
            *n += bytes.len();
            Some(())
        };
        if let Some(l) = self.layer {
            let mut digits = [0u8; 10];
            let mut k = digits.len();
            let mut v = l;
            loop {
                k = k.checked_sub(1)?;
                *digits.get_mut(k)? = b'0' + (v % 10) as u8;
                v /= 10;
                if v == 0 {
                    break;
                }
            }
            push(b"l", &mut n)?;
            push(digits.get(k..)?, &mut n)?;
            push(b".", &mut n)?;
        }
        push(self.name.as_bytes(), &mut n)?;
        core::str::from_utf8(&buf[..n]).ok()
    }
}

impl fmt::Display for TensorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer {
            Some(l) => write!(f, "l{l}.{}", self.name),
            None => f.write_str(self.name),
        }
    }
}

/// A tensor of a packed file: name, dtype, shape and its bytes (zero-copy).
#[derive(Debug, Clone, Copy)]
pub struct TensorInfo<'a> {
    /// Full name (see the module docs for the scheme).
    pub name: &'a str,
    /// Element type.
    pub dtype: DType,
    rank: usize,
    shape: [usize; MAX_RANK],
    /// The elements, row-major, little-endian.
    pub data: &'a [u8],
    /// int8 row scales (f32, little-endian); empty for other dtypes.
    pub scales: &'a [u8],
}

/// A tensor viewed for compute: a matrix (2-D, any dtype) or a vector (1-D, f32).
#[derive(Debug, Clone, Copy)]
pub enum TensorView<'a> {
    /// 1-D f32 values (biases, norm gains).
    Vector(&'a [f32]),
    /// 2-D weights.
    Matrix(Matrix<'a>),
}

impl<'a> TensorInfo<'a> {
    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        // `rank` is 1..=MAX_RANK (checked at parse time).
        self.shape.get(..self.rank).unwrap_or(&[])
    }

    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape().iter().product()
    }

    /// Bytes in the file (data and scales).
    pub fn bytes(&self) -> usize {
        self.data.len() + self.scales.len()
    }

    /// Zero-copy view: 1-D f32 as a slice, 2-D as a [`Matrix`].
    pub fn view(&self) -> Result<TensorView<'a>, Error> {
        if cfg!(target_endian = "big") {
            return Err(Error::Unsupported(
                "viewing little-endian tensors on a big-endian target",
            ));
        }
        let cast_err = Error::Misaligned {
            what: "tensor data",
            align: ALIGN,
        };
        match (self.rank, self.dtype) {
            (1, DType::F32) => Ok(TensorView::Vector(
                bytemuck::try_cast_slice(self.data).map_err(|_| cast_err)?,
            )),
            (2, dtype) => {
                let w = match dtype {
                    DType::F32 => {
                        Weights::F32(bytemuck::try_cast_slice(self.data).map_err(|_| cast_err)?)
                    }
                    DType::F16 => Weights::F16(
                        bytemuck::try_cast_slice::<u8, f16>(self.data).map_err(|_| cast_err)?,
                    ),
                    DType::I8 => Weights::I8 {
                        q: bytemuck::try_cast_slice(self.data).map_err(|_| cast_err)?,
                        scales: bytemuck::try_cast_slice(self.scales).map_err(|_| cast_err)?,
                    },
                };
                Ok(TensorView::Matrix(Matrix::new(
                    self.shape[0],
                    self.shape[1],
                    w,
                )?))
            }
            _ => Err(Error::Unsupported("views of tensors of rank 3 or 4")),
        }
    }
}

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

/// A parsed packed model file: every field checked, nothing copied.
#[derive(Debug, Clone, Copy)]
pub struct PackedModel<'a> {
    file: &'a [u8],
    header: Header,
    config: FileConfig,
    tokenizer: TokenizerView<'a>,
    table: &'a [u8],
    names: &'a [u8],
    n_tensors: usize,
}

impl<'a> PackedModel<'a> {
    /// Parses and validates `bytes` (16-byte aligned), CRC included.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_with(bytes, ParseOptions::default())
    }

    /// Parses and validates `bytes` (16-byte aligned) with `options`.
    pub fn parse_with(bytes: &'a [u8], options: ParseOptions) -> Result<Self, Error> {
        Self::parse_checks(bytes, options.verify_crc, true)
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
    pub fn parse_again(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::parse_checks(bytes, false, false)
    }

    fn parse_checks(bytes: &'a [u8], verify_crc: bool, check_tokens: bool) -> Result<Self, Error> {
        if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
            return Err(Error::Misaligned {
                what: "model buffer",
                align: ALIGN,
            });
        }
        let header = Header::decode(bytes)?;
        let file = &bytes[..sat(header.file_bytes)];
        if verify_crc {
            let computed = file_crc(file);
            if computed != header.crc {
                return Err(Error::ChecksumMismatch {
                    stored: header.crc,
                    computed,
                });
            }
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
        let model = PackedModel {
            file,
            header,
            config,
            tokenizer,
            table,
            names,
            n_tensors,
        };
        let mut prev: &[u8] = &[];
        for index in 0..n_tensors {
            let info = model.entry(index, data.clone())?;
            if index > 0 && prev >= info.name.as_bytes() {
                return Err(Error::BadTensorEntry {
                    index,
                    problem: "names not sorted or not unique",
                });
            }
            prev = info.name.as_bytes();
        }
        model.check_expected()?;
        Ok(model)
    }

    /// Decodes and checks entry `index` (< n_tensors); `data` is the data section's range.
    fn entry(&self, index: usize, data: Range<usize>) -> Result<TensorInfo<'a>, Error> {
        let bad = |problem| Error::BadTensorEntry { index, problem };
        let e = TensorEntry::decode(
            self.table
                .get(index * TENSOR_ENTRY_BYTES..(index + 1) * TENSOR_ENTRY_BYTES)
                .ok_or(bad("entry outside the tensor table"))?,
        );
        let name_range = range(
            "tensor name",
            e.name_offset.into(),
            e.name_len.into(),
            self.names.len(),
        )
        .map_err(|_| bad("name outside the names section"))?;
        if e.name_len == 0 || e.name_len as usize > MAX_NAME_BYTES {
            return Err(bad("name empty or longer than 128 bytes"));
        }
        let name = core::str::from_utf8(&self.names[name_range])
            .map_err(|_| bad("name is not valid UTF-8"))?;
        let dtype = match e.dtype {
            DTYPE_F32 => DType::F32,
            DTYPE_F16 => DType::F16,
            DTYPE_I8 => DType::I8,
            DTYPE_I4_GROUPED => return Err(Error::Unsupported("int4 grouped tensors")),
            code => {
                return Err(Error::UnknownCode {
                    what: "tensor dtype",
                    code,
                });
            }
        };
        let rank = e.rank as usize;
        if rank == 0 || rank > MAX_RANK {
            return Err(bad("rank must be 1..=4"));
        }
        if e.shape[..rank].contains(&0) || e.shape[rank..].iter().any(|&d| d != 0) {
            return Err(bad("dimensions must be at least 1 (unused ones 0)"));
        }
        if rank == 1 && dtype != DType::F32 {
            return Err(bad("1-D tensors must be f32"));
        }
        if e.group != 0 {
            return Err(bad("group size must be 0 for f32, f16 and int8"));
        }
        if le_u32(self.table, index * TENSOR_ENTRY_BYTES + 68) != 0 {
            return Err(bad("reserved field is not zero"));
        }
        let shape: [usize; MAX_RANK] = core::array::from_fn(|i| e.shape[i] as usize);
        let too_big = bad("element count overflows");
        let elements = shape[..rank]
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(too_big)?;
        let rows = shape[..rank - 1].iter().product::<usize>();
        let want = elements.checked_mul(dtype_bytes(dtype)).ok_or(too_big)?;
        if e.data_len != want as u64 {
            return Err(Error::TensorSize {
                index,
                what: "data",
                expected: want,
                found: sat(e.data_len),
            });
        }
        let slice_in_data = |off: u64, len: u64| -> Result<&'a [u8], Error> {
            let r = range("tensor", off, len, self.file.len())
                .map_err(|_| bad("bytes outside the file"))?;
            if r.start < data.start || r.end > data.end {
                return Err(bad("bytes outside the data section"));
            }
            if r.start % ALIGN != 0 {
                return Err(bad("bytes not aligned to 16"));
            }
            Ok(&self.file[r])
        };
        let bytes = slice_in_data(e.data_offset, e.data_len)?;
        let scales = if dtype == DType::I8 {
            let want = rows.checked_mul(4).ok_or(too_big)?;
            if e.scales_len != want as u64 {
                return Err(Error::TensorSize {
                    index,
                    what: "scales",
                    expected: want,
                    found: sat(e.scales_len),
                });
            }
            slice_in_data(e.scales_offset, e.scales_len)?
        } else {
            if e.scales_offset != 0 || e.scales_len != 0 {
                return Err(bad("scales on a tensor that is not int8"));
            }
            &[]
        };
        Ok(TensorInfo {
            name,
            dtype,
            rank,
            shape,
            data: bytes,
            scales,
        })
    }

    fn data_range(&self) -> Range<usize> {
        // Checked in parse.
        let start = sat(self.header.data.offset);
        start..start + sat(self.header.data.len)
    }

    /// Checks that every tensor the configuration needs is present with its shape.
    fn check_expected(&self) -> Result<(), Error> {
        let c = &self.config.model;
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
            self.expect(l("ffn.down_t.w"), &[f, d], true)?;
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

    fn lookup(&self, name: TensorName) -> Option<TensorInfo<'a>> {
        let mut buf = [0u8; MAX_NAME_BYTES];
        self.find(name.write(&mut buf)?)
    }

    /// The tensor called `name` (full name, e.g. `"l0.q.w"`), if present.
    pub fn find(&self, name: &str) -> Option<TensorInfo<'a>> {
        let (mut lo, mut hi) = (0, self.n_tensors);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            // Every entry was checked in parse.
            let t = self.entry(mid, self.data_range()).ok()?;
            match name.as_bytes().cmp(t.name.as_bytes()) {
                core::cmp::Ordering::Equal => return Some(t),
                core::cmp::Ordering::Less => hi = mid,
                core::cmp::Ordering::Greater => lo = mid + 1,
            }
        }
        None
    }

    /// A tensor, viewed for compute.
    pub fn tensor(&self, name: TensorName) -> Result<TensorView<'a>, Error> {
        self.lookup(name).ok_or(Error::MissingTensor(name))?.view()
    }

    /// A 2-D tensor as a [`Matrix`].
    pub fn matrix(&self, name: TensorName) -> Result<Matrix<'a>, Error> {
        match self.tensor(name)? {
            TensorView::Matrix(m) => Ok(m),
            TensorView::Vector(_) => Err(Error::TensorShape {
                tensor: name,
                what: "rank",
                expected: 2,
                found: 1,
            }),
        }
    }

    /// A 1-D f32 tensor as a slice.
    pub fn vector(&self, name: TensorName) -> Result<&'a [f32], Error> {
        match self.tensor(name)? {
            TensorView::Vector(v) => Ok(v),
            TensorView::Matrix(_) => Err(Error::TensorShape {
                tensor: name,
                what: "rank",
                expected: 1,
                found: 2,
            }),
        }
    }

    /// A 1-D f32 tensor as a slice, or `None` when the file has none (optional biases).
    pub fn optional_vector(&self, name: TensorName) -> Result<Option<&'a [f32]>, Error> {
        match self.lookup(name) {
            None => Ok(None),
            Some(_) => self.vector(name).map(Some),
        }
    }

    fn norm(&self, gain: TensorName, bias: TensorName) -> Result<NormWeights<'a>, Error> {
        Ok(NormWeights {
            gain: self.vector(gain)?,
            bias: self.optional_vector(bias)?,
        })
    }

    /// The weights of block `layer` (0-based), as zero-copy views for [`crate::Model::new`].
    pub fn layer_weights(&self, layer: usize) -> Result<LayerWeights<'a>, Error> {
        let l = |name| TensorName::layer(layer, name);
        let c = self.config();
        let gate = match c.ffn {
            FfnKind::Gated => Some(self.matrix(l("ffn.gate.w"))?),
            FfnKind::Plain => None,
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
                down_t: self.matrix(l("ffn.down_t.w"))?,
                down_bias: self.optional_vector(l("ffn.down.b"))?,
                act: c.act,
            },
            ffn_norm: self.norm(l("ffn_norm.w"), l("ffn_norm.b"))?,
        })
    }

    /// The norm after the last block (pre-norm models), `None` when the file has none.
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

    /// Number of tensors.
    pub fn tensor_count(&self) -> usize {
        self.n_tensors
    }

    /// Every tensor, in name order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorInfo<'a>> + '_ {
        (0..self.n_tensors).filter_map(move |i| self.entry(i, self.data_range()).ok())
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
    pub fn verify_crc(&self) -> Result<(), Error> {
        let computed = file_crc(self.file);
        if computed != self.header.crc {
            return Err(Error::ChecksumMismatch {
                stored: self.header.crc,
                computed,
            });
        }
        Ok(())
    }
}

/// Rounds `n` up to a multiple of [`ALIGN`] (`None` on overflow).
pub const fn align_up(n: usize) -> Option<usize> {
    match n.checked_add(ALIGN - 1) {
        Some(v) => Some(v / ALIGN * ALIGN),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names() {
        let mut buf = [0u8; MAX_NAME_BYTES];
        assert_eq!(
            TensorName::layer(12, "ffn.up.w").write(&mut buf),
            Some("l12.ffn.up.w")
        );
        assert_eq!(
            TensorName::global("tok_emb").write(&mut buf),
            Some("tok_emb")
        );
        assert_eq!(TensorName::layer(0, "q.b").write(&mut buf), Some("l0.q.b"));
        let long = TensorName::layer(1, core::str::from_utf8(&[b'x'; MAX_NAME_BYTES]).unwrap());
        assert_eq!(long.write(&mut buf), None);
    }

    #[test]
    fn llama_config_round_trips() {
        let model = ModelConfig {
            arch: Arch::Llama,
            vocab_size: 49152,
            d_model: 576,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            d_ff: 1536,
            max_seq: 2048,
            type_vocab_size: 0,
            norm: Norm::RmsNorm,
            norm_eps: 1e-5,
            act: Activation::Silu,
            ffn: FfnKind::Gated,
            pos: PosKind::Rope,
            rope_theta: 100000.0,
            causal: true,
            tie_embeddings: true,
        };
        let cfg = FileConfig {
            model,
            pooling: Pooling::None,
            normalize: false,
        };
        assert_eq!(FileConfig::decode(&cfg.encode()), Ok(cfg));
        let mut b = cfg.encode();
        b[44..48].copy_from_slice(&f32::NAN.to_bits().to_le_bytes());
        assert!(matches!(
            FileConfig::decode(&b),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            file_bytes: 4096,
            crc: 0xDEAD_BEEF,
            config: Section {
                offset: 128,
                len: 96,
            },
            tokenizer: Section {
                offset: 224,
                len: 64,
            },
            tensors: Section {
                offset: 288,
                len: 3,
            },
            names: Section {
                offset: 512,
                len: 20,
            },
            data: Section {
                offset: 544,
                len: 3552,
            },
        };
        let mut buf = [0u8; 4096];
        buf[..HEADER_BYTES].copy_from_slice(&h.encode());
        assert_eq!(Header::decode(&buf), Ok(h));
        assert_eq!(
            Header::decode(&buf[..4095]),
            Err(Error::Truncated {
                needed: 4096,
                found: 4095
            })
        );
    }
}
