//! 16-bit float weights for inference (f16 and bf16): `out (n, OC) = inp (n, IC) · Wᵀ + bias`
//! with `W` held in IEEE half precision (a GGUF `F16` file's own tensors) or bfloat16, widened
//! exactly to f32 in registers (F16C's `vcvtph2ps`; a 16-bit shift for bf16) and multiplied
//! with f32 FMAs. The inputs stay f32: the only rounding is the weights' own.
//!
//! Why one kernel that widens, not bf16 pair dot products (`vdpbf16ps`, the earlier bf16 decode
//! kernel): decoding waits on memory, and what decides its speed is how the weights stream. In
//! strips (below) GPT-2 124M decoded 118.6 tokens/s in f16 on 2 Zen 4 threads, 1.02 of the read
//! bound measured in the same run, against 104.9 for the pair layout, which also had to split
//! every input into two bf16 halves to keep f32-level accuracy.
//!
//! Layout ([`PackedHalf`]): output channels in strips of [`STRIP`] = 32; a strip holds, input
//! channel after input channel, the 32 weights of its columns (64 bytes, one cache line), so a
//! strip is one sequential run of `IC` lines whatever the matrix's stored orientation (`(IC, OC)`
//! or the tied head's `(OC, IC)`), and one load feeds 16 columns. Columns past `OC` are zeros.
//!
//! Arithmetic: every output is the chain `s = fma(x[k], W[k][j], s)` for `k = 0, 1, …` from
//! zero, then `bias[j] + s`, on every path and whatever the number of rows: the AVX-512 kernel
//! (rows in register tiles of up to [`ROW_TILE`], the strip re-read from cache by further
//! tiles, so prompts run through it too) and the portable twin give the same bits, and a row's
//! result does not depend on the rows batched with it.
//!
//! Work division: each thread takes a contiguous range of strips and writes their columns of
//! the output directly.
//!
//! Dimensions: `n` rows, `IC OC` input/output channels, `S = ⌈OC/32⌉` strips.

use super::huge_words::HugeWords;
use super::matmul::WeightLayout;
use super::simd::{cpu, isa, simd_fn, Isa};
use super::strip_split::{row_groups, split_strips, OutRows};
use super::{check_len, check_linear};
use half::{bf16, f16};
use rayon::prelude::*;

/// Output channels per strip.
pub const STRIP: usize = 32;
/// Words (two halves each) per input channel of a strip.
const WORDS: usize = STRIP / 2;
/// Rows held in registers at once by the AVX-512 kernel (2 accumulators each).
pub const ROW_TILE: usize = 8;
/// Cache lines (input channels, 4 KiB) ahead that the AVX-512 kernel prefetches into L2.
/// Measured on the Intel host of 2026-12-04 (GPT-2 124M bf16, batch 1, 2 threads, alternating
/// runs): 16 lines into L1 93 tokens/s, none 82, into L2 32 lines 96, 64 lines 103, 128 lines
/// 102, 256 lines 99, 512 lines 92; then prefetching across strip boundaries too (it stopped
/// at each strip's end, leaving the first 4 KiB of every 48 KiB strip to the hardware): 94.7
/// -> 109.9.
const PREFETCH: usize = 64;

/// The 16-bit format of a [`PackedHalf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HalfFormat {
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the top half of an f32).
    Bf16,
}

impl HalfFormat {
    /// The bits of `x` rounded to this format (nearest even).
    pub fn bits_of(self, x: f32) -> u16 {
        match self {
            HalfFormat::F16 => f16::from_f32(x).to_bits(),
            HalfFormat::Bf16 => bf16::from_f32(x).to_bits(),
        }
    }

    /// The value of `bits`, exactly.
    #[inline(always)]
    pub fn to_f32(self, bits: u16) -> f32 {
        match self {
            HalfFormat::F16 => f16::from_bits(bits).to_f32(),
            HalfFormat::Bf16 => f32::from_bits((bits as u32) << 16),
        }
    }

    /// Whether `bits` is a NaN or an infinity.
    pub fn is_nonfinite(self, bits: u16) -> bool {
        match self {
            HalfFormat::F16 => bits & 0x7C00 == 0x7C00,
            HalfFormat::Bf16 => bits & 0x7F80 == 0x7F80,
        }
    }

