//! The tokenizer section: algorithm and flags, special tokens, the vocabulary with its sorted
//! lookup table, BPE merges with their pair index, and added tokens.

use super::bytes::{U32s, le_u32, put_u32, search};
use crate::Error;

/// Size of the tokenizer section's fixed header, bytes.
pub const TOKENIZER_HEADER_BYTES: usize = 64;
/// BPE pre-tokenizer code: the GPT-2 pattern
/// (`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`).
pub const BPE_PRE_GPT2: u32 = 0;
/// BPE pre-tokenizer code: every numeric character (`\p{N}`) split off alone, then the GPT-2
/// pattern (SmolLM2, llama.cpp's `smollm`).
pub const BPE_PRE_DIGITS_GPT2: u32 = 1;
/// A special-token slot that holds no token.
pub const NO_TOKEN: u32 = u32::MAX;

const TOKENIZER_LOWERCASE: u32 = 1;
const TOKENIZER_STRIP_ACCENTS: u32 = 2;

/// Tokenizer algorithm of a packed file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TokenizerKind {
    /// No tokenizer: the caller supplies token ids.
    None,
    /// BERT WordPiece (`##` continuation prefix).
    WordPiece,
    /// Byte-pair encoding with ranked merges.
    Bpe,
}

/// Special tokens, in the order of their slots in the tokenizer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Special {
    /// Unknown token (`[UNK]`).
    Unk,
    /// Classification / start of an encoder input (`[CLS]`).
    Cls,
    /// Separator / end of an encoder input (`[SEP]`).
    Sep,
    /// Padding (`[PAD]`).
    Pad,
    /// Mask (`[MASK]`).
    Mask,
    /// Beginning of sequence (decoders).
    Bos,
    /// End of sequence (decoders).
    Eos,
}

/// Number of special-token slots.
pub const SPECIALS: usize = 7;

/// The fixed header of the tokenizer section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TokenizerHeader {
    /// Algorithm.
    pub kind: TokenizerKind,
    /// Lower-case the text before splitting.
    pub lowercase: bool,
    /// Strip accents before splitting.
    pub strip_accents: bool,
    /// Number of tokens.
    pub n_tokens: u32,
    /// Number of BPE merges.
    pub n_merges: u32,
    /// Bytes of concatenated token strings.
    pub string_bytes: u32,
    /// Longest word WordPiece splits, characters (longer words become the unknown token).
    pub max_word_chars: u32,
    /// Special token ids by [`Special`] slot, [`NO_TOKEN`] when absent.
    pub specials: [u32; SPECIALS],
    /// BPE pre-tokenizer ([`BPE_PRE_GPT2`] or [`BPE_PRE_DIGITS_GPT2`]; 0 unless Bpe).
    pub pre: u32,
    /// Number of added tokens (BPE: matched whole in the text; 0 unless Bpe).
    pub n_added: u32,
}

impl TokenizerHeader {
    /// Bytes of the whole tokenizer section this header describes, or `None` on overflow.
    pub fn section_bytes(&self) -> Option<usize> {
        let n = self.n_tokens as usize;
        let offsets = n.checked_add(1)?.checked_mul(4)?;
        let sorted = n.checked_mul(4)?;
        let merges = (self.n_merges as usize).checked_mul(12)?;
        let added = (self.n_added as usize).checked_mul(4)?;
        TOKENIZER_HEADER_BYTES
            .checked_add(offsets)?
            .checked_add(sorted)?
            .checked_add(merges)?
            .checked_add(added)?
            .checked_add(self.string_bytes as usize)
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; TOKENIZER_HEADER_BYTES] {
        let mut b = [0u8; TOKENIZER_HEADER_BYTES];
        let kind = match self.kind {
            TokenizerKind::None => 0,
            TokenizerKind::WordPiece => 1,
            TokenizerKind::Bpe => 2,
        };
        let flags = if self.lowercase {
            TOKENIZER_LOWERCASE
        } else {
            0
        } | if self.strip_accents {
            TOKENIZER_STRIP_ACCENTS
        } else {
            0
        };
        let words = [
            kind,
            flags,
            self.n_tokens,
            self.n_merges,
            self.string_bytes,
            self.max_word_chars,
        ];
        let tail = [self.pre, self.n_added];
        for (i, w) in words
            .iter()
            .chain(self.specials.iter())
            .chain(tail.iter())
            .enumerate()
        {
            put_u32(&mut b, 4 * i, *w);
        }
        b
    }

