//! The one error type of the tokenizer crate.
//!
//! Every variant names what the user has to look at: the file and line (or JSON key) of a
//! malformed tokenizer file, the id and vocabulary size of an out-of-range token, the byte
//! offset of invalid UTF-8. Messages end with a hint of what to do when there is one.

use std::path::PathBuf;

/// Errors from loading, saving, encoding, decoding and training tokenizers.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },

    /// A JSON file (vocab.json, tokenizer.json, a char tokenizer) is not valid JSON.
    #[error("{path}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
        /// What serde_json reported.
        message: String,
    },

    /// An entry of a vocabulary (`vocab.json` or `model.vocab` of a tokenizer.json) is unusable.
    #[error("{path}: vocabulary entry {key:?}: {reason}")]
    BadVocabEntry {
        /// The file.
        path: PathBuf,
        /// The token string (the JSON key) of the entry.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A line of `merges.txt` (or an entry of `model.merges`) is unusable.
    #[error("{path}: merges invalid at line {line} ({text:?}): {reason}")]
    BadMerge {
        /// The file.
        path: PathBuf,
        /// 1-based line number in merges.txt (for tokenizer.json: 1-based index in `model.merges`).
        line: usize,
        /// The offending line.
        text: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A key of a tokenizer.json (or char tokenizer JSON) is missing or has an unsupported value.
    #[error("{path}: key `{key}`: {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Dotted path of the JSON key, e.g. `model.type`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },

    /// No tokenizer files were found where one was asked for.
    #[error("{path}: no tokenizer found (expected tokenizer.json, vocab.json + merges.txt, or a char tokenizer .json); use `gpt2` for the bundled GPT-2 tokenizer")]
    NotFound {
        /// The path that was given.
        path: PathBuf,
    },

    /// Decoding met an id that is not in the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size}); was it produced by another tokenizer?")]
    TokenOutOfRange {
        /// The offending id.
        id: u32,
        /// Number of ids of the vocabulary (ids run 0..vocab_size).
        vocab_size: usize,
    },

    /// Decoded bytes are not valid UTF-8 (a byte-level token sequence may cut a character).
    #[error(
        "decoded bytes are not valid UTF-8 at byte {offset}; use `decode_bytes` or `decode_lossy`"
    )]
    DecodedNotUtf8 {
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },

    /// An input file is not valid UTF-8 text.
    #[error("{path}:{line}: invalid UTF-8 at byte {offset}; convert the file to UTF-8")]
    InputNotUtf8 {
        /// The file (or `-` for standard input).
        path: PathBuf,
        /// The 1-based line of the first invalid sequence.
        line: usize,
        /// Byte offset of the first invalid sequence.
        offset: usize,
    },

    /// A character-level tokenizer was asked to encode a character it has never seen.
    #[error("character {ch:?} (U+{code:04X}) at byte {offset} is not in the char tokenizer's vocabulary of {vocab_size}; retrain it on a corpus that contains it")]
    UnknownChar {
        /// The character.
        ch: char,
        /// Its code point, for printing.
        code: u32,
        /// Byte offset in the input text.
        offset: usize,
        /// Size of the char vocabulary.
        vocab_size: usize,
    },

    /// A special token that cannot be added (empty, or spelled like an ordinary token).
    #[error("special token {name:?}: {reason}")]
    BadSpecial {
        /// The token's string.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Training parameters that cannot work.
    #[error("training: {reason}")]
    BadTrainConfig {
        /// What is wrong.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TokenizerError>;

impl TokenizerError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TokenizerError::Io {
            path: path.into(),
            source,
        }
    }

    /// `path` holds `bytes` (from its start), which are not UTF-8 from byte `offset` on.
    pub fn not_utf8(path: impl Into<PathBuf>, bytes: &[u8], offset: usize) -> Self {
        let before = &bytes[..offset.min(bytes.len())];
        TokenizerError::InputNotUtf8 {
            path: path.into(),
            line: before.iter().filter(|&&b| b == b'\n').count() + 1,
            offset,
        }
    }

    /// Wraps a serde_json error with the file it came from.
    pub fn json(path: impl Into<PathBuf>, err: &serde_json::Error) -> Self {
        TokenizerError::Json {
            path: path.into(),
            line: err.line(),
            column: err.column(),
            message: err.to_string(),
        }
    }
}
