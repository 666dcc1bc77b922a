//! `cargo xtask`: setup and CI entry points for topkit.
#![forbid(unsafe_code)]

mod model;
#[allow(dead_code)] // used by setup and ci, coming next
mod util;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match args.first().map(String::as_str) {
        Some("fetch-model") => model::fetch_model().map(|_| ()),
        _ => Err("usage: cargo xtask fetch-model".into()),
    };
    if let Err(e) = r {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
