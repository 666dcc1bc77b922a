//! Tokenizers that run in the no_std core, over a vocabulary that stays in flash.
//!
//! [`WordPiece`] reproduces BERT's tokenizer (the Hugging Face `BertNormalizer`,
//! `BertPreTokenizer` and `WordPiece` model) without allocating: text is normalised and split
//! one character at a time, each word is held in a fixed buffer of [`MAX_WORD_CHARS`]
//! characters, and ids are written into a caller slice.
//!
//! [`Bpe`] is byte-level BPE (GPT-2, SmolLM2): added tokens matched whole, a hand-written
//! GPT-2 pre-tokenizer pattern, merges by rank (binary search over the packed merge index),
//! ids merged in place in the caller's buffer; decoding streams bytes ([`Utf8Stream`]).

mod bpe;
mod unicode;
#[allow(clippy::unreadable_literal)]
mod unicode_tables;
mod wordpiece;

pub use bpe::{Bpe, Utf8Stream, byte_char, char_byte};
pub use wordpiece::{Encoding, MAX_WORD_CHARS, WordPiece, WordPieceOptions};

/// A vocabulary: token strings by id, and a lookup by string.
pub trait Vocab {
    /// Number of tokens.
    fn len(&self) -> usize;

    /// `true` when the vocabulary has no token.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The string of token `id`, if there is one.
    fn token(&self, id: u32) -> Option<&str>;

    /// The id of the token whose string is `prefix` followed by `piece` (the concatenation is
    /// never built: WordPiece looks up `"##" + piece` without allocating).
    fn find(&self, prefix: &str, piece: &str) -> Option<u32>;
}

impl Vocab for crate::format::VocabView<'_> {
    fn len(&self) -> usize {
        crate::format::VocabView::len(self)
    }

    fn token(&self, id: u32) -> Option<&str> {
        crate::format::VocabView::token(self, id)
    }

    fn find(&self, prefix: &str, piece: &str) -> Option<u32> {
        self.find_concat(prefix, piece)
    }
}

/// Compares the byte string `prefix ++ piece` with `token`, without concatenating.
pub fn cmp_concat(prefix: &str, piece: &str, token: &str) -> core::cmp::Ordering {
    prefix.bytes().chain(piece.bytes()).cmp(token.bytes())
}
