//! ggml's tensor types and their dequantization to f32.
//!
//! The 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) are topkit's own block dtypes
//! ([`topkit::kernels::BlockType`]), which `topkit pack` keeps byte for byte. The k-quant
//! super-blocks of 256 elements (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) are only read: dequantized to
//! f32 here, then stored as f32 or converted to a requested dtype. Their layouts (ggml's
//! `block_qN_K` structs, all little-endian, f16 scales widened to f32):
//!
//! | type | bytes | layout                                                              |
//! |------|-------|---------------------------------------------------------------------|
//! | Q2_K | 84    | 16 bytes of 4-bit (scale, min) pairs, 64 bytes of 2-bit q, f16 d, f16 dmin |
//! | Q3_K | 110   | 32 bytes of high bits, 64 bytes of 2-bit low q, 12 bytes of 16 6-bit scales, f16 d |
//! | Q4_K | 144   | f16 d, f16 dmin, 12 bytes of 8 6-bit (scale, min) pairs, 128 bytes of 4-bit q |
//! | Q5_K | 176   | f16 d, f16 dmin, 12 bytes of 6-bit (scale, min), 32 bytes of high bits, 128 bytes of 4-bit q |
//! | Q6_K | 210   | 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16 i8 scales, f16 d |
//!
//! Sub-block `s` (of 32, or 16 for Q2_K, Q3_K and Q6_K) gives `x = d*sc_s*q - dmin*m_s`
//! (Q2_K, Q4_K, Q5_K) or `x = d*sc_s*q` with signed `q` (Q3_K: `q - 4` when the high bit is
//! clear; Q6_K: `q - 32`).

use anyhow::{Result, anyhow, ensure};
use half::f16;
use topkit::kernels::BlockType;

/// Elements of a k-quant super-block.
pub const QK_K: usize = 256;

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
    /// Blocks of 32: f16 scale d, 4 bytes of fifth bits, 16 bytes of 4-bit q; x = (q - 16) d.
    Q5_0,
    /// Blocks of 32: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of 4-bit q; x = q d + m.
    Q5_1,
    /// Blocks of 32: f16 scale d, 32 i8 q; x = q d.
    Q8_0,
    /// Super-blocks of 256, 2-bit (see the module docs).
    Q2K,
    /// Super-blocks of 256, 3-bit.
    Q3K,
    /// Super-blocks of 256, 4-bit.
    Q4K,
    /// Super-blocks of 256, 5-bit.
    Q5K,
    /// Super-blocks of 256, 6-bit.
    Q6K,
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
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
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
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q2K => (QK_K, 84),
            GgmlType::Q3K => (QK_K, 110),
            GgmlType::Q4K => (QK_K, 144),
            GgmlType::Q5K => (QK_K, 176),
            GgmlType::Q6K => (QK_K, 210),
        }
    }

    /// topkit's block dtype of the same layout (the 32-element block types), which a packed
    /// file can hold byte for byte.
    pub fn block_type(self) -> Option<BlockType> {
        match self {
            GgmlType::Q4_0 => Some(BlockType::Q4_0),
            GgmlType::Q4_1 => Some(BlockType::Q4_1),
            GgmlType::Q5_0 => Some(BlockType::Q5_0),
            GgmlType::Q5_1 => Some(BlockType::Q5_1),
            GgmlType::Q8_0 => Some(BlockType::Q8_0),
            _ => None,
        }
    }

    /// ggml's name of the type (`"Q4_K"`, ...).
    pub fn name(self) -> &'static str {
        type_name(self.code())
    }

    /// ggml's type code.
    pub fn code(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
            GgmlType::Q2K => 10,
            GgmlType::Q3K => 11,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Bf16 => 30,
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
        GgmlType::Q5_0 | GgmlType::Q5_1 => {
            let bt = ty.block_type().unwrap_or(BlockType::Q5_0);
            let mut v = [0f32; 32];
            for blk in data.chunks_exact(bb) {
                bt.dequantize(blk, &mut v);
                out.extend_from_slice(&v);
            }
        }
        GgmlType::Q2K | GgmlType::Q3K | GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => {
            let mut v = [0f32; QK_K];
            for blk in data.chunks_exact(bb) {
                match ty {
                    GgmlType::Q2K => q2_k(blk, &mut v),
                    GgmlType::Q3K => q3_k(blk, &mut v),
                    GgmlType::Q4K => q45_k(blk, false, &mut v),
                    GgmlType::Q5K => q45_k(blk, true, &mut v),
                    _ => q6_k(blk, &mut v),
                }
                out.extend_from_slice(&v);
            }
        }
    }
    Ok(out)
}

