//! Layer normalisation over the last axis (Ba, Kiros & Hinton 2016), as `torch.nn.LayerNorm(C)`.
//!
//! Forward, for each row `x` of `inp (N, C)`:
//! `μ = mean(x)`, `σ² = mean((x - μ)²)` (biased, as PyTorch), `rstd = 1/√(σ² + eps)`,
//! `x̂ = (x - μ)·rstd`, `out = x̂ ⊙ weight + bias`. `mean (N)` and `rstd (N)` are outputs kept
//! for the backward.
//!
//! Backward (llm.c's form), with `g = dout` and `ĝ = g ⊙ weight`:
//! `dbias += Σ_rows g`, `dweight += Σ_rows g ⊙ x̂`,
//! `dinp += rstd·(ĝ - mean(ĝ) - x̂·mean(ĝ ⊙ x̂))`.
//!
//! Shapes: `inp`, `out`, `dout`, `dinp` `(N, C)`; `weight`, `bias`, `dweight`, `dbias` `(C)`;
//! `mean`, `rstd` `(N)`. Rows are split across rayon tasks; in the backward each task sums its
//! rows' parameter gradients into its own partial, and the partials are added in task order, so
//! results are deterministic for a given thread count.

use super::check_len;
use super::simd::simd_fn;
use super::vmath::sum;
use rayon::prelude::*;

/// Work (elements) below which a rayon task is not worth spawning.
const PAR_MIN: usize = 1 << 14;

/// `Σ (x - m)²` with 16 independent accumulators, so the loop vectorises.
#[inline(always)]
fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for ch in &mut chunks {
        for i in 0..16 {
            let d = ch[i] - m;
            acc[i] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for &v in chunks.remainder() {
        s += (v - m) * (v - m);
    }
    s
}

/// `(Σ w⊙g, Σ w⊙g⊙(x - m))` with 8 independent accumulators each.
#[inline(always)]
fn sums_for_backward(w: &[f32], g: &[f32], x: &[f32], m: f32) -> (f32, f32) {
    let (mut a, mut b) = ([0.0f32; 8], [0.0f32; 8]);
    let n8 = x.len() / 8 * 8;
    for ((wc, gc), xc) in w[..n8]
        .chunks_exact(8)
        .zip(g[..n8].chunks_exact(8))
        .zip(x[..n8].chunks_exact(8))
    {
        for i in 0..8 {
            let wg = wc[i] * gc[i];
            a[i] += wg;
            b[i] += wg * (xc[i] - m);
        }
    }
    let (mut sa, mut sb): (f32, f32) = (a.iter().sum(), b.iter().sum());
    for j in n8..x.len() {
        let wg = w[j] * g[j];
        sa += wg;
        sb += wg * (x[j] - m);
    }
    (sa, sb)
}

/// Normalises one row; returns `(mean, rstd)`.
#[inline(always)]
fn forward_row(out: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (f32, f32) {
    let c = x.len() as f32;
    let m = sum(x) / c;
    let var = sum_sq_dev(x, m) / c;
    let rs = 1.0 / (var + eps).sqrt();
    for (((o, &x), &w), &b) in out.iter_mut().zip(x).zip(w).zip(b) {
        *o = (x - m) * rs * w + b;
    }
    (m, rs)
}

/// `out (N, C) = LayerNorm(inp)` with affine `weight`, `bias (C)`; writes `mean`, `rstd (N)`.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    check_len("layernorm_forward", "out", out.len(), n * c);
    check_len("layernorm_forward", "mean", mean.len(), n);
    check_len("layernorm_forward", "rstd", rstd.len(), n);
    check_len("layernorm_forward", "inp", inp.len(), n * c);
    check_len("layernorm_forward", "weight", weight.len(), c);
    check_len("layernorm_forward", "bias", bias.len(), c);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    out.par_chunks_mut(rows * c)
        .zip(mean.par_chunks_mut(rows))
        .zip(rstd.par_chunks_mut(rows))
        .zip(inp.par_chunks(rows * c))
        .for_each(|(((o, m), r), x)| forward_rows(o, m, r, x, weight, bias, c, eps));
}

simd_fn! {
    /// [`forward_row`] on each row of a block of rows of length `c`.
    fn forward_rows(
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: &[f32],
        c: usize,
        eps: f32,
    ) {
        let rows = out.chunks_exact_mut(c).zip(inp.chunks_exact(c));
        for ((o, x), (m, r)) in rows.zip(mean.iter_mut().zip(rstd)) {
            (*m, *r) = forward_row(o, x, weight, bias, eps);
        }
    }
}

/// Backward of [`layernorm_forward`]: accumulates into `dinp (N, C)`, `dweight`, `dbias (C)`.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    check_len("layernorm_backward", "dinp", dinp.len(), n * c);
    check_len("layernorm_backward", "dweight", dweight.len(), c);
    check_len("layernorm_backward", "dbias", dbias.len(), c);
    check_len("layernorm_backward", "dout", dout.len(), n * c);
    check_len("layernorm_backward", "inp", inp.len(), n * c);
    check_len("layernorm_backward", "weight", weight.len(), c);
    check_len("layernorm_backward", "mean", mean.len(), n);
    check_len("layernorm_backward", "rstd", rstd.len(), n);
    if n == 0 || c == 0 {
        return;
    }
    let rows = super::rows_per_task(n, c, PAR_MIN);
    // One partial (dweight ‖ dbias) per task, summed below in task order.
    let partials: Vec<Vec<f32>> = dinp
        .par_chunks_mut(rows * c)
        .zip(dout.par_chunks(rows * c))
        .zip(inp.par_chunks(rows * c))
        .zip(mean.par_chunks(rows))
        .zip(rstd.par_chunks(rows))
        .map(|((((d, g), x), m), r)| {
            let mut part = vec![0.0f32; 2 * c];
            let (pw, pb) = part.split_at_mut(c);
            backward_rows(d, pw, pb, g, x, weight, m, r, c);
            part
        })
        .collect();
    for part in partials {
        let (pw, pb) = part.split_at(c);
        for (a, b) in dweight.iter_mut().zip(pw) {
            *a += b;
        }
        for (a, b) in dbias.iter_mut().zip(pb) {
            *a += b;
        }
    }
}

