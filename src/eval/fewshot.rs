//! Few-shot example selection, as lm-eval 0.4's `ContextSampler`: one `random.Random(seed)`
//! per task (seed 1234 by default), shared by the documents in evaluation order; for each
//! document `rnd.sample(pool, n)` with `n = K + 1` when the few-shot split is configured as the
//! test split and `n = K` otherwise, then the documents equal to the evaluated one are dropped
//! and the first K kept. (So with a pool that only falls back to the test split, a document
//! that draws itself gets K − 1 examples, as in lm-eval.)

use super::pyrandom::PyRandom;
use super::template::Doc;
use crate::error::{Error, Result};

/// The sampler of one task.
pub struct FewshotSampler {
    rnd: PyRandom,
    pool: Vec<Doc>,
    extra: bool,
}

impl FewshotSampler {
    /// A sampler over `pool` seeded with `seed`; `extra` draws K + 1 (see the module doc).
    pub fn new(seed: i64, pool: Vec<Doc>, extra: bool) -> Self {
        FewshotSampler {
            rnd: PyRandom::new(seed),
            pool,
            extra,
        }
    }

    /// The pool's size.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The examples for `doc` (at most `k`; no draw when `k` is 0). Drawing more than the pool
    /// holds is an error naming `k` and the pool (Python raises `ValueError` there).
    pub fn examples(&mut self, doc: &Doc, k: usize) -> Result<Vec<&Doc>> {
        if k == 0 {
            return Ok(Vec::new());
        }
        let n = k + usize::from(self.extra);
        let picked = self.rnd.sample_indices(self.pool.len(), n).ok_or_else(|| {
            let file = self
                .pool
                .first()
                .map_or(String::from("the few-shot split"), |d| {
                    d.file.display().to_string()
                });
            Error::limit(
                "--num-fewshot (examples drawn per document)",
                n as u64,
                self.pool.len() as u64,
                &format!(
                    "the few-shot pool {file} has {} documents; lower --num-fewshot",
                    self.pool.len()
                ),
            )
        })?;
        Ok(picked
            .into_iter()
            .map(|i| &self.pool[i])
            .filter(|d| d.fields != doc.fields)
            .take(k)
            .collect())
    }
}
