//! The GGUF importer of `topkit pack` (tools/cli/src/import/gguf/: parse, metadata to config
//! and tokenizer, dequantization, RoPE un-permutation, transposes; then quant.rs, writer.rs and
//! the packer's self-check parse) on arbitrary bytes: an `Err` with a message, or a packed
//! file that the core parses, whose BPE tokenizer (if any) then encodes and decodes a text
//! with added tokens, digits and non-ASCII letters back to its bytes (unless a merge made a
//! token the file marks as added; when some byte has no token, to the text with bytes left
//! out). The last input byte picks how matrices are stored (f32, f16, int8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use topkit::format::{PackedModel, TokenizerKind};
use topkit::tokenizer::Bpe;

const TEXT: &str = "<|im_start|>user\nthe 12 cafés, the end<|im_end|>";

fuzz_target!(|data: &[u8]| {
    let dtype = topkit_fuzz::store_dtype(data.last().copied());
    let file = match topkit_fuzz::gguf::import(data, dtype) {
        Ok(f) => f,
        Err(e) => {
            assert!(!format!("{e:#}").is_empty(), "an error without a message");
            return;
        }
    };
    let m = PackedModel::parse(file.as_slice()).expect("import() checked the file parses");
    let tok = m.tokenizer();
    if tok.kind() != TokenizerKind::Bpe {
        return;
    }
    let Ok(bpe) = Bpe::new(tok) else {
        return;
    };
    let mut ids = vec![0u32; TEXT.len()];
    let n = match bpe.encode(TEXT, &mut ids) {
        Ok(n) => n,
        // A vocabulary whose merge pairs name tokens that do not concatenate to a token.
        Err(topkit::Error::Malformed(_)) => return,
        Err(e) => panic!("encode with one slot per byte: {e}"),
    };
    // A merge can make a token that the file also marks as added (matched whole); that id
    // decodes to the added token's text, as the Hugging Face decoder does: no round trip then.
    let added: Vec<u32> = (0..tok.n_added()).filter_map(|i| tok.added(i)).collect();
    let made_added = ids[..n]
        .iter()
        .any(|id| added.contains(id) && tok.vocab().token(*id).is_some_and(|t| !TEXT.contains(t)));
    if made_added {
        return;
    }
    let mut out = vec![0u8; 4096];
    let len = bpe
        .decode(&ids[..n], &mut out)
        .expect("ids from encode decode");
    let decoded = &out[..len];
    if TEXT.bytes().all(|b| bpe.has_byte(b)) {
        assert_eq!(decoded, TEXT.as_bytes());
    } else {
        // Bytes without a token are dropped, except inside an added token (matched whole,
        // decoded as its text): the decoded bytes are the text's with some left out.
        let mut rest = TEXT.bytes();
        assert!(
            decoded.iter().all(|&d| rest.any(|b| b == d)),
            "decoded {decoded:?} is not a subsequence of the text"
        );
    }
});
