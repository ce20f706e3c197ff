//! bf16 matrix products with f32 accumulation, and f32 → bf16 conversion.
//!
//! `matmul_bf16`: `C (M×N, f32) (+)= op(A) · op(B)` with `A`, `B` in bf16, the same layouts as
//! [`super::matmul::matmul`] (`trans_a`: `A` stored `(K×M)`; `trans_b`: `B` stored `(N×K)`).
//! `to_bf16`: f32 → bf16 with round-to-nearest-even (what PyTorch's `.to(torch.bfloat16)` does).
//!
//! Why our own kernel: `gemm` has no bf16 kernel (its f16 widens to f32). Zen 4 and recent Intel
//! CPUs have AVX-512 BF16: `vdpbf16ps` multiplies 16 pairs of bf16 and adds both products to 16
//! f32 accumulators, twice the f32 FMA rate (measured 463 vs 234 GFLOP/s on 2 Zen 4 cores).
//!
//! The algorithm (the BLIS/oneDNN organisation, written from the instruction's contract):
//! - **Packing.** `vdpbf16ps` consumes bf16 *pairs along K*, so both operands are packed into
//!   32-bit words `(X[2p], X[2p+1])`: `A` into panels of [`MR`] rows (`[panel][pair][MR]`), `B`
//!   into panels of [`NR`] columns (`[panel][pair][NR]`), zero-padded at every edge. An odd `K`
//!   gets a zero partner. Packing is `O(MK + KN)` against `O(MNK)` for the product.
//! - **Microkernel.** An `MR × NR = 12 × 32` block of `C` lives in 24 zmm accumulators; per pair
//!   it loads two vectors of `B` and broadcasts one word of `A` per row: 24 `vdpbf16ps` per 14
//!   loads, enough independent chains to hide the instruction's latency.
//! - **Blocking.** `K` is cut into chunks of [`KC`] pairs so a `B` micro-panel (32 × 128 words,
//!   16 KiB) stays in L1 while every `A` micro-panel of the tile streams past it from L2.
//! - **Threads.** The output is cut into tiles of up to [`MC`] rows × [`NC`] columns, one rayon
//!   task each (tiles are disjoint, so no reduction).
//!
//! Accuracy: bf16 × bf16 products are exact in f32 (8-bit × 8-bit significands), so the only
//! roundings are the f32 additions. `vdpbf16ps` adds the odd product then the even one to the
//! accumulator (Intel's pseudo-code), flushing denormal inputs and outputs to zero. The portable
//! path ([`Bf16Path::Portable`], any CPU) does the same additions in the same order, so on
//! normal numbers both paths give bit-identical results.
//!
//! Dimensions: `M K N` product sizes; `MR NR` microkernel block; `KC` pairs per K chunk.

use super::check_len;
use super::few_rows::{split_in_out, split_out_in, FEW_ROWS};
use super::matmul::{bias_grad, WeightLayout};
use super::simd::{self, simd_fn, Isa};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Rows of `C` per microkernel block.
pub const MR: usize = 12;
/// Columns of `C` per microkernel block (two 16-lane vectors).
pub const NR: usize = 32;
/// K pairs per chunk (256 values of K).
const KC: usize = 128;
/// Rows of `C` per parallel tile (16 micro-panels).
const MC: usize = 16 * MR;
/// Columns of `C` per parallel tile (4 micro-panels).
const NC: usize = 4 * NR;
/// Products with fewer multiply-adds than this run on one thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 20;

/// Which implementation runs the bf16 products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Path {
    /// AVX-512 BF16 `vdpbf16ps` microkernel (x86-64 with `avx512bf16`).
    Avx512Bf16,
    /// Plain Rust, the same additions in the same order (any CPU; auto-vectorised).
    Portable,
}

impl Bf16Path {
    /// The fastest path available now: `vdpbf16ps` if the CPU has AVX-512 BF16 ([`simd::cpu`])
    /// and the SIMD ladder is not capped below AVX-512 ([`simd::isa`]: `GPT_SIMD` or a test's
    /// [`simd::limit`]), else the portable path.
    #[inline]
    pub fn detect() -> Self {
        if simd::cpu().avx512bf16 && simd::isa() == Isa::Avx512 {
            Bf16Path::Avx512Bf16
        } else {
            Bf16Path::Portable
        }
    }

    /// A short name for logs: `avx512bf16` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Path::Avx512Bf16 => "avx512bf16",
            Bf16Path::Portable => "portable",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion
// ---------------------------------------------------------------------------------------------

/// f32 → bf16 bits, round to nearest, ties to even; NaN stays a (quiet) NaN. Matches
/// `half::bf16::from_f32` bit for bit, denormals included.
#[inline(always)]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if x.is_nan() {
        return ((u >> 16) | 0x0040) as u16;
    }
    // Adding 0x7FFF plus the lowest kept bit rounds half-way cases to the even neighbour.
    ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) as u16
}

