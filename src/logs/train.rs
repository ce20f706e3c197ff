//! `gpt logs train`: a small GPT over log keys, trained on normal sessions through the one
//! training loop (a [`Task`]), and the detector's threshold chosen on normal validation
//! sessions.
//!
//! Each session becomes `<s> k1 … kn </s>` (a stream of lines: `<s> k1 … kn`, no end), cut into
//! windows of the context ([`windows`]); every key and the end are trained targets, once each.
//! Unlike DeepLog's LSTM, which sees one window of h keys per predicted key, the causal model
//! predicts every position of a window in one pass, each from all the keys before it in the
//! window.

use super::detect::{session_score, threshold_for_fpr, DetectorSettings, Rule};
use super::score::{score_sequences, window_row};
use super::sessions::{read_sessions, windows};
use super::vocab::{KeyVocab, BOS};
use crate::chat::encode::Encoded;
use crate::chat::sft::{mean_sft_loss, sft_forward_backward, SftBatch};
use crate::error::{Error, Result};
use crate::model::{Gpt, GptConfig};
use crate::nn::params::Params;
use crate::rng::Rng;
use crate::train::checkpoint::state_field;
use crate::train::epoch_order::EpochOrder;
use crate::train::task::{MicroStep, Task};
use crate::train::trainer::{run, LoopConfig, TrainOptions, TrainOutcome};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The settings of `gpt logs train`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogTrainConfig {
    /// Normal sessions (DeepLog's format: one session per line, keys separated by spaces).
    pub sessions: PathBuf,
    /// Normal validation sessions; `None`: the last `valid_fraction` of `sessions`.
    pub valid: Option<PathBuf>,
    /// Share of the sessions held out for validation when `valid` is not given.
    pub valid_fraction: f64,
    /// Output directory (the model is `OUT/checkpoint`).
    pub out: PathBuf,
    /// Whether a line is a whole session ending with `</s>` (false: the file is one stream of
    /// keys, e.g. the template ids of a log's lines in order, and items are positions).
    pub end_token: bool,
    /// Context of the model in tokens (keys of history it can see).
    pub window: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Width.
    pub n_embd: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Dropout.
    pub dropout: f32,
    /// Passes over the training windows.
    pub epochs: usize,
    /// Optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Windows per step.
    pub batch_size: usize,
    /// Peak learning rate (warm-up, then linear decay to 0).
    pub lr: f32,
    /// Share of the steps spent warming up.
    pub warmup_ratio: f32,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Gradient-norm clip.
    pub grad_clip: f32,
    /// DeepLog's g for the top-g detector.
    pub top_g: usize,
    /// False-positive rate the surprisal threshold is chosen for on validation data.
    pub target_fpr: f64,
    /// Seed of the initialisation and the data order.
    pub seed: u64,
}

impl Default for LogTrainConfig {
    fn default() -> Self {
        LogTrainConfig {
            sessions: PathBuf::new(),
            valid: None,
            valid_fraction: 0.1,
            out: PathBuf::from("out-logs"),
            end_token: true,
            window: 10,
            n_layer: 1,
            n_embd: 32,
            n_head: 4,
            dropout: 0.0,
            epochs: 5,
            max_steps: None,
            batch_size: 64,
            lr: 3e-3,
            warmup_ratio: 0.03,
            weight_decay: 0.0,
            grad_clip: 1.0,
            top_g: 9,
            target_fpr: 0.01,
            seed: 1337,
        }
    }
}

