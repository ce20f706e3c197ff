//! Training the encoder-decoder on parallel text, as a [`Task`] of the one training loop
//! ([`crate::train::trainer::run`]): label-smoothed cross-entropy (0.1) over real target tokens,
//! Adam (0.9, 0.98, eps 1e-9) with the paper's schedule
//! `lr = scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`, token-budget batches
//! visited in a shuffled order per epoch; the loop adds accumulation, validation, checkpoints
//! with exact resume, metrics, the plot, the progress bar and Ctrl-C.
//!
//! Layout of `OUT`: `tokenizer/` (the joint BPE, learned once), `checkpoints/step_NNNNNNN/`
//! (model directories, see [`super::checkpoint`], each with `optimizer.safetensors` and
//! `trainer_state.json` for resume; the newest `keep_checkpoints` are kept for averaging),
//! `latest` (the newest checkpoint's name), `metrics.jsonl`, `loss.png`, `train_config.json` (the
//! resolved run configuration).

use super::checkpoint::save_model;
use super::data::{
    encode_pairs, make_batch, read_tsv, special_ids, token_batches, train_joint_bpe, BatchCursor,
    BatchSampler, EncodedPairs,
};
use crate::error::{Error, Result};
use crate::io::{load_tokenizer, save_tokenizer, write_atomic};
use crate::model::checkpoint::{load_params, WEIGHTS_FILE};
use crate::model::transformer::{EncoderDecoder, Seq2SeqBatch, TransformerConfig};
use crate::nn::block::NormPlacement;
use crate::nn::params::Params;
use crate::optim::{AdamWConfig, Schedule};
use crate::rng::Rng;
use crate::tokenizer::{AnyTokenizer, Tokenizer};
use crate::train::checkpoint::{state_field, CheckpointLayout};
use crate::train::config::{OnNan, DEFAULT_MAX_NAN_SKIPS};
use crate::train::run_dir;
use crate::train::task::{MicroStep, Task};
use crate::train::trainer::{run, LoopConfig, Resume};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Every knob of a translation training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslateConfig {
    /// Model preset (`transformer-small`, `transformer-base`, `transformer-big`).
    pub preset: String,
    /// Training pairs (TSV).
    pub train: PathBuf,
    /// Validation pairs (TSV).
    pub valid: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Joint BPE vocabulary size (including the 3 specials).
    pub vocab_size: usize,
    /// Longest sentence in tokens (longer ones are truncated and counted).
    pub max_len: usize,
    /// Bad TSV lines are errors instead of being skipped.
    pub strict: bool,
    /// Token budget per micro-batch (padded `B · max(S, T)`).
    pub max_tokens: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer steps.
    pub max_steps: usize,
    /// Stop (with a checkpoint) after this many minutes of training.
    pub max_minutes: Option<f64>,
    /// Warmup steps of the inverse-square-root schedule.
    pub warmup_steps: usize,
    /// Multiplier of the schedule (1 = the paper).
    pub lr_scale: f32,
    /// Label smoothing ε.
    pub label_smoothing: f32,
    /// Adam β1.
    pub beta1: f32,
    /// Adam β2.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// Global gradient-norm clip (0: off, as the paper).
    pub grad_clip: f32,
    /// Dropout override.
    pub dropout: Option<f32>,
    /// LayerNorm placement override (`pre` or `post`).
    pub norm: Option<NormPlacement>,
    /// Seed of initialisation, batch order and dropout.
    pub seed: u64,
    /// Validation loss every this many steps (and at the end).
    pub eval_interval: usize,
    /// Checkpoint every this many steps (and at the end).
    pub ckpt_interval: usize,
    /// Checkpoints kept (for averaging).
    pub keep_checkpoints: usize,
    /// What to do with a step whose loss or gradient norm is not finite: `skip` or `stop`
    /// (configurations saved before this field read as `skip`).
    pub on_nan: OnNan,
    /// With `on_nan = "skip"`: steps in a row that may be skipped before the run stops.
    pub max_nan_skips: usize,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        TranslateConfig {
            preset: "transformer-small".into(),
            train: PathBuf::from("data/bible_es_en/train.tsv"),
            valid: PathBuf::from("data/bible_es_en/valid.tsv"),
            out: PathBuf::from("runs/translate"),
            vocab_size: 8000,
            max_len: 200,
            strict: false,
            max_tokens: 4096,
            grad_accum: 1,
            max_steps: 20_000,
            max_minutes: None,
            warmup_steps: 4000,
            lr_scale: 1.0,
            label_smoothing: 0.1,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-9,
            grad_clip: 0.0,
            dropout: None,
            norm: None,
            seed: 1234,
            eval_interval: 500,
            ckpt_interval: 500,
            keep_checkpoints: 5,
            on_nan: OnNan::Skip,
            max_nan_skips: DEFAULT_MAX_NAN_SKIPS,
        }
    }
}