    /// Reads the header from the first [`TOKENIZER_HEADER_BYTES`] bytes of `b`.
    ///
    /// # Errors
    ///
    /// [`Error::Malformed`] for a short section, non-zero reserved words, or a pre-tokenizer
    /// or added tokens on a tokenizer that is not BPE; [`Error::UnknownCode`] for an unknown
    /// kind, flag or pre-tokenizer.
    pub fn decode(b: &[u8]) -> Result<TokenizerHeader, Error> {
        if b.len() < TOKENIZER_HEADER_BYTES {
            return Err(Error::Malformed(
                "tokenizer section shorter than its header",
            ));
        }
        let w = |i: usize| le_u32(b, 4 * i);
        let kind = match w(0) {
            0 => TokenizerKind::None,
            1 => TokenizerKind::WordPiece,
            2 => TokenizerKind::Bpe,
            code => {
                return Err(Error::UnknownCode {
                    what: "tokenizer kind",
                    code,
                });
            }
        };
        let flags = w(1);
        if flags & !(TOKENIZER_LOWERCASE | TOKENIZER_STRIP_ACCENTS) != 0 {
            return Err(Error::UnknownCode {
                what: "tokenizer flags",
                code: flags,
            });
        }
        if (8 + SPECIALS..TOKENIZER_HEADER_BYTES / 4).any(|i| w(i) != 0) {
            return Err(Error::Malformed("reserved tokenizer words are not zero"));
        }
        let (pre, n_added) = (w(6 + SPECIALS), w(7 + SPECIALS));
        if pre > BPE_PRE_DIGITS_GPT2 {
            return Err(Error::UnknownCode {
                what: "BPE pre-tokenizer",
                code: pre,
            });
        }
        if kind != TokenizerKind::Bpe && (pre != 0 || n_added != 0) {
            return Err(Error::Malformed(
                "pre-tokenizer or added tokens on a tokenizer that is not BPE",
            ));
        }
        Ok(TokenizerHeader {
            kind,
            lowercase: flags & TOKENIZER_LOWERCASE != 0,
            strip_accents: flags & TOKENIZER_STRIP_ACCENTS != 0,
            n_tokens: w(2),
            n_merges: w(3),
            string_bytes: w(4),
            max_word_chars: w(5),
            specials: core::array::from_fn(|i| w(6 + i)),
            pre,
            n_added,
        })
    }
}

/// The vocabulary of a packed file: token strings by id, and a lookup by string.
#[derive(Debug, Clone, Copy)]
pub struct VocabView<'a> {
    n: usize,
    offsets: U32s<'a>,
    sorted: U32s<'a>,
    strings: &'a [u8],
}

impl<'a> VocabView<'a> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.n
    }

    /// `true` when there is no token.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn bytes(&self, id: usize) -> &'a [u8] {
        let start = self.offsets.get(id) as usize;
        let end = self.offsets.get(id.saturating_add(1)) as usize;
        // Offsets checked by parse_with: never decreasing, within the string bytes (offsets
        // that were not checked give an empty token instead).
        self.strings.get(start..end).unwrap_or(&[])
    }

    /// The string of token `id`, if `id < len()`.
    pub fn token(&self, id: u32) -> Option<&'a str> {
        let id = id as usize;
        if id >= self.n {
            return None;
        }
        // Checked at parse time: every token is valid UTF-8.
        core::str::from_utf8(self.bytes(id)).ok()
    }

    /// The id of the token `prefix` followed by `piece` (WordPiece looks up `"##" + piece`
    /// without building the string), by binary search over the sorted id table.
    pub fn find_concat(&self, prefix: &str, piece: &str) -> Option<u32> {
        let key = || prefix.bytes().chain(piece.bytes());
        let rank = search(self.n, |mid| {
            let tok = self.bytes(self.sorted.get(mid) as usize);
            Some(key().cmp(tok.iter().copied()))
        })?;
        Some(self.sorted.get(rank))
    }

    /// The id of token `s`.
    pub fn find(&self, s: &str) -> Option<u32> {
        self.find_concat("", s)
    }

    /// The id at position `rank` of the table sorted by token bytes.
    pub fn sorted_id(&self, rank: usize) -> Option<u32> {
        (rank < self.n).then(|| self.sorted.get(rank))
    }
}

