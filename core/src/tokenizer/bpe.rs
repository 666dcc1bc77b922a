//! Byte-level BPE (GPT-2 style, as SmolLM2 and most small decoders use), without allocating.
//!
//! Encoding: the text is cut at the added tokens (e.g. `<|im_start|>`, matched whole, longest
//! first), each remaining segment is pre-tokenized (optionally every numeric character alone, then the
//! GPT-2 pattern `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
//! hand-written here), and the UTF-8 bytes of each piece start as one token per byte and are
//! merged pair by pair, lowest merge rank first (leftmost on ties). The piece is merged in place
//! in the caller's id buffer.
//!
//! Token strings are GPT-2's: byte `b` is the character `b` itself when printable
//! (`!`..=`~`, `¡`..=`¬`, `®`..=`ÿ`), otherwise the character `256 + n` for the `n`-th
//! non-printable byte. Decoding maps the characters back to bytes; added tokens decode to
//! their text as is.

use crate::error::Error;
use crate::format::{BPE_PRE_DIGITS_GPT2, TokenizerKind, TokenizerView};

use super::unicode_tables::{LETTER, NUMBER};

fn in_ranges(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    let i = table.partition_point(|&(start, _)| start <= c);
    i > 0 && table.get(i - 1).is_some_and(|&(_, end)| c <= end)
}

/// Whether byte `b` is its own character in GPT-2's byte-to-unicode map.
const fn printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// The character that stands for byte `b` in byte-level token strings.
pub const fn byte_char(b: u8) -> char {
    if printable(b) {
        return b as char;
    }
    // Count the non-printable bytes below `b`.
    let mut n = 0u32;
    let mut x = 0u8;
    while x < b {
        if !printable(x) {
            n += 1;
        }
        x += 1;
    }
    match char::from_u32(256 + n) {
        Some(c) => c,
        None => '\u{FFFD}',
    }
}

/// The byte character `c` stands for in byte-level token strings, if any.
pub fn char_byte(c: char) -> Option<u8> {
    let c = c as u32;
    if c < 256 {
        let b = c as u8;
        return printable(b).then_some(b);
    }
    let mut n = c - 256;
    for b in 0..=255u8 {
        if !printable(b) {
            if n == 0 {
                return Some(b);
            }
            n -= 1;
        }
    }
    None
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(c: char) -> Class {
    if c.is_whitespace() {
        Class::Space
    } else if in_ranges(&LETTER, c) {
        Class::Letter
    } else if in_ranges(&NUMBER, c) {
        Class::Number
    } else {
        Class::Other
    }
}

/// Bytes of the longest prefix of `s` whose characters are all of class `k`.
fn run(s: &str, k: Class) -> usize {
    s.char_indices()
        .find(|&(_, c)| class(c) != k)
        .map_or(s.len(), |(i, _)| i)
}

/// Bytes of the GPT-2 pattern's match at the start of the non-empty `s`.
fn gpt2_match(s: &str) -> usize {
    let mut chars = s.chars();
    let Some(c0) = chars.next() else {
        return 0;
    };
    if c0 == '\'' {
        let rest = s.get(1..).unwrap_or("");
        for suffix in ["s", "t", "re", "ve", "m", "ll", "d"] {
            if rest.starts_with(suffix) {
                return 1 + suffix.len();
            }
        }
    }
    let k0 = class(c0);
    if c0 == ' '
        && let Some(c1) = chars.next()
        && class(c1) != Class::Space
    {
        return 1 + run(s.get(1..).unwrap_or(""), class(c1));
    }
    if k0 != Class::Space {
        return run(s, k0);
    }
    // `\s+(?!\S)`: a whitespace run that ends the text, or all of it but its last character
    // when a non-space follows; a single space before a non-space is `\s+` alone.
    let end = run(s, Class::Space);
    if end == s.len() {
        return end;
    }
    let last = s
        .get(..end)
        .and_then(|w| w.chars().next_back())
        .map_or(1, char::len_utf8);
    if end > last { end - last } else { end }
}

/// `byte_ids` entry of a byte the vocabulary has no token for.
const NO_BYTE: u32 = u32::MAX;

/// "None" in the merge queue's links, ranks and heap positions.
const NONE: u32 = u32::MAX;

/// See [`Bpe::FAST_SLOTS_PER_BYTE`].
const SLOTS_PER_SYMBOL: usize = 6;

/// A binary min-heap of symbol positions keyed by (rank of the symbol's pair, position), with
/// each position's place in the heap so that a key can change or leave.
struct Queue<'b> {
    /// Rank of the pair (symbol, successor); [`NONE`] when it merges to nothing.
    rank: &'b mut [u32],
    /// The heap of positions.
    heap: &'b mut [u32],
    /// Place of each position in `heap`, [`NONE`] when absent.
    at: &'b mut [u32],
    len: usize,
}

