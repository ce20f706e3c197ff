//! f32 weight matrices packed in panels for few-row products: `out (n, OC) = inp (n, IC) · Wᵀ +
//! bias` for `n ≤` [`F32_STREAM_ROWS`], where each weight is read once, in order, and meets
//! every row in registers.
//!
//! Why: the tied LM head `wte (V, C)` is stored `(OC, IC)`, so a product over it is a dot
//! product per output, and a dot product loads an input vector for every weight vector: with 8
//! rows on 2 Zen 4 cores the head ran at ≈ 47 GFLOP/s, a third of a batch-8 decoding step,
//! against ≈ 80 for the `(IC, OC)` layers. Packed in panels the head becomes the `(IC, OC)`
//! case without its strided reads: panel `p` holds outputs `24p .. 24p + 24` as `IC` runs of 24
//! weights (`panel[k][jj] = W[24p + jj][k]`), contiguous, so a tile of [`ROWS`] rows × 24
//! outputs streams its panel once with 3 weight loads and 4 broadcasts per 12 FMAs, and its
//! accumulators never leave registers. The packed copy costs the matrix's bytes once more; the
//! original stays in place (the products of many rows, prefill, still run `gemm` on it), and for
//! a memory-mapped checkpoint its pages are then read only for the token embeddings.
//!
//! Every output is the chain `s = fma(inp[r][k], W[j][k], s)` for `k = 0, 1, …` from zero, then
//! `s + bias[j]`, whatever the number of rows and on every rung: the AVX2+FMA tile and the
//! portable twin perform the same operations (`f32::mul_add`).
//!
//! Dimensions: `n` rows, `IC OC` input/output channels, `P = ⌈OC/24⌉` panels.

use super::blocked_rows::ROWS;
use super::check_len;
use super::few_rows::{split_out_in, F32_STREAM_ROWS};
use super::huge_words::HugeWords;
use super::matmul::WeightLayout;
use super::simd::{isa, simd_fn, Isa};
use rayon::prelude::*;

/// Bytes ahead that the AVX2/AVX-512VL tile prefetches into L2 (two lines per input channel,
/// whose 24 weights take 96 bytes). Measured on the Intel host of 2026-12-04 (GPT-2 124M f32,
/// batch 1, 2 threads, alternating runs): none 51.5 tokens/s, 1 KiB 54.5, 2 KiB 57, 3 KiB 58,
/// 4 KiB 52 (an exact 4 KiB stride from the loads), 8 KiB 52.
const PREFETCH_BYTES: usize = 3072;
/// Outputs per panel (three 8-lane vectors).
pub const PANEL: usize = 24;
/// Input channels per pass of the row tiles over a panel (24 × 128 floats: 12 KiB, in L1).
const KCHUNK: usize = 128;

/// A weight matrix packed in panels of [`PANEL`] outputs (see the module docs).
#[derive(Clone, Debug)]
pub struct PanelsF32 {
    /// The panels' floats, in huge-page memory when large (see [`HugeWords`]).
    data: HugeWords,
    ic: usize,
    oc: usize,
}

impl PanelsF32 {
    /// Packs `w` (`(IC, OC)` or `(OC, IC)` per `layout`); the last panel is padded with zeros.
    pub fn pack(w: &[f32], ic: usize, oc: usize, layout: WeightLayout) -> Self {
        check_len("PanelsF32::pack", "weight", w.len(), ic * oc);
        let mut data = HugeWords::zeros(Self::bytes_for(ic, oc) / 4);
        data.as_f32_mut()
            .par_chunks_mut(ic * PANEL)
            .enumerate()
            .for_each(|(p, panel)| {
                for jj in 0..PANEL.min(oc - p * PANEL) {
                    let j = p * PANEL + jj;
                    for k in 0..ic {
                        panel[k * PANEL + jj] = match layout {
                            WeightLayout::OutIn => w[j * ic + k],
                            WeightLayout::InOut => w[k * oc + j],
                        };
                    }
                }
            });
        PanelsF32 { data, ic, oc }
    }

    /// Input channels.
    pub fn ic(&self) -> usize {
        self.ic
    }

    /// Output channels.
    pub fn oc(&self) -> usize {
        self.oc
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * self.data.len()
    }

    /// The panels' floats as stored (what decoding streams; for read probes).
    pub fn data(&self) -> &[f32] {
        self.data.as_f32()
    }

    /// Bytes a matrix of `(IC, OC)` takes packed: `OC` padded to whole panels.
    pub fn bytes_for(ic: usize, oc: usize) -> usize {
        4 * oc.div_ceil(PANEL) * PANEL * ic
    }
}

