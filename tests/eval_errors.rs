//! Bad input to `gpt eval`: an unknown task (the known ones listed), a task file missing a
//! field or with an unknown key, a template naming a field the data lacks (task file, line,
//! field, data file and line), an empty data file, K larger than the few-shot pool, and a
//! request longer than the model's context (cut on the left as lm-eval does, and counted).

use gpt::eval::evaluate::prepare;
use gpt::eval::scorer::{score, score_naive};
use gpt::eval::{task, EvalOptions};
use gpt::tokenizer::AnyTokenizer;
use std::path::{Path, PathBuf};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-eval-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("mydata")).unwrap();
    d
}

const TASK: &str = "name = \"mine\"
output_type = \"multiple_choice\"
dataset = \"mydata\"
test_split = \"test.jsonl\"
training_split = \"train.jsonl\"
doc_to_text = \"Q: {question}\\nA:\"
doc_to_target = \"{label}\"
doc_to_choice = \"{choices}\"
metrics = [\"acc\", \"acc_norm\"]
";

const DOC: &str = r#"{"question": "Is it?", "choices": ["yes", "no"], "label": 0}"#;

fn setup(name: &str, task_text: &str, test: &str, train: &str) -> (PathBuf, task::TaskDef) {
    let d = tmp(name);
    std::fs::write(d.join("mytask.toml"), task_text).unwrap();
    std::fs::write(d.join("mydata/test.jsonl"), test).unwrap();
    std::fs::write(d.join("mydata/train.jsonl"), train).unwrap();
    let t = task::load(&d.join("mytask.toml")).unwrap();
    (d, t)
}

fn prep(t: &task::TaskDef, k: usize) -> gpt::Result<gpt::eval::Prepared> {
    let tok = AnyTokenizer::load("gpt2").unwrap();
    let opts = EvalOptions {
        num_fewshot: k,
        ..EvalOptions::default()
    };
    prepare(t, &tok, 128, 50256, &opts)
}

#[test]
fn unknown_task_lists_the_known_ones() {
    let e = task::builtin("hellaswag").unwrap_err().to_string();
    for known in [
        "wikitext",
        "lambada_openai",
        "arc_easy",
        "arc_challenge",
        "piqa",
        "copa",
    ] {
        assert!(e.contains(known), "{e}");
    }
    assert!(e.contains("hellaswag"), "{e}");
}

#[test]
fn builtin_tasks_parse() {
    for name in task::builtin_names() {
        task::builtin(name).unwrap();
    }
}

#[test]
fn missing_field_and_unknown_key_name_the_file() {
    let text = TASK.replace("doc_to_text = \"Q: {question}\\nA:\"\n", "");
    let e = task::parse(&text, Path::new("my.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("my.toml") && e.contains("doc_to_text"), "{e}");
    let text = format!("{TASK}doc_to_txet = \"x\"\n");
    let e = task::parse(&text, Path::new("my.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("my.toml") && e.contains("doc_to_txet") && e.contains("line 10"),
        "{e}"
    );
    let text = TASK.replace("\"acc_norm\"", "\"bleu\"");
    let e = task::parse(&text, Path::new("my.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("my.toml:9: metrics") && e.contains("bleu"),
        "{e}"
    );
}

#[test]
fn template_naming_a_missing_field_names_file_line_and_field() {
    let text = TASK.replace("{question}", "{query}");
    let (d, t) = setup("field", &text, &format!("{DOC}\n"), &format!("{DOC}\n"));
    let e = prep(&t, 0).err().unwrap().to_string();
    let toml = d.join("mytask.toml").display().to_string();
    assert!(e.contains(&format!("{toml}:6: doc_to_text")), "{e}");
    assert!(
        e.contains("`query`") && e.contains("test.jsonl line 1"),
        "{e}"
    );
    assert!(
        e.contains("question"),
        "the record's fields are listed: {e}"
    );
}

#[test]
fn empty_data_file_is_an_error() {
    let (_d, t) = setup("empty", TASK, "\n", &format!("{DOC}\n"));
    let e = prep(&t, 0).err().unwrap().to_string();
    assert!(
        e.contains("test.jsonl") && e.contains("no documents"),
        "{e}"
    );
}

#[test]
fn more_shots_than_the_pool_is_an_error() {
    let two = format!("{DOC}\n{}\n", DOC.replace("Is it?", "Is it not?"));
    let (_d, t) = setup("pool", TASK, &format!("{DOC}\n"), &two);
    assert!(prep(&t, 2).is_ok());
    let e = prep(&t, 3).err().unwrap().to_string();
    assert!(
        e.contains("--num-fewshot") && e.contains("has 2 documents"),
        "{e}"
    );
}

#[test]
fn requests_longer_than_the_context_are_cut_and_counted() {
    let long = "word ".repeat(300);
    let doc = DOC.replace("Is it?", &long);
    let (_d, t) = setup(
        "long",
        TASK,
        &format!("{doc}\n{DOC}\n"),
        &format!("{DOC}\n"),
    );
    let p = prep(&t, 0).unwrap();
    assert_eq!(p.truncated, 2, "both choices of the long document");
    for r in &p.requests {
        assert!(r.context.len() + r.continuation.len() <= 129);
    }
    let model = gpt::model::inference::InferenceModel::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hf_gpt2"
    )))
    .unwrap();
    let got = score(&model, &p.requests, 4, &mut |_| {}).unwrap();
    for (r, g) in p.requests.iter().zip(got) {
        assert!((g.ll - score_naive(&model, r).unwrap().ll).abs() < 1e-4);
    }
}

#[test]
fn cli_unknown_task_exits_with_the_list() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["eval", "--model", "/nonexistent", "--tasks", "nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown task `nope`") && err.contains("arc_easy"),
        "{err}"
    );
}
