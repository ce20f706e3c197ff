//! AdamW over the flat parameter buffer, global gradient-norm clipping, and zeroing.
//!
//! One step of AdamW (Loshchilov & Hutter 2019, decoupled weight decay) with the arithmetic of
//! PyTorch's `torch.optim.AdamW` (single-tensor path, f32 state, bias corrections in f64), for
//! step `t` (1-based) and gradient `g`:
//!
//! ```text
//! θ ← θ·(1 - lr·wd)
//! m ← m + (1 - β1)·(g - m)              (= β1·m + (1 - β1)·g)
//! v ← β2·v + (1 - β2)·g²
//! θ ← θ - lr/(1 - β1ᵗ) · m / (sqrt(v)/sqrt(1 - β2ᵗ) + eps)
//! ```
//!
//! Shapes: `params`, `grads`, `m`, `v` are the same flat buffer layout (`P` elements). Weight
//! decay is chosen per parameter by the caller: [`adamw_update`] on each range with `wd` or 0,
//! or [`adamw_update_ranges`] with a `(range, decay)` table (matrices decay; biases, LayerNorm
//! and, by convention, embeddings as the caller decides).
//!
//! Clipping follows `torch.nn.utils.clip_grad_norm_`: scale by `max_norm / (norm + 1e-6)` when
//! that is below 1. The norm is accumulated in f64 over fixed-size chunks combined in order, so
//! it is the same bit for bit whatever the thread count.

use super::check_len;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel task: large enough to amortise scheduling, small enough to balance.
const CHUNK: usize = 1 << 14;

/// Scalars of one AdamW step, as PyTorch rounds them to f32.
#[derive(Clone, Copy)]
struct StepScalars {
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

impl StepScalars {
    #[allow(clippy::too_many_arguments)]
    fn new(lr: f32, beta1: f32, beta2: f32, eps: f32, wd: f32, step: usize) -> Self {
        assert!(step >= 1, "adamw_update: step is 1-based, got {step}");
        // PyTorch computes these on Python floats (f64), then applies them to f32 tensors.
        let (lr64, b1, b2) = (lr as f64, beta1 as f64, beta2 as f64);
        let bc1 = 1.0 - b1.powi(step as i32);
        let bc2 = 1.0 - b2.powi(step as i32);
        StepScalars {
            decay: (1.0 - lr64 * wd as f64) as f32,
            one_minus_beta1: (1.0 - b1) as f32,
            beta2,
            one_minus_beta2: (1.0 - b2) as f32,
            step_size: (lr64 / bc1) as f32,
            bias_correction2_sqrt: bc2.sqrt() as f32,
            eps,
        }
    }

    /// The update of one element; shared by the fast and naive paths so they agree exactly.
    #[inline(always)]
    fn apply(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        *p *= self.decay;
        *m += self.one_minus_beta1 * (g - *m);
        *v = *v * self.beta2 + self.one_minus_beta2 * g * g;
        let denom = v.sqrt() / self.bias_correction2_sqrt + self.eps;
        *p += -self.step_size * (*m / denom);
    }
}

fn check_buffers(op: &str, params: &[f32], grads: &[f32], m: &[f32], v: &[f32]) {
    check_len(op, "grads", grads.len(), params.len());
    check_len(op, "m", m.len(), params.len());
    check_len(op, "v", v.len(), params.len());
}

/// One AdamW step over `params` with gradients `grads` and moments `m`, `v` (all `P` long),
/// weight decay `weight_decay` applied to every element, `step` 1-based. Parallel over chunks.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: usize,
) {
    check_buffers("adamw_update", params, grads, m, v);
    let s = StepScalars::new(lr, beta1, beta2, eps, weight_decay, step);
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .for_each(|(((p, g), m), v)| {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                s.apply(p, g, m, v);
            }
        });
}

/// [`adamw_update`] over a table of `(range, decay)` entries: ranges with `decay` use
/// `weight_decay`, the others 0. Elements outside every range are left untouched.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update_ranges(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    ranges: &[(Range<usize>, bool)],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: usize,
) {
    check_buffers("adamw_update_ranges", params, grads, m, v);
    for (r, decay) in ranges {
        assert!(
            r.start <= r.end && r.end <= params.len(),
            "adamw_update_ranges: range {r:?} outside the {} parameters",
            params.len()
        );
        let wd = if *decay { weight_decay } else { 0.0 };
        let r = r.clone();
        adamw_update(
            &mut params[r.clone()],
            &grads[r.clone()],
            &mut m[r.clone()],
            &mut v[r],
            lr,
            beta1,
            beta2,
            eps,
            wd,
            step,
        );
    }
}

