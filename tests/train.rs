//! Training-loop guarantees: exact resume (losses and final weights), checkpoints that reload
//! to the same logits, `--json` lines, and clear errors for bad data and diverging runs.

use gpt::model::checkpoint;
use gpt::rng::Rng;
use gpt::train::{train, TrainConfig, TrainOptions};
use std::path::{Path, PathBuf};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.txt");
    let text: String = (0..400)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn small_config(dir: &Path) -> TrainConfig {
    TrainConfig {
        preset: "tiny".into(),
        data: Some(corpus(dir)),
        tokenizer: "char".into(),
        out: dir.join("run"),
        max_steps: 8,
        batch_size: 4,
        block_size: 16,
        lr: 3e-3,
        warmup_steps: 2,
        dropout: Some(0.1),
        n_layer: Some(2),
        n_head: Some(2),
        n_embd: Some(32),
        eval_interval: 3,
        eval_iters: 2,
        ckpt_interval: 100,
        sample_tokens: 0,
        ..TrainConfig::default()
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

#[test]
fn resume_gives_the_losses_and_weights_of_an_uninterrupted_run() {
    let dir = tmpdir("resume");
    let mut cfg = small_config(&dir);
    cfg.out = dir.join("straight");
    let full = train(&cfg, &quiet()).unwrap();
    assert_eq!(full.losses.len(), 8);
    assert!(
        full.losses[7] < full.losses[0],
        "loss should fall: {:?}",
        full.losses
    );

    cfg.out = dir.join("interrupted");
    let first = train(
        &cfg,
        &TrainOptions {
            stop_at: Some(4),
            ..quiet()
        },
    )
    .unwrap();
    assert!(first.stopped_early);
    assert_eq!(first.losses, full.losses[..4]);
    let second = train(
        &cfg,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    assert_eq!(second.step, 8);
    assert_eq!(
        second.losses,
        full.losses[4..],
        "resumed losses must equal the uninterrupted run's"
    );
    let a = checkpoint::load(&dir.join("straight/checkpoint")).unwrap();
    let b = checkpoint::load(&dir.join("interrupted/checkpoint")).unwrap();
    assert!(
        a.params.data == b.params.data,
        "final weights differ after resume"
    );
    // Metrics continue without duplicate steps; the plot exists.
    let metrics = std::fs::read_to_string(dir.join("interrupted/metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=8).collect::<Vec<_>>());
    assert!(dir.join("interrupted/loss.png").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn checkpoint_reloads_to_identical_logits() {
    let dir = tmpdir("ckpt");
    let mut cfg = small_config(&dir);
    cfg.max_steps = 2;
    train(&cfg, &quiet()).unwrap();
    let ck = cfg.out.join("checkpoint");
    let mut a = checkpoint::load(&ck).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ck.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["n_embd"], 32);
    // Save again and reload: byte-identical weights and equal logits.
    checkpoint::save(&a, &dir.join("copy"), None).unwrap();
    let mut b = checkpoint::load(&dir.join("copy")).unwrap();
    assert_eq!(a.params.data, b.params.data);
    let ids: Vec<u32> = (0..16).map(|i| i % 20).collect();
    let mut rng = Rng::new(0);
    a.forward(&ids, 1, 16, false, &mut rng).unwrap();
    b.forward(&ids, 1, 16, false, &mut rng).unwrap();
    assert_eq!(a.logits, b.logits);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tmpdir("bad");
    let mut cfg = small_config(&dir);
    let short = dir.join("short.txt");
    std::fs::write(&short, "tiny").unwrap();
    cfg.data = Some(short);
    let err = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(
        err.contains("block_size") && err.contains("tokens"),
        "{err}"
    );

    let mut cfg = small_config(&dir);
    cfg.data = Some(dir.join("missing.txt"));
    let err = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(err.contains("missing.txt"), "{err}");

    let mut cfg = small_config(&dir);
    cfg.n_head = Some(3);
    let err = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(err.contains("divisible"), "{err}");

    let mut cfg = small_config(&dir);
    cfg.out = dir.join("nothing-here");
    let err = train(
        &cfg,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no checkpoint"), "{err}");

    let bad_utf8 = dir.join("latin1.txt");
    std::fs::write(&bad_utf8, b"caf\xe9 au lait, encore et encore et encore").unwrap();
    let mut cfg = small_config(&dir);
    cfg.data = Some(bad_utf8);
    let err = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(err.contains("latin1.txt") && err.contains("UTF-8"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn diverging_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let dir = tmpdir("nan");
    let mut cfg = small_config(&dir);
    cfg.lr = 1e30;
    cfg.grad_clip = 0.0;
    cfg.warmup_steps = 1;
    cfg.max_steps = 50;
    cfg.ckpt_interval = 1;
    let err = train(&cfg, &quiet()).unwrap_err().to_string();
    assert!(
        err.contains("at step") && err.contains("checkpoint"),
        "{err}"
    );
    // The checkpoint on disk is from a finite step and loads.
    assert!(checkpoint::load(&cfg.out.join("checkpoint")).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cli_json_lines_have_step_loss_and_throughput() {
    let dir = tmpdir("cli");
    let data = corpus(&dir);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args([
            "train",
            "--json",
            "--max-steps",
            "3",
            "--batch-size",
            "2",
            "--block-size",
            "16",
            "--n-layer",
            "1",
        ])
        .args([
            "--eval-interval",
            "3",
            "--eval-iters",
            "1",
            "--sample-tokens",
            "0",
            "--threads",
            "1",
        ])
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["step"], i as u64 + 1);
        assert!(l["loss"].as_f64().unwrap() > 0.0 && l["tokens_per_sec"].as_f64().unwrap() > 0.0);
    }
    assert!(lines[2]["val_loss"].as_f64().is_some());
    // An unknown TOML key is an error naming it.
    let toml = dir.join("run.toml");
    std::fs::write(&toml, "max_step = 3\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["train", "--config"])
        .arg(&toml)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_step"));
    // Sampling from the checkpoint works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args([
            "sample",
            "--max-new-tokens",
            "20",
            "--prompt",
            "line",
            "--model",
        ])
        .arg(dir.join("run"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("line"));
    std::fs::remove_dir_all(&dir).ok();
}
