//! Declares the cfg aliases of the kernel layer, so that the sources name a target's kernels
//! once (`cfg(topkit_x86)`) instead of spelling out the features and target each time:
//!
//! - `topkit_x86`: std builds on x86-64 (AVX2 and AVX-512 kernels, detected at run time);
//! - `topkit_wasm_simd`: wasm32 with `simd128` enabled;
//! - `topkit_arm_dsp`: Arm with the DSP extension (`target_feature = "dsp"`, which stable rustc
//!   never sets, or feature `arm-dsp`, which says the CPU has it).

use std::env;

fn main() {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let features = env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let has_feature = |f: &str| features.split(',').any(|x| x == f);
    let cargo_feature = |f: &str| env::var_os(format!("CARGO_FEATURE_{f}")).is_some();
    let aliases = [
        ("topkit_x86", arch == "x86_64" && cargo_feature("STD")),
        (
            "topkit_wasm_simd",
            arch == "wasm32" && has_feature("simd128"),
        ),
        (
            "topkit_arm_dsp",
            arch == "arm" && (has_feature("dsp") || cargo_feature("ARM_DSP")),
        ),
    ];
    for (name, on) in aliases {
        println!("cargo::rustc-check-cfg=cfg({name})");
        if on {
            println!("cargo::rustc-cfg={name}");
        }
    }
    println!("cargo::rerun-if-changed=build.rs");
}
