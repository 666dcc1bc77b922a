//! The Hugging Face importer of `topkit pack` (tools/cli/src/import/hf.rs, quant.rs,
//! writer.rs) on arbitrary safetensors bytes and an arbitrary `config.json`: an `Err` with a
//! message, or a packed file that the core parses. Input: a little-endian u16 length `L`, then
//! `L` bytes of config.json (`L == 0`: the tiny BERT's config), then the safetensors bytes.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use safetensors::SafeTensors;
use topkit_cli::import::hf;
use topkit_cli::quant::StoreDType;

/// A model directory of this process with the tiny BERT's vocabulary and tokenizer config;
/// config.json is rewritten for every input.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("topkit-fuzz-st-{}", std::process::id()));
        topkit_fixtures::write_tiny_bert(&d).expect("temp dir is writable");
        d
    })
}

/// Largest number of f32 values the target converts (keeps executions fast and small).
const MAX_VALUES: usize = 1 << 20;

fn import(dir: &std::path::Path, st_bytes: &[u8], dtype: StoreDType) -> anyhow::Result<()> {
    let st = SafeTensors::deserialize(st_bytes)?;
    let source = hf::read_dir(dir, &st, None)?;
    let mut tensors = Vec::new();
    let mut total = 0usize;
    for m in &source.mappings {
        let (shape, values) = hf::load(&st, m)?;
        total += values.len();
        anyhow::ensure!(total <= MAX_VALUES, "too large for the fuzz target");
        tensors.push(topkit_fuzz::convert(&m.name, shape, values, dtype)?);
    }
    topkit_fuzz::write_checked(&source.config, &source.tokenizer, &tensors)?;
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (config, st_bytes) = rest.split_at(len);
    let d = dir();
    let config = if config.is_empty() {
        topkit_fixtures::config_json("bert").into_bytes()
    } else {
        config.to_vec()
    };
    std::fs::write(d.join("config.json"), config).expect("write config.json");
    let dtype = topkit_fuzz::store_dtype(st_bytes.last().copied());
    let _ = import(d, st_bytes, dtype);
});
