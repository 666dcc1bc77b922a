//! `cargo xtask`: setup and CI entry points (skeleton).
#![forbid(unsafe_code)]

fn main() {
    eprintln!("usage: cargo xtask <setup|ci>");
    std::process::exit(2);
}
