//! Seeded random windows over a token file: inputs `x = tokens[s..s+T]`, targets
//! `y = tokens[s+1..s+T+1]`, `B` windows per batch. The sampler's whole state is its RNG, so a
//! resumed run draws exactly the batches an uninterrupted run would.

use super::tokens::TokenFile;
use crate::error::{Error, Result};
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Draws random training windows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchSampler {
    /// Generator for window starts (saved in trainer state).
    pub rng: Rng,
    /// Windows per batch.
    pub batch_size: usize,
    /// Window length.
    pub block_size: usize,
    /// Data parallelism, `(rank, ranks)`: every rank draws the same `ranks · batch_size`
    /// windows and keeps rows `rank · batch_size ..` of them, so that the ranks together see the
    /// batches of one process with `ranks · batch_size` (set again after a restore).
    #[serde(skip)]
    pub shard: Option<(usize, usize)>,
}

/// One batch: `ids (B, T)` and `targets (B, T)`.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Input ids.
    pub ids: Vec<u32>,
    /// Next-token targets.
    pub targets: Vec<i32>,
}

impl BatchSampler {
    /// A sampler; errors if `data` is shorter than one window plus its target.
    pub fn new(data: &TokenFile, batch_size: usize, block_size: usize, seed: u64) -> Result<Self> {
        if data.len() < block_size + 1 {
            return Err(Error::file(
                data.path(),
                format!(
                    "{} tokens is fewer than one window of block_size {} + 1; use more data or a \
                     smaller --block-size",
                    data.len(),
                    block_size
                ),
            ));
        }
        Ok(BatchSampler {
            rng: Rng::new(seed),
            batch_size,
            block_size,
            shard: None,
        })
    }

    /// Fills `batch` with the next random windows.
    pub fn next(&mut self, data: &TokenFile, batch: &mut Batch) {
        let (b, t) = (self.batch_size, self.block_size);
        batch.ids.resize(b * t, 0);
        batch.targets.resize(b * t, 0);
        let mut window = vec![0u32; t + 1];
        let starts = (data.len() - t) as u64; // ≥ 1, checked in `new`
        let (rank, ranks) = self.shard.unwrap_or((0, 1));
        for global in 0..b * ranks {
            let s = self.rng.below(starts) as usize;
            if global / b != rank {
                continue;
            }
            let r = global % b;
            data.read(s, &mut window);
            batch.ids[r * t..(r + 1) * t].copy_from_slice(&window[..t]);
            for (dst, &y) in batch.targets[r * t..(r + 1) * t]
                .iter_mut()
                .zip(&window[1..])
            {
                *dst = y as i32;
            }
        }
    }
}