simd_fn! {
    /// Backward of a block of rows of length `c`: accumulates into `dinp` and into this block's
    /// partial `dweight`, `dbias`.
    fn backward_rows(
        dinp: &mut [f32],
        dweight: &mut [f32],
        dbias: &mut [f32],
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) {
        for ((((d, g), x), &m), &rs) in dinp
            .chunks_exact_mut(c)
            .zip(dout.chunks_exact(c))
            .zip(inp.chunks_exact(c))
            .zip(mean)
            .zip(rstd)
        {
            // Same-length reslices let the compiler drop bounds checks and vectorise.
            let (d, g, x, w) = (&mut d[..c], &g[..c], &x[..c], &weight[..c]);
            let (pw, pb) = (&mut dweight[..c], &mut dbias[..c]);
            let (swg, swgx) = sums_for_backward(w, g, x, m);
            let mean_dn = swg / c as f32;
            let mean_dn_norm = swgx * rs / c as f32;
            for j in 0..c {
                let norm = (x[j] - m) * rs;
                let dn = w[j] * g[j];
                pb[j] += g[j];
                pw[j] += norm * g[j];
                d[j] += (dn - mean_dn - norm * mean_dn_norm) * rs;
            }
        }
    }
}

/// Oracle for [`layernorm_forward`]: f64 throughout.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn layernorm_forward_naive(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    n: usize,
    c: usize,
    eps: f32,
) {
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        let m = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        for j in 0..c {
            out[r * c + j] = ((x[j] as f64 - m) * rs * weight[j] as f64 + bias[j] as f64) as f32;
        }
        mean[r] = m as f32;
        rstd[r] = rs as f32;
    }
}