/// Q2_K: 16 sub-blocks of 16; byte `s` of `scales` is the sub-block's scale (low nibble) and
/// min (high nibble). Element `32 c + l` of each half (`n`) of 128 is bits `2 c..2 c + 2` of
/// `qs[32 n + l]`, so a 32-byte run of `qs` holds 4 groups of 32 elements.
fn q2_k(b: &[u8], out: &mut [f32; QK_K]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (i, o) in out.iter_mut().enumerate() {
        let (half, c, l) = (i / 128, (i % 128) / 32, i % 32);
        let sc = scales[i / 16];
        let q = (qs[32 * half + l] >> (2 * c)) & 3;
        let (dl, ml) = (d * f32::from(sc & 0xf), dmin * f32::from(sc >> 4));
        *o = dl * f32::from(q) - ml;
    }
}

/// Q3_K: as Q2_K for the low two bits; bit `i / 32` of `hmask[i % 32]` is the third bit
/// (a clear bit subtracts 4); the 16 scales are 6-bit, stored `scale + 32`: their low nibbles
/// in bytes 0..8 (sub-block `s < 8` low nibble of byte `s`, `s >= 8` high nibble of byte
/// `s - 8`), their high two bits in bytes 8..12 (bits `2 (s / 4)` of byte `8 + s % 4`).
fn q3_k(b: &[u8], out: &mut [f32; QK_K]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    let scale = |s: usize| -> i32 {
        let low = if s < 8 { sc[s] & 0xf } else { sc[s - 8] >> 4 };
        let high = (sc[8 + s % 4] >> (2 * (s / 4))) & 3;
        i32::from(low | (high << 4)) - 32
    };
    for (i, o) in out.iter_mut().enumerate() {
        let (half, c, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = i32::from((qs[32 * half + l] >> (2 * c)) & 3);
        let high = (hmask[l] >> (i / 32)) & 1;
        let q = low - if high == 0 { 4 } else { 0 };
        let dl = d * scale(i / 16) as f32;
        *o = dl * q as f32;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K super-block: `j < 4` in the
/// low 6 bits of bytes `j` and `j + 4`; `j >= 4` in the nibbles of byte `j + 4`, with the high
/// two bits in the top of bytes `j - 4` and `j`.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K (and Q5_K with `five`): 8 sub-blocks of 32. Element `64 p + 32 h + l` is the low
/// (`h = 0`) or high nibble of `qs[32 p + l]`, plus for Q5_K 16 times bit `2 p + h` of
/// `qh[l]`.
fn q45_k(b: &[u8], five: bool, out: &mut [f32; QK_K]) {
    let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
    let scales = &b[4..16];
    let (qh, qs) = if five {
        (&b[16..48], &b[48..176])
    } else {
        (&b[..0], &b[16..144])
    };
    for (i, o) in out.iter_mut().enumerate() {
        let (p, h, l) = (i / 64, (i % 64) / 32, i % 32);
        let mut q = (qs[32 * p + l] >> (4 * h)) & 0xf;
        if five && (qh[l] >> (2 * p + h)) & 1 == 1 {
            q += 16;
        }
        let (sc, m) = scale_min_k4(i / 32, scales);
        let (dl, ml) = (d * f32::from(sc), dmin * f32::from(m));
        *o = dl * f32::from(q) - ml;
    }
}

/// Q6_K: 16 sub-blocks of 16, i8 scales. In each half `n` of 128 elements, element
/// `32 c + l` takes its low nibble from `ql[64 n + l + 32 (c % 2)]` (low nibble for `c < 2`,
/// high for `c >= 2`) and its high two bits from bits `2 c..2 c + 2` of `qh[32 n + l]`.
fn q6_k(b: &[u8], out: &mut [f32; QK_K]) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (i, o) in out.iter_mut().enumerate() {
        let (n, c, l) = (i / 128, (i % 128) / 32, i % 32);
        let low = (ql[64 * n + l + 32 * (c % 2)] >> (4 * (c / 2))) & 0xf;
        let high = (qh[32 * n + l] >> (2 * c)) & 3;
        let q = i32::from(low | (high << 4)) - 32;
        let s = i32::from(sc[i / 16] as i8);
        *o = d * s as f32 * q as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Every dequantizer against gguf-py's on random blocks
    /// (tools/reference/gguf_dequant_golden.py), bit for bit.
    #[test]
    fn dequantize_matches_gguf_py() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/data/gguf_dequant_golden.json"))
                .unwrap();
        let types = v["types"].as_array().unwrap();
        assert_eq!(types.len(), 10);
        for t in types {
            let code = u32::try_from(t["code"].as_u64().unwrap()).unwrap();
            let ty = GgmlType::from_code(code).unwrap();
            assert_eq!(ty.name(), t["name"].as_str().unwrap());
            assert_eq!(ty.code(), code);
            let blocks = unhex(t["blocks"].as_str().unwrap());
            let want: Vec<u32> = unhex(t["values"].as_str().unwrap())
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let got = dequantize(ty, &blocks, want.len()).unwrap();
            let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
            let bad = got.iter().zip(&want).position(|(a, b)| a != b);
            assert_eq!(bad, None, "{ty:?}: first differing element");
            // A byte short is refused.
            assert!(dequantize(ty, &blocks[1..], want.len()).is_err());
        }
    }
}
