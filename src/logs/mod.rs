//! Log anomaly detection: parsing raw logs into templates (Drain), so that a log becomes a
//! sequence of event ids with parameters.
//!
//! - [`format`]: loghub-style line formats (header fields split off, `<Content>` mined).
//! - [`mask`]: masking of variables (ids, IPs, numbers, paths) before mining.
//! - [`drain`]: the Drain miner (fixed-depth parse tree, similarity threshold).
//! - [`preset`]: Drain's loghub benchmark settings per data set (`hdfs`, `bgl`, ...).
//! - [`parser`]: format + masks + Drain, template ids, a saved state to match new lines.
//! - [`grouping`]: loghub's grouping accuracy against a ground truth.
//! - [`output`]: the files of `gpt logs parse`.

pub mod drain;
pub mod format;
pub mod grouping;
pub mod mask;
pub mod output;
pub mod parser;
pub mod preset;

pub use parser::{LogParser, ParsedLine};
