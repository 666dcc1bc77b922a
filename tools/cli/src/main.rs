//! `topkit`: pack, inspect and budget models (skeleton).
#![forbid(unsafe_code)]

fn main() {
    println!("topkit {}", env!("CARGO_PKG_VERSION"));
}
