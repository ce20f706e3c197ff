//! `gpt`: the Transformer and the GPT family from first principles.
//!
//! Layers of the crate, bottom up:
//! - [`rng`], [`error`]: seeded randomness, one error enum.
//! - [`kernels`]: fused CPU kernels, each a forward and a backward side by side (llm.c contract).
//! - [`nn`]: modules that compose kernels (Linear, LayerNorm, attention, MLP, Transformer block)
//!   over parameters that live in one flat buffer with a named layout.
//! - [`io`]: safetensors, atomic writes and tokenizer files (depends only on `error`).
//! - [`optim`]: AdamW and gradient clipping over that flat buffer.
//! - [`model`], [`train`], [`generate`], [`translate`], [`data`]: the GPT and the
//!   encoder-decoder, training, inference, translation and the token files they read.
//! - [`finetune`]: GPT-1 fine-tuning (four input transforms, classifier head, auxiliary LM
//!   loss) as a task of the training loop; prediction and evaluation.
//! - [`eval`]: zero- and few-shot evaluation with lm-evaluation-harness's semantics.
//! - [`bench`]: the benchmark harnesses behind `gpt bench`.
//! - [`logs`]: log anomaly detection (Drain template mining of raw logs).
//! - [`tokenizer`]: re-export of the `gpt-tokenizer` crate (GPT-2 byte-level BPE).

pub mod bench;
pub mod chat;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod honeypot;
pub mod io;
pub mod kernels;
pub mod logs;
pub mod model;
pub mod nn;
pub mod optim;
pub mod rng;
pub mod serve;
pub mod threads;
pub mod train;
pub mod translate;

pub use error::{Error, Result};
pub use gpt_tokenizer as tokenizer;
