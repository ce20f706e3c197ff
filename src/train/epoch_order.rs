//! Epoch-based data order for tasks that visit a fixed set of examples (fine-tuning, SFT,
//! reward models, DPO): each epoch visits every example once in an order shuffled from the
//! seed and the epoch number, and a micro-batch is the next `batch` of them (the last of an
//! epoch may be smaller). Exact resume needs only the [`Cursor`].

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Where the data order stands: the epoch and the position in its order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Epochs completed.
    pub epoch: u64,
    /// Examples of this epoch already visited.
    pub pos: usize,
}

/// The shuffled order of `n` examples, epoch after epoch.
#[derive(Clone, Debug)]
pub struct EpochOrder {
    n: usize,
    seed: u64,
    order: Vec<usize>,
    /// Where the order stands.
    pub cursor: Cursor,
}

impl EpochOrder {
    /// The order of `n` examples shuffled from `seed`, at its start.
    pub fn new(n: usize, seed: u64) -> EpochOrder {
        let mut o = EpochOrder {
            n,
            seed,
            order: Vec::new(),
            cursor: Cursor::default(),
        };
        o.order = o.order_of(0);
        o
    }

    /// The order of epoch `epoch`: a seeded Fisher-Yates shuffle.
    fn order_of(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.n).collect();
        let mut rng = Rng::new(self.seed ^ 0x0F1E_7E5E ^ epoch.wrapping_mul(0x9E37_79B9));
        for i in (1..self.n).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        order
    }

    /// Moves to `cursor` (resume).
    pub fn seek(&mut self, cursor: Cursor) {
        self.cursor = cursor;
        self.order = self.order_of(cursor.epoch);
    }

    /// The indices of the next micro-batch of at most `batch` examples.
    pub fn next(&mut self, batch: usize) -> Vec<usize> {
        let end = (self.cursor.pos + batch).min(self.n);
        let picked = self.order[self.cursor.pos..end].to_vec();
        self.cursor.pos = end;
        if end == self.n {
            self.seek(Cursor {
                epoch: self.cursor.epoch + 1,
                pos: 0,
            });
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_visits_each_example_once_and_seek_resumes() {
        let mut o = EpochOrder::new(10, 3);
        let mut seen: Vec<usize> = (0..4).flat_map(|_| o.next(3)).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        let cursor = o.cursor;
        let want = o.next(3);
        let mut again = EpochOrder::new(10, 3);
        again.seek(cursor);
        assert_eq!(again.next(3), want);
    }
}
