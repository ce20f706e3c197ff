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
    /// Data parallelism, `(rank, ranks)`: see [`EpochOrder::set_shard`].
    shard: (usize, usize),
}

impl EpochOrder {
    /// The order of `n` examples shuffled from `seed`, at its start.
    pub fn new(n: usize, seed: u64) -> EpochOrder {
        let mut o = EpochOrder {
            n,
            seed,
            order: Vec::new(),
            cursor: Cursor::default(),
            shard: (0, 1),
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

    /// Data parallelism: this order is rank `rank`'s of `ranks`. Every rank walks the same
    /// order, and [`EpochOrder::next`] takes the next `ranks · batch` examples and gives this
    /// rank its share; where an epoch's end leaves fewer, they are shared out evenly and padded
    /// by repeating the first ones (as PyTorch's `DistributedSampler` pads), so that no rank
    /// gets an empty batch. The cursor stays one for all ranks.
    pub fn set_shard(&mut self, rank: usize, ranks: usize) {
        self.shard = (rank.min(ranks.max(1) - 1), ranks.max(1));
    }

    /// `(rank, ranks)` of [`EpochOrder::set_shard`]; `(0, 1)` alone.
    pub fn shard(&self) -> (usize, usize) {
        self.shard
    }

    /// The indices of the next micro-batch of at most `batch` examples (this rank's share with
    /// [`EpochOrder::set_shard`]).
    pub fn next(&mut self, batch: usize) -> Vec<usize> {
        let (rank, ranks) = self.shard;
        if ranks == 1 {
            return self.next_all(batch);
        }
        let all = self.next_all(batch * ranks);
        let each = all.len().div_ceil(ranks).max(1);
        (rank * each..(rank + 1) * each)
            .map(|i| all[i % all.len()])
            .collect()
    }

    fn next_all(&mut self, batch: usize) -> Vec<usize> {
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
    fn ranks_share_out_each_global_batch_and_pad_the_epoch_end() {
        let mut one = EpochOrder::new(10, 5);
        let mut ranks: Vec<EpochOrder> = (0..3)
            .map(|r| {
                let mut o = EpochOrder::new(10, 5);
                o.set_shard(r, 3);
                o
            })
            .collect();
        // Global batches of 3 × 2: 6, then the epoch's last 4 (2 each, the third rank padded).
        for want in [6, 4] {
            let global = one.next(want.min(6));
            let shares: Vec<Vec<usize>> = ranks.iter_mut().map(|o| o.next(2)).collect();
            let flat: Vec<usize> = shares.concat();
            assert!(shares.iter().all(|s| !s.is_empty()));
            assert_eq!(&flat[..global.len()], &global[..]);
            for extra in &flat[global.len()..] {
                assert!(
                    global.contains(extra),
                    "padding repeats the batch's own examples"
                );
            }
        }
        assert!(ranks.iter().all(|o| o.cursor == one.cursor));
    }

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
