//! `cargo xtask fuzz [--time SECONDS] [TARGET...]`: builds the libFuzzer targets of `fuzz/`
//! with the nightly toolchain and runs each for a bounded time; `cargo xtask asan`: the core's
//! host tests under AddressSanitizer.
//!
//! No cargo-fuzz install: the targets are built with the flags cargo-fuzz passes (sanitizer
//! coverage, AddressSanitizer, debug assertions, `--cfg fuzzing`), which saves compiling
//! cargo-fuzz itself on a fresh CI machine. libFuzzer's C++ part is compiled by
//! `libfuzzer-sys`'s build script (needs a C++ compiler: g++).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{Cmd, Res, cache_dir, mkdirs, workspace_root};

/// Every fuzz target (a `[[bin]]` of fuzz/Cargo.toml).
pub const TARGETS: &[&str] = &[
    "parse",
    "parse_infer",
    "wordpiece",
    "bpe",
    "safetensors_import",
    "gguf_import",
];

/// Seconds per target of a plain `cargo xtask fuzz`.
pub const DEFAULT_SECONDS: u64 = 60;

/// Seconds per target of the CI smoke run.
pub const SMOKE_SECONDS: u64 = 15;

const HOST: &str = "x86_64-unknown-linux-gnu";

/// The flags cargo-fuzz 0.13 uses for `cargo fuzz build` (ASan, inline 8-bit counters,
/// compare tracing), plus the nightly flag that accepts a std not built with the sanitizer.
const FUZZ_FLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "-Cllvm-args=-sanitizer-coverage-stack-depth",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
    "-Cforce-frame-pointers",
    "-Zsanitizer=address",
    "-Cunsafe-allow-abi-mismatch=sanitizer",
];

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("fuzz"),
        _ => workspace_root().join("fuzz").join("target"),
    }
}

/// `cargo +nightly` with the outer cargo's settings cleared (xtask runs under stable).
fn nightly_cargo(flags: &[&str]) -> Cmd {
    Cmd::new("cargo")
        .arg("+nightly")
        .env("RUSTUP_TOOLCHAIN", "nightly")
        // CARGO_ENCODED_RUSTFLAGS wins over RUSTFLAGS: set it, so nothing outer leaks in.
        .env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"))
        .env("RUSTFLAGS", "")
}

fn check_nightly() -> Res {
    Cmd::new("rustc")
        .args(["+nightly", "--version"])
        .output()
        .map(|v| println!("nightly toolchain: {v}"))
        .map_err(|e| format!("the fuzz and asan jobs need a nightly toolchain (rustup toolchain install nightly): {e}"))
}

/// Options of `cargo xtask fuzz`.
pub struct FuzzOpts {
    /// Seconds per target.
    pub seconds: u64,
    /// Targets to run (all when empty).
    pub targets: Vec<String>,
}

/// Parses `[--time SECONDS] [TARGET...]`.
pub fn parse_args(args: &[&str]) -> Res<FuzzOpts> {
    let mut opts = FuzzOpts {
        seconds: DEFAULT_SECONDS,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(&a) = it.next() {
        if a == "--time" {
            let v = it.next().ok_or("--time needs a number of seconds")?;
            opts.seconds = v
                .parse()
                .map_err(|_| format!("--time: `{v}` is not a number of seconds"))?;
        } else if TARGETS.contains(&a) {
            opts.targets.push(a.to_string());
        } else {
            return Err(format!(
                "unknown fuzz target `{a}` (targets: {})",
                TARGETS.join(", ")
            ));
        }
    }
    Ok(opts)
}

/// What one target's run did.
struct Outcome {
    target: String,
    execs: u64,
    corpus: u64,
    secs: f64,
    crashed: bool,
}

/// Builds the targets and the seed writer, writes the seeds, runs each target for
/// `opts.seconds`, prints a table; fails if any target crashed (its input is kept under
/// `<cache>/fuzz/artifacts/<target>/`).
pub fn fuzz(opts: &FuzzOpts) -> Res {
    check_nightly()?;
    let root = workspace_root();
    let manifest = root.join("fuzz").join("Cargo.toml");
    let tdir = target_dir();
    let t0 = Instant::now();
    nightly_cargo(FUZZ_FLAGS)
        .args(["build", "--release", "--bins", "--target", HOST])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &tdir)
        .run()?;
    println!("fuzz build: {:.0} s", t0.elapsed().as_secs_f64());
    let bin_dir = tdir.join(HOST).join("release");

    let work = cache_dir().join("fuzz");
    let seeds = work.join("seeds");
    let _ = std::fs::remove_dir_all(&seeds);
    mkdirs(&seeds)?;
    let mut extra: Vec<PathBuf> = vec![
        crate::model::packed_path("int8"),
        crate::model::model_dir().join("model.safetensors"),
        crate::model::smollm2::gguf_path(),
    ];
    extra.retain(|p| p.is_file());
    Cmd::new(bin_dir.join("seeds"))
        .arg(&seeds)
        .args(&extra)
        // The packer's per-tensor table is noise here.
        .env("ASAN_OPTIONS", "detect_leaks=0")
        .output()?;

    let targets: Vec<String> = if opts.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        opts.targets.clone()
    };
    let mut outcomes = Vec::new();
    for t in &targets {
        outcomes.push(run_target(&bin_dir, &work, &seeds, t, opts.seconds)?);
    }
    println!(
        "\n{:<20} {:>12} {:>8} {:>9} {:>8}  result",
        "target", "executions", "exec/s", "corpus", "seconds"
    );
    for o in &outcomes {
        println!(
            "{:<20} {:>12} {:>8.0} {:>9} {:>8.0}  {}",
            o.target,
            o.execs,
            o.execs as f64 / o.secs.max(1e-3),
            o.corpus,
            o.secs,
            if o.crashed { "CRASH" } else { "ok" }
        );
    }
    let crashed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.crashed)
        .map(|o| o.target.as_str())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "crashes in {} (inputs under {})",
            crashed.join(", "),
            work.join("artifacts").display()
        ))
    }
}

