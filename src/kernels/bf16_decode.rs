//! Linear layers for decoding with bf16 weights packed for `vdpbf16ps`:
//! `out (n, OC) = inp (n, IC) · Wᵀ + bias` (`inp` split into two bf16 parts, see "Accuracy"),
//! f32 accumulation, for a handful of rows
//! (`n ≤` [`FEW_ROWS`]: batch-1 or small-batch decoding).
//!
//! Why packed, and why this instruction: decoding streams every weight once per token, so with
//! bf16 weights the bound is half the bytes of f32. Widening each bf16 weight to f32 and using
//! FMAs (`kernels::bf16::linear_small_bf16`) costs a load, two widening instructions and an FMA
//! per 16 weights, which on 2 Zen 4 cores made the loop compute-bound at ≈ 0.7 of the bandwidth
//! bound. `vdpbf16ps` multiplies 16 *pairs* of bf16 and adds both products to 16 f32 lanes, so
//! one 512-bit load of weights feeds 16 outputs × 2 inputs with one instruction, if each 32-bit
//! word holds the two weights that meet the same pair of inputs:
//! - **`(IC, OC)` weights** (GPT-2's `Conv1D`, [`WeightLayout::InOut`]): rows `2p` and `2p + 1`
//!   are interleaved per output column, word `[p][j] = (W[2p][j], W[2p+1][j])` (the "VNNI"
//!   layout), repacked once at load. The input pair `(x[2p], x[2p+1])` is broadcast.
//! - **`(OC, IC)` weights** (the tied LM head `wte`, [`WeightLayout::OutIn`]): the pairs are
//!   already adjacent, word `[j][p] = (W[j][2p], W[j][2p+1])`; this is the plain bf16 layout.
//!
//! An odd `IC` gets a zero partner (a zero row for `InOut`, a zero last word per row for
//! `OutIn`), and the inputs are padded the same way.
//!
//! Work division: the few-row split of [`super::few_rows`], each thread streaming one
//! sequential block of the packed weight. For `InOut` that is a block of pairs of input
//! channels, producing a partial sum of every output ([`split_in_out`]); for `OutIn` a block
//! of output rows ([`split_out_in`]).
//!
//! Accuracy: each input is split into two bf16 parts, `x = hi + lo` with `hi = bf16(x)` and
//! `lo = bf16(x − hi)` (16 significant bits, relative error ≤ 2⁻¹⁸), and both parts meet every
//! weight: two `vdpbf16ps` per weight vector. Why not round `x` to bf16 once: on a random GPT-2
//! that rounding alone moved decode logits by up to 0.015 from f32, and it is discontinuous, so
//! a cached decode and a full recompute (whose f32 activations differ by 1e-6) disagreed by up to
//! 0.007 in the logits wherever a value sat near a rounding boundary (LayerNorm amplifies the
//! small residual stream of a freshly initialised model ≈ 20×). With the split the error is
//! that of the bf16 weights alone. The second instruction is nearly free in batch-1 decoding,
//! which waits on memory. The products of two bf16 values are exact in f32, so the only other
//! errors are the f32 additions. `vdpbf16ps` adds the odd product and then the even one to each
//! lane; the portable path ([`Bf16Path::Portable`], any CPU) does the same, widening each half
//! of a word with one shift or mask.
//!
//! Dimensions: `n` rows, `IC OC` input/output channels, `KP = ⌈IC/2⌉` pairs. Split inputs
//! `xw (n, 2, KP)`: row `r`'s `hi` pair words at `2r·KP`, its `lo` words at `(2r + 1)·KP`.

use super::bf16::{bf16_bits_to_f32, f32_to_bf16_bits, matmul_bf16, Bf16Path};
use super::check_len;
use super::few_rows::{split_in_out, split_out_in, FEW_ROWS};
use super::huge_words::HugeWords;
use super::matmul::WeightLayout;
use super::simd::simd_fn;
use half::bf16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use rayon::prelude::*;

// The decode kernels hold up to `FEW_ROWS` rows in registers; `by_rows!` expands `1..=8`.
const _: () = assert!(FEW_ROWS == 8, "by_rows! covers 1..=8 rows");
/// Up to this many rows (a server's decoding batch) the decode kernels run once per
/// [`FEW_ROWS`] rows; beyond (prompts), the weight is unpacked and `matmul_bf16` runs: at 64
/// rows a 128-token prefill ran at 0.65× llama.cpp's f16 (two decode passes per 16 rows).
pub const CHUNKED_ROWS: usize = 16;
/// Pairs of input channels per pass over the accumulators (`InOut`): four weight rows streamed
/// side by side, each accumulator loaded and stored once per four pairs.
const PAIRS: usize = 4;
/// Accumulator floats per column strip (`InOut`): `n × strip` stays in L1 (8 KiB).
const STRIP_FLOATS: usize = 2048;
/// Output rows per block (`OutIn`): eight independent accumulation chains.
const OUT_ROWS: usize = 8;

