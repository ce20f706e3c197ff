//! Fine-tuning as a [`Task`] of the one training loop, and [`finetune`], which loads the base
//! model and the data and hands them to [`crate::train::trainer::run`].
//!
//! Data order: each epoch visits the training examples once in an order shuffled from the seed
//! and the epoch number; a micro-batch is the next `batch_size` of them (the last of an epoch
//! may be smaller). So `--epochs E` is `E · ⌈n / batch_size⌉` optimizer steps, and the state
//! exact resume needs is (epoch, position) plus the dropout RNG.
//!
//! The paper's recipe is the default ([`FinetuneConfig::default`]): lr 6.25e-5, batch 32, 3
//! epochs, linear warm-up over ⌈0.2%⌉ of the updates then linear decay to 0
//! ([`Schedule::WarmupLinear`]), Adam (0.9, 0.999, 1e-8), clip 1.0, weight decay 0.01 on
//! matrices, dropout 0.1, λ = 0.5.

use super::model::{Batch, FinetuneModel};
use super::records::{read_records, LabelSet};
use super::transform::{encode_records, Example, Labels, Transform};
use super::{load_base, save_finetuned, FinetuneMeta, TaskKind, META_VERSION};
use crate::error::{Error, Result};
use crate::nn::params::Params;
use crate::nn::precision::Precision;
use crate::optim::schedule::finetune_warmup;
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use crate::train::checkpoint::{state_field, CheckpointLayout};
use crate::train::epoch_order::EpochOrder;
use crate::train::run_dir;
use crate::train::task::{MicroStep, Task};
use crate::train::trainer::{run, LoopConfig, TrainOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Settings of a fine-tuning run (the flags of `gpt finetune`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Base model directory.
    pub model: PathBuf,
    /// The task.
    pub task: TaskKind,
    /// Training records.
    pub train: PathBuf,
    /// Validation records (optional).
    pub valid: Option<PathBuf>,
    /// Output directory.
    pub out: PathBuf,
    /// λ, the weight of the auxiliary LM loss (0: off).
    pub aux_lm: f32,
    /// Passes over the training set (ignored with `max_steps`).
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Examples per optimizer step.
    pub batch_size: usize,
    /// Optimizer steps, overriding `epochs`.
    pub max_steps: Option<usize>,
    /// Dropout of the trunk and the head.
    pub dropout: f32,
    /// AdamW weight decay (matrices only).
    pub weight_decay: f32,
    /// Global gradient-norm clip.
    pub grad_clip: f32,
    /// Seed of the new rows, the head, the data order and dropout.
    pub seed: u64,
    /// Skip (and count) bad records instead of stopping at the first.
    pub skip_bad: bool,
    /// Start the trunk from a fresh initialisation (the base's architecture and tokenizer,
    /// not its weights): GPT-1's "no pre-training" ablation.
    #[serde(default)]
    pub from_scratch: bool,
    /// Precision of the matrix products: f32, or bf16 (f32 master weights, gradients and
    /// optimizer state).
    #[serde(default)]
    pub precision: Precision,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            model: PathBuf::new(),
            task: TaskKind::Classify,
            train: PathBuf::new(),
            valid: None,
            out: PathBuf::from("out-finetune"),
            aux_lm: 0.5,
            epochs: 3,
            lr: 6.25e-5,
            batch_size: 32,
            max_steps: None,
            dropout: 0.1,
            weight_decay: 0.01,
            grad_clip: 1.0,
            seed: 1337,
            skip_bad: false,
            from_scratch: false,
            precision: Precision::F32,
        }
    }
}

/// Fields of [`FinetuneConfig`] a resume may change (the budget, and the validation file).
pub const RESUME_CHANGEABLE: &[&str] = &["max_steps", "epochs", "valid"];

/// The resume rule, as printed with the fields a resume ignored.
pub const RESUME_RULE: &str = "A fine-tuning resume may change only max_steps, epochs and valid \
    (the learning-rate schedule is recomputed for the new budget at the saved step); to change \
    anything else, start a new run (another --out, or --overwrite)";

impl FinetuneConfig {
    /// The configuration saved in the checkpoint of the run in `out` (what `--resume` starts
    /// from before the flags are read over it).
    pub fn saved_in(out: &Path) -> Result<Self> {
        use crate::train::checkpoint::TrainerState;
        let dir = CheckpointLayout::Single.resume_dir(out)?;
        TrainerState::read(&dir)?.field("config")
    }

    /// Checks the values.
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
        if !(self.aux_lm >= 0.0 && self.aux_lm.is_finite()) {
            return Err(Error::field(
                "--aux-lm",
                format!("{} is not a weight >= 0", self.aux_lm),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::field(
                "--dropout",
                format!("{} is not in [0, 1)", self.dropout),
            ));
        }
        Ok(())
    }
}

/// The data of a run, encoded.
struct Data {
    train: Vec<Example>,
    valid: Vec<Example>,
}