fn stat(log: &str, key: &str) -> u64 {
    log.lines()
        .rev()
        .filter_map(|l| l.strip_prefix(key))
        .find_map(|v| v.trim_start_matches(':').trim().parse().ok())
        .unwrap_or(0)
}

fn run_target(bin_dir: &Path, work: &Path, seeds: &Path, target: &str, secs: u64) -> Res<Outcome> {
    let corpus = work.join("corpus").join(target);
    let artifacts = work.join("artifacts").join(target);
    mkdirs(&corpus)?;
    mkdirs(&artifacts)?;
    let log_path = work.join(format!("{target}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut cmd = Command::new(bin_dir.join(target));
    cmd.arg(&corpus);
    let seed_dir = seeds.join(target);
    if seed_dir.is_dir() {
        cmd.arg(&seed_dir);
    }
    cmd.arg(format!("-max_total_time={secs}"))
        .arg("-print_final_stats=1")
        .arg("-timeout=20")
        .arg("-rss_limit_mb=3072")
        .arg("-max_len=262144")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    println!(
        "$ {} {} ... -max_total_time={secs}    (log: {})",
        bin_dir.join(target).display(),
        corpus.display(),
        log_path.display()
    );
    let t0 = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start fuzz target {target}: {e}"))?;
    let secs = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let crashed = !status.success();
    if crashed {
        // The sanitizer or panic report, without the whole coverage log.
        let tail: Vec<&str> = text.lines().rev().take(60).collect();
        for l in tail.into_iter().rev() {
            eprintln!("  | {l}");
        }
    }
    let corpus_files = std::fs::read_dir(&corpus).map_or(0, |d| d.count() as u64);
    Ok(Outcome {
        target: target.to_string(),
        execs: stat(&text, "stat::number_of_executed_units"),
        corpus: corpus_files,
        secs,
        crashed,
    })
}

/// The core's unit tests and the integration tests under AddressSanitizer (nightly), in the
/// micromath and the `std` build. The `std` build is the one with the core's `unsafe` code,
/// the x86-64 AVX2/FMA kernels (core/src/kernels/x86_64/: unaligned SIMD loads and stores
/// through raw pointers): tests/tests/fast_kernels.rs checks each against the generic kernel
/// and the MiniLM and SmolLM2 tests run whole models through them. Both builds also cover
/// the dependencies' unsafe code (bytemuck casts of weight bytes, heapless).
pub fn asan() -> Res {
    check_nightly()?;
    let mut flags = vec![
        "-Zsanitizer=address",
        "-Cunsafe-allow-abi-mismatch=sanitizer",
    ];
    flags.push("-Cforce-frame-pointers");
    let tdir = target_dir().join("asan");
    // Every integration test but compile_fail: trybuild compiles its cases with this nightly,
    // whose diagnostics differ from the stable ones the expected files hold.
    let dir = workspace_root().join("tests").join("tests");
    let mut tests: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
        .filter(|n| n != "compile_fail")
        .collect();
    tests.sort();
    for features in [&[][..], &["--features", "std"][..]] {
        nightly_cargo(&flags)
            .args([
                "test",
                "-p",
                "topkit",
                "-p",
                "topkit-tests",
                "--target",
                HOST,
                "--lib",
            ])
            .args(tests.iter().flat_map(|t| ["--test", t.as_str()]))
            .args(features)
            .env("CARGO_TARGET_DIR", &tdir)
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .cwd(workspace_root())
            .run()?;
    }
    Ok(())
}
