//! Softmax cross-entropy fused with the logits, with PyTorch `F.cross_entropy` semantics.
//!
//! For each row `i` with target `t_i` and logits `x_i` (`V` classes), label smoothing `ε` turns
//! the target into the distribution `q = (1 - ε)·onehot(t_i) + ε/V`, and
//!
//! ```text
//! lse_i  = log Σ_j exp(x_ij)
//! loss_i = -Σ_j q_j log softmax(x_i)_j = lse_i - (1 - ε)·x_it - (ε/V)·Σ_j x_ij
//! L      = (1/N') Σ_{counted i} loss_i         N' = rows whose target is not `ignore_index`
//! ∂L/∂x_ij = (softmax(x_i)_j - q_j) / N'       (0 for ignored rows)
//! ```
//!
//! `L = 0` (not NaN) when no row is counted. Reference: PyTorch `F.cross_entropy(logits,
//! targets, ignore_index=…, label_smoothing=…, reduction="mean")`; llm.c's fused classifier for
//! the in-place gradient.
//!
//! Shapes (see [`crate::kernels`]): `logits` `(N, V)`, `targets` and `losses` `(N)`.
//!
//! **Exception to the `+=` rule:** [`crossentropy_forward_backward`] overwrites the logits with
//! their gradient instead of accumulating into a separate buffer, so training never holds a
//! second `N×V` array (200 MB at N = 1024, V = 50257).
//!
//! Each row is three passes: max (and the sum of logits, for smoothing) from memory, then
//! `exp` with the row in L2 (a GPT-2 row is 200 KB), then the gradient write. Rows run in
//! parallel. The `exp` is the vectorised polynomial shared with attention.

use super::check_len;
use super::simd::simd_fn;
use super::vmath;
use rayon::prelude::*;

/// PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i32 = -100;

/// Checks targets and counts the rows that take part in the mean. Panics (naming the op, the
/// row, the target and `V`) on a counted target outside `[0, V)`: callers validate user input.
fn count_targets(op: &str, targets: &[i32], v: usize, ignore_index: i32) -> usize {
    let mut counted = 0;
    for (i, &t) in targets.iter().enumerate() {
        if t == ignore_index {
            continue;
        }
        assert!(
            t >= 0 && (t as usize) < v,
            "{op}: target {t} at row {i} is outside [0, {v}) (V = {v}); ignore_index is {ignore_index}"
        );
        counted += 1;
    }
    counted
}

/// Mean of the per-row losses over `counted` rows, summed in f64 in row order (deterministic
/// whatever the thread count); 0 when nothing is counted.
fn mean_loss(losses: &[f32], counted: usize) -> f32 {
    if counted == 0 {
        return 0.0;
    }
    (losses.iter().map(|&l| l as f64).sum::<f64>() / counted as f64) as f32
}

const LANES: usize = 16;

/// `(max, sum)` of a row, 16 lanes so it vectorises.
#[inline(always)]
fn max_and_sum(x: &[f32]) -> (f32, f32) {
    let mut mx = [f32::NEG_INFINITY; LANES];
    let mut sm = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
            sm[i] += c[i];
        }
    }
    let mut m = f32::NEG_INFINITY;
    let mut s = 0.0;
    for &a in mx.iter().chain(tail) {
        m = if a > m { a } else { m };
    }
    for &a in sm.iter().chain(tail) {
        s += a;
    }
    (m, s)
}

/// `Σ_j exp(x_j - shift)` without writing.
#[inline(always)]
fn exp_sum(x: &[f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] += vmath::exp_nonpositive(c[i] - shift);
        }
    }
    acc.iter().sum::<f32>()
        + tail
            .iter()
            .map(|&e| vmath::exp_nonpositive(e - shift))
            .sum::<f32>()
}

simd_fn! {
    /// Loss of one counted row, from its logits (see the module docs).
    fn row_loss(x: &[f32], t: usize, smoothing: f32) -> f32 {
        let (mx, sum_x) = max_and_sum(x);
        let lse = mx + exp_sum(x, mx).ln();
        lse - (1.0 - smoothing) * x[t] - smoothing / x.len() as f32 * sum_x
    }
}

