//! The instruction counter of both RISC-V binaries.

/// Instructions retired (the 64-bit `minstret`, read as two halves without tearing).
pub fn minstret() -> u64 {
    loop {
        let (hi, lo, hi2): (u32, u32, u32);
        // SAFETY: reading machine counters has no side effect; the firmware runs in M-mode.
        unsafe {
            core::arch::asm!(
                "csrr {0}, minstreth",
                "csrr {1}, minstret",
                "csrr {2}, minstreth",
                out(reg) hi,
                out(reg) lo,
                out(reg) hi2,
            );
        }
        if hi == hi2 {
            return (u64::from(hi) << 32) | u64::from(lo);
        }
    }
}
