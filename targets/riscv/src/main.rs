//! topkit on RV32IMAC (QEMU `virt`): the packed model in "flash", a static arena sized by the
//! plan, one inference on the baked-in input, then the answer and what it cost.
//!
//! The report goes out as defmt frames: over semihosting in QEMU (default feature `qemu`; the
//! host decodes them, see targets/README.md), over RTT on a board (feature `rtt`). A panic
//! logs its message and exits with status 1.
#![no_std]
#![no_main]

#[cfg(feature = "rtt")]
use defmt_rtt as _;
mod board;
mod counter;

use counter::minstret;
use riscv_rt::entry;
use topkit::ArenaStorage;
use topkit_fw::{Input, OUT_LEN, Once, PEAK_BYTES, infer, log};

/// The arena: exactly the plan's peak, in `.bss`.
static ARENA: Once<ArenaStorage<PEAK_BYTES>> = Once::new(ArenaStorage::new());
/// The answer: one sentence embedding (`d_model` f32).
static OUT: Once<[f32; OUT_LEN]> = Once::new([0.0; OUT_LEN]);

#[entry]
fn main() -> ! {
    let (bottom, top) = board::stack_region();
    let ram_start = board::ram_start();
    board::paint_stack();

    let (Some(storage), Some(out)) = (ARENA.take(), OUT.take()) else {
        unreachable!("main runs once")
    };
    let mut arena = storage.arena();
    let outcome = match infer(&mut arena, out, minstret) {
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
    let statics = bottom - ram_start;
    defmt::println!("stack: peak {=usize} bytes", stack_bytes);
    defmt::println!(
        "ram: statics {=usize} + stack {=usize} = {=usize} bytes of {=usize}",
        statics,
        stack_bytes,
        statics + stack_bytes,
        top - ram_start
    );
    defmt::println!(
        "instructions: {=u64} ({=u64} per token; minstret)",
        outcome.ticks,
        outcome.ticks / outcome.tokens as u64
    );
    log::exit(0)
}
