//! Bad input to `gpt finetune` (and, on the same tiny base, exact resume): a label missing or not in the label set, an empty text, a
//! choice list of the wrong length, a base model without a tokenizer, a `--task` that does not
//! match the records. Each is an error naming the file and line (or the directory), and nothing
//! is written; with `skip_bad` bad lines are skipped and counted and the run completes.

mod common;

use common::finetune_base::{base, quiet, write};
use gpt::finetune::{finetune, Classifier, FinetuneConfig, TaskKind};
use gpt::train::TrainOptions;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    common::finetune_base::tmp("ft-err", name)
}

fn cfg(root: &Path, task: TaskKind, train: PathBuf, valid: Option<PathBuf>) -> FinetuneConfig {
    FinetuneConfig {
        model: root.join("base"),
        task,
        train,
        valid,
        out: root.join("out"),
        max_steps: Some(2),
        batch_size: 2,
        ..FinetuneConfig::default()
    }
}

/// Runs and expects an error containing every one of `parts`, and no output directory.
fn fails(c: &FinetuneConfig, parts: &[&str]) {
    let err = finetune(c, &quiet()).expect_err("should fail").to_string();
    for p in parts {
        assert!(err.contains(p), "`{err}` does not mention `{p}`");
    }
    assert!(!c.out.exists(), "{err}: the output directory was written");
}

const GOOD: [&str; 3] = [
    r#"{"text": "a good one", "label": 1}"#,
    r#"{"text": "bad", "label": 0}"#,
    r#"{"text": "fine", "label": 1}"#,
];

#[test]
fn bad_records_name_file_and_line_and_write_nothing() {
    let root = tmp("records");
    base(&root.join("base"), true);
    let c = TaskKind::Classify;

    let f = write(&root, "nolabel.jsonl", &[GOOD[0], r#"{"text": "x"}"#]);
    fails(
        &cfg(&root, c, f, None),
        &["nolabel.jsonl", "line 2", "label"],
    );

    let f = write(
        &root,
        "empty.jsonl",
        &[GOOD[0], GOOD[1], r#"{"text": "  ", "label": 0}"#],
    );
    fails(
        &cfg(&root, c, f, None),
        &["empty.jsonl", "line 3", "`text` is empty"],
    );

    let train = write(&root, "train.jsonl", &GOOD);
    let valid = write(
        &root,
        "valid.jsonl",
        &[GOOD[0], r#"{"text": "odd", "label": 7}"#],
    );
    fails(
        &cfg(&root, c, train.clone(), Some(valid)),
        &["valid.jsonl", "line 2", "label 7"],
    );

    let f = write(
        &root,
        "choice.jsonl",
        &[
            r#"{"question": "a", "choices": ["b", "c"], "label": 0}"#,
            r#"{"question": "a", "choices": ["b", "c", "d"], "label": 0}"#,
        ],
    );
    fails(
        &cfg(&root, TaskKind::Choice, f, None),
        &["choice.jsonl", "line 2", "3 choices"],
    );

    fails(
        &cfg(&root, TaskKind::Entail, train.clone(), None),
        &["train.jsonl", "line 1", "--task classify"],
    );
    // A task mismatch is an error even with skip_bad.
    let mut skip = cfg(&root, TaskKind::Similar, train, None);
    skip.skip_bad = true;
    fails(&skip, &["--task classify"]);

    let f = write(&root, "notjson.jsonl", &[GOOD[0], "text, label"]);
    fails(
        &cfg(&root, c, f, None),
        &["notjson.jsonl", "line 2", "JSON"],
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn base_without_tokenizer_is_an_error() {
    let root = tmp("notok");
    base(&root.join("base"), false);
    let train = write(&root, "train.jsonl", &GOOD);
    fails(
        &cfg(&root, TaskKind::Classify, train, None),
        &["base", "tokenizer"],
    );
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn skip_bad_counts_and_the_result_classifies() {
    let root = tmp("skip");
    base(&root.join("base"), true);
    let train = write(
        &root,
        "train.jsonl",
        &[
            GOOD[0],
            r#"{"text": "x"}"#,
            GOOD[1],
            "oops",
            GOOD[2],
            r#"{"text": "é", "label": 0}"#,
        ],
    );
    let valid = write(
        &root,
        "valid.jsonl",
        &[GOOD[0], r#"{"text": "odd", "label": 7}"#, GOOD[1]],
    );
    let mut c = cfg(&root, TaskKind::Classify, train, Some(valid.clone()));
    c.skip_bad = true;
    let o = finetune(&c, &quiet()).unwrap();
    // Missing label and not JSON when read; `é` is not in the char vocabulary when encoded.
    assert_eq!(o.skipped, (3, 1));
    assert_eq!((o.n_train, o.n_valid, o.train.step), (3, 2, 2));
    let mut clf = Classifier::load(&root.join("out")).unwrap();
    let preds = clf
        .predict_lines(Path::new("-"), "a good one\n{\"text\": \"bad\"}\n")
        .unwrap();
    assert_eq!(preds.len(), 2);
    for p in &preds {
        assert!((p.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        assert_eq!(p.probs.len(), 2);
    }
    let r = gpt::finetune::evaluate_file(&root.join("out"), &valid, true).unwrap();
    assert_eq!((r.n, r.skipped), (2, 1));
    assert!(r.f1.is_some());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn resume_is_exact() {
    let root = tmp("resume");
    base(&root.join("base"), true);
    let lines: Vec<String> = (0..7)
        .map(|i| {
            let word = "abcdefg"[i..i + 1].repeat(i + 1);
            format!(r#"{{"text": "text {word} is", "label": {}}}"#, i % 2)
        })
        .collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let train = write(&root, "train.jsonl", &refs);
    let mut c = cfg(&root, TaskKind::Classify, train, None);
    c.max_steps = Some(6); // two epochs of ⌈7 / 2⌉ = 4 steps: the second reshuffles
    c.lr = 1e-2;
    let whole = finetune(&c, &quiet()).unwrap();
    let w_whole = std::fs::read(c.out.join("checkpoint/model.safetensors")).unwrap();
    std::fs::remove_dir_all(&c.out).unwrap();
    let first = TrainOptions {
        stop_at: Some(3),
        ..quiet()
    };
    let part = finetune(&c, &first).unwrap();
    assert!(part.train.stopped_early);
    let resumed = TrainOptions {
        resume: true,
        ..quiet()
    };
    let rest = finetune(&c, &resumed).unwrap();
    let mut losses = part.train.losses.clone();
    losses.extend(&rest.train.losses);
    assert_eq!(losses, whole.train.losses);
    let w_resumed = std::fs::read(c.out.join("checkpoint/model.safetensors")).unwrap();
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&w_whole).unwrap(),
        safetensors::SafeTensors::deserialize(&w_resumed).unwrap(),
    );
    for (name, t) in a.tensors() {
        assert!(
            t.data() == b.tensor(&name).unwrap().data(),
            "{name} differs after resume"
        );
    }
    std::fs::remove_dir_all(&root).ok();
}
