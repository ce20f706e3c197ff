//! Memory bandwidth probes for the decode bound of `gpt bench generate`: read bandwidth (every
//! thread sums its share of a buffer, the access pattern of decoding, which only reads weights)
//! and copy bandwidth (STREAM convention: bytes read + bytes written).

use rayon::prelude::*;
use std::time::Instant;

// ---- SIMD helper (to be replaced by `kernels::simd`) ------------------------------------------
// `sum_simd` compiles one loop for AVX-512 when the CPU has it, as the decode kernel does. It is
// kept here as is, in this one marked place, until the kernels' common SIMD mechanism replaces
// it.

/// Sum of a slice with 64 lanes (the decode kernel's inner loop shape).
#[inline(always)]
fn sum64(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 64];
    for v in x.chunks_exact(64) {
        for i in 0..64 {
            acc[i] += v[i];
        }
    }
    acc.iter().sum()
}

/// [`sum64`] compiled for AVX-512 when the CPU has it, like the decode kernel.
fn sum_simd(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn v4(x: &[f32]) -> f32 {
            sum64(x)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { v4(x) };
        }
    }
    sum64(x)
}
// ---- end of the SIMD helper --------------------------------------------------------------------

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
