//! What `topkit pack` stores of a GGUF tensor when no `--dtype` is given: ggml's 32-element
//! blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) byte for byte, F16 matrices as F16, everything else
//! (F32, BF16, vectors, the k-quant super-blocks) dequantized to f32.
//!
//! The mapping's transform is applied to whole rows of blocks, so it keeps the bytes: a
//! position cut keeps the first rows, the Q/K un-permutation moves rows. The FFN down
//! projection, which topkit otherwise stores transposed (`l{i}.ffn.down_t.w`), cannot be
//! transposed block by block: it is kept in ggml's layout as `l{i}.ffn.down.w` (`d_model x
//! d_ff`, which the engine runs as [`topkit::ffn::DownLayout::Columns`]).

use anyhow::{Context, Result, bail, ensure};
use topkit::kernels::BlockType;

use super::{Mapping, RawTensor, Transform, unpermute_order};
use crate::quant::StoreDType;
use crate::writer::TensorData;

/// A packed tensor made from the source's bytes.
#[derive(Debug, Clone)]
pub struct Kept {
    /// topkit name (the mapping's, or `l{i}.ffn.down.w` for a kept down projection).
    pub name: String,
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// The blocks.
    pub data: TensorData,
}

/// The name a transposed tensor is kept under untransposed, if topkit has one: the FFN down
/// projection `l{i}.ffn.down_t.w` becomes `l{i}.ffn.down.w`.
fn untransposed(name: &str) -> Option<String> {
    name.strip_suffix(".ffn.down_t.w")
        .map(|l| format!("{l}.ffn.down.w"))
}

/// The dtype a tensor not kept as blocks is stored in by default: F16 matrices stay F16
/// (exact), everything else becomes f32.
pub fn default_dtype(raw: &RawTensor<'_>) -> StoreDType {
    if raw.shape.len() >= 2 && raw.ty == super::gguf::GgmlType::F16 {
        StoreDType::F16
    } else {
        StoreDType::F32
    }
}

/// `raw`'s blocks as they are, after `m`'s transform, when `raw` is a matrix of one of
/// topkit's block types; `None` when it is not (the caller dequantizes it).
///
/// # Errors
/// When the bytes are not whole rows of blocks, a block's scale or min is not finite (a
/// broken file: the engine would spread it), or the transform does not fit the shape.
pub fn keep_blocks(raw: &RawTensor<'_>, m: &Mapping) -> Result<Option<Kept>> {
    let Some(ty) = raw.ty.block_type() else {
        return Ok(None);
    };
    let &[rows, cols] = raw.shape.as_slice() else {
        return Ok(None);
    };
    let name = raw.source;
    let row_bytes = ty
        .matrix_bytes(1, cols)
        .with_context(|| format!("tensor {name:?}: rows of {cols} are not whole blocks"))?;
    ensure!(
        Some(raw.data.len()) == row_bytes.checked_mul(rows),
        "tensor {name:?}: {} bytes are not {rows} rows of {row_bytes}",
        raw.data.len()
    );
    check_scales(ty, raw.data).with_context(|| format!("tensor {name:?}"))?;
    let kept = |name: String, shape: Vec<usize>, data: Vec<u8>| {
        Some(Kept {
            name,
            shape,
            data: TensorData::Blocks { ty, data },
        })
    };
    Ok(match m.transform {
        Transform::None => kept(m.name.clone(), raw.shape.clone(), raw.data.to_vec()),
        Transform::FirstRows(n) => {
            ensure!(rows >= n, "tensor {name:?} has fewer than {n} rows");
            kept(
                m.name.clone(),
                vec![n, cols],
                raw.data[..n * row_bytes].to_vec(),
            )
        }
        Transform::UnpermuteRows(heads) => {
            let order = unpermute_order(rows, heads).with_context(|| format!("tensor {name:?}"))?;
            let mut data = Vec::with_capacity(raw.data.len());
            for src in order {
                data.extend_from_slice(&raw.data[src * row_bytes..(src + 1) * row_bytes]);
            }
            kept(m.name.clone(), raw.shape.clone(), data)
        }
        Transform::Transpose => match untransposed(&m.name) {
            Some(n) => kept(n, raw.shape.clone(), raw.data.to_vec()),
            None => None,
        },
    })
}

