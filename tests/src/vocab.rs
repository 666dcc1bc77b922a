//! A vocabulary from a `vocab.txt`, looked up the way the packed format does it (shared with
//! the CLI tests and fuzz: `topkit-fixtures`).

pub use topkit_fixtures::TextVocab;