/// The tokenizer section: settings, special tokens, vocabulary and BPE merges.
#[derive(Debug, Clone, Copy)]
pub struct TokenizerView<'a> {
    header: TokenizerHeader,
    vocab: VocabView<'a>,
    merges: U32s<'a>,
    merge_index: U32s<'a>,
    added: U32s<'a>,
}

impl<'a> TokenizerView<'a> {
    /// The section `b`, every field checked; with `check_tokens == false` the checks that
    /// cost O(vocabulary) are skipped
    /// ([`PackedModel::parse_again`](super::PackedModel::parse_again)).
    pub(super) fn parse(b: &'a [u8], check_tokens: bool) -> Result<Self, Error> {
        let h = TokenizerHeader::decode(b)?;
        let need = h
            .section_bytes()
            .ok_or(Error::Malformed("tokenizer section size overflows"))?;
        if need != b.len() {
            return Err(Error::Malformed(
                "tokenizer section length does not match its header",
            ));
        }
        let n = h.n_tokens as usize;
        let mut at = TOKENIZER_HEADER_BYTES;
        let mut take = |len: usize| {
            // In range: the lengths add up to `need == b.len()`.
            let s = b.get(at..at + len).unwrap_or(&[]);
            at += len;
            s
        };
        let offsets = U32s(take(4 * (n + 1)));
        let sorted = U32s(take(4 * n));
        let merges = U32s(take(8 * h.n_merges as usize));
        let merge_index = U32s(take(4 * h.n_merges as usize));
        let added = U32s(take(4 * h.n_added as usize));
        let strings = take(h.string_bytes as usize);
        if h.kind == TokenizerKind::None && (n != 0 || h.n_merges != 0) {
            return Err(Error::Malformed("tokenizer kind None with tokens"));
        }
        if offsets.get(0) != 0 || offsets.get(n) as usize != strings.len() {
            return Err(Error::Malformed(
                "token offsets do not span the string bytes",
            ));
        }
        for &s in &h.specials {
            if s != NO_TOKEN && s as usize >= n {
                return Err(Error::Malformed("special token id out of range"));
            }
        }
        let vocab = VocabView {
            n,
            offsets,
            sorted,
            strings,
        };
        let view = TokenizerView {
            header: h,
            vocab,
            merges,
            merge_index,
            added,
        };
        if !check_tokens {
            return Ok(view);
        }
        // Offsets: never decrease, and cut on character boundaries of a valid UTF-8 blob (so
        // every token is valid UTF-8).
        let text = core::str::from_utf8(strings)
            .map_err(|_| Error::Malformed("token strings are not valid UTF-8"))?;
        for i in 0..n {
            let (a, z) = (offsets.get(i), offsets.get(i + 1));
            if z < a || !text.is_char_boundary(z as usize) {
                return Err(Error::Malformed(
                    "token offsets decrease or split a character",
                ));
            }
        }
        // Sorted table: ids in range, token strings strictly increasing (which also makes the
        // ids distinct, so it is a permutation, and the tokens unique).
        for r in 0..n {
            if sorted.get(r) as usize >= n {
                return Err(Error::Malformed(
                    "sorted token table holds an id out of range",
                ));
            }
            if r > 0
                && vocab.bytes(sorted.get(r - 1) as usize) >= vocab.bytes(sorted.get(r) as usize)
            {
                return Err(Error::Malformed(
                    "sorted token table is not strictly sorted",
                ));
            }
        }
        for i in 0..2 * h.n_merges as usize {
            if merges.get(i) as usize >= n {
                return Err(Error::Malformed("BPE merge names a token out of range"));
            }
        }
        // Merge index: ranks in range whose pairs strictly increase (so it is a permutation
        // and the merges are distinct pairs).
        let m = h.n_merges as usize;
        let pair = |r: u32| (merges.get(2 * r as usize), merges.get(2 * r as usize + 1));
        for i in 0..m {
            let r = merge_index.get(i);
            if r as usize >= m {
                return Err(Error::Malformed(
                    "BPE merge index holds a rank out of range",
                ));
            }
            if i > 0 && pair(merge_index.get(i - 1)) >= pair(r) {
                return Err(Error::Malformed(
                    "BPE merge index is not strictly sorted by pair",
                ));
            }
        }
        for i in 0..h.n_added as usize {
            let id = added.get(i);
            if id as usize >= n || vocab.bytes(id as usize).is_empty() {
                return Err(Error::Malformed(
                    "added token out of range or with an empty string",
                ));
            }
            if (0..i).any(|j| added.get(j) == id) {
                return Err(Error::Malformed("added token listed twice"));
            }
        }
        Ok(view)
    }

