//! Vectorised math shared by the kernels: a polynomial `exp` the compiler can vectorise and
//! 16-lane reductions, all `#[inline(always)]` so they are compiled for the rung of the
//! [`super::simd::simd_fn!`] loop that calls them.
//!
//! Why our own `exp`: `f32::exp` is a call into libm that the compiler cannot vectorise, and it
//! dominates softmax, attention, cross-entropy and GELU. [`exp_fast`] is straight-line arithmetic
//! (range reduction by `ln 2` and a degree-7 polynomial, as Cephes' `expf`) with relative error
//! ≈ 1e-7, a couple of ulp, and the loops that call it vectorise.

/// Inputs below this give `exp_fast(x) = 0` (`exp(-87.3)` is the smallest normal f32).
const EXP_LO: f32 = -87.3;
/// Inputs above this give `+∞`; `2^n` for the rounded exponent `n` then still fits a normal f32.
const EXP_HI: f32 = 88.0;

/// `e^x` for f32 in branch-free arithmetic the compiler vectorises; relative error ≈ 1e-7.
///
/// Returns `0` below `-87.3` (where `e^x` is subnormal), `+∞` above `88.0` (where `e^x` is
/// within a factor 2.1 of `f32::MAX`; softmax and GELU never go there), and NaN for NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so n·C1 is exact (C1 has 9 significant bits): Cody–Waite reduction.
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(EXP_LO, EXP_HI);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * C1 - n * C2;
    // Cephes expf polynomial: e^r ≈ 1 + r + r²·P(r) on |r| ≤ ln2/2.
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5; // Cephes' 5.0000001201e-1 rounds to 0.5 in f32
    let er = p * (r * r) + r + 1.0;
    // 2^n built directly in the exponent field: (n + 127) << 23, n read from t's mantissa.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let two_n = f32::from_bits(((ni + 127) << 23) as u32);
    let y = er * two_n;
    if x < EXP_LO {
        0.0
    } else if x > EXP_HI {
        f32::INFINITY
    } else {
        y // NaN stays NaN: clamp passes it through
    }
}

/// `e^x` for arguments known to be at most 0 (shifted logits, scores minus their row maximum):
/// the [`exp_fast`] polynomial with one select instead of two and a single clamp, which
/// measures ~1.7× faster in the cross-entropy row passes. Returns 0 below `-87.3`; NaN stays NaN.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0;
    let xc = if x < EXP_LO { EXP_LO } else { x };
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * C1 - n * C2;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = p * (r * r) + r + 1.0;
    let bits = t.to_bits().wrapping_sub(MAGIC.to_bits()).wrapping_add(127) << 23;
    let y = er * f32::from_bits(bits);
    if x < EXP_LO {
        0.0
    } else {
        y
    }
}

