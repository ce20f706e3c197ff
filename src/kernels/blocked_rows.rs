//! Register-blocked f32 products for a few rows (small-batch decoding): the inner loops of
//! [`super::few_rows::linear_small`] when more than one row meets each weight.
//!
//! Why: with one row, a linear layer waits on memory (every weight is read once per token).
//! With several rows the same weights feed several products, and the loop becomes arithmetic.
//! The streaming loop of [`super::few_rows`] keeps `acc (n, OC)` in memory, so each multiply-add
//! costs a load and a store of an accumulator besides the weight: with 8 rows on 2 Zen 4 cores
//! it decoded GPT-2 124M at 91 tokens/s in all against 50 for one row (1.8× the work per step
//! for 8× the rows). Here the accumulators of a tile of [`ROWS`] rows × a strip of outputs live
//! in registers for a whole pass over the thread's share of the weight, so each weight vector is
//! loaded once per tile and meets every row of it with one FMA.
//!
//! - **`(IC, OC)` weights** ([`in_out`]): a tile is [`ROWS`] rows × 24 output columns (three
//!   8-lane vectors; 12 accumulators, 3 weight vectors and a broadcast input fill AVX2's 16
//!   registers). Each output is the chain `acc = fma(x[i], W[i][j], acc)` over the share's input
//!   channels in order, exactly the chain of the one-row streaming loop, so a row's result does
//!   not depend on how many rows it was batched with.
//! - **`(OC, IC)` weights** ([`out_in`]): a tile is up to 3 rows × one weight row (read once
//!   from memory, in order; several weight rows side by side measured slower); each row's dot
//!   product runs in 32 lanes (lane `l` sums the products at `k ≡ l mod 32`, four 8-lane
//!   accumulators), reduced at the end by a fixed tree and then the `IC mod 32` last products
//!   one by one. One row and many rows run the same chains.
//!
//! Each kernel has an AVX2+FMA version (`std::arch` intrinsics) and a portable twin that
//! performs the same fused multiply-adds and additions in the same order (`f32::mul_add`), so
//! every rung of the SIMD ladder gives the same bits. [`in_out`] also has an AVX-512 version:
//! not for the width (Zen 4 runs 512-bit FMAs at half the rate of 256-bit ones) but for the 32
//! registers, which hold a tile of all 8 rows × 48 columns, so 8 rows take one pass over each
//! block of weight rows instead of two (`examples/few_rows_probe.rs`: GPT-2 124M's layer
//! products for 8 rows 24.8 → 19–22 ms per step on 2 threads).
//!
//! Dimensions: `n` rows, `IC OC` input/output channels; `acc` is the caller's accumulator.

use super::simd::{isa, simd_fn, Isa};

/// Rows per register tile.
pub const ROWS: usize = 4;
/// Output columns per strip of [`in_out`] (three 8-lane vectors).
const STRIP: usize = 24;
/// Weight rows per block of [`in_out`] (read as that many sequential streams).
const IBLOCK: usize = 8;
/// Rows per register tile of [`out_in`] (four 8-lane accumulators each).
const OUT_IN_ROWS: usize = 3;

