//! 8-bit weights for inference: `out (n, OC) = inp (n, IC) · Wᵀ + bias` with `W` quantized in
//! blocks of [`QBLOCK`] = 32 input channels, each block with its own f16 scale (llama.cpp's
//! `Q8_0`), and the input rows quantized the same way on the fly. Products run in integers on
//! AVX-512 VNNI (`vpdpbusd`: 64 byte products per instruction) or a portable twin that gives
//! the same bits.
//!
//! Quantization (llama.cpp's `quantize_row_q8_0` reference, so a GGUF `Q8_0` tensor and ours
//! hold the same bytes): a block `v (32)` gets `d = max|v| / 127`, `q = round(v / d)` (half away
//! from zero, `q ∈ [−127, 127]`), the scale stored as `f16(d)`; a weight reads back as
//! `f16(d) · q`. Inputs are quantized per row and block the same way, with the scale kept in
//! f32.
//!
//! The product of one block is exact in integers, `Σ qx·qw`, and is then scaled and added in
//! f32: `acc += f32(Σ qx·qw) · (dw · dx)`, block after block (the same operations in the same
//! order on every path, so the VNNI kernel and the portable one agree bit for bit).
//! `vpdpbusd` multiplies *unsigned* by signed bytes, so the weights are stored as `qw + 128`
//! (unsigned) and each block's integer sum starts from `−128 · Σ qx` (one number per row and
//! block, computed with the quantized input) instead of zero: `Σ qx·(qw + 128) − 128·Σ qx =
//! Σ qx·qw`, exactly, at no cost in the inner loop.
//!
//! Layout ([`PackedI8`]): output channels in strips of [`STRIP`] = 32; a strip holds, block after
//! block, a *record* of 8 × 32 words of weights (word `[w][c]` = the four bytes of inputs
//! `32b + 4w .. 32b + 4w + 4` of column `c`, the order `vpdpbusd` reads with the four input
//! bytes broadcast) followed by the 32 f16 scales of the block (16 words). Decoding streams a
//! strip's records in order, and one 512-bit load feeds 16 columns × 4 inputs for every row.
//! Short inputs (`IC` not a multiple of 32) and strips past `OC` are padded with zero weights.
//!
//! Work division: each thread takes a contiguous range of strips and writes their columns of the
//! output directly (no per-call buffers), and within a strip runs the rows in groups of
//! up to [`ROW_TILE`] held in registers, so the strip's weights (≤ 104 KiB for IC = 3072) are
//! read from memory once and from cache for every further group. Long inputs (prefill, scoring)
//! run in chunks of [`ROW_CHUNK`] rows to bound the per-thread buffers.
//!
//! Dimensions: `n` rows, `IC OC` input/output channels, `NB = ⌈IC/32⌉` blocks.

use super::huge_words::HugeWords;
use super::matmul::WeightLayout;
use super::simd::{cpu, isa, simd_fn, Isa};
use super::strip_split::{row_groups, split_strips, OutRows};
use super::{check_len, check_linear};
use half::f16;
use rayon::prelude::*;

/// Input channels per scale.
pub const QBLOCK: usize = 32;
/// Output channels per strip.
pub const STRIP: usize = 32;
/// Words of weights per block and column (4 inputs per word).
const WORDS: usize = QBLOCK / 4;
/// Words of one (strip, block) record: the weights, then the scales (two f16 per word).
const RECORD: usize = WORDS * STRIP + STRIP / 2;
/// Rows held in registers at once by the VNNI kernel (2 × `ROW_TILE` integer and as many f32
/// accumulators, two weight vectors, a broadcast: 29 of the 32 vector registers).
pub const ROW_TILE: usize = 6;
/// Records (8.5 KiB) ahead that the VNNI kernel prefetches, into L2. Measured on the Intel
/// host of 2026-12-04 (GPT-2 124M int8, batch 1, 2 threads, alternating runs): into L1 185
/// tokens/s; into L2 4 records 213, 8 records 215, 16 records 215, 32 records 209.
const PREFETCH: usize = 8;
/// Rows per pass over the weights for long inputs.
pub const ROW_CHUNK: usize = 64;

