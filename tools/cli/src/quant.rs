//! Conversion of f32 weights to the stored dtypes, with the error it makes.
//!
//! Stated error bounds (what the round-trip tests check), per element `x`, stored `x'`:
//! - f32: exact.
//! - f16 (round to nearest): `|x - x'| <= 2^-11 |x|` for `|x| >= 2^-14` (normal range), and
//!   `<= 2^-25` below it (half the spacing of f16 subnormals). Values beyond 65504 are refused.
//! - int8, symmetric per row: `scale = max|row| / 127`, `q = round(x / scale)`, so
//!   `|x - q scale| <= scale / 2` (plus f32 rounding of the product, a few ulps of `x`).
//! - ggml blocks (`q4_0` ... `q8_0`, [`BlockType`]): 32 weights along a row per block with an
//!   f16 scale (and min); round-to-nearest as ggml's reference quantizers
//!   ([`BlockType::quantize`]), or the error-compensating [`crate::gptq`] when `pack --flash`
//!   has calibration activations. Rows must be whole blocks (a multiple of 32 elements).

use anyhow::{Result, bail};
use half::f16;
use topkit::kernels::{BLOCK, BlockType};

use crate::writer::TensorData;

/// Element dtype chosen for the matrices of a packed model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreDType {
    /// 32-bit float: exact.
    F32,
    /// 16-bit float: half the size, relative error at most 2^-11.
    F16,
    /// Symmetric int8 with one f32 scale per row: a quarter of the size.
    Int8,
    /// ggml `Q4_0`: 4-bit, f16 scale per block of 32 (18 bytes per 32 weights).
    #[value(name = "q4_0")]
    #[serde(rename = "q4_0")]
    Q4_0,
    /// ggml `Q4_1`: 4-bit, f16 scale and min per block of 32 (20 bytes per 32 weights).
    #[value(name = "q4_1")]
    #[serde(rename = "q4_1")]
    Q4_1,
    /// ggml `Q5_0`: 5-bit, f16 scale per block of 32 (22 bytes per 32 weights).
    #[value(name = "q5_0")]
    #[serde(rename = "q5_0")]
    Q5_0,
    /// ggml `Q5_1`: 5-bit, f16 scale and min per block of 32 (24 bytes per 32 weights).
    #[value(name = "q5_1")]
    #[serde(rename = "q5_1")]
    Q5_1,
    /// ggml `Q8_0`: 8-bit, f16 scale per block of 32 (34 bytes per 32 weights).
    #[value(name = "q8_0")]
    #[serde(rename = "q8_0")]
    Q8_0,
}

impl StoreDType {
    /// Every dtype, smallest per weight first (for matrices whose rows are whole blocks).
    pub const BY_SIZE: [StoreDType; 8] = [
        StoreDType::Q4_0,
        StoreDType::Q4_1,
        StoreDType::Q5_0,
        StoreDType::Q5_1,
        StoreDType::Int8,
        StoreDType::Q8_0,
        StoreDType::F16,
        StoreDType::F32,
    ];

    /// The ggml block type, for the block dtypes.
    pub fn block(self) -> Option<BlockType> {
        match self {
            StoreDType::Q4_0 => Some(BlockType::Q4_0),
            StoreDType::Q4_1 => Some(BlockType::Q4_1),
            StoreDType::Q5_0 => Some(BlockType::Q5_0),
            StoreDType::Q5_1 => Some(BlockType::Q5_1),
            StoreDType::Q8_0 => Some(BlockType::Q8_0),
            StoreDType::F32 | StoreDType::F16 | StoreDType::Int8 => None,
        }
    }

    /// Whether a tensor of `shape` can be stored in this dtype: every dtype for a matrix
    /// whose rows are whole blocks of 32, f32/f16/int8 for other matrices, f32 for vectors.
    pub fn fits(self, shape: &[usize]) -> bool {
        if shape.len() < 2 {
            return self == StoreDType::F32;
        }
        let cols = *shape.last().unwrap_or(&0);
        self.block().is_none() || (cols > 0 && cols.is_multiple_of(BLOCK))
    }

