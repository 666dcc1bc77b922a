//! BERT's WordPiece tokenizer, streaming and allocation-free.

use super::unicode::{is_cjk, is_control, is_punctuation, is_whitespace, strip_accents};
use super::vocab::Vocab;
use crate::Error;
use crate::format::{TokenizerView, VocabView};

/// Longest word, in characters, that WordPiece splits; a longer word becomes `[UNK]` (as in
/// BERT, whose `max_input_chars_per_word` is 100).
pub const MAX_WORD_CHARS: usize = 100;

/// BERT's special tokens. Written literally in the text they stand for themselves (as in the
/// reference tokenizer, which matches its "added tokens" on the raw text before normalising).
const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Normaliser settings of a BERT tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct WordPieceOptions {
    /// Lower-case the text (uncased models).
    pub lowercase: bool,
    /// Remove accents (NFD, then drop non-spacing marks). BERT does this when lower-casing.
    pub strip_accents: bool,
}

impl Default for WordPieceOptions {
    fn default() -> Self {
        WordPieceOptions {
            lowercase: true,
            strip_accents: true,
        }
    }
}

/// Result of [`WordPiece::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Encoding {
    /// Ids written, `[CLS]` and `[SEP]` included.
    pub len: usize,
    /// The text had more tokens than fit; the ids hold its first `len - 2` tokens.
    pub truncated: bool,
}

/// A BERT WordPiece tokenizer over a vocabulary.
pub struct WordPiece<'v, V: Vocab> {
    vocab: &'v V,
    options: WordPieceOptions,
    unk: u32,
    cls: u32,
    sep: u32,
    /// Ids of [`SPECIALS`] found in the vocabulary.
    specials: [Option<u32>; SPECIALS.len()],
}

impl<V: Vocab> Clone for WordPiece<'_, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<V: Vocab> Copy for WordPiece<'_, V> {}

impl<V: Vocab> core::fmt::Debug for WordPiece<'_, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WordPiece")
            .field("vocab_len", &self.vocab.len())
            .field("options", &self.options)
            .field("unk", &self.unk)
            .field("cls", &self.cls)
            .field("sep", &self.sep)
            .finish()
    }
}

/// One word (a run of characters between whitespace and punctuation), as UTF-8 with the
/// byte offset of every character, in fixed buffers.
struct Word {
    bytes: [u8; MAX_WORD_CHARS * 4],
    /// `starts[i]` is the byte offset of character `i`; `starts[chars]` the end.
    starts: [u16; MAX_WORD_CHARS + 1],
    chars: usize,
    /// More than `MAX_WORD_CHARS` characters were pushed: the word is `[UNK]`.
    overflow: bool,
}

impl Word {
    fn new() -> Self {
        Word {
            bytes: [0; MAX_WORD_CHARS * 4],
            starts: [0; MAX_WORD_CHARS + 1],
            chars: 0,
            overflow: false,
        }
    }

    fn push(&mut self, c: char) {
        let mut buf = [0u8; 4];
        let enc = c.encode_utf8(&mut buf).as_bytes();
        // `get`s rather than indexing: the bounds follow from `chars < MAX_WORD_CHARS` and
        // 4 bytes a character, which the optimiser does not carry over from `starts`.
        let at = self
            .starts
            .get(self.chars)
            .map_or(usize::MAX, |&a| usize::from(a));
        let end = at.saturating_add(enc.len());
        match (
            self.bytes.get_mut(at..end),
            self.starts.get_mut(self.chars + 1),
        ) {
            (Some(dst), Some(next)) if self.chars < MAX_WORD_CHARS => {
                dst.iter_mut().zip(enc).for_each(|(d, s)| *d = *s);
                // At most 400 bytes: fits in u16.
                *next = end as u16;
                self.chars += 1;
            }
            _ => self.overflow = true,
        }
    }

    fn is_empty(&self) -> bool {
        self.chars == 0 && !self.overflow
    }

    /// Characters `from..to` as a string.
    fn piece(&self, from: usize, to: usize) -> &str {
        let at = |i: usize| self.starts.get(i).map_or(0, |&s| usize::from(s));
        // Built from whole chars with `encode_utf8`, and cut at char starts.
        self.bytes
            .get(at(from)..at(to))
            .and_then(|b| core::str::from_utf8(b).ok())
            .unwrap_or("")
    }

    fn clear(&mut self) {
        self.chars = 0;
        self.overflow = false;
    }
}

/// Where ids go: the caller's slice, with room kept for the final `[SEP]`.
struct Out<'o> {
    ids: &'o mut [u32],
    len: usize,
    truncated: bool,
}

impl Out<'_> {
    /// Room for one more token before the closing `[SEP]`.
    fn has_room(&self) -> bool {
        self.len + 1 < self.ids.len()
    }

    fn push(&mut self, id: u32) {
        let room = self.has_room();
        match self.ids.get_mut(self.len) {
            Some(slot) if room => {
                *slot = id;
                self.len += 1;
            }
            _ => self.truncated = true,
        }
    }
}

impl<'v, 'a> WordPiece<'v, VocabView<'a>> {
    /// The tokenizer of a packed file's tokenizer section `tok`: its vocabulary and its
    /// normaliser settings ([`TokenizerView::lowercase`], [`TokenizerView::strip_accents`]).
    ///
    /// # Errors
    ///
    /// As [`WordPiece::new`]: [`Error::MissingToken`] naming the first of `[UNK]`, `[CLS]` and
    /// `[SEP]` the vocabulary lacks.
    pub fn from_view(tok: &'v TokenizerView<'a>) -> Result<Self, Error> {
        let options = WordPieceOptions {
            lowercase: tok.lowercase(),
            strip_accents: tok.strip_accents(),
        };
        WordPiece::new(tok.vocab_ref(), options)
    }
}

