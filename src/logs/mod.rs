//! Log anomaly detection (the source document's "learn normal behaviour, flag what deviates";
//! DeepLog, Du et al. CCS 2017): session files of log keys, a small GPT over keys trained on
//! normal sessions through the one training loop, DeepLog's top-g detector and a surprisal
//! detector over it, and detection metrics.

pub mod detect;
pub mod metrics;
pub mod model;
pub mod ngram;
pub mod score;
pub mod sessions;
pub mod train;
pub mod vocab;
