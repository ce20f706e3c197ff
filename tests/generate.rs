//! The inference path against the training path and against itself:
//! - KV-cache decoding gives, at every step, the logits of a full recompute (the training model's
//!   forward), for pre-LN, post-LN and sinusoidal models;
//! - batched generation (prompts of different lengths) gives the tokens of one-by-one
//!   generation, greedy and sampled, including past the context (sliding window);
//! - the logits each token of a ragged batch was sampled from, before and after its row's
//!   window slides past the context, equal the training forward over the context the sliding
//!   rule gives that row (keep the last n_ctx/2 tokens when the cache is full);
//! - a row stops at its end-of-text id, the other rows of the batch go on unchanged;
//! - a cross-attention block's cached steps equal its training forward (the encoder-decoder
//!   decoder path);
//! - sliding-window scoring scores each token once with the context the windows give it;
//! - every matrix packed in panels (what loading an f32 checkpoint does) gives the training
//!   forward's logits at every cached step, and takes the bytes `panel_bytes_of` predicts.

use gpt::generate::score::token_logprobs;
use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
use gpt::model::{Gpt, GptConfig, Positions};
use gpt::nn::block::{Block, BlockConfig, BlockInput, Memory, NormPlacement};
use gpt::nn::kv_cache::{LayerKvCache, Scratch};
use gpt::nn::mlp::Activation;
use gpt::nn::params::{ParamLayout, Params};
use gpt::nn::weights::Weights;
use gpt::rng::Rng;

fn tiny(norm: NormPlacement, positions: Positions, n_ctx: usize) -> Gpt {
    let cfg = GptConfig {
        dropout: 0.0,
        norm,
        positions,
        n_ctx,
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        ..GptConfig::tiny(101)
    };
    let mut m = Gpt::new(cfg, &mut Rng::new(5)).unwrap();
    // Larger weights than GPT-2's init so attention patterns are not uniform.
    for x in m.params.data.iter_mut() {
        *x *= 5.0;
    }
    m
}

/// The largest |a − b| over two equally long vectors.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn full_logits(m: &mut Gpt, ids: &[u32]) -> Vec<f32> {
    m.forward(ids, 1, ids.len(), false, &mut Rng::new(0))
        .unwrap();
    m.logits.clone()
}

#[test]
fn cached_decoding_matches_full_recompute_at_every_step() {
    for (norm, pos) in [
        (NormPlacement::Pre, Positions::Learned),
        (NormPlacement::Post, Positions::Learned),
        (NormPlacement::Pre, Positions::Sinusoidal),
    ] {
        let mut gpt = tiny(norm, pos, 32);
        let model = InferenceModel::from_gpt(&gpt).unwrap();
        let v = 101;
        let ids: Vec<u32> = (0..20).map(|i| (i * 37 % 101) as u32).collect();
        let mut cache = model.new_cache(1);
        let (mut s, mut h, mut l) = (Scratch::default(), Vec::new(), Vec::new());
        // Prefill 7 tokens, then one token per step.
        model
            .step(&ids[..7], &[7], &mut cache, &mut s, &mut h, &mut l)
            .unwrap();
        let mut t = 7;
        loop {
            let want = full_logits(&mut gpt, &ids[..t]);
            let want = &want[(t - 1) * v..t * v];
            let worst = max_abs_diff(&l, want);
            assert!(worst < 1e-4, "{norm:?} {pos:?} step t={t}: {worst}");
            if t == ids.len() {
                break;
            }
            model
                .step(&ids[t..t + 1], &[1], &mut cache, &mut s, &mut h, &mut l)
                .unwrap();
            t += 1;
        }
        assert_eq!(cache.len(0), ids.len());
    }
}

