//! Helpers of the inference tests: the transformers GPT-2 fixture as a model directory, ids from
//! JSON, and a prompt's logits at every position.

use gpt::generate::InferenceModel;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A temporary model directory: the `hf_gpt2` fixture's config and weights plus the GPT-2
/// tokenizer files (`tag` keeps concurrent tests apart).
pub fn hf_model_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt-hf-fixture-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fx = super::fixture_path("hf_gpt2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join(f), dir.join(f)).unwrap();
    }
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenizer/data/gpt2");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(tok.join(f), dir.join(f)).unwrap();
    }
    dir
}

/// A JSON array of ids.
pub fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Logits `(T, V)` of `ids` in one forward (the prefill path).
pub fn all_logits(model: &InferenceModel, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(1);
    let (mut s, mut h, mut l) = (Default::default(), Vec::new(), Vec::new());
    model
        .forward_hidden(ids, &[ids.len()], &mut cache, &mut s, &mut h)
        .unwrap();
    model.logits(&mut l, &h);
    l
}
