//! f16 weights for inference: `out (n, OC) = inp (n, IC) · Wᵀ + bias` with `W` held in IEEE
//! half precision (a GGUF `F16` file's own tensors, or f32 weights rounded to nearest even),
//! widened exactly to f32 in registers (F16C's `vcvtph2ps`) and multiplied with f32 FMAs.
//!
//! Why f16 beside bf16: llama.cpp's converter writes 16-bit GPT-2 files as f16, and f16 keeps 3
//! more mantissa bits than bf16 (GPT-2's weights sit well inside its range). Running such a file
//! as bf16 would round every weight a second time; running it as f32 doubles the bytes each token
//! streams. Here it runs as stored, at bf16's 2 bytes per weight.
//!
//! Layout ([`PackedF16`]): output channels in strips of [`STRIP`] = 32; a strip holds, input
//! channel after input channel, the 32 weights of its columns (64 bytes, one cache line), so a
//! strip is one sequential run of `IC` lines whatever the matrix's stored orientation (`(IC, OC)`
//! or the tied head's `(OC, IC)`), and one load feeds 16 columns. Columns past `OC` are zeros.
//!
//! Arithmetic: every output is the chain `s = fma(x[k], W[k][j], s)` for `k = 0, 1, …` from
//! zero, then `bias[j] + s`, on every path and whatever the number of rows: the AVX-512 kernel
//! (rows in register tiles of up to [`ROW_TILE`], the strip re-read from cache by further
//! tiles) and the portable twin give the same bits, and a row's result does not depend on the
//! rows batched with it.
//!
//! Work division: each thread takes a contiguous range of strips and writes their columns of
//! the output directly.
//!
//! Dimensions: `n` rows, `IC OC` input/output channels, `S = ⌈OC/32⌉` strips.

use super::check_len;
use super::huge_words::HugeWords;
use super::matmul::WeightLayout;
use super::simd::{cpu, isa, simd_fn, Isa};
use half::f16;
use rayon::prelude::*;

/// Output channels per strip.
pub const STRIP: usize = 32;
/// Words (two halves each) per input channel of a strip.
const WORDS: usize = STRIP / 2;
/// Rows held in registers at once by the AVX-512 kernel (2 accumulators each).
pub const ROW_TILE: usize = 8;
/// Cache lines (input channels) ahead that the AVX-512 kernel prefetches.
const PREFETCH: usize = 16;

/// A weight matrix in f16, packed in strips of 32 outputs (see the module docs).
#[derive(Clone, Debug)]
pub struct PackedF16 {
    words: HugeWords,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
}

impl PackedF16 {
    /// A matrix of `W`'s shape (`(IC, OC)` or `(OC, IC)` per `layout`) whose weight of input
    /// `i`, output `j` is `value(i, j)`. Filled in parallel over strips.
    pub fn from_fn(
        ic: usize,
        oc: usize,
        layout: WeightLayout,
        value: impl Fn(usize, usize) -> f16 + Sync,
    ) -> Self {
        let mut words = HugeWords::zeros(oc.div_ceil(STRIP) * ic * WORDS);
        words
            .par_chunks_mut((ic * WORDS).max(1))
            .enumerate()
            .for_each(|(s, strip)| {
                for (i, line) in strip.chunks_exact_mut(WORDS).enumerate() {
                    for (w, word) in line.iter_mut().enumerate() {
                        let half = |c: usize| {
                            let j = s * STRIP + c;
                            if j < oc {
                                value(i, j).to_bits() as u32
                            } else {
                                0
                            }
                        };
                        *word = half(2 * w) | half(2 * w + 1) << 16;
                    }
                }
            });
        PackedF16 {
            words,
            ic,
            oc,
            layout,
        }
    }

    /// Rounds an f32 matrix stored in `layout` to f16 (nearest even; exact for values an f16
    /// file held).
    pub fn from_f32(w: &[f32], ic: usize, oc: usize, layout: WeightLayout) -> Self {
        check_len("PackedF16::from_f32", "w", w.len(), ic * oc);
        Self::from_fn(ic, oc, layout, |i, j| {
            f16::from_f32(match layout {
                WeightLayout::InOut => w[i * oc + j],
                WeightLayout::OutIn => w[j * ic + i],
            })
        })
    }

