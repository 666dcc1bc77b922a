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
use topkit_fw::log::{self, Ram};

#[entry]
fn main() -> ! {
    let (bottom, top) = board::stack_region();
    let ram_start = board::ram_start();
    board::paint_stack();

    let ram = Ram {
        statics: bottom - ram_start,
        total: top - ram_start,
    };
    let outcome = log::run_main(minstret, board::stack_peak, ram);
    defmt::println!(
        "instructions: {=u64} ({=u64} per token; minstret)",
        outcome.ticks,
        outcome.ticks / outcome.tokens as u64
    );
    log::exit(0)
}
