//! `cargo xtask demo`: the main job in one command. Sets up, fetches all-MiniLM-L6-v2, packs
//! it (f32 and int8), shows the int8 file, prints its memory plan for a 256-token input with
//! top-k attention and checks it against a 4 MiB RAM budget, then runs the int8 model as
//! firmware on an emulated RISC-V microcontroller (QEMU `virt`), whose answer must equal the
//! host's bit for bit and match sentence-transformers (the `cross-minilm` CI job).

use crate::model::{fetch_and_pack, packed_path, topkit_cli as topkit};
use crate::util::Res;

fn step(title: &str) {
    println!("\n==> {title}");
}

/// Runs the demo; fails on the first failing step.
pub fn demo() -> Res {
    step("setup: toolchains, cross targets and QEMU");
    crate::setup::setup(&crate::setup::Opts { qemu: true })?;
    step("fetch all-MiniLM-L6-v2 and pack it (f32, int8)");
    fetch_and_pack()?;
    let int8 = packed_path("int8");
    step("inspect the int8 file");
    topkit().arg("inspect").arg(&int8).run()?;
    step(
        "memory plan of the firmware (reference kernels): 256 tokens, top-k attention k=32, chunk 16, against 4 MiB of RAM",
    );
    topkit()
        .arg("budget")
        .arg(&int8)
        .args([
            "--seq",
            "256",
            "--k-attn",
            "32",
            "--chunk",
            "16",
            "--ram",
            "4M",
            "--kernels",
            "reference",
        ])
        .run()?;
    step("run it on an emulated microcontroller: RISC-V firmware in QEMU, compared with the host");
    let job = crate::ci::find("cross-minilm").ok_or("the cross-minilm job is missing")?;
    if crate::ci::run(&[job], false) {
        Ok(())
    } else {
        Err("the firmware run failed (see above)".into())
    }
}
