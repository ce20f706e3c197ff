//! Residual add, scaling, and in-place accumulation: the elementwise glue between layers.
//!
//! - `residual_forward`: `out = a + b` (the skip connection `x + sublayer(x)`);
//!   backward `da += dout`, `db += dout`.
//! - `scale_forward`: `out = s · inp` (e.g. GPT-1's `√C` embedding scale, attention's `1/√d_k`);
//!   backward `dinp += s · dout`.
//! - `add_inplace`: `acc += x` (gradient accumulation into a shared buffer).
//!
//! Shapes: every buffer is a flat slice of the same length (any `N × C` activation). These are
//! memory-bound; large buffers are split into chunks of at least [`PAR_MIN`] elements per task
//! so that small ones (decoding, tests) stay on one thread.

use super::check_len;
use rayon::prelude::*;

/// Elementwise buffers shorter than this per task are not worth a rayon task.
pub(crate) const PAR_MIN: usize = 1 << 15;

/// Chunk length for an elementwise pass over `len` elements.
#[inline]
fn chunk(len: usize) -> usize {
    super::rows_per_task(len, 1, PAR_MIN)
}

/// `out = a + b`, elementwise.
pub fn residual_forward(out: &mut [f32], a: &[f32], b: &[f32]) {
    check_len("residual_forward", "a", a.len(), out.len());
    check_len("residual_forward", "b", b.len(), out.len());
    let ch = chunk(out.len());
    out.par_chunks_mut(ch)
        .zip(a.par_chunks(ch))
        .zip(b.par_chunks(ch))
        .for_each(|((o, a), b)| {
            for ((o, a), b) in o.iter_mut().zip(a).zip(b) {
                *o = a + b;
            }
        });
}

/// Backward of [`residual_forward`]: `da += dout`, `db += dout`.
pub fn residual_backward(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
    check_len("residual_backward", "da", da.len(), dout.len());
    check_len("residual_backward", "db", db.len(), dout.len());
    let ch = chunk(dout.len());
    da.par_chunks_mut(ch)
        .zip(db.par_chunks_mut(ch))
        .zip(dout.par_chunks(ch))
        .for_each(|((da, db), g)| {
            for ((a, b), g) in da.iter_mut().zip(db.iter_mut()).zip(g) {
                *a += g;
                *b += g;
            }
        });
}

/// `out = s · inp`, elementwise.
pub fn scale_forward(out: &mut [f32], inp: &[f32], s: f32) {
    check_len("scale_forward", "inp", inp.len(), out.len());
    let ch = chunk(out.len());
    out.par_chunks_mut(ch)
        .zip(inp.par_chunks(ch))
        .for_each(|(o, x)| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = s * x;
            }
        });
}

/// Backward of [`scale_forward`]: `dinp += s · dout`.
pub fn scale_backward(dinp: &mut [f32], dout: &[f32], s: f32) {
    check_len("scale_backward", "dinp", dinp.len(), dout.len());
    let ch = chunk(dout.len());
    dinp.par_chunks_mut(ch)
        .zip(dout.par_chunks(ch))
        .for_each(|(d, g)| {
            for (d, g) in d.iter_mut().zip(g) {
                *d += s * g;
            }
        });
}

/// `acc += x`, elementwise.
pub fn add_inplace(acc: &mut [f32], x: &[f32]) {
    check_len("add_inplace", "x", x.len(), acc.len());
    let ch = chunk(acc.len());
    acc.par_chunks_mut(ch)
        .zip(x.par_chunks(ch))
        .for_each(|(a, x)| {
            for (a, x) in a.iter_mut().zip(x) {
                *a += x;
            }
        });
}

/// Oracle for [`residual_forward`].
#[allow(clippy::needless_range_loop)]
pub fn residual_forward_naive(out: &mut [f32], a: &[f32], b: &[f32]) {
    for i in 0..out.len() {
        out[i] = a[i] + b[i];
    }
}

/// Oracle for [`residual_backward`].
#[allow(clippy::needless_range_loop)]
pub fn residual_backward_naive(da: &mut [f32], db: &mut [f32], dout: &[f32]) {
    for i in 0..dout.len() {
        da[i] += dout[i];
        db[i] += dout[i];
    }
}

/// Oracle for [`scale_forward`].
#[allow(clippy::needless_range_loop)]
pub fn scale_forward_naive(out: &mut [f32], inp: &[f32], s: f32) {
    for i in 0..out.len() {
        out[i] = s * inp[i];
    }
}

