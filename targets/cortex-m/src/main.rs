//! topkit on a Cortex-M4F (QEMU `mps2-an386`): the packed model in flash, a static arena sized
//! by the plan, one inference on the baked-in input, then the answer and what it cost.
//!
//! Output goes over semihosting as plain text (see the README for why not defmt here); a
//! panic prints its message and exits with a non-zero status.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use semihosting::{print, println, process};
use topkit::ArenaStorage;
use topkit_fw::{INPUT_LEN, Once, PEAK_BYTES, RUN, infer, stack, write_answer, write_arena};

/// The arena: exactly the plan's peak, in `.bss`.
static ARENA: Once<ArenaStorage<PEAK_BYTES>> = Once::new(ArenaStorage::new());
/// The embedded input (`seq_len x d_model` f32).
static INPUT: Once<[f32; INPUT_LEN]> = Once::new([0.0; INPUT_LEN]);

/// RAM of the board (memory.x), bytes.
const RAM_BYTES: usize = 4 * 1024 * 1024;
/// SysTick counts the 25 MHz system clock; with `-icount shift=0` one instruction takes 1 ns
/// of virtual time, so one tick is 40 instructions.
const INSTRUCTIONS_PER_TICK: u64 = 40;
const RELOAD: u32 = 0x00ff_ffff;

/// SysTick wraps (every 2^24 ticks).
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    // Load and store, not `fetch_add`: ARMv6-M has no atomic read-modify-write, and this
    // handler is the only writer.
    WRAPS.store(WRAPS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// SysTick ticks since it started, extended to 64 bits by the wrap count.
fn ticks() -> u64 {
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

#[entry]
fn main() -> ! {
    let static_end = &raw const __sheap as usize;
    let stack_top = &raw const _stack_start as usize;
    let ram_start = stack_top - RAM_BYTES;
    // SAFETY: everything between the end of the statics and the current stack pointer is
    // unused stack (no heap in this firmware).
    unsafe { stack::paint(static_end, cortex_m::register::msp::read() as usize) };

    if cfg!(feature = "panic-check") {
        panic!("panic-check: a deliberate panic");
    }
    let mut p = cortex_m::Peripherals::take().unwrap();
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(RELOAD);
    p.SYST.clear_current();
    p.SYST.enable_interrupt();
    p.SYST.enable_counter();
    // The counter reads 0 until its first reload: start from a proper count.
    while SYST::get_current() == 0 {}

    let (Some(storage), Some(input)) = (ARENA.take(), INPUT.take()) else {
        unreachable!("main runs once")
    };
    let mut arena = storage.arena();
    let outcome = match infer(&mut arena, input, ticks) {
        Ok(o) => o,
        Err(e) => {
            println!("error: {}", e);
            process::exit(1);
        }
    };
    // SAFETY: the stack region is readable RAM.
    let stack_bytes = unsafe { stack::peak(static_end, stack_top) };

    let _ = write_answer(&mut Out, &outcome);
    let _ = write_arena(&mut Out, &outcome);
    let statics = static_end - ram_start;
    println!("stack: peak {} bytes", stack_bytes);
    println!(
        "ram: statics {} + stack {} = {} bytes of {}",
        statics,
        stack_bytes,
        statics + stack_bytes,
        RAM_BYTES
    );
    let instructions = outcome.ticks * INSTRUCTIONS_PER_TICK;
    println!(
        "instructions: {} ({} per token; SysTick {} ticks x {})",
        instructions,
        instructions / RUN.seq_len as u64,
        outcome.ticks,
        INSTRUCTIONS_PER_TICK
    );
    process::exit(0)
}

/// Semihosting stdout as a `fmt::Write`, so the lines shared with the host come from the
/// same formatting code.
struct Out;

impl core::fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        print!("{}", s);
        Ok(())
    }
}
