//! Pretraining: configuration and the training loop.

pub mod config;
