//! Row-wise softmax and log-softmax, plus the vectorisable `exp` and reductions they use.
//!
//! For each row `x` of `inp (N, C)`:
//! - `softmax_forward`: `out = exp(x - max x) / Σ exp(x - max x)` (subtracting the row maximum
//!   keeps every exponent ≤ 0, so nothing overflows). Backward, with `y = out`:
//!   `dinp += y ⊙ (dout - ⟨dout, y⟩)`.
//! - `log_softmax_forward`: `out = x - max x - ln Σ exp(x - max x)`. Backward, with
//!   `y = out`: `dinp += dout - exp(y) · Σ dout`.
//!
//! A row whose entries are all `-∞` (fully masked) yields zeros from softmax (and `-∞` from
//! log-softmax) rather than NaN.
//!
//! Reference: `torch.softmax(x, -1)`, `torch.log_softmax(x, -1)`. Shapes: `inp`, `out`,
//! `dout`, `dinp` are all `(N, C)`; rows are split across rayon tasks.

//!
//! The vectorised `exp` and reductions live in [`super::vmath`].

use super::check_len;
use super::matmul::dot;
use super::simd::simd_fn;
use super::vmath::{exp_fast, max, sum};
use rayon::prelude::*;

/// Work (elements) below which a rayon task is not worth spawning.
const PAR_MIN: usize = 1 << 14;

simd_fn! {
    /// Softmax of one row into `out`.
    fn softmax_row(out: &mut [f32], x: &[f32]) {
        let m = max(x);
        if m == f32::NEG_INFINITY {
            out.fill(0.0);
            return;
        }
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp_fast(v - m);
        }
        let inv = 1.0 / sum(out);
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// `out (N, C) = softmax(inp)` along each row.
pub fn softmax_forward(out: &mut [f32], inp: &[f32], n: usize, c: usize) {
    check_len("softmax_forward", "out", out.len(), n * c);
    check_len("softmax_forward", "inp", inp.len(), n * c);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    out.par_chunks_mut(rows * c)
        .zip(inp.par_chunks(rows * c))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                softmax_row(o, x);
            }
        });
}

/// Backward of [`softmax_forward`] given its output `out`: `dinp += out ⊙ (dout - ⟨dout, out⟩)`.
pub fn softmax_backward(dinp: &mut [f32], out: &[f32], dout: &[f32], n: usize, c: usize) {
    check_len("softmax_backward", "dinp", dinp.len(), n * c);
    check_len("softmax_backward", "out", out.len(), n * c);
    check_len("softmax_backward", "dout", dout.len(), n * c);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    dinp.par_chunks_mut(rows * c)
        .zip(out.par_chunks(rows * c))
        .zip(dout.par_chunks(rows * c))
        .for_each(|((d, y), g)| {
            for ((d, y), g) in d
                .chunks_exact_mut(c)
                .zip(y.chunks_exact(c))
                .zip(g.chunks_exact(c))
            {
                let yg = dot(y, g);
                for ((d, &y), &g) in d.iter_mut().zip(y).zip(g) {
                    *d += y * (g - yg);
                }
            }
        });
}

/// `out (N, C) = log_softmax(inp)` along each row.
pub fn log_softmax_forward(out: &mut [f32], inp: &[f32], n: usize, c: usize) {
    check_len("log_softmax_forward", "out", out.len(), n * c);
    check_len("log_softmax_forward", "inp", inp.len(), n * c);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    out.par_chunks_mut(rows * c)
        .zip(inp.par_chunks(rows * c))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                log_softmax_row(o, x);
            }
        });
}

simd_fn! {
    /// Log-softmax of one row into `out`.
    fn log_softmax_row(out: &mut [f32], x: &[f32]) {
        let m = max(x);
        if m == f32::NEG_INFINITY {
            out.fill(f32::NEG_INFINITY);
            return;
        }
        // `out` holds the exponentials only long enough to sum them.
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp_fast(v - m);
        }
        let shift = m + sum(out).ln();
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v - shift;
        }
    }
}

/// Backward of [`log_softmax_forward`] given its output `out`: `dinp += dout - exp(out) · Σ dout`.
pub fn log_softmax_backward(dinp: &mut [f32], out: &[f32], dout: &[f32], n: usize, c: usize) {
    check_len("log_softmax_backward", "dinp", dinp.len(), n * c);
    check_len("log_softmax_backward", "out", out.len(), n * c);
    check_len("log_softmax_backward", "dout", dout.len(), n * c);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    dinp.par_chunks_mut(rows * c)
        .zip(out.par_chunks(rows * c))
        .zip(dout.par_chunks(rows * c))
        .for_each(|((d, y), g)| {
            for ((d, y), g) in d
                .chunks_exact_mut(c)
                .zip(y.chunks_exact(c))
                .zip(g.chunks_exact(c))
            {
                log_softmax_grad_row(d, y, g);
            }
        });
}

simd_fn! {
    /// Backward of one log-softmax row: `dinp += dout - exp(out) · Σ dout`.
    fn log_softmax_grad_row(dinp: &mut [f32], out: &[f32], dout: &[f32]) {
        let gs = sum(dout);
        for ((d, &y), &g) in dinp.iter_mut().zip(out).zip(dout) {
            *d += g - exp_fast(y) * gs;
        }
    }
}

/// Oracle for [`softmax_forward`]: f64 throughout, `f64::exp`.
#[allow(clippy::needless_range_loop)]
pub fn softmax_forward_naive(out: &mut [f32], inp: &[f32], n: usize, c: usize) {
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        if m == f64::NEG_INFINITY {
            out[r * c..(r + 1) * c].fill(0.0);
            continue;
        }
        let s: f64 = x.iter().map(|&v| (v as f64 - m).exp()).sum();
        for j in 0..c {
            out[r * c + j] = ((x[j] as f64 - m).exp() / s) as f32;
        }
    }
}