impl Queue<'_> {
    fn key(&self, h: usize) -> (u32, u32) {
        let p = self.heap[h];
        (self.rank[p as usize], p)
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.at[self.heap[a] as usize] = a as u32;
        self.at[self.heap[b] as usize] = b as u32;
    }

    fn up(&mut self, mut h: usize) {
        while h > 0 && self.key(h) < self.key((h - 1) / 2) {
            self.swap(h, (h - 1) / 2);
            h = (h - 1) / 2;
        }
    }

    fn down(&mut self, mut h: usize) {
        loop {
            let (l, r) = (2 * h + 1, 2 * h + 2);
            let mut m = h;
            if l < self.len && self.key(l) < self.key(m) {
                m = l;
            }
            if r < self.len && self.key(r) < self.key(m) {
                m = r;
            }
            if m == h {
                return;
            }
            self.swap(h, m);
            h = m;
        }
    }

    /// Sets the rank of position `p`'s pair: [`NONE`] takes it out of the heap.
    fn set(&mut self, p: usize, rank: u32) {
        self.rank[p] = rank;
        let h = self.at[p];
        match (h == NONE, rank == NONE) {
            (true, true) => {}
            (true, false) => {
                self.heap[self.len] = p as u32;
                self.at[p] = self.len as u32;
                self.len += 1;
                self.up(self.len - 1);
            }
            (false, true) => {
                let h = h as usize;
                self.len -= 1;
                if h != self.len {
                    self.swap(h, self.len);
                    self.up(h);
                    self.down(h);
                }
                self.at[p] = NONE;
            }
            (false, false) => {
                self.up(h as usize);
                self.down(h as usize);
            }
        }
    }

    /// The position with the lowest (rank, position), if any pair merges.
    fn top(&self) -> Option<usize> {
        (self.len > 0).then(|| self.heap[0] as usize)
    }
}

/// A byte-level BPE tokenizer over the tokenizer section of a packed file.
#[derive(Debug, Clone, Copy)]
pub struct Bpe<'a> {
    tok: TokenizerView<'a>,
    byte_ids: [u32; 256],
}

/// Ids written into a caller buffer.
struct Out<'b> {
    ids: &'b mut [u32],
    len: usize,
}

impl Out<'_> {
    fn push(&mut self, id: u32) -> Result<(), Error> {
        let slot = self.ids.get_mut(self.len).ok_or(Error::ShapeMismatch {
            what: "token id buffer",
            expected: self.len + 1,
            found: self.len,
        })?;
        *slot = id;
        self.len += 1;
        Ok(())
    }
}

impl<'a> Bpe<'a> {
    /// Id-buffer slots per byte of text that let [`Bpe::encode`] merge every piece in
    /// O(n log n) for a piece of n bytes (the slots after a piece hold its merge queue: links,
    /// ranks, a heap); with less room a piece is merged by rescanning it for each merge, which
    /// is O(n^2) in the longest piece (a word or whitespace run) and needs no memory at all.
    /// Both give the same ids.
    pub const FAST_SLOTS_PER_BYTE: usize = SLOTS_PER_SYMBOL;

