//! Peak stack measured by painting: fill the unused stack with a pattern before the work,
//! then find the deepest word that no longer holds it.

/// The paint pattern (one 32-bit word).
pub const PAINT: u32 = 0xA5A5_5A5A;

/// Bytes left unpainted just below the stack pointer, for the frame of [`paint`] itself.
const MARGIN: usize = 256;

/// Paints the words from `bottom` (lowest address of the stack region) up to `sp - MARGIN`.
///
/// # Safety
/// `bottom..sp` must be the unused part of the current stack (nothing lives there), `bottom`
/// 4-byte aligned, and `sp` the current stack pointer.
pub unsafe fn paint(bottom: usize, sp: usize) {
    let mut p = bottom;
    while p + 4 <= sp.saturating_sub(MARGIN) {
        // SAFETY: `p` is in the unused stack region, aligned (the caller's contract).
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack used at the deepest point since [`paint`]: from the first word above
/// `bottom` that lost the paint, up to `top` (the initial stack pointer).
///
/// # Safety
/// `bottom..top` must be readable memory (the stack region), `bottom` 4-byte aligned.
pub unsafe fn peak(bottom: usize, top: usize) -> usize {
    let mut p = bottom;
    // SAFETY: `p` stays within the stack region (the caller's contract).
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