/// GPT-1 fine-tuning: the model, the encoded data and the state exact resume needs.
pub struct Finetune {
    cfg: FinetuneConfig,
    model: FinetuneModel,
    meta: FinetuneMeta,
    tok: AnyTokenizer,
    data: Data,
    order: EpochOrder,
    dropout_rng: Rng,
    /// Accuracy of the last validation.
    pub val_accuracy: Option<f32>,
}

impl Finetune {
    fn next_batch(&mut self) -> Result<Batch> {
        let picked: Vec<&Example> = self
            .order
            .next(self.cfg.batch_size)
            .into_iter()
            .map(|i| &self.data.train[i])
            .collect();
        Batch::build(&picked, self.meta.pad_token_id, 0)
    }

    /// Mean task loss and accuracy over the validation set (evaluation mode).
    fn validate(&mut self) -> Result<Option<(f32, f32)>> {
        if self.data.valid.is_empty() {
            return Ok(None);
        }
        let mut rng = Rng::new(0);
        let (mut loss, mut correct) = (0.0f64, 0usize);
        let n = self.data.valid.len();
        for chunk in (0..n).collect::<Vec<_>>().chunks(self.cfg.batch_size) {
            let picked: Vec<&Example> = chunk.iter().map(|&i| &self.data.valid[i]).collect();
            let b = Batch::build(&picked, self.meta.pad_token_id, 0)?;
            self.model.forward(&b, false, &mut rng)?;
            let k = self.model.scores().len() / b.n;
            for (row, &y) in self.model.scores().chunks(k).zip(&b.labels) {
                correct += (argmax(row) as i32 == y) as usize;
            }
            loss += self.model.task_loss(&b) as f64 * b.n as f64;
        }
        Ok(Some(((loss / n as f64) as f32, correct as f32 / n as f32)))
    }
}

/// Index of the largest value (the first of ties).
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

impl Task for Finetune {
    fn params(&mut self) -> &mut Params {
        &mut self.model.gpt.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let batch = self.next_batch()?;
        let (rank, ranks) = self.order.shard();
        let mut own = crate::dist::rank_stream(&mut self.dropout_rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.dropout_rng);
        let losses = self
            .model
            .forward_backward(&batch, self.cfg.aux_lm, scale, rng)?;
        Ok(MicroStep {
            loss: losses.total,
            tokens: batch.tokens(),
        })
    }

    fn report_final_grads(&mut self, ready: Option<crate::train::FinalGrads>) -> bool {
        self.model.gpt.report_final_grads(ready)
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.order.set_shard(rank, ranks);
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        crate::dist::config_fingerprint(&self.cfg, &["model", "train", "valid", "out"])
    }

    fn after_update(&mut self) {
        self.model.gpt.refresh_bf16_weights();
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        Ok(self.validate()?.map(|(loss, acc)| {
            self.val_accuracy = Some(acc);
            loss
        }))
    }

    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        save_finetuned(&self.model, &self.meta, &self.tok, dir, meta)
    }

    fn state(&self) -> Result<Map<String, Value>> {
        let json = |v: serde_json::Result<Value>| {
            v.map_err(|e| Error::usage("Finetune::state", e.to_string()))
        };
        let mut m = Map::new();
        m.insert(
            "cursor".into(),
            json(serde_json::to_value(self.order.cursor))?,
        );
        m.insert(
            "dropout_rng".into(),
            json(serde_json::to_value(&self.dropout_rng))?,
        );
        m.insert("config".into(), json(serde_json::to_value(&self.cfg))?);
        Ok(m)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        let family = crate::model::checkpoint::hf_family(&self.model.gpt.config);
        crate::model::checkpoint::load_params(
            &mut self.model.gpt.params,
            &dir.join(crate::model::checkpoint::WEIGHTS_FILE),
            |n| super::stored_names(n, family),
        )?;
        self.order.seek(state_field(dir, state, "cursor")?);
        self.dropout_rng = state_field(dir, state, "dropout_rng")?;
        // The bf16 shadow is rounded from the restored master weights.
        self.model.gpt.set_precision(self.cfg.precision);
        Ok(())
    }
}

/// What a fine-tuning run did.
#[derive(Clone, Debug)]
pub struct FinetuneOutcome {
    /// The loop's outcome (steps, losses, validation loss, checkpoint).
    pub train: crate::train::TrainOutcome,
    /// Validation accuracy at the end, if there is validation data.
    pub val_accuracy: Option<f32>,
    /// Training examples.
    pub n_train: usize,
    /// Validation examples.
    pub n_valid: usize,
    /// Examples with a segment cut (train, valid).
    pub cut: (usize, usize),
    /// Records skipped as bad (train, valid), with `skip_bad`.
    pub skipped: (usize, usize),
    /// Optimizer steps of the run.
    pub max_steps: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// The label set (empty for choice).
    pub labels: Vec<Value>,
}

