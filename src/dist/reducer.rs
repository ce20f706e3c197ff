//! The gradient all-reduce of data parallelism, in buckets that overlap the backward pass.
//!
//! Backward runs from the last block to the first, and the flat parameter buffer holds the
//! blocks in order (`wte, wpe, h.0 … h.{L-1}, ln_f`), so when block `l` is done every gradient
//! from its first parameter to the end of the buffer is final. The model reports that offset
//! ([`GradReducer::ready_from`], through a [`crate::nn::stack::GradHook`]); once the finished
//! part not yet sent is a bucket's worth, it is copied out and queued on the communication
//! thread, which all-reduces it while backward goes on with the earlier blocks. After backward,
//! [`GradReducer::finish`] queues the rest (the embeddings), waits for every bucket and writes
//! the averages back. A task without the hook still works: everything goes in `finish`.
//!
//! Only the last micro-batch of an optimizer step is reduced ([`GradReducer::arm`]); the
//! earlier ones accumulate locally, as in PyTorch DDP's `no_sync`.

use super::comm::{Pending, World};
use crate::error::Result;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default bucket size in values (4 Mi values = 16 MiB of f32; PyTorch DDP's default is 25 MiB).
pub const DEFAULT_BUCKET: usize = 4 << 20;

/// A bucket on its way: where it goes and its pending sum.
struct InFlight {
    offset: usize,
    sum: Pending<Vec<f32>>,
}

struct State {
    armed: bool,
    /// Everything at and after this offset has been queued.
    sent_from: usize,
    in_flight: Vec<InFlight>,
    /// The first error of a queue, reported by `finish`.
    error: Option<crate::error::Error>,
    /// Buffers of earlier buckets, reused (their pages are mapped already).
    pool: Vec<Vec<f32>>,
}

/// Bucketed, overlapped gradient averaging over a [`World`]. Shared (`Arc`) between the loop
/// and the model's hook.
pub struct GradReducer {
    world: World,
    total: usize,
    bucket: usize,
    state: Mutex<State>,
}

impl GradReducer {
    /// A reducer of a gradient buffer of `total` values with buckets of at least `bucket`.
    pub fn new(world: World, total: usize, bucket: usize) -> Arc<GradReducer> {
        Arc::new(GradReducer {
            world,
            total,
            bucket: bucket.max(1),
            state: Mutex::new(State {
                armed: false,
                sent_from: total,
                in_flight: Vec::new(),
                error: None,
                pool: Vec::new(),
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; the state is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the backward pass whose gradients are to be reduced (the step's last micro-batch).
    pub fn arm(&self) {
        let mut s = self.state();
        s.armed = true;
        s.sent_from = self.total;
        s.in_flight.clear();
        s.error = None;
    }

    /// Backward has finished every gradient from `offset` to the end of `grad`: queue a bucket
    /// if enough is waiting.
    pub fn ready_from(&self, offset: usize, grad: &[f32]) {
        let mut s = self.state();
        if !s.armed || offset >= s.sent_from || s.sent_from - offset < self.bucket {
            return;
        }
        let end = s.sent_from;
        self.queue(&mut s, offset, &grad[offset..end]);
        s.sent_from = offset;
    }

    fn queue(&self, s: &mut State, offset: usize, values: &[f32]) {
        let mut buf = s.pool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(values);
        match self.world.post_all_reduce_sum(buf) {
            Ok(sum) => s.in_flight.push(InFlight { offset, sum }),
            Err(e) => {
                s.error.get_or_insert(e);
            }
        }
    }

    /// After the armed backward: queues what is left, waits for every bucket and replaces
    /// `grad` by the average over ranks. Returns the time spent waiting (communication that
    /// backward did not hide).
    pub fn finish(&self, grad: &mut [f32]) -> Result<Duration> {
        let mut s = self.state();
        s.armed = false;
        // What backward did not report (all of it for a task without the hook), in buckets
        // from the end, so that the ranks' transfers pipeline.
        while s.sent_from > 0 {
            let end = s.sent_from;
            let start = end.saturating_sub(self.bucket);
            self.queue(&mut s, start, &grad[start..end]);
            s.sent_from = start;
        }
        if let Some(e) = s.error.take() {
            return Err(e);
        }
        let waited = Instant::now();
        let inv = 1.0 / self.world.size() as f32;
        for b in std::mem::take(&mut s.in_flight) {
            let sum = b.sum.wait()?;
            for (g, x) in grad[b.offset..b.offset + sum.len()].iter_mut().zip(&sum) {
                *g = x * inv;
            }
            s.pool.push(sum);
        }
        Ok(waited.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_as_backward_reports_then_the_rest_average_over_ranks() {
        let worlds = World::local_group(2).unwrap();
        let out: Vec<Vec<f32>> = std::thread::scope(|sc| {
            let hs: Vec<_> = worlds
                .into_iter()
                .map(|w| {
                    sc.spawn(move || {
                        let r = w.rank() as f32;
                        let red = GradReducer::new(w, 10, 3);
                        let mut g: Vec<f32> = (0..10).map(|i| i as f32 + 10.0 * r).collect();
                        red.arm();
                        red.ready_from(8, &g); // 2 waiting: below the bucket
                        red.ready_from(5, &g); // 5 waiting: queued
                        red.ready_from(4, &g); // 1 waiting
                        red.finish(&mut g).unwrap();
                        // Not armed: nothing reduced.
                        red.ready_from(0, &g);
                        g
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let want: Vec<f32> = (0..10).map(|i| i as f32 + 5.0).collect();
        assert_eq!(out[0], want);
        assert_eq!(out[1], want);
    }
}
