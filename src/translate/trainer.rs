//! Training the encoder-decoder on parallel text: label-smoothed cross-entropy (0.1) over real
//! target tokens, Adam (0.9, 0.98, eps 1e-9) with the paper's schedule
//! `lr = scale · d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`, gradient accumulation,
//! token-budget batches, periodic validation loss, checkpoints with exact resume, metrics JSONL,
//! a loss plot, a progress bar and Ctrl-C, as the GPT trainer ([`crate::train::trainer`]) does.
//!
//! Layout of `OUT`: `tokenizer/` (the joint BPE, learned once), `checkpoints/step_NNNNNNN/`
//! (model directories, see [`super::checkpoint`], each with `optimizer.safetensors` and
//! `trainer_state.json` for resume; the newest `keep_checkpoints` are kept for averaging),
//! `latest` (the newest checkpoint's name), `metrics.jsonl`, `loss.png`, `train_config.json` (the
//! resolved run configuration).

use super::checkpoint::{list_checkpoints, save_model, CHECKPOINTS_DIR, LATEST_FILE};
use super::data::{
    encode_pairs, make_batch, read_tsv, special_ids, token_batches, train_joint_bpe, BatchCursor,
    BatchSampler,
};
use crate::data::prepare::{load_tokenizer, save_tokenizer};
use crate::error::{Error, Result};
use crate::kernels::adamw::{clip_grad_norm, global_grad_norm};
use crate::model::checkpoint::{load_params, params_bytes, write_atomic};
use crate::model::transformer::{EncoderDecoder, Seq2SeqBatch, TransformerConfig};
use crate::nn::block::NormPlacement;
use crate::nn::params::Params;
use crate::optim::schedule::inverse_sqrt;
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;
use crate::tokenizer::{AnyTokenizer, Tokenizer};
use crate::train::plot::plot_losses;
use crate::train::trainer::{read_metrics, Metric};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

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
        if !(self.lr_scale > 0.0 && self.lr_scale.is_finite()) {
            return bad("lr_scale", "must be a positive number");
        }
        if self.eval_interval == 0 || self.ckpt_interval == 0 || self.keep_checkpoints == 0 {
            return bad(
                "eval_interval/ckpt_interval/keep_checkpoints",
                "must be at least 1",
            );
        }
        Ok(())
    }
}

/// How a run reports and whether it resumes: the GPT trainer's options (`resume` continues
/// from `OUT/latest`).
pub use crate::train::TrainOptions as TranslateOptions;

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct TranslateOutcome {
    /// Steps completed in total.
    pub step: usize,
    /// Training loss of every step of this invocation.
    pub losses: Vec<f32>,
    /// Last validation loss.
    pub val_loss: Option<f32>,
    /// Median training throughput (source + target tokens per second).
    pub tokens_per_sec: f64,
    /// Whether the run stopped before `max_steps`.
    pub stopped_early: bool,
    /// Newest checkpoint directory.
    pub checkpoint: Option<PathBuf>,
}

/// Saved in each checkpoint for exact resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainerState {
    version: u32,
    step: usize,
    cursor: BatchCursor,
    dropout_rng: Rng,
    train_seconds: f64,
    config: TranslateConfig,
    model: TransformerConfig,
}

/// A flat buffer in the model's layout (the optimizer moments), as safetensors tensors named
/// `{prefix}.{tensor}`.
fn moments_params(model: &EncoderDecoder, data: &[f32]) -> Params {
    let mut p = Params::zeros(model.params.layout.clone());
    p.data.copy_from_slice(data);
    p
}

fn save_optimizer(model: &EncoderDecoder, opt: &AdamW, path: &Path) -> Result<()> {
    // Both moments in one file: `m.{name}` and `v.{name}` (the layout's names).
    let m = params_bytes(&moments_params(model, &opt.m), |n| format!("m.{n}"), None)?;
    let v = params_bytes(&moments_params(model, &opt.v), |n| format!("v.{n}"), None)?;
    write_atomic(&path.with_extension("m.safetensors"), &m)?;
    write_atomic(&path.with_extension("v.safetensors"), &v)
}

fn load_optimizer(model: &EncoderDecoder, opt: &mut AdamW, path: &Path, step: usize) -> Result<()> {
    for (prefix, dst) in [("m", &mut opt.m), ("v", &mut opt.v)] {
        let mut p = moments_params(model, dst);
        load_params(
            &mut p,
            &path.with_extension(format!("{prefix}.safetensors")),
            |n| vec![format!("{prefix}.{n}")],
        )?;
        dst.copy_from_slice(&p.data);
    }
    opt.step = step as u64;
    Ok(())
}

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

fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))
}

