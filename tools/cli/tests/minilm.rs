//! The real all-MiniLM-L6-v2 (fetched by `cargo xtask fetch-model` into the cache; these
//! tests fail, not skip, when it is absent): pack as f32, f16 and int8, read every weight back
//! against the safetensors file, check the sizes, and the budget verdicts of issue 3.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use safetensors::SafeTensors;
use topkit::format::{PackedModel, Special};

const LAYERS: usize = 6;

fn packed(dtype: &'static str) -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static FILES: [OnceLock<PathBuf>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let i = ["f32", "f16", "int8"]
        .iter()
        .position(|d| *d == dtype)
        .unwrap();
    FILES[i].get_or_init(|| {
        pack(
            &minilm_dir(),
            &dir.path().join(format!("minilm-{dtype}.tkm")),
            // The whole position table (sentence_bert_config.json's 256 is the default).
            &["--dtype", dtype, "--max-seq", "512"],
        )
    })
}

fn round_trip(dtype: &'static str) {
    let src = std::fs::read(minilm_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&src).unwrap();
    let bytes = read(packed(dtype));
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    check_bert(&m, LAYERS, dtype, None, |name| st_f32(&st, name));
}

#[test]
fn f32_round_trip_is_exact() {
    round_trip("f32");
}

#[test]
fn f16_round_trip_within_half_an_ulp() {
    round_trip("f16");
}

#[test]
fn int8_round_trip_within_half_a_step() {
    round_trip("int8");
}

#[test]
fn sizes_and_tokenizer() {
    let len = |d| std::fs::metadata(packed(d)).unwrap().len() as f64;
    let (f32_, f16_, i8_) = (len("f32"), len("f16"), len("int8"));
    // Matrices are 4, 2 and 1(+ row scales) bytes per weight; vectors, tokenizer and tables
    // are the same in all three.
    assert!(
        (0.49..0.52).contains(&(f16_ / f32_)),
        "f16/f32 = {}",
        f16_ / f32_
    );
    assert!(
        (0.24..0.27).contains(&(i8_ / f32_)),
        "int8/f32 = {}",
        i8_ / f32_
    );

    let bytes = read(packed("int8"));
    let m = PackedModel::parse(bytes.as_slice()).unwrap();
    let c = m.config();
    assert_eq!(
        (
            c.vocab_size,
            c.d_model,
            c.n_layers,
            c.n_heads,
            c.d_ff,
            c.max_seq
        ),
        (30522, 384, 6, 12, 1536, 512)
    );
    let t = m.tokenizer();
    let vocab = std::fs::read_to_string(minilm_dir().join("vocab.txt")).unwrap();
    let vocab: Vec<&str> = vocab.lines().collect();
    assert_eq!(t.vocab().len(), vocab.len());
    for (i, tok) in vocab.iter().enumerate() {
        assert_eq!(t.vocab().token(i as u32), Some(*tok));
        assert_eq!(t.vocab().find(tok), Some(i as u32));
    }
    assert_eq!(t.special(Special::Cls), Some(101));
    assert_eq!(t.special(Special::Sep), Some(102));
    assert_eq!(t.special(Special::Unk), Some(100));
    assert_eq!(t.special(Special::Pad), Some(0));
    assert!(t.lowercase());
    assert_eq!(m.file_config().pooling, topkit::format::Pooling::Mean);
    assert!(m.file_config().normalize);
}

#[test]
fn budget_verdicts_on_int8() {
    let f = s(packed("int8"));
    let o = topkit(&["budget", f, "--seq", "256", "--ram", "4M"]);
    assert_eq!(o.code, 0, "{}{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("RAM: fits"), "{}", o.stdout);

    let o = topkit(&["budget", f, "--seq", "256", "--ram", "64K"]);
    assert_eq!(o.code, 1, "{}{}", o.stdout, o.stderr);
    // 256 tokens x 384 x 4 bytes of hidden states alone exceed 64 KiB.
    assert!(
        o.stdout
            .contains("RAM: DOES NOT FIT: buffer `hidden` (persistent phase, 384.0 KiB)"),
        "{}",
        o.stdout
    );

    let o = topkit(&["budget", f, "--seq", "256", "--flash", "16M"]);
    assert_eq!(
        o.code, 1,
        "a 22 MiB file does not fit 16 MiB of flash: {}",
        o.stdout
    );
    let o = topkit(&[
        "budget", f, "--seq", "128", "--k-attn", "32", "--ram", "4M", "--flash", "32M",
    ]);
    assert_eq!(o.code, 0, "{}", o.stdout);
}
