//! The training loop, written once for every [`Task`]: AdamW with a [`Schedule`], gradient
//! accumulation and clipping, non-finite steps skipped or stopped on, periodic validation, atomic
//! checkpoints with exact resume, Ctrl-C and `stop_at`, a time budget, a progress bar or JSON
//! lines, `metrics.jsonl` and a loss plot.
//!
//! Non-finite values never reach a checkpoint: the loss and the global gradient norm are checked
//! before the optimizer update (a non-finite step is skipped or stops the run, [`OnNan`]), and
//! the weights and both AdamW moments are checked before every checkpoint write. A run that
//! stops names the last checkpoint it saved (or resumed from) only if it is on disk, and the
//! likely causes read from its configuration.
//!
//! Resume is exact: a checkpoint holds the parameters, both AdamW moments, the step and the
//! task's state (its data position and RNGs), so `N` steps, stop, resume to `2N` gives the
//! losses and weights of an uninterrupted `2N`-step run.

use super::checkpoint::{CheckpointLayout, TrainerState, STATE_FILE};
use super::config::{OnNan, DEFAULT_MAX_NAN_SKIPS};
use super::optim_state;
use super::plot::{plot_losses, plot_metrics};
use super::task::Task;
use crate::dist::reducer::{GradReducer, DEFAULT_BUCKET};
use crate::dist::{shard, ReduceOp, World};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use crate::kernels::adamw::{clip_to_norm, global_grad_norm};
use crate::kernels::vmath::first_nonfinite;
use crate::nn::params::ParamLayout;
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
    /// Before allocating the model, compare the run's memory estimate
    /// ([`crate::model::memory`]) with the memory available and refuse the run when it does
    /// not fit (`gpt train` sets it unless `--no-memory-check`; off by default for library use).
    pub check_memory: bool,
    /// The ranks of data-parallel training ([`crate::dist`]); one by default. Rank 0 alone
    /// talks, evaluates and writes metrics and checkpoints.
    pub world: World,
    /// With several ranks: shard AdamW's moments across them (ZeRO stage 1), each rank
    /// updating its slice of the parameters, then an all-gather.
    pub zero1: bool,
}

impl TrainOptions {
    /// Whether human-readable progress goes to standard error.
    pub fn talk(&self) -> bool {
        !self.quiet && !self.json && self.world.is_root()
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
    /// What to do with a step whose loss or gradient norm is not finite.
    pub on_nan: OnNan,
    /// With [`OnNan::Skip`]: steps in a row that may be skipped; one more stops the run.
    pub max_nan_skips: usize,
}

impl LoopConfig {
    /// The loop of the fine-tuning tasks (`gpt finetune`, the chat trainings, `gpt logs
    /// train`): linear warm-up over `warmup` steps then linear decay to 0 from `lr`, AdamW
    /// (0.9, 0.999, 1e-8) with `weight_decay`, no accumulation, evaluation and a checkpoint
    /// (one `OUT/checkpoint`) every `every` steps, non-finite steps skipped.
    pub fn fine_tuning(
        out: PathBuf,
        max_steps: usize,
        every: usize,
        lr: f32,
        warmup: usize,
        grad_clip: f32,
        weight_decay: f32,
    ) -> LoopConfig {
        LoopConfig {
            out,
            max_steps,
            grad_accum: 1,
            grad_clip,
            schedule: Schedule::WarmupLinear {
                lr,
                warmup,
                max_steps,
            },
            adamw: AdamWConfig {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            },
            eval_interval: every,
            ckpt_interval: every,
            max_minutes: None,
            checkpoints: CheckpointLayout::Single,
            lr_field: "lr",
            on_nan: OnNan::Skip,
            max_nan_skips: DEFAULT_MAX_NAN_SKIPS,
        }
    }

