//! Padding never changes a fine-tuning result. Batches are right-padded (see
//! `gpt::finetune::model`): with learned positions each row's tokens stay at positions
//! `0..len`, and causal attention keeps every position before the extract token blind to the
//! padding after it. Checked for every task kind:
//! - scores of examples run alone (no padding) = in a batch padded to its longest row = in a
//!   batch padded to the whole context (right padding), within 1e-5;
//! - the losses and every gradient of a training pass are the same at both padded lengths;
//! - left padding (the tokens moved to the end of the row) changes the scores: learned
//!   positions shift, which is why it is not used.

use gpt::finetune::model::{Batch, FinetuneModel};
use gpt::finetune::transform::Example;
use gpt::finetune::TaskKind;
use gpt::model::{Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::classifier::ClassifierHead;
use gpt::nn::mlp::Activation;
use gpt::rng::Rng;

const V: usize = 23;
const N_CTX: usize = 20;
const PAD: u32 = 20;
const EXTRACT: u32 = 22;

fn model(task: TaskKind, dropout: f32) -> FinetuneModel {
    let cfg = GptConfig {
        vocab_size: V,
        n_ctx: N_CTX,
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        dropout,
        bias: true,
        norm: NormPlacement::Pre,
        positions: Positions::Learned,
        activation: Activation::Gelu,
        ln_eps: 1e-5,
    };
    let k = if task == TaskKind::Choice { 1 } else { 3 };
    let (mut gpt, head) =
        Gpt::uninit_with(cfg, |l| ClassifierHead::new(l, 16, k, dropout)).unwrap();
    gpt.params.init(&mut Rng::new(11));
    // Larger weights than the default init, so differences would show.
    for x in gpt.params.data.iter_mut() {
        *x *= 5.0;
    }
    FinetuneModel::new(gpt, head, task)
}

fn examples(task: TaskKind) -> Vec<Example> {
    let per = match task {
        TaskKind::Classify | TaskKind::Entail => 1,
        TaskKind::Similar => 2,
        TaskKind::Choice => 3,
    };
    let mut rng = Rng::new(5);
    (0..4)
        .map(|i| Example {
            seqs: (0..per)
                .map(|j| {
                    let len = 3 + (i * 5 + j * 3) % 11;
                    let mut s: Vec<u32> = vec![PAD]; // the start token is the padding id
                    s.extend((0..len).map(|_| rng.below(20) as u32));
                    s.push(EXTRACT);
                    s
                })
                .collect(),
            label: Some(i % per.clamp(2, 3)),
            line: i + 1,
        })
        .collect()
}

fn scores(m: &mut FinetuneModel, b: &Batch) -> Vec<f32> {
    m.forward(b, false, &mut Rng::new(0)).unwrap();
    m.scores().to_vec()
}

/// Equal within 1e-5 relative to the largest magnitude (at least 1).
fn close(what: &str, a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len(), "{what}");
    let worst = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|x| x.abs()).fold(1.0, f32::max);
    assert!(
        worst <= 1e-5 * scale,
        "{what}: worst difference {worst} (scale {scale})"
    );
}

#[test]
fn right_padding_and_no_padding_agree_left_padding_does_not() {
    for task in TaskKind::ALL {
        let mut m = model(task, 0.0);
        let ex = examples(task);
        let refs: Vec<&Example> = ex.iter().collect();
        let alone: Vec<f32> = ex
            .iter()
            .flat_map(|e| scores(&mut m, &Batch::build(&[e], PAD, 0).unwrap()))
            .collect();
        let tight = Batch::build(&refs, PAD, 0).unwrap();
        let full = Batch::build(&refs, PAD, N_CTX).unwrap();
        assert!(tight.t < full.t && tight.lens.iter().any(|&l| l < tight.t));
        close(
            &format!("{task:?} right-padded"),
            &scores(&mut m, &tight),
            &alone,
        );
        close(
            &format!("{task:?} padded to n_ctx"),
            &scores(&mut m, &full),
            &alone,
        );

        // Left padding: the same tokens at the end of each row.
        let mut left = tight.clone();
        for (r, &len) in tight.lens.iter().enumerate() {
            let row = &tight.ids[r * tight.t..r * tight.t + len];
            let dst = &mut left.ids[r * tight.t..(r + 1) * tight.t];
            dst.fill(PAD);
            dst[tight.t - len..].copy_from_slice(row);
            left.lens[r] = tight.t; // the extract token is last
        }
        let l = scores(&mut m, &left);
        let worst = l
            .iter()
            .zip(&alone)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst > 1e-3,
            "{task:?}: left padding should move the positions"
        );

        // Training pass (λ = 0.5): losses and gradients independent of the padded length.
        let mut grads = Vec::new();
        let mut losses = Vec::new();
        for b in [&tight, &full] {
            m.gpt.params.zero_grad();
            losses.push(m.forward_backward(b, 0.5, 1.0, &mut Rng::new(3)).unwrap());
            grads.push(m.gpt.params.grad.clone());
        }
        close(
            &format!("{task:?} L3"),
            &[losses[0].total],
            &[losses[1].total],
        );
        close(
            &format!("{task:?} L1"),
            &[losses[0].lm.unwrap()],
            &[losses[1].lm.unwrap()],
        );
        close(&format!("{task:?} gradients"), &grads[0], &grads[1]);
    }
}
