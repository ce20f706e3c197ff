//! Pretraining: configuration, the training loop and its loss plot.

pub mod config;
pub mod plot;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{train, TrainOptions, TrainOutcome};
