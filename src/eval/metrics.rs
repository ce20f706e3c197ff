//! Metrics and their standard errors, as lm-eval 0.4's `lm_eval/api/metrics.py` computes them:
//!
//! - `acc`, `acc_norm`, `acc_bytes`: the mean of per-document 0/1 scores; stderr
//!   `mean_stderr` = sample standard deviation / √n (= √(p(1−p)/(n−1)) for 0/1 scores);
//! - `perplexity` (LAMBADA): `exp(−mean(ll))`; stderr by lm-eval's bootstrap
//!   ([`bootstrap_stderr`]: chunks of 1,000 resamples, chunk `i` drawing with
//!   `random.Random(i).choices`, 100,000 resamples by default), reproduced draw for draw;
//! - `word_perplexity`, `byte_perplexity` (`exp(−Σll / Σunits)`) and `bits_per_byte`
//!   (`−Σll / Σbytes / ln 2`): no stderr (lm-eval reports `N/A`).
//!
//! Sums run in document order in f64, as Python's `sum` does.

use super::pyrandom::PyRandom;
use rayon::prelude::*;

/// Python's `sum(xs) / len(xs)`.
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// lm-eval's `sample_stddev`: √(Σ(x − μ)² / (n − 1)).
pub fn sample_stddev(xs: &[f64]) -> f64 {
    let mu = mean(xs);
    (xs.iter().map(|x| (x - mu) * (x - mu)).sum::<f64>() / (xs.len() as f64 - 1.0)).sqrt()
}

/// lm-eval's `mean_stderr`; `None` for fewer than 2 values (lm-eval's `N/A`).
pub fn mean_stderr(xs: &[f64]) -> Option<f64> {
    (xs.len() > 1).then(|| sample_stddev(xs) / (xs.len() as f64).sqrt())
}

/// `exp(−mean(ll))`.
pub fn perplexity(ll: &[f64]) -> f64 {
    (-mean(ll)).exp()
}

/// `exp(−Σll / Σw)` (lm-eval's `weighted_perplexity`).
pub fn weighted_perplexity(ll: &[f64], w: &[usize]) -> f64 {
    (-ll.iter().sum::<f64>() / w.iter().sum::<usize>() as f64).exp()
}

/// `−Σll / Σbytes / ln 2`.
pub fn bits_per_byte(ll: &[f64], bytes: &[usize]) -> f64 {
    -ll.iter().sum::<f64>() / bytes.iter().sum::<usize>() as f64 / std::f64::consts::LN_2
}

/// lm-eval's `bootstrap_stderr(f, xs, iters)`: `iters / min(1000, iters)` chunks, chunk `i`
/// seeding `random.Random(i)` and computing `f(rnd.choices(xs, k=len(xs)))` `min(1000, iters)`
/// times; the result is the sample standard deviation of all replicates in chunk order. The
/// chunks run in parallel, each with its own generator, so the result does not depend on the
/// thread count. `None` for fewer than 2 values or no resamples.
pub fn bootstrap_stderr(f: fn(&[f64]) -> f64, xs: &[f64], iters: usize) -> Option<f64> {
    if xs.len() < 2 || iters == 0 {
        return None;
    }
    let chunk = iters.min(1000);
    let reps: Vec<Vec<f64>> = (0..iters / chunk)
        .into_par_iter()
        .map(|i| {
            let mut rnd = PyRandom::new(i as i64);
            let mut sample = vec![0.0; xs.len()];
            (0..chunk)
                .map(|_| {
                    for s in sample.iter_mut() {
                        *s = xs[(rnd.random() * xs.len() as f64).floor() as usize];
                    }
                    f(&sample)
                })
                .collect()
        })
        .collect();
    let all: Vec<f64> = reps.into_iter().flatten().collect();
    (all.len() > 1).then(|| sample_stddev(&all))
}

/// The index of the largest value, the lowest index on ties (NumPy's `argmax`; a NaN is
/// never chosen over a number here, where NumPy would pick the first NaN, but scores are
/// checked finite before this).
pub fn argmax(xs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Multiple-choice predictions of one document: `(acc, acc_norm, acc_bytes)` as 0/1, from the
/// choices' log-likelihoods `lls`, their lengths in characters and in UTF-8 bytes, and the
/// gold index. `acc_norm` divides by characters (lm-eval's `len(choice)`, the choice without
/// the target delimiter), `acc_bytes` by bytes; ties go to the lowest index.
pub fn choice_scores(lls: &[f64], choices: &[String], gold: usize) -> (f64, f64, f64) {
    let chars: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(l, c)| l / c.chars().count() as f64)
        .collect();
    let bytes: Vec<f64> = lls
        .iter()
        .zip(choices)
        .map(|(l, c)| l / c.len() as f64)
        .collect();
    let hit = |i: usize| if i == gold { 1.0 } else { 0.0 };
    (hit(argmax(lls)), hit(argmax(&chars)), hit(argmax(&bytes)))
}
