//! The jobs that need neither an emulator nor a browser: formatting, lints, the module
//! graph check, host tests, docs, the cross builds of the core, the model cache, fuzz smoke.

use crate::job::{Ctx, Step, cargo, cross_cargo};
use crate::setup::TARGETS;
use crate::util::Res;

/// `fuzz-smoke`: every fuzz target for a few seconds.
pub fn fuzz_smoke(_: &Ctx) -> Vec<Step> {
    vec![Step::Check(
        format!("cargo xtask fuzz --time {}", crate::fuzz::SMOKE_SECONDS),
        Box::new(|| {
            crate::fuzz::fuzz(&crate::fuzz::FuzzOpts {
                seconds: crate::fuzz::SMOKE_SECONDS,
                targets: Vec::new(),
            })
        }),
    )]
}

/// `models`: the real models in the cache, packed.
pub fn models(_: &Ctx) -> Vec<Step> {
    vec![Step::Check(
        "fetch and pack all-MiniLM-L6-v2 and SmolLM2-135M-Instruct".into(),
        Box::new(|| crate::model::fetch_and_pack().map(|_| ())),
    )]
}

/// `fmt`: rustfmt in check mode.
pub fn fmt(_: &Ctx) -> Vec<Step> {
    vec![Step::Cmd(cargo().args(["fmt", "--all", "--check"]))]
}

/// The core and its test crate, built alone: cargo unifies features over the packages of one
/// invocation, and the CLI turns on `topkit/std`, so a `--workspace` build would never be the
/// micromath build.
const CORE: [&str; 4] = ["-p", "topkit", "-p", "topkit-tests"];
/// Everything else in the workspace (the tools), which may use `topkit/std`; not the
/// benchmarks (`benches/`, built by `cargo xtask bench` only: candle takes minutes to build).
const TOOLS: [&str; 7] = [
    "--workspace",
    "--exclude",
    "topkit",
    "--exclude",
    "topkit-tests",
    "--exclude",
    "topkit-bench",
];

/// `deps`: the module graph check of `crate::deps`.
pub fn deps(_: &Ctx) -> Vec<Step> {
    vec![Step::Check(
        "no module imports one that imports it back; generic kernels import no arch module".into(),
        Box::new(crate::deps::check),
    )]
}

/// `clippy`: the core alone (both math builds), then the tools.
pub fn clippy(_: &Ctx) -> Vec<Step> {
    let deny = ["--", "-D", "warnings"];
    vec![
        Step::Cmd(
            cargo()
                .arg("clippy")
                .args(CORE)
                .arg("--all-targets")
                .args(deny),
        ),
        Step::Cmd(
            cargo()
                .arg("clippy")
                .args(CORE)
                .args(["--all-targets", "--features", "std"])
                .args(deny),
        ),
        Step::Cmd(
            cargo()
                .arg("clippy")
                .args(TOOLS)
                .arg("--all-targets")
                .args(deny),
        ),
    ]
}

/// Fails when something in the core's own dependency graph turns on `topkit/std`: the
/// default test run would then silently test std math instead of micromath.
fn micromath_build_is_micromath() -> Res {
    let tree = cargo()
        .args(["tree", "-e", "features", "-i", "topkit"])
        .args(CORE)
        .output()?;
    if tree.contains("topkit feature \"std\"") {
        return Err(format!(
            "topkit/std is enabled in the default build of the core:\n{tree}"
        ));
    }
    Ok(())
}

/// `test-host`: the micromath guard, then the tests of the core and of the tools.
pub fn test_host(_: &Ctx) -> Vec<Step> {
    vec![
        Step::Check(
            "the default core build has no topkit/std".into(),
            Box::new(micromath_build_is_micromath),
        ),
        Step::Cmd(cargo().arg("test").args(CORE)),
        Step::Cmd(cargo().arg("test").args(TOOLS)),
    ]
}

/// `test-host-std`: the core's tests with std math.
pub fn test_host_std(_: &Ctx) -> Vec<Step> {
    // Both crates have a `std` feature (the tests' one forwards to topkit/std), so the
    // integration suite and the core's unit tests run with std math.
    vec![Step::Cmd(
        cargo().arg("test").args(CORE).args(["--features", "std"]),
    )]
}

/// `doc`: the core's API docs without warnings.
pub fn doc(_: &Ctx) -> Vec<Step> {
    vec![Step::Cmd(
        cargo()
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "-p", "topkit", "--no-deps"]),
    )]
}

/// `cross`: the core built for every cross target, with and without defmt.
pub fn cross(ctx: &Ctx) -> Vec<Step> {
    // RUSTFLAGS only reaches target artifacts when --target is given, so host build scripts
    // and proc-macros stay shared with the host jobs.
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if !rustflags.is_empty() {
        rustflags.push(' ');
    }
    rustflags.push_str("-D warnings");
    let mut steps = Vec::new();
    for t in TARGETS {
        for features in [None, Some("defmt")] {
            let mut c = cross_cargo(ctx, "build", t)
                .env("RUSTFLAGS", rustflags.clone())
                .args(["-p", "topkit"]);
            if let Some(f) = features {
                c = c.args(["--features", f]);
            }
            steps.push(Step::Cmd(c));
        }
    }
    steps
}
