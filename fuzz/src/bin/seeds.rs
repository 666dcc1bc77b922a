//! Writes the seed corpora of the fuzz targets into `<out>/<target>/`: the tiny BERT packed by
//! `topkit pack` (f32, f16, int8) and truncated pieces of it, the tiny Llama GGUF (tied and
//! untied) and pieces of it, the head of the cached all-MiniLM-L6-v2 and SmolLM2 files when
//! present, and tokenizer texts and ids from tests/data. Nothing large is committed:
//! `cargo xtask fuzz` runs this before fuzzing.
//!
//! Usage: `seeds <out> [<.tkm, .safetensors or .gguf>...]`

use std::path::{Path, PathBuf};

use topkit_cli::pack::{self, PackArgs};
use topkit_cli::quant::StoreDType;

fn put(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let out = PathBuf::from(args.next().ok_or("usage: seeds <out> [files...]")?);
    let extra: Vec<PathBuf> = args.map(PathBuf::from).collect();
    let hf = out.join("tiny-bert");
    topkit_fixtures::write_tiny_bert(&hf)?;

    // Packed models: whole (parse, parse_infer with 4 run knobs appended), and pieces.
    for (dtype, name) in [
        (StoreDType::F32, "f32"),
        (StoreDType::F16, "f16"),
        (StoreDType::Int8, "int8"),
        (StoreDType::Q4_1, "q4_1"),
        (StoreDType::Q8_0, "q8_0"),
    ] {
        let tkm = out.join(format!("tiny-{name}.tkm"));
        pack::run(&PackArgs {
            src: hf.clone(),
            output: tkm.clone(),
            dtype: Some(dtype),
            dtype_for: Vec::new(),
            flash: None,
            calib: None,
            no_gptq: false,
            max_seq: None,
        })?;
        let bytes = std::fs::read(&tkm)?;
        put(&out.join("parse"), &format!("tiny-{name}"), &bytes)?;
        for cut in [64, 256, bytes.len() / 2] {
            put(
                &out.join("parse"),
                &format!("tiny-{name}-cut{cut}"),
                &bytes[..cut],
            )?;
        }
        for (i, knobs) in [[4u8, 2, 0x82, 0], [8, 4, 0, 0x84], [1, 1, 0x80, 0x80]]
            .iter()
            .enumerate()
        {
            let mut b = bytes.clone();
            b.extend_from_slice(knobs);
            put(&out.join("parse_infer"), &format!("tiny-{name}-{i}"), &b)?;
        }
    }

    // The importer: the tiny BERT's safetensors with the default and an explicit config.
    let st = std::fs::read(hf.join("model.safetensors"))?;
    let cfg = topkit_fixtures::config_json("bert");
    let mut with_cfg = (cfg.len() as u16).to_le_bytes().to_vec();
    with_cfg.extend_from_slice(cfg.as_bytes());
    with_cfg.extend_from_slice(&st);
    let mut default_cfg = vec![0u8, 0];
    default_cfg.extend_from_slice(&st);
    put(&out.join("safetensors_import"), "tiny-config", &with_cfg)?;
    put(&out.join("safetensors_import"), "tiny", &default_cfg)?;
    put(
        &out.join("safetensors_import"),
        "tiny-head",
        &default_cfg[..default_cfg.len().min(600)],
    )?;

    // The GGUF importer: the tiny Llama (last byte picks the stored dtype), cut pieces.
    for untied in [false, true] {
        let g = topkit_fuzz::gguf::tiny_llama(untied);
        let name = if untied { "tiny-untied" } else { "tiny" };
        put(&out.join("gguf_import"), name, &g)?;
        for cut in [1024, g.len() / 2] {
            put(
                &out.join("gguf_import"),
                &format!("{name}-cut{cut}"),
                &g[..cut],
            )?;
        }
    }

    // Heads of the real files (headers, tensor tables, the first weights).
    for f in &extra {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let name = f
            .file_name()
            .map_or("file".into(), |n| n.to_string_lossy().into_owned());
        let (target, cuts): (&str, &[usize]) = if name.ends_with(".safetensors") {
            ("safetensors_import", &[4096, 65536])
        } else if name.ends_with(".gguf") {
            // The header and the first metadata (SmolLM2's tokens start within it).
            ("gguf_import", &[1024])
        } else {
            ("parse", &[4096, 65536])
        };
        for &cut in cuts {
            let piece = &bytes[..cut.min(bytes.len())];
            let mut seed = if target == "safetensors_import" {
                vec![0u8, 0]
            } else {
                Vec::new()
            };
            seed.extend_from_slice(piece);
            put(&out.join(target), &format!("{name}-head{cut}"), &seed)?;
        }
    }

    // Tokenizer texts: the golden sentences (knob byte 0x07: MiniLM vocab, both normalisers,
    // a one-slot buffer is too small so use 0x7f: 31 slots), and the long texts.
    let golden = include_str!("../../../tests/data/wordpiece_golden.jsonl");
    for (i, line) in golden.lines().enumerate().step_by(8) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let text = v["text"].as_str().unwrap_or_default();
        let mut seed = vec![0x7fu8 | ((i as u8 & 1) << 7)];
        seed.extend_from_slice(text.as_bytes());
        put(&out.join("wordpiece"), &format!("golden-{i}"), &seed)?;
    }
    let long = include_str!("../../../tools/cli/tests/data/long_texts.txt");
    for (i, line) in long.lines().enumerate().take(4) {
        let mut seed = vec![0xffu8];
        seed.extend_from_slice(line.as_bytes());
        put(&out.join("wordpiece"), &format!("long-{i}"), &seed)?;
    }

    // BPE: golden texts for both tokenizers (knob bit 0), with a short id buffer (bit 2) for
    // some; the reference ids as id sequences (bit 1, u16 little-endian) for SmolLM2's.
    let bpe_golden = include_str!("../../../tests/data/bpe_golden.jsonl");
    for (i, line) in bpe_golden.lines().enumerate().step_by(16) {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let text = v["text"].as_str().unwrap_or_default();
        for knob in [0u8, 1, 5] {
            let mut seed = vec![knob];
            seed.extend_from_slice(text.as_bytes());
            put(&out.join("bpe"), &format!("golden-{i}-{knob}"), &seed)?;
        }
        let mut seed = vec![0x03u8];
        for id in v["ids"].as_array().into_iter().flatten() {
            let id = id.as_u64().unwrap_or_default() as u16;
            seed.extend_from_slice(&id.to_le_bytes());
        }
        put(&out.join("bpe"), &format!("golden-ids-{i}"), &seed)?;
    }
    let chat = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nthe 123 cafés\n\n<|im_end|>";
    for knob in [0u8, 1] {
        let mut seed = vec![knob];
        seed.extend_from_slice(chat.as_bytes());
        put(&out.join("bpe"), &format!("chat-{knob}"), &seed)?;
    }
    Ok(())
}