/// `Q8_0` quantization of one block (at most [`QBLOCK`] values; missing ones are zeros):
/// `(d, q)` with `d = max|v| / 127` and `q = round(v / d)`.
pub fn quantize_block(v: &[f32]) -> (f32, [i8; QBLOCK]) {
    let amax = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut q = [0i8; QBLOCK];
    for (q, &x) in q.iter_mut().zip(v) {
        *q = round_half_away(x * id).clamp(-127.0, 127.0) as i8;
    }
    (d, q)
}

/// `x.round()` (half away from zero, as C's `roundf` in llama.cpp's reference) for `|x| < 2³¹`,
/// without the `roundf` call that `f32::round` becomes on a baseline x86-64 build (3% of an
/// int8 decoding step went to it): truncate through an integer (exact in that range), then step
/// away from zero when the dropped fraction is at least one half (also exact: `x − t` is a
/// subtraction of nearby floats).
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    let t = x as i32 as f32;
    if (x - t).abs() >= 0.5 {
        t + 1.0f32.copysign(x)
    } else {
        t
    }
}

/// A weight matrix in 8 bits with one f16 scale per 32 inputs of each output, packed in strips
/// (see the module docs).
#[derive(Clone, Debug)]
pub struct PackedI8 {
    words: HugeWords,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
}

impl PackedI8 {
    fn blocks(&self) -> usize {
        self.ic.div_ceil(QBLOCK)
    }

    /// Word index of the record of strip `s`, block `b`.
    fn record(&self, s: usize, b: usize) -> usize {
        (s * self.blocks() + b) * RECORD
    }

    /// A matrix of `W`'s shape (`(IC, OC)` or `(OC, IC)` per `layout`) whose blocks are given by
    /// `block(j, b) = (f16 scale, 32 quantized values)` for output `j`, block `b` (inputs
    /// `32b..32b + 32`; values past `IC` must be zero). Filled in parallel over strips.
    pub fn from_blocks(
        ic: usize,
        oc: usize,
        layout: WeightLayout,
        block: impl Fn(usize, usize) -> (f16, [i8; QBLOCK]) + Sync,
    ) -> Self {
        let nb = ic.div_ceil(QBLOCK);
        let mut words = HugeWords::zeros(oc.div_ceil(STRIP) * nb * RECORD);
        words
            .par_chunks_mut((nb * RECORD).max(1))
            .enumerate()
            .for_each(|(s, strip)| {
                for (b, rec) in strip.chunks_exact_mut(RECORD).enumerate() {
                    let (wq, scales) = rec.split_at_mut(WORDS * STRIP);
                    for c in 0..STRIP {
                        let j = s * STRIP + c;
                        let (d, q) = if j < oc {
                            block(j, b)
                        } else {
                            (f16::ZERO, [0; QBLOCK])
                        };
                        for w in 0..WORDS {
                            let byte = |t: usize| (q[4 * w + t] as i32 + 128) as u32;
                            wq[w * STRIP + c] =
                                byte(0) | byte(1) << 8 | byte(2) << 16 | byte(3) << 24;
                        }
                        let half = d.to_bits() as u32;
                        let shift = 16 * (c % 2);
                        scales[c / 2] = (scales[c / 2] & !(0xFFFF << shift)) | half << shift;
                    }
                }
            });
        PackedI8 {
            words,
            ic,
            oc,
            layout,
        }
    }

