//! Models built from the modules in [`crate::nn`].

pub mod checkpoint;
pub mod config;
pub mod gpt;
pub mod transformer;

pub use config::{GptConfig, Positions};
pub use gpt::Gpt;
