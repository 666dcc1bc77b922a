//! Helpers shared by the fuzz targets: aligned copies of the input, the conversion and
//! self-check of `topkit pack`, and the tiny Llama GGUF. The tiny BERT that the seed corpora
//! are made from, and the text vocabularies, are `topkit-fixtures`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

pub mod gguf;

use topkit::format::{FileConfig, PackedModel};
use topkit_cli::quant::{self, StoreDType};
use topkit_cli::writer::{self, AlignedBytes, Tensor, Tokenizer};

/// The model cache of `cargo xtask fetch-model` (`TOPKIT_CACHE`, else
/// `$XDG_CACHE_HOME/topkit`, else `~/.cache/topkit`), as the xtask finds it.
pub fn cache_dir() -> PathBuf {
    let var = |k| std::env::var_os(k).filter(|d| !d.is_empty());
    if let Some(d) = var("TOPKIT_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("topkit");
    }
    PathBuf::from(var("HOME").unwrap_or_else(|| ".".into())).join(".cache/topkit")
}

/// The stored dtype of matrices picked by an input byte (f32, f16, int8).
pub fn store_dtype(byte: Option<u8>) -> StoreDType {
    match byte.map(|b| b % 3) {
        Some(0) => StoreDType::F32,
        Some(1) => StoreDType::F16,
        _ => StoreDType::Int8,
    }
}

/// One tensor converted as `topkit pack` converts it: matrices stored as `dtype`, vectors
/// (biases, norms) as f32.
pub fn convert(
    name: &str,
    shape: Vec<usize>,
    values: Vec<f32>,
    dtype: StoreDType,
) -> anyhow::Result<Tensor> {
    let cols = *shape.last().unwrap_or(&1);
    let dtype = if shape.len() >= 2 {
        dtype
    } else {
        StoreDType::F32
    };
    let (data, _err) = quant::convert(name, values, cols, dtype)?;
    Ok(Tensor {
        name: name.to_owned(),
        shape,
        data,
    })
}

/// Writes a packed file and parses it back with its CRC (the packer's self-check: weights
/// that do not match the configuration are an error, not a panic).
pub fn write_checked(
    config: &FileConfig,
    tokenizer: &Tokenizer,
    tensors: &[Tensor],
) -> anyhow::Result<AlignedBytes> {
    let aligned = AlignedBytes::new(writer::write_file(config, tokenizer, tensors)?);
    PackedModel::parse(aligned.as_slice())
        .map_err(|e| anyhow::anyhow!("the weights do not match the configuration: {e}"))?;
    Ok(aligned)
}

/// `bytes` copied into 16-byte aligned memory (the packed format requires it; libFuzzer's
/// buffer has no such promise). View it with [`aligned_view`].
pub fn aligned(bytes: &[u8]) -> Vec<u128> {
    let mut v = vec![0u128; bytes.len().div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

/// The first `len` bytes of an [`aligned`] buffer.
pub fn aligned_view(v: &[u128], len: usize) -> &[u8] {
    &bytemuck::cast_slice::<u128, u8>(v)[..len]
}
