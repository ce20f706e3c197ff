//! Models built from the modules in [`crate::nn`].

pub mod config;
pub mod gpt;

pub use config::{GptConfig, Positions};
pub use gpt::Gpt;
