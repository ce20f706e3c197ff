//! Inverted dropout (Srivastava et al. 2014, as `torch.nn.functional.dropout`).
//!
//! Training: each element is kept with probability `1 - p` and scaled by `1/(1 - p)`, so the
//! expected output equals the input and evaluation needs no rescaling; `mask` records `1` for
//! kept and `0` for dropped elements. Evaluation (or `p = 0`): `out = inp`, `mask` all `1`.
//! Backward: `dinp += dout ⊙ mask / (1 - p)`.
//!
//! Shapes: `out`, `inp`, `mask`, `dout`, `dinp` are flat slices of one length (any activation).
//!
//! Why fixed chunks with their own streams: a training forward draws **one** `u64` seed from the
//! caller's [`Rng`]; the buffer is cut into chunks of [`DROPOUT_CHUNK`] elements, and chunk `k`
//! draws from `Rng::new(seed ^ k·φ)` (φ = 2⁶⁴/golden ratio; `Rng::new` scrambles the seed through
//! splitmix64, so neighbouring chunks get unrelated streams). The mask is therefore a function of
//! the RNG state and the buffer length alone: the same on 1 thread or 64, and the caller's RNG
//! advances by exactly one draw per training call, which keeps resumed runs reproducible.
//! Each `u64` decides two elements (keep iff its 32-bit half is ≥ `p·2³²`).

use super::check_len;
use crate::rng::Rng;
use rayon::prelude::*;

/// Elements per independent random stream (and per rayon task). Part of the mask's definition:
/// changing it changes which elements are dropped for a given seed.
pub const DROPOUT_CHUNK: usize = 1 << 14;

/// Multiplier that spreads chunk indices over the seed space (2⁶⁴ / golden ratio).
const STREAM_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// The random stream of chunk `k` for a call seeded with `seed`.
#[inline]
fn chunk_rng(seed: u64, k: usize) -> Rng {
    Rng::new(seed ^ (k as u64).wrapping_mul(STREAM_MIX))
}

/// `p·2³²`: a 32-bit draw `r` keeps its element iff `r ≥ threshold`, probability `1 - p`.
#[inline]
fn keep_threshold(p: f32) -> u64 {
    (p as f64 * 4_294_967_296.0).round() as u64
}

/// The factor applied to kept elements: `1/(1 - p)`, or 0 when `p = 1` (nothing is kept).
#[inline]
fn keep_scale(p: f32) -> f32 {
    if p < 1.0 {
        1.0 / (1.0 - p)
    } else {
        0.0
    }
}

/// Fills one chunk's mask from its stream, two elements per `u64`.
#[inline]
fn fill_mask(mask: &mut [u8], rng: &mut Rng, threshold: u64) {
    for pair in mask.chunks_mut(2) {
        let r = rng.next_u64();
        pair[0] = ((r & 0xFFFF_FFFF) >= threshold) as u8;
        if let Some(m) = pair.get_mut(1) {
            *m = ((r >> 32) >= threshold) as u8;
        }
    }
}

#[track_caller]
fn check_p(op: &str, p: f32) {
    assert!(
        (0.0..=1.0).contains(&p),
        "{op}: dropout probability p = {p} must be in [0, 1]"
    );
}

/// Inverted dropout: `out = inp ⊙ mask / (1 - p)` in training, `out = inp` otherwise.
///
/// Draws one `u64` from `rng` in training mode with `p > 0` and none otherwise. `mask` is
/// written either way (all `1` when nothing is dropped). Panics unless `0 ≤ p ≤ 1`.
pub fn dropout_forward(
    out: &mut [f32],
    mask: &mut [u8],
    inp: &[f32],
    p: f32,
    train: bool,
    rng: &mut Rng,
) {
    check_len("dropout_forward", "mask", mask.len(), out.len());
    check_len("dropout_forward", "inp", inp.len(), out.len());
    check_p("dropout_forward", p);
    if !train || p == 0.0 {
        out.par_chunks_mut(DROPOUT_CHUNK)
            .zip(inp.par_chunks(DROPOUT_CHUNK))
            .for_each(|(o, x)| o.copy_from_slice(x));
        mask.par_chunks_mut(DROPOUT_CHUNK).for_each(|m| m.fill(1));
        return;
    }
    let seed = rng.next_u64();
    let (threshold, scale) = (keep_threshold(p), keep_scale(p));
    out.par_chunks_mut(DROPOUT_CHUNK)
        .zip(mask.par_chunks_mut(DROPOUT_CHUNK))
        .zip(inp.par_chunks(DROPOUT_CHUNK))
        .enumerate()
        .for_each(|(k, ((o, m), x))| {
            fill_mask(m, &mut chunk_rng(seed, k), threshold);
            for ((o, &m), &x) in o.iter_mut().zip(m.iter()).zip(x) {
                *o = x * (m as f32 * scale);
            }
        });
}