/// A weight matrix in bf16, packed in pairs along the input dimension (see the module docs).
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    words: HugeWords,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
}

impl PackedBf16 {
    /// An all-zero packed matrix of `W`'s shape (`(IC, OC)` or `(OC, IC)` per `layout`).
    pub fn zeros(ic: usize, oc: usize, layout: WeightLayout) -> Self {
        PackedBf16 {
            words: HugeWords::zeros(ic.div_ceil(2) * oc),
            ic,
            oc,
            layout,
        }
    }

    /// Packs an f32 matrix stored in `layout`, rounding each weight to bf16 (nearest even).
    pub fn from_f32(w: &[f32], ic: usize, oc: usize, layout: WeightLayout) -> Self {
        check_len("PackedBf16::from_f32", "w", w.len(), ic * oc);
        let mut m = Self::zeros(ic, oc, layout);
        m.fill_with(|i| f32_to_bf16_bits(w[i]));
        m
    }

    /// Packs a bf16 matrix stored in `layout`.
    pub fn from_bf16(w: &[bf16], ic: usize, oc: usize, layout: WeightLayout) -> Self {
        check_len("PackedBf16::from_bf16", "w", w.len(), ic * oc);
        let bits: &[u16] = w.reinterpret_cast();
        let mut m = Self::zeros(ic, oc, layout);
        m.fill_with(|i| bits[i]);
        m
    }

    /// Sets every word from `value(i)`, the bf16 bits of stored element `i` (row-major in
    /// `layout`), in parallel over blocks of words.
    fn fill_with(&mut self, value: impl Fn(usize) -> u16 + Sync) {
        let (ic, oc, kp) = (self.ic, self.oc, self.ic.div_ceil(2));
        let layout = self.layout;
        self.words
            .par_chunks_mut(1 << 14)
            .enumerate()
            .for_each(|(ci, chunk)| {
                for (k, word) in chunk.iter_mut().enumerate() {
                    let idx = ci * (1 << 14) + k;
                    // (pair p, output j) of this word, and the stored index of its low half.
                    let (p, j) = match layout {
                        WeightLayout::InOut => (idx / oc, idx % oc),
                        WeightLayout::OutIn => (idx % kp, idx / kp),
                    };
                    let at = |i: usize| match layout {
                        WeightLayout::InOut => i * oc + j,
                        WeightLayout::OutIn => j * ic + i,
                    };
                    let lo = value(at(2 * p)) as u32;
                    let hi = if 2 * p + 1 < ic {
                        value(at(2 * p + 1)) as u32
                    } else {
                        0
                    };
                    *word = lo | hi << 16;
                }
            });
    }

    /// Writes stored rows `r0..r0 + rows.len() / row_len` (bf16 bits, row-major in the layout:
    /// input channels of `(IC, OC)`, output channels of `(OC, IC)`), e.g. a chunk read from a
    /// file. Rows may arrive in any chunks; each half-word is written independently.
    pub fn set_rows(&mut self, r0: usize, rows: &[u16]) {
        let (ic, oc, kp) = (self.ic, self.oc, self.ic.div_ceil(2));
        match self.layout {
            WeightLayout::InOut => {
                assert!(rows.len().is_multiple_of(oc.max(1)) && r0 + rows.len() / oc.max(1) <= ic);
                for (k, row) in rows.chunks_exact(oc.max(1)).enumerate() {
                    let i = r0 + k;
                    let (p, shift) = (i / 2, 16 * (i % 2));
                    let keep = 0xFFFF_0000u32 >> shift;
                    for (w, &b) in self.words[p * oc..(p + 1) * oc].iter_mut().zip(row) {
                        *w = (*w & keep) | (b as u32) << shift;
                    }
                }
            }
            WeightLayout::OutIn => {
                assert!(rows.len().is_multiple_of(ic.max(1)) && r0 + rows.len() / ic.max(1) <= oc);
                for (k, row) in rows.chunks_exact(ic.max(1)).enumerate() {
                    let j = r0 + k;
                    let dst = &mut self.words[j * kp..(j + 1) * kp];
                    for (w, pr) in dst.iter_mut().zip(row.chunks(2)) {
                        *w = pr[0] as u32 | (pr.get(1).copied().unwrap_or(0) as u32) << 16;
                    }
                }
            }
        }
    }

