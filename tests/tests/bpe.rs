//! The byte-level BPE tokenizer of the packed SmolLM2-135M-Instruct (made by `cargo xtask
//! fetch-model`; these tests fail, not skip, when it is absent) against the golden ids of the
//! Hugging Face tokenizer (tools/reference/smollm2_tokenizer_golden.py): every text encodes to
//! exactly the reference ids and decodes back to the text; arbitrary strings never panic and
//! round-trip.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::Value;
use topkit::Error;
use topkit::format::PackedModel;
use topkit::tokenizer::{Bpe, Utf8Stream, byte_char, char_byte};
use topkit_tests::cache::{cache_dir, read_aligned};
use topkit_tests::golden::{ids, list, parse, string};

/// The packed int8 file (the tokenizer section is the same in every dtype), 16-byte aligned.
fn packed() -> &'static [u8] {
    static FILE: OnceLock<Vec<u128>> = OnceLock::new();
    let words = FILE.get_or_init(|| {
        let path = cache_dir().join("models/SmolLM2-135M-Instruct-int8.tkm");
        read_aligned(&path, "cargo xtask fetch-model")
    });
    bytemuck::cast_slice(words)
}

fn model() -> &'static PackedModel<'static> {
    static MODEL: OnceLock<PackedModel<'static>> = OnceLock::new();
    MODEL.get_or_init(|| PackedModel::parse(packed()).unwrap())
}

struct Golden {
    text: String,
    ids: Vec<u32>,
    decoded: String,
}

fn golden() -> Vec<Golden> {
    include_str!("../data/bpe_golden.jsonl")
        .lines()
        .map(|l| {
            let v = parse(l);
            Golden {
                text: string(&v["text"]),
                ids: ids(&v["ids"]),
                decoded: string(&v["decoded"]),
            }
        })
        .collect()
}

fn encode(bpe: &Bpe<'_>, text: &str) -> Result<Vec<u32>, Error> {
    // One id per byte is always enough (every id covers at least one byte).
    let mut ids = vec![0u32; text.len()];
    let n = bpe.encode(text, &mut ids)?;
    ids.truncate(n);
    Ok(ids)
}

fn decode(bpe: &Bpe<'_>, ids: &[u32]) -> String {
    let mut out = vec![0u8; ids.len() * 64 + 16];
    let n = bpe.decode(ids, &mut out).unwrap();
    String::from_utf8_lossy(&out[..n]).into_owned()
}

fn decode_bytes(bpe: &Bpe<'_>, ids: &[u32]) -> Vec<u8> {
    let mut out = vec![0u8; ids.len() * 64 + 16];
    let n = bpe.decode(ids, &mut out).unwrap();
    out.truncate(n);
    out
}

/// The bytes of `text` that have a token (the others are dropped, as by the reference).
fn kept_bytes(bpe: &Bpe<'_>, text: &str) -> Vec<u8> {
    text.bytes().filter(|&b| bpe.has_byte(b)).collect()
}

#[test]
fn gpt2_byte_map_is_a_bijection() {
    let mut seen = std::collections::HashSet::new();
    for b in 0..=255u8 {
        let c = byte_char(b);
        assert_eq!(char_byte(c), Some(b));
        assert!(seen.insert(c));
    }
    assert_eq!(byte_char(b' '), 'Ġ');
    assert_eq!(byte_char(b'\n'), 'Ċ');
    assert_eq!(byte_char(b'A'), 'A');
    assert_eq!(char_byte('Ā'), Some(0));
    assert_eq!(char_byte('€'), None);
}

#[test]
fn every_golden_text_encodes_to_the_reference_ids() {
    let m = model();
    let bpe = Bpe::new(m.tokenizer()).unwrap();
    let golden = golden();
    assert!(golden.len() >= 400, "{} golden texts", golden.len());
    let mut wrong = Vec::new();
    for g in &golden {
        let ids = encode(&bpe, &g.text).unwrap();
        if ids != g.ids {
            wrong.push(format!(
                "{:?}\n  ours {:?}\n  ref  {:?}",
                g.text, ids, g.ids
            ));
        }
        assert_eq!(decode(&bpe, &g.ids), g.decoded, "decode of {:?}", g.text);
        assert_eq!(
            decode_bytes(&bpe, &g.ids),
            kept_bytes(&bpe, &g.text),
            "round trip of {:?}",
            g.text
        );
    }
    assert!(
        wrong.is_empty(),
        "{} of {} texts differ:\n{}",
        wrong.len(),
        golden.len(),
        wrong.join("\n")
    );
}

