//! topkit on a Cortex-M4F (QEMU `mps2-an386`): the packed model in flash, a static arena sized
//! by the plan, one inference on the baked-in input, then the answer and what it cost.
//!
//! Output goes over semihosting as plain text (see targets/README.md for why not defmt here);
//! a panic prints its message and exits with a non-zero status.
#![no_std]
#![no_main]

mod board;

use board::{INSTRUCTIONS_PER_TICK, Out, RAM_BYTES};
use cortex_m_rt::entry;
use semihosting::{println, process};
use topkit::ArenaStorage;
use topkit_fw::{
    Input, OUT_LEN, Once, PEAK_BYTES, infer, write_answer, write_arena, write_embedding,
};

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
            println!("error: {}", e);
            process::exit(1);
        }
    };
    let stack_bytes = board::stack_peak();

    let _ = write_answer(&mut Out, &outcome);
    let _ = write_arena(&mut Out, &outcome);
    if outcome.input == Input::Text {
        let _ = write_embedding(&mut Out, out);
    }
    let (static_end, stack_top) = board::stack_region();
    let statics = static_end - (stack_top - RAM_BYTES);
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
        instructions / outcome.tokens as u64,
        outcome.ticks,
        INSTRUCTIONS_PER_TICK
    );
    process::exit(0)
}
