//! The byte-level BPE's two merge paths (the queue, with `Bpe::FAST_SLOTS_PER_BYTE` slots per
//! byte, and the rescan, with one) give the reference ids on every golden text and the same
//! ids on random texts, and hostile text (one long word or whitespace run) takes linear-ish
//! time. Needs the packed SmolLM2 of `cargo xtask fetch-model`.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use topkit::format::PackedModel;
use topkit::tokenizer::Bpe;
use topkit_cli::writer::AlignedBytes;

fn smollm2() -> &'static PackedModel<'static> {
    static FILE: OnceLock<AlignedBytes> = OnceLock::new();
    static MODEL: OnceLock<PackedModel<'static>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = cached(
            cache_dir().join("models/SmolLM2-135M-Instruct-int8.tkm"),
            "fetch-model",
        );
        let bytes = FILE.get_or_init(|| read(&path));
        PackedModel::parse(bytes.as_slice()).unwrap()
    })
}

fn encode(bpe: &Bpe<'_>, text: &str, slots_per_byte: usize) -> Vec<u32> {
    let mut ids = vec![0u32; text.len() * slots_per_byte];
    let n = bpe.encode(text, &mut ids).unwrap();
    ids.truncate(n);
    ids
}

#[test]
fn both_merge_paths_give_the_golden_ids() {
    let bpe = Bpe::new(smollm2().tokenizer()).unwrap();
    let golden = include_str!("../../../tests/data/bpe_golden.jsonl");
    let mut n = 0;
    for line in golden.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let text = v["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(v["ids"].clone()).unwrap();
        assert_eq!(encode(&bpe, text, 1), want, "rescan: {text:?}");
        assert_eq!(
            encode(&bpe, text, Bpe::FAST_SLOTS_PER_BYTE),
            want,
            "queue: {text:?}"
        );
        n += 1;
    }
    assert!(n >= 400, "{n} golden texts");
}

#[test]
fn both_merge_paths_agree_on_random_text() {
    let bpe = Bpe::new(smollm2().tokenizer()).unwrap();
    let alphabet: Vec<char> = "aaabbeeeilnnorsst  \n\t.,'0123éà€😀<|im_end|>"
        .chars()
        .collect();
    let mut rng = Lcg::new(5);
    for len in (1..400).step_by(3) {
        let text: String = (0..len)
            .map(|_| {
                let x = (rng.next() + 1.0) / 2.0;
                alphabet[((x * alphabet.len() as f32) as usize).min(alphabet.len() - 1)]
            })
            .collect();
        assert_eq!(
            encode(&bpe, &text, 1),
            encode(&bpe, &text, Bpe::FAST_SLOTS_PER_BYTE),
            "{text:?}"
        );
    }
}

#[test]
fn hostile_text_is_tokenized_in_linear_time() {
    let bpe = Bpe::new(smollm2().tokenizer()).unwrap();
    let mut rng = Lcg::new(9);
    let letters: String = (0..200_000)
        .map(|_| char::from(b'a' + ((rng.next() + 1.0) * 13.0) as u8 % 26))
        .collect();
    // 200 KB each (1 MB is the goal of an optimised build; tests run unoptimised).
    for (what, text) in [
        ("one word of a", "a".repeat(200_000)),
        ("spaces", " ".repeat(200_000)),
        ("random letters", letters),
        ("newlines and tabs", "\n\t".repeat(100_000)),
    ] {
        let start = Instant::now();
        let ids = encode(&bpe, &text, Bpe::FAST_SLOTS_PER_BYTE);
        let took = start.elapsed();
        assert!(!ids.is_empty());
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
    }
}