impl TranslateConfig {
    /// Reads a TOML file over the defaults; unknown keys are errors naming the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        crate::train::config::read_toml(path)
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: &str| {
            Err(Error::Config {
                field: field.into(),
                reason: reason.into(),
            })
        };
        if self.max_steps == 0 || self.grad_accum == 0 || self.warmup_steps == 0 {
            return bad("max_steps/grad_accum/warmup_steps", "must be at least 1");
        }
        if self.max_len > usize::MAX / 4 {
            return Err(Error::limit(
                "--max-len",
                self.max_len as u64,
                (usize::MAX / 4) as u64,
                "use the longest sentence length you need",
            ));
        }
        crate::model::memory::product(&[
            ("--max-tokens", self.max_tokens),
            ("--grad-accum", self.grad_accum),
        ])?;
        if self.max_tokens < self.max_len + 2 {
            return bad(
                "max_tokens",
                "must hold at least one sentence of max_len + 2",
            );
        }
        if self.max_len == 0 {
            return bad("max_len", "must be at least 1");
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", "must be in [0, 1)");
        }
        if self.eval_interval == 0 || self.ckpt_interval == 0 || self.keep_checkpoints == 0 {
            return bad(
                "eval_interval/ckpt_interval/keep_checkpoints",
                "must be at least 1",
            );
        }
        // The optimizer, schedule, clipping and NaN settings: the loop's one check, before any
        // data is read (the width only scales the schedule and is checked with the model).
        loop_config(self, 1).validate()
    }

    /// The likely causes of a diverged run that this configuration shows (the loop adds
    /// clipping and eps): a schedule scaled above the paper's, a short warmup.
    pub fn divergence_hints(&self) -> Vec<String> {
        let mut hints = Vec::new();
        if self.lr_scale > 2.0 {
            hints.push(format!(
                "lr_scale {} is {:.0}x the paper's 1 (try --lr-scale 1)",
                self.lr_scale, self.lr_scale
            ));
        }
        if self.warmup_steps < 100 {
            hints.push(format!(
                "a short warmup ({} steps; the paper: 4000)",
                self.warmup_steps
            ));
        }
        hints
    }
}

/// How a run reports and whether it resumes: the loop's options (`resume` continues from
/// `OUT/latest`).
pub use crate::train::TrainOptions as TranslateOptions;

/// What a run did: the loop's outcome (`sample` is always `None`).
pub use crate::train::TrainOutcome as TranslateOutcome;

/// Token-weighted mean loss over the validation batches (label smoothing as in training).
fn validation_loss(
    model: &mut EncoderDecoder,
    batches: &[Seq2SeqBatch],
    label_smoothing: f32,
) -> Result<Option<f32>> {
    let (mut total, mut count) = (0.0f64, 0usize);
    for b in batches {
        let (l, n) = model.loss(b, label_smoothing)?;
        total += l as f64 * n as f64;
        count += n;
    }
    Ok((count > 0).then(|| (total / count as f64) as f32))
}

/// The tokenizer of a run: learned on the training pairs on the first start, read back after.
fn run_tokenizer(cfg: &TranslateConfig, pairs: &[(String, String)]) -> Result<Tokenizer> {
    let dir = cfg.out.join("tokenizer");
    if dir.join("tokenizer.json").exists() {
        return match load_tokenizer(&dir)? {
            AnyTokenizer::Bpe(t) => Ok(*t),
            AnyTokenizer::Char(_) => Err(Error::file(
                &dir,
                "expected the run's joint BPE tokenizer, found a char tokenizer",
            )),
        };
    }
    let tok = train_joint_bpe(pairs, cfg.vocab_size)?;
    save_tokenizer(&AnyTokenizer::Bpe(Box::new(tok.clone())), &dir)?;
    Ok(tok)
}