simd_fn! {
    /// Loss of one counted row, then its logits overwritten by its gradient `g·(softmax - q)`.
    fn row_loss_grad(x: &mut [f32], t: usize, smoothing: f32, g: f32) -> f32 {
        let (mx, sum_x) = max_and_sum(x);
        let xt = x[t];
        let uniform = smoothing / x.len() as f32;
        let sum_e = vmath::exp_shift_sum(x, mx);
        let loss = mx + sum_e.ln() - (1.0 - smoothing) * xt - uniform * sum_x;
        let (a, b) = (g / sum_e, g * uniform);
        for e in x.iter_mut() {
            *e = *e * a - b;
        }
        x[t] -= g * (1.0 - smoothing);
        loss
    }
}

/// Per-row losses (`losses[i]`, 0 for ignored rows) and their mean over counted rows.
///
/// `logits` `(N, V)` are left intact. `ignore_index` rows are not counted (PyTorch default:
/// [`IGNORE_INDEX`]); `label_smoothing` is `ε` in `[0, 1]`. Panics on a counted target outside
/// `[0, V)`.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_forward(
    losses: &mut [f32],
    logits: &[f32],
    targets: &[i32],
    n: usize,
    v: usize,
    ignore_index: i32,
    label_smoothing: f32,
) -> f32 {
    const OP: &str = "crossentropy_forward";
    check_len(OP, "losses", losses.len(), n);
    check_len(OP, "logits", logits.len(), n * v);
    check_len(OP, "targets", targets.len(), n);
    let counted = count_targets(OP, targets, v, ignore_index);
    if v == 0 {
        losses.fill(0.0);
        return 0.0;
    }
    logits
        .par_chunks_exact(v)
        .zip(losses.par_iter_mut())
        .zip(targets.par_iter())
        .for_each(|((x, loss), &t)| {
            *loss = if t == ignore_index {
                0.0
            } else {
                row_loss(x, t as usize, label_smoothing)
            };
        });
    mean_loss(losses, counted)
}

/// Fused training call: the losses and their mean as [`crossentropy_forward`], and the logits
/// **overwritten** with `∂(dloss · L)/∂logits` (zero rows for ignored targets). Returns the mean
/// loss. This is the one kernel that does not accumulate; see the module docs.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_forward_backward(
    logits_to_dlogits: &mut [f32],
    losses: &mut [f32],
    targets: &[i32],
    n: usize,
    v: usize,
    ignore_index: i32,
    label_smoothing: f32,
    dloss: f32,
) -> f32 {
    const OP: &str = "crossentropy_forward_backward";
    check_len(OP, "logits_to_dlogits", logits_to_dlogits.len(), n * v);
    check_len(OP, "losses", losses.len(), n);
    check_len(OP, "targets", targets.len(), n);
    let counted = count_targets(OP, targets, v, ignore_index);
    if v == 0 {
        losses.fill(0.0);
        return 0.0;
    }
    let g = if counted == 0 {
        0.0
    } else {
        dloss / counted as f32
    };
    logits_to_dlogits
        .par_chunks_exact_mut(v)
        .zip(losses.par_iter_mut())
        .zip(targets.par_iter())
        .for_each(|((x, loss), &t)| {
            if t == ignore_index {
                x.fill(0.0);
                *loss = 0.0;
            } else {
                *loss = row_loss_grad(x, t as usize, label_smoothing, g);
            }
        });
    mean_loss(losses, counted)
}