#[test]
fn batched_generation_equals_one_by_one() {
    let gpt = tiny(NormPlacement::Pre, Positions::Learned, 24);
    let model = InferenceModel::from_gpt(&gpt).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![5], vec![1, 2, 3, 4, 5, 6, 7, 8, 9], vec![42, 7, 99]];
    for sampling in [
        SamplingConfig::greedy(),
        SamplingConfig {
            temperature: 0.9,
            top_k: 20,
            top_p: 0.9,
            repetition_penalty: 1.3,
        },
    ] {
        // 30 new tokens: past the context of 24, so rows slide at different steps.
        let cfg = GenerateConfig {
            max_new_tokens: 30,
            sampling,
            seed: 11,
            eos: None,
        };
        let mut streamed = vec![Vec::new(); 3];
        let (batch, _) = generate(&model, &prompts, &cfg, |b, id| {
            streamed[b].push(id);
            Ok(false)
        })
        .unwrap();
        for (b, p) in prompts.iter().enumerate() {
            let one = GenerateConfig {
                seed: 11 + b as u64,
                ..cfg.clone()
            };
            let (single, _) =
                generate(&model, std::slice::from_ref(p), &one, |_, _| Ok(false)).unwrap();
            assert_eq!(batch[b].ids, single[0].ids, "row {b}, {sampling:?}");
            assert_eq!(batch[b].ids, streamed[b]);
            assert_eq!(batch[b].ids.len(), 30);
        }
    }
    // A callback stop ends only its row.
    let cfg = GenerateConfig {
        max_new_tokens: 5,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let (out, _) = generate(&model, &prompts, &cfg, |b, _| Ok(b == 1)).unwrap();
    assert_eq!(
        out.iter().map(|g| g.ids.len()).collect::<Vec<_>>(),
        [5, 1, 5]
    );
}

#[test]
fn ragged_batch_logits_equal_the_full_forward_before_and_after_sliding() {
    use gpt::generate::generate_observed;
    let n_ctx = 16;
    for norm in [NormPlacement::Pre, NormPlacement::Post] {
        let mut gpt = tiny(norm, Positions::Learned, n_ctx);
        let model = InferenceModel::from_gpt(&gpt).unwrap();
        let v = model.config.vocab_size;
        let prompts: Vec<Vec<u32>> = vec![vec![5], (1..=13).collect(), vec![42, 7, 99]];
        let cfg = GenerateConfig {
            max_new_tokens: 30,
            sampling: SamplingConfig {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                repetition_penalty: 1.0,
            },
            seed: 4,
            eos: None,
        };
        let mut seen: Vec<Vec<(u32, Vec<f32>)>> = vec![Vec::new(); prompts.len()];
        generate_observed(&model, &prompts, &cfg, true, |b, id, logits| {
            seen[b].push((id, logits.to_vec()));
            Ok(false)
        })
        .unwrap();
        let keep = n_ctx / 2;
        let mut slides = 0;
        for (b, prompt) in prompts.iter().enumerate() {
            assert_eq!(seen[b].len(), 30);
            let mut seq = prompt.clone();
            let mut ctx = prompt.clone();
            for (i, (id, logits)) in seen[b].iter().enumerate() {
                let full = full_logits(&mut gpt, &ctx);
                let want = &full[(ctx.len() - 1) * v..];
                let worst = max_abs_diff(logits, want);
                assert!(worst < 1e-4, "{norm:?} row {b} token {i}: {worst}");
                seq.push(*id);
                if ctx.len() + 1 > n_ctx {
                    ctx = seq[seq.len() - keep..].to_vec();
                    slides += 1;
                } else {
                    ctx.push(*id);
                }
            }
        }
        assert!(slides >= 3, "every row must slide at least once: {slides}");
    }
}

#[test]
fn generation_stops_a_row_at_eos_and_the_other_rows_go_on_unchanged() {
    use gpt::generate::FinishReason;
    let gpt = tiny(NormPlacement::Pre, Positions::Learned, 40);
    let model = InferenceModel::from_gpt(&gpt).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 6], vec![1, 2, 3], vec![42, 7, 99, 3]];
    let mut cfg = GenerateConfig {
        max_new_tokens: 12,
        sampling: SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        },
        seed: 3,
        eos: None,
    };
    let (free, _) = generate(&model, &prompts, &cfg, |_, _| Ok(false)).unwrap();
    // End-of-text: the 4th token of row 1, a token that row 1 has not produced before.
    let k = (3..12)
        .find(|&k| !free[1].ids[..k].contains(&free[1].ids[k]))
        .expect("row 1 repeats itself throughout");
    let eos = free[1].ids[k];
    cfg.eos = Some(eos);
    let (stopped, _) = generate(&model, &prompts, &cfg, |_, _| Ok(false)).unwrap();
    for (b, (f, s)) in free.iter().zip(&stopped).enumerate() {
        match f.ids.iter().position(|&id| id == eos) {
            Some(i) => {
                assert_eq!(s.ids, f.ids[..=i], "row {b} stops at its first eos");
                assert_eq!(s.finish, FinishReason::Eos, "row {b}");
            }
            None => {
                assert_eq!(
                    s.ids, f.ids,
                    "row {b} is unaffected by another row stopping"
                );
                assert_eq!(s.finish, FinishReason::Length, "row {b}");
            }
        }
    }
    assert_eq!(stopped[1].ids.len(), k + 1);
    assert!(
        stopped.iter().any(|g| g.finish == FinishReason::Length),
        "every row hit eos; the test needs a row that goes on"
    );
}

