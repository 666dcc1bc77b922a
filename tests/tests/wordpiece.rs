//! WordPiece against golden ids from the reference tokenizer (Hugging Face `tokenizers` with
//! all-MiniLM-L6-v2's tokenizer.json; tools/reference/wordpiece_golden.py). Exact match.

use topkit::tokenizer::{WordPiece, WordPieceOptions};
use topkit_tests::golden::{ids, parse};
use topkit_tests::vocab::TextVocab;

const MAX_SEQ: usize = 256;

#[test]
fn matches_reference_ids_on_golden_sentences() {
    let vocab = TextVocab::minilm();
    let wp = WordPiece::new(&vocab, WordPieceOptions::default()).unwrap();
    let golden = include_str!("../data/wordpiece_golden.jsonl");
    let mut failures = Vec::new();
    let mut count = 0;
    for line in golden.lines() {
        let case = parse(line);
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let mut ids = [0u32; MAX_SEQ];
        let enc = wp.encode(text, &mut ids).unwrap();
        let got = &ids[..enc.len];
        if got != want.as_slice() {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
        if enc.truncated {
            assert_eq!(
                want.len(),
                MAX_SEQ,
                "only a full window can be truncated: {text:?}"
            );
        }
        count += 1;
    }
    assert!(count >= 300, "golden file has only {count} cases");
    assert!(
        failures.is_empty(),
        "{} of {count} differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn long_texts_are_truncated_and_say_so() {
    let vocab = TextVocab::minilm();
    let wp = WordPiece::new(&vocab, WordPieceOptions::default()).unwrap();
    let text = "word ".repeat(300);
    let mut ids = [0u32; MAX_SEQ];
    let enc = wp.encode(&text, &mut ids).unwrap();
    assert_eq!(enc.len, MAX_SEQ);
    assert!(enc.truncated);
    assert_eq!(ids[0], wp.cls());
    assert_eq!(ids[MAX_SEQ - 1], wp.sep());
    // Exactly filling the window is not truncation.
    let exact = "word ".repeat(MAX_SEQ - 2);
    let enc = wp.encode(&exact, &mut ids).unwrap();
    assert_eq!((enc.len, enc.truncated), (MAX_SEQ, false));
    let short = wp.encode("two words", &mut ids).unwrap();
    assert_eq!((short.len, short.truncated), (4, false));
}

#[test]
fn unknown_pieces_become_unk_and_missing_specials_are_errors() {
    let vocab = TextVocab::minilm();
    let wp = WordPiece::new(&vocab, WordPieceOptions::default()).unwrap();
    let mut ids = [0u32; 8];
    // A character that is in no vocabulary piece.
    let enc = wp.encode("\u{1F680}", &mut ids).unwrap();
    assert_eq!(&ids[..enc.len], &[wp.cls(), wp.unk(), wp.sep()]);

    let tiny = TextVocab::parse("[PAD]\n[CLS]\n[SEP]\nhello\n");
    let err = WordPiece::new(&tiny, WordPieceOptions::default()).unwrap_err();
    assert_eq!(err, topkit::Error::MissingToken("[UNK]"));

    let err = wp.encode("x", &mut ids[..1]).unwrap_err();
    assert!(matches!(err, topkit::Error::ShapeMismatch { .. }));
}

proptest::proptest! {
    /// Any text and any window size: no panic, `[CLS] ... [SEP]` framing, ids in the vocabulary,
    /// and the tokens of a longer window start with those of a shorter one.
    #[test]
    fn any_text_is_framed_and_prefix_stable(text in "\\PC{0,200}|[a-z ]{0,300}", window in 2usize..64) {
        let vocab = TextVocab::minilm();
        let wp = WordPiece::new(&vocab, WordPieceOptions::default()).unwrap();
        let mut small = vec![0u32; window];
        let mut big = vec![0u32; 512];
        let a = wp.encode(&text, &mut small).unwrap();
        let b = wp.encode(&text, &mut big).unwrap();
        proptest::prop_assert!(a.len >= 2 && a.len <= window);
        proptest::prop_assert_eq!(small[0], wp.cls());
        proptest::prop_assert_eq!(small[a.len - 1], wp.sep());
        proptest::prop_assert!(big[..b.len].iter().all(|&id| (id as usize) < 30522));
        proptest::prop_assert_eq!(&small[..a.len - 1], &big[..a.len - 1]);
        proptest::prop_assert_eq!(a.truncated, b.len > a.len);
    }
}