/// Oracle for [`adamw_update`]: one sequential loop.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update_naive(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    step: usize,
) {
    let s = StepScalars::new(lr, beta1, beta2, eps, weight_decay, step);
    for i in 0..params.len() {
        s.apply(&mut params[i], grads[i], &mut m[i], &mut v[i]);
    }
}

/// Sum of squares of one chunk in f64, 8 lanes so it vectorises.
fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i] as f64 * c[i] as f64;
        }
    }
    acc.iter().sum::<f64>() + tail.iter().map(|&e| e as f64 * e as f64).sum::<f64>()
}

/// Global L2 norm of `grads`, accumulated in f64 and deterministic (fixed chunks summed in order).
pub fn global_grad_norm(grads: &[f32]) -> f32 {
    let partial: Vec<f64> = grads.par_chunks(CHUNK).map(sum_squares).collect();
    partial.iter().sum::<f64>().sqrt() as f32
}

/// Oracle for [`global_grad_norm`]: one sequential f64 sum.
pub fn global_grad_norm_naive(grads: &[f32]) -> f32 {
    grads
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt() as f32
}

/// Clips `grads` to global norm `max_norm` like `torch.nn.utils.clip_grad_norm_`: multiplies by
/// `max_norm / (norm + 1e-6)` when that is below 1. Returns the norm before clipping. A
/// non-finite norm leaves the gradients as they are (PyTorch would scale them to NaN); the caller
/// sees it in the returned value and can skip the step.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = global_grad_norm(grads);
    clip_to_norm(grads, norm, max_norm);
    norm
}

/// The scaling of [`clip_grad_norm`] for gradients whose global norm `norm` is already known
/// (the training loop computes it once, to check it is finite before anything else).
pub fn clip_to_norm(grads: &mut [f32], norm: f32, max_norm: f32) {
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        grads
            .par_chunks_mut(CHUNK)
            .for_each(|c| c.iter_mut().for_each(|g| *g *= coef));
    }
}

/// Sets every element of `buf` to 0 (gradients before a step's backward), in parallel.
pub fn zero(buf: &mut [f32]) {
    buf.par_chunks_mut(CHUNK).for_each(|c| c.fill(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_matches_naive_exactly() {
        let mut rng = Rng::new(31);
        let n = 3 * CHUNK + 17;
        let mut p1 = rng.normal_vec(n, 1.0);
        let (mut m1, mut v1) = (vec![0.0; n], vec![0.0; n]);
        let (mut p2, mut m2, mut v2) = (p1.clone(), m1.clone(), v1.clone());
        for step in 1..=3 {
            let g = rng.normal_vec(n, 1.0);
            adamw_update(
                &mut p1, &g, &mut m1, &mut v1, 1e-2, 0.9, 0.95, 1e-8, 0.1, step,
            );
            adamw_update_naive(
                &mut p2, &g, &mut m2, &mut v2, 1e-2, 0.9, 0.95, 1e-8, 0.1, step,
            );
        }
        assert_eq!(p1, p2);
        assert_eq!(m1, m2);
        assert_eq!(v1, v2);
    }

    #[test]
    fn first_step_moves_each_parameter_by_lr() {
        // At step 1, m̂ = g and v̂ = g², so the Adam part moves θ by lr·g/(|g| + eps) ≈ ±lr.
        let mut p = vec![1.0, -2.0, 0.5, 3.0];
        let g = vec![0.3, -4.0, 1e-3, 0.0];
        let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
        let ranges = [(0..2, true), (2..4, false)];
        adamw_update_ranges(
            &mut p, &g, &mut m, &mut v, &ranges, 0.1, 0.9, 0.999, 1e-8, 0.5, 1,
        );
        let want = [1.0 * 0.95 - 0.1, -2.0 * 0.95 + 0.1, 0.5 - 0.1, 3.0];
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{p:?} vs {want:?}");
        }
    }

    #[test]
    fn norm_clip_and_zero() {
        let mut rng = Rng::new(32);
        let mut g = rng.normal_vec(5 * CHUNK + 3, 1.0);
        let norm = global_grad_norm(&g);
        assert_eq!(norm, global_grad_norm(&g), "deterministic");
        let naive = global_grad_norm_naive(&g);
        assert!((norm - naive).abs() <= 1e-6 * naive, "{norm} vs {naive}");
        let before = clip_grad_norm(&mut g, 1.0);
        assert_eq!(before, norm);
        assert!((global_grad_norm(&g) - 1.0).abs() < 1e-5);
        // Below the threshold nothing changes.
        let g2 = g.clone();
        clip_grad_norm(&mut g, 10.0);
        assert_eq!(g, g2);
        zero(&mut g);
        assert!(g.iter().all(|&x| x == 0.0));
    }
}