    /// The matrix back in its stored layout (bf16 bits), e.g. for the packed `matmul_bf16`.
    pub fn unpack(&self, dst: &mut [u16]) {
        let (ic, oc) = (self.ic, self.oc);
        check_len("PackedBf16::unpack", "dst", dst.len(), ic * oc);
        match self.layout {
            WeightLayout::InOut => {
                for (p, words) in self.words.chunks_exact(oc.max(1)).enumerate() {
                    let (lo, hi) = dst[2 * p * oc..].split_at_mut(oc);
                    for (l, &w) in lo.iter_mut().zip(words) {
                        *l = w as u16;
                    }
                    if 2 * p + 1 < ic {
                        for (h, &w) in hi[..oc].iter_mut().zip(words) {
                            *h = (w >> 16) as u16;
                        }
                    }
                }
            }
            WeightLayout::OutIn => {
                for (j, row) in dst.chunks_exact_mut(ic.max(1)).enumerate() {
                    self.row_bits(j, row);
                }
            }
        }
    }

    /// Stored row `j` of an `(OC, IC)` matrix as bf16 bits (`dst` holds `IC` values).
    fn row_bits(&self, j: usize, dst: &mut [u16]) {
        let kp = self.ic.div_ceil(2);
        for (pr, &w) in dst.chunks_mut(2).zip(&self.words[j * kp..(j + 1) * kp]) {
            pr[0] = w as u16;
            if let Some(h) = pr.get_mut(1) {
                *h = (w >> 16) as u16;
            }
        }
    }

    /// Row `j` of an `(OC, IC)` matrix widened to f32 (the embedding lookup of a tied `wte`).
    pub fn row_f32(&self, j: usize, dst: &mut [f32]) {
        assert_eq!(
            self.layout,
            WeightLayout::OutIn,
            "row_f32 reads (OC, IC) rows"
        );
        check_len("PackedBf16::row_f32", "dst", dst.len(), self.ic);
        let kp = self.ic.div_ceil(2);
        for (pr, &w) in dst.chunks_mut(2).zip(&self.words[j * kp..(j + 1) * kp]) {
            pr[0] = bf16_bits_to_f32(w as u16);
            if let Some(h) = pr.get_mut(1) {
                *h = bf16_bits_to_f32((w >> 16) as u16);
            }
        }
    }

    /// Input channels.
    pub fn ic(&self) -> usize {
        self.ic
    }

    /// Output channels.
    pub fn oc(&self) -> usize {
        self.oc
    }

    /// The stored orientation.
    pub fn layout(&self) -> WeightLayout {
        self.layout
    }

    /// Bytes held (including the zero partners of an odd `IC`).
    pub fn bytes(&self) -> usize {
        4 * self.words.len()
    }
}

/// `out (n, OC) = inp · Wᵀ + bias` with `inp` split into two bf16 parts (see the module docs),
/// on the fastest path this CPU has. Up to
/// [`CHUNKED_ROWS`] rows the decode kernels stream the packed weight once per [`FEW_ROWS`]
/// rows; more rows (long prefills) unpack it and run the tiled `matmul_bf16` once per part.
pub fn linear_packed_bf16(
    out: &mut [f32],
    inp: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    n: usize,
) {
    linear_packed_bf16_on(Bf16Path::detect(), out, inp, w, bias, n)
}

/// [`linear_packed_bf16`] on a chosen path (tests force [`Bf16Path::Portable`]); asking for
/// [`Bf16Path::Avx512Bf16`] on a CPU without it runs the portable path. Long prefills (more
/// than [`CHUNKED_ROWS`] rows) always take `matmul_bf16`'s detected path.
pub fn linear_packed_bf16_on(
    path: Bf16Path,
    out: &mut [f32],
    inp: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    n: usize,
) {
    let (ic, oc) = (w.ic, w.oc);
    check_len("linear_packed_bf16", "out", out.len(), n * oc);
    check_len("linear_packed_bf16", "inp", inp.len(), n * ic);
    if let Some(b) = bias {
        check_len("linear_packed_bf16", "bias", b.len(), oc);
    }
    let path = if path == Bf16Path::Avx512Bf16 && Bf16Path::detect() != path {
        Bf16Path::Portable
    } else {
        path
    };
    if n > CHUNKED_ROWS {
        return prefill(out, inp, w, bias, n);
    }
    for r0 in (0..n).step_by(FEW_ROWS) {
        let rows = FEW_ROWS.min(n - r0);
        decode(
            path,
            &mut out[r0 * oc..(r0 + rows) * oc],
            &inp[r0 * ic..(r0 + rows) * ic],
            w,
            bias,
            rows,
        );
    }
}

