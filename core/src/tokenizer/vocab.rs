//! The vocabulary the tokenizers look tokens up in: a trait, implemented by the packed file's
//! [`VocabView`] (in flash) and by host-side vocabularies.

use crate::format::VocabView;

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

impl Vocab for VocabView<'_> {
    fn len(&self) -> usize {
        VocabView::len(self)
    }

    fn token(&self, id: u32) -> Option<&str> {
        VocabView::token(self, id)
    }

    fn find(&self, prefix: &str, piece: &str) -> Option<u32> {
        self.find_concat(prefix, piece)
    }
}

/// Compares the byte string `prefix ++ piece` with `token`, without concatenating.
pub fn cmp_concat(prefix: &str, piece: &str, token: &str) -> core::cmp::Ordering {
    prefix.bytes().chain(piece.bytes()).cmp(token.bytes())
}