    /// `f16` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            HalfFormat::F16 => "f16",
            HalfFormat::Bf16 => "bf16",
        }
    }
}

/// A weight matrix in a 16-bit format, packed in strips of 32 outputs (see the module docs).
#[derive(Clone, Debug)]
pub struct PackedHalf {
    words: HugeWords,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
    format: HalfFormat,
}

impl PackedHalf {
    /// An all-zero matrix of `W`'s shape (`(IC, OC)` or `(OC, IC)` per `layout`).
    pub fn zeros(ic: usize, oc: usize, layout: WeightLayout, format: HalfFormat) -> Self {
        PackedHalf {
            words: HugeWords::zeros(oc.div_ceil(STRIP) * ic * WORDS),
            ic,
            oc,
            layout,
            format,
        }
    }

    /// A matrix of `W`'s shape whose weight of input `i`, output `j` has the bits
    /// `value(i, j)` in `format`. Filled in parallel over strips.
    pub fn from_fn(
        ic: usize,
        oc: usize,
        layout: WeightLayout,
        format: HalfFormat,
        value: impl Fn(usize, usize) -> u16 + Sync,
    ) -> Self {
        let mut m = Self::zeros(ic, oc, layout, format);
        m.words
            .par_chunks_mut((ic * WORDS).max(1))
            .enumerate()
            .for_each(|(s, strip)| {
                for (i, line) in strip.chunks_exact_mut(WORDS).enumerate() {
                    for (w, word) in line.iter_mut().enumerate() {
                        let half = |c: usize| {
                            let j = s * STRIP + c;
                            if j < oc {
                                value(i, j) as u32
                            } else {
                                0
                            }
                        };
                        *word = half(2 * w) | half(2 * w + 1) << 16;
                    }
                }
            });
        m
    }

    /// Rounds an f32 matrix stored in `layout` to `format` (nearest even; exact for values a
    /// file of that format held).
    pub fn from_f32(
        w: &[f32],
        ic: usize,
        oc: usize,
        layout: WeightLayout,
        format: HalfFormat,
    ) -> Self {
        check_len("PackedHalf::from_f32", "w", w.len(), ic * oc);
        Self::from_fn(ic, oc, layout, format, |i, j| {
            format.bits_of(match layout {
                WeightLayout::InOut => w[i * oc + j],
                WeightLayout::OutIn => w[j * ic + i],
            })
        })
    }

    /// Index of the word holding input `i`, output `j`, and the shift of its half.
    #[inline]
    fn at(&self, i: usize, j: usize) -> (usize, u32) {
        (
            ((j / STRIP) * self.ic + i) * WORDS + (j % STRIP) / 2,
            16 * (j % 2) as u32,
        )
    }

    /// Writes stored rows `r0..r0 + rows.len() / row_len` (bits in this format, row-major in
    /// the layout: input channels of `(IC, OC)`, output channels of `(OC, IC)`), e.g. a chunk
    /// read from a file.
    pub fn set_rows(&mut self, r0: usize, rows: &[u16]) {
        let (ic, oc, layout) = (self.ic, self.oc, self.layout);
        let row_len = match layout {
            WeightLayout::InOut => oc,
            WeightLayout::OutIn => ic,
        };
        assert!(
            rows.len().is_multiple_of(row_len.max(1)),
            "PackedHalf::set_rows: a partial row"
        );
        let n = rows.len() / row_len.max(1);
        let limit = match layout {
            WeightLayout::InOut => ic,
            WeightLayout::OutIn => oc,
        };
        assert!(
            n == 0 || r0 + n <= limit,
            "PackedHalf::set_rows: row {} out of range",
            r0 + n - 1
        );
        if n == 0 || ic == 0 {
            return;
        }
        // Strip by strip, in parallel: strip `s` holds columns 32s.. as IC lines of 16 words
        // (column `32s + c` in half `c % 2` of word `c / 2`), and no two strips share a word.
        let put = |line: &mut [u32], c: usize, b: u16| {
            let shift = 16 * (c % 2) as u32;
            line[c / 2] = (line[c / 2] & !(0xFFFF << shift)) | (b as u32) << shift;
        };
        let strips = match layout {
            WeightLayout::InOut => 0..oc.div_ceil(STRIP),
            WeightLayout::OutIn => r0 / STRIP..(r0 + n).div_ceil(STRIP),
        };
        self.words[strips.start * ic * WORDS..strips.end * ic * WORDS]
            .par_chunks_mut(ic * WORDS)
            .enumerate()
            .for_each(|(t, strip)| {
                let s = strips.start + t;
                let (j0, j1) = (s * STRIP, ((s + 1) * STRIP).min(oc));
                match layout {
                    // Stored row k = input channel r0 + k: one line of every strip.
                    WeightLayout::InOut => {
                        for (k, row) in rows.chunks_exact(row_len).enumerate() {
                            let line = &mut strip[(r0 + k) * WORDS..(r0 + k + 1) * WORDS];
                            for (c, &b) in row[j0..j1].iter().enumerate() {
                                put(line, c, b);
                            }
                        }
                    }
                    // Stored row k = output channel r0 + k: one column of one strip.
                    WeightLayout::OutIn => {
                        for j in j0.max(r0)..j1.min(r0 + n) {
                            let row = &rows[(j - r0) * row_len..(j - r0 + 1) * row_len];
                            for (i, &b) in row.iter().enumerate() {
                                put(&mut strip[i * WORDS..(i + 1) * WORDS], j - j0, b);
                            }
                        }
                    }
                }
            });
    }