    /// Quantizes an f32 matrix stored in `layout` (see [`quantize_block`]).
    pub fn from_f32(w: &[f32], ic: usize, oc: usize, layout: WeightLayout) -> Self {
        check_len("PackedI8::from_f32", "w", w.len(), ic * oc);
        let at = |i: usize, j: usize| match layout {
            WeightLayout::InOut => w[i * oc + j],
            WeightLayout::OutIn => w[j * ic + i],
        };
        Self::from_blocks(ic, oc, layout, |j, b| {
            let mut v = [0.0f32; QBLOCK];
            for (t, x) in v.iter_mut().enumerate().take(ic.saturating_sub(b * QBLOCK)) {
                *x = at(b * QBLOCK + t, j);
            }
            let (d, q) = quantize_block(&v);
            (f16::from_f32(d), q)
        })
    }

    /// Block `b` of output `j`: its f16 scale and its 32 quantized values (zeros past `IC`).
    pub fn block(&self, j: usize, b: usize) -> (f16, [i8; QBLOCK]) {
        assert!(
            j < self.oc && b < self.blocks(),
            "block ({j}, {b}) out of range"
        );
        let rec = &self.words[self.record(j / STRIP, b)..][..RECORD];
        let c = j % STRIP;
        let mut q = [0i8; QBLOCK];
        for w in 0..WORDS {
            let word = rec[w * STRIP + c];
            for t in 0..4 {
                q[4 * w + t] = (((word >> (8 * t)) & 0xFF) as i32 - 128) as i8;
            }
        }
        let half = (rec[WORDS * STRIP + c / 2] >> (16 * (c % 2))) as u16;
        (f16::from_bits(half), q)
    }

    /// Output `j`'s weights read back as f32 (`dst` holds `IC` values): the embedding lookup of
    /// a tied `wte`, a row of the `(V, C)` table.
    pub fn row_f32(&self, j: usize, dst: &mut [f32]) {
        check_len("PackedI8::row_f32", "dst", dst.len(), self.ic);
        for (b, chunk) in dst.chunks_mut(QBLOCK).enumerate() {
            let (d, q) = self.block(j, b);
            let d = d.to_f32();
            for (x, &q) in chunk.iter_mut().zip(&q) {
                *x = d * q as f32;
            }
        }
    }

