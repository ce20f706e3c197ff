//! Models built from the modules in [`crate::nn`].

pub mod checkpoint;
pub mod config;
pub mod gguf_model;
pub mod gpt;
pub mod grown;
pub mod inference;
pub mod memory;
pub mod packed_weights;
pub mod transformer;
pub mod weight_dtype;

pub use config::{GptConfig, Positions};
pub use gpt::Gpt;
