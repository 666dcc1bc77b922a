//! Arm DSP-extension kernels (ARMv7E-M: Cortex-M4, M7; feature `arm-dsp` or
//! `target_feature = "dsp"`): exact int8 dot products with the dual 16-bit multiply-accumulate
//! `SMLAD`, two int8 lanes sign-extended to 16 bits per `SXTB16`.
//!
//! Every function returns the same value as its generic counterpart bit for bit (the i32 sums
//! are exact); the firmware bin `kernels` checks that in QEMU on seeded vectors (`cargo xtask bench-target`),
//! since the host cannot run this code.
//!
//! The inner loops are inline `asm!` (the `core::arch::arm` DSP intrinsics are unstable), over
//! fixed registers because `LDM` needs an ascending register list:
//! - [`arm_dsp_dot_i8_i8`], two raw int8 vectors: per 16 elements 3 `LDM` (16 bytes of `a`, 2
//!   x 8 of `b`), 16 `SXTB16` (even and odd bytes of each word), 8 `SMLAD`, `CMP` + `BNE`:
//!   29 instructions, 1.81 per multiply-accumulate;
//! - [`arm_dsp_matvec_i8_i8`], a matrix times one int8 vector: the vector is sign-extended
//!   once into `[x0 x2] [x1 x3]` halfword pairs (a stack buffer of [`DSP_SEGMENT`] elements,
//!   2 bytes each), so a weight row costs per 32 elements 8 `LDM`, 16 `SXTB16`, 16 `SMLAD`,
//!   `CMP` + `BNE`: 42 instructions, 1.31 per multiply-accumulate (CMSIS-NN's layout).
//!
//! `Kernels::Fast`'s int8 product in the model (one activation scale per token and block of 64
//! columns, [`crate::kernels::generic::matmul_q8_tokens`]) takes its exact block dots from [`arm_dsp_dot_i8_i8`].
//!
//! Measured figures: docs/bench-targets.md.

use crate::kernels::generic::dot_i8_i8;
use core::arch::asm;

// The unrolled steps of the loops below, as asm template text (fixed registers: see each
// loop's operands).

/// [`arm_dsp_dot_i8_i8`]: the word of `a` in `$a` and of `b` in `$b` (both consumed), r10
/// and r11 scratch, the sum in lr.
macro_rules! dot_word {
    ($a:literal, $b:literal) => {
        concat!(
            "sxtb16 r10, ",
            $a,
            ", ror #8\n",
            "sxtb16 ",
            $a,
            ", ",
            $a,
            "\n",
            "sxtb16 r11, ",
            $b,
            "\n",
            "sxtb16 ",
            $b,
            ", ",
            $b,
            ", ror #8\n",
            "smlad lr, ",
            $a,
            ", r11, lr\n",
            "smlad lr, r10, ",
            $b,
            ", lr\n",
        )
    };
}

/// [`arm_dsp_matvec_i8_i8`]: 8 columns, weights from r0 (r2, r3), halfword pairs from r1
/// (r4, r5, r8, r9), r10 scratch, the sum in lr.
macro_rules! matvec_8 {
    () => {
        concat!(
            "ldm r0!, {{r2, r3}}\n",
            "ldm r1!, {{r4, r5, r8, r9}}\n",
            "sxtb16 r10, r2\n",
            "sxtb16 r2, r2, ror #8\n",
            "smlad lr, r10, r4, lr\n",
            "smlad lr, r2, r5, lr\n",
            "sxtb16 r10, r3\n",
            "sxtb16 r3, r3, ror #8\n",
            "smlad lr, r10, r8, lr\n",
            "smlad lr, r3, r9, lr\n",
        )
    };
}

/// Elements of the activation vector [`arm_dsp_matvec_i8_i8`] sign-extends at a time (its
/// stack buffer: 2 bytes per element, 2 KiB).
pub const DSP_SEGMENT: usize = 1024;