impl LogTrainConfig {
    /// Checks the values, naming the flag.
    pub fn validate(&self) -> Result<()> {
        for (flag, v) in [
            ("--window", self.window),
            ("--layers", self.n_layer),
            ("--width", self.n_embd),
            ("--heads", self.n_head),
            ("--batch-size", self.batch_size),
            ("--top-g", self.top_g),
        ] {
            if v == 0 {
                return Err(Error::field(flag, "must be at least 1"));
            }
        }
        if self.window < 2 {
            return Err(Error::field(
                "--window",
                "must be at least 2 tokens (the start token and one key)",
            ));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::field(
                "--heads",
                format!(
                    "{} heads do not divide the width {}",
                    self.n_head, self.n_embd
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return Err(Error::field(
                "--valid-fraction",
                format!("{} is not in [0, 1)", self.valid_fraction),
            ));
        }
        if !(0.0..1.0).contains(&self.target_fpr) {
            return Err(Error::field(
                "--target-fpr",
                format!("{} is not in [0, 1)", self.target_fpr),
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::field("--lr", format!("{} is not positive", self.lr)));
        }
        Ok(())
    }

    /// The model's architecture for a vocabulary of `vocab_size` tokens.
    pub fn gpt_config(&self, vocab_size: usize) -> GptConfig {
        GptConfig {
            vocab_size,
            n_ctx: self.window,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            dropout: self.dropout,
            ..GptConfig::gpt2()
        }
    }

    fn loop_config(&self, max_steps: usize, per_epoch: usize) -> LoopConfig {
        let every = per_epoch.min(max_steps).max(1);
        LoopConfig::fine_tuning(
            self.out.clone(),
            max_steps,
            every,
            self.lr,
            (max_steps as f32 * self.warmup_ratio).ceil() as usize,
            self.grad_clip,
            self.weight_decay,
        )
    }
}

/// Fields a resume may change.
const RESUME_CHANGEABLE: &[&str] = &["max_steps", "epochs"];
const RESUME_RULE: &str = "A `gpt logs train` resume may change only max_steps and epochs; to \
    change anything else, start a new run (another --out, or --overwrite)";

/// Training and validation sequences (token ids), read and split as `cfg` says.
pub struct LogData {
    /// The vocabulary (the training keys).
    pub vocab: KeyVocab,
    /// Training sequences.
    pub train: Vec<Vec<u32>>,
    /// Validation sequences.
    pub valid: Vec<Vec<u32>>,
    /// Empty lines skipped.
    pub empty: usize,
}

/// Reads `cfg.sessions` (and `cfg.valid`) into sequences; without a validation file the last
/// `valid_fraction` of the sessions (of a stream: of its keys) is held out.
pub fn read_log_data(cfg: &LogTrainConfig) -> Result<LogData> {
    let (mut train, mut empty) = read_sessions(&cfg.sessions)?;
    if train.is_empty() {
        return Err(Error::file(
            &cfg.sessions,
            "no session (every line is empty)",
        ));
    }
    let mut valid = match &cfg.valid {
        Some(p) => {
            let (v, e) = read_sessions(p)?;
            empty += e;
            v.into_iter().map(|s| s.keys).collect()
        }
        None => Vec::new(),
    };
    let mut train: Vec<Vec<String>> = train.drain(..).map(|s| s.keys).collect();
    if cfg.valid.is_none() && cfg.valid_fraction > 0.0 {
        if !cfg.end_token && train.len() == 1 {
            let keys = &mut train[0];
            let n_valid = ((keys.len() as f64 * cfg.valid_fraction).round() as usize)
                .clamp(1, keys.len().saturating_sub(1).max(1));
            let tail = keys.split_off(keys.len() - n_valid);
            valid.push(tail);
        } else {
            let n_valid = (train.len() as f64 * cfg.valid_fraction).round() as usize;
            if n_valid >= 1 && n_valid < train.len() {
                valid = train.split_off(train.len() - n_valid);
            }
        }
    }
    let vocab = KeyVocab::build(train.iter().flatten().map(String::as_str));
    let enc = |s: &Vec<String>| vocab.encode(s, cfg.end_token);
    Ok(LogData {
        train: train.iter().map(enc).collect(),
        valid: valid.iter().map(enc).collect(),
        vocab,
        empty,
    })
}

/// The training rows of `seqs`: each window of each sequence, its scored positions trained.
fn training_rows(seqs: &[Vec<u32>], n_ctx: usize) -> Vec<Encoded> {
    seqs.iter()
        .flat_map(|seq| {
            windows(seq.len(), n_ctx)
                .into_iter()
                .map(|w| window_row(seq, w))
        })
        .collect()
}

/// The log-key model in training.
struct LogTask {
    cfg: LogTrainConfig,
    gpt: Gpt,
    vocab: KeyVocab,
    rows: Vec<Encoded>,
    valid_rows: Vec<Encoded>,
    valid: Vec<Vec<u32>>,
    order: EpochOrder,
    rng: Rng,
    /// The surprisal threshold chosen at the last evaluation.
    threshold: Option<f64>,
}

impl LogTask {
    /// The surprisal threshold for `target_fpr` on the validation data: over sessions (their
    /// largest NLL) or, for a stream, over positions.
    fn choose_threshold(&mut self) -> Result<Option<f64>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let scores = score_sequences(&mut self.gpt, &self.valid, self.cfg.batch_size, 0)?;
        let normal: Vec<f64> = if self.cfg.end_token {
            scores
                .iter()
                .map(|s| session_score(Rule::Surprisal, s))
                .collect()
        } else {
            scores.iter().flatten().map(|p| p.nll as f64).collect()
        };
        Ok(threshold_for_fpr(&normal, self.cfg.target_fpr))
    }

    fn settings(&self) -> DetectorSettings {
        DetectorSettings {
            top_g: self.cfg.top_g,
            threshold: self.threshold,
            target_fpr: self.cfg.target_fpr,
            valid_sessions: self.valid.len(),
            end_token: self.cfg.end_token,
        }
    }
}

impl Task for LogTask {
    fn params(&mut self) -> &mut Params {
        &mut self.gpt.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let picked: Vec<&Encoded> = self
            .order
            .next(self.cfg.batch_size)
            .into_iter()
            .map(|i| &self.rows[i])
            .collect();
        let batch = SftBatch::padded(&picked, BOS);
        let (rank, ranks) = self.order.shard();
        let mut own = crate::dist::rank_stream(&mut self.rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.rng);
        let loss = sft_forward_backward(&mut self.gpt, &batch, scale, rng)?;
        Ok(MicroStep {
            loss,
            tokens: batch.n_targets(),
        })
    }

    fn report_final_grads(&mut self, ready: Option<crate::train::FinalGrads>) -> bool {
        self.gpt.report_final_grads(ready)
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.order.set_shard(rank, ranks);
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        crate::dist::config_fingerprint(&self.cfg, &["sessions", "valid", "out"])
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        if self.valid_rows.is_empty() {
            return Ok(None);
        }
        let loss = mean_sft_loss(
            &mut self.gpt,
            &self.valid_rows,
            self.cfg.batch_size,
            |rows| SftBatch::padded(rows, BOS),
        )?;
        self.threshold = self.choose_threshold()?;
        Ok(Some(loss))
    }

    fn eval_metrics(&mut self) -> Vec<(String, f32)> {
        self.threshold
            .map(|t| vec![("eval/threshold".to_string(), t as f32)])
            .unwrap_or_default()
    }

    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        crate::model::checkpoint::save(&self.gpt, dir, Some(meta))?;
        self.vocab.save(dir)?;
        self.settings().save(dir)
    }

    fn state(&self) -> Result<Map<String, Value>> {
        let json = |v: serde_json::Result<Value>| {
            v.map_err(|e| Error::usage("LogTask::state", e.to_string()))
        };
        let mut m = Map::new();
        m.insert(
            "cursor".into(),
            json(serde_json::to_value(self.order.cursor))?,
        );
        m.insert("config".into(), json(serde_json::to_value(&self.cfg))?);
        m.insert("rng".into(), json(serde_json::to_value(&self.rng))?);
        m.insert(
            "threshold".into(),
            json(serde_json::to_value(self.threshold))?,
        );
        Ok(m)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        crate::model::checkpoint::load_weights(
            &mut self.gpt,
            &dir.join(crate::model::checkpoint::WEIGHTS_FILE),
        )?;
        let saved = KeyVocab::load(dir)?;
        if saved != self.vocab {
            return Err(Error::file(
                &dir.join(super::vocab::KEYS_FILE),
                "the training keys differ from the ones the run started with (was the sessions file changed?)",
            ));
        }
        self.order.seek(state_field(dir, state, "cursor")?);
        self.rng = state_field(dir, state, "rng")?;
        self.threshold = state_field(dir, state, "threshold")?;
        Ok(())
    }
}

/// What `gpt logs train` did.
pub struct LogTrainOutcome {
    /// The loop's outcome.
    pub train: TrainOutcome,
    /// Training sequences and windows.
    pub sessions: usize,
    /// Training windows (rows).
    pub windows: usize,
    /// Validation sequences.
    pub valid: usize,
    /// Keys in the vocabulary.
    pub keys: usize,
    /// The detector settings saved with the model.
    pub detector: DetectorSettings,
}

/// Trains a log-key model as `cfg` says (`opts.resume` continues an interrupted run).
pub fn train_logs(cfg: &LogTrainConfig, opts: &TrainOptions) -> Result<LogTrainOutcome> {
    use crate::train::run_dir;
    let (cfg, resume) = run_dir::start_single(
        cfg,
        &cfg.out,
        &run_dir::ResumeRules {
            changeable: RESUME_CHANGEABLE,
            rule: RESUME_RULE,
            set_out: |c: &mut LogTrainConfig, out| c.out = out,
            max_steps: |c: &LogTrainConfig| c.max_steps.unwrap_or(usize::MAX),
        },
        opts,
        LogTrainConfig::validate,
    )?;
    let data = read_log_data(&cfg)?;
    let rows = training_rows(&data.train, cfg.window);
    let per_epoch = rows.len().div_ceil(cfg.batch_size).max(1);
    let max_steps = cfg.max_steps.unwrap_or(cfg.epochs * per_epoch);
    if let Some(r) = &resume {
        run_dir::check_steps_left(&cfg.out, r.state.step, max_steps)?;
    }
    let mut rng = Rng::new(cfg.seed);
    let gpt = Gpt::new(cfg.gpt_config(data.vocab.size()), &mut rng)?;
    if opts.talk() {
        eprintln!(
            "gpt logs train: {} sessions ({} windows of ≤ {} tokens), {} validation, {} keys; model {} layers, width {}, {} heads, {} parameters; {max_steps} steps of {}, lr {}",
            data.train.len(),
            rows.len(),
            cfg.window,
            data.valid.len(),
            data.vocab.n_keys(),
            cfg.n_layer,
            cfg.n_embd,
            cfg.n_head,
            gpt.params.data.len(),
            cfg.batch_size,
            cfg.lr
        );
    }
    let valid_rows = training_rows(&data.valid, cfg.window);
    let mut task = LogTask {
        order: EpochOrder::new(rows.len(), cfg.seed),
        rng: Rng::new(cfg.seed.wrapping_add(1)),
        gpt,
        vocab: data.vocab,
        rows,
        valid_rows,
        valid: data.valid,
        threshold: None,
        cfg: cfg.clone(),
    };
    let outcome = run(
        &mut task,
        &cfg.loop_config(max_steps, per_epoch),
        opts,
        resume.as_ref(),
    )?;
    Ok(LogTrainOutcome {
        train: outcome,
        sessions: data.train.len(),
        windows: task.rows.len(),
        valid: task.valid.len(),
        keys: task.vocab.n_keys(),
        detector: task.settings(),
    })
}