    /// Checks every value the loop uses, naming the field: the counts (at least 1), the
    /// clipping threshold (a finite number ≥ 0, 0 turning clipping off), the time budget
    /// (positive), `max_nan_skips` (at least 1 with `on_nan = "skip"`), the AdamW settings
    /// ([`AdamWConfig::validate`]) and the schedule ([`Schedule::validate`]). The one check of
    /// these, for every task; [`run`] calls it, and the tasks' configurations call it before
    /// they load any data.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("max_steps", self.max_steps),
            ("grad_accum", self.grad_accum),
            ("eval_interval", self.eval_interval),
            ("ckpt_interval", self.ckpt_interval),
        ] {
            if v == 0 {
                return Err(Error::field(field, "must be at least 1"));
            }
        }
        if !(self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return Err(Error::field(
                "grad_clip",
                format!(
                    "{} must be a number ≥ 0 (0 turns clipping off; typical: 1.0)",
                    self.grad_clip
                ),
            ));
        }
        if let Some(m) = self.max_minutes {
            if !(m > 0.0 && m.is_finite()) {
                return Err(Error::field(
                    "max_minutes",
                    format!("{m} must be a positive number"),
                ));
            }
        }
        if self.on_nan == OnNan::Skip && self.max_nan_skips == 0 {
            return Err(Error::field(
                "max_nan_skips",
                "must be at least 1 with on_nan = skip (use on_nan = stop to stop at the first)",
            ));
        }
        self.adamw.validate()?;
        self.schedule.validate(self.lr_field)
    }

    /// The likely causes of divergence that the loop's own settings show.
    fn divergence_hints(&self) -> Vec<String> {
        let mut hints = Vec::new();
        if self.grad_clip == 0.0 {
            hints.push("no gradient clipping (grad_clip = 0; try 1.0)".into());
        }
        if self.adamw.eps < 1e-10 {
            hints.push(format!("a tiny AdamW eps ({}; try 1e-8)", self.adamw.eps));
        }
        hints
    }
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
    /// Steps skipped for a non-finite loss or gradient norm ([`OnNan::Skip`]), in this
    /// invocation.
    pub skipped_steps: usize,
    /// With several ranks: seconds this rank waited for the gradient all-reduce after its
    /// backward pass (communication backward did not hide), in this invocation.
    pub comm_wait_seconds: f64,
    /// With several ranks: seconds of the optimizer steps of this invocation (to compare
    /// [`TrainOutcome::comm_wait_seconds`] with).
    pub step_seconds: f64,
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
    /// Tokens of the step's micro-batches as its task counts them (the chat tasks: real
    /// tokens, padding not counted).
    #[serde(default)]
    pub tokens: usize,
    /// Validation loss, on evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f32>,
    /// The task's own metrics ([`Task::step_metrics`], [`Task::eval_metrics`]).
    #[serde(flatten, default)]
    pub extra: std::collections::BTreeMap<String, f32>,
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
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let world = &opts.world;
    let (rank, ranks) = (world.rank(), world.size());
    let parallel = ranks > 1;
    let root = world.is_root();
    if parallel {
        task.shard(rank, ranks)?;
        check_agreement(world, task, cfg, opts.zero1)?;
    }
    let total = task.params().layout.total();
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
    // `--zero1`: this rank keeps (and updates) its slice of the moments only.
    let zero1 = (opts.zero1 && parallel).then(|| shard::counts(total, ranks));
    if zero1.is_some() {
        opt.keep_slice(shard::range(total, rank, ranks));
    }
    // Buckets of an eighth of the model at least (so that even a small model overlaps), at
    // most DEFAULT_BUCKET values.
    let reducer = parallel.then(|| {
        GradReducer::new(
            world.clone(),
            total,
            (total / 8).clamp(1 << 12, DEFAULT_BUCKET),
        )
    });
    if let Some(r) = &reducer {
        let r = r.clone();
        task.report_final_grads(Some(std::sync::Arc::new(move |offset, g| {
            r.ready_from(offset, g)
        })));
    }
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut metrics = if resume.is_some() && root {
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
    // The newest checkpoint known to be good: the one resumed from, then each one saved (every
    // save is checked first). Named when the run stops on a non-finite value.
    let mut last_good = resume.map(|r| (r.dir.clone(), r.state.step));
    let mut skipped_in_a_row = 0;
    let started = Instant::now();
    let scale = 1.0 / cfg.grad_accum as f32;
    while step < cfg.max_steps {
        let t0 = Instant::now();
        let lr = cfg.schedule.lr(step);
        task.params().zero_grad();
        let (mut loss, mut tokens) = (0.0f32, 0usize);
        for micro_step in 0..cfg.grad_accum {
            if micro_step + 1 == cfg.grad_accum {
                if let Some(r) = &reducer {
                    r.arm();
                }
            }
            let micro = task.forward_backward(scale)?;
            loss += scale * micro.loss;
            tokens += micro.tokens;
        }
        // (Ctrl-C asked, time budget spent) after `seconds` of training in total.
        let stop_flags = |seconds: f64| {
            (
                opts.interrupt
                    .as_ref()
                    .is_some_and(|f| f.load(Ordering::SeqCst)),
                cfg.max_minutes.is_some_and(|m| seconds >= m * 60.0),
            )
        };
        // Alone, they are read after the update; with several ranks here, to be agreed on.
        let (mut interrupted, mut out_of_time) =
            stop_flags(base_seconds + started.elapsed().as_secs_f64());
        if let Some(r) = &reducer {
            outcome.comm_wait_seconds += r.finish(&mut task.params().grad)?.as_secs_f64();
            // One small all-reduce agrees on the loss, the tokens and whether to stop, so that
            // every rank takes the same decisions.
            let agreed = world.all_reduce_f64(
                vec![
                    loss as f64,
                    tokens as f64,
                    f64::from(u8::from(interrupted)),
                    f64::from(u8::from(out_of_time)),
                ],
                ReduceOp::Sum,
            )?;
            loss = (agreed[0] / ranks as f64) as f32;
            tokens = agreed[1] as usize;
            interrupted = agreed[2] > 0.0;
            out_of_time = agreed[3] > 0.0;
        }
        let params = task.params();
        let grad_norm = global_grad_norm(&params.grad);
        if !(loss.is_finite() && grad_norm.is_finite()) {
            let what = if loss.is_finite() {
                format!("the gradient norm is {grad_norm} (loss {loss})")
            } else {
                format!("the loss is {loss}")
            };
            // Weights that are no longer finite make every later step non-finite: skipping
            // cannot help.
            let poisoned = nonfinite_tensor(&params.layout, &params.data, "the weights");
            skipped_in_a_row += 1;
            let why = match (cfg.on_nan, poisoned) {
                (_, Some(p)) => Some(format!("{what} and {p}; stopped")),
                (OnNan::Stop, None) => Some(format!("{what}; stopped (--on-nan stop)")),
                (OnNan::Skip, None) if skipped_in_a_row > cfg.max_nan_skips => Some(format!(
                    "{what}, {skipped_in_a_row} steps in a row; stopped (--max-nan-skips {})",
                    cfg.max_nan_skips
                )),
                (OnNan::Skip, None) => None,
            };
            if let Some(why) = why {
                bar.abandon();
                return Err(diverged(&*task, cfg, step + 1, why, last_good.as_ref()));
            }
            outcome.skipped_steps += 1;
            if !opts.quiet {
                bar.suspend(|| {
                    eprintln!(
                        "warning: step {}: {what}; skipped, no update ({skipped_in_a_row} in a row, at most {})",
                        step + 1,
                        cfg.max_nan_skips
                    )
                });
            }
            continue;
        }
        skipped_in_a_row = 0;
        if cfg.grad_clip > 0.0 {
            clip_to_norm(&mut params.grad, grad_norm, cfg.grad_clip);
        }
        opt.update(params, lr);
        if let Some(counts) = &zero1 {
            // Every rank updated its slice; gather the whole buffer.
            let mine = params.data[opt.offset..opt.offset + opt.m.len()].to_vec();
            let all = world.all_gather_varcount(mine, counts.clone())?;
            params.data.copy_from_slice(&all);
        }
        task.after_update();
        step += 1;
        let step_seconds = t0.elapsed().as_secs_f64();
        outcome.step_seconds += step_seconds;
        let rate = tokens as f64 / step_seconds;
        rates.push(rate);
        outcome.losses.push(loss);
        outcome.train_seconds = base_seconds + started.elapsed().as_secs_f64();
        if !parallel {
            (interrupted, out_of_time) = stop_flags(outcome.train_seconds);
        }
        let stop = interrupted || out_of_time || opts.stop_at == Some(step);
        let last = step == cfg.max_steps || stop;
        // Rank 0 alone evaluates, reports and saves; the others go on to the next step and
        // wait for it in the next all-reduce.
        let eval_now = (step % cfg.eval_interval == 0 || last) && root;
        if eval_now {
            outcome.val_loss = task.evaluate()?;
        }
        let mut extra: std::collections::BTreeMap<String, f32> =
            task.step_metrics().into_iter().collect();
        if eval_now {
            extra.extend(task.eval_metrics());
        }
        let m = Metric {
            step,
            loss,
            lr,
            grad_norm,
            tokens_per_sec: rate,
            tokens,
            val_loss: if eval_now { outcome.val_loss } else { None },
            extra,
        };
        if opts.json && root {
            println!("{}", to_json_line(&m)?);
        }
        metrics.push(m);
        bar.set_position(step as u64);
        let vl = outcome
            .val_loss
            .map(|v| format!(" val {v:.4}"))
            .unwrap_or_default();
        bar.set_message(format!("loss {loss:.4}{vl} {rate:.0} tok/s"));
        let save_now = step % cfg.ckpt_interval == 0 || last;
        // `--zero1`: the moments of every rank, gathered (every rank takes part).
        let gathered = match (&zero1, save_now) {
            (Some(counts), true) => Some(opt.with_whole(
                world.all_gather_varcount(opt.m.clone(), counts.clone())?,
                world.all_gather_varcount(opt.v.clone(), counts.clone())?,
            )),
            _ => None,
        };
        if save_now && root {
            let opt = gathered.as_ref().unwrap_or(&opt);
            // An update of finite gradients can still overflow the weights or the moments:
            // check them before they are written.
            let params = task.params();
            let bad = nonfinite_tensor(&params.layout, &params.data, "the weights").or_else(|| {
                nonfinite_tensor(&params.layout, &opt.m, "the AdamW first moment")
                    .or_else(|| nonfinite_tensor(&params.layout, &opt.v, "the AdamW second moment"))
            });
            if let Some(bad) = bad {
                bar.abandon();
                let why = format!("after the update, {bad}; not saved, stopped");
                return Err(diverged(&*task, cfg, step, why, last_good.as_ref()));
            }
            outcome.checkpoint = Some(save_checkpoint(
                task,
                cfg,
                opt,
                step,
                outcome.train_seconds,
            )?);
            last_good = outcome.checkpoint.clone().map(|d| (d, step));
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
            if metrics.iter().any(|m| !m.extra.is_empty()) {
                plot_metrics(&cfg.out.join("metrics.png"), &metrics)?;
            }
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
    if reducer.is_some() {
        task.report_final_grads(None);
    }
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

/// Stops with an error on every rank unless all of them run the same task on the same data with
/// the same loop settings (a fingerprint of each, gathered; paths may differ).
fn check_agreement(world: &World, task: &dyn Task, cfg: &LoopConfig, zero1: bool) -> Result<()> {
    let settings = LoopConfig {
        out: PathBuf::new(),
        ..cfg.clone()
    };
    let mut h = crate::dist::fnv1a(task.fingerprint(), format!("{settings:?}").as_bytes());
    h = crate::dist::fnv1a(h, &[u8::from(zero1)]);
    let all = world.all_gather_u64(h)?;
    if all.iter().all(|&x| x == all[0]) {
        return Ok(());
    }
    let differ: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, &x)| x != all[0])
        .map(|(r, _)| r.to_string())
        .collect();
    Err(Error::usage(
        "mpirun",
        format!(
            "the ranks disagree on the configuration or the data: rank(s) {} differ from rank 0 (fingerprints {all:x?}); every rank must run the same command on the same data (paths may differ)",
            differ.join(", ")
        ),
    ))
}

/// `"{what} hold NaN (tensor `name`, element i)"` for the first non-finite value of the flat
/// buffer `flat` in `layout`, or `None` when every value is finite.
fn nonfinite_tensor(layout: &ParamLayout, flat: &[f32], what: &str) -> Option<String> {
    let i = first_nonfinite(flat)?;
    let (name, at) = layout
        .entries()
        .iter()
        .find(|e| (e.param.offset..e.param.offset + e.param.len).contains(&i))
        .map_or(("?", i), |e| (e.name.as_str(), i - e.param.offset));
    Some(format!(
        "{what} hold {} (tensor `{name}`, element {at})",
        flat[i]
    ))
}

/// The error of a run that stopped on a non-finite value at `step`: what happened, the last
/// good checkpoint if it is on disk, and the likely causes from the configuration.
fn diverged(
    task: &dyn Task,
    cfg: &LoopConfig,
    step: usize,
    what: String,
    last_good: Option<&(PathBuf, usize)>,
) -> Error {
    let checkpoint = match last_good {
        Some((dir, at)) if dir.join(STATE_FILE).exists() => {
            format!("The last good checkpoint is {} (step {at})", dir.display())
        }
        _ => "No checkpoint of this run was saved before it".to_string(),
    };
    let mut causes = task.divergence_hints();
    causes.extend(cfg.divergence_hints());
    causes.push(format!(
        "otherwise a learning rate too high for this model and data (try a lower {})",
        cfg.lr_field
    ));
    Error::Diverged {
        step,
        what,
        checkpoint,
        causes: causes.join("; "),
    }
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