    /// The matrix read back as f32 in its stored layout.
    pub fn to_f32(&self) -> Vec<f32> {
        let (ic, oc) = (self.ic, self.oc);
        let mut out = vec![0.0f32; ic * oc];
        let mut row = vec![0.0f32; ic];
        for j in 0..oc {
            self.row_f32(j, &mut row);
            match self.layout {
                WeightLayout::OutIn => out[j * ic..(j + 1) * ic].copy_from_slice(&row),
                WeightLayout::InOut => {
                    for (i, &x) in row.iter().enumerate() {
                        out[i * oc + j] = x;
                    }
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

    /// Bytes held (weights, scales and padding).
    pub fn bytes(&self) -> usize {
        4 * self.words.len()
    }

    /// The packed words as stored (what decoding streams; for read probes).
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}

/// Input rows quantized per block of 32: values `q (n, NB·32)`, scales `d (n, NB)`, and each
/// block's starting sum `corr (n, NB) = −128 · Σ q` (see the module docs).
struct QuantRows {
    q: Vec<i8>,
    d: Vec<f32>,
    corr: Vec<i32>,
}

fn quantize_rows(inp: &[f32], n: usize, ic: usize) -> QuantRows {
    let nb = ic.div_ceil(QBLOCK);
    let mut rows = QuantRows {
        q: vec![0; n * nb * QBLOCK],
        d: vec![0.0; n * nb],
        corr: vec![0; n * nb],
    };
    for r in 0..n {
        let x = &inp[r * ic..(r + 1) * ic];
        for (b, v) in x.chunks(QBLOCK).enumerate() {
            let (d, q) = quantize_block(v);
            let k = r * nb + b;
            rows.d[k] = d;
            rows.corr[k] = -128 * q.iter().map(|&q| q as i32).sum::<i32>();
            rows.q[k * QBLOCK..(k + 1) * QBLOCK].copy_from_slice(&q);
        }
    }
    rows
}

/// `out (n, OC) = inp (n, IC) · Wᵀ + bias` with 8-bit weights and inputs quantized on the fly,
/// on the fastest path this CPU has (AVX-512 VNNI, else the portable twin).
pub fn linear_int8(out: &mut [f32], inp: &[f32], w: &PackedI8, bias: Option<&[f32]>, n: usize) {
    linear_int8_on(Int8Path::detect(), out, inp, w, bias, n)
}

/// Which kernel computes the 8-bit products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Path {
    /// AVX-512 VNNI (`vpdpbusd` on 512-bit vectors) with F16C scale conversion.
    Avx512Vnni,
    /// Plain Rust over the same integer sums (any CPU), compiled for the [`Isa`] ladder.
    Portable,
}

impl Int8Path {
    /// AVX-512 VNNI when the CPU has it and the ladder is not capped below AVX-512.
    pub fn detect() -> Self {
        let c = cpu();
        if c.avx512vnni && c.avx512vl && c.f16c && isa() == Isa::Avx512 {
            Int8Path::Avx512Vnni
        } else {
            Int8Path::Portable
        }
    }

    /// `avx512vnni` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Int8Path::Avx512Vnni => "avx512vnni",
            Int8Path::Portable => "portable",
        }
    }
}

/// [`linear_int8`] on a chosen path (tests compare them); asking for AVX-512 VNNI on a CPU
/// without it runs the portable path.
pub fn linear_int8_on(
    path: Int8Path,
    out: &mut [f32],
    inp: &[f32],
    w: &PackedI8,
    bias: Option<&[f32]>,
    n: usize,
) {
    let (ic, oc) = (w.ic, w.oc);
    check_linear("linear_int8", out, inp, bias, n, ic, oc);
    let path = if path == Int8Path::Avx512Vnni && Int8Path::detect() == Int8Path::Avx512Vnni {
        path
    } else {
        Int8Path::Portable
    };
    for r0 in (0..n).step_by(ROW_CHUNK) {
        let rows = ROW_CHUNK.min(n - r0);
        let x = quantize_rows(&inp[r0 * ic..(r0 + rows) * ic], rows, ic);
        let chunk = &mut out[r0 * oc..(r0 + rows) * oc];
        split_strips(chunk, oc.div_ceil(STRIP), |dst, s0, s1| {
            // SAFETY: `chunk` holds `rows × oc` floats; this task writes only the columns of
            // strips s0..s1, disjoint from every other task's.
            unsafe { strips(path, dst, bias, &x, w, rows, s0, s1) }
        });
    }
}

/// Strips `s0..s1` of all `n` rows: `out (n, OC) = bias + ` the products in those strips'
/// columns, rows in register tiles.
///
/// # Safety
/// `out` points at `n × OC` floats, of which no other thread touches these columns meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn strips(
    path: Int8Path,
    out: &OutRows,
    bias: Option<&[f32]>,
    x: &QuantRows,
    w: &PackedI8,
    n: usize,
    s0: usize,
    s1: usize,
) {
    let (nb, oc) = (w.blocks(), w.oc);
    let mut tile = [0.0f32; ROW_TILE * STRIP];
    for s in s0..s1 {
        let rec = &w.words[w.record(s, 0)..w.record(s + 1, 0)];
        let (j0, cols) = (s * STRIP, STRIP.min(oc - s * STRIP));
        for (r0, rows) in row_groups(n, ROW_TILE) {
            let q = &x.q[r0 * nb * QBLOCK..(r0 + rows) * nb * QBLOCK];
            let (d, corr) = (
                &x.d[r0 * nb..(r0 + rows) * nb],
                &x.corr[r0 * nb..(r0 + rows) * nb],
            );
            let t = &mut tile[..rows * STRIP];
            match path {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `linear_int8_on` picks this path only where the CPU has AVX-512 VNNI
                // (with F, VL, BW and F16C, which every such CPU has); the slices hold `rows`
                // rows of `nb` blocks and the strip's `nb` records (checked below in debug).
                Int8Path::Avx512Vnni => strip_vnni(t, rec, q, d, corr, nb, rows),
                _ => strip_portable(t, rec, q, d, corr, nb, rows),
            }
            // SAFETY: rows r0..r0 + rows < n, columns j0..j0 + cols ≤ OC of this task's strips.
            out.store_tile(t, STRIP, bias, (r0, rows), oc, j0, cols);
        }
    }
}

