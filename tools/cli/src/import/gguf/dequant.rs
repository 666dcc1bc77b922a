//! ggml's tensor types and their dequantization to f32.

use anyhow::{Result, anyhow, ensure};
use half::f16;

/// ggml tensor types this reader dequantizes (ggml's type codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// Blocks of 32: f16 scale d, 16 bytes of 4-bit q; x = (q - 8) d.
    Q4_0,
    /// Blocks of 32: f16 scale d, f16 min m, 16 bytes of 4-bit q; x = q d + m.
    Q4_1,
    /// Blocks of 32: f16 scale d, 32 i8 q; x = q d.
    Q8_0,
    /// bfloat16.
    Bf16,
}

impl GgmlType {
    /// The type of ggml code `code`, if supported.
    pub fn from_code(code: u32) -> Option<GgmlType> {
        Some(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            _ => return None,
        })
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::Bf16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
        }
    }

    /// Bytes of `n` elements, or `None` when `n` is not a whole number of blocks or overflows.
    pub fn bytes_of(self, n: u64) -> Option<u64> {
        let (be, bb) = self.block();
        n.is_multiple_of(be as u64).then_some(())?;
        (n / be as u64).checked_mul(bb as u64)
    }
}

/// ggml's name of type code `code` (`"unknown"` for codes it does not have).
pub fn type_name(code: u32) -> &'static str {
    match code {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        30 => "BF16",
        _ => "unknown",
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    match b.get(i..i + 2) {
        Some(&[x, y]) => f16::from_le_bytes([x, y]).to_f32(),
        _ => f32::NAN,
    }
}

/// Dequantizes `n` elements of type `ty` from `data` (exactly `ty.bytes_of(n)` bytes).
/// The arithmetic is ggml's (and gguf-py's): f16 scales widened to f32, then `q * d (+ m)`
/// in f32, so Q4_1 and Q8_0 weights come out bit-exact.
///
/// # Errors
/// When `n` is not a whole number of blocks or `data` is not exactly their bytes.
pub fn dequantize(ty: GgmlType, data: &[u8], n: usize) -> Result<Vec<f32>> {
    let need = ty
        .bytes_of(n as u64)
        .ok_or_else(|| anyhow!("{n} elements are not whole {:?} blocks", ty))?;
    ensure!(
        data.len() as u64 == need,
        "{ty:?}: {n} elements need {need} bytes, got {}",
        data.len()
    );
    let mut out = Vec::with_capacity(n);
    let (_, bb) = ty.block();
    match ty {
        GgmlType::F32 => out.extend(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(data.chunks_exact(2).map(|b| f16_at(b, 0))),
        GgmlType::Bf16 => out.extend(
            data.chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            for blk in data.chunks_exact(bb) {
                let d = f16_at(blk, 0);
                let (m, qs) = if ty == GgmlType::Q4_1 {
                    (f16_at(blk, 2), &blk[4..])
                } else {
                    (0.0, &blk[2..])
                };
                // Low nibbles are elements 0..16, high nibbles 16..32.
                for shift in [0u8, 4] {
                    for &q in qs {
                        let q = (q >> shift) & 0x0f;
                        out.push(if ty == GgmlType::Q4_1 {
                            f32::from(q) * d + m
                        } else {
                            (f32::from(q) - 8.0) * d
                        });
                    }
                }
            }
        }
        GgmlType::Q8_0 => {
            for blk in data.chunks_exact(bb) {
                let d = f16_at(blk, 0);
                out.extend(blk[2..].iter().map(|&q| f32::from(q as i8) * d));
            }
        }
    }
    Ok(out)
}
