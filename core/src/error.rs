//! The one error type of the core. Every bad input (config, shapes, file, token, budget) maps to
//! a variant here; the core never panics on input.

use core::fmt;

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
    /// A token the tokenizer needs (e.g. `[UNK]`) is not in the vocabulary.
    MissingToken(&'static str),
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
            Error::MissingToken(name) => write!(f, "the vocabulary has no {name} token"),
        }
    }
}

impl core::error::Error for Error {}