/// Refuses a block whose scale or min is NaN or infinite.
fn check_scales(ty: BlockType, data: &[u8]) -> Result<()> {
    for (i, b) in data.chunks_exact(ty.block_bytes()).enumerate() {
        let (d, m) = ty.scale_min(b);
        if !d.is_finite() || !m.is_finite() {
            bail!("block {i} has a non-finite scale or min ({d}, {m})");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import::gguf::GgmlType;
    use crate::import::load;

    /// A `rows x cols` Q8_0 matrix whose element `(r, c)` is `r * cols + c` (exact: |q| <=
    /// 127, d = 1).
    fn q8(rows: usize, cols: usize) -> Vec<u8> {
        let v: Vec<f32> = (0..rows * cols).map(|i| (i % 127) as f32).collect();
        let mut out = vec![0u8; rows * cols / 32 * 34];
        for (w, b) in v.chunks_exact(32).zip(out.chunks_exact_mut(34)) {
            BlockType::Q8_0.quantize(w, b);
        }
        out
    }

    fn values(k: &Kept) -> Vec<f32> {
        let TensorData::Blocks { ty, data } = &k.data else {
            panic!("not blocks")
        };
        let mut out = vec![0f32; data.len() / ty.block_bytes() * 32];
        for (b, o) in data
            .chunks_exact(ty.block_bytes())
            .zip(out.chunks_exact_mut(32))
        {
            ty.dequantize(b, o);
        }
        out
    }

    /// Each transform on the bytes gives the values of the same transform on the dequantized
    /// tensor; the down projection is kept untransposed under its own name.
    #[test]
    fn transforms_keep_the_bytes() {
        let (rows, cols) = (8, 64);
        let data = q8(rows, cols);
        let raw = RawTensor {
            source: "t",
            shape: vec![rows, cols],
            ty: GgmlType::Q8_0,
            data: &data,
        };
        for t in [
            Transform::None,
            Transform::FirstRows(3),
            Transform::UnpermuteRows(2),
        ] {
            let k = keep_blocks(&raw, &Mapping::new("t", "l0.q.w", t))
                .unwrap()
                .unwrap();
            let (shape, want) = load(raw.clone(), t).unwrap();
            assert_eq!((&k.name[..], &k.shape), ("l0.q.w", &shape), "{t:?}");
            assert_eq!(values(&k), want, "{t:?}");
        }
        let m = Mapping::new("t", "l3.ffn.down_t.w", Transform::Transpose);
        let k = keep_blocks(&raw, &m).unwrap().unwrap();
        assert_eq!(
            (&k.name[..], &k.shape[..]),
            ("l3.ffn.down.w", &[rows, cols][..])
        );
        assert_eq!(values(&k), load(raw.clone(), Transform::None).unwrap().1);
        // Another transposed tensor has no untransposed name: the caller dequantizes it.
        let m = Mapping::new("t", "x.w", Transform::Transpose);
        assert!(keep_blocks(&raw, &m).unwrap().is_none());
        // Not a block type, or not a matrix: not kept.
        let f = RawTensor {
            ty: GgmlType::F32,
            data: &data[..rows * 4],
            shape: vec![rows],
            ..raw.clone()
        };
        assert!(keep_blocks(&f, &m).unwrap().is_none());
    }

    #[test]
    fn broken_blocks_are_refused() {
        let mut data = q8(2, 32);
        fn raw(d: &[u8]) -> RawTensor<'_> {
            RawTensor {
                source: "t",
                shape: vec![2, 32],
                ty: GgmlType::Q8_0,
                data: d,
            }
        }
        let m = Mapping::new("t", "x", Transform::None);
        assert!(keep_blocks(&raw(&data[..60]), &m).is_err());
        // An f16 infinity as the second block's scale.
        data[34..36].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
        let e = format!("{:#}", keep_blocks(&raw(&data), &m).unwrap_err());
        assert!(e.contains("block 1") && e.contains("\"t\""), "{e}");
        let m = Mapping::new("t", "x", Transform::FirstRows(3));
        data[34..36].copy_from_slice(&half::f16::ONE.to_le_bytes());
        assert!(keep_blocks(&raw(&data), &m).is_err());
    }
}
