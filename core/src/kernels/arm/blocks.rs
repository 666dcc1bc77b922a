//! Arm DSP-extension kernels for block weights (`Q8_0`, `Q4_0`, `Q4_1`) times int8
//! activations: [`arm_dsp_matmul_q8_blocks`], the bits of the generic
//! [`crate::kernels::matmul_q8_tokens`].
//!
//! Per token, the activations of up to [`SEG_BLOCKS`] weight blocks are sign-extended once
//! into `SXTB16` halfword pairs (`[x0 x2] [x1 x3]` per 4 columns, as `arm_dsp_matvec_i8_i8`
//! does), each block's 16 words followed by what its float step reads (the activation
//! block's scale; the block's sum of activations for `Q4_0`, or that sum times the scale for
//! `Q4_1`). Then one inline-`asm!` loop per weight row runs over its blocks with the float
//! sum in a VFP register:
//! - `Q8_0` (34 bytes): `LDRH` + `VMOV` + `VCVTB` (the f16 scale), per 8 columns `LDM` of 4
//!   activation words, 2 `LDR` (unaligned: the block's integers sit at offset 2), 4 `SXTB16`,
//!   4 `SMLAD`; `ADD`, the float step (`VMOV`, `VCVT`, `VLDM`, 2 `VMUL`, `VADD`), `CMP` +
//!   `BNE`: 56 instructions per 32 MACs (1.75);
//! - `Q4_0` / `Q4_1` (18 / 20 bytes): per 4 bytes of nibbles (8 columns) `LDM` of 4
//!   activation words (laid out as the nibbles pair them: columns `j..j + 4` and
//!   `j + 16..j + 20`), `LDR`, 2 `AND` (low and high nibbles), 4 `UXTB16`, 4 `SMLAD`; `Q4_0`
//!   takes the offset off the exact sum (`dot - 8 * sum(x)`), `Q4_1` converts `d` and `m`
//!   from one word (`VCVTB`, `VCVTT`) and adds `sum(x) * s * m`: 62 and 65 instructions per
//!   32 MACs (1.94, 2.03).
//!
//! The float steps are the generic ones in the generic order (`v += (dot as f32 * s) * d`,
//! then `v += (sum as f32 * s) * m`, `VMUL` and `VADD`: no fused multiply-add), and the f16
//! to f32 conversion is exact, so every output has the generic bits. The loops save and
//! restore the VFP registers they use (`VPUSH`/`VPOP` once per row): stable rustc has no VFP
//! register operands for `asm!` (its `vfp2` feature is unstable on Arm). Built for hard-float
//! targets (`target_abi = "eabihf"`: the VFP registers); other block types (`Q5_0`, `Q5_1`)
//! and other builds take the generic kernel.
//!
//! Measured figures: docs/bench-targets.md.

use core::arch::asm;

use super::q8::{sxtb16_pair, word};
use crate::kernels::blocks::{BLOCK, BlockType};
use crate::kernels::generic;
use crate::kernels::matrix::{Matrix, Weights};
use crate::kernels::q8::{Q8_BLOCK, Q8Rows, q8_blocks};

/// Weight blocks whose activations are expanded at a time (1024 columns: a stack buffer of
/// 18 words per block, 2.3 KiB).
pub const SEG_BLOCKS: usize = 32;

/// Words of one expanded activation block: 16 halfword-pair words, the scale, and the sum
/// (`Q4_0`: `sum(x)` as i32; `Q4_1`: `sum(x) as f32 * s`; `Q8_0`: none).
const fn block_words(ty: BlockType) -> usize {
    match ty {
        BlockType::Q8_0 => 17,
        _ => 18,
    }
}

/// Most words of one expanded block.
const MAX_BLOCK_WORDS: usize = 18;

/// Low nibbles of 4 bytes.
const NIBBLES: u32 = 0x0f0f_0f0f;

