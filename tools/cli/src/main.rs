//! `topkit`: pack, inspect and budget models. See `topkit --help`.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(topkit_cli::run(std::env::args_os()));
}
