//! What both RISC-V binaries need from the board: the stack region, painted and measured
//! (see `topkit_fw::stack`).

use topkit_fw::stack;

unsafe extern "C" {
    /// Lowest address of the stack region (riscv-rt's link.x).
    static __estack: u32;
    /// Initial stack pointer, the top of the stack region (riscv-rt's link.x).
    static _stack_start: u32;
    /// Start of RAM's statics (`.data`).
    static __sdata: u32;
}

/// The stack region: from its lowest address up to the initial stack pointer.
pub fn stack_region() -> (usize, usize) {
    (
        &raw const __estack as usize,
        &raw const _stack_start as usize,
    )
}

/// Start of RAM (its first static).
pub fn ram_start() -> usize {
    &raw const __sdata as usize
}

fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: copies a register.
    unsafe { core::arch::asm!("mv {0}, sp", out(reg) sp) };
    sp
}

/// Paints the free stack, below the current stack pointer; returns the stack in use at this
/// point, bytes (from the initial stack pointer).
pub fn paint_stack() -> usize {
    let (bottom, top) = stack_region();
    let sp = stack_pointer();
    // SAFETY: the stack region below the current stack pointer is unused.
    unsafe { stack::paint(bottom, sp) };
    top - sp
}

/// Peak stack since [`paint_stack`], bytes.
pub fn stack_peak() -> usize {
    let (bottom, top) = stack_region();
    // SAFETY: the stack region is readable RAM.
    unsafe { stack::peak(bottom, top) }
}
