//! Memory bandwidth probes for the decode bound of `gpt bench generate`: read bandwidth (every
//! thread sums its share of a buffer, the access pattern of decoding, which only reads weights)
//! and copy bandwidth (STREAM convention: bytes read + bytes written).

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
/// than GPT-2 124M's weights), compiled like the decode kernel; best of 5. This is the access
/// pattern of decoding, which only reads weights.
pub fn read_bandwidth() -> f64 {
    let n = 128 << 20;
    let src = vec![1.0f32; n];
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
