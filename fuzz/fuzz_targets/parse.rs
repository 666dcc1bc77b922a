//! `PackedModel::parse` on arbitrary bytes: `Ok` or a typed error, never a panic or an
//! out-of-bounds read (ASan). The CRC check is skipped so mutations reach the fields behind it
//! (with it, almost every mutant stops at `ChecksumMismatch`); then every view is taken.
#![no_main]

use libfuzzer_sys::fuzz_target;
use topkit::format::{PackedModel, ParseOptions, Special};
use topkit_fuzz::{aligned, aligned_view};

fuzz_target!(|data: &[u8]| {
    let buf = aligned(data);
    let bytes = aligned_view(&buf, data.len());
    // With the CRC too: same result unless the CRC is wrong.
    let _ = PackedModel::parse(bytes);
    let Ok(m) = PackedModel::parse_with(bytes, ParseOptions { verify_crc: false }) else {
        return;
    };
    for t in m.tensors() {
        let _ = t.view();
        let _ = m.find(t.name);
    }
    for i in 0..m.config().n_layers.min(64) {
        let _ = m.layer_weights(i);
    }
    let _ = m.final_norm();
    let tok = m.tokenizer();
    let vocab = tok.vocab();
    for id in 0..(vocab.len() as u32).min(256) {
        if let Some(s) = vocab.token(id) {
            assert!(
                vocab.find(s).is_some(),
                "token {id} not found by its string"
            );
        }
        let _ = vocab.sorted_id(id as usize);
    }
    for r in 0..tok.n_merges().min(256) {
        let _ = tok.merge(r);
    }
    for s in [Special::Unk, Special::Cls, Special::Sep, Special::Pad] {
        let _ = tok.special(s);
    }
    let _ = topkit::encoder::layers(&m);
});