/// bf16 bits → f32 (exact).
#[inline(always)]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `dst[i] = bf16(src[i])` (round to nearest even), vectorised and split across threads.
pub fn to_bf16(dst: &mut [bf16], src: &[f32]) {
    check_len("to_bf16", "dst", dst.len(), src.len());
    let dst = dst.reinterpret_cast_mut();
    let chunk = 1 << 16;
    if src.len() <= chunk {
        to_bf16_block(dst, src);
    } else {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| to_bf16_block(d, s));
    }
}

simd_fn! {
    /// `dst[i] = bf16 bits of src[i]` on one block.
    fn to_bf16_block(dst: &mut [u16], src: &[f32]) {
        for (o, &x) in dst.iter_mut().zip(src) {
            *o = f32_to_bf16_bits(x);
        }
    }
}

thread_local! {
    /// Conversion buffers of the mixed-precision linear layers, reused across calls.
    static CONVERTED: std::cell::Cell<[Vec<bf16>; 2]> = const {
        std::cell::Cell::new([Vec::new(), Vec::new()])
    };
}

/// Runs `f` on `src` rounded to bf16 in a per-thread buffer (`slot` 0 or 1, so two conversions
/// can be alive at once), avoiding a fresh allocation and its page faults on every call.
fn with_converted<R>(slot: usize, src: &[f32], f: impl FnOnce(&[bf16]) -> R) -> R {
    let mut bufs = CONVERTED.with(|c| c.take());
    let mut buf = std::mem::take(&mut bufs[slot]);
    CONVERTED.with(|c| c.set(bufs));
    if buf.len() < src.len() {
        buf.resize(src.len(), bf16::ZERO);
    }
    to_bf16(&mut buf[..src.len()], src);
    let r = f(&buf[..src.len()]);
    let mut bufs = CONVERTED.with(|c| c.take());
    bufs[slot] = buf;
    CONVERTED.with(|c| c.set(bufs));
    r
}

