//! Linear layers for a few rows: `out (n, OC) = inp (n, IC) · Wᵀ + bias` for `n ≤` [`FEW_ROWS`]
//! (bf16 shadows) or [`F32_STREAM_ROWS`] (f32)
//! (batch-1 or small-batch decoding), where the cost is streaming the weights from DRAM once,
//! not arithmetic. This file holds the thread split shared by every weight format and the f32
//! instance, [`linear_small`]; the bf16 instance is [`super::bf16::linear_small_bf16`] (a
//! training model's stored bf16 shadow; inference models pack 16-bit weights in strips,
//! [`super::half`]).
//!
//! Why our own (measured on the 2-core Zen 4 of `shared/notes/cpu-performance.md`): `gemm`'s
//! `m = 1` path is single-threaded and the general matvec splits the work into many small rayon
//! tasks. Here each thread gets **one contiguous share** of the weight matrix and streams it
//! once for all `n` input rows; fully sequential reads let the hardware prefetchers run at the
//! read bandwidth:
//! - **`(IC, OC)` weights** (GPT-2's `Conv1D`, [`WeightLayout::InOut`]): [`split_in_out`] gives
//!   each thread a block of weight rows (input channels) and it produces a partial sum of every
//!   output; the partials are added at the end.
//! - **`(OC, IC)` weights** (the tied LM head `wte`, [`WeightLayout::OutIn`]): [`split_out_in`]
//!   gives each thread a block of output channels (weight rows), no reduction.
//!
//! Each weight format supplies only its inner loop over its share, compiled for the widest
//! vector extension with [`super::simd::simd_fn!`]. The f32 loops are in
//! [`super::blocked_rows`]: several rows meet each weight vector in registers.
//!
//! Dimensions: `n` rows, `IC OC` input/output channels.

use super::blocked_rows;
use super::check_len;
use super::matmul::{linear_forward, sum_partials, WeightLayout};
use super::team;

/// Row counts up to this run the few-row kernels (one pass over the weights for all rows);
/// more rows go to the general products. The packed bf16 kernels hold this many rows in
/// registers.
pub const FEW_ROWS: usize = 8;

/// Row counts up to this run the f32 few-row kernels ([`linear_small`] and
/// [`super::panel_f32::linear_panels_f32`]): they stream each weight once for all rows, tiles of
/// rows meeting each block of weights while it is in cache. Past 8 rows `gemm` first packs the
/// weights, an extra pass over them: GPT-2 124M's products for 9 rows took 64 ms against 24 ms
/// streamed, for 16 rows 62 against 33, for 32 rows 85 against 65, and the streaming kernels
/// stay ahead up to 128 rows (`examples/few_rows_probe.rs`, 2 Zen 4 threads). A serving step
/// of 8 decoding rows plus a prompt chunk is such a product.
pub const F32_STREAM_ROWS: usize = 64;

/// Range of task `t` of `tasks` over `len`, cut in multiples of `align`.
fn share(t: usize, tasks: usize, len: usize, align: usize) -> (usize, usize) {
    let per = len.div_ceil(tasks).div_ceil(align) * align;
    ((t * per).min(len), ((t + 1) * per).min(len))
}

/// The `(IC, OC)` split: `len` stored weight rows (input channels, or pairs of them) are cut
/// into one contiguous share per thread, in multiples of `align`; each thread runs
/// `block(acc, r0, r1)` on its share `r0..r1` (never empty) with `acc (n, OC)` zeroed, and
/// `out (n, OC) = bias + Σ acc` in thread order (deterministic for a given thread count).
pub fn split_in_out(
    out: &mut [f32],
    bias: Option<&[f32]>,
    n: usize,
    oc: usize,
    len: usize,
    align: usize,
    block: impl Fn(&mut [f32], usize, usize) + Sync,
) {
    if n * oc == 0 {
        return;
    }
    let tasks = rayon::current_num_threads().max(1);
    let mut partials = vec![0.0f32; tasks * n * oc];
    team::for_each_chunk_mut(&mut partials, n * oc, |t, acc| {
        let (r0, r1) = share(t, tasks, len, align);
        if r1 > r0 {
            block(acc, r0, r1);
        }
    });
    sum_partials(out, &partials, bias, n, oc);
}

