//! The importers of `topkit pack`: a Hugging Face model directory ([`hf`]) or a llama.cpp GGUF
//! file ([`gguf`]) becomes a [`Source`]: the packed file's configuration and tokenizer, and a
//! [`Mapping`] per tensor to pack (where it comes from and how it is [`Transform`]ed).
//!
//! Loading a tensor has two steps that both importers share: the importer hands out the
//! tensor's bytes as the file stores them ([`RawTensor`], with their [`GgmlType`]), and
//! [`load`] decodes them to f32 and applies the mapping's transform. A packer that keeps ggml
//! blocks as they are can take the [`RawTensor`] instead of calling [`load`].

pub mod gguf;
pub mod hf;
pub mod keep;

use std::collections::HashSet;

use anyhow::{Context, Result, bail, ensure};
use topkit::format::FileConfig;

use self::gguf::dequant::{GgmlType, dequantize};
use crate::writer::Tokenizer;

/// How a source tensor becomes a packed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transform {
    /// As is.
    None,
    /// Transposed (a 2-D `[a, b]` becomes `[b, a]`): the FFN down projection, whose rows the
    /// engine adds.
    Transpose,
    /// Only the first rows (position embeddings cut to `--max-seq`).
    FirstRows(usize),
    /// The rows of a Q or K projection of this many heads put back in the order topkit's
    /// RoPE expects (see [`unpermute_rows`]).
    UnpermuteRows(usize),
}

/// One packed tensor and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Name in the source file.
    pub source: String,
    /// topkit name.
    pub name: String,
    /// Conversion.
    pub transform: Transform,
}

impl Mapping {
    /// `source` packed as `name` after `transform`.
    pub fn new(source: impl Into<String>, name: impl Into<String>, transform: Transform) -> Self {
        Mapping {
            source: source.into(),
            name: name.into(),
            transform,
        }
    }
}

/// A model read and mapped, ready to convert.
#[derive(Debug, Clone)]
pub struct Source {
    /// Config section of the packed file.
    pub config: FileConfig,
    /// Tokenizer.
    pub tokenizer: Tokenizer,
    /// Tensors to pack, in order.
    pub mappings: Vec<Mapping>,
    /// Source tensors left out (unused by topkit), by source name.
    pub skipped: Vec<String>,
}

/// Refuses, before any weight is read, a model the core cannot run although its
/// configuration is valid: more layers than [`topkit::encoder::MAX_LAYERS`]. `what` names
/// where the count comes from.
///
/// # Errors
/// When the model has too many layers.
pub(crate) fn check_runnable(model: &topkit::ModelConfig, what: &str) -> anyhow::Result<()> {
    let max = topkit::encoder::MAX_LAYERS;
    anyhow::ensure!(
        model.n_layers <= max,
        "{what}: {} layers, more than the {max} topkit runs",
        model.n_layers
    );
    Ok(())
}

/// The names of `all` no mapping reads, in the order of `all`.
pub(crate) fn unused<'a>(
    all: impl IntoIterator<Item = &'a str>,
    mappings: &[Mapping],
) -> Vec<String> {
    let used: HashSet<&str> = mappings.iter().map(|m| m.source.as_str()).collect();
    all.into_iter()
        .filter(|n| !used.contains(n))
        .map(str::to_owned)
        .collect()
}

/// A source tensor as its file stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTensor<'a> {
    /// Name in the source file.
    pub source: &'a str,
    /// Shape, outermost first: `[rows, cols]` for a matrix.
    pub shape: Vec<usize>,
    /// Element type (safetensors' F32, F16 and BF16 are ggml's of the same name).
    pub ty: GgmlType,
    /// The stored bytes, exactly `ty.bytes_of(elements)` of them.
    pub data: &'a [u8],
}

impl RawTensor<'_> {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Decodes `raw` to f32 (refusing NaN and infinity) and applies `transform`; returns the
/// shape (outermost first) and the row-major values.
///
/// # Errors
/// When the data does not match the type and shape, a value is NaN or infinite, or the
/// transform does not fit the shape (not 2-D, too few rows, heads that do not divide the
/// rows).
pub fn load(raw: RawTensor<'_>, transform: Transform) -> Result<(Vec<usize>, Vec<f32>)> {
    let name = raw.source;
    let values =
        dequantize(raw.ty, raw.data, raw.elements()).with_context(|| format!("tensor {name:?}"))?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!("tensor {name:?} holds a non-finite value at element {i}");
    }
    let mut shape = raw.shape;
    let values = match transform {
        Transform::None => values,
        Transform::Transpose => {
            let &[r, c] = shape.as_slice() else {
                bail!("tensor {name:?} to transpose is not 2-D")
            };
            shape = vec![c, r];
            let mut out = vec![0f32; values.len()];
            for i in 0..r {
                for j in 0..c {
                    out[j * r + i] = values[i * c + j];
                }
            }
            out
        }
        Transform::FirstRows(n) => {
            ensure!(
                shape.len() == 2 && shape[0] >= n,
                "tensor {name:?} has fewer than {n} rows"
            );
            shape[0] = n;
            values[..n * shape[1]].to_vec()
        }
        Transform::UnpermuteRows(heads) => {
            let &[r, c] = shape.as_slice() else {
                bail!("tensor {name:?} is not 2-D")
            };
            unpermute_rows(&values, r, c, heads).with_context(|| format!("tensor {name:?}"))?
        }
    };
    Ok((shape, values))
}

