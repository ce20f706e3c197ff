//! Decoding against exhaustive search, and the batch and averaging plumbing around it:
//! - on a 7-token vocabulary every output sequence is enumerated and scored by the training
//!   forward (teacher forcing): a beam as wide as that set finds the best one, every returned
//!   hypothesis carries its true log-probability, and beam 4 never scores below greedy (and
//!   beats it on some source);
//! - `translate_in_batches` returns hypotheses in input order whatever the batch size, and
//!   `translate_lines` counts the sources it truncated;
//! - `average` averages the whole parameter vector, not a prefix or the last checkpoint.

use gpt::model::transformer::{EncoderDecoder, Seq2SeqBatch, TransformerConfig};
use gpt::rng::Rng;
use gpt::translate::checkpoint::{average, load_model, save_model};
use gpt::translate::decode::{beam_search, greedy, length_penalty, DecodeConfig};
use gpt::translate::{translate_in_batches, translate_lines};

const V: usize = 7;
/// Real (non-special) tokens: 3..V.
const REAL: std::ops::Range<u32> = 3..V as u32;

fn model(seed: u64) -> EncoderDecoder {
    let mut cfg = TransformerConfig::preset("transformer-tiny", V, [0, 1, 2]).unwrap();
    cfg.dropout = 0.0;
    let mut m = EncoderDecoder::new(cfg, &mut Rng::new(seed)).unwrap();
    // Larger weights than the init so that next-token distributions are peaked and differ
    // between prefixes: otherwise every search returns the same sequence.
    m.params.data.iter_mut().for_each(|x| *x *= 4.0);
    m
}