/// Backward of [`dropout_forward`]: `dinp += dout ⊙ mask / (1 - p)`.
///
/// `p` must be the probability of the **training** forward that wrote `mask`; after an
/// evaluation forward (mask all `1`, no scaling) pass `p = 0`.
pub fn dropout_backward(dinp: &mut [f32], dout: &[f32], mask: &[u8], p: f32) {
    check_len("dropout_backward", "dout", dout.len(), dinp.len());
    check_len("dropout_backward", "mask", mask.len(), dinp.len());
    check_p("dropout_backward", p);
    let scale = keep_scale(p);
    dinp.par_chunks_mut(DROPOUT_CHUNK)
        .zip(dout.par_chunks(DROPOUT_CHUNK))
        .zip(mask.par_chunks(DROPOUT_CHUNK))
        .for_each(|((d, g), m)| {
            for ((d, &g), &m) in d.iter_mut().zip(g).zip(m) {
                *d += g * (m as f32 * scale);
            }
        });
}

/// [`dropout_forward`] in place: `x = dropout(x)`, the same mask and RNG use, no input copy.
pub fn dropout_forward_inplace(x: &mut [f32], mask: &mut [u8], p: f32, train: bool, rng: &mut Rng) {
    check_len("dropout_forward_inplace", "mask", mask.len(), x.len());
    check_p("dropout_forward_inplace", p);
    if !train || p == 0.0 {
        mask.par_chunks_mut(DROPOUT_CHUNK).for_each(|m| m.fill(1));
        return;
    }
    let seed = rng.next_u64();
    let (threshold, scale) = (keep_threshold(p), keep_scale(p));
    x.par_chunks_mut(DROPOUT_CHUNK)
        .zip(mask.par_chunks_mut(DROPOUT_CHUNK))
        .enumerate()
        .for_each(|(k, (x, m))| {
            fill_mask(m, &mut chunk_rng(seed, k), threshold);
            for (x, &m) in x.iter_mut().zip(m.iter()) {
                *x *= m as f32 * scale;
            }
        });
}

/// [`dropout_backward`] in place: `grad = grad ⊙ mask / (1 - p)`.
///
/// Unlike the other backwards this **replaces** `grad` rather than accumulating into a separate
/// buffer: it is for modules that pass one gradient buffer through dropout (as the forward
/// `x = dropout(x)` does). `p` as in [`dropout_backward`].
pub fn dropout_backward_inplace(grad: &mut [f32], mask: &[u8], p: f32) {
    check_len("dropout_backward_inplace", "mask", mask.len(), grad.len());
    check_p("dropout_backward_inplace", p);
    let scale = keep_scale(p);
    grad.par_chunks_mut(DROPOUT_CHUNK)
        .zip(mask.par_chunks(DROPOUT_CHUNK))
        .for_each(|(g, m)| {
            for (g, &m) in g.iter_mut().zip(m) {
                *g *= m as f32 * scale;
            }
        });
}

