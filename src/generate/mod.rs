//! Generation over an inference model: sessions, sampling, streaming and scoring. The model
//! itself ([`crate::model::inference::InferenceModel`], weights mapped in place or converted
//! once) and its KV cache ([`crate::nn::kv_cache`]) live below; nothing below imports this
//! module.
//!
//! - [`sampler`]: greedy, temperature, top-k, top-p, repetition penalty.
//! - [`generator`]: prefill + decode loop for a batch of prompts.
//! - [`stream`]: UTF-8-safe incremental text with stop strings.
//! - [`score`]: per-token log-probabilities with a sliding window.
//! - [`text`]: text in, text out: prompt encoding and truncation, streaming with stop strings.

pub mod generator;
pub mod sampler;
pub mod score;
pub mod stream;
pub mod text;

pub use crate::model::inference::InferenceModel;
pub use generator::{
    generate, generate_observed, FinishReason, GenerateConfig, Generation, Timing,
};
pub use sampler::{Sampler, SamplingConfig};