thread_local! {
    /// Unpacked weight of a long prefill, reused across calls.
    static UNPACKED: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The words as their bf16 halves in memory order (on a little-endian target the low half of
/// word `p` is element `2p`: the order of the file and of `matmul_bf16`'s pairs).
fn words_as_halves(words: &[u32]) -> &[u16] {
    // SAFETY: u16 has no invalid bit patterns and an alignment (2) dividing u32's (4); the slice
    // covers exactly the bytes of `words` and borrows them for the same lifetime.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u16>(), 2 * words.len()) }
}

/// `(hi, lo)` with `hi = bf16(x)`, `lo = bf16(x − hi)` (both as bits): `hi + lo` carries 16
/// significant bits of `x`.
#[inline(always)]
pub fn split_bf16(x: f32) -> (u16, u16) {
    let hi = f32_to_bf16_bits(x);
    (hi, f32_to_bf16_bits(x - bf16_bits_to_f32(hi)))
}

/// The split inputs as pair words `xw (n, 2, KP)` (see the module docs), zero-padded.
fn input_pairs(inp: &[f32], n: usize, ic: usize) -> Vec<u32> {
    let kp = ic.div_ceil(2);
    let mut xw = vec![0u32; 2 * n * kp];
    for (row, words) in inp
        .chunks_exact(ic.max(1))
        .zip(xw.chunks_exact_mut(2 * kp.max(1)))
    {
        let (hi, lo) = words.split_at_mut(kp);
        for ((h, l), pr) in hi.iter_mut().zip(lo).zip(row.chunks(2)) {
            let (h0, l0) = split_bf16(pr[0]);
            let (h1, l1) = pr.get(1).map_or((0, 0), |&v| split_bf16(v));
            *h = h0 as u32 | (h1 as u32) << 16;
            *l = l0 as u32 | (l1 as u32) << 16;
        }
    }
    xw
}

/// More than [`CHUNKED_ROWS`] rows: `out = bias + hi · W + lo · W` with the tiled
/// `matmul_bf16` on the unpacked weight (compute-bound, so the weight's extra pass is minor).
fn prefill(out: &mut [f32], inp: &[f32], w: &PackedBf16, bias: Option<&[f32]>, n: usize) {
    let (ic, oc) = (w.ic, w.oc);
    for row in out.chunks_exact_mut(oc.max(1)) {
        match bias {
            Some(b) => row.copy_from_slice(b),
            None => row.fill(0.0),
        }
    }
    let (mut hi, mut lo) = (vec![bf16::ZERO; n * ic], vec![bf16::ZERO; n * ic]);
    for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(inp) {
        let (a, b) = split_bf16(x);
        (*h, *l) = (bf16::from_bits(a), bf16::from_bits(b));
    }
    let trans_b = w.layout == WeightLayout::OutIn;
    let run = |wb: &[bf16], out: &mut [f32]| {
        for x in [&hi, &lo] {
            matmul_bf16(out, x, wb, n, ic, oc, false, trans_b, true);
        }
    };
    if w.layout == WeightLayout::OutIn && ic.is_multiple_of(2) && cfg!(target_endian = "little") {
        // Pairs along IC with no padding, low half first: the words are the stored bf16 matrix.
        return run(words_as_halves(&w.words).reinterpret_cast(), out);
    }
    UNPACKED.with(|cell| {
        let mut buf = cell.take();
        buf.resize(ic * oc, 0);
        w.unpack(&mut buf);
        run(buf.reinterpret_cast(), out);
        cell.set(buf);
    });
}

/// One decode call, `1 ≤ n ≤ FEW_ROWS` rows, split across threads (see the module docs).
fn decode(
    path: Bf16Path,
    out: &mut [f32],
    inp: &[f32],
    w: &PackedBf16,
    bias: Option<&[f32]>,
    n: usize,
) {
    debug_assert!((1..=FEW_ROWS).contains(&n));
    let (ic, oc, kp) = (w.ic, w.oc, w.ic.div_ceil(2));
    let xw = input_pairs(inp, n, ic);
    match w.layout {
        WeightLayout::InOut => split_in_out(out, bias, n, oc, kp, PAIRS, |acc, p0, p1| {
            in_out(path, acc, &xw, &w.words, n, kp, oc, p0, p1)
        }),
        WeightLayout::OutIn => split_out_in(out, bias, n, oc, 16, |acc, j0, j1| {
            out_in(path, acc, &xw, &w.words, n, kp, j0, j1)
        }),
    }
}

/// Calls `$f::<N>($args)` for the runtime row count `$n` in `1..=FEW_ROWS`.
macro_rules! by_rows {
    ($n:expr, $f:ident, ($($a:expr),*)) => {
        match $n {
            1 => $f::<1>($($a),*),
            2 => $f::<2>($($a),*),
            3 => $f::<3>($($a),*),
            4 => $f::<4>($($a),*),
            5 => $f::<5>($($a),*),
            6 => $f::<6>($($a),*),
            7 => $f::<7>($($a),*),
            8 => $f::<8>($($a),*),
            _ => unreachable!("decode kernels take 1..=8 rows"),
        }
    };
}

/// Column strip of the `InOut` kernels for `n` rows: `n × strip` accumulators stay in L1.
fn strip_len(n: usize) -> usize {
    (STRIP_FLOATS / n).max(16) / 16 * 16
}

/// Partial product of pairs `p0..p1` for `(IC, OC)` packed weights: `acc (n, OC) += Σ_p x[:, p]
/// · W[p, :]`, on `path`.
#[allow(clippy::too_many_arguments)]
fn in_out(
    path: Bf16Path,
    acc: &mut [f32],
    xw: &[u32],
    w: &[u32],
    n: usize,
    kp: usize,
    oc: usize,
    p0: usize,
    p1: usize,
) {
    check_len("bf16_decode::in_out", "acc", acc.len(), n * oc);
    check_len("bf16_decode::in_out", "xw", xw.len(), 2 * n * kp);
    check_len("bf16_decode::in_out", "w", w.len(), kp * oc);
    assert!(p0 <= p1 && p1 <= kp);
    #[cfg(target_arch = "x86_64")]
    if path == Bf16Path::Avx512Bf16 {
        // SAFETY: `Avx512Bf16` is only chosen when `Bf16Path::detect` found AVX-512F and
        // AVX-512 BF16 (see `linear_packed_bf16_on`); the lengths were checked above.
        unsafe { by_rows!(n, in_out_avx512bf16, (acc, xw, w, kp, oc, p0, p1)) };
        return;
    }
    let _ = path;
    by_rows!(n, in_out_portable, (acc, xw, w, kp, oc, p0, p1))
}

/// Rows `j0..j1` of `(OC, IC)` packed weights dotted with each input row, added into
/// `acc (n, j1 − j0)`, on `path`.
#[allow(clippy::too_many_arguments)]
fn out_in(
    path: Bf16Path,
    acc: &mut [f32],
    xw: &[u32],
    w: &[u32],
    n: usize,
    kp: usize,
    j0: usize,
    j1: usize,
) {
    check_len("bf16_decode::out_in", "acc", acc.len(), n * (j1 - j0));
    check_len("bf16_decode::out_in", "xw", xw.len(), 2 * n * kp);
    assert!(j0 < j1 && j1 * kp <= w.len());
    #[cfg(target_arch = "x86_64")]
    if path == Bf16Path::Avx512Bf16 {
        // SAFETY: as in `in_out`; lengths and the row range were checked above.
        unsafe { by_rows!(n, out_in_avx512bf16, (acc, xw, w, kp, j0, j1)) };
        return;
    }
    let _ = path;
    by_rows!(n, out_in_portable, (acc, xw, w, kp, j0, j1))
}

// ---------------------------------------------------------------------------------------------
// AVX-512 BF16 kernels
// ---------------------------------------------------------------------------------------------

/// `InOut` kernel on `vdpbf16ps`: per column strip, [`PAIRS`] packed weight rows are streamed
/// side by side; per 16 columns, four weight loads feed `8·N` `vdpbf16ps` whose other operand is
/// a broadcast input pair (`hi` or `lo`), and each accumulator vector is loaded and stored once
/// per [`PAIRS`] pairs. The `lo` products go to a second accumulator (two dependency chains).
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `acc` holds `N·oc`, `xw` `2·N·kp`, `w` `kp·oc` values;
/// `p0 ≤ p1 ≤ kp`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn in_out_avx512bf16<const N: usize>(
    acc: &mut [f32],
    xw: &[u32],
    w: &[u32],
    kp: usize,
    oc: usize,
    p0: usize,
    p1: usize,
) {
    use std::arch::x86_64::*;
    let strip = strip_len(N);
    let (a0, x0, w0) = (acc.as_mut_ptr(), xw.as_ptr(), w.as_ptr());
    let mut s0 = 0;
    while s0 < oc {
        let s1 = (s0 + strip).min(oc);
        let mut p = p0;
        while p < p1 {
            // Four pairs at a time; a remainder repeats with the unused pairs' inputs set to
            // zero (their weight rows are clamped to a valid row, contributing 0 · w).
            let q = (p1 - p).min(PAIRS);
            let mut xh = [[_mm512_setzero_ps(); PAIRS]; N];
            let mut xl = [[_mm512_setzero_ps(); PAIRS]; N];
            let mut rows = [w0; PAIRS];
            for t in 0..PAIRS {
                let pt = if t < q { p + t } else { p };
                rows[t] = w0.add(pt * oc);
                for r in 0..N {
                    let (h, l) = if t < q {
                        let at = x0.add(2 * r * kp + p + t);
                        (*at, *at.add(kp))
                    } else {
                        (0, 0)
                    };
                    xh[r][t] = _mm512_castsi512_ps(_mm512_set1_epi32(h as i32));
                    xl[r][t] = _mm512_castsi512_ps(_mm512_set1_epi32(l as i32));
                }
            }
            let mut j = s0;
            while j < s1 {
                let left = s1 - j;
                let m: __mmask16 = if left >= 16 {
                    0xFFFF
                } else {
                    (1u16 << left) - 1
                };
                let mut wv = [_mm512_setzero_ps(); PAIRS];
                for t in 0..PAIRS {
                    wv[t] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(m, rows[t].add(j).cast()));
                }
                for r in 0..N {
                    let ap = a0.add(r * oc + j);
                    let mut v = _mm512_maskz_loadu_ps(m, ap);
                    let mut u = _mm512_setzero_ps();
                    for t in 0..PAIRS {
                        // __m512bh and __m512 are both 64 bytes of lanes; the casts only retype.
                        let wt = std::mem::transmute::<__m512, __m512bh>(wv[t]);
                        v = _mm512_dpbf16_ps(
                            v,
                            wt,
                            std::mem::transmute::<__m512, __m512bh>(xh[r][t]),
                        );
                        u = _mm512_dpbf16_ps(
                            u,
                            wt,
                            std::mem::transmute::<__m512, __m512bh>(xl[r][t]),
                        );
                    }
                    _mm512_mask_storeu_ps(ap, m, _mm512_add_ps(v, u));
                }
                j += 16;
            }
            p += q;
        }
        s0 = s1;
    }
}

