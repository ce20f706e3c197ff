//! Memory bandwidth probes for the decode bound of `gpt bench generate`: read bandwidth (every
//! thread sums its share of a buffer, the access pattern of decoding, which only reads weights),
//! the rate of reading a model's own matrices the way decoding reads them, and copy bandwidth
//! (STREAM convention: bytes read + bytes written).

use crate::kernels::simd::simd_fn;
use rayon::prelude::*;
use std::time::Instant;

simd_fn! {
    /// Sum of a slice with 64 lanes (the decode kernel's inner loop shape), compiled for the
    /// SIMD ladder like the decode kernels.
    fn sum_simd(x: &[f32]) -> f32 {
        let mut acc = [0.0f32; 64];
        for v in x.chunks_exact(64) {
            for i in 0..64 {
                acc[i] += v[i];
            }
        }
        acc.iter().sum()
    }
}

/// Read bandwidth in GB/s: every thread sums one contiguous share of a 512 MiB buffer (larger
/// than GPT-2 124M's weights) in huge-page memory, as decoding's packed weights are, compiled
/// like the decode kernel; best of 5. This is the access pattern of decoding, which only reads
/// weights. (On the Intel host of 2026-12-04, THP in madvise mode, the same probe over 4 KiB
/// pages read 25–27 GB/s against 29–30: a bound measured over small pages flatters decoding.)
pub fn read_bandwidth() -> f64 {
    let n = 128 << 20;
    let mut words = crate::kernels::huge_words::HugeWords::zeros(n);
    words.as_f32_mut().fill(1.0);
    let src = words.as_f32();
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        let total: f32 = src.par_chunks(chunk).map(sum_simd).sum();
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    4.0 * n as f64 / best / 1e9
}

simd_fn! {
    /// Wrapping sum of words with 64 lanes (16 lanes did not vectorize: 4–5 GB/s on one
    /// thread against 25–27): the reading of [`read_matrices`], nothing more.
    fn sum_words(x: &[u32]) -> u32 {
        let mut acc = [0u32; 64];
        for v in x.chunks_exact(64) {
            for i in 0..64 {
                acc[i] = acc[i].wrapping_add(v[i]);
            }
        }
        acc.iter().fold(0u32, |a, &b| a.wrapping_add(b))
    }
}

/// GB/s of reading `matrices` as decoding reads them, doing nothing else: one after another,
/// each cut into one contiguous share per thread (as the strip and panel kernels cut them) on
/// the decode thread team, a join after each; best of 5 passes. Decoding's rate over this one
/// says how close the kernels come to merely reading the same bytes in the same pattern; this
/// one over [`read_bandwidth`] says what the pattern (short streams, a join after each) costs
/// by itself.
pub fn read_matrices(matrices: &[&[u32]]) -> f64 {
    let bytes: usize = matrices.iter().map(|m| 4 * m.len()).sum();
    let threads = rayon::current_num_threads().max(1);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        for m in matrices {
            let total = std::sync::atomic::AtomicU32::new(0);
            crate::kernels::team::run(threads, |t| {
                let share = &m[t * m.len() / threads..(t + 1) * m.len() / threads];
                total.fetch_add(sum_words(share), std::sync::atomic::Ordering::Relaxed);
            });
            std::hint::black_box(total.into_inner());
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    bytes as f64 / best / 1e9
}

/// Copy bandwidth in GB/s (read + write bytes), all threads, 256 MiB buffers, best of 5.
pub fn copy_bandwidth() -> f64 {
    let n = 64 << 20;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let chunk = n / (4 * rayon::current_num_threads().max(1));
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * 4.0 * n as f64 / best / 1e9
}
