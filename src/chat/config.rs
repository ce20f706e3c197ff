//! The settings of the three chat-training commands (`gpt sft`, `gpt reward`, `gpt dpo`): one
//! configuration, with the defaults of TRL's trainers where they suit a small model on a CPU,
//! and the parts they share (validation, the loop's settings, the resume rule).
//!
//! Defaults (TRL's in brackets where they differ): AdamW (0.9, 0.999, 1e-8), no weight decay,
//! clip 1.0, linear decay to 0 after a warm-up of 3% of the steps [TRL: no warm-up], batch 8
//! [TRL: 8 per device], 3 epochs for SFT and the reward model, 1 for DPO [TRL: 3], learning
//! rate 1e-4 for SFT and the reward model, 5e-6 for DPO [TRL: 2e-5 SFT, 1e-5 RM, 1e-6 DPO,
//! tuned for billion-parameter models], DPO β 0.1 with the sigmoid loss, dropout 0 [TRL
//! disables dropout for RM and DPO].

use crate::error::{Error, Result};
use crate::nn::precision::Precision;
use crate::train::checkpoint::CheckpointLayout;
use crate::train::trainer::LoopConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which of the three trainings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Supervised fine-tuning on demonstrations.
    Sft,
    /// A reward model on preference pairs.
    Reward,
    /// Direct preference optimisation on preference pairs.
    Dpo,
}

impl Method {
    /// The command's name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Sft => "sft",
            Method::Reward => "reward",
            Method::Dpo => "dpo",
        }
    }
}

/// DPO's loss on the margin `m = β·((log π_c − log π_ref,c) − (log π_r − log π_ref,r))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    /// `−log σ(m)` (Rafailov et al. 2023).
    Sigmoid,
    /// `(h' − 1/(2β))²` with `h'` the difference of the log-ratios averaged over each answer's
    /// tokens (Azar et al. 2023, as TRL computes it).
    Ipo,
    /// `max(0, 1 − m)` (SLiC).
    Hinge,
}

impl DpoLoss {
    /// The loss named `s`.
    pub fn parse(s: &str) -> Result<DpoLoss> {
        match s {
            "sigmoid" => Ok(DpoLoss::Sigmoid),
            "ipo" => Ok(DpoLoss::Ipo),
            "hinge" => Ok(DpoLoss::Hinge),
            _ => Err(Error::field(
                "--loss",
                format!("`{s}` is not one of sigmoid, ipo, hinge"),
            )),
        }
    }
}

/// Settings of a chat-training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatTrainConfig {
    /// Which training.
    pub method: Method,
    /// The model to start from (a base model for SFT, an SFT model for the others).
    pub model: PathBuf,
    /// Training records.
    pub data: PathBuf,
    /// Validation records.
    pub valid: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// Peak learning rate.
    pub lr: f32,
    /// Examples (SFT) or pairs per optimizer step.
    pub batch_size: usize,
    /// Passes over the data (ignored with `max_steps`).
    pub epochs: usize,
    /// Optimizer steps, overriding `epochs`.
    pub max_steps: Option<usize>,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f32,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f32,
    /// Warm-up as a fraction of the steps.
    pub warmup_ratio: f32,
    /// Longest sequence in tokens (default and maximum: the model's context).
    pub max_len: Option<usize>,
    /// Seed of new rows, heads, the data order and dropout.
    pub seed: u64,
    /// Skip (and count) malformed records instead of stopping at the first.
    pub skip_bad: bool,
    /// Precision of the matrix products.
    pub precision: Precision,
    /// SFT: several examples share one row (positions restart, no attention across them).
    pub packing: bool,
    /// DPO: β, the strength of the pull towards the reference.
    pub beta: f32,
    /// DPO: the loss.
    pub loss: DpoLoss,
    /// Validation every this many steps (default: once per epoch).
    pub eval_every: Option<usize>,
    /// SFT: which end of an over-long demonstration survives.
    #[serde(default)]
    pub truncation: super::encode::Truncation,
}

impl ChatTrainConfig {
    /// The defaults of `method` (see the module docs).
    pub fn new(method: Method) -> ChatTrainConfig {
        let (lr, epochs) = match method {
            Method::Sft | Method::Reward => (1e-4, 3),
            Method::Dpo => (5e-6, 1),
        };
        ChatTrainConfig {
            method,
            model: PathBuf::new(),
            data: PathBuf::new(),
            valid: None,
            out: PathBuf::from(format!("out-{}", method.name())),
            lr,
            batch_size: 8,
            epochs,
            max_steps: None,
            weight_decay: 0.0,
            grad_clip: 1.0,
            warmup_ratio: 0.03,
            max_len: None,
            seed: 1337,
            skip_bad: false,
            precision: Precision::F32,
            packing: false,
            beta: 0.1,
            loss: DpoLoss::Sigmoid,
            eval_every: None,
            truncation: super::encode::Truncation::KeepStart,
        }
    }

