//! ggml's block formats: 32 weights per block with an f16 scale `d` (and an f16 min `m` for the
//! `_1` kinds), laid out byte for byte as ggml lays them out, so that a GGUF tensor is copied
//! as it is. A row of a block matrix is `cols / 32` consecutive blocks.
//!
//! | type | bytes | layout | weight `j` (0..32) |
//! |---|---:|---|---|
//! | `Q4_0` | 18 | `d`, `qs[16]` | `d * (q - 8)`, `q` the low nibble of `qs[j]` (`j < 16`) or the high nibble of `qs[j - 16]` |
//! | `Q4_1` | 20 | `d`, `m`, `qs[16]` | `d * q + m`, `q` as in `Q4_0` |
//! | `Q5_0` | 22 | `d`, `qh` (u32), `qs[16]` | `d * (q - 16)`, `q` the nibble as in `Q4_0` plus bit `j` of `qh` as its fifth bit |
//! | `Q5_1` | 24 | `d`, `m`, `qh` (u32), `qs[16]` | `d * q + m`, `q` as in `Q5_0` |
//! | `Q8_0` | 34 | `d`, `qs[32]` (i8) | `d * qs[j]` |
//!
//! `d` and `m` are widened to f32 and the products taken in f32 (one rounding each, no FMA):
//! ggml's and gguf-py's arithmetic, so a dequantized block equals theirs bit for bit.

/// Weights per block.
pub const BLOCK: usize = 32;

/// A ggml block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BlockType {
    /// 4-bit, scale only.
    Q4_0,
    /// 4-bit, scale and min.
    Q4_1,
    /// 5-bit, scale only.
    Q5_0,
    /// 5-bit, scale and min.
    Q5_1,
    /// 8-bit, scale only.
    Q8_0,
}

impl BlockType {
    /// Every block type, in ggml's code order.
    pub const ALL: [BlockType; 5] = [
        BlockType::Q4_0,
        BlockType::Q4_1,
        BlockType::Q5_0,
        BlockType::Q5_1,
        BlockType::Q8_0,
    ];