/// Oracle for [`softmax_backward`].
#[allow(clippy::needless_range_loop)]
pub fn softmax_backward_naive(dinp: &mut [f32], out: &[f32], dout: &[f32], n: usize, c: usize) {
    for r in 0..n {
        let yg: f64 = (0..c)
            .map(|j| out[r * c + j] as f64 * dout[r * c + j] as f64)
            .sum();
        for j in 0..c {
            let i = r * c + j;
            dinp[i] += (out[i] as f64 * (dout[i] as f64 - yg)) as f32;
        }
    }
}

/// Oracle for [`log_softmax_forward`].
#[allow(clippy::needless_range_loop)]
pub fn log_softmax_forward_naive(out: &mut [f32], inp: &[f32], n: usize, c: usize) {
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        if m == f64::NEG_INFINITY {
            out[r * c..(r + 1) * c].fill(f32::NEG_INFINITY);
            continue;
        }
        let lse = m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        for j in 0..c {
            out[r * c + j] = (x[j] as f64 - lse) as f32;
        }
    }
}

/// Oracle for [`log_softmax_backward`].
#[allow(clippy::needless_range_loop)]
pub fn log_softmax_backward_naive(dinp: &mut [f32], out: &[f32], dout: &[f32], n: usize, c: usize) {
    for r in 0..n {
        let gs: f64 = (0..c).map(|j| dout[r * c + j] as f64).sum();
        for j in 0..c {
            let i = r * c + j;
            dinp[i] += (dout[i] as f64 - (out[i] as f64).exp() * gs) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn rand(n: usize, std: f32, rng: &mut Rng) -> Vec<f32> {
        let mut v = vec![0.0; n];
        rng.fill_normal(&mut v, 0.0, std);
        v
    }

    fn close(what: &str, a: &[f32], b: &[f32], rtol: f32, atol: f32) {
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= atol + rtol * y.abs(),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn reductions_match_serial() {
        let mut rng = Rng::new(5);
        for len in [0, 1, 13, 16, 47, 1000] {
            let x = rand(len, 1.0, &mut rng);
            let s: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - s).abs() < 1e-4 * (1.0 + s.abs()));
            assert_eq!(max(&x), x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)));
        }
    }

    #[test]
    fn fast_matches_naive_on_odd_shapes() {
        let mut rng = Rng::new(6);
        for &(n, c) in &[(7, 13), (1, 1), (5, 50_257), (300, 129)] {
            let x = rand(n * c, 3.0, &mut rng);
            let g = rand(n * c, 1.0, &mut rng);
            let init = rand(n * c, 1.0, &mut rng);
            let (mut y1, mut y2) = (vec![0.0; n * c], vec![0.0; n * c]);
            softmax_forward(&mut y1, &x, n, c);
            softmax_forward_naive(&mut y2, &x, n, c);
            close("softmax", &y1, &y2, 1e-5, 1e-9);
            let (mut d1, mut d2) = (init.clone(), init.clone());
            softmax_backward(&mut d1, &y2, &g, n, c);
            softmax_backward_naive(&mut d2, &y2, &g, n, c);
            close("softmax dinp", &d1, &d2, 1e-5, 1e-6);

            log_softmax_forward(&mut y1, &x, n, c);
            log_softmax_forward_naive(&mut y2, &x, n, c);
            close("log_softmax", &y1, &y2, 1e-5, 1e-5);
            let (mut d1, mut d2) = (init.clone(), init.clone());
            log_softmax_backward(&mut d1, &y2, &g, n, c);
            log_softmax_backward_naive(&mut d2, &y2, &g, n, c);
            close("log_softmax dinp", &d1, &d2, 1e-5, 1e-5);
        }
    }

    #[test]
    fn large_logits_and_masked_rows_stay_finite() {
        let x = [
            1000.0,
            999.0,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut y = [0.0; 6];
        softmax_forward(&mut y, &x, 3, 2);
        let e = (-1.0f32).exp();
        close(
            "softmax",
            &y,
            &[1.0 / (1.0 + e), e / (1.0 + e), 0.0, 0.0, 0.0, 0.0],
            1e-6,
            1e-7,
        );
        let mut d = [0.0; 6];
        softmax_backward(&mut d, &y, &[1.0; 6], 3, 2);
        assert!(d.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(7);
        let (n, c) = (7, 13);
        let x = rand(n * c, 2.0, &mut rng);
        let g = rand(n * c, 1.0, &mut rng);
        type Fwd = fn(&mut [f32], &[f32], usize, usize);
        type Bwd = fn(&mut [f32], &[f32], &[f32], usize, usize);
        let cases: [(&str, Fwd, Bwd); 2] = [
            ("softmax", softmax_forward_naive, softmax_backward),
            (
                "log_softmax",
                log_softmax_forward_naive,
                log_softmax_backward,
            ),
        ];
        for (name, fwd, bwd) in cases {
            let loss = |x: &[f32]| -> f64 {
                let mut y = vec![0.0; n * c];
                fwd(&mut y, x, n, c);
                y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let mut y = vec![0.0; n * c];
            fwd(&mut y, &x, n, c);
            let mut d = vec![0.0; n * c];
            bwd(&mut d, &y, &g, n, c);
            let h = 1e-3f32;
            for i in 0..n * c {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += h;
                xm[i] -= h;
                let fd = (loss(&xp) - loss(&xm)) / (2.0 * h as f64);
                assert!(
                    (fd - d[i] as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                    "{name} dinp[{i}]: {fd} vs {}",
                    d[i]
                );
            }
        }
    }
}