/// Oracle for [`dropout_forward`]: the same streams walked serially, element by element.
#[allow(clippy::needless_range_loop)]
pub fn dropout_forward_naive(
    out: &mut [f32],
    mask: &mut [u8],
    inp: &[f32],
    p: f32,
    train: bool,
    rng: &mut Rng,
) {
    if !train || p == 0.0 {
        out.copy_from_slice(inp);
        mask.fill(1);
        return;
    }
    let seed = rng.next_u64();
    let threshold = keep_threshold(p);
    let scale = if p < 1.0 { 1.0 / (1.0 - p as f64) } else { 0.0 };
    let mut chunk = chunk_rng(seed, 0);
    let mut r = 0u64;
    for i in 0..inp.len() {
        if i.is_multiple_of(DROPOUT_CHUNK) {
            chunk = chunk_rng(seed, i / DROPOUT_CHUNK);
        }
        // Even offsets within a chunk take a fresh u64's low half, odd ones its high half.
        let half = if (i % DROPOUT_CHUNK).is_multiple_of(2) {
            r = chunk.next_u64();
            r & 0xFFFF_FFFF
        } else {
            r >> 32
        };
        let keep = half >= threshold;
        mask[i] = keep as u8;
        out[i] = if keep {
            (inp[i] as f64 * scale) as f32
        } else {
            0.0
        };
    }
}

