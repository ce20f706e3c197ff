//! Log anomaly detection (the source document's "learn normal behaviour, flag what deviates";
//! DeepLog, Du et al. CCS 2017): raw logs parsed into templates (Drain), sessions of log keys,
//! a small GPT over keys trained on normal sessions through the one training loop, DeepLog's
//! top-g detector and a surprisal detector over it, and detection metrics.
//!
//! Parsing:
//! - [`format`]: loghub-style line formats (header fields split off, `<Content>` mined).
//! - [`mask`]: masking of variables (ids, IPs, numbers, paths) before mining.
//! - [`drain`]: the Drain miner (fixed-depth parse tree, similarity threshold).
//! - [`preset`]: Drain's loghub benchmark settings per data set (`hdfs`, `bgl`, ...).
//! - [`parser`]: format + masks + Drain, template ids, a saved state to match new lines.
//! - [`grouping`]: loghub's grouping accuracy against a ground truth.
//! - [`output`]: the files of `gpt logs parse`.
//!
//! Detection:
//! - [`sessions`]: DeepLog's session files, and windows of the context.
//! - [`parsed`]: sessions from a parse or from raw lines matched against a saved parser.
//! - [`vocab`]: the key vocabulary (`<s>`, `</s>`, `<unk>`, then the training keys).
//! - [`train`]: `gpt logs train` (a task of the training loop, the threshold on validation).
//! - [`score`]: per-position NLL, rank and most likely keys.
//! - [`detect`]: the top-g and surprisal detectors and their verdicts.
//! - [`model`]: a trained model loaded for detection.
//! - [`ngram`]: the n-gram count baseline.
//! - [`metrics`]: precision, recall, F1, ROC-AUC, PR-AUC.

pub mod detect;
pub mod drain;
pub mod format;
pub mod grouping;
pub mod mask;
pub mod metrics;
pub mod model;
pub mod ngram;
pub mod output;
pub mod parsed;
pub mod parser;
pub mod preset;
pub mod score;
pub mod sessions;
pub mod train;
pub mod vocab;

pub use parser::{LogParser, ParsedLine};
