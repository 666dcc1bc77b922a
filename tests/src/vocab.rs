//! A vocabulary from a `vocab.txt` (one token per line, id = line number), looked up the way
//! the packed format does it: binary search over ids sorted by token bytes.

use topkit::tokenizer::{Vocab, cmp_concat};

/// Tokens in id order, and the ids sorted by token string.
pub struct TextVocab {
    tokens: Vec<String>,
    sorted: Vec<u32>,
}

impl TextVocab {
    /// Parses `vocab.txt` contents.
    pub fn parse(text: &str) -> Self {
        let tokens: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut sorted: Vec<u32> = (0..tokens.len() as u32).collect();
        sorted.sort_by(|&a, &b| tokens[a as usize].cmp(&tokens[b as usize]));
        TextVocab { tokens, sorted }
    }

    /// The vocabulary of all-MiniLM-L6-v2 (BERT uncased), committed in tests/data.
    pub fn minilm() -> Self {
        Self::parse(include_str!("../data/minilm-vocab.txt"))
    }
}

impl Vocab for TextVocab {
    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    fn find(&self, prefix: &str, piece: &str) -> Option<u32> {
        self.sorted
            .binary_search_by(|&id| cmp_concat(prefix, piece, &self.tokens[id as usize]).reverse())
            .ok()
            .map(|i| self.sorted[i])
    }
}
