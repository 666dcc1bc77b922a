//! The byte-level BPE tokenizer of the core on arbitrary bytes, with a tiny BPE made in code
//! (the tiny Llama GGUF of `topkit_fuzz::gguf` through the importer: 256 byte tokens, 3 added
//! tokens, 12 merges) and with SmolLM2-135M-Instruct's (the tokenizer section of the cached
//! packed file, when `cargo xtask fetch-model` has made it).
//!
//! Input: a knob byte, then the payload. Knob bit 0: SmolLM2's tokenizer (the tiny one when
//! it is not cached); bit 1: the payload is token ids (u16 little-endian, taken modulo
//! vocab + 4 so some are out of range), else text (lossy UTF-8); bit 2: an id buffer of half
//! the text's bytes instead of `Bpe::FAST_SLOTS_PER_BYTE` slots per byte (the merge queue);
//! bit 3: a decode buffer of 7 bytes.
//!
//! Checks: encode gives ids in range and decodes back to the text's bytes (the bytes without a
//! token dropped, as documented), or a `ShapeMismatch` only for a short buffer; for texts of
//! up to 4 KiB, the merge queue and the rescan (one slot per byte) give the same ids; with
//! the queue, time is near-linear, so libFuzzer's `-timeout` catches a quadratic path on the
//! long words of `-max_len`; decoding ids
//! is `Ok` exactly when every id is in range (else `TokenOutOfRange` naming the first bad
//! one), `ShapeMismatch` for a short buffer; the streaming `Utf8Stream` over the decoded bytes
//! gives what `String::from_utf8_lossy` gives, holding at most 3 bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use topkit::Error;
use topkit::format::{PackedModel, ParseOptions};
use topkit::tokenizer::{Bpe, Utf8Stream};
use topkit_cli::quant::StoreDType;
use topkit_cli::writer::AlignedBytes;

/// The packed files whose tokenizers are fuzzed: the tiny one, then SmolLM2's when cached
/// (their bytes live in statics for the process's lifetime).
fn models() -> &'static [PackedModel<'static>] {
    static TINY: OnceLock<AlignedBytes> = OnceLock::new();
    static SMOL: OnceLock<Option<(Vec<u128>, usize)>> = OnceLock::new();
    static M: OnceLock<Vec<PackedModel<'static>>> = OnceLock::new();
    M.get_or_init(|| {
        let tiny = TINY.get_or_init(|| {
            topkit_fuzz::gguf::import(&topkit_fuzz::gguf::tiny_llama(false), StoreDType::F32)
                .expect("the tiny GGUF packs")
        });
        let mut v =
            vec![PackedModel::parse(tiny.as_slice()).expect("the packer's self-check passed")];
        let smol = SMOL.get_or_init(|| {
            let path = topkit_fuzz::cache_dir().join("models/SmolLM2-135M-Instruct-int8.tkm");
            match std::fs::read(&path) {
                Ok(bytes) => Some((topkit_fuzz::aligned(&bytes), bytes.len())),
                Err(e) => {
                    eprintln!("{}: {e}: fuzzing the tiny BPE only", path.display());
                    None
                }
            }
        });
        if let Some((words, len)) = smol {
            let bytes = topkit_fuzz::aligned_view(words, *len);
            let m = PackedModel::parse_with(bytes, ParseOptions { verify_crc: false })
                .expect("the cached SmolLM2 file parses");
            v.push(m);
        }
        v
    })
}

fn decode_all(bpe: &Bpe<'_>, ids: &[u32]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for &id in ids {
        bpe.token_bytes(id, |b| out.push(b))?;
    }
    Ok(out)
}

fn stream(bytes: &[u8]) -> String {
    let mut s = Utf8Stream::new();
    let mut text = String::new();
    let mut emit = |c: char| text.push(c);
    for &b in bytes {
        s.push(b, &mut emit);
        assert!(s.pending() <= 3);
    }
    s.finish(&mut emit);
    assert_eq!(s.pending(), 0);
    text
}

fuzz_target!(|data: &[u8]| {
    let Some((&knob, payload)) = data.split_first() else {
        return;
    };
    let models = models();
    let m = &models[usize::from(knob & 1).min(models.len() - 1)];
    let bpe = Bpe::new(m.tokenizer()).expect("both files hold a byte-level BPE");
    let vocab = bpe.vocab_size();

    let ids: Vec<u32> = if knob & 2 != 0 {
        payload
            .chunks_exact(2)
            .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])) % (vocab as u32 + 4))
            .collect()
    } else {
        let text = String::from_utf8_lossy(payload);
        let slots = if knob & 4 != 0 {
            text.len() / 2
        } else {
            text.len() * Bpe::FAST_SLOTS_PER_BYTE
        };
        let mut ids = vec![u32::MAX; slots];
        match bpe.encode(&text, &mut ids) {
            Ok(n) => ids.truncate(n),
            Err(Error::ShapeMismatch { .. }) if knob & 4 != 0 => return,
            Err(e) => panic!("encode failed with room for one id per byte: {e}"),
        }
        assert!(
            ids.iter().all(|&id| (id as usize) < vocab),
            "id out of range"
        );
        if knob & 4 == 0 && text.len() <= 4096 {
            let mut scan = vec![u32::MAX; text.len()];
            let n = bpe.encode(&text, &mut scan).expect("one slot per byte is enough");
            assert_eq!(&scan[..n], ids.as_slice(), "the queue and the rescan differ");
        }
        let kept: Vec<u8> = text.bytes().filter(|&b| bpe.has_byte(b)).collect();
        assert_eq!(decode_all(&bpe, &ids).expect("ids in range"), kept);
        ids
    };

    let expected = decode_all(&bpe, &ids);
    let cap = if knob & 8 != 0 {
        7
    } else {
        ids.len() * 64 + 16
    };
    let mut out = vec![0u8; cap];
    match (bpe.decode(&ids, &mut out), &expected) {
        (Ok(n), Ok(bytes)) => assert_eq!(&out[..n], bytes.as_slice()),
        (Err(Error::TokenOutOfRange { id, vocab_size }), _) => {
            assert_eq!(vocab_size, vocab);
            assert_eq!(ids.iter().find(|&&i| i as usize >= vocab), Some(&id));
        }
        (
            Err(Error::ShapeMismatch {
                expected: need,
                found,
                ..
            }),
            Ok(bytes),
        ) => {
            assert_eq!(found, cap);
            assert!(need > cap && need == bytes.len());
        }
        (r, e) => panic!("decode gave {r:?} where the bytes are {e:?}"),
    }
    if let Ok(bytes) = expected {
        assert_eq!(stream(&bytes), String::from_utf8_lossy(&bytes));
    }
});