impl<'v, V: Vocab> WordPiece<'v, V> {
    /// A tokenizer over `vocab`, which must hold `[UNK]`, `[CLS]` and `[SEP]`.
    ///
    /// # Errors
    ///
    /// [`Error::MissingToken`] naming the first of them the vocabulary lacks.
    pub fn new(vocab: &'v V, options: WordPieceOptions) -> Result<Self, Error> {
        let special = |name: &'static str| vocab.find("", name).ok_or(Error::MissingToken(name));
        Ok(WordPiece {
            vocab,
            options,
            unk: special("[UNK]")?,
            cls: special("[CLS]")?,
            sep: special("[SEP]")?,
            specials: SPECIALS.map(|name| vocab.find("", name)),
        })
    }

    /// Id of `[CLS]`.
    pub fn cls(&self) -> u32 {
        self.cls
    }

    /// Id of `[SEP]`.
    pub fn sep(&self) -> u32 {
        self.sep
    }

    /// Id of `[UNK]`.
    pub fn unk(&self) -> u32 {
        self.unk
    }

    /// Tokenizes `text` as `[CLS] tokens... [SEP]` into `ids`, whose length is the largest
    /// sequence accepted (the model's max_seq_length): longer texts are truncated, as the
    /// reference tokenizer does, and the result says so.
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when `ids` has room for fewer than 2 ids (`[CLS]`, `[SEP]`).
    pub fn encode(&self, text: &str, ids: &mut [u32]) -> Result<Encoding, Error> {
        if ids.len() < 2 {
            return Err(Error::ShapeMismatch {
                what: "token id buffer",
                expected: 2,
                found: ids.len(),
            });
        }
        ids[0] = self.cls;
        let mut out = Out {
            ids,
            len: 1,
            truncated: false,
        };
        let mut word = Word::new();
        let mut skip_to = 0;
        for (at, c) in text.char_indices() {
            if out.truncated {
                break;
            }
            if at < skip_to {
                continue;
            }
            if let Some((id, len)) = self.special_at(text.get(at..).unwrap_or("")) {
                self.flush(&mut word, &mut out);
                out.push(id);
                skip_to = at + len;
                continue;
            }
            // Text cleaning: drop NUL, U+FFFD and control characters.
            if c == '\0' || c == '\u{FFFD}' || is_control(c) {
                continue;
            }
            if is_whitespace(c) {
                self.flush(&mut word, &mut out);
                continue;
            }
            if is_cjk(c) {
                self.flush(&mut word, &mut out);
                self.normalized(c, |d| word.push(d));
                self.flush(&mut word, &mut out);
                continue;
            }
            self.normalized(c, |d| {
                if is_punctuation(d) {
                    self.flush(&mut word, &mut out);
                    word.push(d);
                    self.flush(&mut word, &mut out);
                } else if is_whitespace(d) {
                    self.flush(&mut word, &mut out);
                } else {
                    word.push(d);
                }
            });
        }
        self.flush(&mut word, &mut out);
        let (len, truncated) = (out.len, out.truncated);
        // `len < ids.len()`: `Out` keeps the last slot for `[SEP]`.
        if let Some(slot) = ids.get_mut(len) {
            *slot = self.sep;
        }
        Ok(Encoding {
            len: len + 1,
            truncated,
        })
    }

    /// The special token `text` starts with, as (id, length in bytes).
    fn special_at(&self, text: &str) -> Option<(u32, usize)> {
        if !text.starts_with('[') {
            return None;
        }
        SPECIALS
            .iter()
            .zip(self.specials)
            .find_map(|(name, id)| Some((id?, name.len())).filter(|_| text.starts_with(name)))
    }

    /// Calls `emit` with the characters `c` becomes: accents stripped, then lower-cased.
    fn normalized(&self, c: char, mut emit: impl FnMut(char)) {
        let lower = |d: char, emit: &mut dyn FnMut(char)| {
            if self.options.lowercase {
                d.to_lowercase().for_each(&mut *emit);
            } else {
                emit(d);
            }
        };
        if self.options.strip_accents {
            strip_accents(c, |d| lower(d, &mut emit));
        } else {
            lower(c, &mut emit);
        }
    }

    /// Splits the word into the longest vocabulary pieces, greedily from the left; a word
    /// with a part no piece covers becomes one `[UNK]`.
    fn flush(&self, word: &mut Word, out: &mut Out<'_>) {
        if word.is_empty() {
            return;
        }
        if !out.has_room() {
            out.truncated = true;
            word.clear();
            return;
        }
        let first = out.len;
        if word.overflow {
            out.push(self.unk);
            word.clear();
            return;
        }
        let mut start = 0;
        while start < word.chars {
            let prefix = if start > 0 { "##" } else { "" };
            let found = (start + 1..=word.chars).rev().find_map(|end| {
                self.vocab
                    .find(prefix, word.piece(start, end))
                    .map(|id| (id, end))
            });
            match found {
                Some((id, end)) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    // Pieces of this word already written are replaced by one [UNK].
                    out.len = first;
                    out.truncated = false;
                    out.push(self.unk);
                    break;
                }
            }
        }
        word.clear();
    }
}
