//! `TrainConfig`: every knob of a pretraining run, with nanoGPT's defaults. Precedence:
//! defaults, then a TOML file (`--config run.toml`, unknown keys are errors), then flags.

use crate::error::{Error, Result};
use crate::optim::{AdamWConfig, Schedule};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What the training loop does with a step whose loss or gradient norm is NaN or infinite
/// (`--on-nan`). Either way the non-finite values never reach the weights or a checkpoint.
///
/// Why skip is the default: one bad batch (a rare overflow, a bf16 spike) should not end a
/// long run, while a run that really diverges makes every step non-finite and so still stops,
/// after `max_nan_skips` tries, with the same error as `stop`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNan {
    /// Skip the step: no update, the optimizer state and the step count stay as they were
    /// (the micro-batches are consumed); stop when more than `max_nan_skips` steps in a row
    /// would be skipped, or at once when the weights themselves are no longer finite.
    #[default]
    Skip,
    /// Stop at the first non-finite step.
    Stop,
}

impl OnNan {
    /// The accepted names.
    pub const NAMES: [&'static str; 2] = ["skip", "stop"];

    /// `skip` or `stop`.
    pub fn name(self) -> &'static str {
        match self {
            OnNan::Skip => "skip",
            OnNan::Stop => "stop",
        }
    }
}

impl fmt::Display for OnNan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OnNan {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "skip" => Ok(OnNan::Skip),
            "stop" => Ok(OnNan::Stop),
            other => Err(Error::field(
                "on_nan",
                format!("`{other}` is not one of {}", OnNan::NAMES.join(", ")),
            )),
        }
    }
}

/// Default of `max_nan_skips`: steps in a row that may be skipped before the run stops.
pub const DEFAULT_MAX_NAN_SKIPS: usize = 5;

/// Configuration of a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Model preset (`tiny`, `char-baby`, `gpt2`, ...).
    pub preset: String,
    /// A `gpt prepare` output directory, or a text file prepared on the fly. `None`: the bundled
    /// corpus.
    pub data: Option<PathBuf>,
    /// Tokenizer used when `data` is a text file: `char`, `gpt2`, or a tokenizer directory/file.
    pub tokenizer: String,
    /// Output directory (checkpoint, metrics, plot).
    pub out: PathBuf,
    /// Optimizer steps.
    pub max_steps: usize,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Sequence length (also the model's context).
    pub block_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Final learning rate (default lr/10).
    pub min_lr: Option<f32>,
    /// Linear warmup steps.
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay (matrices only).
    pub weight_decay: f32,
    /// AdamW β1.
    pub beta1: f32,
    /// AdamW β2.
    pub beta2: f32,
    /// Global gradient-norm clip (0 disables).
    pub grad_clip: f32,
    /// Dropout override (default: the preset's).
    pub dropout: Option<f32>,
    /// Layer-count override.
    pub n_layer: Option<usize>,
    /// Head-count override.
    pub n_head: Option<usize>,
    /// Width override.
    pub n_embd: Option<usize>,
    /// LayerNorm placement override (`pre` or `post`).
    pub norm: Option<crate::nn::block::NormPlacement>,
    /// Position-embedding override (`learned` or `sinusoidal`).
    pub positions: Option<crate::model::Positions>,
    /// Seed for initialisation, batches and dropout.
    pub seed: u64,
    /// Evaluate validation loss every this many steps (and at the end).
    pub eval_interval: usize,
    /// Batches per validation estimate.
    pub eval_iters: usize,
    /// Save a checkpoint every this many steps (and at the end).
    pub ckpt_interval: usize,
    /// Tokens to sample at the end (0: none).
    pub sample_tokens: usize,
    /// Fraction of the data held out for validation when preparing on the fly.
    pub val_fraction: f32,
    /// Precision of the matrix products: `f32`, or `bf16` (mixed precision: f32 master weights,
    /// gradients and optimizer state; bf16 products with f32 accumulation).
    pub precision: crate::nn::precision::Precision,
    /// What to do with a step whose loss or gradient norm is not finite: `skip` or `stop`
    /// (configurations saved before this field read as `skip`).
    pub on_nan: OnNan,
    /// With `on_nan = "skip"`: steps in a row that may be skipped before the run stops.
    pub max_nan_skips: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            preset: "tiny".into(),
            data: None,
            tokenizer: "char".into(),
            out: PathBuf::from("runs/default"),
            max_steps: 5000,
            batch_size: 16,
            block_size: 128,
            grad_accum: 1,
            lr: 1e-3,
            min_lr: None,
            warmup_steps: 200,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            dropout: None,
            n_layer: None,
            n_head: None,
            n_embd: None,
            norm: None,
            positions: None,
            seed: 1337,
            eval_interval: 250,
            eval_iters: 20,
            ckpt_interval: 500,
            sample_tokens: 400,
            val_fraction: 0.1,
            precision: crate::nn::precision::Precision::F32,
            on_nan: OnNan::Skip,
            max_nan_skips: DEFAULT_MAX_NAN_SKIPS,
        }
    }
}