/// `OutIn` kernel on `vdpbf16ps`: [`OUT_ROWS`] weight rows at a time, each with its own
/// accumulators for the `hi` and the `lo` inputs (sixteen independent chains), reduced to one
/// sum per row at the end. For `N > 1`
/// the block's rows (`8 × KP` words, 12 KiB at GPT-2's width) are re-read from L1 per input row.
///
/// # Safety
/// The CPU has AVX-512F and AVX-512 BF16; `acc` holds `N·(j1 − j0)`, `xw` `2·N·kp` values, `w` at
/// least `j1·kp`; `j0 < j1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn out_in_avx512bf16<const N: usize>(
    acc: &mut [f32],
    xw: &[u32],
    w: &[u32],
    kp: usize,
    j0: usize,
    j1: usize,
) {
    use std::arch::x86_64::*;
    let wd = j1 - j0;
    let (full, tail) = (kp / 16, kp % 16);
    let mt: __mmask16 = ((1u32 << tail) - 1) as u16;
    let mut j = j0;
    while j < j1 {
        let jb = (j1 - j).min(OUT_ROWS);
        // Rows past the block's end re-read its last row; their sums are not stored.
        let rows: [*const u32; OUT_ROWS] =
            std::array::from_fn(|t| w.as_ptr().add((j + t.min(jb - 1)) * kp));
        for r in 0..N {
            let xr = xw.as_ptr().add(2 * r * kp);
            let (mut a, mut b) = (
                [_mm512_setzero_ps(); OUT_ROWS],
                [_mm512_setzero_ps(); OUT_ROWS],
            );
            // One step of 16 pair words at word offset `$o`; `$m` masks the words read.
            macro_rules! step {
                ($o:expr, $m:expr) => {{
                    let xh: __m512bh =
                        std::mem::transmute(_mm512_maskz_loadu_epi32($m, xr.add($o).cast()));
                    let xl: __m512bh =
                        std::mem::transmute(_mm512_maskz_loadu_epi32($m, xr.add(kp + $o).cast()));
                    for t in 0..OUT_ROWS {
                        let wv: __m512bh = std::mem::transmute(_mm512_maskz_loadu_epi32(
                            $m,
                            rows[t].add($o).cast(),
                        ));
                        a[t] = _mm512_dpbf16_ps(a[t], wv, xh);
                        b[t] = _mm512_dpbf16_ps(b[t], wv, xl);
                    }
                }};
            }
            for q in 0..full {
                // An all-ones constant mask: the compiler emits plain loads.
                step!(16 * q, 0xFFFF);
            }
            if tail > 0 {
                step!(16 * full, mt);
            }
            for t in 0..jb {
                acc[r * wd + j - j0 + t] += _mm512_reduce_add_ps(_mm512_add_ps(a[t], b[t]));
            }
        }
        j += jb;
    }
}

