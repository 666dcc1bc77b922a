//! What a CI job is made of ([`Job`], [`Step`]), what its steps may look at ([`Ctx`]), and
//! the cargo invocations the jobs share. The job table and the runner are in `crate::ci`;
//! the modules that define jobs import this one only, so no job module imports the runner.

use crate::setup::{self, Route};
use crate::util::{Cmd, Res, workspace_root};
use std::path::PathBuf;

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

/// `cargo`, run in the workspace root.
pub fn cargo() -> Cmd {
    Cmd::cargo().cwd(workspace_root())
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
