//! `gpt logs`: a log-key GPT trained on synthetic normal sessions (a handful of keys in a fixed
//! grammar) flags the injected anomalies — a session that stops early, keys out of order, a
//! missing key, an unseen key — with both detectors, passes held-out normal sessions, names
//! what it expected, resumes exactly, and rejects bad input with the file named.

use gpt::logs::detect::Rule;
use gpt::logs::model::LogModel;
use gpt::logs::sessions::{parse_sessions, Session};
use gpt::logs::train::{train_logs, LogTrainConfig};
use gpt::rng::Rng;
use gpt::train::TrainOptions;
use std::path::{Path, PathBuf};

/// A normal session: `1 2 (3 4){k} 5 6` with k in 1..=3, sometimes `7` before the end.
fn normal_session(rng: &mut Rng) -> String {
    let mut keys = vec!["1", "2"];
    let k = 1 + (rng.next_u64() % 3) as usize;
    for _ in 0..k {
        keys.extend(["3", "4"]);
    }
    keys.push("5");
    if rng.next_u64().is_multiple_of(2) {
        keys.push("7");
    }
    keys.push("6");
    keys.join(" ")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

fn config(dir: &Path) -> LogTrainConfig {
    let mut rng = Rng::new(7);
    let lines: Vec<String> = (0..400).map(|_| normal_session(&mut rng)).collect();
    let sessions = dir.join("normal.txt");
    std::fs::write(&sessions, lines.join("\n")).unwrap();
    LogTrainConfig {
        sessions,
        out: dir.join("run"),
        window: 16,
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        epochs: 8,
        batch_size: 32,
        lr: 1e-2,
        top_g: 1,
        target_fpr: 0.0,
        ..LogTrainConfig::default()
    }
}

fn sessions(text: &str) -> Vec<Session> {
    parse_sessions(text).0
}

#[test]
fn injected_anomalies_are_flagged_and_normal_sessions_pass() {
    let dir = tmp("detect");
    let cfg = config(&dir);
    let o = train_logs(&cfg, &quiet()).unwrap();
    assert_eq!((o.sessions, o.valid, o.keys), (360, 40, 7));
    assert!(o.detector.threshold.is_some());
    let mut model = LogModel::load(&cfg.out).unwrap();

    let normal = sessions("1 2 3 4 5 6\n1 2 3 4 3 4 5 7 6\n1 2 3 4 3 4 3 4 5 6\n");
    let abnormal = sessions(concat!(
        "1 2 3 4\n",       // stops early: `</s>` after 4
        "1 2 4 3 5 6\n",   // out of order
        "1 2 3 4 6\n",     // 5 missing
        "1 2 3 4 9 5 6\n", // 9 never seen
        "1 2 3 4 5 6 6\n", // a key after the end
    ));
    // Surprisal (threshold: the largest score of the validation sessions) flags all five.
    let t = model.threshold(None).unwrap();
    let n = model.detect(&normal, Rule::Surprisal, 2, t).unwrap();
    assert!(n.iter().all(|v| !v.anomalous), "normal: {n:?}");
    let a = model.detect(&abnormal, Rule::Surprisal, 2, t).unwrap();
    assert!(a.iter().all(|v| v.anomalous), "abnormal: {a:?}");
    // Where and what: the early stop is flagged at the end, where 3 or 5 was expected.
    let stop = &a[0].flags[0];
    assert_eq!((stop.position, stop.key.as_str()), (5, "</s>"));
    assert!(stop.expected.contains(&"5".to_string()), "{stop:?}");
    // The missing 5: flagged at the 6 that came instead.
    let missing = &a[2].flags[0];
    assert_eq!((missing.position, missing.key.as_str()), (5, "6"));
    assert!(missing.expected.contains(&"5".to_string()), "{missing:?}");
    // The unseen key is reported as unseen.
    assert_eq!(a[3].unseen, ["9"]);
    assert!(a[3].flags.iter().any(|f| f.key == "9" && f.nll.is_none()));

    // Top-2 (the grammar offers at most two continuations anywhere): normal sessions pass,
    // and a true key outside the two likely ones is flagged. A wrong key among near-impossible
    // ones may rank second, so the out-of-order and extra-key sessions are the surprisal
    // detector's to catch.
    let n = model.detect(&normal, Rule::TopG, 2, f64::INFINITY).unwrap();
    assert!(n.iter().all(|v| !v.anomalous), "normal: {n:?}");
    let a = model
        .detect(&abnormal, Rule::TopG, 2, f64::INFINITY)
        .unwrap();
    for i in [0, 2, 3] {
        assert!(
            a[i].anomalous,
            "top-g missed {}: {:?}",
            abnormal[i].line, a[i]
        );
    }
    assert_eq!(a[0].flags[0].key, "</s>");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_interrupted_run_resumes_to_the_same_model() {
    let dir = tmp("resume");
    let mut cfg = config(&dir);
    cfg.epochs = 2;
    train_logs(&cfg, &quiet()).unwrap();
    let whole = std::fs::read(cfg.out.join("checkpoint/model.safetensors")).unwrap();
    let stopped = TrainOptions {
        stop_at: Some(11),
        overwrite: true,
        ..quiet()
    };
    let o = train_logs(&cfg, &stopped).unwrap();
    assert!(o.train.stopped_early && o.train.step == 11);
    let resumed = TrainOptions {
        resume: true,
        ..quiet()
    };
    train_logs(&cfg, &resumed).unwrap();
    let again = std::fs::read(cfg.out.join("checkpoint/model.safetensors")).unwrap();
    assert!(
        whole == again,
        "resumed weights differ from an uninterrupted run"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_names_the_file_or_flag() {
    let dir = tmp("bad");
    let mut cfg = config(&dir);
    cfg.sessions = dir.join("missing.txt");
    let e = train_logs(&cfg, &quiet()).err().unwrap().to_string();
    assert!(e.contains("missing.txt"), "{e}");

    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "\n \n").unwrap();
    cfg.sessions = empty;
    let e = train_logs(&cfg, &quiet()).err().unwrap().to_string();
    assert!(e.contains("empty.txt") && e.contains("no session"), "{e}");

    let mut c = config(&dir);
    c.n_head = 3;
    let e = train_logs(&c, &quiet()).err().unwrap().to_string();
    assert!(e.contains("--heads"), "{e}");

    let e = LogModel::load(&dir).err().unwrap().to_string();
    assert!(e.contains("keys.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A raw log of interleaved block sessions: `open`, 1–3 `write`s, `close` per block.
fn raw_log(blocks: std::ops::Range<u64>, rng: &mut Rng) -> String {
    let mut lines = Vec::new();
    for b in blocks {
        lines.push(format!("open file for blk_{b} by user {}", rng.below(50)));
        for _ in 0..=rng.below(3) {
            lines.push(format!(
                "write {} bytes to blk_{b}",
                512 * (1 + rng.below(8))
            ));
        }
        lines.push(format!("close blk_{b} after {} ms", rng.below(900)));
    }
    lines.join("\n") + "\n"
}

fn gpt(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

/// From raw logs to verdicts with the commands: `logs parse`, `logs train --parsed
/// --session-key`, `logs detect --input` on a new log.
#[test]
fn raw_logs_to_verdicts_through_the_commands() {
    let dir = tmp("e2e");
    let mut rng = Rng::new(3);
    let train_log = dir.join("train.log");
    std::fs::write(&train_log, raw_log(0..300, &mut rng)).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let parsed = dir.join("parsed");
    let out = gpt(&[
        "logs",
        "parse",
        "--input",
        &s(&train_log),
        "--out",
        &s(&parsed),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let model = dir.join("model");
    let out = gpt(&[
        "logs",
        "train",
        "--parsed",
        &s(&parsed),
        "--session-key",
        r"blk_\d+",
        "--out",
        &s(&model),
        "--epochs",
        "20",
        "--target-fpr",
        "0",
        "--width",
        "32",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // New blocks: two normal, one that stops before `close`, one with a new message type.
    let mut new = raw_log(1000..1002, &mut rng);
    new.push_str("open file for blk_2000 by user 7\nwrite 1024 bytes to blk_2000\n");
    new.push_str("open file for blk_3000 by user 9\nwrite 512 bytes to blk_3000\n");
    new.push_str("delete blk_3000 forcibly\nclose blk_3000 after 5 ms\n");
    let new_log = dir.join("new.log");
    std::fs::write(&new_log, new).unwrap();
    let out = gpt(&[
        "logs",
        "detect",
        "--model",
        &s(&model),
        "--input",
        &s(&new_log),
        "--detector",
        "surprisal",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let flagged: Vec<(&str, bool)> = verdicts
        .iter()
        .map(|v| {
            (
                v["session"].as_str().unwrap(),
                v["anomalous"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        flagged,
        [
            ("blk_1000", false),
            ("blk_1001", false),
            ("blk_2000", true),
            ("blk_3000", true)
        ]
    );
    assert_eq!(verdicts[3]["unseen"], serde_json::json!(["unseen"]));

    // Bad input: a model without a parser cannot read raw logs, and says so.
    let plain = config(&dir);
    train_logs(&plain, &quiet()).unwrap();
    let out = gpt(&[
        "logs",
        "detect",
        "--model",
        &s(&plain.out),
        "--input",
        &s(&new_log),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("log_source.json") && err.contains("--parsed"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