/// A new bf16 vector holding `src` rounded to nearest even.
pub fn to_bf16_vec(src: &[f32]) -> Vec<bf16> {
    let mut v = vec![bf16::ZERO; src.len()];
    to_bf16(&mut v, src);
    v
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------

/// Packs `op(X)` viewed as `rows × k` (row `i`, column `kk`) into panels of `width` rows:
/// word `[panel][pair p][r]` holds `(X[i][2p], X[i][2p+1])` for `i = panel·width + r`, zero
/// beyond the edges. `stored_t`: `X` is stored `(k × rows)` row-major, else `(rows × k)`.
fn pack(dst: &mut [u32], x: &[u16], rows: usize, k: usize, width: usize, stored_t: bool) {
    let kp = k.div_ceil(2);
    debug_assert_eq!(dst.len(), rows.div_ceil(width) * kp * width);
    let panel_len = kp * width;
    let body = |(pi, panel): (usize, &mut [u32])| {
        let r0 = pi * width;
        let w = width.min(rows - r0);
        if stored_t {
            // X stored (k × rows): the pair's two values sit in consecutive stored rows.
            for p in 0..kp {
                let lo_row = &x[2 * p * rows + r0..2 * p * rows + r0 + w];
                let out = &mut panel[p * width..p * width + width];
                if 2 * p + 1 < k {
                    let hi_row = &x[(2 * p + 1) * rows + r0..(2 * p + 1) * rows + r0 + w];
                    for ((o, &lo), &hi) in out.iter_mut().zip(lo_row).zip(hi_row) {
                        *o = lo as u32 | (hi as u32) << 16;
                    }
                } else {
                    for (o, &lo) in out.iter_mut().zip(lo_row) {
                        *o = lo as u32;
                    }
                }
                out[w..].fill(0);
            }
        } else {
            // X stored (rows × k): each row's pairs are contiguous; write them at stride `width`,
            // a block of pairs at a time so the block being transposed stays in L1 (row by row
            // over the whole panel would touch every cache line of it once per row).
            const PB: usize = 64;
            let full = k / 2;
            for pb in (0..full).step_by(PB) {
                let pe = (pb + PB).min(full);
                for r in 0..w {
                    let row = &x[(r0 + r) * k + 2 * pb..(r0 + r) * k + 2 * pe];
                    for (p, pr) in (pb..pe).zip(row.chunks_exact(2)) {
                        panel[p * width + r] = pr[0] as u32 | (pr[1] as u32) << 16;
                    }
                }
            }
            if k % 2 == 1 {
                for r in 0..w {
                    panel[(kp - 1) * width + r] = x[(r0 + r) * k + k - 1] as u32;
                }
            }
            if w < width {
                for p in 0..kp {
                    panel[p * width + w..(p + 1) * width].fill(0);
                }
            }
        }
    };
    if rows * k >= 1 << 16 {
        dst.par_chunks_mut(panel_len).enumerate().for_each(body);
    } else {
        dst.chunks_mut(panel_len).enumerate().for_each(body);
    }
}

// ---------------------------------------------------------------------------------------------
// Microkernels
// ---------------------------------------------------------------------------------------------

/// Where the `A` words of one microkernel call are: word (pair `p`, row `r`) at
/// `ptr + p·ps + r·rs` (in 32-bit words, possibly unaligned). A packed panel has `ps = MR`,
/// `rs = 1`; a row-major bf16 `A` with even `K` is read in place with `ps = 1`, `rs = K/2`.
#[derive(Clone, Copy)]
struct AWords {
    ptr: *const u32,
    ps: usize,
    rs: usize,
}

/// One `MR × NR` block: `C[0..mr, 0..nr] = (load ? C : 0) + Σ_p A[p] · B[p]` over `kc` pairs.
/// Rows of `A` at and beyond `mr` re-read row `mr − 1` (their results are not stored).
///
/// # Safety
/// `a` is readable for `p < kc`, `r < mr`; `b` holds `kc·NR` words; `c` is valid for `mr` rows
/// of `nr` values at row stride `ldc`, with `1 ≤ mr ≤ MR`, `nr ≤ NR`. The CPU has AVX-512F and
/// AVX-512 BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_avx512bf16(
    kc: usize,
    a: AWords,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    load: bool,
) {
    use std::arch::x86_64::*;
    let m0: __mmask16 = if nr >= 16 { 0xFFFF } else { (1u16 << nr) - 1 };
    let m1: __mmask16 = if nr >= 32 {
        0xFFFF
    } else if nr > 16 {
        (1u16 << (nr - 16)) - 1
    } else {
        0
    };
    let roff: [usize; MR] = std::array::from_fn(|r| r.min(mr - 1) * a.rs);
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    if load {
        for (r, row) in acc.iter_mut().enumerate().take(mr) {
            let cr = c.add(r * ldc);
            row[0] = _mm512_maskz_loadu_ps(m0, cr);
            row[1] = _mm512_maskz_loadu_ps(m1, cr.add(16));
        }
    }
    for p in 0..kc {
        // __m512bh and __m512i are both 64 bytes of lanes; the transmute only retypes them.
        let bp = b.add(p * NR);
        let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp as *const _));
        let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(16) as *const _));
        let ap = a.ptr.add(p * a.ps);
        for (row, &off) in acc.iter_mut().zip(&roff) {
            let word = ap.add(off).read_unaligned();
            let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(word as i32));
            row[0] = _mm512_dpbf16_ps(row[0], av, b0);
            row[1] = _mm512_dpbf16_ps(row[1], av, b1);
        }
    }
    for (r, row) in acc.iter().enumerate().take(mr) {
        let cr = c.add(r * ldc);
        _mm512_mask_storeu_ps(cr, m0, row[0]);
        _mm512_mask_storeu_ps(cr.add(16), m1, row[1]);
    }
}

/// Portable twin of [`kernel_avx512bf16`]: the same additions in the same order (odd product,
/// then even, into each accumulator), so results are bit-identical on normal numbers.
///
/// # Safety
/// As [`kernel_avx512bf16`], without the CPU requirement.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable(
    kc: usize,
    a: AWords,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    load: bool,
) {
    let b = std::slice::from_raw_parts(b, kc * NR);
    let roff: [usize; MR] = std::array::from_fn(|r| r.min(mr - 1) * a.rs);
    let mut acc = [[0.0f32; NR]; MR];
    if load {
        for (r, row) in acc.iter_mut().enumerate().take(mr) {
            for (j, v) in row.iter_mut().enumerate().take(nr) {
                *v = *c.add(r * ldc + j);
            }
        }
    }
    // The A words gathered per pair, so the vector loop below reads only slices.
    let mut aw = [0u32; KC * MR];
    for (p, words) in aw.chunks_exact_mut(MR).take(kc).enumerate() {
        for (w, &off) in words.iter_mut().zip(&roff) {
            *w = a.ptr.add(p * a.ps + off).read_unaligned();
        }
    }
    portable_block(&mut acc, &aw[..kc * MR], b);
    for (r, row) in acc.iter().enumerate().take(mr) {
        for (j, v) in row.iter().enumerate().take(nr) {
            *c.add(r * ldc + j) = *v;
        }
    }
}

