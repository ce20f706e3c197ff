//! bf16 weights for inference (`gpt score --dtype bf16`, `gpt generate --dtype bf16`): per-token
//! log-probabilities of a random GPT-2 within 2e-2 of f32, through both the decode path (one
//! token at a time) and the prefill path (scoring a whole window).

use gpt::generate::model::InferenceModel;
use gpt::generate::score::token_logprobs;
use gpt::model::{Gpt, GptConfig};
use gpt::nn::precision::Precision;
use gpt::rng::Rng;

fn random_gpt2() -> Gpt {
    // GPT-2's shapes (width 768, 12 heads, vocabulary 50257) with 2 layers to stay fast.
    let mut cfg = GptConfig::preset("gpt2", 50257).unwrap();
    cfg.n_layer = 2;
    cfg.n_ctx = 64;
    Gpt::new(cfg, &mut Rng::new(7)).unwrap()
}

#[test]
fn bf16_scores_are_within_2e2_of_f32_and_really_bf16() {
    let gpt = random_gpt2();
    let mut rng = Rng::new(8);
    let ids: Vec<u32> = (0..100).map(|_| rng.below(50257) as u32).collect();
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    let f32_lps = token_logprobs(&model, &ids, 16).unwrap();
    model.set_dtype(Precision::Bf16);
    assert_eq!(model.dtype(), Precision::Bf16);
    let bf16_lps = token_logprobs(&model, &ids, 16).unwrap();
    let mut worst = 0.0f32;
    for (a, b) in f32_lps.iter().zip(&bf16_lps) {
        match (a, b) {
            (Some(a), Some(b)) => worst = worst.max((a - b).abs()),
            (None, None) => {}
            _ => panic!("scored positions differ"),
        }
    }
    eprintln!("worst logprob difference f32 vs bf16: {worst}");
    assert!(worst < 2e-2, "worst logprob difference {worst}");
    assert!(worst > 0.0, "bf16 weights must change the numbers");
}

#[test]
fn bf16_decode_logits_match_f32() {
    let gpt = random_gpt2();
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    let ids = [464u32, 2068, 7586, 21831];
    let mut out = Vec::new();
    for dtype in [Precision::F32, Precision::Bf16] {
        model.set_dtype(dtype);
        let mut cache = model.new_cache(1);
        let mut s = Default::default();
        let (mut hidden, mut logits) = (Vec::new(), Vec::new());
        let mut all = Vec::new();
        for &id in &ids {
            model
                .step(&[id], &[1], &mut cache, &mut s, &mut hidden, &mut logits)
                .unwrap();
            all.extend_from_slice(&logits);
        }
        out.push(all);
    }
    let worst = out[0]
        .iter()
        .zip(&out[1])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst > 0.0 && worst < 2e-2,
        "worst logit difference {worst}"
    );
}
