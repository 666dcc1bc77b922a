//! GGUF (llama.cpp's model file) for `topkit pack model.gguf`: the container
//! ([`file`](mod@file)), ggml's tensor types ([`dequant`]), the llama architecture's
//! configuration and tensor names ([`llama`]) and the byte-level BPE tokenizer in the
//! metadata ([`tokenizer`]).

pub mod dequant;
pub mod file;
pub mod llama;
pub mod tokenizer;

use anyhow::Result;

pub use self::dequant::{GgmlType, dequantize};
pub use self::file::{DEFAULT_ALIGNMENT, Gguf, MAGIC, TensorInfo, Value, is_gguf};
pub use self::llama::{DEFAULT_MAX_SEQ_CAP, source};
use crate::import::Mapping;

/// Loads `m` from the file as f32 with its transform; returns (shape outermost first, values).
///
/// # Errors
/// As [`Gguf::raw`] and [`crate::import::load`].
pub fn load(g: &Gguf, bytes: &[u8], m: &Mapping) -> Result<(Vec<usize>, Vec<f32>)> {
    crate::import::load(g.raw(bytes, &m.source)?, m.transform)
}
