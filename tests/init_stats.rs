//! Initialisation statistics of every tensor, against the papers' rules written out here from
//! the tensor's name and shape (not read from the layout's `Init`):
//! - GPT-2: N(0, 0.02) for embeddings and matrices, N(0, 0.02/√(2L)) for the residual output
//!   projections (`attn.c_proj`, `mlp.c_proj`), zero biases, unit LayerNorm gains;
//! - the encoder-decoder: embeddings N(0, C^-½), Xavier variance 2/(fan_in + fan_out) for every
//!   projection, with query/key/value counted as PyTorch's one `in_proj (3C, C)`.
//!
//! A sample standard deviation of n draws has a relative standard error of 1/√(2n); the checks
//! allow 6 of those (and 6/√n of the std for the mean), so they fail on a wrong rule, not on luck.

use gpt::model::transformer::{EncoderDecoder, TransformerConfig};
use gpt::model::{Gpt, GptConfig};
use gpt::rng::Rng;

/// Checks that `x` looks like n draws of N(0, std²), or is constant `constant`.
fn check(name: &str, x: &[f32], expected: Result<f64, f32>) {
    match expected {
        Err(constant) => assert!(
            x.iter().all(|&v| v == constant),
            "{name}: expected all {constant}"
        ),
        Ok(std) => {
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let got = var.sqrt();
            let rel = (got / std - 1.0).abs();
            assert!(
                rel < 6.0 / (2.0 * n).sqrt(),
                "{name}: std {got:.5} vs {std:.5} ({n} values)"
            );
            assert!(mean.abs() < 6.0 * std / n.sqrt(), "{name}: mean {mean:.5}");
        }
    }
}

#[test]
fn gpt2_initialisation_per_tensor() {
    let n_layer = 6;
    let cfg = GptConfig {
        n_layer,
        n_head: 4,
        n_embd: 64,
        n_ctx: 128,
        ..GptConfig::tiny(1000)
    };
    let m = Gpt::new(cfg, &mut Rng::new(7)).unwrap();
    let proj = 0.02 / (2.0 * n_layer as f64).sqrt();
    let mut seen = 0;
    for e in m.params.layout.entries() {
        let x = e.param.of(&m.params.data);
        let n = &e.name;
        let expected = if n.ends_with(".bias") || (n.starts_with("ln") && n.ends_with("bias")) {
            Err(0.0)
        } else if n.contains("ln_") && n.ends_with(".weight") {
            Err(1.0)
        } else if n.ends_with("c_proj.weight") {
            Ok(proj)
        } else if n.ends_with(".weight") {
            Ok(0.02)
        } else {
            panic!("unexpected tensor {n}")
        };
        check(n, x, expected);
        seen += 1;
    }
    assert_eq!(seen, 2 + 12 * n_layer + 2, "wte, wpe, 12 per block, ln_f");
}

#[test]
fn encoder_decoder_initialisation_per_tensor() {
    let mut cfg = TransformerConfig::preset("transformer-tiny", 900, [0, 1, 2]).unwrap();
    cfg.d_model = 64;
    cfg.n_head = 4;
    cfg.d_ff = 128;
    let c = cfg.d_model as f64;
    let m = EncoderDecoder::new(cfg, &mut Rng::new(8)).unwrap();
    let mut matrices = 0;
    for e in m.layout().entries() {
        let x = e.param.of(&m.params.data);
        let n = &e.name;
        let expected = if n == "embed.weight" {
            Ok(c.powf(-0.5))
        } else if n.ends_with(".bias") {
            Err(0.0)
        } else if n.contains("ln") && n.ends_with(".weight") {
            Err(1.0)
        } else if e.shape.len() == 2 {
            matrices += 1;
            // PyTorch's in_proj_weight (3C, C): fan_in C, fan_out 3C, whichever of q, k, v
            // (or the cross-attention's q and kv halves) this tensor holds.
            let qkv = [
                ".attn.c_attn.weight",
                "attention.q_attn.weight",
                "attention.c_attn.weight",
            ]
            .iter()
            .any(|s| n.ends_with(s));
            let fans = if qkv {
                4.0 * c
            } else {
                (e.shape[0] + e.shape[1]) as f64
            };
            Ok((2.0 / fans).sqrt())
        } else {
            panic!("unexpected tensor {n} {:?}", e.shape)
        };
        check(n, x, expected);
    }
    // Per layer: encoder c_attn, c_proj, c_fc, c_proj (4); decoder those + q_attn, c_attn,
    // c_proj of cross-attention (7).
    assert_eq!(matrices, 2 * (4 + 7));
}