/// Expands the activations `x` (whole blocks of [`BLOCK`]) of one token for the row loops of
/// `ty`; `scale(b)` is the scale of the activation block that holds block `b`.
fn expand(ty: BlockType, x: &[i8], scale: impl Fn(usize) -> f32, out: &mut [u32]) {
    let bw = block_words(ty);
    for (b, (xb, o)) in x
        .chunks_exact(BLOCK)
        .zip(out.chunks_exact_mut(bw))
        .enumerate()
    {
        let s = scale(b);
        if ty == BlockType::Q8_0 {
            for k in 0..8 {
                (o[2 * k], o[2 * k + 1]) = sxtb16_pair(word(&xb[4 * k..]));
            }
            o[16] = s.to_bits();
            continue;
        }
        // Word k of the nibbles holds columns 4k..4k + 4 (low) and 16 + 4k.. (high).
        for k in 0..4 {
            (o[4 * k], o[4 * k + 1]) = sxtb16_pair(word(&xb[4 * k..]));
            (o[4 * k + 2], o[4 * k + 3]) = sxtb16_pair(word(&xb[16 + 4 * k..]));
        }
        let sum = xb.iter().fold(0i32, |a, &v| a + v as i32);
        if ty == BlockType::Q4_0 {
            (o[16], o[17]) = (sum as u32, s.to_bits());
        } else {
            (o[16], o[17]) = (s.to_bits(), (sum as f32 * s).to_bits());
        }
    }
}

/// `Q8_0`: 8 columns at byte offset `$o` of the block's integers (r0), activation words
/// r2..r5 from r1; weight word r8, scratch r9, the sum in lr (`$first`: starts it).
macro_rules! q8_0_cols8 {
    ($o0:literal, $o1:literal, $first:literal) => {
        concat!(
            "ldm r1!, {{r2, r3, r4, r5}}\n",
            "ldr r8, [r0, #",
            $o0,
            "]\n",
            "sxtb16 r9, r8\n",
            "sxtb16 r8, r8, ror #8\n",
            $first,
            "smlad lr, r8, r3, lr\n",
            "ldr r8, [r0, #",
            $o1,
            "]\n",
            "sxtb16 r9, r8\n",
            "sxtb16 r8, r8, ror #8\n",
            "smlad lr, r9, r4, lr\n",
            "smlad lr, r8, r5, lr\n",
        )
    };
}

/// `Q4_0` / `Q4_1`: the nibble word at byte offset `$o` of the block's integers (r0), its
/// activation words r2..r5 from r1; low nibbles r8, high r9 (mask in r11), scratch r10, the
/// sum in lr (`$first`: starts it).
macro_rules! q4_word {
    ($o:literal, $first:literal) => {
        concat!(
            "ldm r1!, {{r2, r3, r4, r5}}\n",
            "ldr r8, [r0, #",
            $o,
            "]\n",
            "and r9, r11, r8, lsr #4\n",
            "and r8, r8, r11\n",
            "uxtb16 r10, r8, ror #8\n",
            "uxtb16 r8, r8\n",
            $first,
            "smlad lr, r10, r3, lr\n",
            "uxtb16 r10, r9, ror #8\n",
            "uxtb16 r9, r9\n",
            "smlad lr, r9, r4, lr\n",
            "smlad lr, r10, r5, lr\n",
        )
    };
}

/// `v` plus the blocks of one weight row `row` (`Q8_0`, whole blocks) times the expanded
/// activations `xs`, block by block in the generic order.
#[inline(always)]
fn row_q8_0(row: &[u8], xs: &[u32], v: f32) -> f32 {
    let nb = row.len() / BlockType::Q8_0.block_bytes();
    assert!(nb >= 1 && xs.len() >= nb * block_words(BlockType::Q8_0));
    let vb: u32;
    // SAFETY: the loop reads each of the `nb` blocks of `row` once (34 bytes each, unaligned
    // `LDRH`/`LDR` are allowed on ARMv7-M) and 17 words of `xs` per block (word-aligned: a
    // u32 slice), both in bounds (asserted above); it writes only the core registers it names and
    // restores s0-s5 (stable rustc offers no VFP register operands), its stack use being that
    // save.
    unsafe {
        asm!(
            "vpush {{s0-s5}}",
            "vmov s0, r10",
            "2:",
            "ldrh r10, [r0], #2",
            "vmov s1, r10",
            "vcvtb.f32.f16 s1, s1",
            q8_0_cols8!("0", "4", "smuad lr, r9, r2\n"),
            q8_0_cols8!("8", "12", "smlad lr, r9, r2, lr\n"),
            q8_0_cols8!("16", "20", "smlad lr, r9, r2, lr\n"),
            q8_0_cols8!("24", "28", "smlad lr, r9, r2, lr\n"),
            "add r0, r0, #32",
            "vmov s2, lr",
            "vcvt.f32.s32 s2, s2",
            "vldmia r1!, {{s3}}",
            "vmul.f32 s2, s2, s3",
            "vmul.f32 s2, s2, s1",
            "vadd.f32 s0, s0, s2",
            "cmp r0, r12",
            "bne 2b",
            "vmov r10, s0",
            "vpop {{s0-s5}}",
            inout("r0") row.as_ptr() => _,
            inout("r1") xs.as_ptr() => _,
            in("r12") row.as_ptr().add(row.len()),
            inout("r10") v.to_bits() => vb,
            out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            out("r8") _, out("r9") _, out("lr") _,
            options(readonly),
        );
    }
    f32::from_bits(vb)
}