/// Backward of a weighted sum of per-row cross-entropies `Σ_i s_i · loss_i` (no smoothing):
/// overwrites each row of logits with `s_i · (softmax(x_i) − onehot(t_i))`, and ignored rows
/// with 0. For losses that weigh rows differently (DPO's sequence log-probabilities, where
/// `log p = −loss` and `s_i = −∂L/∂log p_i`).
pub fn crossentropy_backward_rows(
    logits_to_dlogits: &mut [f32],
    targets: &[i32],
    row_scale: &[f32],
    n: usize,
    v: usize,
) {
    const OP: &str = "crossentropy_backward_rows";
    check_len(OP, "logits_to_dlogits", logits_to_dlogits.len(), n * v);
    check_len(OP, "targets", targets.len(), n);
    check_len(OP, "row_scale", row_scale.len(), n);
    count_targets(OP, targets, v, IGNORE_INDEX);
    if v == 0 {
        return;
    }
    logits_to_dlogits
        .par_chunks_exact_mut(v)
        .zip(targets.par_iter().zip(row_scale.par_iter()))
        .for_each(|(x, (&t, &g))| {
            if t == IGNORE_INDEX {
                x.fill(0.0);
            } else {
                row_loss_grad(x, t as usize, 0.0, g);
            }
        });
}

/// Log-softmax of one row in f64 (naive helper).
fn log_softmax_f64(x: &[f32]) -> Vec<f64> {
    let mx = x.iter().fold(f64::NEG_INFINITY, |m, &e| m.max(e as f64));
    let lse = mx + x.iter().map(|&e| (e as f64 - mx).exp()).sum::<f64>().ln();
    x.iter().map(|&e| e as f64 - lse).collect()
}

/// Oracle for [`crossentropy_forward`]: explicit target distribution, f64 math.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_forward_naive(
    losses: &mut [f32],
    logits: &[f32],
    targets: &[i32],
    n: usize,
    v: usize,
    ignore_index: i32,
    label_smoothing: f32,
) -> f32 {
    let eps = label_smoothing as f64;
    let (mut total, mut counted) = (0.0f64, 0usize);
    for i in 0..n {
        let t = targets[i];
        if t == ignore_index {
            losses[i] = 0.0;
            continue;
        }
        let logp = log_softmax_f64(&logits[i * v..(i + 1) * v]);
        let loss: f64 = (0..v)
            .map(|j| {
                let q = (1.0 - eps) * (j == t as usize) as u8 as f64 + eps / v as f64;
                -q * logp[j]
            })
            .sum();
        losses[i] = loss as f32;
        total += loss;
        counted += 1;
    }
    if counted == 0 {
        0.0
    } else {
        (total / counted as f64) as f32
    }
}

