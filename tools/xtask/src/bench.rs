//! `cargo xtask bench`: the host benchmarks of `benches/` (topkit side by side with candle,
//! memory scaling). Not a CI job: candle takes minutes to build and timings need a quiet
//! machine. Builds in release, fetches and packs the model first if needed, pins candle to
//! one thread.

use crate::util::{Cmd, Res, workspace_root};

/// Runs `topkit-bench <args>` (default: `speed`, then `memory --out docs`).
pub fn bench(args: &[&str]) -> Res {
    crate::model::fetch_and_pack()?;
    let run = |a: &[&str]| {
        Cmd::cargo()
            .cwd(workspace_root())
            .env("RAYON_NUM_THREADS", "1")
            .args(["run", "--release", "--quiet", "-p", "topkit-bench", "--"])
            .args(a.iter().copied())
            .run()
    };
    if args.is_empty() {
        run(&["speed"])?;
        run(&["memory", "--out", "docs"])
    } else {
        run(args)
    }
}
