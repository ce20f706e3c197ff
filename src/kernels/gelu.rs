//! GELU (tanh approximation, as GPT-2) and ReLU activations, elementwise.
//!
//! GELU: `y = ½·x·(1 + tanh(u))`, `u = √(2/π)·(x + 0.044715·x³)` (Hendrycks & Gimpel 2016;
//! GPT-2's `gelu`; PyTorch `F.gelu(x, approximate="tanh")`). Backward:
//! `dy/dx = ½(1 + tanh u) + ½·x·(1 - tanh² u)·√(2/π)·(1 + 3·0.044715·x²)`.
//!
//! Why no `tanh`: `½(1 + tanh u) = σ(2u) = 1 / (1 + e^{-2u})`, so with `s = σ(2u)` the forward is
//! `y = x·s` and the backward `s + 2·x·s·(1 - s)·u'`. This needs one [`exp_fast`] (vectorised,
//! ≈ 1e-7 relative) and no subtraction of nearly equal numbers, so it is accurate for large
//! negative `x` too, where `1 + tanh u` computed directly would cancel to nothing.
//!
//! ReLU: `y = max(x, 0)`; backward `dinp += dout·[x > 0]` (zero gradient at `x = 0`, as PyTorch).
//!
//! Shapes: all buffers are flat slices of one length (any `N × C` activation). Backward takes the
//! forward's input, not its output, and accumulates.

use super::check_len;
use super::simd::simd_fn;
use super::vmath::exp_fast;
use rayon::prelude::*;

/// `√(2/π)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the tanh approximation.
const GELU_A: f32 = 0.044_715;
/// Elements per rayon task, at least.
const PAR_MIN: usize = 1 << 14;

#[inline]
fn chunk(len: usize) -> usize {
    super::rows_per_task(len, 1, PAR_MIN)
}

/// `(σ(2u), σ(2u)·(1 - σ(2u)))` for GELU's `u(x)`, with `σ(2u) = ½(1 + tanh u)`.
///
/// With `e = e^{-2u}`: `σ = 1/(1 + e)` and `σ(1 - σ) = e/(1 + e)²`; forming `1 - σ` by
/// subtraction would cancel for large `x` (σ rounds to 1 while `2x·u'·(1 - σ)` is not negligible).
#[inline(always)]
fn gelu_gate(x: f32) -> (f32, f32) {
    let u = SQRT_2_OVER_PI * (x + GELU_A * x * x * x);
    let e = exp_fast(-2.0 * u);
    let q = 1.0 / (1.0 + e);
    // e = ∞ (far negative x) gives q = 0 and e·q·q = NaN: the true value there is 0.
    let qq = if e == f32::INFINITY { 0.0 } else { e * q * q };
    (q, qq)
}

/// GELU of one value (tanh form).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * gelu_gate(x).0
}

/// Derivative of [`gelu`] at `x`.
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    let (s, s1s) = gelu_gate(x);
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_A * x * x);
    s + 2.0 * x * s1s * du
}

/// `out = gelu(inp)`, elementwise.
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    check_len("gelu_forward", "inp", inp.len(), out.len());
    let ch = chunk(out.len());
    out.par_chunks_mut(ch)
        .zip(inp.par_chunks(ch))
        .for_each(|(o, x)| gelu_block(o, x));
}

simd_fn! {
    /// `out = gelu(inp)` on one block.
    fn gelu_block(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = gelu(x);
        }
    }
}

/// `x = gelu(x)` in place (inference, where the pre-activation is not kept for backward).
pub fn gelu_forward_inplace(x: &mut [f32]) {
    let ch = chunk(x.len());
    x.par_chunks_mut(ch).for_each(gelu_block_inplace);
}

simd_fn! {
    /// `x = gelu(x)` on one block.
    fn gelu_block_inplace(x: &mut [f32]) {
        for v in x.iter_mut() {
            *v = gelu(*v);
        }
    }
}

/// Backward of [`gelu_forward`]: `dinp += gelu'(inp) · dout`.
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    check_len("gelu_backward", "inp", inp.len(), dinp.len());
    check_len("gelu_backward", "dout", dout.len(), dinp.len());
    let ch = chunk(dinp.len());
    dinp.par_chunks_mut(ch)
        .zip(inp.par_chunks(ch))
        .zip(dout.par_chunks(ch))
        .for_each(|((d, x), g)| gelu_grad_block(d, x, g));
}

simd_fn! {
    /// `dinp += gelu'(inp) · dout` on one block.
    fn gelu_grad_block(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
            *d += gelu_grad(x) * g;
        }
    }
}

/// `out = max(inp, 0)`, elementwise.
pub fn relu_forward(out: &mut [f32], inp: &[f32]) {
    check_len("relu_forward", "inp", inp.len(), out.len());
    let ch = chunk(out.len());
    out.par_chunks_mut(ch)
        .zip(inp.par_chunks(ch))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = if x > 0.0 { x } else { 0.0 };
            }
        });
}

