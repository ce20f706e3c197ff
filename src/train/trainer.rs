//! The training loop, written once for every [`Task`]: AdamW with a [`Schedule`], gradient
//! accumulation and clipping, a NaN stop, periodic validation, atomic checkpoints with exact
//! resume, Ctrl-C and `stop_at`, a time budget, a progress bar or JSON lines, `metrics.jsonl`
//! and a loss plot.
//!
//! Resume is exact: a checkpoint holds the parameters, both AdamW moments, the step and the
//! task's state (its data position and RNGs), so `N` steps, stop, resume to `2N` gives the
//! losses and weights of an uninterrupted `2N`-step run.

use super::checkpoint::{CheckpointLayout, TrainerState, STATE_FILE};
use super::optim_state;
use super::plot::plot_losses;
use super::task::Task;
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::adamw::{clip_grad_norm, global_grad_norm};
use crate::optim::{AdamW, AdamWConfig, Schedule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// How a run reports and whether it resumes.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Print one JSON object per line instead of a progress bar.
    pub json: bool,
    /// Continue from the run's latest checkpoint.
    pub resume: bool,
    /// Replace a run already in the output directory (see [`super::run_dir::claim`]); without
    /// it (or `resume`), starting over an existing run is an error.
    pub overwrite: bool,
    /// No progress bar and no text output (tests).
    pub quiet: bool,
    /// Stop (saving a checkpoint, as Ctrl-C does) once this step is reached.
    pub stop_at: Option<usize>,
    /// Set to request a clean stop (Ctrl-C).
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl TrainOptions {
    /// Whether human-readable progress goes to standard error.
    pub fn talk(&self) -> bool {
        !self.quiet && !self.json
    }
}

/// What the loop needs to know of a run; the task-specific configurations map onto it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopConfig {
    /// Output directory (checkpoints, metrics, plot).
    pub out: PathBuf,
    /// Optimizer steps in total.
    pub max_steps: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Global gradient-norm clip (0: off).
    pub grad_clip: f32,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// AdamW hyper-parameters.
    pub adamw: AdamWConfig,
    /// Validation every this many steps (and at the last).
    pub eval_interval: usize,
    /// Checkpoint every this many steps (and at the last).
    pub ckpt_interval: usize,
    /// Stop (with a checkpoint) after this many minutes of training in total.
    pub max_minutes: Option<f64>,
    /// Where checkpoints go.
    pub checkpoints: CheckpointLayout,
    /// The configuration field that sets the learning rate (named when the loss diverges).
    pub lr_field: &'static str,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct TrainOutcome {
    /// Steps completed in total (including those before a resume).
    pub step: usize,
    /// Training loss of every step run in this invocation, in order.
    pub losses: Vec<f32>,
    /// Last validation loss.
    pub val_loss: Option<f32>,
    /// Whether the run stopped before `max_steps` (Ctrl-C, `stop_at`, time budget).
    pub stopped_early: bool,
    /// Median training throughput (tokens per second, as the task counts them).
    pub tokens_per_sec: f64,
    /// Training time in total, including before a resume.
    pub train_seconds: f64,
    /// The newest checkpoint directory.
    pub checkpoint: Option<PathBuf>,
    /// The sample printed at the end (GPT pretraining), if any.
    pub sample: Option<String>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    /// Steps completed.
    pub step: usize,
    /// Training loss of the step (mean over its micro-batches).
    pub loss: f32,
    /// Learning rate of the step.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens per second of the step.
    pub tokens_per_sec: f64,
    /// Validation loss, on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f32>,
}

/// Reads metrics up to and including `step` (to continue the file on resume).
pub fn read_metrics(path: &Path, up_to: usize) -> Vec<Metric> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Metric>(l).ok())
                .filter(|m| m.step <= up_to)
                .collect()
        })
        .unwrap_or_default()
}

/// A checkpoint to resume from: its directory and `trainer_state.json`.
#[derive(Clone, Debug)]
pub struct Resume {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its state.
    pub state: TrainerState,
}

impl Resume {
    /// Finds the checkpoint of the run in `out` and reads its state.
    pub fn find(out: &Path, layout: CheckpointLayout) -> Result<Self> {
        let dir = layout.resume_dir(out)?;
        let state = TrainerState::read(&dir)?;
        Ok(Resume { dir, state })
    }
}

fn progress_bar(opts: &TrainOptions, max_steps: usize, step: usize) -> indicatif::ProgressBar {
    if !opts.talk() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(max_steps as u64);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(step as u64);
    bar
}

fn to_json_line(m: &Metric) -> Result<String> {
    serde_json::to_string(m).map_err(|e| Error::usage("metrics", e.to_string()))
}

