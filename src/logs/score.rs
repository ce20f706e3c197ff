//! Scores every position of token sequences under a log-key model: the negative
//! log-likelihood of the true next token and its rank among the model's predictions (0: the most
//! likely), and on request the model's `g` most likely tokens there (DeepLog's "diagnosis").
//!
//! Sequences longer than the context go through in overlapping windows ([`windows`]), so every
//! position is predicted once, with at least half a context of history. Windows of many
//! sequences share one batched forward.

use super::sessions::{windows, Window};
use super::vocab::UNK;
use crate::chat::encode::Encoded;
use crate::chat::sft::SftBatch;
use crate::error::Result;
use crate::model::Gpt;
use crate::rng::Rng;

/// The model's view of one position of a sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct PositionScore {
    /// Index of the token in its sequence (≥ 1: the first token is `<s>`, never predicted).
    pub pos: usize,
    /// `-log p(token | tokens before it)` in nats; `+∞` for a key unseen in training.
    pub nll: f32,
    /// Tokens the model finds strictly more likely than the true one (`u32::MAX` for an unseen
    /// key).
    pub rank: u32,
    /// The `top` most likely tokens, most likely first (empty unless asked for).
    pub top: Vec<u32>,
}

/// Scores `seqs` (each `<s> ...`) with `gpt`, `batch` windows per forward; `top`: how many of
/// the most likely tokens to keep per position (0: none). One vector per sequence, its
/// positions `1..len` in order.
pub fn score_sequences(
    gpt: &mut Gpt,
    seqs: &[Vec<u32>],
    batch: usize,
    top: usize,
) -> Result<Vec<Vec<PositionScore>>> {
    let n_ctx = gpt.config.n_ctx;
    let vocab = gpt.config.vocab_size;
    // (sequence, window) of every window, and the rows as the SFT batcher wants them.
    let mut jobs = Vec::new();
    for (s, seq) in seqs.iter().enumerate() {
        for w in windows(seq.len(), n_ctx) {
            jobs.push((s, w));
        }
    }
    let mut out: Vec<Vec<PositionScore>> = seqs
        .iter()
        .map(|s| Vec::with_capacity(s.len().saturating_sub(1)))
        .collect();
    for chunk in jobs.chunks(batch.max(1)) {
        let rows: Vec<Encoded> = chunk
            .iter()
            .map(|&(s, w)| window_row(&seqs[s], w))
            .collect();
        let refs: Vec<&Encoded> = rows.iter().collect();
        let b = SftBatch::padded(&refs, super::vocab::BOS);
        gpt.forward_hidden_packed(&b.ids, None, b.b, b.t, false, &mut Rng::new(0))?;
        let logits = gpt.lm_logits_rows(&b.targets)?;
        let mut k = 0;
        for &(s, w) in chunk {
            let scored = &seqs[s][w.scored_from..w.start + w.len];
            for (i, &target) in scored.iter().enumerate() {
                let row = &logits[k * vocab..(k + 1) * vocab];
                k += 1;
                out[s].push(position_score(row, target, w.scored_from + i, top));
            }
        }
    }
    Ok(out)
}

/// The model's row of window `w` of `seq`: its tokens, the positions it predicts trained.
pub fn window_row(seq: &[u32], w: Window) -> Encoded {
    Encoded {
        ids: seq[w.start..w.start + w.len].to_vec(),
        trained: (w.start..w.start + w.len)
            .map(|p| p >= w.scored_from)
            .collect(),
    }
}

/// NLL, rank and top tokens of `target` under the logits `row`.
fn position_score(row: &[f32], target: u32, pos: usize, top: usize) -> PositionScore {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_z = max + row.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
    let mut best = Vec::new();
    if top > 0 {
        let mut order: Vec<u32> = (0..row.len() as u32).collect();
        order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]));
        order.truncate(top);
        best = order;
    }
    if target == UNK {
        return PositionScore {
            pos,
            nll: f32::INFINITY,
            rank: u32::MAX,
            top: best,
        };
    }
    let t = row[target as usize];
    PositionScore {
        pos,
        nll: log_z - t,
        rank: row.iter().filter(|&&l| l > t).count() as u32,
        top: best,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_score_is_the_log_softmax_and_the_rank() {
        // Id 2 is `<unk>`; the target is key 4 with logit 2.
        let row = [1.0f32, 3.0, 0.0, 0.5, 2.0];
        let z: f32 = row.iter().map(|l| l.exp()).sum();
        let s = position_score(&row, 4, 4, 2);
        assert!((s.nll - (z.ln() - 2.0)).abs() < 1e-5);
        assert_eq!(s.rank, 1);
        assert_eq!(s.top, [1, 4]);
        assert_eq!(s.pos, 4);
        let u = position_score(&row, UNK, 1, 0);
        assert!(u.nll.is_infinite() && u.rank == u32::MAX && u.top.is_empty());
    }
}
