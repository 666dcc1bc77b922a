//! topkit on a Cortex-M4F (QEMU `mps2-an386`): the packed model in flash, a static arena sized
//! by the plan, one inference on the baked-in input, then the answer and what it cost.
//!
//! The report goes out as defmt frames: over semihosting in QEMU (default feature `qemu`; the
//! host decodes them, see targets/README.md), over RTT on a board (feature `rtt`). A panic
//! logs its message and exits with status 1.
#![no_std]
#![no_main]

mod board;

use cortex_m_rt::entry;
#[cfg(feature = "rtt")]
use defmt_rtt as _;
use topkit_fw::log;

#[entry]
fn main() -> ! {
    board::paint_stack();
    if cfg!(feature = "panic-check") {
        panic!("panic-check: a deliberate panic");
    }
    let p = cortex_m::Peripherals::take().unwrap();
    board::start_counter(p.SYST);

    let outcome = log::run_main(board::ticks, board::stack_peak, board::ram());
    board::log_instructions(&outcome);
    log::exit(0)
}
