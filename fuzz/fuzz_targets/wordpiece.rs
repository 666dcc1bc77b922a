//! WordPiece on arbitrary text (lossy UTF-8 of the input) with a small vocabulary and with
//! all-MiniLM-L6-v2's, every normaliser setting and id buffers of 0 to 63 slots: `Ok` with a
//! framed result (`[CLS] ... [SEP]`, ids in range), or a typed error for too small a buffer.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use topkit::tokenizer::{Vocab, WordPiece, WordPieceOptions};
use topkit_fixtures::TextVocab;

fn vocabs() -> &'static [TextVocab; 2] {
    static V: OnceLock<[TextVocab; 2]> = OnceLock::new();
    V.get_or_init(|| [TextVocab::tiny(), TextVocab::minilm()])
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, text)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(text);
    let vocab = &vocabs()[usize::from(knob & 1)];
    let options = WordPieceOptions {
        lowercase: knob & 2 != 0,
        strip_accents: knob & 4 != 0,
    };
    let wp = WordPiece::new(vocab, options).expect("both vocabularies have the specials");
    let mut ids = vec![u32::MAX; usize::from(knob >> 2)];
    match wp.encode(&text, &mut ids) {
        Ok(enc) => {
            assert!(enc.len >= 2 && enc.len <= ids.len());
            assert_eq!(ids[0], wp.cls());
            assert_eq!(ids[enc.len - 1], wp.sep());
            assert!(ids[..enc.len].iter().all(|&id| (id as usize) < vocab.len()));
        }
        Err(e) => assert!(ids.len() < 2, "unexpected error {e}"),
    }
});