#[test]
fn special_tokens_are_matched_whole() {
    let m = model();
    let bpe = Bpe::new(m.tokenizer()).unwrap();
    let ids = encode(&bpe, "<|im_start|>user\nhi<|im_end|>").unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    // Not special when not spelled exactly.
    let ids = encode(&bpe, "<|im_start |>").unwrap();
    assert!(!ids.contains(&1));
}

#[test]
fn bad_input_is_a_typed_error() {
    let m = model();
    let bpe = Bpe::new(m.tokenizer()).unwrap();
    let mut small = [0u32; 3];
    assert!(matches!(
        bpe.encode("The quick brown fox", &mut small),
        Err(Error::ShapeMismatch { .. })
    ));
    let mut out = [0u8; 64];
    assert!(matches!(
        bpe.decode(&[49152], &mut out),
        Err(Error::TokenOutOfRange { id: 49152, .. })
    ));
    let mut tiny = [0u8; 2];
    let ids = encode(&bpe, "Hello world").unwrap();
    assert!(matches!(
        bpe.decode(&ids, &mut tiny),
        Err(Error::ShapeMismatch { .. })
    ));
}

#[test]
fn streaming_decode_holds_split_characters() {
    let m = model();
    let bpe = Bpe::new(m.tokenizer()).unwrap();
    let text = "emoji 😀 and 中文 and é";
    let ids = encode(&bpe, text).unwrap();
    let mut s = Utf8Stream::new();
    let mut got = String::new();
    let mut emit = |c: char| got.push(c);
    for &id in &ids {
        bpe.token_bytes(id, |b| s.push(b, &mut emit)).unwrap();
    }
    s.finish(&mut emit);
    assert_eq!(got, text);
    // A cut character is held, then replaced at the end.
    let mut s = Utf8Stream::new();
    let mut got = String::new();
    let mut emit = |c: char| got.push(c);
    for &b in &"é".as_bytes()[..1] {
        s.push(b, &mut emit);
    }
    assert_eq!(s.pending(), 1);
    s.finish(&mut emit);
    assert_eq!(got, "\u{FFFD}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_strings_round_trip(s in any::<String>()) {
        let m = model();
        let bpe = Bpe::new(m.tokenizer()).unwrap();
        let ids = encode(&bpe, &s).unwrap();
        prop_assert_eq!(decode_bytes(&bpe, &ids), kept_bytes(&bpe, &s));
    }

    #[test]
    fn ascii_mixes_round_trip(s in "[a-zA-Z0-9 '\\n\\t.,!?<|>_-]{0,80}") {
        let m = model();
        let bpe = Bpe::new(m.tokenizer()).unwrap();
        let ids = encode(&bpe, &s).unwrap();
        prop_assert_eq!(decode(&bpe, &ids), s);
    }
}

/// The prompts of the decoder goldens (tests/data/smollm2_golden.json, chat template
/// included, and the 640-token long text) tokenize to the ids the reference model was fed.
#[test]
fn decoder_golden_prompts_tokenize_like_the_reference() {
    let m = model();
    let bpe = Bpe::new(m.tokenizer()).unwrap();
    let g = parse(include_str!("../data/smollm2_golden.json"));
    let text_ids = |p: &Value| (string(&p["text"]), ids(&p["ids"]));
    let mut cases = list(&g["prompts"], text_ids);
    cases.push(text_ids(&g["long"]));
    assert_eq!(cases.len(), 5);
    assert!(cases[4].1.len() >= 500);
    for (text, want) in cases {
        assert_eq!(encode(&bpe, &text).unwrap(), want, "{text:?}");
    }
}
