//! The kernel benchmark and exactness check (`topkit_fw::bench`): instructions per
//! multiply-accumulate of the matrix-vector kernels and per token of the model, counted by
//! SysTick under QEMU's `-icount shift=0`, and the fast int8 kernels (the DSP ones on the
//! M4F) checked against the generic ones. Exits 1 on any mismatch. Run by
//! `cargo xtask bench-target`.
#![no_std]
#![no_main]

#[path = "../board.rs"]
#[allow(dead_code)] // ram, log_instructions: only the main binaries report RAM and time.
mod board;

use board::INSTRUCTIONS_PER_TICK;
use cortex_m_rt::entry;
#[cfg(feature = "rtt")]
use defmt_rtt as _;
use topkit_fw::{bench, log};

/// What `Kernels::Fast` runs for the exact int8 dot here (feature `arm-dsp` of the core is on
/// for the hard-float target, thumbv7em-none-eabihf; see Cargo.toml).
const FAST: &str = if cfg!(target_abi = "eabihf") {
    "arm_dsp (SMLAD)"
} else {
    "generic"
};

#[entry]
fn main() -> ! {
    let p = cortex_m::Peripherals::take().unwrap();
    board::start_counter(p.SYST);
    let mismatches = bench::run(
        || board::ticks() * INSTRUCTIONS_PER_TICK,
        FAST,
        board::paint_stack,
        board::stack_peak,
    );
    log::exit(i32::from(mismatches != 0))
}