/// Oracle for [`dropout_backward`].
pub fn dropout_backward_naive(dinp: &mut [f32], dout: &[f32], mask: &[u8], p: f32) {
    let scale = if p < 1.0 { 1.0 / (1.0 - p as f64) } else { 0.0 };
    for ((d, &g), &m) in dinp.iter_mut().zip(dout).zip(mask) {
        if m != 0 {
            *d += (g as f64 * scale) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_naive_and_ignores_thread_count() {
        let mut data_rng = Rng::new(51);
        // An odd small shape and one spanning several chunks with an odd tail.
        for len in [7 * 13, 3 * DROPOUT_CHUNK + 7] {
            let x = data_rng.normal_vec(len, 1.0);
            let g = data_rng.normal_vec(len, 1.0);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let (mut out, mut mask, mut rng) = (vec![0.0; len], vec![0u8; len], Rng::new(99));
                pool.install(|| dropout_forward(&mut out, &mut mask, &x, 0.3, true, &mut rng));
                (out, mask, rng)
            };
            let (o1, m1, r1) = run(1);
            let (o3, m3, r3) = run(3);
            assert_eq!((&o1, &m1, &r1), (&o3, &m3, &r3));

            let (mut o2, mut m2, mut r2) = (vec![0.0; len], vec![0u8; len], Rng::new(99));
            dropout_forward_naive(&mut o2, &mut m2, &x, 0.3, true, &mut r2);
            assert_eq!(m1, m2);
            assert_eq!(r1, r2, "one draw from the caller's rng per training call");
            for (i, (a, b)) in o1.iter().zip(&o2).enumerate() {
                assert!((a - b).abs() <= 1e-6 * b.abs(), "out[{i}]: {a} vs {b}");
            }

            let init = data_rng.normal_vec(len, 1.0);
            let (mut d1, mut d2) = (init.clone(), init);
            dropout_backward(&mut d1, &g, &m1, 0.3);
            dropout_backward_naive(&mut d2, &g, &m1, 0.3);
            for (i, (a, b)) in d1.iter().zip(&d2).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                    "dinp[{i}]: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn inplace_variants_match() {
        let mut data_rng = Rng::new(56);
        let len = 2 * DROPOUT_CHUNK + 5;
        let (x, g) = (data_rng.normal_vec(len, 1.0), data_rng.normal_vec(len, 1.0));
        let (mut out, mut mask, mut rng) = (vec![0.0; len], vec![0u8; len], Rng::new(7));
        dropout_forward(&mut out, &mut mask, &x, 0.2, true, &mut rng);
        let (mut y, mut mask2, mut rng2) = (x.clone(), vec![0u8; len], Rng::new(7));
        dropout_forward_inplace(&mut y, &mut mask2, 0.2, true, &mut rng2);
        assert_eq!((out, mask.clone(), rng), (y, mask2, rng2));
        let mut d = vec![0.0; len];
        dropout_backward(&mut d, &g, &mask, 0.2);
        let mut gi = g.clone();
        dropout_backward_inplace(&mut gi, &mask, 0.2);
        assert_eq!(d, gi);
    }

    #[test]
    fn kept_fraction_and_mean_match_expectation() {
        let n = 1 << 20;
        let x = vec![1.0f32; n];
        let mut rng = Rng::new(52);
        for p in [0.1f32, 0.5, 0.9] {
            let (mut out, mut mask) = (vec![0.0; n], vec![0u8; n]);
            dropout_forward(&mut out, &mut mask, &x, p, true, &mut rng);
            let kept = mask.iter().map(|&m| m as f64).sum::<f64>() / n as f64;
            let q = 1.0 - p as f64;
            // 5 standard deviations of a binomial proportion.
            let sd_kept = (q * (1.0 - q) / n as f64).sqrt();
            assert!(
                (kept - q).abs() < 5.0 * sd_kept,
                "p {p}: kept {kept}, want {q}"
            );
            // Each output is 1/q with probability q: mean 1, variance (1 - q)/q.
            let mean = out.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let sd_mean = ((1.0 - q) / q / n as f64).sqrt();
            assert!((mean - 1.0).abs() < 5.0 * sd_mean, "p {p}: mean {mean}");
            assert!(out.iter().zip(&mask).all(|(&o, &m)| if m == 1 {
                (o as f64 - 1.0 / q).abs() < 1e-6 / q
            } else {
                o == 0.0
            }));
        }
    }

    #[test]
    fn consecutive_calls_draw_fresh_masks() {
        let n = 1000;
        let x = vec![1.0f32; n];
        let mut rng = Rng::new(53);
        let (mut out, mut m1, mut m2) = (vec![0.0; n], vec![0u8; n], vec![0u8; n]);
        dropout_forward(&mut out, &mut m1, &x, 0.5, true, &mut rng);
        dropout_forward(&mut out, &mut m2, &x, 0.5, true, &mut rng);
        assert_ne!(m1, m2);
    }

    #[test]
    fn eval_zero_and_one_probabilities() {
        let mut rng = Rng::new(54);
        let x = rng.normal_vec(91, 1.0);
        let (mut out, mut mask) = (vec![0.0; 91], vec![0u8; 91]);
        for (p, train) in [(0.5, false), (0.0, true)] {
            let before = rng.clone();
            dropout_forward(&mut out, &mut mask, &x, p, train, &mut rng);
            assert_eq!(out, x);
            assert!(mask.iter().all(|&m| m == 1));
            assert_eq!(rng, before, "no draw when nothing is dropped");
        }
        dropout_forward(&mut out, &mut mask, &x, 1.0, true, &mut rng);
        assert!(out.iter().all(|&v| v == 0.0) && mask.iter().all(|&m| m == 0));
        let mut d = vec![0.0; 91];
        dropout_backward(&mut d, &x, &mask, 1.0);
        assert!(d.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn backward_matches_finite_differences() {
        // Given the RNG state the forward is linear in the input; the FD loss replays the same
        // state through the naive forward, so it sees the same mask.
        let mut rng = Rng::new(55);
        let n = 7 * 13;
        let (x, g) = (rng.normal_vec(n, 1.0), rng.normal_vec(n, 1.0));
        let p = 0.25;
        let state = rng.clone();
        let loss = |x: &[f32]| -> f64 {
            let (mut y, mut m) = (vec![0.0; n], vec![0u8; n]);
            dropout_forward_naive(&mut y, &mut m, x, p, true, &mut state.clone());
            y.iter().zip(&g).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let (mut y, mut mask) = (vec![0.0; n], vec![0u8; n]);
        dropout_forward(&mut y, &mut mask, &x, p, true, &mut state.clone());
        let mut d = vec![0.0; n];
        dropout_backward(&mut d, &g, &mask, p);
        let h = 1e-2f32;
        for i in 0..n {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (2.0 * h as f64);
            assert!(
                (fd - d[i] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
                "dinp[{i}]: {fd} vs {}",
                d[i]
            );
        }
    }

    #[test]
    #[should_panic(expected = "dropout_forward: dropout probability p = 1.5 must be in [0, 1]")]
    fn bad_probability_panics() {
        dropout_forward(&mut [0.0], &mut [0], &[0.0], 1.5, true, &mut Rng::new(1));
    }
}
