//! The annotated Transformer's first proof: the copy task. Random symbol sequences with
//! target = source; after a short training run, greedy and beam decoding reproduce held-out
//! sources exactly. Also: beam 1 equals greedy, and a beam's score equals the model's
//! recomputed log-probability of its output with the length penalty.

mod common;

use common::claims::{
    COPY_TASK_CACHE_RTOL, COPY_TASK_HELD_OUT, COPY_TASK_RESCORE_RTOL, COPY_TASK_STEPS,
};
use gpt::model::transformer::{EncoderDecoder, Seq2SeqBatch, TransformerConfig};
use gpt::optim::schedule::inverse_sqrt;
use gpt::optim::{AdamW, AdamWConfig};
use gpt::rng::Rng;
use gpt::translate::decode::{beam_search, greedy, length_penalty, DecodeConfig};

const V: usize = 13; // 0 pad, 1 bos, 2 eos, 3..13 symbols

fn random_seq(rng: &mut Rng) -> Vec<u32> {
    let len = 4 + rng.below(5) as usize;
    (0..len)
        .map(|_| 3 + rng.below((V - 3) as u64) as u32)
        .collect()
}

fn model_config() -> TransformerConfig {
    let mut cfg = TransformerConfig::preset("transformer-tiny", V, [0, 1, 2]).unwrap();
    cfg.d_model = 64;
    cfg.d_ff = 128;
    cfg.max_len = 64;
    cfg
}

/// Trains a small model on the copy task (a few seconds; `COPY_TASK_STEPS` with the Xavier init).
fn trained() -> EncoderDecoder {
    let cfg = model_config();
    let mut rng = Rng::new(7);
    let mut model = EncoderDecoder::new(cfg, &mut rng).unwrap();
    let adam = AdamWConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-9,
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(model.layout(), adam);
    for step in 1..=COPY_TASK_STEPS {
        let seqs: Vec<Vec<u32>> = (0..32).map(|_| random_seq(&mut rng)).collect();
        let pairs: Vec<(&[u32], &[u32])> = seqs.iter().map(|s| (&s[..], &s[..])).collect();
        let batch = Seq2SeqBatch::from_pairs(&pairs, &model.config);
        model.params.zero_grad();
        model.forward_backward(&batch, 0.0, 1.0, &mut rng).unwrap();
        let lr = 0.3 * inverse_sqrt(step, 64, 100);
        opt.update(&mut model.params, lr);
    }
    model
}

#[test]
fn copy_task_greedy_and_beam_reproduce_held_out_sources() {
    let mut model = trained();
    let mut rng = Rng::new(12345);
    let held_out: Vec<Vec<u32>> = (0..COPY_TASK_HELD_OUT)
        .map(|_| random_seq(&mut rng))
        .collect();
    let sources: Vec<&[u32]> = held_out.iter().map(|s| &s[..]).collect();
    let beam_cfg = DecodeConfig::default();
    let greedy_out = greedy(&mut model, &sources, &beam_cfg).unwrap();
    let beam_out = beam_search(&mut model, &sources, &beam_cfg).unwrap();
    for ((src, g), b) in held_out.iter().zip(&greedy_out).zip(&beam_out) {
        assert_eq!(&g.tokens, src, "greedy");
        assert_eq!(&b.tokens, src, "beam");
    }

    // Beam 1 equals greedy, tokens and log-probabilities.
    let one = DecodeConfig {
        beam: 1,
        ..DecodeConfig::default()
    };
    let beam1 = beam_search(&mut model, &sources, &one).unwrap();
    for (g, b) in greedy_out.iter().zip(&beam1) {
        assert_eq!(g.tokens, b.tokens);
        assert!((g.log_prob - b.log_prob).abs() < 1e-5);
    }

    // A beam's score is the recomputed log-probability over the length penalty; also on
    // inputs the model has not learned to copy (longer, so outputs differ).
    let odd: Vec<Vec<u32>> = (0..6)
        .map(|i| (0..12 + i).map(|j| 3 + ((j * 7 + i) % 10) as u32).collect())
        .collect();
    let mut all: Vec<&[u32]> = sources.clone();
    all.extend(odd.iter().map(|s| &s[..]));
    let hyps = beam_search(&mut model, &all, &beam_cfg).unwrap();
    for (src, h) in all.iter().zip(&hyps) {
        let batch = Seq2SeqBatch::from_pairs(&[(src, &h.tokens[..])], &model.config);
        let lp: f32 = model.target_log_probs(&batch).unwrap().iter().sum();
        let expect = h.score * length_penalty(h.tokens.len() + 1, beam_cfg.alpha);
        assert!(
            (lp - expect).abs() < COPY_TASK_RESCORE_RTOL * lp.abs().max(1.0),
            "recomputed {lp} vs beam {expect}"
        );
        assert!((lp - h.log_prob).abs() < COPY_TASK_RESCORE_RTOL * lp.abs().max(1.0));
    }

    // The KV-cache path equals recomputing the decoder over the whole prefix.
    let slow = DecodeConfig {
        recompute: true,
        ..beam_cfg
    };
    let oracle = beam_search(&mut model, &all, &slow).unwrap();
    for (a, b) in hyps.iter().zip(&oracle) {
        assert_eq!(a.tokens, b.tokens);
        assert!((a.score - b.score).abs() < COPY_TASK_CACHE_RTOL * a.score.abs().max(1.0));
    }
    let oracle = greedy(&mut model, &all, &slow).unwrap();
    let fast = greedy(&mut model, &all, &beam_cfg).unwrap();
    for (a, b) in oracle.iter().zip(&fast) {
        assert_eq!(a.tokens, b.tokens);
        assert!((a.log_prob - b.log_prob).abs() < COPY_TASK_CACHE_RTOL * a.log_prob.abs().max(1.0));
    }
}
