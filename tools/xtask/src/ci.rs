//! `cargo xtask ci`: the CI jobs as data, a runner that keeps going after a failure, and the
//! summary table.
//!
//! To add a job (e.g. `test-cross`, `test-wasm`), add an entry to [`JOBS`]: a name, a line of
//! help, and a function that lists its steps. Each step is a command (printed, then run) or a
//! check written in Rust.

use crate::setup::{self, Route, TARGETS};
use crate::util::{Cmd, Res, workspace_root};
use std::path::PathBuf;
use std::time::Instant;

/// What jobs may look at when they build their steps.
pub struct Ctx {
    /// The toolchain's sysroot (to tell prebuilt std from build-std).
    pub sysroot: PathBuf,
}

/// One unit of a job.
pub enum Step {
    /// An external command; fails when it exits non-zero or is killed.
    Cmd(Cmd),
    /// A check in Rust, with a name for the log (e.g. a feature guard, golden-file compares).
    Check(String, Box<dyn Fn() -> Res>),
}

/// A CI job: every step runs even after one fails, so one run reports all failures.
pub struct Job {
    /// Name used by `cargo xtask ci --only <name>` and `cargo xtask <name>`.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// Whether it needs `setup` (cross targets) to have run.
    pub needs_setup: bool,
    /// The steps, in order.
    pub steps: fn(&Ctx) -> Vec<Step>,
}

/// Every CI job, in the order `cargo xtask ci` runs them (cheap and most telling first).
pub const JOBS: &[Job] = &[
    Job {
        name: "fmt",
        about: "cargo fmt --all --check",
        needs_setup: false,
        steps: fmt,
    },
    Job {
        name: "clippy",
        about: "clippy -D warnings: core + tests (default, then std), then the tools",
        needs_setup: false,
        steps: clippy,
    },
    Job {
        name: "models",
        about: "fetch all-MiniLM-L6-v2 and SmolLM2-135M into the cache, pack them (f32, int8)",
        needs_setup: false,
        steps: models,
    },
    Job {
        name: "test-host",
        about: "cargo test: core + tests alone (micromath build), then the tools",
        needs_setup: false,
        steps: test_host,
    },
    Job {
        name: "test-host-std",
        about: "cargo test of core + tests with --features std (std math)",
        needs_setup: false,
        steps: test_host_std,
    },
    Job {
        name: "doc",
        about: "cargo doc -p topkit --no-deps with -D warnings",
        needs_setup: false,
        steps: doc,
    },
    Job {
        name: "cross",
        about: "build topkit with -D warnings for the 4 cross targets, default features and defmt",
        needs_setup: true,
        steps: cross,
    },
    Job {
        name: "test-cross",
        about: "firmware in QEMU (Cortex-M4F, M0+, RISC-V): same bits as the host, arena = plan",
        needs_setup: true,
        steps: crate::firmware::test_cross,
    },
    Job {
        name: "bench-target",
        about: "kernels firmware in QEMU: fast int8 (Arm DSP) = generic; instructions per MAC/token",
        needs_setup: true,
        steps: crate::bench_target::bench_target,
    },
    Job {
        name: "cross-minilm",
        about: "all-MiniLM-L6-v2 int8 on RISC-V in QEMU: same bits as the host, arena = plan",
        needs_setup: true,
        steps: crate::firmware::test_cross_minilm,
    },
    Job {
        name: "test-wasm",
        about: "wasm-bindgen package in node and the demo page in Chromium: same as the host",
        needs_setup: true,
        steps: crate::wasm::test_wasm,
    },
    Job {
        name: "fuzz-smoke",
        about: "each fuzz target of fuzz/ for 15 s (nightly, ASan), seeds made by the packer",
        needs_setup: false,
        steps: fuzz_smoke,
    },
];

/// Jobs that run firmware and so need QEMU from `setup --qemu`.
const NEEDS_QEMU: &[&str] = &["test-cross", "bench-target", "cross-minilm"];

fn cargo() -> Cmd {
    Cmd::cargo().cwd(workspace_root())
}

