//! `gpt translate` training: exact resume (losses and weights), checkpoint loading, averaging,
//! and bad input (strict TSV errors, a model directory that is not an encoder-decoder).

mod common;

use gpt::translate::checkpoint::{average, list_checkpoints, load_model, resolve_model_dir};
use gpt::translate::decode::DecodeConfig;
use gpt::translate::trainer::{train, TranslateConfig, TranslateOptions};
use gpt::translate::translate_lines;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-translate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_data(dir: &Path) -> (PathBuf, PathBuf) {
    common::translation_pairs::write_pairs(dir)
}

fn config(dir: &Path, out: &str) -> TranslateConfig {
    let (train, valid) = write_data(dir);
    TranslateConfig {
        preset: "transformer-tiny".into(),
        train,
        valid,
        out: dir.join(out),
        vocab_size: 300,
        max_len: 20,
        max_tokens: 64,
        grad_accum: 2,
        max_steps: 6,
        warmup_steps: 3,
        dropout: Some(0.1),
        eval_interval: 2,
        ckpt_interval: 2,
        keep_checkpoints: 2,
        ..TranslateConfig::default()
    }
}

fn quiet() -> TranslateOptions {
    TranslateOptions {
        quiet: true,
        ..TranslateOptions::default()
    }
}

#[test]
fn resume_is_exact_and_checkpoints_load_and_average() {
    let dir = tmp("resume");
    let full = train(&config(&dir, "full"), &quiet()).unwrap();
    assert_eq!(full.step, 6);
    assert!(full.losses.iter().all(|l| l.is_finite()));
    let cfg = config(&dir, "split");
    let first = train(
        &cfg,
        &TranslateOptions {
            stop_at: Some(3),
            ..quiet()
        },
    )
    .unwrap();
    assert!(first.stopped_early);
    let rest = train(
        &cfg,
        &TranslateOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    let joined: Vec<f32> = first.losses.iter().chain(&rest.losses).copied().collect();
    assert_eq!(joined, full.losses);
    let (a, _) = load_model(&dir.join("full")).unwrap();
    let (b, tok) = load_model(&dir.join("split")).unwrap();
    assert_eq!(a.params.data, b.params.data);
    // Two checkpoints kept; averaging them gives their mean.
    let ckpts = list_checkpoints(&dir.join("full")).unwrap();
    assert_eq!(ckpts.len(), 2);
    average(&ckpts, &dir.join("avg")).unwrap();
    let (avg, _) = load_model(&dir.join("avg")).unwrap();
    let (c4, _) = load_model(&ckpts[0]).unwrap();
    let i = 7;
    let mean = (c4.params.data[i] + a.params.data[i]) / 2.0;
    assert!((avg.params.data[i] - mean).abs() < 1e-6);
    // Translating text end to end.
    let mut m = b;
    let lines = vec!["uno dos".to_string(), String::new()];
    let (out, _) = translate_lines(&mut m, &tok, &lines, &DecodeConfig::default(), 4).unwrap();
    assert_eq!(out.len(), 2);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_errors_name_the_problem() {
    let dir = tmp("bad");
    let mut cfg = config(&dir, "out");
    let bad = dir.join("bad.tsv");
    std::fs::write(&bad, "hola\thello\nsin tabulador\nadiós\t\n").unwrap();
    cfg.train = bad;
    cfg.strict = true;
    let err = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(err.contains("bad.tsv:2: no tab"), "{err}");
    // A GPT checkpoint directory is not an encoder-decoder.
    let gpt_dir = dir.join("gpt");
    std::fs::create_dir_all(&gpt_dir).unwrap();
    std::fs::write(gpt_dir.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = load_model(&gpt_dir).err().unwrap().to_string();
    assert!(
        err.contains("not an encoder-decoder model (model_type `gpt2`"),
        "{err}"
    );
    let err = resolve_model_dir(&dir.join("nothing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a model directory"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