simd_fn! {
    /// The loop of [`kernel_portable`]: `acc[r] += Σ_p A[p][r] · B[p]` over the pairs of
    /// `b (kc, NR)`, `a (kc, MR)`, odd product first.
    fn portable_block(acc: &mut [[f32; NR]; MR], a: &[u32], b: &[u32]) {
        for (bp, ap) in b.chunks_exact(NR).zip(a.chunks_exact(MR)) {
            let mut blo = [0.0f32; NR];
            let mut bhi = [0.0f32; NR];
            for j in 0..NR {
                blo[j] = f32::from_bits(bp[j] << 16);
                bhi[j] = f32::from_bits(bp[j] & 0xFFFF_0000);
            }
            for (row, &aw) in acc.iter_mut().zip(ap) {
                let alo = f32::from_bits(aw << 16);
                let ahi = f32::from_bits(aw & 0xFFFF_0000);
                for j in 0..NR {
                    row[j] += ahi * bhi[j];
                    row[j] += alo * blo[j];
                }
            }
        }
    }
}

/// `A` read in place, shared by the tiles (read-only).
#[derive(Clone, Copy)]
struct AWordsPtr(*const u32);
// SAFETY: the tasks only read through it, while the borrowed `A` outlives them.
unsafe impl Send for AWordsPtr {}
unsafe impl Sync for AWordsPtr {}

/// The output pointer shared by disjoint tiles.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every task writes a disjoint tile of the output (see `matmul_bf16_on`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

// ---------------------------------------------------------------------------------------------
// Products
// ---------------------------------------------------------------------------------------------

/// `out (M×N) (+)= op(A) · op(B)` in bf16 with f32 accumulation, on the fastest path this CPU
/// has. See the module docs for the layouts and the algorithm.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16(
    out: &mut [f32],
    a: &[bf16],
    b: &[bf16],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    matmul_bf16_on(
        Bf16Path::detect(),
        out,
        a,
        b,
        m,
        k,
        n,
        trans_a,
        trans_b,
        accumulate,
    );
}

/// [`matmul_bf16`] on a chosen path (tests force [`Bf16Path::Portable`]). Asking for
/// [`Bf16Path::Avx512Bf16`] on a CPU without it runs the portable path.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_on(
    path: Bf16Path,
    out: &mut [f32],
    a: &[bf16],
    b: &[bf16],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    check_len("matmul_bf16", "out", out.len(), m * n);
    check_len("matmul_bf16", "a", a.len(), m * k);
    check_len("matmul_bf16", "b", b.len(), k * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }
    let path = if path == Bf16Path::Avx512Bf16 && Bf16Path::detect() != path {
        Bf16Path::Portable
    } else {
        path
    };
    let kp = k.div_ceil(2);
    let (mp, np) = (m.div_ceil(MR), n.div_ceil(NR));
    // Packing buffers are kept per thread and reused: fresh allocations of this size cost a
    // page fault per 4 KiB on every call (measured: a third of the time of a 1024×50304×768
    // product). `pack` overwrites every word it is given, so stale contents never leak.
    let (mut ap_buf, mut bp_buf) = PACK_BUFFERS.with(|c| c.take());
    for (buf, len) in [(&mut ap_buf, mp * kp * MR), (&mut bp_buf, np * kp * NR)] {
        if buf.len() < len {
            buf.resize(len, 0);
        }
    }
    // A row-major A with even K already holds its pairs as words: read it in place.
    let direct = !trans_a && k.is_multiple_of(2);
    let ap = &mut ap_buf[..if direct { 0 } else { mp * kp * MR }];
    if !direct {
        pack(ap, a.reinterpret_cast(), m, k, MR, trans_a);
    }
    let a_raw = AWordsPtr(a.as_ptr().cast::<u32>());
    let bp = &mut bp_buf[..np * kp * NR];
    // op(B) columns are the packed "rows": B stored (N×K) when trans_b is the (rows × k) layout.
    pack(bp, b.reinterpret_cast(), n, k, NR, !trans_b);

    let (tm, tn) = (m.div_ceil(MC), n.div_ceil(NC));
    let c = OutPtr(out.as_mut_ptr());
    let (ap, bp) = (&*ap, &*bp);
    let tile = move |t: usize| {
        let (c, a_raw) = (c, a_raw);
        let (ti, tj) = (t / tn, t % tn);
        let (i0, j0) = (ti * MC, tj * NC);
        let (i1, j1) = ((i0 + MC).min(m), (j0 + NC).min(n));
        for p0 in (0..kp).step_by(KC) {
            let kc = KC.min(kp - p0);
            let load = accumulate || p0 > 0;
            for j in (j0..j1).step_by(NR) {
                let bpan = &bp[(j / NR) * kp * NR + p0 * NR..][..kc * NR];
                for i in (i0..i1).step_by(MR) {
                    let (mr, nr) = (MR.min(m - i), NR.min(n - j));
                    let apan = if direct {
                        AWords {
                            // SAFETY: row i, pair p0 lies inside A (i < m, 2·p0 < k).
                            ptr: unsafe { a_raw.0.add(i * kp + p0) },
                            ps: 1,
                            rs: kp,
                        }
                    } else {
                        AWords {
                            ptr: ap[(i / MR) * kp * MR + p0 * MR..][..kc * MR].as_ptr(),
                            ps: MR,
                            rs: 1,
                        }
                    };
                    // SAFETY: the panels hold kc pairs; the block (i, j, mr, nr) lies inside
                    // the M×N output and inside this task's tile, which no other task touches.
                    unsafe {
                        let cij = c.0.add(i * n + j);
                        match path {
                            #[cfg(target_arch = "x86_64")]
                            Bf16Path::Avx512Bf16 => {
                                kernel_avx512bf16(kc, apan, bpan.as_ptr(), cij, n, mr, nr, load)
                            }
                            _ => kernel_portable(kc, apan, bpan.as_ptr(), cij, n, mr, nr, load),
                        }
                    }
                }
            }
        }
    };
    if m * n * k >= PARALLEL_MIN_FLOPS && rayon::current_num_threads() > 1 {
        (0..tm * tn).into_par_iter().for_each(tile);
    } else {
        (0..tm * tn).for_each(tile);
    }
    PACK_BUFFERS.with(|c| c.set((ap_buf, bp_buf)));
}