/// Reads a TOML file into a config struct with `#[serde(default, deny_unknown_fields)]`:
/// missing keys keep their defaults, unknown keys are errors naming the file.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    toml::from_str(&text).map_err(|e| Error::Config {
        field: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads a TOML file over `base` instead of the defaults: the keys the file sets replace
/// `base`'s fields, the others keep `base`'s values (a resume reads `--config` over the saved
/// configuration this way). Unknown keys are errors naming the file, as in [`read_toml`].
pub fn read_toml_over<T>(path: &Path, base: &T) -> Result<T>
where
    T: serde::de::DeserializeOwned + Serialize,
{
    let from_file: T = read_toml(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let keys: toml::Table = toml::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
    let json = |v: &T| match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        _ => Err(Error::usage(
            "read_toml_over",
            "a configuration is a struct",
        )),
    };
    let (mut merged, file) = (json(base)?, json(&from_file)?);
    for k in keys.keys() {
        if let Some(v) = file.get(k) {
            merged.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged))
        .map_err(|e| Error::file(path, e.to_string()))
}

impl TrainConfig {
    /// Reads a TOML file over the defaults; unknown keys are errors naming the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        read_toml(path)
    }

    /// The configuration saved in the checkpoint of the run in `out` (what `--resume` starts
    /// from before applying flags).
    pub fn saved_in(out: &Path) -> Result<Self> {
        use super::checkpoint::{CheckpointLayout, TrainerState};
        let dir = CheckpointLayout::Single.resume_dir(out)?;
        TrainerState::read(&dir)?.field("config")
    }

    /// Checks ranges: this run's own fields here, the optimizer, schedule, clipping and NaN
    /// settings through [`super::trainer::LoopConfig::validate`] (the one check of those, shared
    /// with every task), before any data is read.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| {
            Err(Error::Config {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if self.max_steps == 0 {
            return bad("max_steps", "must be at least 1");
        }
        if self.batch_size == 0 || self.block_size == 0 || self.grad_accum == 0 {
            return bad("batch_size/block_size/grad_accum", "must be at least 1");
        }
        // Tokens per step size the batch buffers and the token counts: no overflow, named by
        // flag (the memory check then compares what they need with what the machine has).
        crate::model::memory::product(&[
            ("--batch-size", self.batch_size),
            ("--block-size", self.block_size),
            ("--grad-accum", self.grad_accum),
        ])?;
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad("val_fraction", "must be in [0, 1)");
        }
        if self.eval_interval == 0 || self.ckpt_interval == 0 || self.eval_iters == 0 {
            return bad(
                "eval_interval/ckpt_interval/eval_iters",
                "must be at least 1",
            );
        }
        super::pretrain::loop_config(self).validate()
    }

    /// The AdamW settings of the run (eps 1e-8, nanoGPT's).
    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: 1e-8,
            weight_decay: self.weight_decay,
        }
    }

    /// The learning-rate schedule of the run: linear warmup, cosine to `min_lr`.
    pub fn schedule(&self) -> Schedule {
        Schedule::WarmupCosine {
            lr: self.lr,
            min_lr: self.min_lr(),
            warmup: self.warmup_steps,
            max_steps: self.max_steps,
        }
    }

    /// The likely causes of a diverged run that this configuration shows (those of every task,
    /// clipping and eps, are the loop's): a learning rate well above the preset's usual one, no
    /// warmup, bf16 products.
    pub fn divergence_hints(&self) -> Vec<String> {
        let mut hints = Vec::new();
        let usual = usual_lr(&self.preset);
        if self.lr > 2.0 * usual {
            let ratio = self.lr / usual;
            let ratio = if ratio < 1e3 {
                format!("{ratio:.0}")
            } else {
                format!("{ratio:.0e}")
            };
            hints.push(format!(
                "lr {:e} is {ratio}x the {usual} usual for preset {} (try --lr {usual})",
                self.lr, self.preset
            ));
        }
        if self.warmup_steps == 0 {
            hints.push("no warmup (warmup_steps = 0; try a few hundred steps)".into());
        }
        if self.precision == crate::nn::precision::Precision::Bf16 {
            hints.push("bf16 matrix products (try --precision f32)".into());
        }
        hints
    }

    /// The final learning rate.
    pub fn min_lr(&self) -> f32 {
        self.min_lr.unwrap_or(self.lr / 10.0)
    }
}