    /// A tokenizer over `tok`, which must be of kind [`TokenizerKind::Bpe`]. Bytes without a
    /// token of their own (SmolLM2 has none for 21 bytes that are rare or never valid UTF-8)
    /// are dropped when encoding, as the reference does (its BPE has no unknown token).
    ///
    /// # Errors
    ///
    /// [`Error::Unsupported`] for a tokenizer of another kind; [`Error::MissingToken`] when
    /// no byte has a token.
    pub fn new(tok: &TokenizerView<'a>) -> Result<Self, Error> {
        if tok.kind() != TokenizerKind::Bpe {
            return Err(Error::Unsupported("tokenizer is not byte-level BPE"));
        }
        let vocab = tok.vocab();
        let mut byte_ids = [0u32; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let mut buf = [0u8; 4];
            let s = byte_char(b as u8).encode_utf8(&mut buf);
            *slot = vocab.find(s).unwrap_or(NO_BYTE);
        }
        if byte_ids.iter().all(|&id| id == NO_BYTE) {
            return Err(Error::MissingToken("byte-level BPE token for any byte"));
        }
        Ok(Bpe {
            tok: *tok,
            byte_ids,
        })
    }

    /// The tokenizer section this reads.
    pub fn view(&self) -> &TokenizerView<'a> {
        &self.tok
    }

    /// Whether byte `b` has a token (bytes without one are dropped by [`Bpe::encode`]).
    pub fn has_byte(&self, b: u8) -> bool {
        self.byte_ids[b as usize] != NO_BYTE
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.tok.vocab().len()
    }

    /// The added token (id, bytes) that starts `s`, longest first.
    fn added_at(&self, s: &str) -> Option<(u32, usize)> {
        let mut best: Option<(u32, usize)> = None;
        for i in 0..self.tok.n_added() {
            let Some(id) = self.tok.added(i) else {
                continue;
            };
            let Some(t) = self.tok.vocab().token(id) else {
                continue;
            };
            if !t.is_empty() && s.starts_with(t) && best.is_none_or(|(_, l)| t.len() > l) {
                best = Some((id, t.len()));
            }
        }
        best
    }

    /// Tokenizes `text` into `ids`; returns the number of ids written. No special token is
    /// added (SmolLM2 adds none: prompts carry `<|im_start|>` etc. as text).
    ///
    /// # Errors
    ///
    /// [`Error::ShapeMismatch`] when `ids` is too short: merging a piece in place needs room
    /// for one id per byte of that piece (pieces are words, numbers, punctuation or
    /// whitespace runs); [`Error::Malformed`] for a merge whose result is not a token. With
    /// [`Bpe::FAST_SLOTS_PER_BYTE`] slots per byte of `text`, the time is O(n log n) in the
    /// text's length, whatever the text.
    pub fn encode(&self, text: &str, ids: &mut [u32]) -> Result<usize, Error> {
        let mut out = Out { ids, len: 0 };
        let mut seg_start = 0;
        let mut at = 0;
        while at < text.len() {
            let rest = text.get(at..).unwrap_or("");
            if let Some((id, len)) = self.added_at(rest) {
                self.segment(text.get(seg_start..at).unwrap_or(""), &mut out)?;
                out.push(id)?;
                at += len;
                seg_start = at;
                continue;
            }
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
        self.segment(text.get(seg_start..).unwrap_or(""), &mut out)?;
        Ok(out.len)
    }

    /// Pre-tokenizes and merges a segment with no added token in it.
    fn segment(&self, seg: &str, out: &mut Out<'_>) -> Result<(), Error> {
        if self.tok.pre_tokenizer() == BPE_PRE_DIGITS_GPT2 {
            // Every numeric character (Nd, Nl, No: `char::is_numeric`, as the reference's
            // Digits pre-tokenizer and llama.cpp's `\p{N}` split) is a piece of its own; the
            // pattern runs between them.
            let mut start = 0;
            for (i, c) in seg.char_indices() {
                if c.is_numeric() {
                    let end = i + c.len_utf8();
                    self.pattern(seg.get(start..i).unwrap_or(""), out)?;
                    self.piece(seg.get(i..end).unwrap_or(""), out)?;
                    start = end;
                }
            }
            self.pattern(seg.get(start..).unwrap_or(""), out)
        } else {
            self.pattern(seg, out)
        }
    }

    fn pattern(&self, mut s: &str, out: &mut Out<'_>) -> Result<(), Error> {
        while !s.is_empty() {
            let n = gpt2_match(s).max(1);
            let (piece, rest) = s.split_at_checked(n).unwrap_or((s, ""));
            self.piece(piece, out)?;
            s = rest;
        }
        Ok(())
    }

    /// Merges the bytes of one piece in place at the end of `out`.
    fn piece(&self, piece: &str, out: &mut Out<'_>) -> Result<(), Error> {
        if piece.is_empty() {
            return Ok(());
        }
        let start = out.len;
        let room = out.ids.len().saturating_sub(start);
        if room < piece.len() {
            return Err(Error::ShapeMismatch {
                what: "token id buffer",
                expected: start + piece.len(),
                found: out.ids.len(),
            });
        }
        let w = out
            .ids
            .get_mut(start..start + piece.len())
            .ok_or(Error::Malformed("token id buffer"))?;
        let mut n = 0;
        for b in piece.bytes() {
            let id = self.byte_ids[b as usize];
            if id != NO_BYTE {
                w[n] = id;
                n += 1;
            }
        }
        // With room for the queue after the piece, merge in O(n log n); else by rescanning,
        // which is quadratic only in the length of one piece.
        let rest = out
            .ids
            .get_mut(start..)
            .ok_or(Error::Malformed("token id buffer"))?;
        out.len = start
            + match n
                .checked_mul(SLOTS_PER_SYMBOL)
                .and_then(|m| rest.get_mut(..m))
            {
                Some(buf) if n > 2 => self.merge_queued(buf, n)?,
                _ => self.merge_scan(rest.get_mut(..n).unwrap_or_default())?,
            };
        Ok(())
    }

    /// The token that merging `l` and `r` makes.
    fn merged(&self, l: u32, r: u32) -> Result<u32, Error> {
        let vocab = self.tok.vocab();
        match (vocab.token(l), vocab.token(r)) {
            (Some(a), Some(b)) => vocab.find_concat(a, b),
            _ => None,
        }
        .ok_or(Error::Malformed("a BPE merge does not make a token"))
    }

    /// Merges the symbols `w` in place by rescanning every pair for each merge: O(n^2) merge
    /// lookups, no memory besides `w`. Returns the number of symbols left.
    fn merge_scan(&self, w: &mut [u32]) -> Result<usize, Error> {
        let mut n = w.len();
        loop {
            let mut best: Option<(u32, usize)> = None;
            for p in 0..n.saturating_sub(1) {
                if let Some(r) = self.tok.merge_rank(w[p], w[p + 1])
                    && best.is_none_or(|(br, _)| r < br)
                {
                    best = Some((r, p));
                }
            }
            let Some((_, p)) = best else { break };
            w[p] = self.merged(w[p], w[p + 1])?;
            w.copy_within(p + 2..n, p + 1);
            n -= 1;
        }
        Ok(n)
    }

    /// Merges the `n` symbols at the start of `buf` (which holds [`SLOTS_PER_SYMBOL`] slots per
    /// symbol) with the same result as [`Bpe::merge_scan`] in O(n log n): the symbols form a
    /// linked list, and the pair of each symbol with its successor sits in a binary heap keyed
    /// by (merge rank, position), so the lowest rank, leftmost on ties, is always on top.
    /// Returns the number of symbols left, moved to the start of `buf`.
    fn merge_queued(&self, buf: &mut [u32], n: usize) -> Result<usize, Error> {
        let (w, rest) = buf.split_at_mut(n);
        let (next, rest) = rest.split_at_mut(n);
        let (prev, rest) = rest.split_at_mut(n);
        let (rank, rest) = rest.split_at_mut(n);
        let (heap, rest) = rest.split_at_mut(n);
        let at = rest
            .get_mut(..n)
            .ok_or(Error::Malformed("token id buffer"))?;
        let mut q = Queue {
            rank,
            heap,
            at,
            len: 0,
        };
        for i in 0..n {
            next[i] = if i + 1 < n { (i + 1) as u32 } else { NONE };
            prev[i] = if i > 0 { (i - 1) as u32 } else { NONE };
            q.at[i] = NONE;
            let r = match w.get(i + 1) {
                Some(&b) => self.tok.merge_rank(w[i], b).unwrap_or(NONE),
                None => NONE,
            };
            q.set(i, r);
        }
        while let Some(p) = q.top() {
            let r = next[p] as usize;
            w[p] = self.merged(w[p], w[r])?;
            // Unlink `r`; `p` now pairs with `r`'s successor, and `p`'s predecessor with `p`.
            q.set(r, NONE);
            let after = next[r];
            next[p] = after;
            if let Some(back) = prev.get_mut(after as usize) {
                *back = p as u32;
            }
            let right = w.get(after as usize).copied();
            let rp = right.and_then(|b| self.tok.merge_rank(w[p], b));
            q.set(p, rp.unwrap_or(NONE));
            let left = prev[p] as usize;
            if let Some(&a) = w.get(left) {
                let rl = self.tok.merge_rank(a, w[p]).unwrap_or(NONE);
                q.set(left, rl);
            }
        }
        // Symbol 0 is never unlinked (only right-hand symbols are): walk from it.
        let (mut i, mut k) = (0usize, 0usize);
        while i < n {
            w[k] = w[i];
            k += 1;
            i = next[i] as usize;
        }
        Ok(k)
    }

    /// Calls `emit` with each byte token `id` stands for (an added token: its text's bytes).
    ///
    /// # Errors
    ///
    /// [`Error::TokenOutOfRange`] for an id outside the vocabulary.
    pub fn token_bytes(&self, id: u32, mut emit: impl FnMut(u8)) -> Result<(), Error> {
        let t = self.tok.vocab().token(id).ok_or(Error::TokenOutOfRange {
            id,
            vocab_size: self.vocab_size(),
        })?;
        let added = (0..self.tok.n_added()).any(|i| self.tok.added(i) == Some(id));
        for c in t.chars() {
            match char_byte(c) {
                Some(b) if !added => emit(b),
                _ => {
                    let mut buf = [0u8; 4];
                    c.encode_utf8(&mut buf).bytes().for_each(&mut emit);
                }
            }
        }
        Ok(())
    }

    /// Writes the bytes of `ids` into `out`; returns the number of bytes. The bytes are the
    /// original text's (valid UTF-8 when the ids came from [`Bpe::encode`]); a cut in the
    /// middle of a character is possible when decoding a prefix: see [`Utf8Stream`].
    ///
    /// # Errors
    ///
    /// [`Error::TokenOutOfRange`] for an id outside the vocabulary; [`Error::ShapeMismatch`]
    /// when `out` is too short (`expected` is the bytes needed).
    pub fn decode(&self, ids: &[u32], out: &mut [u8]) -> Result<usize, Error> {
        let mut n = 0;
        let cap = out.len();
        let mut short = false;
        for &id in ids {
            self.token_bytes(id, |b| {
                match out.get_mut(n) {
                    Some(slot) => *slot = b,
                    None => short = true,
                }
                n += 1;
            })?;
        }
        if short {
            return Err(Error::ShapeMismatch {
                what: "decoded text buffer",
                expected: n,
                found: cap,
            });
        }
        Ok(n)
    }
}

