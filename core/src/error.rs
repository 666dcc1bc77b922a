//! The one error type of the core. Every bad input (config, shapes, file, token, budget) maps to
//! a variant here; the core never panics on input.

use core::fmt;

use crate::name::TensorName;

/// Everything that can go wrong in the core, as a small `Copy` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// A model or run configuration field is out of range; the text names the field and rule.
    InvalidConfig(&'static str),
    /// A slice or tensor has the wrong number of elements.
    ShapeMismatch {
        /// What was being checked (a tensor or buffer name).
        what: &'static str,
        /// Expected number of elements.
        expected: usize,
        /// Number of elements found.
        found: usize,
    },
    /// The input is longer than the run (or the model) allows.
    SeqTooLong {
        /// Tokens in the input.
        len: usize,
        /// Largest accepted number of tokens.
        max: usize,
    },
    /// The arena cannot hold the next buffer.
    ArenaTooSmall {
        /// Bytes the arena would need in total.
        needed: usize,
        /// Bytes the arena has.
        available: usize,
    },
    /// The arena's memory does not start on a 16-byte boundary.
    ArenaMisaligned,
    /// The bytes do not start with the packed-model magic (`format::MAGIC`): not a `.tkm` file.
    BadMagic,
    /// The packed file has a format version this build cannot read.
    UnsupportedVersion {
        /// Version in the file.
        found: u32,
        /// The one version this build reads.
        supported: u32,
    },
    /// The buffer ends before the file does (cut short by a copy or a download).
    Truncated {
        /// Bytes the header (or the header's size field) asks for.
        needed: usize,
        /// Bytes present.
        found: usize,
    },
    /// The CRC-32 stored in the file differs from the one computed over its bytes.
    ChecksumMismatch {
        /// CRC-32 stored in the header.
        stored: u32,
        /// CRC-32 computed over the file.
        computed: u32,
    },
    /// A byte range named in a packed file reaches outside the file (or its section).
    OutOfBounds {
        /// Which range (a section or table).
        what: &'static str,
        /// Start of the range, bytes (saturated to `usize::MAX` when larger).
        offset: usize,
        /// Length of the range, bytes (saturated to `usize::MAX` when larger).
        len: usize,
        /// Bytes available (the file or the enclosing section).
        size: usize,
    },
    /// A buffer or a field of a packed file is not aligned as required.
    Misaligned {
        /// Which buffer or field.
        what: &'static str,
        /// Required alignment, bytes.
        align: usize,
    },
    /// A packed file holds an enum code this build does not know.
    UnknownCode {
        /// Which field.
        what: &'static str,
        /// The code found.
        code: u32,
    },
    /// A packed file breaks a structural rule; the text names the field and the rule.
    Malformed(&'static str),
    /// Entry `index` of a packed file's tensor table breaks a rule; the text names it.
    BadTensorEntry {
        /// Position in the tensor table (0-based).
        index: usize,
        /// The rule broken.
        problem: &'static str,
    },
    /// Entry `index` of a packed file's tensor table has a byte length that does not match its
    /// shape and dtype.
    TensorSize {
        /// Position in the tensor table (0-based).
        index: usize,
        /// `"data"` or `"scales"`.
        what: &'static str,
        /// Bytes the shape and dtype call for.
        expected: usize,
        /// Bytes the entry says.
        found: usize,
    },
    /// A tensor the model needs is not in the packed file.
    MissingTensor(TensorName),
    /// A tensor has the wrong rank or dimension for the model configuration.
    TensorShape {
        /// The tensor.
        tensor: TensorName,
        /// `"rank"`, `"rows"`, `"columns"` or `"length"`.
        what: &'static str,
        /// Value the configuration calls for.
        expected: usize,
        /// Value in the file.
        found: usize,
    },
    /// A valid feature this build does not support yet (e.g. int4 tensors); the text names it.
    Unsupported(&'static str),
    /// A token the tokenizer needs (e.g. `[UNK]`) is not in the vocabulary.
    MissingToken(&'static str),
    /// A token id is not below the vocabulary size.
    TokenOutOfRange {
        /// The id.
        id: u32,
        /// Tokens in the vocabulary.
        vocab_size: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::InvalidConfig(what) => write!(f, "invalid configuration: {what}"),
            Error::ShapeMismatch {
                what,
                expected,
                found,
            } => {
                write!(
                    f,
                    "shape mismatch in {what}: expected {expected} elements, found {found}"
                )
            }
            Error::SeqTooLong { len, max } => {
                write!(
                    f,
                    "sequence of {len} tokens is longer than the maximum of {max}"
                )
            }
            Error::ArenaTooSmall { needed, available } => write!(
                f,
                "arena too small: needs {needed} bytes, has {available} bytes"
            ),
            Error::ArenaMisaligned => write!(f, "arena memory is not aligned to 16 bytes"),
            Error::BadMagic => write!(f, "not a topkit model file (bad magic bytes)"),
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "unsupported format version {found} (this build reads version {supported})"
            ),
            Error::Truncated { needed, found } => {
                write!(f, "truncated file: needs {needed} bytes, has {found} bytes")
            }
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "CRC mismatch: file says {stored:#010x}, computed {computed:#010x}"
            ),
            Error::OutOfBounds {
                what,
                offset,
                len,
                size,
            } => write!(
                f,
                "{what} out of bounds: {len} bytes at offset {offset}, only {size} bytes available"
            ),
            Error::Misaligned { what, align } => {
                write!(f, "{what} is not aligned to {align} bytes")
            }
            Error::UnknownCode { what, code } => write!(f, "unknown {what} code {code}"),
            Error::Malformed(what) => write!(f, "malformed file: {what}"),
            Error::BadTensorEntry { index, problem } => {
                write!(f, "tensor table entry {index}: {problem}")
            }
            Error::TensorSize {
                index,
                what,
                expected,
                found,
            } => write!(
                f,
                "tensor table entry {index}: {what} length is {found} bytes, shape and dtype need {expected}"
            ),
            Error::MissingTensor(name) => write!(f, "missing tensor {name}"),
            Error::TensorShape {
                tensor,
                what,
                expected,
                found,
            } => write!(
                f,
                "tensor {tensor}: {what} is {found}, the configuration needs {expected}"
            ),
            Error::Unsupported(what) => write!(f, "not supported yet: {what}"),
            Error::MissingToken(name) => write!(f, "the vocabulary has no {name} token"),
            Error::TokenOutOfRange { id, vocab_size } => {
                write!(
                    f,
                    "token id {id} is out of range for a vocabulary of {vocab_size}"
                )
            }
        }
    }
}

impl core::error::Error for Error {}