/// Scale `c` of a record (f16 bits widened exactly).
#[inline(always)]
fn scale(rec: &[u32], c: usize) -> f32 {
    f16::from_bits((rec[WORDS * STRIP + c / 2] >> (16 * (c % 2))) as u16).to_f32()
}

simd_fn! {
    /// One strip for `rows` rows: `out (rows, 32)` = the products (no bias), in plain Rust.
    fn strip_portable(
        out: &mut [f32],
        rec: &[u32],
        q: &[i8],
        d: &[f32],
        corr: &[i32],
        nb: usize,
        rows: usize,
    ) {
        for r in 0..rows {
            let mut f = [0.0f32; STRIP];
            for b in 0..nb {
                let rec = &rec[b * RECORD..(b + 1) * RECORD];
                let k = r * nb + b;
                let mut ia = [corr[k]; STRIP];
                for w in 0..WORDS {
                    let x = &q[k * QBLOCK + 4 * w..][..4];
                    let (x0, x1, x2, x3) = (x[0] as i32, x[1] as i32, x[2] as i32, x[3] as i32);
                    for (a, &word) in ia.iter_mut().zip(&rec[w * STRIP..(w + 1) * STRIP]) {
                        *a += (word & 0xFF) as i32 * x0
                            + ((word >> 8) & 0xFF) as i32 * x1
                            + ((word >> 16) & 0xFF) as i32 * x2
                            + (word >> 24) as i32 * x3;
                    }
                }
                for (c, (f, &a)) in f.iter_mut().zip(&ia).enumerate() {
                    *f += a as f32 * (scale(rec, c) * d[k]);
                }
            }
            out[r * STRIP..(r + 1) * STRIP].copy_from_slice(&f);
        }
    }
}