/// The peak learning rate known to train each preset: GPT-1's paper (2.5e-4), GPT-3's table for
/// the GPT-2 sizes (6e-4, 3e-4, 2.5e-4, 2e-4), nanoGPT's shakespeare-char (1e-3) for the small
/// presets. Used only to say "lr is high" when a run diverges.
fn usual_lr(preset: &str) -> f32 {
    match preset {
        "gpt1" | "gpt2-large" => 2.5e-4,
        "gpt2" => 6e-4,
        "gpt2-medium" => 3e-4,
        "gpt2-xl" => 2e-4,
        _ => 1e-3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c: TrainConfig = toml::from_str("max_steps = 7\nlr = 0.002\n").unwrap();
        assert_eq!((c.max_steps, c.lr, c.batch_size), (7, 0.002, 16));
        let err = toml::from_str::<TrainConfig>("max_step = 7\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_step"), "{err}");
    }

    #[test]
    fn overflowing_batch_sizes_name_the_flags() {
        let c = TrainConfig {
            batch_size: usize::MAX,
            block_size: 2,
            ..TrainConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("--batch-size") && e.contains("--block-size") && e.contains("overflows"),
            "{e}"
        );
        let c = TrainConfig {
            grad_accum: usize::MAX,
            ..TrainConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--grad-accum"));
    }

    #[test]
    fn on_nan_parses_and_old_configs_without_it_read_as_skip() {
        assert_eq!("stop".parse::<OnNan>().unwrap(), OnNan::Stop);
        let err = "halt".parse::<OnNan>().unwrap_err().to_string();
        assert!(
            err.contains("on_nan") && err.contains("skip, stop"),
            "{err}"
        );
        let c: TrainConfig = toml::from_str("on_nan = \"stop\"\nmax_nan_skips = 2\n").unwrap();
        assert_eq!((c.on_nan, c.max_nan_skips), (OnNan::Stop, 2));
        // A configuration saved in a checkpoint before these fields existed.
        let mut v = serde_json::to_value(TrainConfig::default()).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("on_nan");
        m.remove("max_nan_skips");
        let c: TrainConfig = serde_json::from_value(v).unwrap();
        assert_eq!(
            (c.on_nan, c.max_nan_skips),
            (OnNan::Skip, DEFAULT_MAX_NAN_SKIPS)
        );
    }
}
