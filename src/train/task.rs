//! The one trait a training task implements; [`super::trainer::run`] is the one loop that drives
//! it.
//!
//! Division of labour. A task owns its model(s), its data and whatever extra state exact resume
//! needs (data position, RNGs, its configuration). The loop owns everything that is the same for
//! every task: the AdamW state and the learning-rate schedule, gradient accumulation and clipping,
//! non-finite steps (skipped or stopped on), evaluation and checkpoint cadence, atomic
//! checkpoints and resume, Ctrl-C, the progress bar, `metrics.jsonl` and the loss plot.
//!
//! How the planned tasks fit, without touching the loop:
//! - GPT pretraining ([`super::pretrain`]) and translation ([`crate::translate::trainer`]): one
//!   model, batches from a sampler, dropout RNG in the task state.
//! - GPT-1 fine-tuning with a classifier head, reward models: the head's tensors are part of the
//!   task's [`Params`] layout (named tensors in one flat buffer), so the loop's optimizer covers
//!   them like any other; the task's loss mixes LM and classification terms as it likes.
//! - SFT: pretraining with masked targets, a different sampler in the task.
//! - DPO: the task owns the policy and a frozen reference model; `params` is the policy's only, a
//!   micro-batch is a batch of (chosen, rejected) pairs whose loss needs four forward passes, and
//!   `tokens` counts all of them. The reference is loaded by the task from its own configuration
//!   and never enters a checkpoint's optimizer state.

use crate::error::{Error, Result};
use crate::nn::params::Params;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Told during backward that every gradient from an offset to the end of the flat buffer is
/// final: `(offset, the gradient buffer)` ([`crate::dist::reducer`]).
pub type FinalGrads = crate::nn::stack::GradFn;

/// What one micro-batch's forward and backward pass gave.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MicroStep {
    /// Its mean loss (unscaled).
    pub loss: f32,
    /// Tokens it processed (for throughput).
    pub tokens: usize,
}

/// A training task: a model (or several), its data and its extra state. See the module
/// documentation for who does what.
pub trait Task {
    /// The trainable parameters and their gradients, one named layout. The loop's AdamW
    /// moments share this layout and are saved under these names.
    fn params(&mut self) -> &mut Params;

    /// Draws the next micro-batch, runs forward and backward and adds `scale` times its
    /// gradients to `params().grad` (the loop zeroes them once per optimizer step).
    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep>;

    /// Called after each optimizer update changed `params().data` (e.g. to re-round the bf16
    /// shadow of the weights). Default: nothing.
    fn after_update(&mut self) {}

    /// The likely causes of a diverged run that the task's configuration shows (e.g. a learning
    /// rate far above the usual one, bf16 products), each with what to try; the loop adds its
    /// own (no clipping, a tiny eps) to the error. Default: none.
    fn divergence_hints(&self) -> Vec<String> {
        Vec::new()
    }

    /// The task's own metrics of the optimizer step just taken (e.g. DPO's `rewards/margins`),
    /// averaged over its micro-batches; written to `metrics.jsonl`, the `--json` lines and
    /// `metrics.png` beside the loss. Default: none.
    fn step_metrics(&mut self) -> Vec<(String, f32)> {
        Vec::new()
    }

    /// The task's own metrics of the last [`Task::evaluate`] (e.g. validation accuracy), named
    /// `eval/...`. Default: none.
    fn eval_metrics(&mut self) -> Vec<(String, f32)> {
        Vec::new()
    }

    /// The validation loss, or `None` without validation data. Must not disturb the training
    /// state (batches, RNGs).
    fn evaluate(&mut self) -> Result<Option<f32>>;

    /// Writes what inference needs (configuration, weights, tokenizer) into the checkpoint
    /// directory `dir`; `meta` (the step) goes into the weights' safetensors header.
    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()>;

    /// The extra state exact resume needs, as JSON fields stored in `trainer_state.json` next to
    /// the loop's own (`version`, `step`, `train_seconds`).
    fn state(&self) -> Result<Map<String, Value>>;

    /// Data parallelism ([`crate::dist`]): this process is rank `rank` of `ranks`. From then on
    /// each micro-batch is this rank's share of a global batch `ranks` times the configured one,
    /// drawn alike on every rank, so that the ranks together take the steps of one process with
    /// the global batch; random streams such as dropout's differ per rank. Holds across
    /// [`Task::restore`]. Default: an error (the task runs as one process only).
    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        let _ = rank;
        Err(Error::usage(
            "mpirun",
            format!("this training task does not run on several ranks yet ({ranks} started); run it as one process"),
        ))
    }

    /// Installs (or with `None` removes) `ready`, to be called during backward as the
    /// gradients become final, so that averaging them over ranks overlaps the rest of backward.
    /// Returns whether the task will call it (otherwise every gradient is averaged after
    /// backward). Default: `false`.
    fn report_final_grads(&mut self, ready: Option<FinalGrads>) -> bool {
        let _ = ready;
        false
    }

    /// A fingerprint of what every rank must share (configuration and data, not paths), compared
    /// across ranks before training. Default: 0.
    fn fingerprint(&self) -> u64 {
        0
    }

    /// Restores from the checkpoint directory `dir`: the weights [`Task::save`] wrote and the
    /// fields [`Task::state`] returned (the whole `trainer_state.json` object).
    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()>;
}