/// Undoes llama.cpp's row permutation of a Q or K projection (`rows` x `cols`, `heads`
/// heads): its converter interleaves the two halves of each head for GPT-J-style RoPE, while
/// topkit (like Hugging Face) rotates the first half of a head against the second half.
/// HF row `h*hd + i*hd/2 + j` is GGUF row `h*hd + 2j + i`.
///
/// # Errors
/// When `rows` is not `heads` heads of an even size, or `values` is not `rows x cols`.
pub fn unpermute_rows(values: &[f32], rows: usize, cols: usize, heads: usize) -> Result<Vec<f32>> {
    ensure!(
        heads > 0 && rows.is_multiple_of(heads) && (rows / heads).is_multiple_of(2),
        "cannot undo the RoPE permutation: {rows} rows are not {heads} heads of an even size"
    );
    ensure!(
        values.len() == rows * cols,
        "unpermute: {} values for {rows}x{cols}",
        values.len()
    );
    let mut out = Vec::with_capacity(values.len());
    for src in unpermute_order(rows, heads)? {
        out.extend_from_slice(&values[src * cols..(src + 1) * cols]);
    }
    Ok(out)
}

/// The source row of each row of [`unpermute_rows`]' result, in order: HF row
/// `h*hd + i*hd/2 + j` is GGUF row `h*hd + 2j + i`.
///
/// # Errors
/// When `rows` is not `heads` heads of an even size.
pub fn unpermute_order(rows: usize, heads: usize) -> Result<Vec<usize>> {
    ensure!(
        heads > 0 && rows.is_multiple_of(heads) && (rows / heads).is_multiple_of(2),
        "cannot undo the RoPE permutation: {rows} rows are not {heads} heads of an even size"
    );
    let hd = rows / heads;
    let half = hd / 2;
    let mut order = Vec::with_capacity(rows);
    for h in 0..heads {
        for i in 0..2 {
            for j in 0..half {
                order.push(h * hd + 2 * j + i);
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn load_f32(shape: &[usize], v: &[f32], t: Transform) -> Result<(Vec<usize>, Vec<f32>)> {
        let data = f32s(v);
        let raw = RawTensor {
            source: "t",
            shape: shape.to_vec(),
            ty: GgmlType::F32,
            data: &data,
        };
        load(raw, t)
    }

    #[test]
    fn transforms() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (s, x) = load_f32(&[2, 3], &v, Transform::None).unwrap();
        assert_eq!((s, x), (vec![2, 3], v.to_vec()));
        let (s, x) = load_f32(&[2, 3], &v, Transform::Transpose).unwrap();
        assert_eq!((s, x), (vec![3, 2], vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        let (s, x) = load_f32(&[3, 2], &v, Transform::FirstRows(2)).unwrap();
        assert_eq!((s, x), (vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]));
        // One head of 4 rows: GGUF rows 0, 1, 2, 3 hold HF rows 0, 2, 1, 3.
        let (s, x) = load_f32(&[4, 1], &v[..4], Transform::UnpermuteRows(1)).unwrap();
        assert_eq!((s, x), (vec![4, 1], vec![1.0, 3.0, 2.0, 4.0]));
    }

    #[test]
    fn refusals_name_the_tensor() {
        for (shape, v, t, msg) in [
            (
                vec![2],
                vec![1.0, f32::NAN],
                Transform::None,
                "non-finite value at element 1",
            ),
            (
                vec![2],
                vec![1.0, 2.0],
                Transform::Transpose,
                "to transpose is not 2-D",
            ),
            (
                vec![1, 2],
                vec![1.0, 2.0],
                Transform::FirstRows(2),
                "fewer than 2 rows",
            ),
            (
                vec![2],
                vec![1.0, 2.0],
                Transform::UnpermuteRows(1),
                "is not 2-D",
            ),
            (
                vec![3, 1],
                vec![1.0; 3],
                Transform::UnpermuteRows(1),
                "even size",
            ),
        ] {
            let e = format!("{:#}", load_f32(&shape, &v, t).unwrap_err());
            assert!(e.contains("tensor \"t\"") && e.contains(msg), "{t:?}: {e}");
        }
    }
}