    /// The bits of the weight of input `i`, output `j`.
    pub fn bits(&self, i: usize, j: usize) -> u16 {
        assert!(i < self.ic && j < self.oc, "weight ({i}, {j}) out of range");
        let (w, shift) = self.at(i, j);
        (self.words[w] >> shift) as u16
    }

    /// Output `j`'s weights widened to f32 (`dst` holds `IC` values): the embedding lookup of a
    /// tied `wte`, a row of the `(V, C)` table.
    pub fn row_f32(&self, j: usize, dst: &mut [f32]) {
        check_len("PackedHalf::row_f32", "dst", dst.len(), self.ic);
        for (i, x) in dst.iter_mut().enumerate() {
            *x = self.format.to_f32(self.bits(i, j));
        }
    }

    /// The matrix widened to f32 in its stored layout.
    pub fn to_f32(&self) -> Vec<f32> {
        let (ic, oc) = (self.ic, self.oc);
        let mut out = vec![0.0f32; ic * oc];
        for i in 0..ic {
            for j in 0..oc {
                let x = self.format.to_f32(self.bits(i, j));
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

    /// The 16-bit format.
    pub fn format(&self) -> HalfFormat {
        self.format
    }

    /// Bytes held (the padding of the last strip included).
    pub fn bytes(&self) -> usize {
        4 * self.words.len()
    }

    /// The packed words as stored (what decoding streams; for read probes).
    pub fn words(&self) -> &[u32] {
        &self.words
    }
}

/// Which kernel computes the 16-bit products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HalfPath {
    /// AVX-512F (f16 widened with F16C on 512-bit vectors).
    Avx512,
    /// Plain Rust over the same chains (any CPU), compiled for the [`Isa`] ladder.
    Portable,
}

impl HalfPath {
    /// AVX-512 when the CPU has it (and F16C, FMA) and the ladder is not capped below it.
    pub fn detect() -> Self {
        let c = cpu();
        if c.avx512f && c.f16c && c.fma && isa() == Isa::Avx512 {
            HalfPath::Avx512
        } else {
            HalfPath::Portable
        }
    }

    /// This path if the CPU can run it, else [`HalfPath::Portable`].
    fn available(self) -> Self {
        if self == HalfPath::Avx512 && HalfPath::detect() == HalfPath::Avx512 {
            self
        } else {
            HalfPath::Portable
        }
    }

    /// `avx512` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            HalfPath::Avx512 => "avx512",
            HalfPath::Portable => "portable",
        }
    }
}

/// `out (n, OC) = inp (n, IC) · Wᵀ + bias` with 16-bit weights, on the fastest path this CPU
/// has.
pub fn linear_half(out: &mut [f32], inp: &[f32], w: &PackedHalf, bias: Option<&[f32]>, n: usize) {
    linear_half_on(HalfPath::detect(), out, inp, w, bias, n)
}