    /// Bytes a tensor of `shape` takes in this dtype (data and scales, without the file's
    /// alignment padding); `None` on overflow or when it does not [`fit`](Self::fits).
    pub fn bytes(self, shape: &[usize]) -> Option<usize> {
        if !self.fits(shape) {
            return None;
        }
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        let cols = (*shape.last().unwrap_or(&1)).max(1);
        match self {
            StoreDType::F32 => n.checked_mul(4),
            StoreDType::F16 => n.checked_mul(2),
            StoreDType::Int8 => n.checked_add((n / cols).checked_mul(4)?),
            _ => (n / BLOCK).checked_mul(self.block()?.block_bytes()),
        }
    }
}

impl std::fmt::Display for StoreDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StoreDType::F32 => "f32",
            StoreDType::F16 => "f16",
            StoreDType::Int8 => "int8",
            StoreDType::Q4_0 => "q4_0",
            StoreDType::Q4_1 => "q4_1",
            StoreDType::Q5_0 => "q5_0",
            StoreDType::Q5_1 => "q5_1",
            StoreDType::Q8_0 => "q8_0",
        })
    }
}

impl std::str::FromStr for StoreDType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <StoreDType as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            format!("unknown dtype {s:?}: expected q4_0, q4_1, q5_0, q5_1, q8_0, int8, f16 or f32")
        })
    }
}

/// The error a conversion made over a whole tensor.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct QuantError {
    /// Largest `|x - x'|`.
    pub max_abs: f64,
    /// `||x - x'|| / ||x||` (0 for an all-zero tensor).
    pub rel_rms: f64,
}

impl QuantError {
    /// The error between `orig` and its dequantized values.
    pub fn measure(orig: &[f32], back: impl Iterator<Item = f32>) -> Self {
        let (mut max_abs, mut err2, mut sig2) = (0f64, 0f64, 0f64);
        for (&x, y) in orig.iter().zip(back) {
            let e = (f64::from(x) - f64::from(y)).abs();
            max_abs = max_abs.max(e);
            err2 += e * e;
            sig2 += f64::from(x) * f64::from(x);
        }
        let rel_rms = if sig2 > 0.0 {
            (err2 / sig2).sqrt()
        } else {
            0.0
        };
        QuantError { max_abs, rel_rms }
    }
}

/// int8 per-row quantization: values and one scale per row of `cols` elements.
pub fn quantize_i8(values: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / cols.max(1));
    for row in values.chunks(cols.max(1)) {
        let max = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
        let mut scale = max / 127.0;
        // Near f32::MAX, 127 * (max / 127) can round up to infinity: step the scale down
        // until the largest code dequantizes to a finite value (at most a few ulps).
        while (127.0 * scale).is_infinite() {
            scale = f32::from_bits(scale.to_bits() - 1);
        }
        scales.push(scale);
        for &x in row {
            let v = if scale > 0.0 {
                (x / scale).round().clamp(-127.0, 127.0)
            } else {
                0.0
            };
            q.push(v as i8);
        }
    }
    (q, scales)
}

/// Round-to-nearest ggml blocks of `values` (rows of `cols` elements, a multiple of
/// [`BLOCK`]), laid out row-major as ggml does.
pub fn quantize_blocks(values: &[f32], ty: BlockType) -> Vec<u8> {
    let mut data = vec![0u8; values.len() / BLOCK * ty.block_bytes()];
    for (w, b) in values
        .chunks_exact(BLOCK)
        .zip(data.chunks_exact_mut(ty.block_bytes()))
    {
        ty.quantize(w, b);
    }
    data
}

/// The f32 values of row-major ggml blocks.
pub fn dequantize_blocks(data: &[u8], ty: BlockType) -> Vec<f32> {
    let mut out = vec![0f32; data.len() / ty.block_bytes() * BLOCK];
    for (b, o) in data
        .chunks_exact(ty.block_bytes())
        .zip(out.chunks_exact_mut(BLOCK))
    {
        ty.dequantize(b, o);
    }
    out
}

fn blocks(
    name: &str,
    values: &[f32],
    cols: usize,
    ty: BlockType,
) -> Result<(TensorData, QuantError)> {
    if cols == 0 || !cols.is_multiple_of(BLOCK) || !values.len().is_multiple_of(cols) {
        bail!("tensor {name}: rows of {cols} elements are not whole blocks of {BLOCK}");
    }
    let data = quantize_blocks(values, ty);
    let err = QuantError::measure(values, dequantize_blocks(&data, ty).into_iter());
    Ok((TensorData::Blocks { ty, data }, err))
}