/// The tokenizer of a run: learned on the training pairs on the first start, read back after.
fn run_tokenizer(cfg: &TranslateConfig, pairs: &[(String, String)]) -> Result<Tokenizer> {
    let dir = cfg.out.join("tokenizer");
    if dir.join("tokenizer.json").exists() {
        return match load_tokenizer(&dir)? {
            AnyTokenizer::Bpe(t) => Ok(*t),
            AnyTokenizer::Char(_) => Err(Error::Msg(format!(
                "{}: expected a BPE tokenizer",
                dir.display()
            ))),
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

/// Runs (or resumes) a training run.
pub fn train(cfg: &TranslateConfig, opts: &TranslateOptions) -> Result<TranslateOutcome> {
    let resume_from = if opts.resume {
        let latest = cfg.out.join(LATEST_FILE);
        let name = std::fs::read_to_string(&latest).map_err(|_| {
            Error::Msg(format!(
                "--resume: no checkpoint in {} (expected {})",
                cfg.out.display(),
                latest.display()
            ))
        })?;
        let dir = cfg.out.join(name.trim());
        Some((read_state(&dir)?, dir))
    } else {
        None
    };
    let cfg = match &resume_from {
        Some((state, _)) => {
            // The saved configuration governs the run; the budgets may be extended.
            let mut c = state.config.clone();
            c.max_steps = cfg.max_steps.max(c.max_steps);
            c.max_minutes = cfg.max_minutes;
            c.out = cfg.out.clone();
            c
        }
        None => cfg.clone(),
    };
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let say = |msg: String| {
        if !opts.quiet && !opts.json {
            eprintln!("{msg}");
        }
    };
    let train_text = read_tsv(&cfg.train, cfg.strict)?;
    let valid_text = read_tsv(&cfg.valid, cfg.strict)?;
    let tok = run_tokenizer(&cfg, &train_text.pairs)?;
    let train_ids = encode_pairs(&tok, &train_text.pairs, cfg.max_len);
    let valid_ids = encode_pairs(&tok, &valid_text.pairs, cfg.max_len);
    say(format!(
        "data: {} train pairs ({} bad lines skipped, {} sentences truncated to {} tokens), {} valid pairs ({} skipped); joint BPE of {} ids",
        train_ids.pairs.len(),
        train_text.skipped,
        train_ids.truncated,
        cfg.max_len,
        valid_ids.pairs.len(),
        valid_text.skipped,
        tok.vocab_size()
    ));
    let mcfg = model_config(&cfg, &tok)?;
    let mut init_rng = Rng::new(cfg.seed);
    let mut model = EncoderDecoder::new(mcfg.clone(), &mut init_rng)?;
    let adam = AdamWConfig {
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(model.layout(), adam);
    let mut dropout_rng = init_rng.fork();
    let mut cursor = BatchCursor::default();
    let (mut step, mut train_seconds) = (0usize, 0.0f64);
    if let Some((state, dir)) = &resume_from {
        if state.model != mcfg {
            return Err(Error::Msg(format!(
                "{}: the checkpoint's model differs from this run's; resume with the same settings",
                dir.display()
            )));
        }
        load_params(
            &mut model.params,
            &dir.join(crate::model::checkpoint::WEIGHTS_FILE),
            |n| vec![n.to_string()],
        )?;
        load_optimizer(&model, &mut opt, &dir.join(OPTIMIZER_FILE), state.step)?;
        dropout_rng = state.dropout_rng.clone();
        cursor = state.cursor.clone();
        step = state.step;
        train_seconds = state.train_seconds;
    }
    let mut sampler = BatchSampler::new(
        token_batches(&train_ids.pairs, cfg.max_tokens),
        cfg.seed.wrapping_add(1),
        cursor,
    )?;
    let valid_batches: Vec<Seq2SeqBatch> = token_batches(&valid_ids.pairs, cfg.max_tokens)
        .iter()
        .map(|idx| make_batch(&valid_ids.pairs, idx, &mcfg))
        .collect();
    let resolved = serde_json::to_vec_pretty(&cfg).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&cfg.out.join("train_config.json"), &resolved)?;
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
        if opts.resume { format!("; resuming at step {step}") } else { String::new() }
    ));
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut metrics = if opts.resume {
        read_metrics(&metrics_path, step)
    } else {
        Vec::new()
    };
    let bar = if opts.quiet || opts.json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(cfg.max_steps as u64);
        let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(step as u64);
        bar
    };
    let mut outcome = TranslateOutcome::default();
    let mut rates = Vec::new();
    let mut val_loss = None;
    let started = Instant::now();
    let base_seconds = train_seconds;
    while step < cfg.max_steps {
        let t0 = Instant::now();
        let lr = cfg.lr_scale * inverse_sqrt(step + 1, mcfg.d_model, cfg.warmup_steps);
        model.params.zero_grad();
        let (mut loss, mut tokens) = (0.0f32, 0usize);
        let scale = 1.0 / cfg.grad_accum as f32;
        for _ in 0..cfg.grad_accum {
            let idx = sampler.next_batch().to_vec();
            let batch = make_batch(&train_ids.pairs, &idx, &mcfg);
            tokens +=
                batch.src_mask.iter().map(|&m| m as usize).sum::<usize>() + batch.target_tokens();
            loss += scale
                * model.forward_backward(&batch, cfg.label_smoothing, scale, &mut dropout_rng)?;
        }
        if !loss.is_finite() {
            bar.abandon();
            return Err(Error::Msg(format!(
                "loss is {loss} at step {}; stopped. The last good checkpoint is named in {} (try a lower --lr-scale)",
                step + 1,
                cfg.out.join(LATEST_FILE).display()
            )));
        }
        let grad_norm = if cfg.grad_clip > 0.0 {
            clip_grad_norm(&mut model.params.grad, cfg.grad_clip)
        } else {
            global_grad_norm(&model.params.grad)
        };
        opt.update(&mut model.params, lr);
        step += 1;
        let rate = tokens as f64 / t0.elapsed().as_secs_f64();
        rates.push(rate);
        outcome.losses.push(loss);
        train_seconds = base_seconds + started.elapsed().as_secs_f64();
        let out_of_time = cfg.max_minutes.is_some_and(|m| train_seconds >= m * 60.0);
        let interrupted = opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst));
        let stop = interrupted || out_of_time || opts.stop_at == Some(step);
        let last = step == cfg.max_steps || stop;
        let eval_now = step % cfg.eval_interval == 0 || last;
        if eval_now {
            val_loss = validation_loss(&mut model, &valid_batches, cfg.label_smoothing)?;
        }
        let m = Metric {
            step,
            loss,
            lr,
            grad_norm,
            tokens_per_sec: rate,
            val_loss: if eval_now { val_loss } else { None },
        };
        if opts.json {
            println!(
                "{}",
                serde_json::to_string(&m).map_err(|e| Error::Msg(e.to_string()))?
            );
        }
        metrics.push(m);
        bar.set_position(step as u64);
        let vl = val_loss.map(|v| format!(" val {v:.4}")).unwrap_or_default();
        bar.set_message(format!("loss {loss:.4}{vl} {rate:.0} tok/s"));
        if step % cfg.ckpt_interval == 0 || last {
            let state = TrainerState {
                version: 1,
                step,
                cursor: sampler.cursor.clone(),
                dropout_rng: dropout_rng.clone(),
                train_seconds,
                config: cfg.clone(),
                model: mcfg.clone(),
            };
            outcome.checkpoint = Some(save_checkpoint(&cfg, &model, &opt, &tok, &state)?);
            let text: String = metrics
                .iter()
                .filter_map(|m| serde_json::to_string(m).ok())
                .map(|l| l + "\n")
                .collect();
            write_atomic(&metrics_path, text.as_bytes())?;
            plot_losses(
                &cfg.out.join("loss.png"),
                &metrics
                    .iter()
                    .map(|m| (m.step, m.loss, m.val_loss))
                    .collect::<Vec<_>>(),
            )?;
        }
        if stop && step < cfg.max_steps {
            outcome.stopped_early = true;
            bar.abandon();
            say(format!(
                "stopped at step {step}{}; checkpoint saved. Continue with --resume",
                if out_of_time { " (time budget)" } else { "" }
            ));
            break;
        }
    }
    bar.finish_and_clear();
    rates.sort_by(f64::total_cmp);
    outcome.step = step;
    outcome.val_loss = val_loss;
    outcome.tokens_per_sec = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    say(format!(
        "step {step}: loss {:.4}{}, median {:.0} tokens/s, {:.1} min; model in {}",
        outcome.losses.last().copied().unwrap_or(f32::NAN),
        val_loss
            .map(|v| format!(", val loss {v:.4}"))
            .unwrap_or_default(),
        outcome.tokens_per_sec,
        train_seconds / 60.0,
        outcome.checkpoint.as_deref().unwrap_or(&cfg.out).display()
    ));
    Ok(outcome)
}

