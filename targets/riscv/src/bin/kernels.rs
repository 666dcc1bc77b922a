//! The kernel benchmark and exactness check (`topkit_fw::bench`): instructions per
//! multiply-accumulate of the matrix-vector kernels and per token of the model, counted by
//! `minstret`. RV32IMAC has no packed-SIMD extension, so `Kernels::Fast` runs the generic
//! int8 dot (the check is then trivially exact). Exits 1 on any mismatch. Run by
//! `cargo xtask bench-target`.
#![no_std]
#![no_main]

#[path = "../board.rs"]
#[allow(dead_code)] // ram_start: only the main binary reports RAM.
mod board;
#[path = "../counter.rs"]
mod counter;

#[cfg(feature = "rtt")]
use defmt_rtt as _;
use riscv_rt::entry;
use topkit_fw::{bench, log};

#[entry]
fn main() -> ! {
    let mismatches = bench::run(
        counter::minstret,
        "generic",
        board::paint_stack,
        board::stack_peak,
    );
    log::exit(i32::from(mismatches != 0))
}