/// Oracle for [`crossentropy_forward_backward`], same in-place contract.
#[allow(clippy::too_many_arguments)]
pub fn crossentropy_forward_backward_naive(
    logits_to_dlogits: &mut [f32],
    losses: &mut [f32],
    targets: &[i32],
    n: usize,
    v: usize,
    ignore_index: i32,
    label_smoothing: f32,
    dloss: f32,
) -> f32 {
    let mean = crossentropy_forward_naive(
        losses,
        logits_to_dlogits,
        targets,
        n,
        v,
        ignore_index,
        label_smoothing,
    );
    let counted = targets.iter().filter(|&&t| t != ignore_index).count();
    let eps = label_smoothing as f64;
    for i in 0..n {
        let row = &mut logits_to_dlogits[i * v..(i + 1) * v];
        let t = targets[i];
        if t == ignore_index {
            row.fill(0.0);
            continue;
        }
        let logp = log_softmax_f64(row);
        for (j, x) in row.iter_mut().enumerate() {
            let q = (1.0 - eps) * (j == t as usize) as u8 as f64 + eps / v as f64;
            *x = (dloss as f64 * (logp[j].exp() - q) / counted as f64) as f32;
        }
    }
    mean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what} index {i}: {x} vs {y}"
            );
        }
    }

    /// Logits with a wide spread (so softmax is far from uniform) and targets with a few
    /// ignored rows.
    fn problem(n: usize, v: usize, rng: &mut Rng, ignore: i32) -> (Vec<f32>, Vec<i32>) {
        let mut x = vec![0.0; n * v];
        rng.fill_normal(&mut x, 0.5, 3.0);
        let t = (0..n)
            .map(|i| {
                if i % 3 == 1 {
                    ignore
                } else {
                    rng.below(v as u64) as i32
                }
            })
            .collect();
        (x, t)
    }

    #[test]
    fn fast_matches_naive() {
        let mut rng = Rng::new(21);
        for &(n, v) in &[(7, 13), (1, 1), (5, 17), (33, 1000), (4, 50257)] {
            for eps in [0.0f32, 0.1] {
                for ignore in [IGNORE_INDEX, 0] {
                    let (x, t) = problem(n, v, &mut rng, ignore);
                    let (mut l1, mut l2) = (vec![9.0; n], vec![9.0; n]);
                    let m1 = crossentropy_forward(&mut l1, &x, &t, n, v, ignore, eps);
                    let m2 = crossentropy_forward_naive(&mut l2, &x, &t, n, v, ignore, eps);
                    let tag = format!("N {n} V {v} eps {eps} ignore {ignore}");
                    close(&format!("{tag} losses"), &l1, &l2, 1e-5);
                    close(&format!("{tag} mean"), &[m1], &[m2], 1e-5);

                    let (mut g1, mut g2) = (x.clone(), x.clone());
                    let (mut l3, mut l4) = (vec![9.0; n], vec![9.0; n]);
                    let m3 =
                        crossentropy_forward_backward(&mut g1, &mut l3, &t, n, v, ignore, eps, 0.7);
                    let m4 = crossentropy_forward_backward_naive(
                        &mut g2, &mut l4, &t, n, v, ignore, eps, 0.7,
                    );
                    close(&format!("{tag} fused losses"), &l3, &l2, 1e-5);
                    close(&format!("{tag} fused mean"), &[m3, m4], &[m2, m2], 1e-5);
                    // Gradients are O(1/(N·V)); compare against their scale.
                    let gmax = g2.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                    for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-5 * gmax,
                            "{tag} dlogits[{i}]: {a} vs {b}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(22);
        let (n, v) = (7, 13);
        for eps in [0.0f32, 0.1] {
            let (x, t) = problem(n, v, &mut rng, IGNORE_INDEX);
            let mut g = x.clone();
            let mut losses = vec![0.0; n];
            let dloss = 1.3f32;
            crossentropy_forward_backward(&mut g, &mut losses, &t, n, v, IGNORE_INDEX, eps, dloss);
            // L = dloss · mean loss, in f64 via the naive per-row losses.
            let loss = |x: &[f32]| -> f64 {
                let counted = t.iter().filter(|&&ti| ti != IGNORE_INDEX).count() as f64;
                let mut total = 0.0;
                for i in 0..n {
                    if t[i] == IGNORE_INDEX {
                        continue;
                    }
                    let logp = log_softmax_f64(&x[i * v..(i + 1) * v]);
                    for (j, lp) in logp.iter().enumerate() {
                        let q = (1.0 - eps as f64) * (j == t[i] as usize) as u8 as f64
                            + eps as f64 / v as f64;
                        total -= q * lp;
                    }
                }
                dloss as f64 * total / counted
            };
            for idx in 0..n * v {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[idx] += 1e-2;
                xm[idx] -= 1e-2;
                let fd = (loss(&xp) - loss(&xm)) / (xp[idx] as f64 - xm[idx] as f64);
                let an = g[idx] as f64;
                assert!(
                    (fd - an).abs() < 1e-4 + 1e-3 * fd.abs(),
                    "dlogits[{idx}]: {an} vs fd {fd}"
                );
            }
        }
    }

    #[test]
    fn nothing_counted_gives_zero_not_nan() {
        let (n, v) = (3, 5);
        let mut x = vec![1.0; n * v];
        let t = vec![IGNORE_INDEX; n];
        let mut losses = vec![7.0; n];
        assert_eq!(
            crossentropy_forward(&mut losses, &x, &t, n, v, IGNORE_INDEX, 0.1),
            0.0
        );
        assert_eq!(losses, vec![0.0; n]);
        let m =
            crossentropy_forward_backward(&mut x, &mut losses, &t, n, v, IGNORE_INDEX, 0.1, 1.0);
        assert_eq!(m, 0.0);
        assert!(x.iter().all(|&g| g == 0.0));
    }

    #[test]
    fn extreme_logits_stay_finite() {
        let (n, v) = (2, 6);
        let mut x = vec![
            -1e30, 1e30, 0.0, 80.0, -80.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 200.0,
        ];
        let t = vec![0, 5];
        let mut losses = vec![0.0; n];
        let m =
            crossentropy_forward_backward(&mut x, &mut losses, &t, n, v, IGNORE_INDEX, 0.0, 1.0);
        assert!(
            m.is_finite() && x.iter().all(|g| g.is_finite()),
            "{m} {x:?}"
        );
        assert!(losses[0] > 1e29 && losses[1].abs() < 1e-6);
    }

    #[test]
    #[should_panic(expected = "target 13 at row 1 is outside [0, 13)")]
    fn out_of_range_target_panics() {
        let mut losses = vec![0.0; 2];
        crossentropy_forward(&mut losses, &[0.0; 26], &[0, 13], 2, 13, IGNORE_INDEX, 0.0);
    }

    /// Times the fused forward+backward at GPT-2 shapes; run with
    /// `cargo test --release --lib kernels::crossentropy::tests::timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        let mut rng = Rng::new(23);
        let (n, v) = (1024, 50257);
        let (x, t) = problem(n, v, &mut rng, IGNORE_INDEX);
        let mut buf = x.clone();
        let mut losses = vec![0.0; n];
        let (mut best_f, mut best_fb) = (f64::MAX, f64::MAX);
        for _ in 0..10 {
            let t0 = std::time::Instant::now();
            crossentropy_forward(&mut losses, &x, &t, n, v, IGNORE_INDEX, 0.0);
            best_f = best_f.min(t0.elapsed().as_secs_f64());
            buf.copy_from_slice(&x);
            let t0 = std::time::Instant::now();
            crossentropy_forward_backward(&mut buf, &mut losses, &t, n, v, IGNORE_INDEX, 0.0, 1.0);
            best_fb = best_fb.min(t0.elapsed().as_secs_f64());
        }
        println!(
            "crossentropy N={n} V={v} threads={}: forward {:.2} ms, fused forward+backward {:.2} ms",
            rayon::current_num_threads(),
            best_f * 1e3,
            best_fb * 1e3
        );
    }
    #[test]
    fn weighted_rows_backward_is_the_mean_backward_with_equal_weights_and_scales_per_row() {
        let (n, v) = (5, 7);
        let mut rng = crate::rng::Rng::new(4);
        let logits: Vec<f32> = (0..n * v).map(|_| rng.normal()).collect();
        let targets = [3, IGNORE_INDEX, 0, 6, 2];
        let mut mean = logits.clone();
        let mut losses = vec![0.0; n];
        crossentropy_forward_backward(
            &mut mean,
            &mut losses,
            &targets,
            n,
            v,
            IGNORE_INDEX,
            0.0,
            1.0,
        );
        let mut rows = logits.clone();
        crossentropy_backward_rows(&mut rows, &targets, &[0.25; 5], n, v);
        for (a, b) in mean.iter().zip(&rows) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
        let scales = [2.0, 9.0, -1.5, 0.0, 0.5];
        let mut weighted = logits.clone();
        crossentropy_backward_rows(&mut weighted, &targets, &scales, n, v);
        for i in 0..n {
            for j in 0..v {
                let want = if targets[i] == IGNORE_INDEX {
                    0.0
                } else {
                    rows[i * v + j] * 4.0 * scales[i]
                };
                assert!((weighted[i * v + j] - want).abs() < 1e-6, "row {i}");
            }
        }
    }
}