/// [`linear_half`] on a chosen path (tests compare them); asking for AVX-512 on a CPU without
/// it runs the portable path.
pub fn linear_half_on(
    path: HalfPath,
    out: &mut [f32],
    inp: &[f32],
    w: &PackedHalf,
    bias: Option<&[f32]>,
    n: usize,
) {
    check_linear("linear_half", out, inp, bias, n, w.ic, w.oc);
    if n == 0 {
        return;
    }
    let path = path.available();
    split_strips(out, w.oc.div_ceil(STRIP), |dst, s0, s1| {
        // SAFETY: `out` holds `n × OC` floats; this task writes only the columns of strips
        // s0..s1, disjoint from every other task's.
        unsafe { strips(path, dst, bias, inp, w, n, s0, s1) }
    });
}

/// One row's products over a block of the matrix, on the calling thread (no team job): for
/// `j` in the columns of strips `strips` (`32 · strips.len()` outputs, columns past `OC` zero)
/// `out[j − 32·strips.start] = Σ_{k ∈ ks} x[k − ks.start] · W[k][j]`, the chain from zero in
/// `k` order as everywhere in this module. Lets a decoding step give each thread whole blocks
/// of consecutive products (its heads' columns of `c_attn`, then those heads' rows of
/// `c_proj`), meeting only where the data flow needs it.
pub fn row_block_half(
    path: HalfPath,
    out: &mut [f32],
    x: &[f32],
    w: &PackedHalf,
    strips: std::ops::Range<usize>,
    ks: std::ops::Range<usize>,
) {
    const OP: &str = "row_block_half";
    assert!(
        strips.start <= strips.end && strips.end <= w.oc.div_ceil(STRIP),
        "{OP}: strips {strips:?} of a matrix with {} strips",
        w.oc.div_ceil(STRIP)
    );
    assert!(
        ks.start <= ks.end && ks.end <= w.ic,
        "{OP}: input channels {ks:?} of {}",
        w.ic
    );
    check_len(OP, "out", out.len(), strips.len() * STRIP);
    check_len(OP, "x", x.len(), ks.len());
    let path = path.available();
    let (ic, kn) = (w.ic, ks.len());
    for (s, t) in strips.zip(out.chunks_exact_mut(STRIP)) {
        let strip = &w.words[(s * ic + ks.start) * WORDS..(s * ic + ks.end) * WORDS];
        strip_rows(path, w.format, t, strip, x, kn, 1);
    }
}

/// One strip for `rows` (1..=[`ROW_TILE`]) rows on `path` (as [`HalfPath::available`] gives
/// it): `out (rows, 32)` = the products of `strip` (`ic` lines) with `x (rows, ic)`, no bias.
fn strip_rows(
    path: HalfPath,
    format: HalfFormat,
    out: &mut [f32],
    strip: &[u32],
    x: &[f32],
    ic: usize,
    rows: usize,
) {
    assert!(
        (1..=ROW_TILE).contains(&rows)
            && strip.len() == ic * WORDS
            && x.len() == rows * ic
            && out.len() == rows * STRIP,
        "strip_rows: {rows} rows, strip of {} words, x of {}, out of {} for IC {ic}",
        strip.len(),
        x.len(),
        out.len()
    );
    match (path, format) {
        // SAFETY (both): `HalfPath::available` gives AVX-512 only where the CPU has AVX-512F,
        // F16C and FMA; the lengths are the kernel's (asserted above).
        #[cfg(target_arch = "x86_64")]
        (HalfPath::Avx512, HalfFormat::F16) => unsafe {
            strip_avx512::<false>(out, strip, x, ic, rows)
        },
        #[cfg(target_arch = "x86_64")]
        (HalfPath::Avx512, HalfFormat::Bf16) => unsafe {
            strip_avx512::<true>(out, strip, x, ic, rows)
        },
        (_, format) => strip_portable(out, strip, x, ic, rows, format),
    }
}

