//! The model cache, where `cargo xtask fetch-model` and the CI `models` job leave the packed
//! models the golden tests read.

use std::path::{Path, PathBuf};

/// The cache folder: `$TOPKIT_CACHE` or `~/.cache/topkit`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("TOPKIT_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is not set")).join(".cache/topkit")
        }
    }
}

/// The bytes of the file at `path`, in 16-byte aligned memory. Panics naming `make` (the
/// command that makes the file) when it is missing: tests on the real models never skip.
pub fn read_aligned(path: &Path, make: &str) -> Vec<u128> {
    let bytes = std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `{make}` first", path.display()));
    let mut words = vec![0u128; bytes.len().div_ceil(16)];
    bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
    words
}
