//! Inference: load a GPT-2 checkpoint (memory-mapped), run it over a KV cache, sample, score.
//!
//! - [`kv_cache`]: the per-layer key/value cache and the inference scratch buffers.
//! - The cached forwards themselves are methods of the modules: `MultiHeadAttention::
//!   forward_cached` / `forward_cross_cached` and `Block::forward_cached` / `prepare_memory`.

pub mod kv_cache;
