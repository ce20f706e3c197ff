//! One error enum for the library. Each variant names the op, field, file or limit involved,
//! and the message ends with what to do about it where that is not obvious.

use std::path::PathBuf;

/// Errors returned by the `gpt` library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must agree do not.
    #[error("{op}: shape mismatch: {left} vs {right}")]
    Shape {
        /// The operation that checked the shapes.
        op: &'static str,
        /// The first shape, formatted (e.g. `x [7, 13]`).
        left: String,
        /// The second shape, formatted.
        right: String,
    },
    /// A configuration value is invalid.
    #[error("invalid config: {field}: {reason}")]
    Config {
        /// The offending field.
        field: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A token id is outside the vocabulary.
    #[error("token id {id} is out of range for a vocabulary of {vocab_size}")]
    TokenOutOfRange {
        /// The id.
        id: usize,
        /// The vocabulary size.
        vocab_size: usize,
    },
    /// A parameter name is not in the layout table.
    #[error("unknown parameter `{0}`")]
    UnknownParam(String),
    /// An I/O error on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Anything else, with a message.
    #[error("{0}")]
    Msg(String),
}

/// Result with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An I/O error on the file at `path`.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// A shape mismatch for `op` between two shapes.
    pub fn shape(op: &'static str, left: impl Into<String>, right: impl Into<String>) -> Self {
        Error::Shape {
            op,
            left: left.into(),
            right: right.into(),
        }
    }
}