/// `out (n, OC) = inp (n, IC) · Wᵀ + bias` over panels, `1 ≤ n ≤` [`F32_STREAM_ROWS`]: each
/// thread takes a contiguous share of the panels.
pub fn linear_panels_f32(
    out: &mut [f32],
    inp: &[f32],
    m: &PanelsF32,
    bias: Option<&[f32]>,
    n: usize,
) {
    let (ic, oc) = (m.ic, m.oc);
    assert!(
        (1..=F32_STREAM_ROWS).contains(&n),
        "linear_panels_f32: {n} rows (1..={F32_STREAM_ROWS})"
    );
    check_len("linear_panels_f32", "out", out.len(), n * oc);
    check_len("linear_panels_f32", "inp", inp.len(), n * ic);
    if let Some(b) = bias {
        check_len("linear_panels_f32", "bias", b.len(), oc);
    }
    split_out_in(out, bias, n, oc, PANEL, |acc, j0, j1| {
        panels_range(acc, inp, m.data.as_f32(), n, ic, j0, j1)
    });
}

/// `acc (n, j1 − j0) += inp · W[j0..j1]ᵀ` for panel-aligned `j0` (the shares of
/// [`split_out_in`] with alignment [`PANEL`]).
#[allow(clippy::too_many_arguments)]
fn panels_range(
    acc: &mut [f32],
    inp: &[f32],
    data: &[f32],
    n: usize,
    ic: usize,
    j0: usize,
    j1: usize,
) {
    debug_assert!(j0.is_multiple_of(PANEL));
    let wd = j1 - j0;
    assert!(acc.len() >= n * wd && inp.len() >= n * ic);
    assert!(data.len() >= j1.div_ceil(PANEL) * ic * PANEL);
    #[cfg(target_arch = "x86_64")]
    {
        let c = super::simd::cpu();
        if isa() >= Isa::Avx512 && c.avx512vl && c.avx2 && c.fma {
            // SAFETY: AVX-512F/VL, AVX2 and FMA are present; bounds as below.
            unsafe { avx2::panels_range_vl(acc, inp, data, n, ic, j0, j1) };
            return;
        }
        if isa() >= Isa::Avx2 && c.avx2 && c.fma {
            // SAFETY: AVX2 and FMA are present; the asserts bound every index (panels up to
            // ⌈j1/24⌉, rows < n, inputs < IC, accumulator columns < j1 − j0).
            unsafe { avx2::panels_range(acc, inp, data, n, ic, j0, j1) };
            return;
        }
    }
    panels_portable(acc, inp, data, n, ic, j0, j1);
}