    /// The configuration saved in the checkpoint of the run in `out`.
    pub fn saved_in(out: &Path) -> Result<Self> {
        use crate::train::checkpoint::TrainerState;
        let dir = CheckpointLayout::Single.resume_dir(out)?;
        TrainerState::read(&dir)?.field("config")
    }

    /// Checks the values, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::field("--batch-size", "must be at least 1"));
        }
        if self.epochs == 0 && self.max_steps.is_none() {
            return Err(Error::field("--epochs", "must be at least 1"));
        }
        if self.max_steps == Some(0) {
            return Err(Error::field("--max-steps", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::field(
                "--lr",
                format!("{} is not a positive rate", self.lr),
            ));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(Error::field(
                "--warmup-ratio",
                format!("{} is not in [0, 1)", self.warmup_ratio),
            ));
        }
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err(Error::field(
                "--beta",
                format!("{} is not a positive number", self.beta),
            ));
        }
        if self.max_len.is_some_and(|m| m < 2) {
            return Err(Error::field("--max-len", "must be at least 2 tokens"));
        }
        if self.packing && self.method != Method::Sft {
            return Err(Error::field("--packing", "applies to `gpt sft` only"));
        }
        Ok(())
    }

    /// The longest sequence of a run on a model of context `n_ctx`: `--max-len`, at most the
    /// context.
    pub fn max_len_for(&self, n_ctx: usize) -> usize {
        self.max_len.unwrap_or(n_ctx).min(n_ctx)
    }

    /// The loop's settings for a run of `max_steps` steps with `steps_per_epoch`.
    pub fn loop_config(&self, max_steps: usize, steps_per_epoch: usize) -> LoopConfig {
        let warmup = (max_steps as f32 * self.warmup_ratio).ceil() as usize;
        let every = self
            .eval_every
            .unwrap_or(steps_per_epoch)
            .min(max_steps)
            .max(1);
        LoopConfig::fine_tuning(
            self.out.clone(),
            max_steps,
            every,
            self.lr,
            warmup,
            self.grad_clip,
            self.weight_decay,
        )
    }
}

/// Fields a resume may change (the budget, and the validation file).
pub const RESUME_CHANGEABLE: &[&str] = &["max_steps", "epochs", "valid", "eval_every"];

/// The resume rule, as printed with the fields a resume ignored.
pub const RESUME_RULE: &str = "A chat-training resume may change only max_steps, epochs, valid \
    and eval_every (the learning-rate schedule is recomputed for the new budget at the saved \
    step); to change anything else, start a new run (another --out, or --overwrite)";

/// The configuration a run starts with and the checkpoint it resumes from: the saved
/// configuration read over by the flags on `--resume` ([`RESUME_CHANGEABLE`]), validated, and
/// the output directory claimed for a fresh run.
pub fn start_run(
    cfg: &ChatTrainConfig,
    opts: &crate::train::TrainOptions,
) -> Result<(ChatTrainConfig, Option<crate::train::trainer::Resume>)> {
    use crate::train::run_dir;
    run_dir::start_single(
        cfg,
        &cfg.out,
        &run_dir::ResumeRules {
            changeable: RESUME_CHANGEABLE,
            rule: RESUME_RULE,
            set_out: |c, out| c.out = out,
            max_steps: |c| c.max_steps.unwrap_or(usize::MAX),
        },
        opts,
        ChatTrainConfig::validate,
    )
}

/// The run's optimizer steps: `max_steps`, else `epochs` passes of `n` examples; on resume,
/// at least one step must be left.
pub fn plan_steps(
    cfg: &ChatTrainConfig,
    n: usize,
    resume: Option<&crate::train::trainer::Resume>,
) -> Result<(usize, usize)> {
    let steps_per_epoch = n.div_ceil(cfg.batch_size).max(1);
    let max_steps = cfg.max_steps.unwrap_or(cfg.epochs * steps_per_epoch);
    if let Some(r) = resume {
        crate::train::run_dir::check_steps_left(&cfg.out, r.state.step, max_steps)?;
    }
    Ok((max_steps, steps_per_epoch))
}

/// The JSON object of a task's resume state: the data cursor, the configuration and any
/// further fields.
pub fn task_state(
    cursor: crate::train::epoch_order::Cursor,
    cfg: &ChatTrainConfig,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let json = |v: serde_json::Result<serde_json::Value>| {
        v.map_err(|e| Error::usage("chat task state", e.to_string()))
    };
    let mut m = serde_json::Map::new();
    m.insert("cursor".into(), json(serde_json::to_value(cursor))?);
    m.insert("config".into(), json(serde_json::to_value(cfg))?);
    Ok(m)
}