// ---------------------------------------------------------------------------------------------
// Portable kernels (any CPU; compiled for the SIMD ladder with `simd_fn!`)
// ---------------------------------------------------------------------------------------------

/// The low (even) bf16 of a word, widened exactly.
#[inline(always)]
fn lo(w: u32) -> f32 {
    f32::from_bits(w << 16)
}

/// The high (odd) bf16 of a word, widened exactly.
#[inline(always)]
fn hi(w: u32) -> f32 {
    f32::from_bits(w & 0xFFFF_0000)
}

simd_fn! {
    /// Portable twin of [`in_out_avx512bf16`]: the same loop nest, each word's halves widened with
    /// one shift or mask, the odd product added before the even one as `vdpbf16ps` does.
    fn in_out_portable<const N: usize>(
        acc: &mut [f32],
        xw: &[u32],
        w: &[u32],
        kp: usize,
        oc: usize,
        p0: usize,
        p1: usize,
    ) {
        let strip = strip_len(N);
        let mut s0 = 0;
        while s0 < oc {
            let s1 = (s0 + strip).min(oc);
            let mut p = p0;
            while p + PAIRS <= p1 {
                let row = |t: usize| &w[(p + t) * oc + s0..(p + t) * oc + s1];
                let (w0, w1, w2, w3) = (row(0), row(1), row(2), row(3));
                for r in 0..N {
                    let xh: [u32; PAIRS] = std::array::from_fn(|t| xw[2 * r * kp + p + t]);
                    let xl: [u32; PAIRS] = std::array::from_fn(|t| xw[(2 * r + 1) * kp + p + t]);
                    let a = &mut acc[r * oc + s0..r * oc + s1];
                    for ((((a, &b0), &b1), &b2), &b3) in a.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                        let (mut v, mut u) = (*a, 0.0f32);
                        for (t, b) in [b0, b1, b2, b3].into_iter().enumerate() {
                            v += hi(xh[t]) * hi(b);
                            v += lo(xh[t]) * lo(b);
                            u += hi(xl[t]) * hi(b);
                            u += lo(xl[t]) * lo(b);
                        }
                        *a = v + u;
                    }
                }
                p += PAIRS;
            }
            for p in p..p1 {
                let row = &w[p * oc + s0..p * oc + s1];
                for r in 0..N {
                    let (xh, xl) = (xw[2 * r * kp + p], xw[(2 * r + 1) * kp + p]);
                    for (a, &b) in acc[r * oc + s0..r * oc + s1].iter_mut().zip(row) {
                        let mut v = *a;
                        v += hi(xh) * hi(b);
                        v += lo(xh) * lo(b);
                        *a = v + (hi(xl) * hi(b) + lo(xl) * lo(b));
                    }
                }
            }
            s0 = s1;
        }
    }
}

