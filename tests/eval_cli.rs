//! `gpt eval` end to end: lm-eval's results layout in `--json` and `--output` (written whole),
//! the table, and `--data-dir` honoured (a folder without the task's data is an error naming the
//! places looked in).

use gpt::io::save_tokenizer;
use gpt::tokenizer::AnyTokenizer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// tests/fixtures/hf_gpt2 with the GPT-2 tokenizer beside it, in a fresh directory.
fn model_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-eval-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_gpt2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), d.join(f)).unwrap();
    }
    save_tokenizer(&AnyTokenizer::load("gpt2").unwrap(), &d).unwrap();
    d
}

fn gpt(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn json_and_output_follow_lm_evals_layout() {
    let d = model_dir("json");
    let out_file = d.join("results.json");
    let m = d.to_string_lossy().to_string();
    let o = out_file.to_string_lossy().to_string();
    let args = [
        "eval",
        "--model",
        &m,
        "--tasks",
        "copa,arc_easy",
        "--limit",
        "5",
        "--num-fewshot",
        "1",
        "--json",
        "--output",
        &o,
    ];
    let out = gpt(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(printed, written);
    for task in ["copa", "arc_easy"] {
        let r = &written["results"][task];
        for key in [
            "acc,none",
            "acc_stderr,none",
            "acc_norm,none",
            "acc_bytes_stderr,none",
        ] {
            assert!(r[key].is_f64(), "{task} {key}: {r}");
        }
        assert_eq!(written["n-samples"][task]["effective"], 5);
        assert_eq!(written["n-shot"][task], 1);
        assert_eq!(written["configs"][task]["name"], task);
        assert_eq!(written["higher_is_better"][task]["acc"], true);
    }
    assert_eq!(written["n-samples"]["copa"]["original"], 100);
    // The table names every metric.
    let table = gpt(&["eval", "--model", &m, "--tasks", "copa", "--limit", "5"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("| copa | 0 | 5 | acc_norm |"), "{text}");
}

#[test]
fn data_dir_is_honoured() {
    let d = model_dir("datadir");
    let m = d.to_string_lossy().to_string();
    let empty = d.join("nodata");
    std::fs::create_dir_all(&empty).unwrap();
    let e = empty.to_string_lossy().to_string();
    let out = gpt(&["eval", "--model", &m, "--tasks", "copa", "--data-dir", &e]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("copa/test.jsonl") && err.contains("nodata"),
        "{err}"
    );
    // The fixture data folder holds lambada_openai/.
    let out = gpt(&[
        "eval",
        "--model",
        &m,
        "--tasks",
        "lambada_openai",
        "--data-dir",
        "tests/fixtures/eval/data",
        "--bootstrap-iters",
        "100",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("| lambada_openai | 0 | 12 | perplexity |")
    );
}