simd_fn! {
    /// Portable twin of the AVX2 panels kernel: the same chains, one output at a time.
    fn panels_portable(
        acc: &mut [f32],
        inp: &[f32],
        data: &[f32],
        n: usize,
        ic: usize,
        j0: usize,
        j1: usize
    ) {
        let wd = j1 - j0;
        for j in j0..j1 {
            let (p, jj) = (j / PANEL, j % PANEL);
            let panel = &data[p * ic * PANEL..(p + 1) * ic * PANEL];
            for r in 0..n {
                let x = &inp[r * ic..(r + 1) * ic];
                let mut s = 0.0f32;
                for k in 0..ic {
                    s = x[k].mul_add(panel[k * PANEL + jj], s);
                }
                acc[r * wd + j - j0] += s;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2+FMA tile. Callers check the CPU and the bounds.
    use super::{F32_STREAM_ROWS, KCHUNK, PANEL, PREFETCH_BYTES, ROWS};
    use std::arch::x86_64::*;

    /// See [`super::panels_range`]: row tiles of [`ROWS`] (AVX2's 16 registers hold 12
    /// accumulators).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn panels_range(
        acc: &mut [f32],
        inp: &[f32],
        data: &[f32],
        n: usize,
        ic: usize,
        j0: usize,
        j1: usize,
    ) {
        body::<ROWS>(acc, inp, data, n, ic, j0, j1)
    }

    /// The same 256-bit tiles compiled with AVX-512VL, whose 32 registers hold 8 rows × 24
    /// sums: 8 rows take one pass over each chunk of a panel instead of two. Same chains, same
    /// bits.
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
    pub(super) unsafe fn panels_range_vl(
        acc: &mut [f32],
        inp: &[f32],
        data: &[f32],
        n: usize,
        ic: usize,
        j0: usize,
        j1: usize,
    ) {
        body::<8>(acc, inp, data, n, ic, j0, j1)
    }

    #[inline(always)]
    unsafe fn body<const MAXR: usize>(
        acc: &mut [f32],
        inp: &[f32],
        data: &[f32],
        n: usize,
        ic: usize,
        j0: usize,
        j1: usize,
    ) {
        let wd = j1 - j0;
        // The sums of every row for the current panel, carried across chunks of `KCHUNK`
        // input channels (a chunk of the panel stays in L1 while every row tile reads it).
        let mut sums = [[0.0f32; PANEL]; F32_STREAM_ROWS];
        let mut j = j0;
        while j < j1 {
            let panel = data.as_ptr().add(j / PANEL * ic * PANEL);
            let cols = (j1 - j).min(PANEL);
            for s in sums.iter_mut().take(n) {
                *s = [0.0; PANEL];
            }
            let mut k0 = 0;
            while k0 < ic {
                let k1 = (k0 + KCHUNK).min(ic);
                let mut r = 0;
                while r < n {
                    let rb = (n - r).min(MAXR);
                    let s = &mut sums[r..r + rb];
                    match rb {
                        1 => tile::<1>(s, panel, inp, ic, r, k0, k1),
                        2 => tile::<2>(s, panel, inp, ic, r, k0, k1),
                        3 => tile::<3>(s, panel, inp, ic, r, k0, k1),
                        4 => tile::<4>(s, panel, inp, ic, r, k0, k1),
                        5 => tile::<5>(s, panel, inp, ic, r, k0, k1),
                        6 => tile::<6>(s, panel, inp, ic, r, k0, k1),
                        7 => tile::<7>(s, panel, inp, ic, r, k0, k1),
                        _ => tile::<8>(s, panel, inp, ic, r, k0, k1),
                    }
                    r += rb;
                }
                k0 = k1;
            }
            for (rr, row_sums) in sums.iter().enumerate().take(n) {
                let row = &mut acc[rr * wd + j - j0..rr * wd + j - j0 + cols];
                for (a, v) in row.iter_mut().zip(row_sums) {
                    *a += *v;
                }
            }
            j += cols;
        }
    }

    /// Continues the 24 sums of rows `r0..r0 + R` (`sums`) over input channels `k0..k1` of
    /// one panel.
    #[inline(always)]
    unsafe fn tile<const R: usize>(
        sums: &mut [[f32; PANEL]],
        panel: *const f32,
        inp: &[f32],
        ic: usize,
        r0: usize,
        k0: usize,
        k1: usize,
    ) {
        let x = inp.as_ptr();
        let mut t = [[_mm256_setzero_ps(); 3]; R];
        for (row, s) in t.iter_mut().zip(sums.iter()) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(s.as_ptr().add(8 * c));
            }
        }
        for k in k0..k1 {
            let wp = panel.add(k * PANEL);
            // Past the panel's end: the next panel's, which follows in memory; a prefetch past
            // the matrix is harmless.
            let ahead = wp.cast::<i8>().wrapping_add(PREFETCH_BYTES);
            _mm_prefetch::<_MM_HINT_T1>(ahead);
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64));
            let w = [
                _mm256_loadu_ps(wp),
                _mm256_loadu_ps(wp.add(8)),
                _mm256_loadu_ps(wp.add(16)),
            ];
            for (rr, row) in t.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*x.add((r0 + rr) * ic + k));
                for (v, wv) in row.iter_mut().zip(&w) {
                    *v = _mm256_fmadd_ps(xv, *wv, *v);
                }
            }
        }
        for (row, s) in t.iter().zip(sums.iter_mut()) {
            for (c, v) in row.iter().enumerate() {
                _mm256_storeu_ps(s.as_mut_ptr().add(8 * c), *v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::linear_forward_naive;
    use crate::kernels::simd::limit;
    use crate::rng::Rng;

    #[test]
    fn matches_naive_on_odd_shapes_every_rung_and_row_count() {
        let mut rng = Rng::new(3);
        for &(ic, oc) in &[(70, 130), (33, 24), (5, 1), (64, 97)] {
            for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
                let w = rng.normal_vec(ic * oc, 1.0);
                let b = rng.normal_vec(oc, 1.0);
                let m = PanelsF32::pack(&w, ic, oc, layout);
                let x = rng.normal_vec(F32_STREAM_ROWS * ic, 1.0);
                // Row 0 alone: every batch must reproduce it bit for bit.
                let mut alone = vec![0.0; oc];
                linear_panels_f32(&mut alone, &x[..ic], &m, Some(&b), 1);
                for n in (1..=9).chain([16, 31, F32_STREAM_ROWS]) {
                    let mut want = vec![0.0; n * oc];
                    linear_forward_naive(&mut want, &x[..n * ic], &w, Some(&b), n, ic, oc, layout);
                    let mut first: Option<Vec<f32>> = None;
                    for rung in Isa::available() {
                        let _l = limit(rung);
                        let mut got = vec![f32::NAN; n * oc];
                        linear_panels_f32(&mut got, &x[..n * ic], &m, Some(&b), n);
                        for (g, w) in got.iter().zip(&want) {
                            assert!((g - w).abs() < 1e-3, "{n}x{ic}x{oc} {rung:?}: {g} vs {w}");
                        }
                        assert_eq!(&got[..oc], &alone[..], "{n} rows {rung:?}: row 0 changed");
                        match &first {
                            Some(f) => assert_eq!(&got, f, "{n}x{ic}x{oc} {rung:?}"),
                            None => first = Some(got),
                        }
                    }
                }
            }
        }
    }
}
