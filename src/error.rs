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
    /// A field (of a configuration, a data record, a request or a command-line flag) has an
    /// invalid value.
    #[error("invalid {field}: {reason}")]
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
    /// A file exists but its contents are wrong (malformed, truncated, inconsistent).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong and, where not obvious, what to do.
        reason: String,
    },
    /// A size is over a limit.
    #[error("{what} is {value}, over the limit of {limit}{hint}")]
    Limit {
        /// The size, named as the user knows it (a flag, a field).
        what: String,
        /// Its value.
        value: u64,
        /// The largest accepted value.
        limit: u64,
        /// What to do, starting with `"; "` (or empty).
        hint: String,
    },
    /// A training run produced a non-finite loss, gradient or weight and stopped.
    #[error("training diverged at step {step}: {what}. {checkpoint}. Likely causes: {causes}")]
    Diverged {
        /// The step that failed (counted from 1).
        step: usize,
        /// What was non-finite, and what the loop did about it.
        what: String,
        /// The last good checkpoint on disk, or that there is none.
        checkpoint: String,
        /// The likely causes, read from the run's configuration, and what to try.
        causes: String,
    },
    /// A computed result (a log-probability, logits) is NaN or infinite.
    #[error("{what} is {value}{hint}")]
    NonFinite {
        /// The value, named as the user knows it.
        what: String,
        /// Its value (NaN or ±inf).
        value: f32,
        /// What to do, starting with `"; "` (or empty).
        hint: String,
    },
    /// An API was called in a way its contract forbids (a programming error of the caller,
    /// not bad user input), named by the function.
    #[error("{op}: {reason}")]
    Usage {
        /// The function.
        op: &'static str,
        /// What was wrong.
        reason: String,
    },
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

    /// A malformed or inconsistent file at `path`.
    pub fn file(path: &std::path::Path, reason: impl Into<String>) -> Self {
        Error::File {
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    /// An invalid value of `field`.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// `what` is `value`, over `limit`; `hint` says what to do (may be empty).
    pub fn limit(what: impl Into<String>, value: u64, limit: u64, hint: &str) -> Self {
        Error::Limit {
            what: what.into(),
            value,
            limit,
            hint: if hint.is_empty() {
                String::new()
            } else {
                format!("; {hint}")
            },
        }
    }

    /// A contract violation in `op`.
    pub fn usage(op: &'static str, reason: impl Into<String>) -> Self {
        Error::Usage {
            op,
            reason: reason.into(),
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
