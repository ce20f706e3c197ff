//! Whole-model checks of the encoder-decoder: finite-difference gradients of every tensor on a
//! padded batch with unequal source and target lengths (post-LN and pre-LN).

use gpt::model::transformer::{EncoderDecoder, Seq2SeqBatch, TransformerConfig};
use gpt::nn::block::NormPlacement;
use gpt::nn::mlp::Activation;
use gpt::rng::Rng;

fn batch(cfg: &TransformerConfig) -> Seq2SeqBatch {
    let a: &[u32] = &[5, 6, 7, 8, 9];
    let b: &[u32] = &[10, 3];
    let c: &[u32] = &[4, 4, 11, 12];
    Seq2SeqBatch::from_pairs(&[(a, b), (b, c), (c, a)], cfg)
}

fn gradcheck(norm: NormPlacement) {
    let mut cfg = TransformerConfig::preset("transformer-tiny", 14, [0, 1, 2]).unwrap();
    cfg.d_model = 12;
    cfg.n_head = 3;
    cfg.d_ff = 10;
    cfg.norm = norm;
    // GELU: ReLU's kinks make central differences unreliable at a few points.
    cfg.activation = Activation::Gelu;
    let mut rng = Rng::new(3);
    let mut m = EncoderDecoder::new(cfg.clone(), &mut rng).unwrap();
    // Non-trivial LayerNorm gains and biases.
    let entries = m.layout().entries().to_vec();
    for e in &entries {
        if e.name.ends_with(".bias") || e.name.contains("ln") {
            let mut noise = vec![0.0; e.param.len];
            rng.fill_normal(&mut noise, 0.0, 0.1);
            for (x, n) in e.param.of_mut(&mut m.params.data).iter_mut().zip(noise) {
                *x += n;
            }
        }
    }
    let b = batch(&cfg);
    m.params.zero_grad();
    let loss = m.forward_backward(&b, 0.1, 1.0, &mut rng).unwrap();
    let (l2, _) = m.loss(&b, 0.1).unwrap();
    assert!((loss - l2).abs() < 1e-6, "{loss} vs {l2}");
    let grad = m.params.grad.clone();
    let h = 2e-3f32;
    let mut worst = 0.0f64;
    for e in &entries {
        let r = e.param.range();
        let picks: Vec<usize> = r.clone().step_by((r.len() / 5).max(1)).collect();
        for i in picks {
            let orig = m.params.data[i];
            m.params.data[i] = orig + h;
            let lp = m.loss(&b, 0.1).unwrap().0 as f64;
            m.params.data[i] = orig - h;
            let lm = m.loss(&b, 0.1).unwrap().0 as f64;
            m.params.data[i] = orig;
            let num = (lp - lm) / (2.0 * h as f64);
            let an = grad[i] as f64;
            let err = (num - an).abs() / (num.abs() + an.abs()).max(1e-2);
            worst = worst.max(err);
            assert!(err < 2e-2, "{} [{i}]: numeric {num} analytic {an}", e.name);
        }
    }
    eprintln!("{norm:?}: worst relative error {worst:.2e}");
}

#[test]
fn gradients_match_finite_differences_post_ln() {
    gradcheck(NormPlacement::Post);
}

#[test]
fn gradients_match_finite_differences_pre_ln() {
    gradcheck(NormPlacement::Pre);
}

mod common;

/// Our loss and every parameter gradient equal PyTorch's (tools/fixtures_transformer.py) on a
/// padded batch of unequal source and target lengths, with label smoothing 0.1.
fn torch_fixture(name: &str, norm: NormPlacement) {
    let fx = common::load(&format!("transformer/{name}.safetensors"));
    let mut cfg = TransformerConfig::preset("transformer-tiny", 19, [0, 1, 2]).unwrap();
    cfg.d_model = 16;
    cfg.n_head = 4;
    cfg.d_ff = 24;
    cfg.n_layer = 2;
    cfg.norm = norm;
    cfg.dropout = 0.0;
    let mut m = EncoderDecoder::uninit(cfg.clone()).unwrap();
    let entries = m.layout().entries().to_vec();
    for e in &entries {
        let t = &fx[&format!("param.{}", e.name)];
        assert_eq!(t.shape, e.shape, "{}", e.name);
        m.params.data[e.param.range()].copy_from_slice(&t.data);
    }
    // The same batch built by our batching.
    let pairs: [(&[u32], &[u32]); 3] = [
        (&[5, 6, 7, 8, 9], &[10, 3]),
        (&[10, 3], &[4, 4, 11, 12, 13, 14]),
        (&[4, 4, 11, 12], &[5, 6, 7]),
    ];
    let b = Seq2SeqBatch::from_pairs(&pairs, &cfg);
    let as_u32 = |k: &str| fx[k].data.iter().map(|&x| x as u32).collect::<Vec<_>>();
    assert_eq!(b.src, as_u32("src"));
    assert_eq!(b.tgt_in, as_u32("tgt_in"));
    assert_eq!(
        b.tgt_out,
        fx["tgt_out"]
            .data
            .iter()
            .map(|&x| x as i32)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        b.src_mask,
        fx["src_mask"]
            .data
            .iter()
            .map(|&x| x as u8)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        b.tgt_mask,
        fx["tgt_mask"]
            .data
            .iter()
            .map(|&x| x as u8)
            .collect::<Vec<_>>()
    );
    m.params.zero_grad();
    let loss = m.forward_backward(&b, 0.1, 1.0, &mut Rng::new(0)).unwrap();
    let want = fx["loss"].data[0];
    assert!(
        (loss - want).abs() <= 1e-4 * want.abs(),
        "loss {loss} vs {want}"
    );
    for e in &entries {
        let theirs = &fx[&format!("grad.{}", e.name)].data;
        let ours = e.param.of(&m.params.grad);
        let scale = theirs.iter().fold(0.0f32, |a, &x| a.max(x.abs())).max(1e-6);
        let worst = ours
            .iter()
            .zip(theirs)
            .fold(0.0f32, |a, (x, y)| a.max((x - y).abs()));
        assert!(
            worst <= common::claims::TRANSFORMER_GRAD_REL * scale,
            "{name} {}: max |ours - torch| = {worst:e}, max |torch| = {scale:e}",
            e.name
        );
    }
}

#[test]
fn loss_and_gradients_equal_pytorch_post_ln() {
    torch_fixture("post", NormPlacement::Post);
}

#[test]
fn loss_and_gradients_equal_pytorch_pre_ln() {
    torch_fixture("pre", NormPlacement::Pre);
}