#[test]
fn cross_attention_block_cached_steps_match_training_forward() {
    for norm in [NormPlacement::Pre, NormPlacement::Post] {
        let cfg = BlockConfig {
            n_embd: 16,
            n_head: 2,
            hidden: 64,
            bias: true,
            activation: Activation::Relu,
            dropout: 0.0,
            norm,
            ln_eps: 1e-5,
            causal: true,
            cross: true,
            std: 0.3,
            proj_std: 0.3,
        };
        let mut layout = ParamLayout::new();
        let mut block = Block::new(&mut layout, "h.0", &cfg).unwrap();
        let mut params = Params::zeros(layout);
        params.init(&mut Rng::new(3));
        let p = &params.data;
        let (b, t, tm, c) = (2, 6, 5, 16);
        let mut rng = Rng::new(9);
        let mut x = vec![0.0; b * t * c];
        rng.fill_normal(&mut x, 0.0, 1.0);
        let mut mem = vec![0.0; b * tm * c];
        rng.fill_normal(&mut mem, 0.0, 1.0);
        // Row 1's memory has two padding positions.
        let mask: Vec<u8> = [[1u8; 5], [1, 1, 1, 0, 0]].concat();
        let memory = Memory {
            data: &mem,
            t: tm,
            key_mask: Some(&mask),
        };
        let inp = BlockInput {
            x: &x,
            b,
            t,
            key_mask: None,
            positions: None,
            memory: Some(memory),
        };
        block.forward(Weights::new(p), &inp, false, &mut rng);
        let want = block.output().to_vec();
        // Cached: prefill 2 positions, then one at a time, both rows together.
        let mut cache = LayerKvCache::new(b, 8, c);
        block
            .prepare_memory(Weights::new(p), &mut cache, &memory, b)
            .unwrap();
        let mut s = Scratch::default();
        let mut got = vec![0.0; b * t * c];
        let mut pos = 0;
        for n in [2, 1, 1, 1, 1] {
            let mut xs = Vec::new();
            for r in 0..b {
                xs.extend_from_slice(&x[(r * t + pos) * c..(r * t + pos + n) * c]);
            }
            block
                .forward_cached(Weights::new(p), &mut xs, &[n, n], &mut cache, &mut s)
                .unwrap();
            for r in 0..b {
                got[(r * t + pos) * c..(r * t + pos + n) * c]
                    .copy_from_slice(&xs[r * n * c..(r + 1) * n * c]);
            }
            pos += n;
        }
        let worst = max_abs_diff(&got, &want);
        assert!(worst < 1e-5, "{norm:?}: {worst}");
        // Beam reorder keeps a row's state: duplicate row 1 and step again.
        cache.reorder(&[1, 1]).unwrap();
        assert_eq!(cache.len, vec![6, 6]);
        assert_eq!(
            cache.cross.as_ref().unwrap().key_mask.as_ref().unwrap()[..5],
            [1, 1, 1, 0, 0]
        );
        assert!(cache.reorder(&[2]).is_err());
    }
}