/// [`strip_portable`] with `vpdpbusd`, for 1..=[`ROW_TILE`] rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn strip_vnni(
    out: &mut [f32],
    rec: &[u32],
    q: &[i8],
    d: &[f32],
    corr: &[i32],
    nb: usize,
    rows: usize,
) {
    debug_assert!(rec.len() == nb * RECORD && q.len() == rows * nb * QBLOCK);
    debug_assert!(d.len() == rows * nb && corr.len() == rows * nb && out.len() == rows * STRIP);
    match rows {
        1 => strip_vnni_n::<1>(out, rec, q, d, corr, nb),
        2 => strip_vnni_n::<2>(out, rec, q, d, corr, nb),
        3 => strip_vnni_n::<3>(out, rec, q, d, corr, nb),
        4 => strip_vnni_n::<4>(out, rec, q, d, corr, nb),
        5 => strip_vnni_n::<5>(out, rec, q, d, corr, nb),
        _ => strip_vnni_n::<6>(out, rec, q, d, corr, nb),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,f16c,avx2,fma")]
unsafe fn strip_vnni_n<const R: usize>(
    out: &mut [f32],
    rec: &[u32],
    q: &[i8],
    d: &[f32],
    corr: &[i32],
    nb: usize,
) {
    use std::arch::x86_64::*;
    let mut f = [[_mm512_setzero_ps(); 2]; R];
    let (rp, qp) = (rec.as_ptr(), q.as_ptr());
    for b in 0..nb {
        let base = rp.add(b * RECORD);
        // The record PREFETCH records ahead (past the strip's end: the next strip's, which
        // follows in memory; a prefetch past the matrix is harmless).
        let ahead = base.wrapping_add(PREFETCH * RECORD).cast::<i8>();
        for line in 0..RECORD * 4 / 64 + 1 {
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(64 * line));
        }
        let mut ia = [[_mm512_setzero_si512(); 2]; R];
        for (r, ia) in ia.iter_mut().enumerate() {
            let c = _mm512_set1_epi32(*corr.get_unchecked(r * nb + b));
            *ia = [c, c];
        }
        for w in 0..WORDS {
            let w0 = _mm512_loadu_si512(base.add(w * STRIP).cast());
            let w1 = _mm512_loadu_si512(base.add(w * STRIP + 16).cast());
            for (r, ia) in ia.iter_mut().enumerate() {
                let xp = qp.add((r * nb + b) * QBLOCK + 4 * w).cast::<i32>();
                let x = _mm512_set1_epi32(xp.read_unaligned());
                ia[0] = _mm512_dpbusd_epi32(ia[0], w0, x);
                ia[1] = _mm512_dpbusd_epi32(ia[1], w1, x);
            }
        }
        let s0 = _mm512_cvtph_ps(_mm256_loadu_si256(base.add(WORDS * STRIP).cast()));
        let s1 = _mm512_cvtph_ps(_mm256_loadu_si256(base.add(WORDS * STRIP + 8).cast()));
        for r in 0..R {
            let dx = _mm512_set1_ps(*d.get_unchecked(r * nb + b));
            let p0 = _mm512_mul_ps(_mm512_cvtepi32_ps(ia[r][0]), _mm512_mul_ps(s0, dx));
            let p1 = _mm512_mul_ps(_mm512_cvtepi32_ps(ia[r][1]), _mm512_mul_ps(s1, dx));
            f[r][0] = _mm512_add_ps(f[r][0], p0);
            f[r][1] = _mm512_add_ps(f[r][1], p1);
        }
    }
    for (r, f) in f.iter().enumerate() {
        _mm512_storeu_ps(out.as_mut_ptr().add(r * STRIP), f[0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(r * STRIP + 16), f[1]);
    }
}

/// The oracle: `out (n, OC) = inp · W̃ᵀ + bias` in f64 over the dequantized weights `W̃` and
/// the dequantized inputs (each block `f16(dw)·qw` and `dx·qx`), one plain loop.
pub fn linear_int8_naive(
    out: &mut [f32],
    inp: &[f32],
    w: &PackedI8,
    bias: Option<&[f32]>,
    n: usize,
) {
    let (ic, oc) = (w.ic, w.oc);
    for r in 0..n {
        let x = &inp[r * ic..(r + 1) * ic];
        let xq: Vec<f64> = x
            .chunks(QBLOCK)
            .flat_map(|v| {
                let (d, q) = quantize_block(v);
                q.into_iter()
                    .take(v.len())
                    .map(move |q| d as f64 * q as f64)
            })
            .collect();
        let mut row = vec![0.0f32; ic];
        for j in 0..oc {
            w.row_f32(j, &mut row);
            let dot: f64 = row.iter().zip(&xq).map(|(&a, &b)| a as f64 * b).sum();
            out[r * oc + j] = (dot + bias.map_or(0.0, |b| b[j] as f64)) as f32;
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
    fn rounding_is_roundf_half_away_from_zero() {
        let mut rng = Rng::new(11);
        let mut cases = vec![
            0.5f32,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999997,
            -0.49999997,
            126.5,
        ];
        cases.extend([-127.5, 0.0, -0.0, 127.0, 1e-30, f32::EPSILON]);
        cases.extend(rng.normal_vec(10_000, 60.0));
        for x in cases {
            assert_eq!(round_half_away(x), x.round(), "{x}");
        }
    }

    #[test]
    fn quantization_follows_q8_0() {
        let v: Vec<f32> = (0..32).map(|i| (i as f32 - 10.5) * 0.25).collect();
        let (d, q) = quantize_block(&v);
        assert_eq!(d, 5.125 / 127.0);
        assert_eq!((q[0], q[31]), (-65, 127));
        // A zero block gets scale 0 and zero values.
        assert_eq!(quantize_block(&[0.0; 7]), (0.0, [0; 32]));
        // Ties round away from zero.
        let (d, q) = quantize_block(&[127.0, 0.5, -0.5, 1.5]);
        assert_eq!((d, &q[..4]), (1.0, &[127, 1, -1, 2][..]));
    }

    #[test]
    fn blocks_round_trip_for_both_layouts_and_odd_shapes() {
        let mut rng = Rng::new(3);
        for &(ic, oc) in &[(70, 45), (32, 32), (5, 1), (100, 33)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let w = rng.normal_vec(ic * oc, 1.0);
                let m = PackedI8::from_f32(&w, ic, oc, layout);
                let back = m.to_f32();
                for (a, b) in w.iter().zip(&back) {
                    // Half a step of the block's scale (max 127 steps) plus f16 rounding.
                    assert!((a - b).abs() <= 5.0 / 254.0 + 1e-3, "{ic}x{oc}: {a} vs {b}");
                }
                let again = PackedI8::from_blocks(ic, oc, layout, |j, b| m.block(j, b));
                assert_eq!(again.words[..], m.words[..]);
            }
        }
    }

    #[test]
    fn matches_the_oracle_and_paths_agree_bit_for_bit() {
        let mut rng = Rng::new(5);
        for &(ic, oc) in &[
            (70, 130),
            (64, 48),
            (33, 1000),
            (1, 17),
            (96, 31),
            (768, 40),
        ] {
            for &n in &[1, 2, 3, 4, 5, 6, 7, 8, 13, 70] {
                let layout = if oc % 2 == 0 {
                    WeightLayout::InOut
                } else {
                    WeightLayout::OutIn
                };
                let x = rng.normal_vec(n * ic, 1.0);
                let wf = rng.normal_vec(ic * oc, 0.5);
                let b = rng.normal_vec(oc, 1.0);
                let w = PackedI8::from_f32(&wf, ic, oc, layout);
                let mut want = vec![0.0; n * oc];
                linear_int8_naive(&mut want, &x, &w, Some(&b), n);
                let mut runs = Vec::new();
                for path in [Int8Path::Avx512Vnni, Int8Path::Portable] {
                    let _l = (path == Int8Path::Portable).then(|| limit(Isa::Avx2));
                    let mut got = vec![f32::NAN; n * oc];
                    linear_int8_on(path, &mut got, &x, &w, Some(&b), n);
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                            "{n}x{ic}x{oc}: {g} vs {w}"
                        );
                    }
                    // A row's result does not depend on the rows batched with it.
                    let mut alone = vec![0.0; oc];
                    linear_int8_on(path, &mut alone, &x[..ic], &w, Some(&b), 1);
                    assert_eq!(&got[..oc], &alone[..], "{n}x{ic}x{oc} {path:?}");
                    runs.push(got);
                }
                assert_eq!(runs[0], runs[1], "{n}x{ic}x{oc}: VNNI and portable differ");
                // And the 8-bit product stays near the f32 one (weights N(0, 0.5²)).
                let mut exact = vec![0.0; n * oc];
                linear_forward_naive(&mut exact, &x, &wf, Some(&b), n, ic, oc, layout);
                let tol = 0.04 * (ic as f32).sqrt();
                for (g, e) in runs[0].iter().zip(&exact) {
                    assert!((g - e).abs() < tol, "{n}x{ic}x{oc}: {g} vs f32 {e}");
                }
            }
        }
    }
}