/// The `(OC, IC)` split: the `OC` output channels are cut into one contiguous share per thread,
/// in multiples of `align`; each thread runs `block(acc, j0, j1)` on its share `j0..j1` (never
/// empty) with `acc (n, j1 − j0)` holding the bias (or zeros), then copies it into `out (n, OC)`.
pub fn split_out_in(
    out: &mut [f32],
    bias: Option<&[f32]>,
    n: usize,
    oc: usize,
    align: usize,
    block: impl Fn(&mut [f32], usize, usize) + Sync,
) {
    if n * oc == 0 {
        return;
    }
    let tasks = rayon::current_num_threads().max(1);
    let per = share(0, tasks, oc, align).1;
    let mut parts = vec![0.0f32; tasks * n * per];
    team::for_each_chunk_mut(&mut parts, n * per, |t, acc| {
        let (j0, j1) = share(t, tasks, oc, align);
        let wd = j1 - j0;
        if wd > 0 {
            let acc = &mut acc[..n * wd];
            if let Some(b) = bias {
                for row in acc.chunks_exact_mut(wd) {
                    row.copy_from_slice(&b[j0..j1]);
                }
            }
            block(acc, j0, j1);
        }
    });
    for (t, acc) in parts.chunks_exact(n * per).enumerate() {
        let (j0, j1) = share(t, tasks, oc, align);
        let wd = j1 - j0;
        for r in 0..n {
            out[r * oc + j0..r * oc + j1].copy_from_slice(&acc[r * wd..(r + 1) * wd]);
        }
    }
}

/// `out (n, OC) = inp (n, IC) · Wᵀ + bias` with f32 weights (`(IC, OC)` or `(OC, IC)` per
/// `layout`), each thread streaming one contiguous share of `W` once for all rows. More than
/// [`F32_STREAM_ROWS`] rows (or none) go to [`linear_forward`].
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
    if n > F32_STREAM_ROWS || n == 0 {
        return linear_forward(out, inp, w, bias, n, ic, oc, layout);
    }
    check_len("linear_small", "out", out.len(), n * oc);
    check_len("linear_small", "inp", inp.len(), n * ic);
    check_len("linear_small", "weight", w.len(), ic * oc);
    match layout {
        // One row streams the weight rows in order; more rows meet each weight vector in
        // registers. Both compute the same chains (see `blocked_rows`).
        WeightLayout::InOut => split_in_out(out, bias, n, oc, ic, 16, |acc, i0, i1| {
            if n == 1 {
                blocked_rows::in_out_portable(acc, inp, w, n, ic, oc, i0, i1)
            } else {
                blocked_rows::in_out(acc, inp, w, n, ic, oc, i0, i1)
            }
        }),
        WeightLayout::OutIn => split_out_in(out, bias, n, oc, 16, |acc, j0, j1| {
            blocked_rows::out_in(acc, inp, w, n, ic, j0, j1)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::linear_forward_naive;
    use crate::kernels::simd::{limit, Isa};
    use crate::rng::Rng;

    #[test]
    fn matches_naive_for_both_layouts_every_row_count_and_rung() {
        let mut rng = Rng::new(0);
        for &(ic, oc) in &[(70, 130), (64, 48), (33, 1000), (1, 17), (20, 20), (40, 31)] {
            // Every tile size, then past the register tiles up to the threshold and one more
            // (the general product).
            let counts =
                (1..=FEW_ROWS + 1).chain([13, 16, 33, F32_STREAM_ROWS, F32_STREAM_ROWS + 1]);
            for n in counts {
                for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                    let x = rng.normal_vec(n * ic, 1.0);
                    let w = rng.normal_vec(ic * oc, 1.0);
                    let b = rng.normal_vec(oc, 1.0);
                    let mut want = vec![0.0; n * oc];
                    linear_forward_naive(&mut want, &x, &w, Some(&b), n, ic, oc, layout);
                    let mut first: Option<Vec<f32>> = None;
                    for isa in Isa::available() {
                        let _l = limit(isa);
                        let mut got = vec![f32::NAN; n * oc];
                        linear_small(&mut got, &x, &w, Some(&b), n, ic, oc, layout);
                        for (g, w) in got.iter().zip(&want) {
                            assert!(
                                (g - w).abs() < 1e-3,
                                "{n}x{ic}x{oc} {layout:?} {isa:?}: {g} vs {w}"
                            );
                        }
                        // A row's result does not depend on the rows batched with it.
                        let mut alone = vec![0.0; oc];
                        linear_small(&mut alone, &x[..ic], &w, Some(&b), 1, ic, oc, layout);
                        if n <= F32_STREAM_ROWS {
                            assert_eq!(&got[..oc], &alone[..], "{n}x{ic}x{oc} {layout:?} {isa:?}");
                        }
                        // Every rung runs the same operations in the same order.
                        match &first {
                            Some(f) => assert_eq!(&got, f, "{n}x{ic}x{oc} {layout:?} {isa:?}"),
                            None => first = Some(got),
                        }
                    }
                }
            }
        }
    }
}