simd_fn! {
    /// Portable twin of [`out_in_avx512bf16`]: per row, 16 lanes each adding the odd then the even
    /// product, summed at the end.
    fn out_in_portable<const N: usize>(
        acc: &mut [f32],
        xw: &[u32],
        w: &[u32],
        kp: usize,
        j0: usize,
        j1: usize,
    ) {
        let wd = j1 - j0;
        for j in j0..j1 {
            let row = &w[j * kp..(j + 1) * kp];
            for r in 0..N {
                let (xh, xl) = (
                    &xw[2 * r * kp..(2 * r + 1) * kp],
                    &xw[(2 * r + 1) * kp..(2 * r + 2) * kp],
                );
                let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
                let (mut hc, mut lc, mut wc) = (
                    xh.chunks_exact(16),
                    xl.chunks_exact(16),
                    row.chunks_exact(16),
                );
                for ((hs, ls), ws) in (&mut hc).zip(&mut lc).zip(&mut wc) {
                    for l in 0..16 {
                        a[l] += hi(hs[l]) * hi(ws[l]);
                        a[l] += lo(hs[l]) * lo(ws[l]);
                        b[l] += hi(ls[l]) * hi(ws[l]);
                        b[l] += lo(ls[l]) * lo(ws[l]);
                    }
                }
                let rest = hc
                    .remainder()
                    .iter()
                    .zip(lc.remainder())
                    .zip(wc.remainder());
                for (l, ((&h, &lw), &w)) in rest.enumerate() {
                    a[l] += hi(h) * hi(w);
                    a[l] += lo(h) * lo(w);
                    b[l] += hi(lw) * hi(w);
                    b[l] += lo(lw) * lo(w);
                }
                acc[r * wd + j - j0] += a.iter().zip(&b).map(|(x, y)| x + y).sum::<f32>();
            }
        }
    }
}