/// Strips `s0..s1` for all `n` rows, rows in register tiles.
///
/// # Safety
/// `out` points at `n × OC` floats, of which no other thread touches these columns meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn strips(
    path: HalfPath,
    out: &OutRows,
    bias: Option<&[f32]>,
    inp: &[f32],
    w: &PackedHalf,
    n: usize,
    s0: usize,
    s1: usize,
) {
    let (ic, oc) = (w.ic, w.oc);
    let mut tile = [0.0f32; ROW_TILE * STRIP];
    for s in s0..s1 {
        let strip = &w.words[s * ic * WORDS..(s + 1) * ic * WORDS];
        let (j0, cols) = (s * STRIP, STRIP.min(oc - s * STRIP));
        for (r0, rows) in row_groups(n, ROW_TILE) {
            let x = &inp[r0 * ic..(r0 + rows) * ic];
            let t = &mut tile[..rows * STRIP];
            // The strip holds `IC` lines and `x` `rows` rows of `IC`.
            strip_rows(path, w.format, t, strip, x, ic, rows);
            // SAFETY: rows r0..r0 + rows < n, columns j0..j0 + cols ≤ OC of this task's strips.
            out.store_tile(t, STRIP, bias, (r0, rows), oc, j0, cols);
        }
    }
}

simd_fn! {
    /// One strip for `rows` rows: `out (rows, 32)` = the products (no bias), in plain Rust.
    fn strip_portable(
        out: &mut [f32],
        strip: &[u32],
        x: &[f32],
        ic: usize,
        rows: usize,
        format: HalfFormat
    ) {
        for r in 0..rows {
            let mut s = [0.0f32; STRIP];
            let xr = &x[r * ic..(r + 1) * ic];
            for (k, &xk) in xr.iter().enumerate() {
                let line = &strip[k * WORDS..(k + 1) * WORDS];
                for (pair, &word) in s.chunks_exact_mut(2).zip(line) {
                    let lo = format.to_f32(word as u16);
                    let hi = format.to_f32((word >> 16) as u16);
                    pair[0] = xk.mul_add(lo, pair[0]);
                    pair[1] = xk.mul_add(hi, pair[1]);
                }
            }
            out[r * STRIP..(r + 1) * STRIP].copy_from_slice(&s);
        }
    }
}

