//! bf16 weights for inference (`gpt score --dtype bf16`, `gpt generate --dtype bf16`):
//! - per-token log-probabilities of a random GPT-2 within 2e-2 of f32, through both the decode
//!   path (one token at a time) and the prefill path (scoring a whole window), with the weight
//!   matrices held only in bf16 (the f32 buffer keeps just biases, LayerNorm and `wpe`);
//! - a checkpoint whose matrices are bf16 loads straight into bf16 and gives the same logits, bit
//!   for bit, as rounding the f32 checkpoint, by every route (`load_as`, `load` + `set_dtype`);
//! - cached decoding equals a full recompute in bf16 (the decode kernel against the chunked and
//!   the tiled prefill paths), greedy generation follows the recomputed argmax, and a batch of
//!   prompts generates exactly what each prompt generates alone;
//! - the portable bf16 kernels (forced with `simd::limit`, as `GPT_SIMD=portable` does for a
//!   whole run) give the AVX-512 BF16 kernels' logits bit for bit, decode and prefill.

mod common;

use common::inference::all_logits;

use common::claims::{
    BF16_LOGIT_LIMIT, BF16_LOGPROB_LIMIT, BF16_RECOMPUTE_LIMIT, BF16_SCORED_TOKENS,
};
use gpt::generate::score::token_logprobs;
use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
use gpt::model::inference::WeightsSource;
use gpt::model::weight_dtype::WeightDtype;
use gpt::model::{checkpoint, Gpt, GptConfig};
use gpt::rng::Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::path::{Path, PathBuf};

fn random_gpt2(n_ctx: usize) -> Gpt {
    // GPT-2's shapes (width 768, 12 heads, vocabulary 50257) with 2 layers to stay fast.
    let mut cfg = GptConfig::preset("gpt2", 50257).unwrap();
    cfg.n_layer = 2;
    cfg.n_ctx = n_ctx;
    Gpt::new(cfg, &mut Rng::new(7)).unwrap()
}

fn tmp_dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("gpt-bf16-{tag}-{}", std::process::id()))
}

