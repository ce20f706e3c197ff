//! Linear layers for decoding: `out (n, OC) = inp (n, IC) · Wᵀ + b` for a handful of rows
//! (`n ≤ SMALL_ROWS`: batch-1 or small-batch decoding), where the cost is streaming the weights
//! from DRAM once, not arithmetic.
//!
//! Why our own (measured on the 2-core Zen 4 of `shared/notes/cpu-performance.md`): `gemm`'s
//! `m = 1` path is single-threaded and the general matvec splits the work into many small rayon
//! tasks compiled for baseline SSE2. Here each thread gets **one contiguous share** of the
//! weight matrix (a block of output columns for GPT-2's `(IC, OC)` `Conv1D` weights, a block of
//! rows for the `(V, C)` tied LM head), streams it once for all `n` input rows, and the loops run
//! compiled for AVX-512 or AVX2+FMA when the CPU has them (chosen at run time; explicit
//! `#[target_feature]` wrappers, since a closure passed to a generic dispatcher was not inlined
//! into it and stayed SSE2 with its accumulators spilled to the stack). Column blocks are walked in strips
//! whose accumulators `(n, strip)` stay in L1.

use crate::kernels::matmul::{linear_forward, WeightLayout};
use rayon::prelude::*;

/// Row counts up to this use the streaming kernel; more rows go to `gemm`.
pub const SMALL_ROWS: usize = 8;

/// Column (InOut) or row (OutIn) range of task `t` of `tasks` over `len`, in multiples of 16.
fn share(t: usize, tasks: usize, len: usize) -> (usize, usize) {
    let per = len.div_ceil(tasks).div_ceil(16) * 16;
    ((t * per).min(len), ((t + 1) * per).min(len))
}

/// `out (n, OC) = inp (n, IC) · Wᵀ + bias`, weights streamed once per call with one contiguous
/// share per thread. Falls back to [`linear_forward`] for more than [`SMALL_ROWS`] rows.
#[allow(clippy::too_many_arguments)]
pub fn linear_small(
    out: &mut [f32],
    inp: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    if n > SMALL_ROWS || n == 0 {
        return linear_forward(out, inp, w, bias, n, ic, oc, layout);
    }
    crate::kernels::check_len("linear_small", "out", out.len(), n * oc);
    crate::kernels::check_len("linear_small", "inp", inp.len(), n * ic);
    crate::kernels::check_len("linear_small", "weight", w.len(), ic * oc);
    let tasks = rayon::current_num_threads().max(1);
    if layout == WeightLayout::InOut {
        // Each thread streams one contiguous block of weight rows (input channels) and
        // produces a partial sum of every output; the partials are added at the end. Fully
        // sequential reads let the hardware prefetchers run at the read bandwidth.
        let partials: Vec<Vec<f32>> = (0..tasks)
            .into_par_iter()
            .map(|t| {
                let (i0, i1) = share(t, tasks, ic);
                let mut acc = vec![0.0f32; n * oc];
                if i1 > i0 {
                    simd_in_out_rows(&mut acc, inp, w, n, ic, oc, i0, i1);
                }
                acc
            })
            .collect();
        crate::kernels::matmul::sum_partials(out, &partials, bias, n, oc);
        return;
    }
    let parts: Vec<(usize, usize, Vec<f32>)> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let (j0, j1) = share(t, tasks, oc);
            let wd = j1 - j0;
            let mut acc = vec![0.0f32; n * wd];
            if wd == 0 {
                return (j0, j1, acc);
            }
            for r in 0..n {
                if let Some(b) = bias {
                    acc[r * wd..(r + 1) * wd].copy_from_slice(&b[j0..j1]);
                }
            }
            simd_out_in(&mut acc, inp, w, n, ic, j0, j1);
            (j0, j1, acc)
        })
        .collect();
    for (j0, j1, acc) in parts {
        let wd = j1 - j0;
        for r in 0..n {
            out[r * oc + j0..r * oc + j1].copy_from_slice(&acc[r * wd..(r + 1) * wd]);
        }
    }
}

/// Defines `$name(args)` that runs `$body` compiled for the widest of AVX-512F, AVX2+FMA and
/// the baseline that this CPU has.
macro_rules! dispatch {
    ($name:ident, $body:ident, ($($a:ident: $t:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v4($($a: $t),*) { $body($($a),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn v3($($a: $t),*) { $body($($a),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F (checked just above).
                    return unsafe { v4($($a),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { v3($($a),*) };
                }
            }
            $body($($a),*)
        }
    };
}

dispatch!(simd_in_out_rows, in_out_rows_block, (acc: &mut [f32], inp: &[f32], w: &[f32], n: usize, ic: usize, oc: usize, i0: usize, i1: usize));
dispatch!(simd_out_in, out_in_block, (acc: &mut [f32], inp: &[f32], w: &[f32], n: usize, ic: usize, j0: usize, j1: usize));

/// Partial `inp[:, i0..i1] · W[i0..i1, :]` for `W (IC, OC)`, added into `acc (n, OC)`: weight
/// rows `i0..i1` are read once, in order.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn in_out_rows_block(
    acc: &mut [f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    ic: usize,
    oc: usize,
    i0: usize,
    i1: usize,
) {
    for i in i0..i1 {
        let wrow = &w[i * oc..(i + 1) * oc];
        for r in 0..n {
            let xv = inp[r * ic + i];
            for (a, &b) in acc[r * oc..(r + 1) * oc].iter_mut().zip(wrow) {
                *a += xv * b;
            }
        }
    }
}

/// Rows `j0..j1` of `W (OC, IC)` dotted with each input row, added into `acc (n, j1 - j0)`.
#[inline(always)]
fn out_in_block(
    acc: &mut [f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    ic: usize,
    j0: usize,
    j1: usize,
) {
    let wd = j1 - j0;
    for j in j0..j1 {
        let wr = &w[j * ic..(j + 1) * ic];
        for r in 0..n {
            acc[r * wd + j - j0] += dot64(&inp[r * ic..(r + 1) * ic], wr);
        }
    }
}

/// Dot product with 64 independent lanes (four AVX-512 registers) for instruction parallelism.
#[inline(always)]
fn dot64(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 64];
    let (ca, ra) = a.split_at(a.len() / 64 * 64);
    let (cb, rb) = b.split_at(ca.len());
    for (xa, xb) in ca.chunks_exact(64).zip(cb.chunks_exact(64)) {
        for i in 0..64 {
            acc[i] += xa[i] * xb[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::linear_forward_naive;
    use crate::rng::Rng;

    #[test]
    fn matches_naive_for_both_layouts_and_row_counts() {
        let mut rng = Rng::new(0);
        for &(n, ic, oc) in &[(1, 70, 130), (3, 64, 48), (8, 33, 1000), (9, 20, 20)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let mut x = vec![0.0; n * ic];
                let mut w = vec![0.0; ic * oc];
                let mut b = vec![0.0; oc];
                rng.fill_normal(&mut x, 0.0, 1.0);
                rng.fill_normal(&mut w, 0.0, 1.0);
                rng.fill_normal(&mut b, 0.0, 1.0);
                let mut got = vec![0.0; n * oc];
                let mut want = vec![0.0; n * oc];
                linear_small(&mut got, &x, &w, Some(&b), n, ic, oc, layout);
                linear_forward_naive(&mut want, &x, &w, Some(&b), n, ic, oc, layout);
                for (g, w) in got.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-3, "{n}x{ic}x{oc} {layout:?}: {g} vs {w}");
                }
            }
        }
    }
}