/// The model configuration of a run.
pub fn model_config(cfg: &TranslateConfig, tok: &Tokenizer) -> Result<TransformerConfig> {
    let mut m = TransformerConfig::preset(&cfg.preset, tok.vocab_size(), special_ids(tok)?)?;
    // Room for the longest source + EOS and for decoding source length + 50.
    m.max_len = m.max_len.max(cfg.max_len + 52);
    if let Some(d) = cfg.dropout {
        m.dropout = d;
    }
    if let Some(n) = cfg.norm {
        m.norm = n;
    }
    m.validate()?;
    Ok(m)
}

/// Translation training: the model, the encoded pairs, the batch order and the dropout RNG.
pub struct Translation {
    cfg: TranslateConfig,
    model: EncoderDecoder,
    tok: Tokenizer,
    train: EncodedPairs,
    /// Every epoch's batches (pair indices), to rebuild the sampler at a saved cursor.
    batches: Vec<Vec<usize>>,
    sampler: BatchSampler,
    valid: Vec<Seq2SeqBatch>,
    dropout_rng: Rng,
    /// `(rank, ranks)` of data parallelism; `(0, 1)` alone.
    shard: (usize, usize),
}

impl Task for Translation {
    fn params(&mut self) -> &mut Params {
        &mut self.model.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        // With several ranks every rank walks the same batch order and takes its own of each
        // `ranks` batches in turn; the dropout generator is shared (restored from rank 0's
        // checkpoint) and seeds a stream of the rank's own per micro-batch.
        let (rank, ranks) = self.shard;
        let mut idx = Vec::new();
        for r in 0..ranks {
            let next = self.sampler.next_batch();
            if r == rank {
                idx = next.to_vec();
            }
        }
        let batch = make_batch(&self.train.pairs, &idx, &self.model.config);
        let tokens =
            batch.src_mask.iter().map(|&m| m as usize).sum::<usize>() + batch.target_tokens();
        let mut own = crate::dist::rank_stream(&mut self.dropout_rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.dropout_rng);
        let loss = self
            .model
            .forward_backward(&batch, self.cfg.label_smoothing, scale, rng)?;
        Ok(MicroStep { loss, tokens })
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.shard = (rank, ranks);
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        let mut h = crate::dist::config_fingerprint(&self.cfg, &["out", "train", "valid"]);
        h = crate::dist::fnv1a(h, format!("{:?}", self.model.config).as_bytes());
        for (s, t) in &self.train.pairs {
            for id in s.iter().chain(t) {
                h = crate::dist::fnv1a(h, &id.to_le_bytes());
            }
        }
        h
    }

    fn divergence_hints(&self) -> Vec<String> {
        self.cfg.divergence_hints()
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        validation_loss(&mut self.model, &self.valid, self.cfg.label_smoothing)
    }

    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        save_model(&self.model, &self.tok, dir, Some(meta))
    }

    fn state(&self) -> Result<Map<String, Value>> {
        let json = |v: serde_json::Result<Value>| {
            v.map_err(|e| Error::usage("Translation::state", e.to_string()))
        };
        let mut m = Map::new();
        m.insert(
            "cursor".into(),
            json(serde_json::to_value(&self.sampler.cursor))?,
        );
        m.insert(
            "dropout_rng".into(),
            json(serde_json::to_value(&self.dropout_rng))?,
        );
        m.insert("config".into(), json(serde_json::to_value(&self.cfg))?);
        m.insert(
            "model".into(),
            json(serde_json::to_value(&self.model.config))?,
        );
        Ok(m)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        let saved: TransformerConfig = state_field(dir, state, "model")?;
        if saved != self.model.config {
            return Err(Error::file(
                dir,
                "the checkpoint's model differs from this run's; resume with the same settings",
            ));
        }
        load_params(&mut self.model.params, &dir.join(WEIGHTS_FILE), |n| {
            vec![n.to_string()]
        })?;
        self.dropout_rng = state_field(dir, state, "dropout_rng")?;
        let cursor: BatchCursor = state_field(dir, state, "cursor")?;
        self.sampler =
            BatchSampler::new(self.batches.clone(), self.cfg.seed.wrapping_add(1), cursor)?;
        Ok(())
    }
}