/// Converts `values` (a tensor whose rows have `cols` elements) to `dtype`, with its error.
/// Fails on NaN or infinite values (a broken checkpoint: the engine would spread them, and an
/// int8 row scale would become NaN) and on values f16 cannot hold. Block dtypes take
/// round-to-nearest ([`quantize_blocks`]).
///
/// # Errors
/// When a value is NaN or infinite, beyond the f16 range for [`StoreDType::F16`], or the rows
/// are not whole blocks for a block dtype.
pub fn convert(
    name: &str,
    values: Vec<f32>,
    cols: usize,
    dtype: StoreDType,
) -> Result<(TensorData, QuantError)> {
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "tensor {name}: value {} at element {i} is not finite; the checkpoint is broken",
            values[i]
        );
    }
    Ok(match dtype {
        StoreDType::F32 => (TensorData::F32(values), QuantError::default()),
        StoreDType::F16 => {
            let h: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
            if let Some(i) = h.iter().position(|v| !v.is_finite()) {
                bail!(
                    "tensor {name}: value {} at element {i} is beyond the f16 range (65504); use --dtype f32 or int8",
                    values[i]
                );
            }
            let err = QuantError::measure(&values, h.iter().map(|v| v.to_f32()));
            (TensorData::F16(h), err)
        }
        StoreDType::Int8 => {
            let (q, scales) = quantize_i8(&values, cols);
            let back = q
                .iter()
                .enumerate()
                .map(|(i, &v)| f32::from(v) * scales[i / cols]);
            let err = QuantError::measure(&values, back);
            (TensorData::I8 { q, scales }, err)
        }
        StoreDType::Q4_0 => blocks(name, &values, cols, BlockType::Q4_0)?,
        StoreDType::Q4_1 => blocks(name, &values, cols, BlockType::Q4_1)?,
        StoreDType::Q5_0 => blocks(name, &values, cols, BlockType::Q5_0)?,
        StoreDType::Q5_1 => blocks(name, &values, cols, BlockType::Q5_1)?,
        StoreDType::Q8_0 => blocks(name, &values, cols, BlockType::Q8_0)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_error_within_half_a_step() {
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37)
            .collect();
        let (q, scales) = quantize_i8(&values, 16);
        assert_eq!(scales.len(), 4);
        for (i, &x) in values.iter().enumerate() {
            let s = scales[i / 16];
            let y = f32::from(q[i]) * s;
            // Tolerance: half a quantization step, plus 1e-6 relative for f32 rounding.
            assert!(
                (x - y).abs() <= s / 2.0 + 1e-6 * x.abs(),
                "element {i}: {x} vs {y}"
            );
        }
        // The largest magnitude of each row maps to +-127 exactly.
        for row in q.chunks(16) {
            assert_eq!(row.iter().map(|v| v.unsigned_abs()).max(), Some(127));
        }
    }

    #[test]
    fn int8_zero_row_is_exact() {
        let (q, scales) = quantize_i8(&[0.0; 8], 4);
        assert_eq!(scales, vec![0.0, 0.0]);
        assert!(q.iter().all(|&v| v == 0));
    }

    #[test]
    fn non_finite_values_are_refused_naming_the_tensor() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for dtype in [StoreDType::F32, StoreDType::F16, StoreDType::Int8] {
                let err = convert("l3.q.w", vec![1.0, bad, 2.0, 0.0], 2, dtype).unwrap_err();
                let msg = err.to_string();
                assert!(
                    msg.contains("l3.q.w")
                        && msg.contains("element 1")
                        && msg.contains("not finite"),
                    "{msg}"
                );
            }
        }
    }

    /// Rows of zeros, huge and tiny magnitudes, subnormals and f32::MAX: finite scales, every
    /// element within half a step, and the row maximum at +-127 whenever the scale is normal.
    #[test]
    fn int8_extreme_scales() {
        let sub = f32::from_bits(1); // smallest subnormal, 1.4e-45
        let rows: [[f32; 4]; 7] = [
            [0.0, 0.0, -0.0, 0.0],
            [1e30, -5e29, 1e29, 0.0],
            [1e-30, -1e-30, 3e-31, 0.0],
            [sub, -sub, 0.0, sub],
            [1e-40, -3e-39, 2e-41, 0.0],
            [f32::MAX, -f32::MAX, 1.0, 0.0],
            [f32::MIN_POSITIVE, 1.0, -1e-38, 0.0],
        ];
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        let (q, scales) = quantize_i8(&values, 4);
        assert_eq!(scales.len(), rows.len());
        for (r, row) in rows.iter().enumerate() {
            let s = scales[r];
            assert!(s.is_finite() && s >= 0.0, "row {r}: scale {s}");
            for (c, &x) in row.iter().enumerate() {
                let y = f32::from(q[r * 4 + c]) * s;
                assert!(y.is_finite(), "row {r}: {y}");
                // Tolerance: half a step, plus 1e-6 relative; when the scale underflows to 0
                // (rows of subnormals) the whole row is lost, by at most its maximum.
                let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let tol = if s > 0.0 {
                    s / 2.0 + 1e-6 * x.abs()
                } else {
                    max
                };
                assert!(
                    (x - y).abs() <= tol,
                    "row {r} col {c}: {x} vs {y} (scale {s})"
                );
            }
            if s.is_normal() {
                let top = q[r * 4..r * 4 + 4].iter().map(|v| v.unsigned_abs()).max();
                assert_eq!(top, Some(127), "row {r}");
            }
        }
        assert!(q[..4].iter().all(|&v| v == 0) && scales[0] == 0.0);
        let (_, err) = convert("t", values.clone(), 4, StoreDType::Int8).unwrap();
        assert!(
            err.max_abs.is_finite() && err.rel_rms.is_finite(),
            "{err:?}"
        );
    }

    #[test]
    fn f16_refuses_out_of_range() {
        let err = convert("t", vec![1.0, 70000.0], 2, StoreDType::F16).unwrap_err();
        assert!(err.to_string().contains("beyond the f16 range"), "{err}");
    }

    #[test]
    fn error_measure() {
        let e = QuantError::measure(&[3.0, 4.0], [3.0f32, 4.5].into_iter());
        assert_eq!(e.max_abs, 0.5);
        assert!((e.rel_rms - 0.1).abs() < 1e-12);
    }

    #[test]
    fn block_sizes_and_fallbacks() {
        assert_eq!(StoreDType::Q4_0.bytes(&[2, 64]), Some(4 * 18));
        assert_eq!(StoreDType::Q5_1.bytes(&[3, 32]), Some(3 * 24));
        assert_eq!(StoreDType::Q8_0.bytes(&[1, 32]), Some(34));
        assert_eq!(StoreDType::Int8.bytes(&[2, 8]), Some(16 + 8));
        assert_eq!(StoreDType::Q4_1.bytes(&[2, 48]), None);
        assert!(!StoreDType::Q4_0.fits(&[64]) && StoreDType::F32.fits(&[64]));
        assert!(StoreDType::Int8.fits(&[2, 48]));
        // Smallest per weight first, for rows of 384.
        let sizes: Vec<usize> = StoreDType::BY_SIZE
            .iter()
            .map(|d| d.bytes(&[4, 384]).unwrap())
            .collect();
        assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
        let err = convert("t", vec![0.5; 48], 48, StoreDType::Q4_0).unwrap_err();
        assert!(err.to_string().contains("not whole blocks"), "{err}");
    }

    #[test]
    fn blocks_round_trip_within_a_step() {
        let values: Vec<f32> = (0..128)
            .map(|i| ((i * 29 % 41) as f32 - 20.0) * 0.05)
            .collect();
        for d in [
            StoreDType::Q4_0,
            StoreDType::Q4_1,
            StoreDType::Q5_0,
            StoreDType::Q5_1,
            StoreDType::Q8_0,
        ] {
            let (data, err) = convert("t", values.clone(), 64, d).unwrap();
            assert_eq!(
                data.dtype(),
                topkit::kernels::DType::Block(d.block().unwrap())
            );
            assert_eq!(data.bytes(), d.bytes(&[2, 64]).unwrap());
            // Values span [-1, 1]: `_0` kinds step max|x| / 2^(bits-1) and clamp the positive
            // extreme by up to one step, `_1` kinds lose half a step of 2 / (2^bits - 1);
            // both within 1 / 2^(bits-1), plus f16 scale rounding.
            let bits = d.block().unwrap().bits();
            let bound = 1.0 / f64::from(1u32 << (bits - 1)) + 2e-3;
            assert!(err.max_abs <= bound, "{d}: {err:?} > {bound}");
            assert!(err.rel_rms > 0.0);
        }
    }
}