/// Oracle: `out (n, OC) = inp · W + bias` from the stored bf16 matrix, in f64, each input taken
/// as `hi + lo` ([`split_bf16`]) as the kernels do.
#[allow(clippy::too_many_arguments)]
pub fn linear_bf16_naive(
    out: &mut [f32],
    inp: &[f32],
    w: &[bf16],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    for r in 0..n {
        for j in 0..oc {
            let mut s = bias.map_or(0.0, |b| b[j] as f64);
            for i in 0..ic {
                let (h, l) = split_bf16(inp[r * ic + i]);
                let x = bf16_bits_to_f32(h) as f64 + bf16_bits_to_f32(l) as f64;
                let wv = match layout {
                    WeightLayout::InOut => w[i * oc + j],
                    WeightLayout::OutIn => w[j * ic + i],
                };
                s += x * wv.to_f64();
            }
            out[r * oc + j] = s as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::bf16::to_bf16_vec;
    use crate::kernels::simd::{limit, Isa};
    use crate::rng::Rng;

    /// `|got − exact| ≤ (2·IC + 3)·2⁻²⁴·(|bias| + Σ|(hi + lo)·w|)`: the f32 summation-order
    /// bound for `2·IC` exact products, the bias and the final `hi + lo` addition (products of
    /// bf16 values are exact in f32, so only the additions round).
    #[allow(clippy::too_many_arguments)]
    fn check(
        got: &[f32],
        inp: &[f32],
        w: &[bf16],
        bias: &[f32],
        n: usize,
        ic: usize,
        oc: usize,
        layout: WeightLayout,
        what: &str,
    ) {
        let mut want = vec![0.0; n * oc];
        linear_bf16_naive(&mut want, inp, w, Some(bias), n, ic, oc, layout);
        let absx: Vec<f32> = inp.iter().map(|v| v.abs()).collect();
        let absw: Vec<bf16> = w.iter().map(|v| bf16::from_f32(v.to_f32().abs())).collect();
        let absb: Vec<f32> = bias.iter().map(|v| v.abs()).collect();
        let mut mag = vec![0.0; n * oc];
        linear_bf16_naive(&mut mag, &absx, &absw, Some(&absb), n, ic, oc, layout);
        for i in 0..n * oc {
            let tol = (2.0 * ic as f32 + 3.0) * f32::EPSILON * 0.5 * mag[i] + f32::MIN_POSITIVE;
            assert!(
                (got[i] - want[i]).abs() <= tol,
                "{what} n={n} ic={ic} oc={oc} {layout:?} index {i}: {} vs {} (tol {tol})",
                got[i],
                want[i]
            );
        }
    }

    #[test]
    fn decode_kernels_match_the_bf16_reference_on_odd_shapes_both_paths() {
        let mut rng = Rng::new(21);
        for &(ic, oc) in &[
            (1, 1),
            (2, 16),
            (7, 5),
            (13, 37),
            (33, 100),
            (64, 64),
            (255, 301),
        ] {
            for n in 1..=FEW_ROWS {
                for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                    let inp = rng.normal_vec(n * ic, 1.0);
                    let w = to_bf16_vec(&rng.normal_vec(ic * oc, 1.0));
                    let bias = rng.normal_vec(oc, 1.0);
                    let packed = PackedBf16::from_bf16(&w, ic, oc, layout);
                    // The vdpbf16ps kernels (where the CPU has them) and the portable twin
                    // compiled for every rung of the SIMD ladder.
                    let mut runs = vec![(Bf16Path::detect(), None)];
                    runs.extend(Isa::available().map(|isa| (Bf16Path::Portable, Some(isa))));
                    for (path, isa) in runs {
                        let _l = isa.map(limit);
                        let mut got = vec![f32::NAN; n * oc];
                        linear_packed_bf16_on(path, &mut got, &inp, &packed, Some(&bias), n);
                        let what = format!("{} {isa:?}", path.name());
                        check(&got, &inp, &w, &bias, n, ic, oc, layout, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn prefill_rows_match_the_bf16_reference() {
        let mut rng = Rng::new(22);
        for &(n, ic, oc) in &[(9, 31, 40), (20, 64, 48), (65, 33, 70), (100, 64, 30)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let inp = rng.normal_vec(n * ic, 1.0);
                let w = to_bf16_vec(&rng.normal_vec(ic * oc, 1.0));
                let bias = rng.normal_vec(oc, 1.0);
                let packed = PackedBf16::from_bf16(&w, ic, oc, layout);
                let mut got = vec![f32::NAN; n * oc];
                linear_packed_bf16(&mut got, &inp, &packed, Some(&bias), n);
                check(&got, &inp, &w, &bias, n, ic, oc, layout, "prefill");
            }
        }
    }

    #[test]
    fn packing_round_trips_from_f32_bf16_and_rows() {
        let mut rng = Rng::new(23);
        for &(ic, oc) in &[(1, 3), (5, 4), (8, 9)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let w32 = rng.normal_vec(ic * oc, 1.0);
                let w = to_bf16_vec(&w32);
                let bits: &[u16] = w.reinterpret_cast();
                let a = PackedBf16::from_f32(&w32, ic, oc, layout);
                let b = PackedBf16::from_bf16(&w, ic, oc, layout);
                // Stored rows in chunks of 1 and 2, as a file reader might deliver them.
                let mut c = PackedBf16::zeros(ic, oc, layout);
                let row_len = if layout == WeightLayout::InOut {
                    oc
                } else {
                    ic
                };
                let rows = bits.len() / row_len;
                let mut r = 0;
                while r < rows {
                    let k = (1 + r % 2).min(rows - r);
                    c.set_rows(r, &bits[r * row_len..(r + k) * row_len]);
                    r += k;
                }
                assert_eq!(a.words[..], b.words[..]);
                assert_eq!(a.words[..], c.words[..]);
                let mut back = vec![0u16; ic * oc];
                a.unpack(&mut back);
                assert_eq!(back, bits);
                if layout == WeightLayout::OutIn {
                    let mut row = vec![0.0; ic];
                    a.row_f32(oc - 1, &mut row);
                    let want: Vec<f32> = w[(oc - 1) * ic..].iter().map(|v| v.to_f32()).collect();
                    assert_eq!(row, want);
                }
            }
        }
    }
}