/// As [`row_q8_0`] for `Q4_0` blocks.
#[inline(always)]
fn row_q4_0(row: &[u8], xs: &[u32], v: f32) -> f32 {
    let nb = row.len() / BlockType::Q4_0.block_bytes();
    assert!(nb >= 1 && xs.len() >= nb * block_words(BlockType::Q4_0));
    let vb: u32;
    // SAFETY: the loop reads each of the `nb` blocks of `row` once (18 bytes each, unaligned
    // loads are allowed on ARMv7-M) and 18 words of `xs` per block (word-aligned), in bounds
    // (asserted above); it writes only the core registers it names and
    // restores s0-s5 (stable rustc offers no VFP register operands), its stack use being that
    // save.
    unsafe {
        asm!(
            "vpush {{s0-s5}}",
            "vmov s0, r10",
            "2:",
            "ldrh r10, [r0], #2",
            "vmov s1, r10",
            "vcvtb.f32.f16 s1, s1",
            q4_word!("0", "smuad lr, r8, r2\n"),
            q4_word!("4", "smlad lr, r8, r2, lr\n"),
            q4_word!("8", "smlad lr, r8, r2, lr\n"),
            q4_word!("12", "smlad lr, r8, r2, lr\n"),
            "add r0, r0, #16",
            // The stored nibbles are q + 8: sum (q + 8) x - 8 sum x.
            "ldr r10, [r1], #4",
            "sub lr, lr, r10, lsl #3",
            "vmov s2, lr",
            "vcvt.f32.s32 s2, s2",
            "vldmia r1!, {{s3}}",
            "vmul.f32 s2, s2, s3",
            "vmul.f32 s2, s2, s1",
            "vadd.f32 s0, s0, s2",
            "cmp r0, r12",
            "bne 2b",
            "vmov r10, s0",
            "vpop {{s0-s5}}",
            inout("r0") row.as_ptr() => _,
            inout("r1") xs.as_ptr() => _,
            in("r11") NIBBLES,
            in("r12") row.as_ptr().add(row.len()),
            inout("r10") v.to_bits() => vb,
            out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            out("r8") _, out("r9") _, out("lr") _,
            options(readonly),
        );
    }
    f32::from_bits(vb)
}

/// As [`row_q8_0`] for `Q4_1` blocks.
#[inline(always)]
fn row_q4_1(row: &[u8], xs: &[u32], v: f32) -> f32 {
    let nb = row.len() / BlockType::Q4_1.block_bytes();
    assert!(nb >= 1 && xs.len() >= nb * block_words(BlockType::Q4_1));
    let vb: u32;
    // SAFETY: the loop reads each of the `nb` blocks of `row` once (20 bytes each, unaligned
    // loads are allowed on ARMv7-M) and 18 words of `xs` per block (word-aligned), in bounds
    // (asserted above); it writes only the core registers it names and
    // restores s0-s5 (stable rustc offers no VFP register operands), its stack use being that
    // save.
    unsafe {
        asm!(
            "vpush {{s0-s5}}",
            "vmov s0, r10",
            "2:",
            // d (low half) and m (high half) in one word.
            "ldr r10, [r0], #4",
            "vmov s1, r10",
            "vcvtt.f32.f16 s5, s1",
            "vcvtb.f32.f16 s1, s1",
            q4_word!("0", "smuad lr, r8, r2\n"),
            q4_word!("4", "smlad lr, r8, r2, lr\n"),
            q4_word!("8", "smlad lr, r8, r2, lr\n"),
            q4_word!("12", "smlad lr, r8, r2, lr\n"),
            "add r0, r0, #16",
            "vmov s2, lr",
            "vcvt.f32.s32 s2, s2",
            // The scale and sum(x) * scale.
            "vldmia r1!, {{s3, s4}}",
            "vmul.f32 s2, s2, s3",
            "vmul.f32 s2, s2, s1",
            "vadd.f32 s0, s0, s2",
            "vmul.f32 s4, s4, s5",
            "vadd.f32 s0, s0, s4",
            "cmp r0, r12",
            "bne 2b",
            "vmov r10, s0",
            "vpop {{s0-s5}}",
            inout("r0") row.as_ptr() => _,
            inout("r1") xs.as_ptr() => _,
            in("r11") NIBBLES,
            in("r12") row.as_ptr().add(row.len()),
            inout("r10") v.to_bits() => vb,
            out("r2") _, out("r3") _, out("r4") _, out("r5") _,
            out("r8") _, out("r9") _, out("lr") _,
            options(readonly),
        );
    }
    f32::from_bits(vb)
}

