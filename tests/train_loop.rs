//! The one training loop with a task that is neither GPT nor translation (a least-squares fit
//! with its own data cursor): what a new task must implement, and what the loop guarantees for
//! any task (exact resume in both checkpoint layouts, pruning, the NaN stop naming the field).

use gpt::error::Result;
use gpt::nn::params::{Init, ParamLayout, Params};
use gpt::optim::{AdamWConfig, Schedule};
use gpt::train::checkpoint::{state_field, CheckpointLayout};
use gpt::train::trainer::{run, LoopConfig, Resume};
use gpt::train::{MicroStep, OnNan, Task, TrainOptions};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Fits `w` to targets `t_k = k mod 7` presented one per micro-batch; the data position is its
/// resume state.
struct Fit {
    params: Params,
    pos: usize,
    blow_up: bool,
}

impl Fit {
    fn new() -> Self {
        let mut layout = ParamLayout::new();
        layout.add("w", &[3], true, Init::Zeros).unwrap();
        Fit {
            params: Params::zeros(layout),
            pos: 0,
            blow_up: false,
        }
    }
}

impl Task for Fit {
    fn params(&mut self) -> &mut Params {
        &mut self.params
    }
    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let t = (self.pos % 7) as f32;
        self.pos += 1;
        let mut loss = 0.0;
        for (w, g) in self.params.data.iter().zip(self.params.grad.iter_mut()) {
            loss += 0.5 * (w - t) * (w - t);
            *g += scale * (w - t);
        }
        if self.blow_up && self.pos > 6 {
            loss = f32::NAN;
        }
        Ok(MicroStep { loss, tokens: 1 })
    }
    fn evaluate(&mut self) -> Result<Option<f32>> {
        Ok(Some(
            self.params.data.iter().map(|w| (w - 3.0).powi(2)).sum(),
        ))
    }
    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        gpt::io::write_f32(
            &dir.join("model.safetensors"),
            &[("w".into(), vec![3], &self.params.data[..])],
            meta,
        )?;
        // A numbered checkpoint is a model directory: list_checkpoints looks for config.json.
        gpt::io::write_atomic(&dir.join("config.json"), b"{}")
    }
    fn state(&self) -> Result<Map<String, Value>> {
        Ok([("pos".to_string(), Value::from(self.pos))]
            .into_iter()
            .collect())
    }
    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        let f = gpt::io::TensorFile::open(&dir.join("model.safetensors"))?;
        let t = f.find(&["w"])?.clone();
        f.read_f32_into(&t, &[3], &mut self.params.data)?;
        self.pos = state_field(dir, state, "pos")?;
        Ok(())
    }
}

fn config(out: PathBuf, checkpoints: CheckpointLayout) -> LoopConfig {
    LoopConfig {
        out,
        max_steps: 8,
        grad_accum: 2,
        grad_clip: 1.0,
        schedule: Schedule::WarmupCosine {
            lr: 0.1,
            min_lr: 0.01,
            warmup: 2,
            max_steps: 8,
        },
        adamw: AdamWConfig::default(),
        eval_interval: 3,
        ckpt_interval: 2,
        max_minutes: None,
        checkpoints,
        lr_field: "lr",
        on_nan: OnNan::Skip,
        max_nan_skips: 5,
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

#[test]
fn any_task_resumes_exactly_in_both_layouts() {
    let root = std::env::temp_dir().join(format!("gpt-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    for layout in [
        CheckpointLayout::Single,
        CheckpointLayout::Numbered { keep: 2 },
    ] {
        let straight_cfg = config(root.join(format!("{layout:?}-straight")), layout);
        let mut straight = Fit::new();
        let full = run(&mut straight, &straight_cfg, &quiet(), None).unwrap();
        assert_eq!(full.losses.len(), 8);
        let cfg = config(root.join(format!("{layout:?}-split")), layout);
        let stop = TrainOptions {
            stop_at: Some(3),
            ..quiet()
        };
        let first = run(&mut Fit::new(), &cfg, &stop, None).unwrap();
        assert!(first.stopped_early);
        let resume = Resume::find(&cfg.out, layout).unwrap();
        assert_eq!(
            (
                resume.state.step,
                resume.state.field::<usize>("pos").unwrap()
            ),
            (3, 6)
        );
        let mut resumed = Fit::new();
        let rest = run(&mut resumed, &cfg, &quiet(), Some(&resume)).unwrap();
        assert_eq!([first.losses, rest.losses].concat(), full.losses);
        assert_eq!(resumed.params.data, straight.params.data);
        if let CheckpointLayout::Numbered { keep } = layout {
            let kept = gpt::train::checkpoint::list_checkpoints(&cfg.out).unwrap();
            assert_eq!(kept.len(), keep);
            assert!(kept[1].ends_with("step_0000008"));
        }
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_nan_loss_stops_naming_the_step_the_field_and_the_checkpoint() {
    let out = std::env::temp_dir().join(format!("gpt-loop-nan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let mut task = Fit::new();
    task.blow_up = true;
    let err = run(
        &mut task,
        &config(out.clone(), CheckpointLayout::Single),
        &quiet(),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("lr") && err.contains("at step 4") && err.contains("checkpoint"),
        "{err}"
    );
    // The checkpoint of step 2 is intact.
    assert_eq!(
        Resume::find(&out, CheckpointLayout::Single)
            .unwrap()
            .state
            .step,
        2
    );
    std::fs::remove_dir_all(&out).ok();
}
