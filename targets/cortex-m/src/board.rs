//! What the Cortex-M binaries need from the board: the instruction counter (SysTick under
//! QEMU's `-icount shift=0`), the stack region and the RAM in the report.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;

/// RAM of the board (memory.x), bytes.
pub const RAM_BYTES: usize = 4 * 1024 * 1024;
/// SysTick counts the 25 MHz system clock; with `-icount shift=0` one instruction takes 1 ns
/// of virtual time, so one tick is 40 instructions (checked with a loop of known length).
pub const INSTRUCTIONS_PER_TICK: u64 = 40;
const RELOAD: u32 = 0x00ff_ffff;

/// SysTick wraps (every 2^24 ticks).
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    // Load and store, not `fetch_add`: ARMv6-M has no atomic read-modify-write, and this
    // handler is the only writer.
    WRAPS.store(WRAPS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Starts SysTick on the core clock, counting wraps in its interrupt.
pub fn start_counter(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    // The counter reads 0 until its first reload: start from a proper count.
    while SYST::get_current() == 0 {}
}

/// SysTick ticks since it started, extended to 64 bits by the wrap count.
pub fn ticks() -> u64 {
    loop {
        let w = WRAPS.load(Ordering::Relaxed);
        let cur = SYST::get_current();
        if WRAPS.load(Ordering::Relaxed) == w {
            return (u64::from(w) << 24) | u64::from(RELOAD - cur);
        }
    }
}

unsafe extern "C" {
    /// Start of the heap region, i.e. the end of every static in RAM (cortex-m-rt's link.x).
    static __sheap: u32;
    /// Initial stack pointer: the top of RAM (cortex-m-rt's link.x).
    static _stack_start: u32;
}

/// The stack region: from the end of the statics up to the initial stack pointer (no heap
/// region in memory.x: a heap, if any, is a static).
pub fn stack_region() -> (usize, usize) {
    (
        &raw const __sheap as usize,
        &raw const _stack_start as usize,
    )
}

/// The RAM line's figures: statics from the start of RAM to the stack region, of [`RAM_BYTES`].
pub fn ram() -> topkit_fw::log::Ram {
    let (static_end, stack_top) = stack_region();
    topkit_fw::log::Ram {
        statics: static_end - (stack_top - RAM_BYTES),
        total: RAM_BYTES,
    }
}

/// Logs the `instructions:` line of `o`: SysTick ticks x [`INSTRUCTIONS_PER_TICK`], in all
/// and per token.
pub fn log_instructions(o: &topkit_fw::Outcome) {
    let instructions = o.ticks * INSTRUCTIONS_PER_TICK;
    defmt::println!(
        "instructions: {=u64} ({=u64} per token; SysTick {=u64} ticks x {=u64})",
        instructions,
        instructions / o.tokens as u64,
        o.ticks,
        INSTRUCTIONS_PER_TICK
    );
}

/// Paints the free stack (see `topkit_fw::stack`); returns the stack in use at this point,
/// bytes (from the initial stack pointer).
pub fn paint_stack() -> usize {
    let (bottom, top) = stack_region();
    let sp = cortex_m::register::msp::read() as usize;
    // SAFETY: everything between the end of the statics and the current stack pointer is
    // unused stack.
    unsafe { topkit_fw::stack::paint(bottom, sp) };
    top - sp
}

/// Peak stack since [`paint_stack`], bytes.
pub fn stack_peak() -> usize {
    let (bottom, top) = stack_region();
    // SAFETY: the stack region is readable RAM.
    unsafe { topkit_fw::stack::peak(bottom, top) }
}