thread_local! {
    /// Packing buffers of [`matmul_bf16_on`] for `A` and `B`, reused across calls.
    static PACK_BUFFERS: std::cell::Cell<(Vec<u32>, Vec<u32>)> = const {
        std::cell::Cell::new((Vec::new(), Vec::new()))
    };
}

/// Linear layer for decoding with bf16 weights: `out (n, OC) = inp (n, IC) · Wᵀ + bias`, `W` in
/// bf16 (`(OC, IC)` or `(IC, OC)` per `layout`), `inp` and the accumulation in f32.
///
/// Up to [`FEW_ROWS`] rows, each thread streams one contiguous share of `W` once for all rows
/// (the split of [`super::few_rows`]), widening each weight exactly: the cost is the bytes of
/// `W`, half those of f32. More rows (prefill) round the input to bf16 and use the packed
/// [`matmul_bf16`].
///
/// This reads `W` in its stored layout (a training model's bf16 shadow). An inference model with
/// `--dtype bf16` packs its weights once in strips instead, [`super::half::linear_half`].
#[allow(clippy::too_many_arguments)]
pub fn linear_small_bf16(
    out: &mut [f32],
    inp: &[f32],
    w: &[bf16],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    if n > FEW_ROWS || n == 0 {
        return linear_forward_bf16(out, inp, w, bias, n, ic, oc, layout);
    }
    check_len("linear_small_bf16", "out", out.len(), n * oc);
    check_len("linear_small_bf16", "inp", inp.len(), n * ic);
    check_len("linear_small_bf16", "weight", w.len(), ic * oc);
    let w: &[u16] = w.reinterpret_cast();
    match layout {
        WeightLayout::InOut => split_in_out(out, bias, n, oc, ic, 4, |acc, i0, i1| {
            // This share's input columns, contiguous per row.
            let k = i1 - i0;
            let mut xs = vec![0.0f32; n * k];
            for r in 0..n {
                xs[r * k..(r + 1) * k].copy_from_slice(&inp[r * ic + i0..r * ic + i1]);
            }
            small_block(acc, &xs, &w[i0 * oc..i1 * oc], n, k, oc, 0, oc, layout);
        }),
        WeightLayout::OutIn => split_out_in(out, bias, n, oc, 16, |acc, j0, j1| {
            small_block(acc, inp, w, n, ic, oc, j0, j1, layout)
        }),
    }
}

