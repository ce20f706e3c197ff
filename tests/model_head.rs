//! The seam a task head plugs into: a module registered after the trunk with
//! [`Gpt::uninit_with`], fed by [`Gpt::forward_hidden`], its gradient sent back with
//! [`Gpt::backward_hidden`]. Checked by central finite differences through the whole model
//! (both LayerNorm placements), with a scalar "reward" head `Linear(C, 1)` on each sequence's
//! last position: `L = Σ_b r_b · score(h[b, T-1])`.

use gpt::kernels::matmul::WeightLayout;
use gpt::model::{Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::linear::Linear;
use gpt::nn::mlp::Activation;
use gpt::nn::weights::Weights;
use gpt::rng::Rng;

const B: usize = 2;
const T: usize = 5;
const C: usize = 12;

fn config(norm: NormPlacement) -> GptConfig {
    GptConfig {
        vocab_size: 11,
        n_ctx: 8,
        n_layer: 2,
        n_head: 3,
        n_embd: C,
        dropout: 0.0,
        bias: true,
        norm,
        positions: Positions::Learned,
        activation: Activation::Gelu,
        ln_eps: 1e-5,
    }
}

/// The head's input: the last position of every sequence, `(B, C)`.
fn last_rows(h: &[f32]) -> Vec<f32> {
    (0..B)
        .flat_map(|b| h[(b * T + T - 1) * C..(b * T + T) * C].iter().copied())
        .collect()
}

/// `L(θ)` in f64 from a forward in evaluation mode.
fn loss(model: &mut Gpt, head: &Linear, ids: &[u32], r: &[f32]) -> f64 {
    let mut rng = Rng::new(0);
    model.forward_hidden(ids, B, T, false, &mut rng).unwrap();
    let x = last_rows(model.hidden());
    let mut score = vec![0.0; B];
    head.forward(Weights::new(&model.params.data), &mut score, &x, B);
    score
        .iter()
        .zip(r)
        .map(|(s, r)| *s as f64 * *r as f64)
        .sum()
}

#[test]
fn a_head_registered_after_the_trunk_gets_exact_gradients_through_it() {
    for norm in [NormPlacement::Pre, NormPlacement::Post] {
        let (mut model, head) = Gpt::uninit_with(config(norm), |layout| {
            Linear::new(layout, "score", C, 1, true, WeightLayout::OutIn, 0.2)
        })
        .unwrap();
        let mut rng = Rng::new(7);
        model.params.init(&mut rng);
        // The head's tensors come after every trunk tensor.
        let names: Vec<&str> = model
            .layout()
            .entries()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(&names[names.len() - 2..], &["score.weight", "score.bias"]);
        let ids: Vec<u32> = (0..B * T).map(|i| ((i * 7 + 3) % 11) as u32).collect();
        let r = [0.7f32, -1.3];

        // Analytic: head backward into dh (last positions only), then the trunk.
        model.params.zero_grad();
        model.forward_hidden(&ids, B, T, true, &mut rng).unwrap();
        let x = last_rows(model.hidden());
        let mut dx = vec![0.0; B * C];
        {
            let p = Weights::new(&model.params.data);
            head.backward(p, &mut model.params.grad, Some(&mut dx), &r, &x, B);
        }
        let mut dh = vec![0.0; B * T * C];
        for b in 0..B {
            dh[(b * T + T - 1) * C..(b * T + T) * C].copy_from_slice(&dx[b * C..(b + 1) * C]);
        }
        model.backward_hidden(&dh);
        let grads = model.params.grad.clone();

        // Central differences on a spread of parameters of every tensor.
        let entries: Vec<_> = model.layout().entries().to_vec();
        let h = 2e-3f32;
        let mut checked = 0;
        for e in &entries {
            let n = e.param.len;
            for i in (0..n).step_by((n / 5).max(1)) {
                let at = e.param.offset + i;
                let orig = model.params.data[at];
                model.params.data[at] = orig + h;
                let lp = loss(&mut model, &head, &ids, &r);
                model.params.data[at] = orig - h;
                let lm = loss(&mut model, &head, &ids, &r);
                model.params.data[at] = orig;
                let fd = (lp - lm) / (2.0 * h as f64);
                let an = grads[at] as f64;
                let tol = 2e-3 + 2e-2 * fd.abs().max(an.abs());
                assert!(
                    (fd - an).abs() <= tol,
                    "{norm:?} {}[{i}]: finite difference {fd} vs analytic {an}",
                    e.name
                );
                checked += 1;
            }
        }
        assert!(checked > 100, "only {checked} parameters checked");
        // The gradient reached the embeddings through every block.
        let wte = model.layout().get("wte.weight").unwrap().param;
        assert!(wte.of(&grads).iter().any(|&g| g != 0.0));
    }
}
