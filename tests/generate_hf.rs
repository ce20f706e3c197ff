//! Hugging Face GPT-2 equivalence (fixture from `tools/fixtures_hf_gpt2.py`): a random 2-layer
//! GPT-2 saved by `transformers` as f16 safetensors loads through `InferenceModel::load`, and its
//! logits, log-probabilities and 20-token greedy continuations match `transformers` (computed in
//! f32 from the same f16-rounded weights). Also the f32 memory-mapped path on the same weights.

mod common;

use common::inference::{all_logits, hf_model_dir, ids_of};

use gpt::generate::score::token_logprobs;
use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
use gpt::io::load_tokenizer;
use gpt::model::inference::WeightsSource;
use serde_json::Value;
use std::path::Path;

fn expected() -> Value {
    let path = common::fixture_path("hf_gpt2/expected.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check_model(model: &InferenceModel, dir: &Path) {
    let exp = expected();
    let fx = common::load("hf_gpt2/expected.safetensors");
    let sub: Vec<usize> = ids_of(&exp["sub_idx"])
        .iter()
        .map(|&x| x as usize)
        .collect();
    let tok = load_tokenizer(dir).unwrap();
    let v = model.config.vocab_size;
    for (i, p) in exp["prompts"].as_array().unwrap().iter().enumerate() {
        let ids = ids_of(&p["ids"]);
        let text = p["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true).unwrap(),
            ids,
            "tokenizer on {text:?}"
        );
        let t = ids.len();
        let logits = all_logits(model, &ids);
        let last = &common::get(&fx, &format!("p{i}.last_logits")).data;
        let mut worst = 0.0f32;
        for (a, b) in logits[(t - 1) * v..].iter().zip(last) {
            worst = worst.max((a - b).abs());
        }
        let want = &common::get(&fx, &format!("p{i}.sub_logits")).data;
        for j in 0..t {
            for (k, &col) in sub.iter().enumerate() {
                worst = worst.max((logits[j * v + col] - want[j * sub.len() + k]).abs());
            }
        }
        assert!(worst <= 1e-4, "prompt {i}: max |logit diff| {worst}");
        // Log-probabilities through the scoring path.
        let lps = token_logprobs(model, &ids, model.config.n_ctx).unwrap();
        assert!(lps[0].is_none());
        for (j, w) in p["logprobs"].as_array().unwrap().iter().enumerate() {
            let got = lps[j + 1].unwrap();
            let w = w.as_f64().unwrap() as f32;
            assert!(
                (got - w).abs() <= 1e-4,
                "prompt {i} token {}: {got} vs {w}",
                j + 1
            );
        }
        // 20 greedy tokens.
        let cfg = GenerateConfig {
            max_new_tokens: 20,
            sampling: SamplingConfig::greedy(),
            seed: 0,
            eos: None,
        };
        let (out, _) = generate(model, std::slice::from_ref(&ids), &cfg, |_, _| Ok(false)).unwrap();
        assert_eq!(
            out[0].ids,
            ids_of(&p["greedy"]),
            "greedy continuation of {text:?}"
        );
    }
}

#[test]
fn hf_gpt2_f16_logits_logprobs_and_greedy_match_transformers() {
    let dir = hf_model_dir("f16");
    let model = InferenceModel::load(&dir).unwrap();
    assert_eq!(model.source, WeightsSource::Converted("F16".into()));
    check_model(&model, &dir);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn f32_checkpoint_is_memory_mapped_and_matches() {
    // Re-save the fixture's weights as f32 with our writer: the loader maps it in place.
    let dir = hf_model_dir("f32");
    let mut gpt = gpt::model::checkpoint::load(&dir).unwrap();
    gpt.config.dropout = 0.0;
    let out = dir.join("f32");
    gpt::model::checkpoint::save(&gpt, &out, None).unwrap();
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(dir.join(f), out.join(f)).unwrap();
    }
    let model = InferenceModel::load(&out).unwrap();
    assert_eq!(model.source, WeightsSource::Mapped);
    check_model(&model, &out);
    std::fs::remove_dir_all(&dir).ok();
}
