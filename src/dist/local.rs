//! A [`Backend`] over threads of one process: several ranks in one test, no MPI needed. Every
//! collective is an exchange through shared slots between two barriers, and sums are taken in
//! rank order, so every rank gets bitwise the same result (as MPI's all-reduce gives).

use super::comm::{Backend, ReduceOp, World};
use crate::error::Result;
use std::sync::{Arc, Barrier, Mutex};

/// What the ranks of one group share.
struct Exchange {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<u64>>>,
}

/// One rank of a group of threads.
pub struct LocalBackend {
    rank: usize,
    shared: Arc<Exchange>,
}

impl LocalBackend {
    /// Puts `mine` in this rank's slot and returns every rank's, in rank order.
    fn exchange(&mut self, mine: Vec<u64>) -> Vec<Vec<u64>> {
        self.shared.slots.lock().unwrap_or_else(|p| p.into_inner())[self.rank] = mine;
        self.shared.barrier.wait();
        let all = self
            .shared
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.shared.barrier.wait();
        all
    }
}

impl Backend for LocalBackend {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    fn all_reduce_sum_f32(&mut self, send: &[f32], recv: &mut [f32]) {
        let all = self.exchange(send.iter().map(|x| x.to_bits() as u64).collect());
        recv.fill(0.0);
        for bits in &all {
            for (r, &b) in recv.iter_mut().zip(bits) {
                *r += f32::from_bits(b as u32);
            }
        }
    }

    fn all_reduce_f64(&mut self, send: &[f64], recv: &mut [f64], op: ReduceOp) {
        let all = self.exchange(send.iter().map(|x| x.to_bits()).collect());
        for (i, r) in recv.iter_mut().enumerate() {
            let values = all.iter().map(|bits| f64::from_bits(bits[i]));
            *r = match op {
                ReduceOp::Sum => values.sum(),
                ReduceOp::Max => values.fold(f64::NEG_INFINITY, f64::max),
            };
        }
    }

    fn all_gather_u64(&mut self, value: u64) -> Vec<u64> {
        self.exchange(vec![value])
            .into_iter()
            .map(|v| v[0])
            .collect()
    }

    fn all_gather_varcount_f32(&mut self, mine: &[f32], _counts: &[usize]) -> Vec<f32> {
        let all = self.exchange(mine.iter().map(|x| x.to_bits() as u64).collect());
        all.iter()
            .flatten()
            .map(|&b| f32::from_bits(b as u32))
            .collect()
    }

    fn barrier(&mut self) {
        self.shared.barrier.wait();
    }

    fn abort(&mut self, code: i32) {
        panic!("rank {} aborted the group with status {code}", self.rank);
    }
}

impl World {
    /// `n` ranks as threads of this process (tests): give one to each thread.
    pub fn local_group(n: usize) -> Result<Vec<World>> {
        let shared = Arc::new(Exchange {
            barrier: Barrier::new(n),
            slots: Mutex::new(vec![Vec::new(); n]),
        });
        (0..n)
            .map(|rank| {
                let shared = shared.clone();
                World::start(move || Ok(LocalBackend { rank, shared }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_of_threads_reduces_and_gathers_in_rank_order() {
        let worlds = World::local_group(3).unwrap();
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = worlds
                .iter()
                .map(|w| {
                    s.spawn(move || {
                        let r = w.rank() as f32;
                        let pending = w.post_all_reduce_sum(vec![r, 1.0]).unwrap();
                        let max = w
                            .all_reduce_f64(vec![w.rank() as f64], ReduceOp::Max)
                            .unwrap();
                        let ids = w.all_gather_u64(10 + w.rank() as u64).unwrap();
                        let mine = vec![r; w.rank() + 1];
                        let all = w.all_gather_varcount(mine, vec![1, 2, 3]).unwrap();
                        w.barrier().unwrap();
                        (pending.wait().unwrap(), max, ids, all)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, max, ids, all) in results {
            assert_eq!(sum, vec![3.0, 3.0]);
            assert_eq!(max, vec![2.0]);
            assert_eq!(ids, vec![10, 11, 12]);
            assert_eq!(all, vec![0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        }
    }

    #[test]
    fn solo_collectives_are_the_identity() {
        let w = World::solo();
        assert_eq!((w.rank(), w.size(), w.is_root()), (0, 1, true));
        assert_eq!(w.all_reduce_sum(vec![1.5, 2.0]).unwrap(), vec![1.5, 2.0]);
        assert_eq!(w.all_gather_u64(7).unwrap(), vec![7]);
        assert!(w.all_gather_varcount(vec![1.0], vec![2]).is_err());
    }
}