/// Turns a stream of bytes (tokens decoded one at a time) into complete UTF-8 text: a
/// character split across tokens is held until its last byte arrives. Invalid sequences come
/// out as U+FFFD, as Rust's `from_utf8_lossy` and the Hugging Face decoder give them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Stream {
    buf: [u8; 4],
    len: usize,
    need: usize,
}

fn seq_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

/// Whether `b` can be byte `at` (1 to 3) of a sequence led by `lead`: a continuation byte,
/// and for the second byte the narrower ranges that exclude overlong forms, surrogates and
/// code points above U+10FFFF (Unicode's table 3-7, which `from_utf8_lossy` follows).
fn continues(lead: u8, at: usize, b: u8) -> bool {
    let range = match (at, lead) {
        (1, 0xE0) => 0xA0..=0xBF,
        (1, 0xED) => 0x80..=0x9F,
        (1, 0xF0) => 0x90..=0xBF,
        (1, 0xF4) => 0x80..=0x8F,
        _ => 0x80..=0xBF,
    };
    range.contains(&b)
}

impl Utf8Stream {
    /// An empty stream.
    pub const fn new() -> Self {
        Utf8Stream {
            buf: [0; 4],
            len: 0,
            need: 0,
        }
    }

    /// Adds one byte; calls `emit` with each character completed (or U+FFFD).
    pub fn push(&mut self, b: u8, emit: &mut impl FnMut(char)) {
        if self.len > 0 {
            if continues(self.buf[0], self.len, b) {
                self.buf[self.len] = b;
                self.len += 1;
                if self.len == self.need {
                    match core::str::from_utf8(&self.buf[..self.len]) {
                        Ok(s) => s.chars().for_each(&mut *emit),
                        Err(_) => emit('\u{FFFD}'),
                    }
                    self.len = 0;
                }
                return;
            }
            // A byte that cannot continue the sequence cuts it short: the bytes held are one
            // U+FFFD (a maximal subpart, as `from_utf8_lossy` counts), `b` starts afresh.
            emit('\u{FFFD}');
            self.len = 0;
        }
        match seq_len(b) {
            1 => emit(b as char),
            0 => emit('\u{FFFD}'),
            n => {
                self.buf[0] = b;
                self.len = 1;
                self.need = n;
            }
        }
    }

