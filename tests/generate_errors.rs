//! Bad input to the inference path: each is a clear error naming the file, tensor, field or
//! limit (never a panic).

mod common;

use gpt::generate::InferenceModel;
use gpt::model::inference::load_with_tokenizer;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::{Path, PathBuf};
use std::process::Command;

fn model_dir(tag: &str) -> PathBuf {
    common::inference::hf_model_dir(&format!("gen-err-{tag}"))
}

fn load_err(dir: &Path) -> String {
    match InferenceModel::load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn bad_model_directories_name_the_problem() {
    let dir = model_dir("load");
    let weights = dir.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();

    // Truncated weights.
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    // Missing weights.
    std::fs::remove_file(&weights).unwrap();
    let e = load_err(&dir);
    assert!(
        e.contains("model.safetensors") && e.contains("cannot open"),
        "{e}"
    );
    std::fs::write(&weights, &bytes).unwrap();

    // A tensor of the wrong shape (config says a longer context than wpe has).
    edit_config(&dir, |v| v["n_positions"] = 256.into());
    let e = load_err(&dir);
    assert!(
        e.contains("transformer.wpe.weight") && e.contains("[128, 32]") && e.contains("[256, 32]"),
        "{e}"
    );
    edit_config(&dir, |v| v["n_positions"] = 128.into());

    // A missing tensor (config says 3 layers).
    edit_config(&dir, |v| v["n_layer"] = 3.into());
    let e = load_err(&dir);
    assert!(
        e.contains("missing tensor `transformer.h.2.ln_1.weight`"),
        "{e}"
    );
    edit_config(&dir, |v| v["n_layer"] = 2.into());

    // Not a GPT-2 config.
    edit_config(&dir, |v| v["model_type"] = "llama".into());
    let e = load_err(&dir);
    assert!(e.contains("model_type") && e.contains("llama"), "{e}");
    edit_config(&dir, |v| v["model_type"] = "gpt2".into());

    // An unsupported dtype: ln_f.weight stored as f64.
    {
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let f64_bytes: Vec<u8> = vec![0u8; 32 * 8];
        let mut views = Vec::new();
        for (name, view) in st.tensors() {
            if name == "transformer.ln_f.weight" {
                views.push((
                    name,
                    TensorView::new(Dtype::F64, vec![32], &f64_bytes).unwrap(),
                ));
            } else {
                views.push((name, view));
            }
        }
        let out = safetensors::serialize(views, None).unwrap();
        std::fs::write(&weights, out).unwrap();
    }
    let e = load_err(&dir);
    assert!(
        e.contains("transformer.ln_f.weight") && e.contains("F64"),
        "{e}"
    );
    std::fs::write(&weights, &bytes).unwrap();
    assert!(InferenceModel::load(&dir).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn tokenizer_larger_than_the_model_vocabulary_is_an_error() {
    let dir = model_dir("vocab");
    // Our checkpoint of a 101-token model with the GPT-2 tokenizer beside it.
    let mut cfg = gpt::model::GptConfig::tiny(101);
    cfg.n_layer = 1;
    let gpt = gpt::model::Gpt::new(cfg, &mut gpt::rng::Rng::new(0)).unwrap();
    gpt::model::checkpoint::save(&gpt, &dir, None).unwrap();
    let e = match load_with_tokenizer(&dir) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("50257") && e.contains("101") && e.contains("vocab_size"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

fn gpt_cmd(args: &[&str], dir: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(args)
        .arg("--model")
        .arg(dir)
        .args(["--threads", "1"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_prompts_over_the_context_empty_prompts_and_bad_flags() {
    let dir = model_dir("cli");
    let long = "word ".repeat(200);
    let (ok, _, err) = gpt_cmd(
        &["generate", "--prompt", &long, "--max-new-tokens", "2"],
        &dir,
    );
    assert!(
        !ok && err.contains("n_ctx = 128") && err.contains("--truncate"),
        "{err}"
    );
    let (ok, out, err) = gpt_cmd(
        &[
            "generate",
            "--prompt",
            &long,
            "--max-new-tokens",
            "3",
            "--truncate",
            "--json",
        ],
        &dir,
    );
    assert!(ok, "{err}");
    assert!(err.contains("warning") && err.contains("last 128"), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(v["prompt_ids"].as_array().unwrap().len(), 128);
    assert_eq!(v["ids"].as_array().unwrap().len(), 3);
    for k in ["text", "prefill_tokens_per_sec", "decode_tokens_per_sec"] {
        assert!(v.get(k).is_some(), "{k} missing in {v}");
    }
    let (ok, _, err) = gpt_cmd(&["generate", "--prompt", ""], &dir);
    assert!(!ok && err.contains("empty"), "{err}");
    let (ok, _, err) = gpt_cmd(&["generate", "--prompt", "a", "--top-p", "1.5"], &dir);
    assert!(!ok && err.contains("top_p"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Greedy stop string: generate, then stop at a piece of the greedy text.
    let (ok, out, _) = gpt_cmd(
        &[
            "generate",
            "--prompt",
            "Hello, my dog is cute",
            "--temperature",
            "0",
            "--max-new-tokens",
            "20",
            "--json",
        ],
        &dir,
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let text = v["text"].as_str().unwrap().to_string();
    let stop: String = text.chars().skip(6).take(4).collect();
    let (ok, out, _) = gpt_cmd(
        &[
            "generate",
            "--prompt",
            "Hello, my dog is cute",
            "--temperature",
            "0",
            "--max-new-tokens",
            "20",
            "--json",
            "--stop",
            &stop,
        ],
        &dir,
    );
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let cut = v["text"].as_str().unwrap();
    assert!(
        text.starts_with(cut) && !cut.contains(&stop),
        "{cut:?} vs {text:?} stop {stop:?}"
    );
    assert_eq!(v["finish_reason"], "stop");
    // Scoring: JSON fields, the first-token rule and --bos.
    let file = dir.join("text.txt");
    std::fs::write(&file, "Hello world, this is a test.").unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err) = gpt_cmd(&["score", f, "--json"], &dir);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let toks = v["tokens"].as_array().unwrap();
    assert!(toks[0]["logprob"].is_null() && toks[1]["logprob"].is_number());
    let nll: f64 = toks[1..]
        .iter()
        .map(|t| -t["logprob"].as_f64().unwrap())
        .sum();
    assert!((nll - v["nll"].as_f64().unwrap()).abs() < 1e-3);
    assert!((v["ppl"].as_f64().unwrap() - (nll / (toks.len() - 1) as f64).exp()).abs() < 1e-2);
    let (ok, out, _) = gpt_cmd(&["score", f, "--json", "--bos"], &dir);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["tokens"].as_array().unwrap().len(), toks.len());
    assert!(v["tokens"][0]["logprob"].is_number());
    assert!(v["bpb"].as_f64().unwrap() > 0.0);
    std::fs::write(&file, "").unwrap();
    let (ok, _, err) = gpt_cmd(&["score", f], &dir);
    assert!(!ok && err.contains("empty"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
