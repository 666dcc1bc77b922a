//! `cargo xtask demo`: the main job in one command. Sets up, fetches all-MiniLM-L6-v2, packs
//! it (f32 and int8), shows the int8 file, prints its memory plan for a 256-token input with
//! top-k attention and checks it against a 4 MiB RAM budget, then embeds two sentences on the
//! host with dense and top-k attention.

use crate::model::{fetch_and_pack, packed_path, topkit_cli as topkit};
use crate::util::Res;

fn step(title: &str) {
    println!("\n==> {title}");
}

/// Runs the demo; fails on the first failing step.
pub fn demo() -> Res {
    step("setup: toolchains and cross targets");
    crate::setup::setup(&crate::setup::Opts::default())?;
    step("fetch all-MiniLM-L6-v2 and pack it (f32, int8)");
    fetch_and_pack()?;
    let int8 = packed_path("int8");
    step("inspect the int8 file");
    topkit().arg("inspect").arg(&int8).run()?;
    step("memory plan: 256 tokens, top-k attention k=32, chunk 16, against 4 MiB of RAM");
    topkit()
        .arg("budget")
        .arg(&int8)
        .args([
            "--seq", "256", "--k-attn", "32", "--chunk", "16", "--ram", "4M",
        ])
        .run()?;
    Ok(())
}