fn fuzz_smoke(_: &Ctx) -> Vec<Step> {
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

fn models(_: &Ctx) -> Vec<Step> {
    vec![Step::Check(
        "fetch and pack all-MiniLM-L6-v2 and SmolLM2-135M-Instruct".into(),
        Box::new(|| crate::model::fetch_and_pack().map(|_| ())),
    )]
}

fn fmt(_: &Ctx) -> Vec<Step> {
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

fn clippy(_: &Ctx) -> Vec<Step> {
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

fn test_host(_: &Ctx) -> Vec<Step> {
    vec![
        Step::Check(
            "the default core build has no topkit/std".into(),
            Box::new(micromath_build_is_micromath),
        ),
        Step::Cmd(cargo().arg("test").args(CORE)),
        Step::Cmd(cargo().arg("test").args(TOOLS)),
    ]
}

fn test_host_std(_: &Ctx) -> Vec<Step> {
    // Both crates have a `std` feature (the tests' one forwards to topkit/std), so the
    // integration suite and the core's unit tests run with std math.
    vec![Step::Cmd(
        cargo().arg("test").args(CORE).args(["--features", "std"]),
    )]
}

fn doc(_: &Ctx) -> Vec<Step> {
    vec![Step::Cmd(
        cargo()
            .env("RUSTDOCFLAGS", "-D warnings")
            .args(["doc", "-p", "topkit", "--no-deps"]),
    )]
}

/// `cargo <sub> --target <target>`, by the route setup left for that target (prebuilt std or
/// build-std); later jobs (firmware, wasm) build through it too.
pub fn cross_cargo(ctx: &Ctx, sub: &str, target: &str) -> Cmd {
    let mut c = cargo();
    if setup::route(&ctx.sysroot, target) == Route::BuildStd {
        // Stable cargo accepts -Z flags with RUSTC_BOOTSTRAP; the library sources come from
        // the sysroot's lib/rustlib/src/rust/library that setup linked.
        c = c.env("RUSTC_BOOTSTRAP", "1");
    }
    c = c.args([sub, "--target", target]);
    if setup::route(&ctx.sysroot, target) == Route::BuildStd {
        c = c.arg("-Zbuild-std=core,alloc");
    }
    c
}

fn cross(ctx: &Ctx) -> Vec<Step> {
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

/// Looks a job up by name.
pub fn find(name: &str) -> Option<&'static Job> {
    JOBS.iter().find(|j| j.name == name)
}

struct Outcome {
    name: String,
    failures: Vec<String>,
    seconds: f64,
}

/// Runs setup (when any selected job needs it, or always for the full run), then the jobs;
/// prints the summary table and returns whether everything passed.
pub fn run(jobs: &[&'static Job], always_setup: bool) -> bool {
    let mut outcomes = Vec::new();
    if always_setup || jobs.iter().any(|j| j.needs_setup) {
        banner("setup");
        let t0 = Instant::now();
        let opts = setup::Opts {
            qemu: jobs.iter().any(|j| NEEDS_QEMU.contains(&j.name)),
        };
        let failures = setup::setup(&opts).err().into_iter().collect();
        outcomes.push(Outcome {
            name: "setup".into(),
            failures,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    let ctx = match setup::sysroot() {
        Ok(sysroot) => Ctx { sysroot },
        Err(e) => {
            eprintln!("xtask: {e}");
            return false;
        }
    };
    for job in jobs {
        banner(job.name);
        let t0 = Instant::now();
        let mut failures = Vec::new();
        for step in (job.steps)(&ctx) {
            let r = match step {
                Step::Cmd(c) => c.run(),
                Step::Check(name, f) => {
                    println!("check: {name}");
                    f().map_err(|e| format!("{name}: {e}"))
                }
            };
            if let Err(e) = r {
                println!("FAILED: {e}");
                failures.push(e);
            }
        }
        outcomes.push(Outcome {
            name: job.name.into(),
            failures,
            seconds: t0.elapsed().as_secs_f64(),
        });
    }
    summary(&outcomes)
}

fn banner(name: &str) {
    println!("\n==== {name} ====");
}

fn summary(outcomes: &[Outcome]) -> bool {
    let width = outcomes
        .iter()
        .map(|o| o.name.len())
        .max()
        .unwrap_or(3)
        .max(3);
    println!("\n==== summary ====");
    println!("{:<width$}  {:<6}  {:>8}", "job", "status", "seconds");
    let mut total = 0.0;
    for o in outcomes {
        let status = if o.failures.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        println!("{:<width$}  {:<6}  {:>8.1}", o.name, status, o.seconds);
        total += o.seconds;
    }
    println!("{:<width$}  {:<6}  {:>8.1}", "total", "", total);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.failures.is_empty()).collect();
    if !failed.is_empty() {
        println!("\nfailures:");
        for o in &failed {
            for f in &o.failures {
                println!("  {}: {f}", o.name);
            }
        }
    }
    println!(
        "ci: {} passed, {} failed",
        outcomes.len() - failed.len(),
        failed.len()
    );
    failed.is_empty()
}