simd_fn! {
    /// Output columns `j0..j1` of `inp · Wᵀ` for bf16 `W`, added into `acc (n, j1 - j0)`.
    fn small_block(
        acc: &mut [f32],
        inp: &[f32],
        w: &[u16],
        n: usize,
        ic: usize,
        oc: usize,
        j0: usize,
        j1: usize,
        layout: WeightLayout,
    ) {
        let wd = j1 - j0;
        match layout {
            WeightLayout::InOut => {
                // Strips of columns whose accumulators for all rows stay in L1; four weight rows
                // per pass over the accumulators, widened on the fly (no temporary), so each
                // accumulator is loaded and stored once per four rows of W.
                const STRIP: usize = 2048;
                // One row of accumulators (≤ 12 KiB at GPT-2 widths) stays in L1 as a whole strip.
                let strip = if n == 1 {
                    wd.max(16)
                } else {
                    (STRIP / n).max(16)
                };
                let w_of = |i: usize, s0: usize, s1: usize| &w[i * oc + s0..i * oc + s1];
                let mut s0 = j0;
                while s0 < j1 {
                    let s1 = (s0 + strip).min(j1);
                    let len = s1 - s0;
                    let mut i = 0;
                    while i + 4 <= ic {
                        let (w0, w1, w2, w3) = (
                            w_of(i, s0, s1),
                            w_of(i + 1, s0, s1),
                            w_of(i + 2, s0, s1),
                            w_of(i + 3, s0, s1),
                        );
                        for r in 0..n {
                            let x = &inp[r * ic + i..r * ic + i + 4];
                            let a = &mut acc[r * wd + (s0 - j0)..r * wd + (s0 - j0) + len];
                            for ((((a, &b0), &b1), &b2), &b3) in
                                a.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3)
                            {
                                *a += x[0] * bf16_bits_to_f32(b0)
                                    + x[1] * bf16_bits_to_f32(b1)
                                    + x[2] * bf16_bits_to_f32(b2)
                                    + x[3] * bf16_bits_to_f32(b3);
                            }
                        }
                        i += 4;
                    }
                    for i in i..ic {
                        let wr = w_of(i, s0, s1);
                        for r in 0..n {
                            let xv = inp[r * ic + i];
                            let a = &mut acc[r * wd + (s0 - j0)..r * wd + (s0 - j0) + len];
                            for (a, &b) in a.iter_mut().zip(wr) {
                                *a += xv * bf16_bits_to_f32(b);
                            }
                        }
                    }
                    s0 = s1;
                }
            }
            WeightLayout::OutIn => {
                for j in j0..j1 {
                    let row = &w[j * ic..(j + 1) * ic];
                    for r in 0..n {
                        acc[r * wd + j - j0] += dot_f32_bf16(&inp[r * ic..(r + 1) * ic], row);
                    }
                }
            }
        }
    }
}

