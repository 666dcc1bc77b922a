//! `cargo xtask test-wasm`: builds targets/wasm for `wasm32-unknown-unknown` (build-std where
//! rustup has no prebuilt std), folds constant address offsets with binaryen's `wasm-opt`
//! (npm, pinned in targets/wasm/package-lock.json), runs `wasm-bindgen` (CLI of exactly the
//! crate's version, installed into the cache), runs the core's simd128 kernel tests in node
//! (`wasm-bindgen-test-runner`), then checks the JS API in node and the demo page in Debian's
//! Chromium (driven by playwright-core) against the host's `topkit embed`.

use crate::job::{Ctx, Step};
use crate::setup::{self, Route};
use crate::util::{Cmd, Res, cache_dir, cargo_target_dir, have, is_root, mkdirs, workspace_root};
use std::path::PathBuf;

/// Must equal the `wasm-bindgen` pin in targets/wasm/Cargo.toml.
const WASM_BINDGEN: &str = "0.2.130";
const TARGET: &str = "wasm32-unknown-unknown";
const CHROMIUM: &str = "/usr/bin/chromium";

fn crate_dir() -> PathBuf {
    workspace_root().join("targets/wasm")
}

/// Packages, host reference, screenshot.
pub fn out_dir() -> PathBuf {
    cargo_target_dir().join("wasm")
}

fn bindgen_root() -> PathBuf {
    cache_dir().join(format!("wasm-bindgen-{WASM_BINDGEN}"))
}

fn bindgen_bin() -> PathBuf {
    bindgen_root().join("bin/wasm-bindgen")
}

/// Installs wasm-bindgen-cli at exactly the crate's version into the cache (skipped when the
/// binary there reports that version).
fn install_bindgen() -> Res {
    let bin = bindgen_bin();
    if let Ok(v) = Cmd::new(&bin).arg("--version").output()
        && v.ends_with(WASM_BINDGEN)
    {
        println!("wasm: {v} present at {}", bin.display());
        return Ok(());
    }
    let install = |locked: bool| {
        let mut c = Cmd::cargo()
            .env(
                "CARGO_TARGET_DIR",
                cargo_target_dir().join("wasm-bindgen-cli"),
            )
            .args(["install", "wasm-bindgen-cli", "--version", WASM_BINDGEN])
            .arg("--root")
            .arg(bindgen_root());
        if locked {
            c = c.arg("--locked");
        }
        c.run()
    };
    // The CLI's own lock file can name a dependency version the registry (or its mirror) no
    // longer serves; the exact CLI version is what must match, so fall back to a fresh
    // resolution of its dependencies.
    if let Err(e) = install(true) {
        println!("wasm: --locked install failed ({e}); retrying without --locked");
        install(false)?;
    }
    Ok(())
}

/// The shipped build uses wasm `simd128` (every current browser and node 20 have it); the
/// scalar build (generic kernels only) is made too, for the test that both give the same bits.
#[derive(Clone, Copy)]
enum Flavour {
    Simd,
    Scalar,
}

impl Flavour {
    /// Own target folder per flavour: RUSTFLAGS differ, so sharing one would rebuild each time.
    fn target_dir(self) -> PathBuf {
        match self {
            Flavour::Simd => cargo_target_dir().join("wasm-simd"),
            Flavour::Scalar => cargo_target_dir(),
        }
    }

    fn pkg_suffix(self) -> &'static str {
        match self {
            Flavour::Simd => "",
            Flavour::Scalar => "-scalar",
        }
    }
}

/// What rustc builds.
fn wasm_file(f: Flavour) -> PathBuf {
    f.target_dir().join(TARGET).join("release/topkit_wasm.wasm")
}

/// What `wasm-opt` makes of it, the input of wasm-bindgen.
fn opt_file(f: Flavour) -> PathBuf {
    f.target_dir()
        .join(TARGET)
        .join("release/topkit_wasm.opt.wasm")
}

/// `cargo <cmd> --release --target wasm32-unknown-unknown` in targets/wasm for flavour `f`, by
/// the route setup left (std from source when rustup has no prebuilt std for wasm32).
fn cargo_wasm(ctx: &Ctx, f: Flavour, cmd: &str) -> Cmd {
    let mut c = Cmd::cargo()
        .cwd(crate_dir())
        .env("CARGO_TARGET_DIR", f.target_dir());
    let build_std = setup::route(&ctx.sysroot, TARGET) == Route::BuildStd;
    if build_std {
        c = c.env("RUSTC_BOOTSTRAP", "1");
    }
    // RUSTFLAGS reach only target artifacts (--target is given), not build scripts.
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if let Flavour::Simd = f {
        flags.push_str(" -C target-feature=+simd128");
    }
    c = c
        .env("RUSTFLAGS", flags.trim())
        .args([cmd, "--release", "--target", TARGET]);
    if build_std {
        c = c.arg("-Zbuild-std=std,panic_abort");
    }
    c
}