/// Writes `checkpoints/step_NNNNNNN` (into a temporary directory, renamed into place), points
/// `latest` at it and prunes all but the newest `keep_checkpoints`.
fn save_checkpoint(
    cfg: &TranslateConfig,
    model: &EncoderDecoder,
    opt: &AdamW,
    tok: &Tokenizer,
    state: &TrainerState,
) -> Result<PathBuf> {
    let name = format!("step_{:07}", state.step);
    let root = cfg.out.join(CHECKPOINTS_DIR);
    let tmp = root.join(format!(".{name}.tmp"));
    let dst = root.join(&name);
    for d in [&tmp, &dst] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    let meta = [("step".to_string(), state.step.to_string())];
    save_model(model, tok, &tmp, Some(meta.into_iter().collect()))?;
    save_optimizer(model, opt, &tmp.join(OPTIMIZER_FILE))?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&tmp.join(STATE_FILE), &json)?;
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&tmp, e))?;
    write_atomic(
        &cfg.out.join(LATEST_FILE),
        format!("{CHECKPOINTS_DIR}/{name}\n").as_bytes(),
    )?;
    let all = list_checkpoints(&cfg.out)?;
    if all.len() > cfg.keep_checkpoints {
        for old in &all[..all.len() - cfg.keep_checkpoints] {
            std::fs::remove_dir_all(old).map_err(|e| Error::io(old, e))?;
        }
    }
    Ok(dst)
}