    /// The weight of input `i`, output `j`.
    pub fn get(&self, i: usize, j: usize) -> f16 {
        assert!(i < self.ic && j < self.oc, "weight ({i}, {j}) out of range");
        let word = self.words[((j / STRIP) * self.ic + i) * WORDS + (j % STRIP) / 2];
        f16::from_bits((word >> (16 * (j % 2))) as u16)
    }

    /// Output `j`'s weights widened to f32 (`dst` holds `IC` values): the embedding lookup of a
    /// tied `wte`, a row of the `(V, C)` table.
    pub fn row_f32(&self, j: usize, dst: &mut [f32]) {
        check_len("PackedF16::row_f32", "dst", dst.len(), self.ic);
        for (i, x) in dst.iter_mut().enumerate() {
            *x = self.get(i, j).to_f32();
        }
    }

    /// The matrix widened to f32 in its stored layout.
    pub fn to_f32(&self) -> Vec<f32> {
        let (ic, oc) = (self.ic, self.oc);
        let mut out = vec![0.0f32; ic * oc];
        for i in 0..ic {
            for j in 0..oc {
                let x = self.get(i, j).to_f32();
                match self.layout {
                    WeightLayout::InOut => out[i * oc + j] = x,
                    WeightLayout::OutIn => out[j * ic + i] = x,
                }
            }
        }
        out
    }

    /// Input channels.
    pub fn ic(&self) -> usize {
        self.ic
    }

    /// Output channels.
    pub fn oc(&self) -> usize {
        self.oc
    }

    /// The stored orientation of the matrix this was made from.
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// Bytes held (the padding of the last strip included).
    pub fn bytes(&self) -> usize {
        4 * self.words.len()
    }
}

/// Which kernel computes the f16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F16Path {
    /// AVX-512F (with F16C's conversion on 512-bit vectors).
    Avx512,
    /// Plain Rust over the same chains (any CPU), compiled for the [`Isa`] ladder.
    Portable,
}

impl F16Path {
    /// AVX-512 when the CPU has it (and F16C, FMA) and the ladder is not capped below it.
    pub fn detect() -> Self {
        let c = cpu();
        if c.avx512f && c.f16c && c.fma && isa() == Isa::Avx512 {
            F16Path::Avx512
        } else {
            F16Path::Portable
        }
    }

    /// `avx512` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            F16Path::Avx512 => "avx512",
            F16Path::Portable => "portable",
        }
    }
}

/// `out (n, OC) = inp (n, IC) · Wᵀ + bias` with f16 weights, on the fastest path this CPU has.
pub fn linear_f16(out: &mut [f32], inp: &[f32], w: &PackedF16, bias: Option<&[f32]>, n: usize) {
    linear_f16_on(F16Path::detect(), out, inp, w, bias, n)
}

/// The output rows of one call, shared by the tasks that write disjoint columns of them.
struct OutRows(*mut f32);
// SAFETY: the tasks write disjoint columns (see `linear_f16_on`), and the pointer outlives them.
unsafe impl Sync for OutRows {}

/// [`linear_f16`] on a chosen path (tests compare them); asking for AVX-512 on a CPU without it
/// runs the portable path.
pub fn linear_f16_on(
    path: F16Path,
    out: &mut [f32],
    inp: &[f32],
    w: &PackedF16,
    bias: Option<&[f32]>,
    n: usize,
) {
    let (ic, oc) = (w.ic, w.oc);
    check_len("linear_f16", "out", out.len(), n * oc);
    check_len("linear_f16", "inp", inp.len(), n * ic);
    if let Some(b) = bias {
        check_len("linear_f16", "bias", b.len(), oc);
    }
    if n == 0 {
        return;
    }
    let path = if path == F16Path::Avx512 && F16Path::detect() == F16Path::Avx512 {
        path
    } else {
        F16Path::Portable
    };
    let dst = OutRows(out.as_mut_ptr());
    let n_strips = oc.div_ceil(STRIP);
    let tasks = rayon::current_num_threads().clamp(1, n_strips.max(1));
    (0..tasks).into_par_iter().for_each(|t| {
        let (s0, s1) = (t * n_strips / tasks, (t + 1) * n_strips / tasks);
        // SAFETY: `out` holds `n × OC` floats; task t writes only the columns of strips s0..s1,
        // disjoint from every other task's.
        unsafe { strips(path, &dst, bias, inp, w, n, s0, s1) }
    });
}

