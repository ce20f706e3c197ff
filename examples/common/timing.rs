//! Timing helpers shared by the dev probes in `examples/` (included with `#[path]`).

use std::time::Instant;

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `calls` calls of `f`.
pub fn median_secs(calls: usize, f: &mut dyn FnMut()) -> f64 {
    median(
        (0..calls)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .collect(),
    )
}
