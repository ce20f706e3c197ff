//! A whole tiny GPT against an independent PyTorch implementation (tools/fixtures_model.py):
//! a 2-layer pre-LN (GPT-2 style, final LayerNorm) and a 2-layer post-LN (GPT-1 style) stack
//! with learned positions, a tied LM head and cross-entropy with an ignored target.
//! Checks logits, loss, every parameter gradient, and a 20-step AdamW loss trajectory.

mod common;

use common::claims::{MODEL_ATOL, MODEL_RTOL, TRAJECTORY_RTOL, TRAJECTORY_STEPS};

use gpt::kernels::adamw::clip_grad_norm;
use gpt::model::{Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::mlp::Activation;
use gpt::optim::{AdamW, AdamWConfig};
use gpt::rng::Rng;

const B: usize = 2;
const T: usize = 7;

fn config(norm: NormPlacement) -> GptConfig {
    GptConfig {
        vocab_size: 17,
        n_ctx: 9,
        n_layer: 2,
        n_head: 3,
        n_embd: 15,
        dropout: 0.0,
        bias: true,
        norm,
        positions: Positions::Learned,
        activation: Activation::Gelu,
        ln_eps: 1e-5,
    }
}

fn load_model(
    fx: &std::collections::HashMap<String, common::FixtureTensor>,
    norm: NormPlacement,
) -> Gpt {
    let mut model = Gpt::uninit(config(norm)).unwrap();
    for e in model.params.layout.entries().to_vec() {
        let t = common::get(fx, &format!("param.{}", e.name));
        assert_eq!(t.shape, e.shape, "{}", e.name);
        model.params.data[e.param.range()].copy_from_slice(&t.data);
    }
    model
}

fn ids_targets(
    fx: &std::collections::HashMap<String, common::FixtureTensor>,
    suffix: &str,
) -> (Vec<u32>, Vec<i32>) {
    let ids = common::get(fx, &format!("ids{suffix}"))
        .data
        .iter()
        .map(|&x| x as u32)
        .collect();
    let targets = common::get(fx, &format!("targets{suffix}"))
        .data
        .iter()
        .map(|&x| x as i32)
        .collect();
    (ids, targets)
}

fn check_variant(file: &str, norm: NormPlacement) {
    let fx = common::load(file);
    let mut model = load_model(&fx, norm);
    let (ids, targets) = ids_targets(&fx, "");
    let mut rng = Rng::new(0);
    model.forward(&ids, B, T, false, &mut rng).unwrap();
    common::assert_close(
        "logits",
        &model.logits,
        &common::get(&fx, "logits").data,
        MODEL_RTOL,
        MODEL_ATOL,
    );
    let loss = model.loss(&targets).unwrap();
    common::assert_close(
        "loss",
        &[loss],
        &common::get(&fx, "loss").data,
        MODEL_RTOL,
        0.0,
    );

    model.params.zero_grad();
    let loss2 = model
        .forward_backward(&ids, &targets, B, T, 0.0, 1.0, &mut rng)
        .unwrap();
    assert!((loss - loss2).abs() <= 1e-6 * loss.abs());
    for e in model.params.layout.entries().to_vec() {
        let want = common::get(&fx, &format!("grad.{}", e.name));
        common::assert_close(
            &format!("grad {}", e.name),
            &model.params.grad[e.param.range()],
            &want.data,
            MODEL_RTOL,
            MODEL_ATOL,
        );
    }

    // 20 AdamW steps: lr 1e-2, betas (0.9, 0.95), eps 1e-8, decay 0.1 on matrices, clip 1.0.
    let mut model = load_model(&fx, norm);
    let mut opt = AdamW::new(
        model.layout(),
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        },
    );
    let want = &common::get(&fx, "train.loss").data;
    assert_eq!(want.len(), TRAJECTORY_STEPS, "{file}: trajectory length");
    for (s, &w) in want.iter().enumerate() {
        let (ids, targets) = ids_targets(&fx, &format!(".{s}"));
        model.params.zero_grad();
        let loss = model
            .forward_backward(&ids, &targets, B, T, 0.0, 1.0, &mut rng)
            .unwrap();
        clip_grad_norm(&mut model.params.grad, 1.0);
        opt.update(&mut model.params, 1e-2);
        assert!(
            (loss - w).abs() <= TRAJECTORY_RTOL * w.abs(),
            "{file} step {s}: loss {loss} vs PyTorch {w}"
        );
    }
}

#[test]
fn pre_ln_gpt2_style_matches_pytorch() {
    check_variant("model/pre.safetensors", NormPlacement::Pre);
}

#[test]
fn post_ln_gpt1_style_matches_pytorch() {
    check_variant("model/post.safetensors", NormPlacement::Post);
}