/// Every row's segment `(at, len)` (bytes from the row start) of `data` (`rb` bytes a row)
/// through the row loop `f` with the expanded activations `xe`, from `+0.0` (`first`) or
/// from the running sums in `y`.
#[inline(always)]
fn rows_of(
    data: &[u8],
    (at, len): (usize, usize),
    rb: usize,
    xe: &[u32],
    first: bool,
    y: &mut [f32],
    f: impl Fn(&[u8], &[u32], f32) -> f32,
) {
    for (row, yr) in data.chunks_exact(rb).zip(y.iter_mut()) {
        // The running sum from the previous segment (exact: stored and reloaded).
        let v = if first { 0.0 } else { *yr };
        *yr = f(&row[at..at + len], xe, v);
    }
}

/// DSP [`crate::kernels::matmul_q8_tokens`] for block weights: the same bits. `Q8_0`, `Q4_0`
/// and `Q4_1` weights run the SMLAD row loops (see the module doc); other weights, other
/// block types and inconsistent shapes take the generic kernel. Shapes as there. Stack:
/// [`SEG_BLOCKS`] expanded blocks (2.3 KiB); rows longer than that many blocks go by
/// segments, each output's running sum kept in `y` between them (exactly).
pub fn arm_dsp_matmul_q8_blocks(
    w: &Matrix<'_>,
    x: Q8Rows<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let Q8Rows { q: xq, s: xs, n } = x;
    let (rows, cols) = (w.rows(), w.cols());
    let nb = q8_blocks(cols);
    let (ty, data) = match w.weights() {
        Weights::Blocks { ty, data }
            if matches!(ty, BlockType::Q8_0 | BlockType::Q4_0 | BlockType::Q4_1)
                && cols > 0
                && cols.is_multiple_of(BLOCK)
                && xq.len() == n * cols
                && xs.len() == n * nb
                && y.len() == n * rows
                && bias.is_none_or(|b| b.len() == rows)
                && ty.matrix_bytes(rows, cols) == Some(data.len()) =>
        {
            (ty, data)
        }
        _ => return generic::matmul_q8_tokens(w, x, bias, y),
    };
    let (bb, bw, wb) = (ty.block_bytes(), block_words(ty), cols / BLOCK);
    let rb = wb * bb;
    let mut buf = [0u32; SEG_BLOCKS * MAX_BLOCK_WORDS];
    for i in 0..n {
        let (xi, si) = (&xq[i * cols..(i + 1) * cols], &xs[i * nb..(i + 1) * nb]);
        let yi = &mut y[i * rows..(i + 1) * rows];
        let mut b0 = 0;
        while b0 < wb {
            let len = SEG_BLOCKS.min(wb - b0);
            let xe = &mut buf[..len * bw];
            let seg = &xi[b0 * BLOCK..(b0 + len) * BLOCK];
            expand(ty, seg, |b| si[(b0 + b) * BLOCK / Q8_BLOCK], xe);
            let xe = &buf[..len * bw];
            let seg = (b0 * bb, len * bb);
            match ty {
                BlockType::Q8_0 => rows_of(data, seg, rb, xe, b0 == 0, yi, row_q8_0),
                BlockType::Q4_0 => rows_of(data, seg, rb, xe, b0 == 0, yi, row_q4_0),
                _ => rows_of(data, seg, rb, xe, b0 == 0, yi, row_q4_1),
            }
            b0 += len;
        }
        for (r, yr) in yi.iter_mut().enumerate() {
            *yr = generic::q8_token_out(*yr, 1.0, bias.map(|b| b[r]));
        }
    }
}
