//! Non-finite values never reach a checkpoint: the training loop checks the loss and the
//! gradient norm before the update (skipping the step or stopping, `--on-nan`), checks the
//! weights and moments before every checkpoint write, names only a checkpoint that exists when
//! it stops, and says what in the configuration likely made the run diverge.

use gpt::error::{Error, Result};
use gpt::io::TensorFile;
use gpt::nn::params::{Init, ParamLayout, Params};
use gpt::optim::{AdamWConfig, Schedule};
use gpt::train::checkpoint::{state_field, CheckpointLayout};
use gpt::train::trainer::{run, LoopConfig, Resume};
use gpt::train::{MicroStep, OnNan, Task, TrainConfig, TrainOptions};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Fits `w` to targets `pos mod 7` (one micro-batch per target), with faults injected by
/// micro-batch position (`nan_grad_at`, `nan_loss_from`) or by update (`inf_weight_after`).
struct Faulty {
    params: Params,
    pos: usize,
    updates: usize,
    /// Micro-batches whose gradient is NaN (their loss stays finite).
    nan_grad_at: Vec<usize>,
    /// From this micro-batch on, every loss is NaN.
    nan_loss_from: Option<usize>,
    /// After this many updates, a weight becomes +inf (an update that overflowed).
    inf_weight_after: Option<usize>,
}

impl Faulty {
    fn new() -> Self {
        let mut layout = ParamLayout::new();
        layout.add("w", &[3], true, Init::Zeros).unwrap();
        Faulty {
            params: Params::zeros(layout),
            pos: 0,
            updates: 0,
            nan_grad_at: Vec::new(),
            nan_loss_from: None,
            inf_weight_after: None,
        }
    }
}

impl Task for Faulty {
    fn params(&mut self) -> &mut Params {
        &mut self.params
    }
    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let t = (self.pos % 7) as f32;
        let mut loss = 0.0;
        for (w, g) in self.params.data.iter().zip(self.params.grad.iter_mut()) {
            loss += 0.5 * (w - t) * (w - t);
            *g += scale * (w - t);
        }
        if self.nan_grad_at.contains(&self.pos) {
            self.params.grad[1] = f32::NAN;
        }
        if self.nan_loss_from.is_some_and(|p| self.pos >= p) {
            loss = f32::NAN;
        }
        self.pos += 1;
        Ok(MicroStep { loss, tokens: 1 })
    }
    fn after_update(&mut self) {
        self.updates += 1;
        if self.inf_weight_after == Some(self.updates) {
            self.params.data[1] = f32::INFINITY;
        }
    }
    fn evaluate(&mut self) -> Result<Option<f32>> {
        Ok(None)
    }
    fn divergence_hints(&self) -> Vec<String> {
        vec!["the faulty task's own hint".into()]
    }
    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        gpt::io::write_f32(
            &dir.join("model.safetensors"),
            &[("w".into(), vec![3], &self.params.data[..])],
            meta,
        )?;
        gpt::io::write_atomic(&dir.join("config.json"), b"{}")
    }
    fn state(&self) -> Result<Map<String, Value>> {
        Ok([("pos".to_string(), Value::from(self.pos))]
            .into_iter()
            .collect())
    }
    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        let f = TensorFile::open(&dir.join("model.safetensors"))?;
        let t = f.find(&["w"])?.clone();
        f.read_f32_into(&t, &[3], &mut self.params.data)?;
        self.pos = state_field(dir, state, "pos")?;
        Ok(())
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-nan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(out: PathBuf, on_nan: OnNan) -> LoopConfig {
    LoopConfig {
        out,
        max_steps: 8,
        grad_accum: 1,
        grad_clip: 1.0,
        schedule: Schedule::WarmupCosine {
            lr: 0.1,
            min_lr: 0.01,
            warmup: 2,
            max_steps: 8,
        },
        adamw: AdamWConfig::default(),
        eval_interval: 100,
        ckpt_interval: 2,
        max_minutes: None,
        checkpoints: CheckpointLayout::Single,
        lr_field: "lr",
        on_nan,
        max_nan_skips: 3,
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

/// The weights of the checkpoint in `out` and its step.
fn saved(out: &Path) -> (Vec<f32>, usize) {
    let r = Resume::find(out, CheckpointLayout::Single).unwrap();
    let f = TensorFile::open(&r.dir.join("model.safetensors")).unwrap();
    (f.read_f32("w").unwrap().1, r.state.step)
}

#[test]
fn a_nan_gradient_with_a_finite_loss_is_skipped_not_applied() {
    let out = tmp("skip");
    let mut task = Faulty::new();
    task.nan_grad_at = vec![4];
    let done = run(&mut task, &config(out.clone(), OnNan::Skip), &quiet(), None).unwrap();
    // Micro-batch 4 was skipped: 8 updates still ran, each on a finite gradient.
    assert_eq!((done.step, done.skipped_steps, task.updates), (8, 1, 8));
    assert_eq!(done.losses.len(), 8);
    assert!(
        task.params.data.iter().all(|w| w.is_finite()),
        "{:?}",
        task.params.data
    );
    let (w, step) = saved(&out);
    assert_eq!(step, 8);
    assert!(w.iter().all(|w| w.is_finite()), "{w:?}");

    // The skip left the optimizer where it was: the same run without micro-batch 4's data
    // (a task that never saw it) ends on the same weights.
    let mut clean = Faulty::new();
    clean.pos = 0;
    let mut reference = Vec::new();
    let cfg = config(tmp("skip-ref"), OnNan::Skip);
    {
        // Replay: positions 0..4, then 5..9, as the skipping run consumed them.
        struct Skipping(Faulty);
        impl Task for Skipping {
            fn params(&mut self) -> &mut Params {
                self.0.params()
            }
            fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
                if self.0.pos == 4 {
                    self.0.pos = 5;
                }
                self.0.forward_backward(scale)
            }
            fn evaluate(&mut self) -> Result<Option<f32>> {
                Ok(None)
            }
            fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
                self.0.save(dir, meta)
            }
            fn state(&self) -> Result<Map<String, Value>> {
                self.0.state()
            }
            fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
                self.0.restore(dir, state)
            }
        }
        let mut s = Skipping(clean);
        let r = run(&mut s, &cfg, &quiet(), None).unwrap();
        assert_eq!(r.skipped_steps, 0);
        reference.extend_from_slice(&s.0.params.data);
    }
    assert_eq!(task.params.data, reference);
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&cfg.out).ok();
}