/// Sum of a slice with 16 independent accumulators, so the loop vectorises.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for ch in &mut chunks {
        for i in 0..16 {
            acc[i] += ch[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for x in chunks.remainder() {
        s += x;
    }
    s
}

/// Maximum of a slice (`-∞` for an empty one) with 16 independent lanes, so the loop vectorises.
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 16];
    let mut chunks = xs.chunks_exact(16);
    for ch in &mut chunks {
        for i in 0..16 {
            acc[i] = if ch[i] > acc[i] { ch[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &x in acc.iter().chain(chunks.remainder()) {
        m = if x > m { x } else { m };
    }
    m
}

/// `x[j] = exp(x[j] - shift)` in place for `shift ≥ max x` (a row maximum); returns the sum.
#[inline(always)]
pub(crate) fn exp_shift_sum(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for i in 0..16 {
            c[i] = exp_nonpositive(c[i] - shift);
            acc[i] += c[i];
        }
    }
    let mut s = 0.0;
    for e in chunks.into_remainder() {
        *e = exp_nonpositive(*e - shift);
        s += *e;
    }
    s + acc.iter().sum::<f32>()
}

/// `x[j] *= a` in place.
#[inline(always)]
pub(crate) fn scale(x: &mut [f32], a: f32) {
    for e in x {
        *e *= a;
    }
}

/// Elements per task of [`first_nonfinite`]: big enough that a task is worth a thread, small
/// enough that an early non-finite value stops the scan soon.
const FINITE_CHUNK: usize = 1 << 16;

/// Whether every element of `xs` is finite. Why bits and not `is_finite`: the largest
/// magnitude as an integer (`bits & 0x7fff_ffff`, an unsigned max over 16 lanes) vectorises to
/// one compare per vector, and NaN and ±∞ are exactly the magnitudes ≥ `0x7f80_0000`.
#[inline(always)]
fn all_finite(xs: &[f32]) -> bool {
    let mut acc = [0u32; 16];
    let mut chunks = xs.chunks_exact(16);
    for ch in &mut chunks {
        for i in 0..16 {
            acc[i] = acc[i].max(ch[i].to_bits() & 0x7fff_ffff);
        }
    }
    let tail = chunks.remainder().iter().map(|x| x.to_bits() & 0x7fff_ffff);
    acc.into_iter().chain(tail).max().unwrap_or(0) < 0x7f80_0000
}

/// Index of the first NaN or ±∞ in `xs`, or `None` when every element is finite. One pass over
/// the data (parallel over chunks, vectorised within one): it runs on every checkpoint load
/// and save, 124M values for GPT-2 small.
pub fn first_nonfinite(xs: &[f32]) -> Option<usize> {
    use rayon::prelude::*;
    let chunk = xs
        .par_chunks(FINITE_CHUNK)
        .position_first(|c| !all_finite(c))?;
    let start = chunk * FINITE_CHUNK;
    xs[start..]
        .iter()
        .position(|x| !x.is_finite())
        .map(|i| start + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_nonfinite_finds_the_first_nan_or_infinity() {
        let mut x = vec![1.0f32; 3 * FINITE_CHUNK + 5];
        assert_eq!(first_nonfinite(&x), None);
        assert_eq!(first_nonfinite(&[]), None);
        x[3 * FINITE_CHUNK + 4] = f32::NAN;
        assert_eq!(first_nonfinite(&x), Some(3 * FINITE_CHUNK + 4));
        x[FINITE_CHUNK + 17] = f32::NEG_INFINITY;
        assert_eq!(first_nonfinite(&x), Some(FINITE_CHUNK + 17));
        x[2] = f32::INFINITY;
        assert_eq!(first_nonfinite(&x), Some(2));
        // The largest finite values and subnormals are finite.
        assert_eq!(first_nonfinite(&[f32::MAX, -f32::MAX, 1e-45, -0.0]), None);
    }

    #[test]
    fn exp_fast_is_accurate_and_handles_the_edges() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            worst = worst.max(((exp_fast(x) as f64 - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert_eq!(exp_fast(-100.0), 0.0);
        assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_fast(100.0), f32::INFINITY);
        assert!(exp_fast(f32::NAN).is_nan());
    }

    #[test]
    fn exp_nonpositive_is_accurate_on_its_domain() {
        let mut worst = 0.0f64;
        for i in 0..20_000 {
            let x = -90.0 + 90.0 * i as f32 / 20_000.0;
            let want = (x as f64).exp();
            if x >= EXP_LO {
                worst = worst.max(((exp_nonpositive(x) as f64 - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn exp_shift_sum_matches_libm() {
        let mut row = vec![0.5f32, -1.0, 2.0, 0.0, -30.0];
        let want: f64 = row.iter().map(|&x| ((x - 0.5) as f64).exp()).sum();
        let s = exp_shift_sum(&mut row, 0.5);
        assert!(((s as f64 - want) / want).abs() < 1e-6);
        assert!((row[0] - 1.0).abs() < 1e-7);
    }
}
