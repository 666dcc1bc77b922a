//! The `topkit` command-line tool: pack a Hugging Face model into one `.tkm` file, inspect a
//! packed file, check a memory budget before flashing, embed texts with a packed sentence
//! encoder, sweep top-k settings for accuracy against peak RAM, and generate text with a
//! packed causal language model.
//!
//! Exit codes: 0 success (and "fits"), 1 "does not fit" (`budget` with `--ram`/`--flash`),
//! 2 any error (bad arguments, unreadable or malformed files), with a message naming it.
//!
//! [`cli`] is the command line and the exit codes. Each command is a module that owns its clap
//! arguments (`pack::PackArgs`, ...) and its `run`; [`options`] holds what several commands
//! share, [`packed`] reads packed files, [`files`] reads inputs and writes outputs safely. `pack` reads its source with [`import`] (Hugging Face
//! directories and GGUF files), converts the weights with [`quant`] and writes the file with
//! [`writer`]; `pack --flash` chooses the dtypes with [`flash`], which calibrates with
//! [`calib`] and quantizes with [`gptq`].
#![forbid(unsafe_code)]

#[cfg(target_endian = "big")]
compile_error!(
    "topkit-cli writes little-endian files by casting host values: it needs a little-endian host"
);

/// `println!` that does not panic on a write error: when stdout is a closed pipe (`topkit
/// inspect | head`) the tool keeps going and still exits with its verdict; any other failure
/// (a full disk) is remembered and makes the run exit 2 (see [`stdio`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdio::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that does not panic on a write error, remembered as [`outln!`]'s are.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::stdio::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub mod budget;
pub mod calib;
pub mod cli;
pub mod embed;
pub mod eval;
pub mod eval_lm;
pub mod files;
pub mod flash;
pub mod generate;
pub mod gptq;
pub mod import;
pub mod inspect;
pub mod options;
pub mod pack;
pub mod packed;
pub mod quant;
pub mod size;
pub mod stdio;
pub mod writer;

pub use crate::cli::{Cli, Command, EXIT_DOES_NOT_FIT, EXIT_ERROR, EXIT_OK, run};
pub use crate::options::{KernelChoice, RunOpts, check_run_args};
pub use crate::packed::{parse_packed, read_packed};
