//! The baseline a log-key model must beat: an n-gram count model over keys (`<s>` padding, `</s>`
//! at the end) with DeepLog's top-g rule on the counts. A position is flagged when its context
//! of `n − 1` tokens was never seen in training, or when at least `g` continuations of that
//! context were seen more often than the true one (a continuation never seen counts as below
//! all). On HDFS this already catches the sessions that stop early, which are most anomalies.

use super::vocab::BOS;
use std::collections::HashMap;

/// Counts of the continuations of every context seen in training.
pub struct NgramModel {
    n: usize,
    counts: HashMap<Vec<u32>, HashMap<u32, u32>>,
}

impl NgramModel {
    /// Counts the `n`-grams of `seqs` (each `<s> ...`; the context is padded with `<s>`).
    pub fn train(n: usize, seqs: &[Vec<u32>]) -> NgramModel {
        let n = n.max(1);
        let mut counts: HashMap<Vec<u32>, HashMap<u32, u32>> = HashMap::new();
        for seq in seqs {
            for p in 1..seq.len() {
                *counts
                    .entry(context(seq, p, n))
                    .or_default()
                    .entry(seq[p])
                    .or_default() += 1;
            }
        }
        NgramModel { n, counts }
    }

    /// The rank of `seq[p]` among its context's continuations (continuations seen more often;
    /// `None` when the context or the continuation was never seen).
    pub fn rank(&self, seq: &[u32], p: usize) -> Option<usize> {
        let next = self.counts.get(&context(seq, p, self.n))?;
        let c = *next.get(&seq[p])?;
        Some(next.values().filter(|&&o| o > c).count())
    }

    /// Whether some position of `seq` is outside the top `g`.
    pub fn anomalous(&self, seq: &[u32], g: usize) -> bool {
        (1..seq.len()).any(|p| self.rank(seq, p).is_none_or(|r| r >= g))
    }

    /// The session's largest rank (`+∞` for an unseen context or continuation): its score.
    pub fn score(&self, seq: &[u32]) -> f64 {
        (1..seq.len())
            .map(|p| self.rank(seq, p).map_or(f64::INFINITY, |r| r as f64))
            .fold(0.0, f64::max)
    }
}

/// The `n − 1` tokens before position `p`, padded on the left with `<s>`.
fn context(seq: &[u32], p: usize, n: usize) -> Vec<u32> {
    let k = n - 1;
    (0..k)
        .map(|i| {
            let back = k - i;
            if p >= back {
                seq[p - back]
            } else {
                BOS
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseen_contexts_and_rare_continuations_are_flagged() {
        // <s>=0, </s>=1, keys 3, 4, 5.
        let train = vec![vec![0, 3, 4, 1], vec![0, 3, 4, 1], vec![0, 3, 5, 1]];
        let m = NgramModel::train(2, &train);
        assert_eq!(m.rank(&[0, 3, 4, 1], 2), Some(0));
        assert_eq!(m.rank(&[0, 3, 5, 1], 2), Some(1));
        assert!(!m.anomalous(&[0, 3, 5, 1], 2));
        assert!(m.anomalous(&[0, 3, 5, 1], 1));
        // Stopping early: `3 </s>` was never seen.
        assert!(m.anomalous(&[0, 3, 1], 9));
        assert_eq!(m.score(&[0, 3, 1]), f64::INFINITY);
        assert_eq!(m.score(&[0, 3, 5, 1]), 1.0);
        // A trigram's context is padded with <s>.
        let t = NgramModel::train(3, &train);
        assert_eq!(t.rank(&[0, 3, 4, 1], 1), Some(0));
        assert_eq!(t.rank(&[0, 4, 4, 1], 1), None);
    }
}