/// [`strip_portable`] on AVX-512 (f16 widened with F16C, bf16 by a 16-bit shift; `BF`: bf16),
/// for 1..=[`ROW_TILE`] rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c,avx2,fma")]
unsafe fn strip_avx512<const BF: bool>(
    out: &mut [f32],
    strip: &[u32],
    x: &[f32],
    ic: usize,
    rows: usize,
) {
    debug_assert!(strip.len() == ic * WORDS && x.len() == rows * ic && out.len() == rows * STRIP);
    match rows {
        1 => strip_avx512_n::<1, BF>(out, strip, x, ic),
        2 => strip_avx512_n::<2, BF>(out, strip, x, ic),
        3 => strip_avx512_n::<3, BF>(out, strip, x, ic),
        4 => strip_avx512_n::<4, BF>(out, strip, x, ic),
        5 => strip_avx512_n::<5, BF>(out, strip, x, ic),
        6 => strip_avx512_n::<6, BF>(out, strip, x, ic),
        7 => strip_avx512_n::<7, BF>(out, strip, x, ic),
        _ => strip_avx512_n::<8, BF>(out, strip, x, ic),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,f16c,avx2,fma")]
unsafe fn strip_avx512_n<const R: usize, const BF: bool>(
    out: &mut [f32],
    strip: &[u32],
    x: &[f32],
    ic: usize,
) {
    use std::arch::x86_64::*;
    let (wp, xp) = (strip.as_ptr(), x.as_ptr());
    let widen = |p: *const u32| {
        let h = _mm256_loadu_si256(p.cast());
        if BF {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
        } else {
            _mm512_cvtph_ps(h)
        }
    };
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for k in 0..ic {
        let line = wp.add(k * WORDS);
        // Past the strip's end: the next strip's lines, which follow in memory (a thread's
        // strips are consecutive), so the stream has no gap at a strip boundary; a prefetch
        // past the matrix is harmless.
        _mm_prefetch::<_MM_HINT_T1>(line.wrapping_add(PREFETCH * WORDS).cast());
        let (w0, w1) = (widen(line), widen(line.add(8)));
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

    const FORMATS: [HalfFormat; 2] = [HalfFormat::F16, HalfFormat::Bf16];

    #[test]
    fn packing_round_trips_for_both_layouts_formats_and_odd_shapes() {
        let mut rng = Rng::new(5);
        for &(ic, oc) in &[(1usize, 1usize), (7, 33), (64, 32), (33, 70)] {
            for (layout, format) in [WeightLayout::InOut, WeightLayout::OutIn]
                .into_iter()
                .flat_map(|l| FORMATS.map(|f| (l, f)))
            {
                let w = rng.normal_vec(ic * oc, 1.0);
                let m = PackedHalf::from_f32(&w, ic, oc, layout, format);
                let bits: Vec<u16> = w.iter().map(|&x| format.bits_of(x)).collect();
                let want: Vec<f32> = bits.iter().map(|&b| format.to_f32(b)).collect();
                assert_eq!(m.to_f32(), want, "{ic}x{oc} {layout:?} {format:?}");
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
                // Stored rows in two chunks, as a file is read.
                let rows = match layout {
                    WeightLayout::InOut => ic,
                    WeightLayout::OutIn => oc,
                };
                let row_len = bits.len() / rows;
                let mut chunked = PackedHalf::zeros(ic, oc, layout, format);
                chunked.set_rows(0, &bits[..rows / 2 * row_len]);
                chunked.set_rows(rows / 2, &bits[rows / 2 * row_len..]);
                assert_eq!(
                    chunked.to_f32(),
                    want,
                    "set_rows {ic}x{oc} {layout:?} {format:?}"
                );
            }
        }
        // bf16 bits: 1.0 is finite, −∞ and a NaN are not (first of the three at index 1).
        let b = [0x3f80u16, 0xff80, 0x7fc0];
        let first = |b: &[u16]| b.iter().position(|&x| HalfFormat::Bf16.is_nonfinite(x));
        assert_eq!(first(&b), Some(1));
        assert_eq!(first(&b[..1]), None);
        assert!(HalfFormat::F16.is_nonfinite(HalfFormat::F16.bits_of(1e6)));
        assert!(HalfFormat::Bf16.is_nonfinite(HalfFormat::Bf16.bits_of(f32::NAN)));
        assert!(!HalfFormat::Bf16.is_nonfinite(HalfFormat::Bf16.bits_of(1e30)));
    }

    #[test]
    fn matches_the_oracle_and_paths_agree_bit_for_bit() {
        let mut rng = Rng::new(6);
        for &(ic, oc) in &[(1usize, 5usize), (37, 33), (64, 96), (130, 70)] {
            for (layout, format) in [WeightLayout::InOut, WeightLayout::OutIn]
                .into_iter()
                .flat_map(|l| FORMATS.map(|f| (l, f)))
            {
                let w = rng.normal_vec(ic * oc, 0.5);
                let wq: Vec<f32> = w
                    .iter()
                    .map(|&x| format.to_f32(format.bits_of(x)))
                    .collect();
                let m = PackedHalf::from_f32(&w, ic, oc, layout, format);
                let b = rng.normal_vec(oc, 1.0);
                let x = rng.normal_vec(20 * ic, 1.0);
                let mut alone = vec![0.0; oc];
                linear_half(&mut alone, &x[..ic], &m, Some(&b), 1);
                for n in (1..=10).chain([17, 20]) {
                    // The oracle: the rounded weights in f64.
                    let mut want = vec![0.0f32; n * oc];
                    linear_forward_naive(&mut want, &x[..n * ic], &wq, Some(&b), n, ic, oc, layout);
                    let mut got = [vec![f32::NAN; n * oc], vec![f32::NAN; n * oc]];
                    for (g, path) in got.iter_mut().zip([HalfPath::Avx512, HalfPath::Portable]) {
                        linear_half_on(path, g, &x[..n * ic], &m, Some(&b), n);
                    }
                    let what = format!("{n}x{ic}x{oc} {layout:?} {format:?}");
                    assert_eq!(got[0], got[1], "{what}: paths differ");
                    for (g, w) in got[0].iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{what}: {g} vs {w}"
                        );
                    }
                    assert_eq!(&got[0][..oc], &alone[..], "{what}: row 0 changed");
                }
            }
        }
    }
}