/// `Σ x[i]·w[i]` with bf16 `w`, 16 independent accumulators so the loop vectorises.
#[inline(always)]
fn dot_f32_bf16(x: &[f32], w: &[u16]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut xc = x.chunks_exact(16);
    let mut wc = w.chunks_exact(16);
    for (xa, wa) in (&mut xc).zip(&mut wc) {
        for i in 0..16 {
            acc[i] += xa[i] * bf16_bits_to_f32(wa[i]);
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (a, &b) in xc.remainder().iter().zip(wc.remainder()) {
        s += a * bf16_bits_to_f32(b);
    }
    s
}

/// Mixed-precision [`super::matmul::linear_forward`]: `out (N×OC) = bf16(inp) · bf16(W)ᵀ + bias`
/// with f32 accumulation; `weight` is already bf16 (the model's shadow), `inp` is rounded here.
#[allow(clippy::too_many_arguments)]
pub fn linear_forward_bf16(
    out: &mut [f32],
    inp: &[f32],
    weight: &[bf16],
    bias: Option<&[f32]>,
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    check_len("linear_forward_bf16", "out", out.len(), n * oc);
    check_len("linear_forward_bf16", "inp", inp.len(), n * ic);
    check_len("linear_forward_bf16", "weight", weight.len(), ic * oc);
    super::matmul::broadcast_bias("linear_forward_bf16", out, bias, oc);
    let trans_b = layout == WeightLayout::OutIn;
    with_converted(0, inp, |x| {
        matmul_bf16(out, x, weight, n, ic, oc, false, trans_b, bias.is_some())
    });
}

/// Mixed-precision [`super::matmul::linear_backward`]: `dinp += bf16(dout) · bf16(W)`,
/// `dweight += bf16(dout)ᵀ · bf16(inp)` (in the weight's layout), `dbias += Σ_rows dout` in f32.
#[allow(clippy::too_many_arguments)]
pub fn linear_backward_bf16(
    dinp: Option<&mut [f32]>,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[bf16],
    n: usize,
    ic: usize,
    oc: usize,
    layout: WeightLayout,
) {
    check_len("linear_backward_bf16", "dout", dout.len(), n * oc);
    check_len("linear_backward_bf16", "inp", inp.len(), n * ic);
    check_len("linear_backward_bf16", "weight", weight.len(), ic * oc);
    check_len("linear_backward_bf16", "dweight", dweight.len(), ic * oc);
    with_converted(0, dout, |dy| {
        if let Some(dinp) = dinp {
            let trans_b = layout == WeightLayout::InOut;
            matmul_bf16(dinp, dy, weight, n, oc, ic, false, trans_b, true);
        }
        with_converted(1, inp, |x| match layout {
            WeightLayout::OutIn => matmul_bf16(dweight, dy, x, oc, n, ic, true, false, true),
            WeightLayout::InOut => matmul_bf16(dweight, x, dy, ic, n, oc, true, false, true),
        })
    });
    if let Some(db) = dbias {
        check_len("linear_backward_bf16", "dbias", db.len(), oc);
        bias_grad(db, dout, oc);
    }
}

/// Oracle for [`matmul_bf16`]: triple loop over the bf16 values widened to f64, summed in f64.
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_naive(
    out: &mut [f32],
    a: &[bf16],
    b: &[bf16],
    m: usize,
    k: usize,
    n: usize,
    trans_a: bool,
    trans_b: bool,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if trans_a { a[p * m + i] } else { a[i * k + p] };
                let bv = if trans_b { b[j * k + p] } else { b[p * n + j] };
                s += av.to_f64() * bv.to_f64();
            }
            let o = &mut out[i * n + j];
            *o = if accumulate {
                (*o as f64 + s) as f32
            } else {
                s as f32
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `|fast − exact| ≤ (K + 2)·2⁻²⁴·(|C₀| + Σ|a·b|)`: the f32 summation-order bound.
    #[allow(clippy::too_many_arguments)]
    fn check(
        got: &[f32],
        want: &[f32],
        init: &[f32],
        a: &[bf16],
        b: &[bf16],
        m: usize,
        k: usize,
        n: usize,
        ta: bool,
        tb: bool,
        acc: bool,
    ) {
        let mut absprod = vec![0.0f32; m * n];
        let aa: Vec<bf16> = a.iter().map(|x| bf16::from_f32(x.to_f32().abs())).collect();
        let ba: Vec<bf16> = b.iter().map(|x| bf16::from_f32(x.to_f32().abs())).collect();
        matmul_bf16_naive(&mut absprod, &aa, &ba, m, k, n, ta, tb, false);
        for i in 0..m * n {
            let mag = absprod[i] + if acc { init[i].abs() } else { 0.0 };
            let tol = (k as f32 + 2.0) * f32::EPSILON * 0.5 * mag + f32::MIN_POSITIVE;
            assert!(
                (got[i] - want[i]).abs() <= tol,
                "({m}×{k}×{n} ta={ta} tb={tb} acc={acc}) index {i}: {} vs {} (tol {tol})",
                got[i],
                want[i]
            );
        }
    }

    #[test]
    fn conversion_matches_half_round_to_nearest_even() {
        let mut rng = Rng::new(5);
        let mut xs = rng.normal_vec(100_000, 3.0);
        xs.extend([
            0.0,
            -0.0,
            1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            -3e-39,
            f32::from_bits(0x3F80_8000), // exactly half-way, even below: rounds down
            f32::from_bits(0x3F81_8000), // half-way, odd below: rounds up
            f32::from_bits(0x7F7F_FFFF),
        ]);
        let got = to_bf16_vec(&xs);
        for (x, g) in xs.iter().zip(&got) {
            assert_eq!(g.to_bits(), bf16::from_f32(*x).to_bits(), "{x:e}");
        }
        assert!(to_bf16_vec(&[f32::NAN])[0].is_nan());
    }

    #[test]
    fn matmul_matches_naive_on_odd_shapes_and_paths_agree() {
        let mut rng = Rng::new(11);
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 13, 5),
            (12, 32, 32),
            (33, 65, 129),
            (1, 300, 1000),
            (130, 301, 70),
            (200, 600, 150),
        ] {
            for ta in [false, true] {
                for tb in [false, true] {
                    for acc in [false, true] {
                        let a = to_bf16_vec(&rng.normal_vec(m * k, 1.0));
                        let b = to_bf16_vec(&rng.normal_vec(k * n, 1.0));
                        let init = rng.normal_vec(m * n, 1.0);
                        let mut want = init.clone();
                        matmul_bf16_naive(&mut want, &a, &b, m, k, n, ta, tb, acc);
                        let mut fast = init.clone();
                        matmul_bf16(&mut fast, &a, &b, m, k, n, ta, tb, acc);
                        check(&fast, &want, &init, &a, &b, m, k, n, ta, tb, acc);
                        let mut port = init.clone();
                        matmul_bf16_on(Bf16Path::Portable, &mut port, &a, &b, m, k, n, ta, tb, acc);
                        check(&port, &want, &init, &a, &b, m, k, n, ta, tb, acc);
                        assert_eq!(fast, port, "{m}×{k}×{n} ta={ta} tb={tb} acc={acc}");
                    }
                }
            }
        }
    }

    #[test]
    fn linear_bf16_matches_f32_linear_on_rounded_inputs() {
        use crate::kernels::matmul::{linear_backward, linear_forward};
        let mut rng = Rng::new(13);
        let round = |v: &[f32]| -> Vec<f32> { to_bf16_vec(v).iter().map(|x| x.to_f32()).collect() };
        let (n, ic, oc) = (9, 21, 35);
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            let (x, w, bias, dy) = (
                rng.normal_vec(n * ic, 1.0),
                rng.normal_vec(ic * oc, 1.0),
                rng.normal_vec(oc, 1.0),
                rng.normal_vec(n * oc, 1.0),
            );
            let wb = to_bf16_vec(&w);
            let (mut y, mut y32) = (vec![0.0; n * oc], vec![0.0; n * oc]);
            linear_forward_bf16(&mut y, &x, &wb, Some(&bias), n, ic, oc, layout);
            linear_forward(
                &mut y32,
                &round(&x),
                &round(&w),
                Some(&bias),
                n,
                ic,
                oc,
                layout,
            );
            let (mut dx, mut dw, mut db) = (vec![0.5; n * ic], vec![0.5; ic * oc], vec![0.5; oc]);
            let (mut dx32, mut dw32, mut db32) = (dx.clone(), dw.clone(), db.clone());
            linear_backward_bf16(
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &dy,
                &x,
                &wb,
                n,
                ic,
                oc,
                layout,
            );
            linear_backward(
                Some(&mut dx32),
                &mut dw32,
                Some(&mut db32),
                &round(&dy),
                &round(&x),
                &round(&w),
                n,
                ic,
                oc,
                layout,
            );
            for (got, want) in [(&y, &y32), (&dx, &dx32), (&dw, &dw32)] {
                for (g, w) in got.iter().zip(want.iter()) {
                    assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
            // The bias gradient sums the unrounded f32 dout.
            let mut db_ref = vec![0.5; oc];
            crate::kernels::matmul::bias_grad(&mut db_ref, &dy, oc);
            assert_eq!(db, db_ref);
        }
    }

    #[test]
    fn linear_small_matches_f32_linear_on_bf16_weights() {
        use crate::kernels::matmul::linear_forward_naive;
        let mut rng = Rng::new(14);
        let shapes = [(1, 64, 100), (3, 37, 53), (8, 128, 4100), (9, 40, 30)];
        let every_n = (1..=FEW_ROWS + 1).flat_map(|n| [(n, 5, 19), (n, 33, 70)]);
        for (n, ic, oc) in shapes.into_iter().chain(every_n) {
            for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
                let x = rng.normal_vec(n * ic, 1.0);
                let wb = to_bf16_vec(&rng.normal_vec(ic * oc, 1.0));
                let b = rng.normal_vec(oc, 1.0);
                let mut got = vec![0.0; n * oc];
                linear_small_bf16(&mut got, &x, &wb, Some(&b), n, ic, oc, layout);
                // Every rung of the SIMD ladder gives the same bits.
                for isa in Isa::available() {
                    let _l = simd::limit(isa);
                    let mut on = vec![f32::NAN; n * oc];
                    linear_small_bf16(&mut on, &x, &wb, Some(&b), n, ic, oc, layout);
                    assert_eq!(on, got, "{n}x{ic}x{oc} {layout:?} {isa:?}");
                }
                // Prefill (n > FEW_ROWS) also rounds the input; decode keeps it f32.
                let xr: Vec<f32> = if n > FEW_ROWS {
                    to_bf16_vec(&x).iter().map(|v| v.to_f32()).collect()
                } else {
                    x.clone()
                };
                let w32: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
                let mut want = vec![0.0; n * oc];
                linear_forward_naive(&mut want, &xr, &w32, Some(&b), n, ic, oc, layout);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{n}x{ic}x{oc}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// Large training shapes against the f32 `gemm` on the same rounded inputs (slow in debug:
    /// `cargo test --release --lib kernels::bf16 -- --ignored`).
    #[test]
    #[ignore]
    fn large_shapes_match_f32_gemm() {
        use crate::kernels::matmul::matmul;
        let mut rng = Rng::new(15);
        for &(m, k, n, ta, tb) in &[
            (1024, 768, 2304, false, false),
            (1024, 2304, 768, false, true),
            (768, 1024, 2304, true, false),
            (256, 768, 50257, false, true),
        ] {
            let a = to_bf16_vec(&rng.normal_vec(m * k, 1.0));
            let b = to_bf16_vec(&rng.normal_vec(k * n, 1.0));
            let (a32, b32): (Vec<f32>, Vec<f32>) = (
                a.iter().map(|x| x.to_f32()).collect(),
                b.iter().map(|x| x.to_f32()).collect(),
            );
            let mut want = vec![0.0; m * n];
            matmul(&mut want, &a32, &b32, m, k, n, ta, tb, false);
            let mut got = vec![0.0; m * n];
            matmul_bf16(&mut got, &a, &b, m, k, n, ta, tb, false);
            let t0 = std::time::Instant::now();
            for _ in 0..5 {
                matmul_bf16(&mut got, &a, &b, m, k, n, ta, tb, false);
            }
            let dt = t0.elapsed().as_secs_f64() / 5.0;
            let worst = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / (k as f32).sqrt())
                .fold(0.0f32, f32::max);
            eprintln!(
                "{m}x{k}x{n}: {:.0} GFLOP/s, worst |diff|/sqrt(K) {worst:e}",
                2.0 * (m * n * k) as f64 / dt / 1e9
            );
            assert!(worst < 1e-4, "{m}x{k}x{n}: {worst}");
        }
    }
}