/// Fine-tunes `cfg.model` on `cfg.train` into `cfg.out` (the model is `OUT/checkpoint`, which
/// the loop replaces atomically at every save); `opts.resume` continues an interrupted run.
pub fn finetune(cfg: &FinetuneConfig, opts: &TrainOptions) -> Result<FinetuneOutcome> {
    // An epoch-based budget is only known once the data is read: checked again below.
    let (cfg, resume) = run_dir::start_single(
        cfg,
        &cfg.out,
        &run_dir::ResumeRules {
            changeable: RESUME_CHANGEABLE,
            rule: RESUME_RULE,
            set_out: |c, out| c.out = out,
            max_steps: |c| c.max_steps.unwrap_or(usize::MAX),
        },
        opts,
        FinetuneConfig::validate,
    )?;
    // Records first: a bad file fails before the model is loaded.
    let (train_recs, train_read) = read_records(&cfg.train, cfg.task, true, cfg.skip_bad)?;
    let (labels, n_choices) = match cfg.task {
        TaskKind::Choice => {
            let k = match &train_recs[0].inputs {
                super::records::Inputs::Choice(_, c) => c.len(),
                _ => 0,
            };
            (None, k)
        }
        _ => (Some(LabelSet::from_records(&cfg.train, &train_recs)?), 0),
    };
    let valid_recs = match &cfg.valid {
        Some(p) => Some(read_records(p, cfg.task, true, cfg.skip_bad)?),
        None => None,
    };
    let n_out = labels.as_ref().map_or(1, LabelSet::len);
    let mut base = load_base(
        &cfg.model,
        cfg.task,
        n_out,
        cfg.dropout,
        cfg.seed,
        cfg.from_scratch,
    )?;
    base.model.gpt.set_precision(cfg.precision);
    let max_len = base.model.gpt.config.n_ctx;
    let tf = Transform::new(cfg.task, base.specials, max_len)?;
    let lab = Labels {
        set: labels.as_ref(),
        n_choices,
    };
    let (train, train_enc) = encode_records(
        &cfg.train,
        &train_recs,
        &base.tokenizer,
        &tf,
        &lab,
        cfg.skip_bad,
    )?;
    let (valid, valid_enc) = match (&cfg.valid, &valid_recs) {
        (Some(p), Some((recs, _))) => {
            encode_records(p, recs, &base.tokenizer, &tf, &lab, cfg.skip_bad)?
        }
        _ => (Vec::new(), Default::default()),
    };
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let max_steps = cfg.max_steps.unwrap_or(cfg.epochs * steps_per_epoch);
    if let Some(r) = &resume {
        run_dir::check_steps_left(&cfg.out, r.state.step, max_steps)?;
    }
    let warmup = finetune_warmup(max_steps);
    let meta = FinetuneMeta {
        version: META_VERSION,
        task: cfg.task,
        labels: labels
            .as_ref()
            .map(|l| l.labels.clone())
            .unwrap_or_default(),
        n_choices,
        specials: base.specials,
        pad_token_id: base.specials.start,
        max_len,
        aux_lm: cfg.aux_lm,
        base: base.dir.clone(),
    };
    let mut rng = Rng::new(cfg.seed.wrapping_add(1));
    let mut task = Finetune {
        dropout_rng: rng.fork(),
        model: base.model,
        meta,
        tok: base.tokenizer,
        order: EpochOrder::new(train.len(), cfg.seed),
        data: Data { train, valid },
        val_accuracy: None,
        cfg: cfg.clone(),
    };
    if opts.talk() {
        let m = &task.model.gpt.config;
        eprintln!(
            "gpt finetune: task {}, base {} ({} layers, width {}, context {}, vocabulary {} with start/delim/extract = {}/{}/{}), {} labels",
            cfg.task.name(),
            task.meta.base.display(),
            m.n_layer,
            m.n_embd,
            m.n_ctx,
            m.vocab_size,
            task.meta.specials.start,
            task.meta.specials.delim,
            task.meta.specials.extract,
            if cfg.task == TaskKind::Choice { n_choices } else { n_out },
        );
        eprintln!(
            "data: {} train / {} valid examples ({} / {} cut to the context, {} / {} skipped); {max_steps} steps ({warmup} warm-up), batch {}, lr {}, λ {}",
            task.data.train.len(),
            task.data.valid.len(),
            train_enc.cut,
            valid_enc.cut,
            train_read.skipped + train_enc.skipped,
            valid_recs.as_ref().map_or(0, |v| v.1.skipped) + valid_enc.skipped,
            cfg.batch_size,
            cfg.lr,
            cfg.aux_lm
        );
    }
    let every = steps_per_epoch.min(max_steps).max(1);
    let loop_cfg = LoopConfig::fine_tuning(
        cfg.out.clone(),
        max_steps,
        every,
        cfg.lr,
        warmup,
        cfg.grad_clip,
        cfg.weight_decay,
    );
    let outcome = run(&mut task, &loop_cfg, opts, resume.as_ref())?;
    Ok(FinetuneOutcome {
        train: outcome,
        val_accuracy: task.val_accuracy,
        n_train: task.data.train.len(),
        n_valid: task.data.valid.len(),
        cut: (train_enc.cut, valid_enc.cut),
        skipped: (
            train_read.skipped + train_enc.skipped,
            valid_recs.as_ref().map_or(0, |v| v.1.skipped) + valid_enc.skipped,
        ),
        max_steps,
        warmup,
        labels: task.meta.labels.clone(),
    })
}
