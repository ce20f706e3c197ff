//! Checkpoints written by the code before the one training loop (commit 1d22efe; see
//! `tests/fixtures/compat/README.md`) still load and resume: GPT in f32 and bf16 (old flat
//! optimizer format) and the encoder-decoder (old two-file optimizer format).
//!
//! Each fixture is a run stopped at step 4 of 6. Resuming it here for the last 2 steps must give
//! what the baseline binary gave for an uninterrupted 6-step run: the same losses and the same
//! final weights (GPT: every weight; encoder-decoder: each tensor's sum and sum of squares),
//! within a float tolerance (the fixtures were made with one thread). That only holds if the
//! weights, both AdamW moments, the step (hence the learning rate), the batch position and the
//! dropout RNG were all restored.

use gpt::io::TensorFile;
use gpt::model::checkpoint;
use gpt::nn::params::ParamLayout;
use gpt::optim::{AdamW, AdamWConfig};
use gpt::train::optim_state::{self, OptimFormat};
use gpt::train::{train, TrainConfig, TrainOptions};
use gpt::translate::checkpoint::load_model;
use gpt::translate::trainer::{train as translate_train, TranslateConfig};
use std::path::{Path, PathBuf};

const FIXTURES: &str = "tests/fixtures/compat";

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-compat-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Copies a fixture directory tree (the fixtures themselves are never written to).
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The losses of steps `from..` in a metrics.jsonl.
fn losses(path: &Path, from: u64) -> Vec<f32> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["step"].as_u64().unwrap() >= from)
        .map(|v| v["loss"].as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tol,
        "{what}: worst relative difference {worst} > {tol}"
    );
}

/// Every tensor of `file` equals the corresponding slice of `flat` (in `layout`) exactly.
fn assert_holds(
    file: &TensorFile,
    layout: &ParamLayout,
    flat: &[f32],
    name: impl Fn(&str) -> String,
) {
    for e in layout.entries() {
        let (shape, data) = file.read_f32(&name(&e.name)).unwrap();
        assert_eq!(shape, e.shape, "{}", e.name);
        assert!(data == e.param.of(flat), "{} differs from the file", e.name);
    }
}