#[test]
fn stop_mode_stops_at_the_first_nan_gradient_naming_the_last_saved_checkpoint() {
    let out = tmp("stop");
    let mut task = Faulty::new();
    task.nan_grad_at = vec![4];
    let err = run(&mut task, &config(out.clone(), OnNan::Stop), &quiet(), None).unwrap_err();
    let Error::Diverged {
        step,
        ref what,
        ref checkpoint,
        ref causes,
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!(step, 5);
    assert!(what.contains("gradient norm is NaN"), "{what}");
    let dir = out.join("checkpoint");
    assert!(
        checkpoint.contains(&dir.display().to_string()) && checkpoint.contains("step 4"),
        "{checkpoint}"
    );
    assert!(
        causes.contains("the faulty task's own hint") && causes.contains("lower lr"),
        "{causes}"
    );
    // The checkpoint it names is on disk, from step 4, with finite weights.
    let (w, at) = saved(&out);
    assert_eq!(at, 4);
    assert!(w.iter().all(|w| w.is_finite()), "{w:?}");
    assert_eq!(task.updates, 4);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_stop_before_any_checkpoint_names_none() {
    let out = tmp("none");
    let mut task = Faulty::new();
    task.nan_loss_from = Some(1);
    let mut cfg = config(out.clone(), OnNan::Stop);
    cfg.ckpt_interval = 100;
    let err = run(&mut task, &cfg, &quiet(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at step 2") && err.contains("loss is NaN"),
        "{err}"
    );
    assert!(err.contains("No checkpoint"), "{err}");
    // No path is named: there is nothing there.
    assert!(!err.contains(&out.display().to_string()), "{err}");
    assert!(!out.join("checkpoint").exists());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn nans_in_every_step_stop_after_max_nan_skips_in_a_row() {
    let out = tmp("limit");
    let mut task = Faulty::new();
    task.nan_loss_from = Some(5);
    let err = run(&mut task, &config(out.clone(), OnNan::Skip), &quiet(), None)
        .unwrap_err()
        .to_string();
    // Steps 1..=5 ran; step 6 was tried 4 times: 3 skips allowed, the 4th stops.
    assert!(
        err.contains("at step 6")
            && err.contains("4 steps in a row")
            && err.contains("--max-nan-skips 3"),
        "{err}"
    );
    assert_eq!((task.updates, task.pos), (5, 9));
    assert!(
        err.contains(&out.join("checkpoint").display().to_string()),
        "{err}"
    );
    let (w, at) = saved(&out);
    assert_eq!(at, 4);
    assert!(w.iter().all(|w| w.is_finite()));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn weights_that_overflow_in_an_update_are_never_saved() {
    let out = tmp("overflow");
    let mut task = Faulty::new();
    task.inf_weight_after = Some(3);
    let mut cfg = config(out.clone(), OnNan::Skip);
    cfg.ckpt_interval = 1;
    let err = run(&mut task, &cfg, &quiet(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at step 3") && err.contains("weights hold inf (tensor `w`, element 1)"),
        "{err}"
    );
    assert!(
        err.contains("not saved") && err.contains("(step 2)"),
        "{err}"
    );
    let (w, at) = saved(&out);
    assert_eq!(at, 2);
    assert!(w.iter().all(|w| w.is_finite()), "{w:?}");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_skipping_run_stops_at_once_when_the_weights_are_no_longer_finite() {
    let out = tmp("poisoned");
    let mut task = Faulty::new();
    // The weight overflows after update 3 (between checkpoints), and the next loss is NaN.
    task.inf_weight_after = Some(3);
    task.nan_loss_from = Some(3);
    let mut cfg = config(out.clone(), OnNan::Skip);
    cfg.ckpt_interval = 100;
    let err = run(&mut task, &cfg, &quiet(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("at step 4") && err.contains("weights hold inf"),
        "{err}"
    );
    assert_eq!(task.pos, 4, "no retries: skipping cannot help");
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn the_loop_validates_its_settings_naming_the_field() {
    let out = tmp("validate");
    let base = config(out.clone(), OnNan::Skip);
    let cases: Vec<(LoopConfig, &str)> = vec![
        (
            LoopConfig {
                grad_clip: -1.0,
                ..base.clone()
            },
            "grad_clip",
        ),
        (
            LoopConfig {
                grad_clip: f32::NAN,
                ..base.clone()
            },
            "grad_clip",
        ),
        (
            LoopConfig {
                max_nan_skips: 0,
                ..base.clone()
            },
            "max_nan_skips",
        ),
        (
            LoopConfig {
                adamw: AdamWConfig {
                    beta2: 1.0,
                    ..AdamWConfig::default()
                },
                ..base.clone()
            },
            "beta2",
        ),
        (
            LoopConfig {
                schedule: Schedule::WarmupCosine {
                    lr: 0.1,
                    min_lr: 0.2,
                    warmup: 2,
                    max_steps: 8,
                },
                ..base.clone()
            },
            "min_lr",
        ),
        (
            LoopConfig {
                max_minutes: Some(-1.0),
                ..base.clone()
            },
            "max_minutes",
        ),
    ];
    for (cfg, field) in cases {
        let err = run(&mut Faulty::new(), &cfg, &quiet(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("invalid {field}:")), "{err}");
    }
    // Stop mode needs no skip budget.
    let cfg = LoopConfig {
        max_nan_skips: 0,
        on_nan: OnNan::Stop,
        ..base
    };
    assert!(cfg.validate().is_ok());
    std::fs::remove_dir_all(&out).ok();
}

fn corpus(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("corpus.txt");
    let text: String = (0..200)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_diverged_gpt_run_names_the_likely_causes_from_its_configuration() {
    let dir = tmp("gpt");
    let cfg = TrainConfig {
        data: Some(corpus(&dir)),
        out: dir.join("run"),
        max_steps: 30,
        batch_size: 2,
        block_size: 16,
        lr: 1e30,
        grad_clip: 0.0,
        warmup_steps: 0,
        n_layer: Some(1),
        n_head: Some(2),
        n_embd: Some(16),
        eval_interval: 100,
        eval_iters: 1,
        ckpt_interval: 1,
        sample_tokens: 0,
        precision: gpt::nn::precision::Precision::Bf16,
        on_nan: OnNan::Stop,
        ..TrainConfig::default()
    };
    let err = gpt::train::train(&cfg, &quiet()).unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err}");
    let err = err.to_string();
    for cause in [
        "usual for preset tiny",
        "warmup_steps = 0",
        "--precision f32",
        "grad_clip = 0",
    ] {
        assert!(err.contains(cause), "{cause}: {err}");
    }
    // Whatever was saved loads (the strict loader refuses non-finite weights).
    if cfg.out.join("checkpoint").exists() {
        gpt::model::checkpoint::load(&cfg.out.join("checkpoint")).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
}
