//! Weights holding NaN or inf are refused at load (an error naming the tensor and the file)
//! unless `--allow-nonfinite`, and `gpt score` / `gpt generate` / `gpt translate` never exit 0
//! with a result computed from non-finite values.

mod common;

use gpt::generate::InferenceModel;
use gpt::model::checkpoint::{self, NonFinite};
use gpt::model::weight_dtype::WeightDtype;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Our f32 checkpoint of the tiny GPT-2 fixture with the GPT-2 tokenizer beside it, with
/// `value` at element 5 of `tensor` (a name of our layout, without `transformer.`).
fn poisoned_gpt(tag: &str, tensor: &str, value: f32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt-nonfinite-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut model = checkpoint::load(&common::fixture_path("hf_gpt2")).unwrap();
    model.params.tensor_mut(tensor).unwrap()[5] = value;
    checkpoint::save(&model, &dir, None).unwrap();
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenizer/data/gpt2");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn gpt(args: &[&str], model: &Path, stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(args)
        .arg("--model")
        .arg(model)
        .args(["--threads", "1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn load_err(r: gpt::Result<InferenceModel>) -> String {
    match r {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn loading_refuses_nonfinite_weights_naming_the_tensor_and_the_file() {
    let dir = poisoned_gpt("lib", "h.1.mlp.c_fc.weight", f32::NAN);
    // Every loader: mapped f32, packed bf16, the training model.
    for dtype in [WeightDtype::F32, WeightDtype::Bf16] {
        let e = load_err(InferenceModel::load_as(&dir, dtype));
        assert!(
            e.contains("model.safetensors")
                && e.contains("`transformer.h.1.mlp.c_fc.weight`")
                && e.contains("NaN")
                && e.contains("--allow-nonfinite"),
            "{dtype:?}: {e}"
        );
        assert!(InferenceModel::load_with(&dir, dtype, NonFinite::Allow).is_ok());
    }
    let e = checkpoint::load(&dir).err().unwrap().to_string();
    assert!(
        e.contains("`transformer.h.1.mlp.c_fc.weight`") && e.contains("NaN"),
        "{e}"
    );

    // An f32 value beyond bf16's range becomes inf when packed: refused in bf16 only.
    let big = poisoned_gpt("big", "wte.weight", 3.4e38);
    assert!(InferenceModel::load(&big).is_ok());
    let e = load_err(InferenceModel::load_as(&big, WeightDtype::Bf16));
    assert!(
        e.contains("`transformer.wte.weight`") && e.contains("inf"),
        "{e}"
    );
    let inf = poisoned_gpt("inf", "ln_f.bias", f32::NEG_INFINITY);
    let e = load_err(InferenceModel::load(&inf));
    assert!(
        e.contains("`transformer.ln_f.bias`") && e.contains("-inf at element 5"),
        "{e}"
    );
    for d in [dir, big, inf] {
        std::fs::remove_dir_all(&d).ok();
    }
}

#[test]
fn score_and_generate_fail_on_nonfinite_weights_and_results() {
    let dir = poisoned_gpt("cli", "h.0.mlp.c_fc.weight", f32::NAN);
    let score = ["score"];
    let generate = [
        "generate",
        "--prompt",
        "hello",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
    ];
    for args in [&score[..], &generate[..]] {
        let (code, out, err) = gpt(args, &dir, "hello world, hello world");
        assert_ne!(code, 0, "{args:?} exited 0: {out}");
        assert!(
            err.contains("`transformer.h.0.mlp.c_fc.weight`") && err.contains("NaN"),
            "{args:?}: {err}"
        );
        // Loaded anyway, the NaN weights give NaN logits: still an error, never a result.
        let allow = [args, &["--allow-nonfinite"]].concat();
        let (code, out, err) = gpt(&allow, &dir, "hello world, hello world");
        assert_ne!(code, 0, "{allow:?} exited 0: {out}");
        assert!(
            err.contains("is NaN") && (err.contains("logit") || err.contains("log-probability")),
            "{allow:?}: {err}"
        );
        assert!(
            !out.contains("nll NaN") && !out.contains("ppl NaN"),
            "{out}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn translate_refuses_nonfinite_weights_unless_allowed_and_then_fails_at_the_logits() {
    let fixture = Path::new("tests/fixtures/compat/translate");
    let (mut model, tok) = gpt::translate::checkpoint::load_model(fixture).unwrap();
    model.params.tensor_mut("embed.weight").unwrap()[7] = f32::INFINITY;
    let dir = std::env::temp_dir().join(format!("gpt-nonfinite-mt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    gpt::translate::checkpoint::save_model(&model, &tok, &dir, None).unwrap();
    let (code, out, err) = gpt(&["translate", "--beam", "1"], &dir, "en el principio\n");
    assert_ne!(code, 0, "exited 0: {out}");
    assert!(
        err.contains("`embed.weight`") && err.contains("inf"),
        "{err}"
    );
    let (code, out, err) = gpt(
        &["translate", "--beam", "1", "--allow-nonfinite"],
        &dir,
        "en el principio\n",
    );
    assert_ne!(code, 0, "exited 0: {out}");
    assert!(
        err.contains("the logit of token") && (err.contains("NaN") || err.contains("inf")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_flags_for_nonfinite_steps_are_documented_and_saved_in_the_run_config() {
    let help = Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["train", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--on-nan")
            && help.contains("Default skip")
            && help.contains("--max-nan-skips"),
        "{help}"
    );
    let dir = std::env::temp_dir().join(format!("gpt-nonfinite-flags-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("corpus.txt");
    std::fs::write(
        &data,
        "the quick brown fox jumps over the lazy dog.\n".repeat(50),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args([
            "train",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--block-size",
            "8",
        ])
        .args([
            "--n-layer",
            "1",
            "--n-embd",
            "16",
            "--n-head",
            "2",
            "--sample-tokens",
            "0",
        ])
        .args([
            "--eval-iters",
            "1",
            "--on-nan",
            "stop",
            "--max-nan-skips",
            "7",
        ])
        .args(["--threads", "1", "--data"])
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
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("run/checkpoint/trainer_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["config"]["on_nan"], "stop");
    assert_eq!(state["config"]["max_nan_skips"], 7);
    let bad = Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["train", "--on-nan", "halt"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("halt"));
    std::fs::remove_dir_all(&dir).ok();
}