/// Fields of [`TranslateConfig`] that a resume may change: the budgets, the learning-rate
/// schedule (recomputed from the new values at the saved step) and the intervals.
pub const RESUME_CHANGEABLE: &[&str] = &[
    "max_steps",
    "max_minutes",
    "warmup_steps",
    "lr_scale",
    "eval_interval",
    "ckpt_interval",
    "keep_checkpoints",
    "on_nan",
    "max_nan_skips",
];

/// The resume rule, as printed with the fields a resume ignored.
pub const RESUME_RULE: &str = "A resume may change only max_steps, max_minutes, warmup_steps, \
    lr_scale, eval_interval, ckpt_interval, keep_checkpoints, on_nan and max_nan_skips; to change anything else, start a \
    new run (another --out, or --overwrite)";

impl TranslateConfig {
    /// The configuration saved in the latest checkpoint of the run in `out` (what `--resume`
    /// starts from before applying flags).
    pub fn saved_in(out: &Path) -> Result<Self> {
        let layout = CheckpointLayout::Numbered { keep: 1 };
        Resume::find(out, layout)?.state.field("config")
    }
}

/// Runs (or resumes) a training run.
///
/// A fresh run refuses an `out` that already holds a run unless `opts.overwrite`
/// ([`run_dir::claim`]). On resume the saved configuration governs: `cfg` should be it with the
/// intended changes ([`TranslateConfig::saved_in`]); the fields in [`RESUME_CHANGEABLE`] are
/// taken from `cfg`, any other field that differs is ignored with a warning, and a `max_steps`
/// at or below the saved step is an error.
/// The loop settings of a run of a model `d_model` wide (the schedule's scale).
pub fn loop_config(cfg: &TranslateConfig, d_model: usize) -> LoopConfig {
    LoopConfig {
        out: cfg.out.clone(),
        max_steps: cfg.max_steps,
        grad_accum: cfg.grad_accum,
        grad_clip: cfg.grad_clip,
        schedule: Schedule::InverseSqrt {
            scale: cfg.lr_scale,
            d_model,
            warmup: cfg.warmup_steps,
        },
        adamw: AdamWConfig {
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            weight_decay: 0.0,
        },
        eval_interval: cfg.eval_interval,
        ckpt_interval: cfg.ckpt_interval,
        max_minutes: cfg.max_minutes,
        checkpoints: CheckpointLayout::Numbered {
            keep: cfg.keep_checkpoints,
        },
        lr_field: "lr_scale",
        on_nan: cfg.on_nan,
        max_nan_skips: cfg.max_nan_skips,
    }
}

