//! topkit on a Cortex-M4F (QEMU `mps2-an386`): the packed model in flash, a static arena sized
//! by the plan, one inference on the baked-in input, then the answer and what it cost.
//!
//! The report goes out as defmt frames: over semihosting in QEMU (default feature `qemu`; the
//! host decodes them, see targets/README.md), over RTT on a board (feature `rtt`). A panic
//! logs its message and exits with status 1.
#![no_std]
#![no_main]

mod board;

use board::{INSTRUCTIONS_PER_TICK, RAM_BYTES};
use cortex_m_rt::entry;
#[cfg(feature = "rtt")]
use defmt_rtt as _;
use topkit::ArenaStorage;
use topkit_fw::{Input, OUT_LEN, Once, PEAK_BYTES, infer, log};

/// The arena: exactly the plan's peak, in `.bss`.
static ARENA: Once<ArenaStorage<PEAK_BYTES>> = Once::new(ArenaStorage::new());
/// The answer: one sentence embedding (`d_model` f32).
static OUT: Once<[f32; OUT_LEN]> = Once::new([0.0; OUT_LEN]);

#[entry]
fn main() -> ! {
    board::paint_stack();
    if cfg!(feature = "panic-check") {
        panic!("panic-check: a deliberate panic");
    }
    let p = cortex_m::Peripherals::take().unwrap();
    board::start_counter(p.SYST);

    let (Some(storage), Some(out)) = (ARENA.take(), OUT.take()) else {
        unreachable!("main runs once")
    };
    let mut arena = storage.arena();
    let outcome = match infer(&mut arena, out, board::ticks) {
        Ok(o) => o,
        Err(e) => {
            defmt::error!("error: {}", defmt::Display2Format(&e));
            log::exit(1);
        }
    };
    let stack_bytes = board::stack_peak();

    log::answer(&outcome);
    log::arena(&outcome);
    if outcome.input == Input::Text {
        log::embedding(out);
    }
    let (static_end, stack_top) = board::stack_region();
    let statics = static_end - (stack_top - RAM_BYTES);
    defmt::println!("stack: peak {=usize} bytes", stack_bytes);
    defmt::println!(
        "ram: statics {=usize} + stack {=usize} = {=usize} bytes of {=usize}",
        statics,
        stack_bytes,
        statics + stack_bytes,
        RAM_BYTES
    );
    let instructions = outcome.ticks * INSTRUCTIONS_PER_TICK;
    defmt::println!(
        "instructions: {=u64} ({=u64} per token; SysTick {=u64} ticks x {=u64})",
        instructions,
        instructions / outcome.tokens as u64,
        outcome.ticks,
        INSTRUCTIONS_PER_TICK
    );
    log::exit(0)
}