#[test]
fn sliding_window_scoring_gives_each_token_its_window_context() {
    let mut gpt = tiny(NormPlacement::Pre, Positions::Learned, 16);
    let model = InferenceModel::from_gpt(&gpt).unwrap();
    let v = 101;
    let ids: Vec<u32> = (0..40).map(|i| (i * 13 % 101) as u32).collect();
    let stride = 6;
    let lps = token_logprobs(&model, &ids, stride).unwrap();
    assert!(lps[0].is_none() && lps[1..].iter().all(Option::is_some));
    // Windows begin at 0, 6, 12, ...; token j is scored by the first window reaching it.
    let mut prev_end = 0;
    let mut begin = 0;
    loop {
        let end = (begin + 16).min(ids.len());
        let logits = full_logits(&mut gpt, &ids[begin..end]);
        for j in prev_end.max(begin + 1)..end {
            let row = &logits[(j - begin - 1) * v..(j - begin) * v];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max as f64
                + row
                    .iter()
                    .map(|&x| ((x - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            let want = row[ids[j] as usize] as f64 - lse;
            assert!((lps[j].unwrap() as f64 - want).abs() < 1e-4, "token {j}");
        }
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    assert!(token_logprobs(&model, &ids, 0).is_err());
    assert!(token_logprobs(&model, &ids, 17)
        .unwrap_err()
        .to_string()
        .contains("stride"));
}

#[test]
fn panel_packed_decoding_matches_full_recompute_and_its_size_estimate() {
    let mut gpt = tiny(NormPlacement::Pre, Positions::Learned, 32);
    let mut model = InferenceModel::from_gpt(&gpt).unwrap();
    let before = model.weight_bytes();
    model.pack_all_panels();
    let panels = (model.weight_bytes() - before) as u64;
    assert_eq!(
        panels,
        InferenceModel::panel_bytes_of(&gpt.config, gpt::model::inference::Panels::All).unwrap()
    );
    let v = gpt.config.vocab_size;
    let ids: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % v as u32).collect();
    let mut cache = model.new_cache(1);
    let (mut s, mut h, mut l) = (Scratch::default(), Vec::new(), Vec::new());
    model
        .step(&ids[..5], &[5], &mut cache, &mut s, &mut h, &mut l)
        .unwrap();
    for t in 5..=ids.len() {
        let want = full_logits(&mut gpt, &ids[..t]);
        let want = &want[(t - 1) * v..t * v];
        let worst = max_abs_diff(&l, want);
        assert!(worst < 1e-4, "step t={t}: {worst}");
        if t < ids.len() {
            model
                .step(&ids[t..t + 1], &[1], &mut cache, &mut s, &mut h, &mut l)
                .unwrap();
        }
    }
}

/// A mapped f32 checkpoint loaded with every choice of panels: the panels take what
/// `panel_bytes_of` (the memory checks' count) says for each, the head's bytes with `Head`,
/// none with `Off`, and a prompt and a
/// decoded token give the same logits whichever matrices are packed.
#[test]
fn panels_per_command_pack_what_they_say_and_agree() {
    use gpt::model::checkpoint::{self, NonFinite};
    use gpt::model::inference::Panels;
    use gpt::model::weight_dtype::WeightDtype;
    let gpt = tiny(NormPlacement::Pre, Positions::Learned, 32);
    let dir = std::env::temp_dir().join(format!("gpt-panels-per-command-{}", std::process::id()));
    checkpoint::save(&gpt, &dir, None).unwrap();
    let load = |p| InferenceModel::load_for(&dir, WeightDtype::F32, NonFinite::Refuse, p).unwrap();
    let (all, head, off) = (load(Panels::All), load(Panels::Head), load(Panels::Off));
    let plain = 4 * gpt.params.data.len();
    let (c, v) = (gpt.config.n_embd, gpt.config.vocab_size);
    assert_eq!(off.weight_bytes(), plain);
    // The head's panels: 24-output panels of the tied (V, C) matrix.
    assert_eq!(head.weight_bytes() - plain, 4 * v.div_ceil(24) * 24 * c);
    // What the commands' memory checks count for each choice is what loading packs.
    for (m, p) in [
        (&all, Panels::All),
        (&head, Panels::Head),
        (&off, Panels::Off),
    ] {
        assert_eq!(
            m.weight_bytes() - plain,
            InferenceModel::panel_bytes_of(&gpt.config, p).unwrap() as usize,
            "{p:?}"
        );
    }
    let ids: Vec<u32> = (0..12).map(|i| (i * 11 + 5) % v as u32).collect();
    let logits = |m: &InferenceModel| {
        let mut cache = m.new_cache(1);
        let (mut s, mut h, mut l) = (Scratch::default(), Vec::new(), Vec::new());
        m.step(&ids[..11], &[11], &mut cache, &mut s, &mut h, &mut l)
            .unwrap();
        let prompt = l.clone();
        m.step(&ids[11..], &[1], &mut cache, &mut s, &mut h, &mut l)
            .unwrap();
        (prompt, l)
    };
    let want = logits(&off);
    for (name, m) in [("all", &all), ("head", &head)] {
        let got = logits(m);
        assert!(max_abs_diff(&got.0, &want.0) < 1e-4, "{name}: prompt");
        assert!(
            max_abs_diff(&got.1, &want.1) < 1e-4,
            "{name}: decoded token"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