/// Runs (or resumes) a training run; on resume the saved configuration governs and only the
/// budgets (`max_steps`, `max_minutes`) may change.
pub fn train(cfg: &TranslateConfig, opts: &TranslateOptions) -> Result<TranslateOutcome> {
    let layout = CheckpointLayout::Numbered {
        keep: cfg.keep_checkpoints,
    };
    let resume = run_dir::find_resume(&cfg.out, layout, opts.resume, opts.overwrite)?;
    let cfg = run_dir::resumed(
        resume.as_ref(),
        cfg,
        &cfg.out,
        &run_dir::ResumeRules {
            changeable: RESUME_CHANGEABLE,
            rule: RESUME_RULE,
            set_out: |c, out| c.out = out,
            max_steps: |c| c.max_steps,
        },
        opts.quiet,
    )?;
    cfg.validate()?;
    let say = |msg: String| {
        if opts.talk() {
            eprintln!("{msg}");
        }
    };
    let train_text = read_tsv(&cfg.train, cfg.strict)?;
    let valid_text = read_tsv(&cfg.valid, cfg.strict)?;
    // After the inputs are known to read, before anything is written (the tokenizer of a
    // replaced run must not be picked up as this run's).
    let world = &opts.world;
    // Several ranks may share the output directory: rank 0 claims it and trains the tokenizer
    // there while the others wait, then load it.
    if resume.is_none() && world.is_root() && run_dir::claim(&cfg.out, opts.overwrite)? {
        say(format!(
            "--overwrite: the previous run in {} is kept in {} until this run's first checkpoint",
            cfg.out.display(),
            cfg.out.join(run_dir::PREVIOUS_RUN_DIR).display()
        ));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let tok = world.root_first(|| run_tokenizer(&cfg, &train_text.pairs))?;
    let train_ids = encode_pairs(&tok, &train_text.pairs, cfg.max_len);
    let valid_ids = encode_pairs(&tok, &valid_text.pairs, cfg.max_len);
    if valid_ids.pairs.is_empty() && !opts.quiet {
        eprintln!(
            "warning: the validation set {} has no usable pairs ({} lines skipped): no validation loss will be reported",
            cfg.valid.display(),
            valid_text.skipped
        );
    }
    say(format!(
        "data: {} train pairs ({}, {} sentences truncated to {} tokens), {} valid pairs ({}); joint BPE of {} ids",
        train_ids.pairs.len(),
        train_text.skipped_note(&cfg.train),
        train_ids.truncated,
        cfg.max_len,
        valid_ids.pairs.len(),
        valid_text.skipped_note(&cfg.valid),
        tok.vocab_size()
    ));
    if opts.json && !opts.quiet {
        // The data line above is not printed in JSON mode; skipped lines still deserve a word.
        for (text, path) in [(&train_text, &cfg.train), (&valid_text, &cfg.valid)] {
            if text.skipped > 0 {
                eprintln!("warning: {}", text.skipped_note(path));
            }
        }
    }
    let mcfg = model_config(&cfg, &tok)?;
    let batches = token_batches(&train_ids.pairs, cfg.max_tokens);
    // The largest padded micro-batch (at most --max-tokens; less when the data is small).
    let largest = batches
        .iter()
        .map(|idx| {
            let longest = idx.iter().map(|&i| {
                let (s, t) = &train_ids.pairs[i];
                s.len().max(t.len()) + 1
            });
            idx.len() * longest.max().unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let memory =
        crate::model::memory::transformer_training(&mcfg, largest, ["--max-tokens", "n_layer"])?;
    say(format!("memory: {}", memory.summary()));
    if opts.check_memory {
        memory.check(crate::model::memory::available(), "--no-memory-check")?;
    }
    let mut init_rng = Rng::new(cfg.seed);
    let model = EncoderDecoder::new(mcfg.clone(), &mut init_rng)?;
    let dropout_rng = init_rng.fork();
    let sampler = BatchSampler::new(
        batches.clone(),
        cfg.seed.wrapping_add(1),
        BatchCursor::default(),
    )?;
    let valid: Vec<Seq2SeqBatch> = token_batches(&valid_ids.pairs, cfg.max_tokens)
        .iter()
        .map(|idx| make_batch(&valid_ids.pairs, idx, &mcfg))
        .collect();
    let resolved = serde_json::to_vec_pretty(&cfg)
        .map_err(|e| Error::usage("translate::train", e.to_string()))?;
    if world.is_root() {
        write_atomic(&cfg.out.join("train_config.json"), &resolved)?;
    }
    say(format!(
        "gpt translate train: preset {} ({} + {} layers, {} heads, d_model {}, d_ff {}, {:?}-LN), {:.2}M parameters, {} batches/epoch of <= {} tokens x {} accumulation, {} threads{}",
        cfg.preset,
        mcfg.n_layer,
        mcfg.n_layer,
        mcfg.n_head,
        mcfg.d_model,
        mcfg.d_ff,
        mcfg.norm,
        model.layout().total() as f64 / 1e6,
        sampler.len(),
        cfg.max_tokens,
        cfg.grad_accum,
        crate::threads::current(),
        resume.as_ref().map(|r| format!("; resuming at step {}", r.state.step)).unwrap_or_default()
    ));
    let loop_cfg = loop_config(&cfg, mcfg.d_model);
    let mut task = Translation {
        cfg,
        model,
        tok,
        train: train_ids,
        batches,
        sampler,
        valid,
        dropout_rng,
        shard: (0, 1),
    };
    run(&mut task, &loop_cfg, opts, resume.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_max_len_is_an_error_not_an_overflow() {
        // Found by tests/fuzz_parsers.rs: `max_len + 2` overflowed in validate.
        let c: TranslateConfig = toml::from_str("max_len = 18446744073709551615\n").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--max-len"), "{err}");
    }
}