/// Oracle for [`scale_backward`].
#[allow(clippy::needless_range_loop)]
pub fn scale_backward_naive(dinp: &mut [f32], dout: &[f32], s: f32) {
    for i in 0..dout.len() {
        dinp[i] += s * dout[i];
    }
}

/// Oracle for [`add_inplace`].
#[allow(clippy::needless_range_loop)]
pub fn add_inplace_naive(acc: &mut [f32], x: &[f32]) {
    for i in 0..acc.len() {
        acc[i] += x[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_matches_naive_exactly() {
        let mut rng = Rng::new(11);
        // 7×13 and a length spanning several parallel chunks with a ragged tail.
        for len in [7 * 13, 3 * PAR_MIN + 5] {
            let (a, b, g) = (
                rng.normal_vec(len, 1.0),
                rng.normal_vec(len, 1.0),
                rng.normal_vec(len, 1.0),
            );
            let (mut o1, mut o2) = (vec![0.0; len], vec![0.0; len]);
            residual_forward(&mut o1, &a, &b);
            residual_forward_naive(&mut o2, &a, &b);
            assert_eq!(o1, o2);

            let (mut da1, mut db1) = (a.clone(), b.clone());
            let (mut da2, mut db2) = (a.clone(), b.clone());
            residual_backward(&mut da1, &mut db1, &g);
            residual_backward_naive(&mut da2, &mut db2, &g);
            assert_eq!(da1, da2);
            assert_eq!(db1, db2);

            scale_forward(&mut o1, &a, 0.37);
            scale_forward_naive(&mut o2, &a, 0.37);
            assert_eq!(o1, o2);

            let (mut d1, mut d2) = (b.clone(), b.clone());
            scale_backward(&mut d1, &g, -1.5);
            scale_backward_naive(&mut d2, &g, -1.5);
            assert_eq!(d1, d2);

            let (mut acc1, mut acc2) = (a.clone(), a.clone());
            add_inplace(&mut acc1, &g);
            add_inplace_naive(&mut acc2, &g);
            assert_eq!(acc1, acc2);
        }
    }

    #[test]
    fn backward_accumulates_and_matches_finite_differences() {
        // L = Σ g ⊙ (a + b) + Σ g2 ⊙ (s·a): dL/da = g + s·g2, dL/db = g. Both ops are linear, so
        // the central difference is exact up to rounding; checked at every index in f64.
        let mut rng = Rng::new(12);
        let n = 7 * 13;
        let (a, b, g, g2) = (
            rng.normal_vec(n, 1.0),
            rng.normal_vec(n, 1.0),
            rng.normal_vec(n, 1.0),
            rng.normal_vec(n, 1.0),
        );
        let s = 0.75f32;
        let loss = |a: &[f32], b: &[f32]| -> f64 {
            let (mut r, mut q) = (vec![0.0; n], vec![0.0; n]);
            residual_forward_naive(&mut r, a, b);
            scale_forward_naive(&mut q, a, s);
            (0..n)
                .map(|i| g[i] as f64 * r[i] as f64 + g2[i] as f64 * q[i] as f64)
                .sum()
        };
        let (mut da, mut db) = (vec![0.0; n], vec![0.0; n]);
        residual_backward(&mut da, &mut db, &g);
        scale_backward(&mut da, &g2, s);
        let h = 1e-2f32;
        for i in 0..n {
            let (mut ap, mut am) = (a.clone(), a.clone());
            ap[i] += h;
            am[i] -= h;
            let fd = (loss(&ap, &b) - loss(&am, &b)) / (2.0 * h as f64);
            assert!(
                (fd - da[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "da[{i}] {fd} vs {}",
                da[i]
            );
            let (mut bp, mut bm) = (b.clone(), b.clone());
            bp[i] += h;
            bm[i] -= h;
            let fd = (loss(&a, &bp) - loss(&a, &bm)) / (2.0 * h as f64);
            assert!(
                (fd - db[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "db[{i}] {fd} vs {}",
                db[i]
            );
        }
    }

    #[test]
    #[should_panic(expected = "residual_forward: buffer `b`")]
    fn length_mismatch_names_op_and_buffer() {
        residual_forward(&mut [0.0; 3], &[0.0; 3], &[0.0; 2]);
    }
}