/// Backward of [`relu_forward`]: `dinp += dout` where `inp > 0`.
pub fn relu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    check_len("relu_backward", "inp", inp.len(), dinp.len());
    check_len("relu_backward", "dout", dout.len(), dinp.len());
    let ch = chunk(dinp.len());
    dinp.par_chunks_mut(ch)
        .zip(inp.par_chunks(ch))
        .zip(dout.par_chunks(ch))
        .for_each(|((d, x), g)| {
            for ((d, &x), &g) in d.iter_mut().zip(x).zip(g) {
                *d += if x > 0.0 { g } else { 0.0 };
            }
        });
}

/// GELU in f64 with `tanh`, written as the formula reads.
fn gelu_f64(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

/// Oracle for [`gelu_forward`]: the textbook tanh formula in f64.
pub fn gelu_forward_naive(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = gelu_f64(x as f64) as f32;
    }
}

/// Oracle for [`gelu_backward`]: the textbook derivative in f64.
pub fn gelu_backward_naive(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
        let x = x as f64;
        let t = (k * (x + 0.044715 * x * x * x)).tanh();
        let dy = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
        *d += (dy * g as f64) as f32;
    }
}

/// Oracle for [`relu_forward`].
pub fn relu_forward_naive(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        *o = x.max(0.0);
    }
}

/// Oracle for [`relu_backward`].
pub fn relu_backward_naive(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    for ((d, &x), &g) in dinp.iter_mut().zip(inp).zip(dout) {
        if x > 0.0 {
            *d += g;
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
    fn gelu_is_accurate_over_the_whole_range() {
        // Dense sweep, including the far negative tail where 1 + tanh(u) cancels.
        let xs: Vec<f32> = (0..40_001).map(|i| -20.0 + i as f32 * 1e-3).collect();
        let mut y = vec![0.0; xs.len()];
        let mut y_ref = y.clone();
        gelu_forward(&mut y, &xs);
        gelu_forward_naive(&mut y_ref, &xs);
        // In the negative tail y ≈ x·e^{2u} inherits the f32 rounding of `2u` (|2u| up to 88):
        // a relative error of up to |2u|·2^-24, so 1e-6 holds for x ≥ -3 and 2e-5 beyond.
        // atol: where 1 + tanh(u) underflows in f64 the oracle gives 0 and we give ~1e-30.
        let split = xs.iter().position(|&x| x >= -3.0).unwrap();
        close("gelu tail", &y[..split], &y_ref[..split], 2e-5, 1e-12);
        close("gelu", &y[split..], &y_ref[split..], 1e-6, 1e-12);
        let ones = vec![1.0; xs.len()];
        let (mut d, mut d_ref) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
        gelu_backward(&mut d, &xs, &ones);
        gelu_backward_naive(&mut d_ref, &xs, &ones);
        close("gelu'", &d, &d_ref, 1e-6, 1e-7);
        // Edges: no NaN from the exponential's saturation; NaN propagates.
        assert_eq!(gelu(-100.0), 0.0);
        assert_eq!(gelu(100.0), 100.0);
        assert_eq!(gelu_grad(-100.0), 0.0);
        assert_eq!(gelu_grad(100.0), 1.0);
        assert!(gelu(f32::NAN).is_nan());
    }

    #[test]
    fn fast_matches_naive_on_odd_shapes() {
        let mut rng = Rng::new(21);
        for len in [7 * 13, 3 * PAR_MIN + 3] {
            let x = rand(len, 2.0, &mut rng);
            let g = rand(len, 1.0, &mut rng);
            let init = rand(len, 1.0, &mut rng);
            let (mut y1, mut y2) = (vec![0.0; len], vec![0.0; len]);
            gelu_forward(&mut y1, &x);
            gelu_forward_naive(&mut y2, &x);
            close("gelu", &y1, &y2, 1e-6, 1e-7);
            let mut y3 = x.clone();
            gelu_forward_inplace(&mut y3);
            assert_eq!(y1, y3);
            let (mut d1, mut d2) = (init.clone(), init.clone());
            gelu_backward(&mut d1, &x, &g);
            gelu_backward_naive(&mut d2, &x, &g);
            close("gelu dinp", &d1, &d2, 1e-6, 1e-6);

            relu_forward(&mut y1, &x);
            relu_forward_naive(&mut y2, &x);
            assert_eq!(y1, y2);
            let (mut d1, mut d2) = (init.clone(), init.clone());
            relu_backward(&mut d1, &x, &g);
            relu_backward_naive(&mut d2, &x, &g);
            assert_eq!(d1, d2);
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(22);
        let n = 7 * 13;
        // Keep ReLU inputs away from the kink so the central difference is valid.
        let x: Vec<f32> = rand(n, 2.0, &mut rng)
            .into_iter()
            .map(|v| if v.abs() < 0.05 { v + 0.1 } else { v })
            .collect();
        let g = rand(n, 1.0, &mut rng);
        type Fwd = fn(&mut [f32], &[f32]);
        type Bwd = fn(&mut [f32], &[f32], &[f32]);
        let cases: [(&str, Fwd, Bwd); 2] = [
            ("gelu", gelu_forward_naive, gelu_backward),
            ("relu", relu_forward_naive, relu_backward),
        ];
        for (name, fwd, bwd) in cases {
            let loss = |x: &[f32]| -> f64 {
                let mut y = vec![0.0; n];
                fwd(&mut y, x);
                y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let mut d = vec![0.0; n];
            bwd(&mut d, &x, &g);
            let h = 1e-3f32;
            for i in 0..n {
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