/// Strips `s0..s1` for all `n` rows, rows in register tiles.
///
/// # Safety
/// `out` points at `n × OC` floats, of which no other thread touches these columns meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn strips(
    path: F16Path,
    out: &OutRows,
    bias: Option<&[f32]>,
    inp: &[f32],
    w: &PackedF16,
    n: usize,
    s0: usize,
    s1: usize,
) {
    let (ic, oc) = (w.ic, w.oc);
    let mut tile = [0.0f32; ROW_TILE * STRIP];
    for s in s0..s1 {
        let strip = &w.words[s * ic * WORDS..(s + 1) * ic * WORDS];
        let (j0, cols) = (s * STRIP, STRIP.min(oc - s * STRIP));
        let mut r0 = 0;
        while r0 < n {
            // Even groups: 9 rows run as 5 + 4, not 8 + 1.
            let groups = (n - r0).div_ceil(ROW_TILE);
            let rows = (n - r0).div_ceil(groups);
            let x = &inp[r0 * ic..(r0 + rows) * ic];
            let t = &mut tile[..rows * STRIP];
            match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `linear_f16_on` picks this path only where the CPU has AVX-512F, F16C
                // and FMA; the strip holds `IC` lines and `x` `rows` rows of `IC`.
                F16Path::Avx512 => strip_avx512(t, strip, x, ic, rows),
                _ => strip_portable(t, strip, x, ic, rows),
            }
            for r in 0..rows {
                // SAFETY: row r0 + r < n, columns j0..j0 + cols ≤ OC of this task's strips.
                let dst = std::slice::from_raw_parts_mut(out.0.add((r0 + r) * oc + j0), cols);
                for (c, (o, &v)) in dst.iter_mut().zip(&t[r * STRIP..]).enumerate() {
                    *o = bias.map_or(0.0, |b| b[j0 + c]) + v;
                }
            }
            r0 += rows;
        }
    }
}

simd_fn! {
    /// One strip for `rows` rows: `out (rows, 32)` = the products (no bias), in plain Rust.
    fn strip_portable(out: &mut [f32], strip: &[u32], x: &[f32], ic: usize, rows: usize) {
        for r in 0..rows {
            let mut s = [0.0f32; STRIP];
            let xr = &x[r * ic..(r + 1) * ic];
            for (k, &xk) in xr.iter().enumerate() {
                let line = &strip[k * WORDS..(k + 1) * WORDS];
                for (pair, &word) in s.chunks_exact_mut(2).zip(line) {
                    let lo = f16::from_bits(word as u16).to_f32();
                    let hi = f16::from_bits((word >> 16) as u16).to_f32();
                    pair[0] = xk.mul_add(lo, pair[0]);
                    pair[1] = xk.mul_add(hi, pair[1]);
                }
            }
            out[r * STRIP..(r + 1) * STRIP].copy_from_slice(&s);
        }
    }
}