/// Every output of at most `max_out - 1` real tokens (EOS is then forced), as decoding allows.
fn all_outputs(max_out: usize) -> Vec<Vec<u32>> {
    let mut out = vec![Vec::new()];
    let mut frontier = vec![Vec::new()];
    for _ in 1..max_out {
        let mut next = Vec::new();
        for p in &frontier {
            for id in REAL {
                let mut q: Vec<u32> = p.clone();
                q.push(id);
                next.push(q);
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

/// `log p(tokens + EOS | src)` by the training forward.
fn true_log_prob(m: &mut EncoderDecoder, src: &[u32], tokens: &[u32]) -> f32 {
    let batch = Seq2SeqBatch::from_pairs(&[(src, tokens)], &m.config);
    m.target_log_probs(&batch).unwrap().iter().sum()
}

#[test]
fn beam_search_against_exhaustive_search_and_greedy() {
    let mut m = model(11);
    let alpha = 0.6;
    // Every source of one or two real tokens.
    let mut sources: Vec<Vec<u32>> = REAL.map(|a| vec![a]).collect();
    for a in REAL {
        sources.extend(REAL.map(|b| vec![a, b]));
    }
    let mut beam_won = 0;
    for src in &sources {
        let max_out = src.len() + 1 + 1; // max_extra = 1
        let mut best: Option<(f32, Vec<u32>)> = None;
        for out in all_outputs(max_out) {
            let lp = true_log_prob(&mut m, src, &out);
            let score = lp / length_penalty(out.len() + 1, alpha);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, out));
            }
        }
        let (best_score, best_tokens) = best.unwrap();
        let cfg = |beam| DecodeConfig {
            beam,
            alpha,
            max_extra: 1,
            recompute: false,
        };
        let wide = beam_search(&mut m, &[src], &cfg(200)).unwrap().remove(0);
        assert_eq!(wide.tokens, best_tokens, "source {src:?}");
        assert!(
            (wide.score - best_score).abs() < 1e-4,
            "{} vs {best_score}",
            wide.score
        );
        let narrow = beam_search(&mut m, &[src], &cfg(4)).unwrap().remove(0);
        let g = greedy(&mut m, &[src], &cfg(1)).unwrap().remove(0);
        for h in [&wide, &narrow, &g] {
            let lp = true_log_prob(&mut m, src, &h.tokens);
            assert!((h.log_prob - lp).abs() < 1e-4, "{src:?} {h:?}: true {lp}");
        }
        let greedy_score = g.log_prob / length_penalty(g.tokens.len() + 1, alpha);
        assert!(
            narrow.score >= greedy_score - 1e-4,
            "{src:?}: {narrow:?} vs {g:?}"
        );
        assert!(
            narrow.score <= best_score + 1e-4,
            "{src:?}: {narrow:?} vs best {best_score} {best_tokens:?} wide {wide:?}"
        );
        if narrow.score > greedy_score + 1e-4 {
            beam_won += 1;
        }
    }
    assert!(
        beam_won > 0,
        "beam 4 never beat greedy: the test model is too flat"
    );
}

#[test]
fn batches_keep_input_order_and_truncations_are_counted() {
    let mut m = model(12);
    let sources: Vec<Vec<u32>> = (0..9)
        .map(|i| {
            (0..1 + (i * 5) % 7)
                .map(|j| 3 + ((i + j) % 4) as u32)
                .collect()
        })
        .collect();
    let cfg = DecodeConfig {
        beam: 3,
        alpha: 0.6,
        max_extra: 2,
        recompute: false,
    };
    let one_by_one: Vec<_> = sources
        .iter()
        .map(|s| beam_search(&mut m, &[&s[..]], &cfg).unwrap().remove(0))
        .collect();
    for batch in [1, 2, 4, 9, 20] {
        let got = translate_in_batches(&mut m, &sources, &cfg, batch).unwrap();
        assert_eq!(got.len(), sources.len());
        for (i, (a, b)) in got.iter().zip(&one_by_one).enumerate() {
            assert_eq!(a.tokens, b.tokens, "source {i}, batch {batch}");
        }
    }
    // translate_lines truncates sources over the model's limit and counts them.
    let (mut tok_model, tok) = {
        let dir = std::env::temp_dir().join(format!("gpt-beam-tok-{}", std::process::id()));
        let pairs: Vec<(String, String)> = (0..40)
            .map(|i| (format!("uno dos {i}"), format!("one two {i}")))
            .collect();
        let tok = gpt::translate::data::train_joint_bpe(&pairs, 300).unwrap();
        let [pad, bos, eos] = gpt::translate::data::special_ids(&tok).unwrap();
        let mut cfg =
            TransformerConfig::preset("transformer-tiny", tok.vocab_size(), [pad, bos, eos])
                .unwrap();
        cfg.max_len = 8;
        let m = EncoderDecoder::new(cfg, &mut Rng::new(1)).unwrap();
        save_model(&m, &tok, &dir, None).unwrap();
        let loaded = load_model(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    };
    let long = "uno dos ".repeat(20);
    let lines = vec!["uno".to_string(), long.clone(), "dos".into(), long];
    let short = DecodeConfig {
        max_extra: 1,
        ..cfg
    };
    let (out, truncated) = translate_lines(&mut tok_model, &tok, &lines, &short, 2).unwrap();
    assert_eq!((out.len(), truncated), (4, 2));
}

#[test]
fn averaging_covers_the_whole_parameter_vector() {
    let base = std::env::temp_dir().join(format!("gpt-avg-{}", std::process::id()));
    let pairs: Vec<(String, String)> = (0..30)
        .map(|i| (format!("a b {i}"), format!("c d {i}")))
        .collect();
    let tok = gpt::translate::data::train_joint_bpe(&pairs, 280).unwrap();
    let specials = gpt::translate::data::special_ids(&tok).unwrap();
    let cfg = TransformerConfig::preset("transformer-tiny", tok.vocab_size(), specials).unwrap();
    let models: Vec<EncoderDecoder> = (0..3)
        .map(|s| EncoderDecoder::new(cfg.clone(), &mut Rng::new(s)).unwrap())
        .collect();
    let dirs: Vec<_> = (0..3).map(|i| base.join(format!("ckpt{i}"))).collect();
    for (m, d) in models.iter().zip(&dirs) {
        save_model(m, &tok, d, None).unwrap();
    }
    let out = base.join("avg");
    average(&dirs, &out).unwrap();
    let (avg, _) = load_model(&out).unwrap();
    let n = avg.params.data.len();
    assert_eq!(n, models[0].params.data.len());
    for i in 0..n {
        let want = models.iter().map(|m| m.params.data[i] as f64).sum::<f64>() / 3.0;
        let got = avg.params.data[i] as f64;
        assert!(
            (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
            "parameter {i} of {n}: {got} vs mean {want}"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
