//! Comparing training runs: their final weights and how far apart two value lists are.

use gpt::model::checkpoint;
use std::path::Path;

/// The largest absolute difference between `a` and `b` (same length).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The weights of the checkpoint of the GPT run in `dir` (`dir/checkpoint`).
pub fn weights(dir: &Path) -> Vec<f32> {
    checkpoint::load(&dir.join("checkpoint"))
        .unwrap()
        .params
        .data
}
