//! Inference: load a GPT-2 checkpoint (memory-mapped), run it over a KV cache, sample, stream,
//! score.
//!
//! - [`model`]: [`model::InferenceModel`], weights mapped in place or converted once.
//! - [`bf16_weights`]: the bf16 weight matrices of `--dtype bf16` (packed, no f32 copy).
//! - [`kv_cache`]: the per-layer key/value cache (per-row lengths) and the scratch buffers.
//! - The cached forwards are methods of the modules: `MultiHeadAttention::forward_cached` /
//!   `cross_kv` / `forward_cross_cached` and `Block::forward_cached` / `prepare_memory`, so an
//!   encoder-decoder decoder uses the same path with a cross-attention cache.
//! - [`sampler`]: greedy, temperature, top-k, top-p, repetition penalty.
//! - [`generator`]: prefill + decode loop for a batch of prompts.
//! - [`stream`]: UTF-8-safe incremental text with stop strings.
//! - [`score`]: per-token log-probabilities with a sliding window.
//! - [`text`]: text in, text out: prompt encoding and truncation, streaming with stop strings.

pub mod bf16_weights;
pub mod gemv;
pub mod generator;
pub mod kv_cache;
pub mod model;
pub mod sampler;
pub mod score;
pub mod stream;
pub mod text;

pub use generator::{generate, FinishReason, GenerateConfig, Generation, Timing};
pub use model::InferenceModel;
pub use sampler::{Sampler, SamplingConfig};