/// Oracle for [`layernorm_backward`]: f64 throughout, rows in order.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
pub fn layernorm_backward_naive(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    let mut dw = vec![0.0f64; c];
    let mut db = vec![0.0f64; c];
    for r in 0..n {
        let (m, rs) = (mean[r] as f64, rstd[r] as f64);
        let norm = |j: usize| (inp[r * c + j] as f64 - m) * rs;
        let g = |j: usize| dout[r * c + j] as f64;
        let dn = |j: usize| weight[j] as f64 * g(j);
        let mean_dn = (0..c).map(dn).sum::<f64>() / c as f64;
        let mean_dn_norm = (0..c).map(|j| dn(j) * norm(j)).sum::<f64>() / c as f64;
        for j in 0..c {
            db[j] += g(j);
            dw[j] += norm(j) * g(j);
            dinp[r * c + j] += ((dn(j) - mean_dn - norm(j) * mean_dn_norm) * rs) as f32;
        }
    }
    for j in 0..c {
        dweight[j] += dw[j] as f32;
        dbias[j] += db[j] as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn rand(n: usize, mean: f32, std: f32, rng: &mut Rng) -> Vec<f32> {
        let mut v = vec![0.0; n];
        rng.fill_normal(&mut v, mean, std);
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
    fn fast_matches_naive_on_odd_shapes() {
        let mut rng = Rng::new(31);
        for &(n, c) in &[(7, 13), (1, 1), (3, 768), (257, 129)] {
            // Offset inputs (mean 3) exercise the two-pass variance.
            let x = rand(n * c, 3.0, 2.0, &mut rng);
            let (w, b) = (rand(c, 1.0, 0.5, &mut rng), rand(c, 0.0, 0.5, &mut rng));
            let g = rand(n * c, 0.0, 1.0, &mut rng);
            let (mut y1, mut m1, mut r1) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            let (mut y2, mut m2, mut r2) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut y1, &mut m1, &mut r1, &x, &w, &b, n, c, 1e-5);
            layernorm_forward_naive(&mut y2, &mut m2, &mut r2, &x, &w, &b, n, c, 1e-5);
            close("out", &y1, &y2, 1e-5, 1e-5);
            close("mean", &m1, &m2, 1e-5, 1e-6);
            close("rstd", &r1, &r2, 1e-5, 0.0);

            let init = rand(n * c, 0.0, 1.0, &mut rng);
            let (mut d1, mut dw1, mut db1) = (init.clone(), w.clone(), b.clone());
            let (mut d2, mut dw2, mut db2) = (init.clone(), w.clone(), b.clone());
            layernorm_backward(&mut d1, &mut dw1, &mut db1, &g, &x, &w, &m2, &r2, n, c);
            layernorm_backward_naive(&mut d2, &mut dw2, &mut db2, &g, &x, &w, &m2, &r2, n, c);
            close("dinp", &d1, &d2, 1e-4, 1e-5);
            close("dweight", &dw1, &dw2, 1e-4, 1e-4);
            close("dbias", &db1, &db2, 1e-4, 1e-4);
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn backward_matches_finite_differences() {
        let mut rng = Rng::new(32);
        let (n, c, eps) = (7, 13, 1e-5);
        let x = rand(n * c, 0.5, 1.0, &mut rng);
        let (w, b) = (rand(c, 1.0, 0.5, &mut rng), rand(c, 0.0, 0.5, &mut rng));
        let g = rand(n * c, 0.0, 1.0, &mut rng);
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let (mut y, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward_naive(&mut y, &mut m, &mut r, x, w, b, n, c, eps);
            y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let (mut y, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut y, &mut m, &mut r, &x, &w, &b, n, c, eps);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        layernorm_backward(&mut dx, &mut dw, &mut db, &g, &x, &w, &m, &r, n, c);

        let h = 1e-3f32;
        let check = |what: &str, i: usize, fd: f64, got: f32| {
            assert!(
                (fd - got as f64).abs() < 2e-3 * (1.0 + fd.abs()),
                "{what}[{i}]: fd {fd} vs {got}"
            );
        };
        let bump = |v: &[f32], i: usize, d: f32| {
            let mut v = v.to_vec();
            v[i] += d;
            v
        };
        for i in 0..n * c {
            let fd =
                (loss(&bump(&x, i, h), &w, &b) - loss(&bump(&x, i, -h), &w, &b)) / (2.0 * h as f64);
            check("dinp", i, fd, dx[i]);
        }
        for j in 0..c {
            let fd =
                (loss(&x, &bump(&w, j, h), &b) - loss(&x, &bump(&w, j, -h), &b)) / (2.0 * h as f64);
            check("dweight", j, fd, dw[j]);
            let fd =
                (loss(&x, &w, &bump(&b, j, h)) - loss(&x, &w, &bump(&b, j, -h))) / (2.0 * h as f64);
            check("dbias", j, fd, db[j]);
        }
    }

    #[test]
    fn constant_row_gives_bias_and_finite_gradients() {
        // Zero variance: x̂ = 0, so out = bias, and rstd = 1/√eps stays finite.
        let (n, c) = (2, 5);
        let x = vec![4.0; n * c];
        let (w, b) = (vec![2.0; c], vec![0.5, -1.0, 0.0, 1.0, 2.0]);
        let (mut y, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut y, &mut m, &mut r, &x, &w, &b, n, c, 1e-5);
        assert_eq!(&y[..c], &b[..]);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
        layernorm_backward(
            &mut dx,
            &mut dw,
            &mut db,
            &vec![1.0; n * c],
            &x,
            &w,
            &m,
            &r,
            n,
            c,
        );
        assert!(dx.iter().chain(&dw).chain(&db).all(|v| v.is_finite()));
    }
}