/// Runs `task` from step 0, or from `resume` (whose task fields [`Task::restore`] reads), to
/// `cfg.max_steps` or an early stop.
pub fn run(
    task: &mut dyn Task,
    cfg: &LoopConfig,
    opts: &TrainOptions,
    resume: Option<&Resume>,
) -> Result<TrainOutcome> {
    for (field, v) in [
        ("max_steps", cfg.max_steps),
        ("grad_accum", cfg.grad_accum),
        ("eval_interval", cfg.eval_interval),
        ("ckpt_interval", cfg.ckpt_interval),
    ] {
        if v == 0 {
            return Err(Error::field(field, "must be at least 1"));
        }
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let mut opt = AdamW::new(&task.params().layout, cfg.adamw);
    let (mut step, base_seconds) = match resume {
        Some(r) => {
            task.restore(&r.dir, &r.state.fields)?;
            let layout = task.params().layout.clone();
            optim_state::load(&r.dir, &layout, &mut opt, r.state.step)?;
            (r.state.step, r.state.train_seconds)
        }
        None => (0, 0.0),
    };
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut metrics = if resume.is_some() {
        read_metrics(&metrics_path, step)
    } else {
        Vec::new()
    };
    let bar = progress_bar(opts, cfg.max_steps, step);
    let mut outcome = TrainOutcome {
        train_seconds: base_seconds,
        ..TrainOutcome::default()
    };
    let mut rates = Vec::new();
    let started = Instant::now();
    let scale = 1.0 / cfg.grad_accum as f32;
    while step < cfg.max_steps {
        let t0 = Instant::now();
        let lr = cfg.schedule.lr(step);
        task.params().zero_grad();
        let (mut loss, mut tokens) = (0.0f32, 0usize);
        for _ in 0..cfg.grad_accum {
            let micro = task.forward_backward(scale)?;
            loss += scale * micro.loss;
            tokens += micro.tokens;
        }
        if !loss.is_finite() {
            bar.abandon();
            return Err(Error::field(
                cfg.lr_field,
                format!(
                    "the loss is {loss} at step {}; stopped. The last good checkpoint is {}; try a lower {}",
                    step + 1,
                    cfg.checkpoints.describe(&cfg.out),
                    cfg.lr_field
                ),
            ));
        }
        let params = task.params();
        let grad_norm = if cfg.grad_clip > 0.0 {
            clip_grad_norm(&mut params.grad, cfg.grad_clip)
        } else {
            global_grad_norm(&params.grad)
        };
        opt.update(params, lr);
        task.after_update();
        step += 1;
        let rate = tokens as f64 / t0.elapsed().as_secs_f64();
        rates.push(rate);
        outcome.losses.push(loss);
        outcome.train_seconds = base_seconds + started.elapsed().as_secs_f64();
        let out_of_time = cfg
            .max_minutes
            .is_some_and(|m| outcome.train_seconds >= m * 60.0);
        let interrupted = opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst));
        let stop = interrupted || out_of_time || opts.stop_at == Some(step);
        let last = step == cfg.max_steps || stop;
        let eval_now = step % cfg.eval_interval == 0 || last;
        if eval_now {
            outcome.val_loss = task.evaluate()?;
        }
        let m = Metric {
            step,
            loss,
            lr,
            grad_norm,
            tokens_per_sec: rate,
            val_loss: if eval_now { outcome.val_loss } else { None },
        };
        if opts.json {
            println!("{}", to_json_line(&m)?);
        }
        metrics.push(m);
        bar.set_position(step as u64);
        let vl = outcome
            .val_loss
            .map(|v| format!(" val {v:.4}"))
            .unwrap_or_default();
        bar.set_message(format!("loss {loss:.4}{vl} {rate:.0} tok/s"));
        if step % cfg.ckpt_interval == 0 || last {
            outcome.checkpoint = Some(save_checkpoint(
                task,
                cfg,
                &opt,
                step,
                outcome.train_seconds,
            )?);
            let mut text = String::new();
            for m in &metrics {
                text.push_str(&to_json_line(m)?);
                text.push('\n');
            }
            write_atomic(&metrics_path, text.as_bytes())?;
            let points: Vec<_> = metrics
                .iter()
                .map(|m| (m.step, m.loss, m.val_loss))
                .collect();
            plot_losses(&cfg.out.join("loss.png"), &points)?;
            // The new run has a checkpoint: a run `--overwrite` moved aside can go.
            super::run_dir::discard_previous(&cfg.out)?;
        }
        if stop && step < cfg.max_steps {
            outcome.stopped_early = true;
            bar.abandon();
            if opts.talk() {
                eprintln!(
                    "stopped at step {step}{}; checkpoint saved. Continue with --resume",
                    if out_of_time { " (time budget)" } else { "" }
                );
            }
            break;
        }
    }
    bar.finish_and_clear();
    rates.sort_by(f64::total_cmp);
    outcome.step = step;
    outcome.tokens_per_sec = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    if opts.talk() {
        eprintln!(
            "step {step}: loss {:.4}{}, median {:.0} tokens/s, {:.1} min; checkpoint in {}",
            outcome.losses.last().copied().unwrap_or(f32::NAN),
            outcome
                .val_loss
                .map(|v| format!(", val loss {v:.4}"))
                .unwrap_or_default(),
            outcome.tokens_per_sec,
            outcome.train_seconds / 60.0,
            outcome.checkpoint.as_deref().unwrap_or(&cfg.out).display()
        );
    }
    Ok(outcome)
}

/// Writes the checkpoint of `step`: the task's files, the optimizer state and
/// `trainer_state.json`, all into a temporary directory renamed into place.
fn save_checkpoint(
    task: &mut dyn Task,
    cfg: &LoopConfig,
    opt: &AdamW,
    step: usize,
    train_seconds: f64,
) -> Result<PathBuf> {
    let state = TrainerState::to_json(step, train_seconds, task.state()?);
    let layout = task.params().layout.clone();
    let task = &*task;
    cfg.checkpoints.save(&cfg.out, step, |dir| {
        let meta = [("step".to_string(), step.to_string())];
        task.save(dir, meta.into_iter().collect())?;
        optim_state::save(dir, &layout, opt, &cfg.schedule)?;
        write_atomic(&dir.join(STATE_FILE), &state)
    })
}