fn gpt_fixture(precision: &str) {
    let fixture = Path::new(FIXTURES).join(format!("gpt_{precision}"));
    let ck = fixture.join("checkpoint");
    // Loads: the weights are what the file holds, and the old flat moments are read.
    let model = checkpoint::load(&ck).unwrap();
    let file = TensorFile::open(&ck.join(checkpoint::WEIGHTS_FILE)).unwrap();
    assert_eq!(file.metadata()["precision"], precision);
    assert_holds(&file, model.layout(), &model.params.data, |n| {
        checkpoint::hf_name(n, checkpoint::hf_family(&model.config))
    });
    let mut opt = AdamW::new(model.layout(), AdamWConfig::default());
    let format = optim_state::load(&ck, model.layout(), &mut opt, 4).unwrap();
    assert_eq!(format, OptimFormat::LegacyFlat);
    let old = TensorFile::open(&ck.join("optimizer.safetensors")).unwrap();
    assert_eq!(old.read_f32("m").unwrap().1, opt.m);
    assert_eq!(old.read_f32("v").unwrap().1, opt.v);
    assert!(
        opt.v.iter().any(|&x| x > 0.0),
        "moments were saved non-zero"
    );

    // Resumes to the baseline's uninterrupted run.
    let out = tmp(&format!("gpt-{precision}"));
    copy_dir(&fixture, &out);
    // A resume runs the saved configuration with the changes asked for (here the budget).
    let cfg = TrainConfig {
        out: out.clone(),
        max_steps: 6,
        ..TrainConfig::saved_in(&out).unwrap()
    };
    let opts = TrainOptions {
        resume: true,
        quiet: true,
        ..TrainOptions::default()
    };
    let run = train(&cfg, &opts).unwrap();
    assert_eq!((run.step, run.losses.len()), (6, 2));
    let expected = Path::new(FIXTURES).join(format!("gpt_{precision}_expected_metrics.jsonl"));
    assert_close(
        "losses of steps 5-6",
        &run.losses,
        &losses(&expected, 5),
        1e-5,
    );
    // metrics.jsonl continues the fixture's.
    assert_eq!(losses(&out.join("metrics.jsonl"), 1).len(), 6);
    let got = checkpoint::load(&out.join("checkpoint")).unwrap();
    let want = TensorFile::open(
        &Path::new(FIXTURES).join(format!("gpt_{precision}_expected_step6.safetensors")),
    )
    .unwrap();
    let mut want_flat = vec![0.0; got.params.data.len()];
    checkpoint::read_layout(&want, got.layout(), &mut want_flat, |n| {
        vec![checkpoint::hf_name(n, checkpoint::hf_family(&got.config))]
    })
    .unwrap();
    assert_close("weights after step 6", &got.params.data, &want_flat, 1e-5);
    // The new checkpoint is in the new format and resumes in turn.
    let new = TensorFile::open(&out.join("checkpoint/optimizer.safetensors")).unwrap();
    assert_eq!(new.metadata()["version"], "2");
    assert!(new.get("m.wte.weight").is_some() && new.get("m").is_none());
    let more = train(
        &TrainConfig {
            max_steps: 7,
            ..cfg
        },
        &opts,
    )
    .unwrap();
    assert_eq!(more.step, 7);
    assert!(more.losses[0].is_finite());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn gpt_f32_checkpoint_of_the_old_code_loads_and_resumes_to_the_baselines_weights() {
    gpt_fixture("f32");
}

#[test]
fn gpt_bf16_checkpoint_of_the_old_code_loads_and_resumes_to_the_baselines_weights() {
    gpt_fixture("bf16");
}

#[test]
fn translation_checkpoint_of_the_old_code_loads_and_resumes_to_the_baselines_weights() {
    let fixture = Path::new(FIXTURES).join("translate");
    let ck = fixture.join("checkpoints/step_0000004");
    let (model, _tok) = load_model(&fixture).unwrap();
    let file = TensorFile::open(&ck.join("model.safetensors")).unwrap();
    assert_holds(&file, model.layout(), &model.params.data, str::to_string);
    let mut opt = AdamW::new(model.layout(), AdamWConfig::default());
    let format = optim_state::load(&ck, model.layout(), &mut opt, 4).unwrap();
    assert_eq!(format, OptimFormat::LegacyTwoFiles);
    let m_file = TensorFile::open(&ck.join("optimizer.m.safetensors")).unwrap();
    assert_holds(&m_file, model.layout(), &opt.m, |n| format!("m.{n}"));

    let out = tmp("translate");
    copy_dir(&fixture, &out);
    let cfg = TranslateConfig {
        out: out.clone(),
        max_steps: 6,
        ..TranslateConfig::saved_in(&out).unwrap()
    };
    let opts = TrainOptions {
        resume: true,
        quiet: true,
        ..TrainOptions::default()
    };
    let run = translate_train(&cfg, &opts).unwrap();
    assert_eq!((run.step, run.losses.len()), (6, 2));
    let expected = Path::new(FIXTURES).join("translate_expected_metrics.jsonl");
    assert_close(
        "losses of steps 5-6",
        &run.losses,
        &losses(&expected, 5),
        1e-5,
    );
    let (got, _) = load_model(&out).unwrap();
    assert!(run
        .checkpoint
        .unwrap()
        .ends_with("checkpoints/step_0000006"));
    let stats: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(FIXTURES).join("translate_expected_step6_stats.json")).unwrap(),
    )
    .unwrap();
    for e in got.layout().entries() {
        let x = e.param.of(&got.params.data);
        let s = &stats[&e.name];
        let sum: f64 = x.iter().map(|&v| v as f64).sum();
        let sumsq: f64 = x.iter().map(|&v| (v as f64).powi(2)).sum();
        assert_eq!(s["len"].as_u64().unwrap() as usize, x.len(), "{}", e.name);
        let (ws, wq) = (s["sum"].as_f64().unwrap(), s["sumsq"].as_f64().unwrap());
        assert!(
            (sum - ws).abs() <= 1e-4 * (1.0 + wq.sqrt()) && (sumsq - wq).abs() <= 1e-4 * (1.0 + wq),
            "{}: sum {sum} vs {ws}, sum of squares {sumsq} vs {wq}",
            e.name
        );
    }
    // Only the newest checkpoint is kept (keep_checkpoints = 1, from the saved configuration).
    let kept = gpt::translate::checkpoint::list_checkpoints(&out).unwrap();
    assert_eq!(kept.len(), 1);
    std::fs::remove_dir_all(&out).ok();
}