    /// Bytes of one block of [`BLOCK`] weights.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockType::Q4_0 => 18,
            BlockType::Q4_1 => 20,
            BlockType::Q5_0 => 22,
            BlockType::Q5_1 => 24,
            BlockType::Q8_0 => 34,
        }
    }

    /// ggml's type code (`GGML_TYPE_Q4_0` is 2, ...).
    pub const fn ggml_code(self) -> u32 {
        match self {
            BlockType::Q4_0 => 2,
            BlockType::Q4_1 => 3,
            BlockType::Q5_0 => 6,
            BlockType::Q5_1 => 7,
            BlockType::Q8_0 => 8,
        }
    }

    /// The block type of ggml type code `code`, if it is one of these.
    pub const fn from_ggml_code(code: u32) -> Option<BlockType> {
        Some(match code {
            2 => BlockType::Q4_0,
            3 => BlockType::Q4_1,
            6 => BlockType::Q5_0,
            7 => BlockType::Q5_1,
            8 => BlockType::Q8_0,
            _ => return None,
        })
    }

    /// ggml's name (`"q4_0"`, ...; lower case, as `--dtype` takes it).
    pub const fn name(self) -> &'static str {
        match self {
            BlockType::Q4_0 => "q4_0",
            BlockType::Q4_1 => "q4_1",
            BlockType::Q5_0 => "q5_0",
            BlockType::Q5_1 => "q5_1",
            BlockType::Q8_0 => "q8_0",
        }
    }

    /// `true` for the kinds with a min (`Q4_1`, `Q5_1`): `w = d * q + m`, `q >= 0`.
    pub const fn has_min(self) -> bool {
        matches!(self, BlockType::Q4_1 | BlockType::Q5_1)
    }

    /// Bits per weight of the stored values (4, 5 or 8).
    pub const fn bits(self) -> u32 {
        match self {
            BlockType::Q4_0 | BlockType::Q4_1 => 4,
            BlockType::Q5_0 | BlockType::Q5_1 => 5,
            BlockType::Q8_0 => 8,
        }
    }

    /// What the integer of a `_0` kind is offset by (`w = d * (q - offset)`): 8, 16, or 0
    /// for `Q8_0` (signed) and the `_1` kinds (no offset).
    pub const fn offset(self) -> i32 {
        match self {
            BlockType::Q4_0 => 8,
            BlockType::Q5_0 => 16,
            _ => 0,
        }
    }

    /// Bytes of a `rows x cols` matrix of this type: `None` when `cols` is not a multiple of
    /// [`BLOCK`] or the size overflows.
    pub const fn matrix_bytes(self, rows: usize, cols: usize) -> Option<usize> {
        if !cols.is_multiple_of(BLOCK) {
            return None;
        }
        match (cols / BLOCK).checked_mul(self.block_bytes()) {
            Some(row) => row.checked_mul(rows),
            None => None,
        }
    }

    /// The scale `d` and min `m` (0 for the `_0` kinds) of block `b`
    /// (`b.len() == block_bytes()`).
    #[inline(always)]
    pub fn scale_min(self, b: &[u8]) -> (f32, f32) {
        let d = f16_at(b, 0);
        let m = if self.has_min() { f16_at(b, 2) } else { 0.0 };
        (d, m)
    }

    /// The 32 integers of block `b` as stored, the `_0` offset already taken off (`Q4_0`:
    /// -8..=7, `Q5_0`: -16..=15, `Q8_0`: -128..=127; `Q4_1`: 0..=15, `Q5_1`: 0..=31), so that
    /// `w[j] = d * q[j] + m`.
    #[inline(always)]
    pub fn ints(self, b: &[u8], q: &mut [i8; BLOCK]) {
        match self {
            BlockType::Q8_0 => {
                for (o, &v) in q.iter_mut().zip(&b[2..2 + BLOCK]) {
                    *o = v as i8;
                }
            }
            BlockType::Q4_0 | BlockType::Q4_1 => {
                let qs = &b[b.len() - 16..];
                let off = self.offset() as u8;
                for j in 0..16 {
                    q[j] = (qs[j] & 0x0f).wrapping_sub(off) as i8;
                    q[j + 16] = (qs[j] >> 4).wrapping_sub(off) as i8;
                }
            }
            BlockType::Q5_0 | BlockType::Q5_1 => {
                let h = if self.has_min() { 4 } else { 2 };
                let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
                let qs = &b[h + 4..h + 20];
                let off = self.offset() as u8;
                for j in 0..16 {
                    let lo = (qs[j] & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
                    let hi = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
                    q[j] = lo.wrapping_sub(off) as i8;
                    q[j + 16] = hi.wrapping_sub(off) as i8;
                }
            }
        }
    }

    /// Block `b` dequantized: `out[j] = d * q[j]` (`_0` kinds, `q` offset as in
    /// [`BlockType::ints`]) or `d * q[j] + m` (`_1` kinds), in f32 without FMA.
    #[inline]
    pub fn dequantize(self, b: &[u8], out: &mut [f32]) {
        debug_assert_eq!(b.len(), self.block_bytes());
        debug_assert_eq!(out.len(), BLOCK);
        let mut q = [0i8; BLOCK];
        self.ints(b, &mut q);
        let (d, m) = self.scale_min(b);
        if self.has_min() {
            for (o, &v) in out.iter_mut().zip(&q) {
                *o = d * v as f32 + m;
            }
        } else {
            for (o, &v) in out.iter_mut().zip(&q) {
                *o = d * v as f32;
            }
        }
    }

    /// Round-to-nearest quantization of 32 weights into one block `out`
    /// (`out.len() == block_bytes()`), as ggml's reference quantizers do it: `_0` kinds take
    /// the scale from the value of largest magnitude (`d = v / -8`, `/ -16`, or `max|v| / 127`
    /// for `Q8_0`), `_1` kinds span `[min, max]` (`d = (max - min) / 15` or `/ 31`, `m = min`);
    /// `d` and `m` are stored as f16. Non-finite inputs give meaningless blocks (callers refuse
    /// them first).
    pub fn quantize(self, w: &[f32], out: &mut [u8]) {
        debug_assert_eq!(w.len(), BLOCK);
        debug_assert_eq!(out.len(), self.block_bytes());
        let mut q = [0u8; BLOCK];
        let (d, m) = match self {
            BlockType::Q8_0 => {
                let amax = w.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for (o, &v) in q.iter_mut().zip(w) {
                    *o = round_half_away(v * id).clamp(-127.0, 127.0) as i8 as u8;
                }
                (d, 0.0)
            }
            BlockType::Q4_0 | BlockType::Q5_0 => {
                let max = w
                    .iter()
                    .fold(0.0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let (div, top) = if self == BlockType::Q4_0 {
                    (-8.0, 15.0)
                } else {
                    (-16.0, 31.0)
                };
                let d = max / div;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let off = self.offset() as f32 + 0.5;
                for (o, &v) in q.iter_mut().zip(w) {
                    *o = trunc_clamp(v * id + off, top);
                }
                (d, 0.0)
            }
            BlockType::Q4_1 | BlockType::Q5_1 => {
                let (lo, hi) = w
                    .iter()
                    .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
                let top = if self == BlockType::Q4_1 { 15.0 } else { 31.0 };
                let d = (hi - lo) / top;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                for (o, &v) in q.iter_mut().zip(w) {
                    *o = trunc_clamp((v - lo) * id + 0.5, top);
                }
                (d, lo)
            }
        };
        self.pack(&q, d, m, out);
    }

    /// Writes block `out` from its stored integers `q` (`0..2^bits`, the `_0` offset
    /// included; `Q8_0`: the i8 bits), scale `d` and min `m` (ignored by the `_0` kinds),
    /// `d` and `m` rounded to f16.
    pub fn pack(self, q: &[u8; BLOCK], d: f32, m: f32, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.block_bytes());
        out[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        let mut at = 2;
        if self.has_min() {
            out[2..4].copy_from_slice(&half::f16::from_f32(m).to_le_bytes());
            at = 4;
        }
        match self {
            BlockType::Q8_0 => out[2..].copy_from_slice(q),
            BlockType::Q4_0 | BlockType::Q4_1 => {
                for j in 0..16 {
                    out[at + j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
                }
            }
            BlockType::Q5_0 | BlockType::Q5_1 => {
                let mut qh = 0u32;
                for j in 0..16 {
                    qh |= (((q[j] >> 4) & 1) as u32) << j;
                    qh |= (((q[j + 16] >> 4) & 1) as u32) << (j + 16);
                    out[at + 4 + j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
                }
                out[at..at + 4].copy_from_slice(&qh.to_le_bytes());
            }
        }
    }

    /// Weight `j` (< [`BLOCK`]) of block `b`, equal to `dequantize(b)[j]`.
    #[inline]
    pub fn element(self, b: &[u8], j: usize) -> f32 {
        let (d, m) = self.scale_min(b);
        let q = match self {
            BlockType::Q8_0 => b[2 + j] as i8 as i32,
            BlockType::Q4_0 | BlockType::Q4_1 => {
                let v = b[b.len() - 16 + (j & 15)];
                (if j < 16 { v & 0x0f } else { v >> 4 }) as i32 - self.offset()
            }
            BlockType::Q5_0 | BlockType::Q5_1 => {
                let h = if self.has_min() { 4 } else { 2 };
                let qh = u32::from_le_bytes([b[h], b[h + 1], b[h + 2], b[h + 3]]);
                let v = b[h + 4 + (j & 15)];
                let lo = if j < 16 { v & 0x0f } else { v >> 4 };
                (lo as i32 | (((qh >> j) & 1) << 4) as i32) - self.offset()
            }
        };
        if self.has_min() {
            d * q as f32 + m
        } else {
            d * q as f32
        }
    }
}

/// `round(v)`, halves away from zero (C's `roundf`), without std.
#[inline]
fn round_half_away(v: f32) -> f32 {
    let t = (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32;
    t as f32
}

/// `min(top, (int)v)` as ggml's quantizers take it (`v >= 0` up to rounding; saturating).
#[inline]
fn trunc_clamp(v: f32, top: f32) -> u8 {
    (v as i32).clamp(0, top as i32) as u8
}

/// The little-endian f16 at byte `i` of `b`, widened to f32.
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    half::f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ty: BlockType, seed: u32) -> [u8; 34] {
        let mut b = [0u8; 34];
        let mut s = seed;
        for v in b.iter_mut() {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            *v = (s >> 24) as u8;
        }
        b[..2].copy_from_slice(&half::f16::from_f32(0.0123).to_le_bytes());
        if ty.has_min() {
            b[2..4].copy_from_slice(&half::f16::from_f32(-0.05).to_le_bytes());
        }
        b
    }

    #[test]
    fn element_equals_dequantize_and_ints_are_in_range() {
        for ty in BlockType::ALL {
            for seed in 0..20 {
                let b = block(ty, seed);
                let b = &b[..ty.block_bytes()];
                let mut out = [0f32; BLOCK];
                ty.dequantize(b, &mut out);
                let mut q = [0i8; BLOCK];
                ty.ints(b, &mut q);
                let (lo, hi) = match ty {
                    BlockType::Q4_0 => (-8, 7),
                    BlockType::Q4_1 => (0, 15),
                    BlockType::Q5_0 => (-16, 15),
                    BlockType::Q5_1 => (0, 31),
                    BlockType::Q8_0 => (-128, 127),
                };
                for j in 0..BLOCK {
                    assert_eq!(ty.element(b, j).to_bits(), out[j].to_bits(), "{ty:?} {j}");
                    assert!((lo..=hi).contains(&(q[j] as i32)), "{ty:?} {j} {}", q[j]);
                }
            }
        }
    }

    #[test]
    fn q4_0_and_q5_1_layouts_follow_ggml() {
        // Q4_0: element 3 is the low nibble of qs[3], element 19 its high nibble.
        let mut b = [0u8; 18];
        b[..2].copy_from_slice(&half::f16::from_f32(2.0).to_le_bytes());
        b[2 + 3] = 0xA1;
        let mut out = [0f32; BLOCK];
        BlockType::Q4_0.dequantize(&b, &mut out);
        assert_eq!(out[3], 2.0 * (1 - 8) as f32);
        assert_eq!(out[19], 2.0 * (10 - 8) as f32);
        // Q5_1: bit j of qh is the fifth bit of element j, bit j + 16 of element j + 16.
        let mut b = [0u8; 24];
        b[..2].copy_from_slice(&half::f16::from_f32(1.0).to_le_bytes());
        b[2..4].copy_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        b[4..8].copy_from_slice(&((1u32 << 2) | (1u32 << 18)).to_le_bytes());
        b[8 + 2] = 0x31;
        BlockType::Q5_1.dequantize(&b, &mut out);
        assert_eq!(out[2], 17.0 + 0.5);
        assert_eq!(out[18], 19.0 + 0.5);
        assert_eq!(out[0], 0.5);
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        for ty in BlockType::ALL {
            for seed in 0..50u32 {
                let w: [f32; BLOCK] = core::array::from_fn(|j| {
                    let x = (seed * 31 + j as u32).wrapping_mul(2_654_435_761) >> 8;
                    (x as f32 / (1u32 << 24) as f32 - 0.5) * (1.0 + seed as f32)
                });
                let mut b = [0u8; 34];
                let b = &mut b[..ty.block_bytes()];
                ty.quantize(&w, b);
                let mut out = [0f32; BLOCK];
                ty.dequantize(b, &mut out);
                let (d, _) = ty.scale_min(b);
                for j in 0..BLOCK {
                    // Half a step (a whole one on the clipped side of Q4_0 / Q5_0, whose
                    // range is -8..=7 or -16..=15 steps), plus the f16 rounding of d and m.
                    let step = if ty.offset() > 0 { 1.0 } else { 0.5 };
                    let tol = d.abs() * step + w[j].abs() * 2e-3 + (1.0 + seed as f32) * 2e-3;
                    assert!(
                        (out[j] - w[j]).abs() <= tol,
                        "{ty:?} {seed} {j}: {} {}",
                        out[j],
                        w[j]
                    );
                }
                let mut again = [0u8; 34];
                let again = &mut again[..ty.block_bytes()];
                let mut q = [0i8; BLOCK];
                ty.ints(b, &mut q);
                let stored: [u8; BLOCK] =
                    core::array::from_fn(|j| (q[j] as i32 + ty.offset()) as u8);
                let (d, m) = ty.scale_min(b);
                ty.pack(&stored, d, m, again);
                assert_eq!(&*again, &*b, "{ty:?}: pack(ints(b)) == b");
            }
        }
    }

    #[test]
    fn matrix_bytes_needs_whole_blocks() {
        assert_eq!(BlockType::Q4_1.matrix_bytes(3, 64), Some(3 * 2 * 20));
        assert_eq!(BlockType::Q8_0.matrix_bytes(1, 33), None);
        assert_eq!(BlockType::Q8_0.matrix_bytes(usize::MAX, 64), None);
    }
}
