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
mod vocab;
mod wordpiece;

pub use bpe::{Bpe, Utf8Stream, byte_char, char_byte};
pub use vocab::{Vocab, cmp_concat};
pub use wordpiece::{Encoding, MAX_WORD_CHARS, WordPiece, WordPieceOptions};
