//! Benchmark harnesses behind `gpt bench …`: each measures our code and, on request, the same
//! work in a reference implementation (PyTorch, `transformers`) run as a peer process on the
//! same threads in the same run, and prints one table or report to standard output.
//!
//! - [`kernels`]: every core kernel forward+backward at GPT-2-small shapes.
//! - [`train`]: training tokens/s, MFU and peak memory per GPT preset.
//! - [`generate`]: GPT-2 124M decoding against the memory-bandwidth bound.
//! - [`llamacpp`]: decoding and prefill in f32, 16-bit and int8 beside llama.cpp.
//! - [`translate`]: encoder-decoder training tokens/s and beam-search sentences/s.
//! - [`finetune`]: GPT-1 fine-tuning examples/s of `gpt finetune`.
//! - [`chat`]: SFT and DPO steps/s of `gpt sft` / `gpt dpo` beside TRL's trainers.
//! - [`eval`]: `gpt eval`'s wall time per task beside lm-evaluation-harness.
//! - [`logs`]: log anomaly detection on HDFS beside an n-gram baseline and DeepLog in PyTorch.
//! - [`serve`]: a load generator for `gpt serve` beside `transformers serve` (tokens/s, time to
//!   first token, inter-token latency per concurrency level), over [`http_client`].
//! - [`harness`]: what they share (median timing, peak memory, peer processes, table cells).
//! - [`bandwidth`]: the read and copy bandwidth probes of the decode bound.
//!
//! The reference scripts live in the repository's `bench/` folder, whose README records the
//! measured results.

pub mod bandwidth;
pub mod chat;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod harness;
pub mod http_client;
pub mod kernels;
pub mod llamacpp;
pub mod logs;
pub mod serve;
pub mod train;
pub mod translate;
