//! `cargo xtask ci`: the CI jobs as data, a runner that keeps going after a failure, and the
//! summary table.
//!
//! To add a job (e.g. `test-cross`, `test-wasm`), add an entry to [`JOBS`]: a name, a line of
//! help, and a function that lists its steps. Each step is a command (printed, then run) or a
//! check written in Rust.

use crate::host;
use crate::job::{Ctx, Job, Step};
use crate::setup;
use std::time::Instant;

/// Every CI job, in the order `cargo xtask ci` runs them (cheap and most telling first).
pub const JOBS: &[Job] = &[
    Job {
        name: "fmt",
        about: "cargo fmt --all --check",
        needs_setup: false,
        steps: host::fmt,
    },
    Job {
        name: "deps",
        about: "module graphs of core, cli, xtask, tests: no import cycle; generic kernels import no arch module",
        needs_setup: false,
        steps: host::deps,
    },
    Job {
        name: "clippy",
        about: "clippy -D warnings: core + tests (default, then std), then the tools",
        needs_setup: false,
        steps: host::clippy,
    },
    Job {
        name: "models",
        about: "fetch all-MiniLM-L6-v2 and SmolLM2-135M into the cache, pack them (f32, int8; MiniLM also --flash 16MiB, SmolLM2 also with its Q4_1 blocks kept)",
        needs_setup: false,
        steps: host::models,
    },
    Job {
        name: "test-host",
        about: "cargo test: core + tests alone (micromath build), then the tools",
        needs_setup: false,
        steps: host::test_host,
    },
    Job {
        name: "test-host-std",
        about: "cargo test of core + tests with --features std (std math)",
        needs_setup: false,
        steps: host::test_host_std,
    },
    Job {
        name: "doc",
        about: "cargo doc -p topkit --no-deps with -D warnings",
        needs_setup: false,
        steps: host::doc,
    },
    Job {
        name: "cross",
        about: "build topkit with -D warnings for the 4 cross targets, default features and defmt",
        needs_setup: true,
        steps: host::cross,
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
        steps: host::fuzz_smoke,
    },
];

/// Jobs that run firmware and so need QEMU from `setup --qemu`.
const NEEDS_QEMU: &[&str] = &["test-cross", "bench-target", "cross-minilm"];

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