    /// Algorithm.
    pub fn kind(&self) -> TokenizerKind {
        self.header.kind
    }

    /// Lower-case the text first.
    pub fn lowercase(&self) -> bool {
        self.header.lowercase
    }

    /// Strip accents first.
    pub fn strip_accents(&self) -> bool {
        self.header.strip_accents
    }

    /// Longest word WordPiece splits, characters.
    pub fn max_word_chars(&self) -> usize {
        self.header.max_word_chars as usize
    }

    /// The id of a special token, if the file has one.
    pub fn special(&self, which: Special) -> Option<u32> {
        let id = self.header.specials[which as usize];
        (id != NO_TOKEN).then_some(id)
    }

    /// The vocabulary.
    pub fn vocab(&self) -> VocabView<'a> {
        self.vocab
    }

    /// The vocabulary, borrowed from the view (for tokenizers that hold a reference to it).
    pub fn vocab_ref(&self) -> &VocabView<'a> {
        &self.vocab
    }

    /// Number of BPE merges.
    pub fn n_merges(&self) -> usize {
        self.header.n_merges as usize
    }

    /// BPE merge of rank `rank` (0 = applied first): the (left, right) token ids.
    pub fn merge(&self, rank: usize) -> Option<(u32, u32)> {
        (rank < self.n_merges()).then(|| (self.merges.get(2 * rank), self.merges.get(2 * rank + 1)))
    }

    /// Rank of the BPE merge of `left` then `right` (0 = applied first), by binary search
    /// over the merge index.
    pub fn merge_rank(&self, left: u32, right: u32) -> Option<u32> {
        let pair = |r: u32| {
            let r = r as usize;
            (self.merges.get(2 * r), self.merges.get(2 * r + 1))
        };
        let at = search(self.n_merges(), |mid| {
            Some((left, right).cmp(&pair(self.merge_index.get(mid))))
        })?;
        Some(self.merge_index.get(at))
    }

    /// BPE pre-tokenizer code ([`BPE_PRE_GPT2`], [`BPE_PRE_DIGITS_GPT2`]).
    pub fn pre_tokenizer(&self) -> u32 {
        self.header.pre
    }

    /// Number of added tokens (matched whole in the text by BPE).
    pub fn n_added(&self) -> usize {
        self.header.n_added as usize
    }

    /// The id of added token `i`, if `i < n_added()`.
    pub fn added(&self, i: usize) -> Option<u32> {
        (i < self.n_added()).then(|| self.added.get(i))
    }

    /// The fixed header.
    pub fn header(&self) -> &TokenizerHeader {
        &self.header
    }
}