/// `[x0, x2]` and `[x1, x3]` (low halfword first) of the 4 int8 lanes of `w`, sign-extended.
#[inline(always)]
pub(super) fn sxtb16_pair(w: u32) -> (u32, u32) {
    let (even, odd): (u32, u32);
    // SAFETY: register-only arithmetic (ARMv7E-M DSP extension, which the cfg of this module
    // requires).
    unsafe {
        asm!(
            "sxtb16 {e}, {w}",
            "sxtb16 {o}, {w}, ror #8",
            w = in(reg) w,
            // Written before `w` is read again: not `lateout`.
            e = out(reg) even,
            o = lateout(reg) odd,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (even, odd)
}

/// Exact `sum a[i] * b[i]` over 4 int8 lanes packed in `a` and `b` (little-endian words).
#[inline(always)]
fn dot4_words(a: u32, b: u32) -> i32 {
    let s: i32;
    // SAFETY: register-only arithmetic (DSP extension). SMUAD/SMLAD only set the Q flag,
    // which nothing reads.
    unsafe {
        asm!(
            "sxtb16 {t}, {a}",
            "sxtb16 {a}, {a}, ror #8",
            "sxtb16 {u}, {b}",
            "sxtb16 {b}, {b}, ror #8",
            "smuad {t}, {t}, {u}",
            "smlad {t}, {a}, {b}, {t}",
            a = inout(reg) a => _,
            b = inout(reg) b => _,
            t = out(reg) s,
            u = out(reg) _,
            options(pure, nomem, nostack),
        );
    }
    s
}

/// The little-endian word of the 4 int8 values `p[..4]`.
#[inline(always)]
pub(super) fn word(p: &[i8]) -> u32 {
    u32::from_le_bytes([p[0] as u8, p[1] as u8, p[2] as u8, p[3] as u8])
}

/// Exact `sum a[i] * b[i]` of two int8 slices of equal length (elements) in i32: the same
/// value as [`dot_i8_i8`] (exact for `len <= 131072`; `-128` allowed anywhere). Any
/// alignment; the fast loop needs `a` and `b` at the same offset modulo 4 (the bulk of the
/// work then runs 16 elements per iteration, 1.81 instructions per element), else it takes
/// one unaligned word of each per 4 elements.
pub fn arm_dsp_dot_i8_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    // Scalar head up to a word boundary of `a`.
    let head = ((a.as_ptr() as usize).wrapping_neg() & 3).min(n);
    let mut acc = if head > 0 {
        dot_i8_i8(&a[..head], &b[..head])
    } else {
        0
    };
    let (a, b) = (&a[head..], &b[head..]);
    let mut done = 0;
    if (b.as_ptr() as usize) & 3 == 0 && a.len() >= 16 {
        let blocks = a.len() / 16;
        done = blocks * 16;
        // SAFETY: `a` and `b` are word-aligned (checked above) and hold `done` bytes, which
        // the loop reads exactly once, 16 at a time, from the start; it writes only the
        // registers it names (all caller-saved or declared clobbered).
        unsafe {
            asm!(
                "2:",
                "ldm r0!, {{r2, r3, r4, r5}}",
                "ldm r1!, {{r8, r9}}",
                dot_word!("r2", "r8"),
                dot_word!("r3", "r9"),
                "ldm r1!, {{r8, r9}}",
                dot_word!("r4", "r8"),
                dot_word!("r5", "r9"),
                "cmp r0, r12",
                "bne 2b",
                inout("r0") a.as_ptr() => _,
                inout("r1") b.as_ptr() => _,
                in("r12") a.as_ptr().add(done),
                inout("lr") acc,
                out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack, readonly),
            );
        }
    }
    // Words (unaligned loads are fine on ARMv7-M), then the last 0 to 3 elements.
    if done == a.len() {
        return acc;
    }
    let (a, b) = (&a[done..], &b[done..]);
    let words = a.len() & !3;
    for (wa, wb) in a[..words].chunks_exact(4).zip(b[..words].chunks_exact(4)) {
        acc += dot4_words(word(wa), word(wb));
    }
    acc + dot_i8_i8(&a[words..], &b[words..])
}

/// `y[r] = sum_c q[r * cols + c] * x[c]` exactly in i32 for the `rows = y.len()` rows of a
/// row-major int8 matrix `q` of `cols = x.len()` columns (`q.len() == rows * cols`): each
/// value equals [`dot_i8_i8`] of the row and `x`. `x` is sign-extended to halfword pairs once
/// per [`DSP_SEGMENT`] columns; rows whose start is word-aligned and at least 32 columns long
/// then take the 1.31-instructions-per-element loop, others [`arm_dsp_dot_i8_i8`].
pub fn arm_dsp_matvec_i8_i8(q: &[i8], x: &[i8], y: &mut [i32]) {
    let cols = x.len();
    debug_assert_eq!(q.len(), y.len() * cols);
    y.fill(0);
    if cols == 0 {
        return;
    }
    // `xs[2k]` = [x[4k], x[4k+2]], `xs[2k+1]` = [x[4k+1], x[4k+3]] (i16 halves, low first).
    let mut xs = [0u32; DSP_SEGMENT / 2];
    let mut c0 = 0;
    while c0 < cols {
        let len = DSP_SEGMENT.min(cols - c0);
        let xseg = &x[c0..c0 + len];
        let bulk = len & !31;
        for (k, c) in xseg[..bulk].chunks_exact(4).enumerate() {
            (xs[2 * k], xs[2 * k + 1]) = sxtb16_pair(word(c));
        }
        for (r, yr) in y.iter_mut().enumerate() {
            let row = &q[r * cols + c0..r * cols + c0 + len];
            if bulk == 0 || (row.as_ptr() as usize) & 3 != 0 {
                *yr += arm_dsp_dot_i8_i8(row, xseg);
                continue;
            }
            let mut acc = 0i32;
            // SAFETY: `row` is word-aligned (checked) and holds `bulk` bytes, `xs` (aligned,
            // a u32 array) holds their `bulk / 2` expanded halfword pairs; the loop reads
            // each once, 32 columns per iteration, and writes only the registers it names.
            unsafe {
                asm!(
                    "2:",
                    matvec_8!(),
                    matvec_8!(),
                    matvec_8!(),
                    matvec_8!(),
                    "cmp r0, r12",
                    "bne 2b",
                    inout("r0") row.as_ptr() => _,
                    inout("r1") xs.as_ptr() => _,
                    in("r12") row.as_ptr().add(bulk),
                    inout("lr") acc,
                    out("r2") _, out("r3") _, out("r4") _, out("r5") _,
                    out("r8") _, out("r9") _, out("r10") _,
                    options(nostack, readonly),
                );
            }
            if bulk < len {
                acc += arm_dsp_dot_i8_i8(&row[bulk..], &xseg[bulk..]);
            }
            *yr += acc;
        }
        c0 += len;
    }
}