fn build(ctx: &Ctx, f: Flavour) -> Cmd {
    cargo_wasm(ctx, f, "build")
}

/// The core's simd128 kernels against the generic ones (targets/wasm/tests/simd128_kernels.rs),
/// in node through `wasm-bindgen-test-runner` (installed with the CLI).
fn kernel_tests(ctx: &Ctx) -> Cmd {
    cargo_wasm(ctx, Flavour::Simd, "test")
        .args(["--test", "simd128_kernels"])
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            bindgen_root().join("bin/wasm-bindgen-test-runner"),
        )
}

/// Clippy on the core as built for wasm32 with simd128 (the host's clippy never sees the
/// simd128 kernels), then on the wasm crate and its tests.
fn clippy_wasm(ctx: &Ctx) -> Vec<Step> {
    let deny = ["--", "-D", "warnings"];
    vec![
        Step::Cmd(
            cargo_wasm(ctx, Flavour::Simd, "clippy")
                .cwd(workspace_root())
                .args(["-p", "topkit", "--features", "std", "--lib"])
                .args(deny),
        ),
        Step::Cmd(
            cargo_wasm(ctx, Flavour::Simd, "clippy")
                .arg("--all-targets")
                .args(deny),
        ),
    ]
}

/// Binaryen's `wasm-opt` from targets/wasm/node_modules (`npm ci`): only
/// `--optimize-added-constants-propagate`, which folds `address + constant` into the constant
/// offset of loads and stores. rustc's LLVM leaves most of these adds in the hot loops of the
/// kernels (a known missed optimization of its wasm backend), and V8 must then compute each
/// address with an extra instruction. The fold is valid when no access wraps around address
/// 0, which `--low-memory-unused` asserts: the linker puts the 1 MiB shadow stack first
/// (stack-first layout), so the lowest 1 KiB is only ever touched by a stack overflow.
/// Features come from the module's `target_features` section.
fn wasm_opt(f: Flavour) -> Cmd {
    Cmd::new("node")
        .cwd(crate_dir())
        .arg("node_modules/binaryen/bin/wasm-opt")
        .arg(wasm_file(f))
        .args([
            "--low-memory-unused",
            "--optimize-added-constants-propagate",
            // Keep the function names (profiles, stack traces), as wasm-bindgen does.
            "--debuginfo",
            "-o",
        ])
        .arg(opt_file(f))
}

fn bindgen(f: Flavour, target: &str, dir: &str) -> Cmd {
    Cmd::new(bindgen_bin())
        .arg(opt_file(f))
        .args(["--target", target, "--out-name", "topkit_wasm", "--out-dir"])
        .arg(out_dir().join(format!("{dir}{}", f.pkg_suffix())))
}

/// Texts of the tests (one per line), shared by the host reference, node and the browser.
fn texts_file() -> PathBuf {
    crate_dir().join("test/texts.txt")
}

/// Settings the host reference is computed for: (name, kernels, k_attn, k_ff).
const SETTINGS: &[(&str, &str, Option<usize>, Option<usize>)] = &[
    ("dense", "reference", None, None),
    ("topk", "reference", Some(8), None),
    ("topk_ff", "reference", None, Some(384)),
    ("fast", "fast", None, None),
    ("fast_topk", "fast", Some(8), None),
];