/// Logits `(T, V)` of `ids` fed one token at a time through the cache (decode path).
fn stepped_logits(model: &InferenceModel, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache(1);
    let (mut s, mut h, mut l) = (Default::default(), Vec::new(), Vec::new());
    let mut all = Vec::new();
    for &id in ids {
        model
            .step(&[id], &[1], &mut cache, &mut s, &mut h, &mut l)
            .unwrap();
        all.extend_from_slice(&l);
    }
    all
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn bf16_scores_are_within_2e2_of_f32_and_really_bf16() {
    let gpt = random_gpt2(64);
    let mut rng = Rng::new(8);
    let ids: Vec<u32> = (0..BF16_SCORED_TOKENS)
        .map(|_| rng.below(50257) as u32)
        .collect();
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    let f32_lps = token_logprobs(&model, &ids, 16).unwrap();
    let f32_bytes = model.weight_bytes();
    model.set_dtype(WeightDtype::Bf16);
    assert_eq!(model.dtype(), WeightDtype::Bf16);
    // The matrices are gone from the f32 buffer: what is left is biases, LayerNorm and wpe.
    let cfg = &gpt.config;
    let matrices = cfg.vocab_size * cfg.n_embd + cfg.n_layer * 12 * cfg.n_embd * cfg.n_embd;
    assert_eq!(model.params().len(), cfg.num_params() - matrices);
    let ratio = model.weight_bytes() as f64 / f32_bytes as f64;
    eprintln!("bf16 / f32 weight bytes: {ratio:.3}");
    assert!(ratio < 0.51, "bf16 model holds {ratio} of the f32 bytes");
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
    assert!(
        worst < BF16_LOGPROB_LIMIT,
        "worst logprob difference {worst}"
    );
    assert!(worst > 0.0, "bf16 weights must change the numbers");
}

#[test]
fn bf16_decode_logits_match_f32() {
    let gpt = random_gpt2(64);
    let ids = [464u32, 2068, 7586, 21831];
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    let f32_logits = stepped_logits(&model, &ids);
    model.set_dtype(WeightDtype::Bf16);
    let bf16_logits = stepped_logits(&model, &ids);
    let worst = max_diff(&f32_logits, &bf16_logits);
    eprintln!("worst decode logit difference f32 vs bf16: {worst}");
    assert!(
        worst > 0.0 && worst < BF16_LOGIT_LIMIT,
        "worst logit difference {worst}"
    );
    // Back to f32 widens the bf16 matrices: the bf16 numbers on the f32 kernels.
    model.set_dtype(WeightDtype::F32);
    let widened = stepped_logits(&model, &ids);
    let worst = max_diff(&widened, &bf16_logits);
    assert!(worst < 2e-2, "widened vs bf16: {worst}");
}

/// Copies checkpoint `src` to `dst` with every weight matrix (2-D tensor other than `wpe`)
/// stored as bf16, rounded to nearest even; the other tensors stay f32.
fn save_with_bf16_matrices(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    std::fs::copy(src.join("config.json"), dst.join("config.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        assert_eq!(view.dtype(), Dtype::F32);
        let matrix = view.shape().len() == 2 && !name.contains("wpe");
        let data = if matrix {
            view.data()
                .chunks_exact(4)
                .flat_map(|b| {
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    half::bf16::from_f32(x).to_le_bytes()
                })
                .collect()
        } else {
            view.data().to_vec()
        };
        let dtype = if matrix { Dtype::BF16 } else { Dtype::F32 };
        tensors.push((name, dtype, view.shape().to_vec(), data));
    }
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::tensor::serialize_to_file(views, None, &dst.join("model.safetensors")).unwrap();
}

#[test]
fn bf16_checkpoint_loads_directly_and_every_route_gives_the_same_logits() {
    // Bit-for-bit comparisons: no other test's `simd::limit` may switch the bf16 path mid-run.
    let _steady = gpt::kernels::simd::steady();
    let gpt = random_gpt2(64);
    let (d32, d16) = (tmp_dir("f32"), tmp_dir("bf16"));
    checkpoint::save(&gpt, &d32, None).unwrap();
    save_with_bf16_matrices(&d32, &d16);
    let ids = [464u32, 2068, 7586, 21831, 11, 262];

    let direct16 = InferenceModel::load_as(&d16, WeightDtype::Bf16).unwrap();
    assert_eq!(direct16.source, WeightsSource::Packed("BF16+F32".into()));
    let direct32 = InferenceModel::load_as(&d32, WeightDtype::Bf16).unwrap();
    assert_eq!(direct32.source, WeightsSource::Packed("F32".into()));
    let mut via32 = InferenceModel::load(&d32).unwrap();
    assert_eq!(via32.source, WeightsSource::Mapped);
    via32.set_dtype(WeightDtype::Bf16);
    let mut via16 = InferenceModel::load(&d16).unwrap();
    via16.set_dtype(WeightDtype::Bf16);

    let want = stepped_logits(&direct16, &ids);
    for (what, m) in [
        ("f32 file loaded as bf16", &direct32),
        ("f32 file, set_dtype", &via32),
        ("bf16 file loaded as f32, set_dtype", &via16),
    ] {
        assert_eq!(m.dtype(), WeightDtype::Bf16);
        assert_eq!(m.weight_bytes(), direct16.weight_bytes(), "{what}");
        assert!(stepped_logits(m, &ids) == want, "{what}: logits differ");
    }
    for d in [d32, d16] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn bf16_cached_decoding_matches_recompute_and_greedy_follows_it() {
    let gpt = random_gpt2(128);
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    model.set_dtype(WeightDtype::Bf16);
    let mut rng = Rng::new(9);
    let ids: Vec<u32> = (0..70).map(|_| rng.below(50257) as u32).collect();
    let v = 50257;
    let stepped = stepped_logits(&model, &ids);
    // 20 rows: the decode kernel in chunks of 8 rows; 70 rows: the tiled matmul_bf16.
    for t in [20, 70] {
        let full = all_logits(&model, &ids[..t]);
        let worst = max_diff(&full, &stepped[..t * v]);
        eprintln!("bf16 recompute ({t} rows) vs cached decode: worst logit difference {worst}");
        assert!(worst < BF16_RECOMPUTE_LIMIT, "{t} rows: {worst}");
    }
    // Greedy: each generated token is the argmax of the logits of a full recompute of its
    // prefix (through the prefill path).
    let prompt = ids[..5].to_vec();
    let cfg = GenerateConfig {
        max_new_tokens: 12,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let (out, _) = generate(&model, std::slice::from_ref(&prompt), &cfg, |_, _| {
        Ok(false)
    })
    .unwrap();
    let mut seq = prompt.clone();
    for &tok in &out[0].ids {
        let l = all_logits(&model, &seq);
        let last = &l[(seq.len() - 1) * v..];
        let best = last.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert!(
            last[tok as usize] >= best - 2e-4,
            "greedy token {tok} (logit {}) vs recomputed best {best}",
            last[tok as usize]
        );
        seq.push(tok);
    }
    assert_eq!(out[0].ids.len(), 12);
}

#[test]
fn bf16_batched_generation_equals_one_by_one() {
    // The decode kernel computes each row with the same additions whatever the batch, so a
    // batch of prompts of different lengths gives exactly the tokens of each prompt alone.
    let _steady = gpt::kernels::simd::steady();
    let gpt = random_gpt2(64);
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    model.set_dtype(WeightDtype::Bf16);
    let mut rng = Rng::new(10);
    let prompts: Vec<Vec<u32>> = [3, 9, 1]
        .iter()
        .map(|&len| (0..len).map(|_| rng.below(50257) as u32).collect())
        .collect();
    let cfg = GenerateConfig {
        max_new_tokens: 8,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let (batched, _) = generate(&model, &prompts, &cfg, |_, _| Ok(false)).unwrap();
    for (p, b) in prompts.iter().zip(&batched) {
        let (alone, _) = generate(&model, std::slice::from_ref(p), &cfg, |_, _| Ok(false)).unwrap();
        assert_eq!(alone[0].ids, b.ids, "prompt of {} tokens", p.len());
    }
}

#[test]
fn bf16_portable_kernels_match_f32_like_the_native_ones() {
    use gpt::kernels::half::HalfPath;
    use gpt::kernels::simd::{limit, Isa};
    let gpt = random_gpt2(64);
    let ids = [464u32, 2068, 7586, 21831, 11, 13];
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    let (f32_step, f32_all) = (stepped_logits(&model, &ids), all_logits(&model, &ids));
    model.set_dtype(WeightDtype::Bf16);
    let mut runs = Vec::new();
    for cap in [Isa::Avx512, Isa::Portable] {
        let _guard = limit(cap);
        let path = HalfPath::detect();
        if cap == Isa::Portable {
            assert_eq!(
                path,
                HalfPath::Portable,
                "the limit must force the portable twins"
            );
        }
        let (step, all) = (stepped_logits(&model, &ids), all_logits(&model, &ids));
        let (ds, da) = (max_diff(&step, &f32_step), max_diff(&all, &f32_all));
        eprintln!("{path:?}: decode vs f32 {ds:.2e}, prefill vs f32 {da:.2e}");
        assert!(ds > 0.0 && ds < BF16_LOGIT_LIMIT, "{path:?} decode: {ds}");
        assert!(da > 0.0 && da < BF16_LOGIT_LIMIT, "{path:?} prefill: {da}");
        runs.push((step, all));
    }
    let (ds, da) = (
        max_diff(&runs[0].0, &runs[1].0),
        max_diff(&runs[0].1, &runs[1].1),
    );
    eprintln!("native vs portable: decode {ds:.2e}, prefill {da:.2e}");
    // Measured 4.8e-7 (f32 accumulation order of the two kernels).
    assert!(ds < 2e-6 && da < 2e-6, "native vs portable: {ds}, {da}");
}