/// [`strip_portable`] on AVX-512 with F16C, for 1..=[`ROW_TILE`] rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c,avx2,fma")]
unsafe fn strip_avx512(out: &mut [f32], strip: &[u32], x: &[f32], ic: usize, rows: usize) {
    debug_assert!(strip.len() == ic * WORDS && x.len() == rows * ic && out.len() == rows * STRIP);
    match rows {
        1 => strip_avx512_n::<1>(out, strip, x, ic),
        2 => strip_avx512_n::<2>(out, strip, x, ic),
        3 => strip_avx512_n::<3>(out, strip, x, ic),
        4 => strip_avx512_n::<4>(out, strip, x, ic),
        5 => strip_avx512_n::<5>(out, strip, x, ic),
        6 => strip_avx512_n::<6>(out, strip, x, ic),
        7 => strip_avx512_n::<7>(out, strip, x, ic),
        _ => strip_avx512_n::<8>(out, strip, x, ic),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c,avx2,fma")]
unsafe fn strip_avx512_n<const R: usize>(out: &mut [f32], strip: &[u32], x: &[f32], ic: usize) {
    use std::arch::x86_64::*;
    let (wp, xp) = (strip.as_ptr(), x.as_ptr());
    let end = wp.add(strip.len());
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for k in 0..ic {
        let line = wp.add(k * WORDS);
        let ahead = line.add(PREFETCH * WORDS);
        if ahead < end {
            _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        }
        let w0 = _mm512_cvtph_ps(_mm256_loadu_si256(line.cast()));
        let w1 = _mm512_cvtph_ps(_mm256_loadu_si256(line.add(8).cast()));
        for (r, a) in acc.iter_mut().enumerate() {
            let xb = _mm512_set1_ps(*xp.add(r * ic + k));
            a[0] = _mm512_fmadd_ps(xb, w0, a[0]);
            a[1] = _mm512_fmadd_ps(xb, w1, a[1]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(r * STRIP), a[0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(r * STRIP + 16), a[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul::linear_forward_naive;
    use crate::rng::Rng;

    #[test]
    fn packing_round_trips_for_both_layouts_and_odd_shapes() {
        let mut rng = Rng::new(5);
        for &(ic, oc) in &[(1usize, 1usize), (7, 33), (64, 32), (33, 70)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let w = rng.normal_vec(ic * oc, 1.0);
                let m = PackedF16::from_f32(&w, ic, oc, layout);
                let want: Vec<f32> = w.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                assert_eq!(m.to_f32(), want, "{ic}x{oc} {layout:?}");
                let mut row = vec![0.0; ic];
                m.row_f32(oc - 1, &mut row);
                for (i, &x) in row.iter().enumerate() {
                    let stored = match layout {
                        WeightLayout::InOut => want[i * oc + oc - 1],
                        WeightLayout::OutIn => want[(oc - 1) * ic + i],
                    };
                    assert_eq!(x, stored);
                }
                assert_eq!(m.bytes(), oc.div_ceil(STRIP) * ic * 64);
            }
        }
    }

    #[test]
    fn matches_the_oracle_and_paths_agree_bit_for_bit() {
        let mut rng = Rng::new(6);
        for &(ic, oc) in &[(1usize, 5usize), (37, 33), (64, 96), (130, 70)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let w = rng.normal_vec(ic * oc, 0.5);
                let wq: Vec<f32> = w.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                let m = PackedF16::from_f32(&w, ic, oc, layout);
                let b = rng.normal_vec(oc, 1.0);
                let x = rng.normal_vec(20 * ic, 1.0);
                let mut alone = vec![0.0; oc];
                linear_f16(&mut alone, &x[..ic], &m, Some(&b), 1);
                for n in (1..=10).chain([17, 20]) {
                    // The oracle: the rounded weights in f64.
                    let mut want = vec![0.0f32; n * oc];
                    linear_forward_naive(&mut want, &x[..n * ic], &wq, Some(&b), n, ic, oc, layout);
                    let mut got = [vec![f32::NAN; n * oc], vec![f32::NAN; n * oc]];
                    for (g, path) in got.iter_mut().zip([F16Path::Avx512, F16Path::Portable]) {
                        linear_f16_on(path, g, &x[..n * ic], &m, Some(&b), n);
                    }
                    assert_eq!(got[0], got[1], "{n}x{ic}x{oc} {layout:?}: paths differ");
                    for (g, w) in got[0].iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{n}x{ic}x{oc}: {g} vs {w}"
                        );
                    }
                    assert_eq!(&got[0][..oc], &alone[..], "{n} rows: row 0 changed");
                }
            }
        }
    }
}