/// Whether the AVX-512 kernel of [`in_out`] runs now.
fn use_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let c = super::simd::cpu();
        isa() >= Isa::Avx512 && c.avx512f && c.avx2 && c.fma
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX2+FMA kernels run now (the ladder's rung allows AVX2 and the CPU has FMA).
fn use_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let c = super::simd::cpu();
        isa() >= Isa::Avx2 && c.avx2 && c.fma
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `acc (n, OC) += inp[:, i0..i1] · W[i0..i1, :]` for `W (IC, OC)`: every output is the chain
/// `acc = fma(inp[r][i], W[i][j], acc)` for `i = i0, …, i1 − 1` (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn in_out(
    acc: &mut [f32],
    inp: &[f32],
    w: &[f32],
    n: usize,
    ic: usize,
    oc: usize,
    i0: usize,
    i1: usize,
) {
    assert!(acc.len() >= n * oc && inp.len() >= n * ic && w.len() >= i1 * oc && i0 <= i1);
    assert!(i1 <= ic);
    #[cfg(target_arch = "x86_64")]
    if use_avx512() {
        // SAFETY: the CPU has AVX-512F, AVX2 and FMA (`use_avx512`); the asserts bound every
        // index as for the AVX2 kernel.
        unsafe { avx512::in_out(acc, inp, w, n, ic, oc, i0, i1) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (`use_avx2`), and the asserts above bound every
        // index the kernel reads or writes (rows < n, inputs < IC, weight rows < i1, columns
        // < OC).
        unsafe { avx2::in_out(acc, inp, w, n, ic, oc, i0, i1) };
        return;
    }
    in_out_portable(acc, inp, w, n, ic, oc, i0, i1);
}

simd_fn! {
    /// Portable twin of [`in_out`] (the same chains, row by row; also the one-row streaming
    /// loop: weight rows read once, in order).
    pub fn in_out_portable(
        acc: &mut [f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        ic: usize,
        oc: usize,
        i0: usize,
        i1: usize
    ) {
        for i in i0..i1 {
            let wrow = &w[i * oc..(i + 1) * oc];
            for r in 0..n {
                let xv = inp[r * ic + i];
                for (a, &b) in acc[r * oc..(r + 1) * oc].iter_mut().zip(wrow) {
                    *a = xv.mul_add(b, *a);
                }
            }
        }
    }
}

/// `acc[r][j − j0] += inp[r] · W[j]` for `W (OC, IC)` and `j` in `j0..j1`, `acc (n, j1 − j0)`:
/// 8-lane dot products reduced by a fixed tree (see the module docs).
#[allow(clippy::too_many_arguments)]
pub fn out_in(acc: &mut [f32], inp: &[f32], w: &[f32], n: usize, ic: usize, j0: usize, j1: usize) {
    assert!(j0 <= j1 && acc.len() >= n * (j1 - j0) && inp.len() >= n * ic);
    assert!(w.len() >= j1 * ic);
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2 and FMA are present (`use_avx2`); the asserts bound every index.
        unsafe { avx2::out_in(acc, inp, w, n, ic, j0, j1) };
        return;
    }
    out_in_portable(acc, inp, w, n, ic, j0, j1);
}

/// The lane tree of [`out_in`]: the four 8-lane vectors added as `(v0 + v1) + (v2 + v3)`, then
/// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))`.
#[inline(always)]
fn reduce32(l: &[f32; 32]) -> f32 {
    let mut v = [0.0f32; 8];
    for q in 0..8 {
        v[q] = (l[q] + l[8 + q]) + (l[16 + q] + l[24 + q]);
    }
    let s4 = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// One dot product as [`out_in`] computes it: 32 lanes of fused chains, the tree, the tail.
#[inline(always)]
fn dot32(x: &[f32], w: &[f32]) -> f32 {
    let k32 = x.len() / 32 * 32;
    let mut l = [0.0f32; 32];
    for (xc, wc) in x[..k32].chunks_exact(32).zip(w[..k32].chunks_exact(32)) {
        for q in 0..32 {
            l[q] = xc[q].mul_add(wc[q], l[q]);
        }
    }
    let mut s = reduce32(&l);
    for (a, b) in x[k32..].iter().zip(&w[k32..]) {
        s = a.mul_add(*b, s);
    }
    s
}

simd_fn! {
    /// Portable twin of [`out_in`].
    pub fn out_in_portable(
        acc: &mut [f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        ic: usize,
        j0: usize,
        j1: usize
    ) {
        let wd = j1 - j0;
        for j in j0..j1 {
            let wr = &w[j * ic..(j + 1) * ic];
            for r in 0..n {
                acc[r * wd + j - j0] += dot32(&inp[r * ic..(r + 1) * ic], wr);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! The AVX2+FMA kernels. Callers check the CPU and the bounds.
    use super::{IBLOCK, OUT_IN_ROWS, ROWS, STRIP};
    use std::arch::x86_64::*;

    /// See [`super::in_out`].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn in_out(
        acc: &mut [f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        ic: usize,
        oc: usize,
        i0: usize,
        i1: usize,
    ) {
        let (a, x, w) = (acc.as_mut_ptr(), inp.as_ptr(), w.as_ptr());
        // Blocks of `IBLOCK` weight rows, each read as that many sequential streams (strips of
        // one row far apart would defeat the prefetchers: every row is its own page).
        let mut ib = i0;
        while ib < i1 {
            let ie = (ib + IBLOCK).min(i1);
            let ne = (ie + IBLOCK).min(i1);
            let mut r = 0;
            while r < n {
                let rb = (n - r).min(ROWS);
                let rows = (ib, ie, ne);
                match rb {
                    1 => in_out_block::<1>(a, x, w, ic, oc, rows, r),
                    2 => in_out_block::<2>(a, x, w, ic, oc, rows, r),
                    3 => in_out_block::<3>(a, x, w, ic, oc, rows, r),
                    _ => in_out_block::<ROWS>(a, x, w, ic, oc, rows, r),
                }
                r += rb;
            }
            ib = ie;
        }
    }

    /// Rows `r0..r0 + R` over weight rows `ib..ie`, every column: strips of 24, then 8, then
    /// one by one; the first row tile also prefetches rows `ie..ne` (the next block).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn in_out_block<const R: usize>(
        a: *mut f32,
        x: *const f32,
        w: *const f32,
        ic: usize,
        oc: usize,
        (ib, ie, ne): (usize, usize, usize),
        r0: usize,
    ) {
        let mut j = 0;
        while j + STRIP <= oc {
            if r0 == 0 {
                // The next block's rows of this strip (two cache lines cover its 96 bytes):
                // in flight while this block computes.
                for i in ie..ne {
                    _mm_prefetch::<_MM_HINT_T0>(w.add(i * oc + j).cast());
                    _mm_prefetch::<_MM_HINT_T0>(w.add(i * oc + j + 16).cast());
                }
            }
            in_out_tile::<R, 3>(a, x, w, ic, oc, ib, ie, r0, j);
            j += STRIP;
        }
        while j + 8 <= oc {
            in_out_tile::<R, 1>(a, x, w, ic, oc, ib, ie, r0, j);
            j += 8;
        }
        // The last `OC mod 8` columns, one chain each, in the same order.
        for i in ib..ie {
            for r in r0..r0 + R {
                let xv = *x.add(r * ic + i);
                for jj in j..oc {
                    let p = a.add(r * oc + jj);
                    *p = xv.mul_add(*w.add(i * oc + jj), *p);
                }
            }
        }
    }

    /// Rows `r0..r0 + R` × columns `j..j + 8·CV`: accumulators in registers for the whole pass
    /// over input channels `i0..i1`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn in_out_tile<const R: usize, const CV: usize>(
        a: *mut f32,
        x: *const f32,
        w: *const f32,
        ic: usize,
        oc: usize,
        i0: usize,
        i1: usize,
        r0: usize,
        j: usize,
    ) {
        let mut t = [[_mm256_setzero_ps(); CV]; R];
        for (rr, row) in t.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(a.add((r0 + rr) * oc + j + 8 * c));
            }
        }
        for i in i0..i1 {
            let wp = w.add(i * oc + j);
            let mut wv = [_mm256_setzero_ps(); CV];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(wp.add(8 * c));
            }
            for (rr, row) in t.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*x.add((r0 + rr) * ic + i));
                for (v, wc) in row.iter_mut().zip(&wv) {
                    *v = _mm256_fmadd_ps(xv, *wc, *v);
                }
            }
        }
        for (rr, row) in t.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                _mm256_storeu_ps(a.add((r0 + rr) * oc + j + 8 * c), *v);
            }
        }
    }

    /// See [`super::out_in`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn out_in(
        acc: &mut [f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        ic: usize,
        j0: usize,
        j1: usize,
    ) {
        let wd = j1 - j0;
        // Weight row by weight row (one sequential stream: several rows side by side measured
        // slower), each met by every input row, `OUT_IN_ROWS` at a time (the weight row stays
        // in L1 between tiles).
        for j in j0..j1 {
            let mut r = 0;
            while r < n {
                let rb = (n - r).min(OUT_IN_ROWS);
                match rb {
                    1 => out_in_tile::<1>(acc, inp, w, ic, j0, wd, r, j),
                    2 => out_in_tile::<2>(acc, inp, w, ic, j0, wd, r, j),
                    _ => out_in_tile::<OUT_IN_ROWS>(acc, inp, w, ic, j0, wd, r, j),
                }
                r += rb;
            }
        }
    }

    /// Rows `r0..r0 + R` dotted with weight row `j`: four 8-lane chains each.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn out_in_tile<const R: usize>(
        acc: &mut [f32],
        inp: &[f32],
        w: &[f32],
        ic: usize,
        j0: usize,
        wd: usize,
        r0: usize,
        j: usize,
    ) {
        let (x, wp) = (inp.as_ptr(), w.as_ptr().add(j * ic));
        let k32 = ic / 32 * 32;
        let mut t = [[_mm256_setzero_ps(); 4]; R];
        let mut k = 0;
        while k < k32 {
            let mut wv = [_mm256_setzero_ps(); 4];
            for (q, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(wp.add(k + 8 * q));
            }
            for (rr, row) in t.iter_mut().enumerate() {
                let xr = x.add((r0 + rr) * ic + k);
                for (q, v) in row.iter_mut().enumerate() {
                    *v = _mm256_fmadd_ps(_mm256_loadu_ps(xr.add(8 * q)), wv[q], *v);
                }
            }
            k += 32;
        }
        let wr = &w[j * ic..(j + 1) * ic];
        for (rr, row) in t.iter().enumerate() {
            let xr = &inp[(r0 + rr) * ic..(r0 + rr + 1) * ic];
            let v = _mm256_add_ps(_mm256_add_ps(row[0], row[1]), _mm256_add_ps(row[2], row[3]));
            let mut s = reduce(v);
            for q in k32..ic {
                s = xr[q].mul_add(wr[q], s);
            }
            acc[(r0 + rr) * wd + j - j0] += s;
        }
    }

    /// `((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7))` of one vector (see [`super::reduce32`]).
    #[inline(always)]
    unsafe fn reduce(v: __m256) -> f32 {
        let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    //! The AVX-512 kernel of [`super::in_out`]: 32 vector registers hold a tile of up to 8 rows
    //! × 48 columns (24 accumulators, 3 weight vectors, a broadcast), so 8 rows take one pass
    //! over each block of weight rows instead of two. The same chains as the AVX2 kernel
    //! (one FMA per input channel per output, in order): the same bits.
    use super::IBLOCK;
    use std::arch::x86_64::*;

    /// Rows per tile.
    const ROWS: usize = 8;
    /// Columns per strip (three 16-lane vectors).
    const STRIP: usize = 48;

    /// See [`super::in_out`].
    #[target_feature(enable = "avx512f,avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn in_out(
        acc: &mut [f32],
        inp: &[f32],
        w: &[f32],
        n: usize,
        ic: usize,
        oc: usize,
        i0: usize,
        i1: usize,
    ) {
        let (a, x, w) = (acc.as_mut_ptr(), inp.as_ptr(), w.as_ptr());
        let mut ib = i0;
        while ib < i1 {
            let ie = (ib + IBLOCK).min(i1);
            let ne = (ie + IBLOCK).min(i1);
            let mut r = 0;
            while r < n {
                let rb = (n - r).min(ROWS);
                let rows = (ib, ie, ne);
                match rb {
                    1 => block::<1>(a, x, w, ic, oc, rows, r),
                    2 => block::<2>(a, x, w, ic, oc, rows, r),
                    3 => block::<3>(a, x, w, ic, oc, rows, r),
                    4 => block::<4>(a, x, w, ic, oc, rows, r),
                    5 => block::<5>(a, x, w, ic, oc, rows, r),
                    6 => block::<6>(a, x, w, ic, oc, rows, r),
                    7 => block::<7>(a, x, w, ic, oc, rows, r),
                    _ => block::<ROWS>(a, x, w, ic, oc, rows, r),
                }
                r += rb;
            }
            ib = ie;
        }
    }

    /// Rows `r0..r0 + R` over weight rows `ib..ie`: strips of 48 columns, then 16, then one
    /// by one; the first row tile prefetches the next block's rows of each strip.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize>(
        a: *mut f32,
        x: *const f32,
        w: *const f32,
        ic: usize,
        oc: usize,
        (ib, ie, ne): (usize, usize, usize),
        r0: usize,
    ) {
        let mut j = 0;
        while j + STRIP <= oc {
            if r0 == 0 {
                for i in ie..ne {
                    let p = w.add(i * oc + j);
                    _mm_prefetch::<_MM_HINT_T0>(p.cast());
                    _mm_prefetch::<_MM_HINT_T0>(p.add(16).cast());
                    _mm_prefetch::<_MM_HINT_T0>(p.add(32).cast());
                }
            }
            tile::<R, 3>(a, x, w, ic, oc, ib, ie, r0, j);
            j += STRIP;
        }
        while j + 16 <= oc {
            tile::<R, 1>(a, x, w, ic, oc, ib, ie, r0, j);
            j += 16;
        }
        for i in ib..ie {
            for r in r0..r0 + R {
                let xv = *x.add(r * ic + i);
                for jj in j..oc {
                    let p = a.add(r * oc + jj);
                    *p = xv.mul_add(*w.add(i * oc + jj), *p);
                }
            }
        }
    }

    /// Rows `r0..r0 + R` × columns `j..j + 16·CV` over input channels `i0..i1`, the
    /// accumulators in registers.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize, const CV: usize>(
        a: *mut f32,
        x: *const f32,
        w: *const f32,
        ic: usize,
        oc: usize,
        i0: usize,
        i1: usize,
        r0: usize,
        j: usize,
    ) {
        let mut t = [[_mm512_setzero_ps(); CV]; R];
        for (rr, row) in t.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(a.add((r0 + rr) * oc + j + 16 * c));
            }
        }
        for i in i0..i1 {
            let wp = w.add(i * oc + j);
            let mut wv = [_mm512_setzero_ps(); CV];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(wp.add(16 * c));
            }
            for (rr, row) in t.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*x.add((r0 + rr) * ic + i));
                for (v, wc) in row.iter_mut().zip(&wv) {
                    *v = _mm512_fmadd_ps(xv, *wc, *v);
                }
            }
        }
        for (rr, row) in t.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                _mm512_storeu_ps(a.add((r0 + rr) * oc + j + 16 * c), *v);
            }
        }
    }
}