    /// Ends the stream: a pending incomplete character comes out as U+FFFD.
    pub fn finish(&mut self, emit: &mut impl FnMut(char)) {
        if self.len > 0 {
            emit('\u{FFFD}');
            self.len = 0;
        }
    }

    /// Bytes held back (the start of an incomplete character), 0 to 3.
    pub fn pending(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    use super::Utf8Stream;

    fn stream(bytes: &[u8]) -> String {
        let mut s = Utf8Stream::new();
        let mut out = String::new();
        let mut emit = |c: char| out.push(c);
        for &b in bytes {
            s.push(b, &mut emit);
        }
        s.finish(&mut emit);
        out
    }

    /// Regression (found by the `bpe` fuzz target): a lead byte followed by a continuation
    /// byte outside its second-byte range (overlong E0 80, surrogate ED A0, F0 80, F4 90) was
    /// held as one 3- or 4-byte sequence and replaced by one U+FFFD; `from_utf8_lossy` (and
    /// the Hugging Face decoder) give one U+FFFD per maximal subpart.
    #[test]
    fn invalid_sequences_are_replaced_as_from_utf8_lossy_does() {
        for bad in [
            &b"\xE0\x80\x80"[..],
            b"\xED\xA0\x80",
            b"\xF0\x80\x80\x80",
            b"\xF4\x90\x80\x80",
            b"a\xE0\x9Fz",
        ] {
            assert_eq!(stream(bad), String::from_utf8_lossy(bad), "{bad:02x?}");
        }
        let picks = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED,
            0xF0, 0xF4, 0xF5, 0xFF,
        ];
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                cases.push([a, b].to_vec());
            }
        }
        for lead in 0xE0..=0xF4u8 {
            for &b in &picks {
                for &c in &picks {
                    cases.push([lead, b, c].to_vec());
                    cases.push([lead, b, c, 0x80].to_vec());
                }
            }
        }
        for bytes in &cases {
            assert_eq!(
                stream(bytes),
                String::from_utf8_lossy(bytes),
                "{bytes:02x?}"
            );
        }
    }
}