/// `{"dense": {"kernels": "reference", "k_attn": null, "k_ff": null, "embeddings": [[...]...]},
/// ...}` from the host's `topkit embed --json`, one entry per [`SETTINGS`].
fn host_reference() -> Res {
    let model = crate::model::packed_path("int8");
    let mut parts = Vec::new();
    for (name, kernels, ka, kf) in SETTINGS {
        let mut c = crate::model::topkit_cli()
            .arg("embed")
            .arg(&model)
            .arg("--json")
            .args(["--kernels", kernels])
            .arg("--file")
            .arg(texts_file());
        if let Some(k) = ka {
            c = c.args(["--k-attn", &k.to_string()]);
        }
        if let Some(k) = kf {
            c = c.args(["--k-ff", &k.to_string()]);
        }
        println!("$ {c}");
        let out = c.output()?;
        let body = out
            .trim()
            .strip_prefix("{\"embeddings\":")
            .and_then(|s| s.strip_suffix('}'))
            .ok_or("unexpected output of topkit embed --json")?;
        parts.push(format!(
            "\"{name}\":{{\"kernels\":\"{kernels}\",\"k_attn\":{},\"k_ff\":{},\
             \"embeddings\":{body}}}",
            ka.map_or("null".into(), |k| k.to_string()),
            kf.map_or("null".into(), |k| k.to_string()),
        ));
    }
    mkdirs(&out_dir())?;
    let path = out_dir().join("host-ref.json");
    std::fs::write(&path, format!("{{{}}}", parts.join(",")))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("wasm: host reference in {}", path.display());
    Ok(())
}

fn node_env(c: Cmd) -> Cmd {
    c.env("TOPKIT_WASM_OUT", out_dir())
        .env("TOPKIT_MODEL", crate::model::packed_path("int8"))
        .env("TOPKIT_TEXTS", texts_file())
}

/// Debian's chromium, installed with apt-get when missing (needs root or passwordless sudo).
fn chromium() -> Res {
    if std::path::Path::new(CHROMIUM).exists() {
        println!("wasm: {CHROMIUM} present");
        return Ok(());
    }
    if !have("apt-get") {
        return Err(format!(
            "{CHROMIUM} is missing and there is no apt-get to install it"
        ));
    }
    let apt = |args: &[&str]| {
        let c = if is_root() {
            Cmd::new("apt-get")
        } else {
            Cmd::new("sudo").args(["-n", "apt-get"])
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive")
    };
    let policy = Cmd::new("apt-cache")
        .args(["policy", "chromium"])
        .output()
        .unwrap_or_default();
    if !policy.contains("Candidate:") || policy.contains("Candidate: (none)") {
        apt(&["-q", "update"]).run()?;
    }
    apt(&["-q", "-y", "--no-install-recommends", "install", "chromium"]).run()?;
    if std::path::Path::new(CHROMIUM).exists() {
        Ok(())
    } else {
        Err(format!(
            "apt-get installed chromium but {CHROMIUM} is missing"
        ))
    }
}

/// The steps of `test-wasm`.
pub fn test_wasm(ctx: &Ctx) -> Vec<Step> {
    let dir = crate_dir();
    let mut steps = vec![
        Step::Check(
            format!("wasm-bindgen-cli {WASM_BINDGEN} in the cache"),
            Box::new(install_bindgen),
        ),
        // binaryen (wasm-opt) and playwright-core, pinned in package-lock.json.
        Step::Cmd(Cmd::new("npm").cwd(&dir).args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
        ])),
        Step::Cmd(build(ctx, Flavour::Simd)),
        Step::Cmd(wasm_opt(Flavour::Simd)),
        Step::Cmd(bindgen(Flavour::Simd, "nodejs", "pkg-node")),
        Step::Cmd(bindgen(Flavour::Simd, "web", "pkg-web")),
        Step::Cmd(build(ctx, Flavour::Scalar)),
        Step::Cmd(wasm_opt(Flavour::Scalar)),
        Step::Cmd(bindgen(Flavour::Scalar, "nodejs", "pkg-node")),
        Step::Check(
            "wasm size".into(),
            Box::new(|| {
                let n = std::fs::metadata(out_dir().join("pkg-web/topkit_wasm_bg.wasm"))
                    .map_err(|e| e.to_string())?
                    .len();
                println!("wasm: topkit_wasm_bg.wasm is {n} bytes");
                Ok(())
            }),
        ),
    ];
    steps.extend(clippy_wasm(ctx));
    steps.extend([
        Step::Cmd(kernel_tests(ctx)),
        Step::Check(
            "host reference (topkit embed --json)".into(),
            Box::new(host_reference),
        ),
        Step::Cmd(node_env(
            Cmd::new("node")
                .cwd(&dir)
                .args(["--test", "test/api.test.mjs"]),
        )),
        Step::Check("chromium (Debian)".into(), Box::new(chromium)),
        Step::Cmd(
            node_env(Cmd::new("node").cwd(&dir).arg("test/browser.mjs"))
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
                .env("TOPKIT_CHROMIUM", CHROMIUM),
        ),
    ]);
    steps
}
