//! Choosing the next token from logits: repetition penalty, then greedy or temperature, top-k
//! and top-p (nucleus) sampling, in the order Hugging Face's `generate` applies them.
//!
//! - Repetition penalty `r` (Keskar et al. 2019, CTRL): each distinct token already in the
//!   sequence (prompt included) has its logit divided by `r` if positive, multiplied if negative.
//! - Temperature 0 is greedy (the first maximal logit, as `torch.argmax`).
//! - Top-k keeps the `k` largest logits; top-p then keeps the smallest prefix of the remaining
//!   tokens, by decreasing probability, whose probability reaches `p` (always at least one).
//! - Sampling draws from the renormalised distribution with the seeded [`Rng`].

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Sampling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingConfig {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: no limit).
    pub top_k: usize,
    /// Nucleus threshold in `(0, 1]` (1: no limit).
    pub top_p: f32,
    /// Repetition penalty `≥ 1` (1: none).
    pub repetition_penalty: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

impl SamplingConfig {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingConfig {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Errors naming the flag whose value is out of range.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| Err(Error::field(field, reason));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                format!("{} must be ≥ 0 (0: greedy)", self.temperature),
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return bad(
                "repetition_penalty",
                format!("{} must be > 0 (1: none)", self.repetition_penalty),
            );
        }
        Ok(())
    }
}

/// A sampler with its random stream and scratch buffers.
#[derive(Clone, Debug)]
pub struct Sampler {
    /// The settings.
    pub cfg: SamplingConfig,
    rng: Rng,
    seen: Vec<u32>,
    idx: Vec<u32>,
    probs: Vec<f64>,
}

/// Index of the first maximal value.
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &v) in x.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best.0 as u32
}

/// Applies the CTRL repetition penalty to `logits` for each distinct id of `history`.
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], r: f32, seen: &mut Vec<u32>) {
    if r == 1.0 {
        return;
    }
    seen.clear();
    seen.extend(
        history
            .iter()
            .copied()
            .filter(|&i| (i as usize) < logits.len()),
    );
    seen.sort_unstable();
    seen.dedup();
    for &i in seen.iter() {
        let l = &mut logits[i as usize];
        *l = if *l > 0.0 { *l / r } else { *l * r };
    }
}

impl Sampler {
    /// A sampler seeded with `seed`.
    pub fn new(cfg: SamplingConfig, seed: u64) -> Self {
        Sampler {
            cfg,
            rng: Rng::new(seed),
            seen: Vec::new(),
            idx: Vec::new(),
            probs: Vec::new(),
        }
    }

    /// Picks the next token; `logits (V)` are modified (penalty), `history` is the sequence so
    /// far (prompt and generated tokens).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let cfg = self.cfg;
        apply_repetition_penalty(logits, history, cfg.repetition_penalty, &mut self.seen);
        if cfg.temperature <= 0.0 {
            return argmax(logits);
        }
        let idx = &mut self.idx;
        idx.clear();
        idx.extend(0..logits.len() as u32);
        let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
        if cfg.top_k > 0 && cfg.top_k < idx.len() {
            idx.select_nth_unstable_by(cfg.top_k - 1, by_logit);
            idx.truncate(cfg.top_k);
        }
        if cfg.top_p < 1.0 {
            idx.sort_unstable_by(by_logit);
        }
        let max = idx
            .iter()
            .map(|&i| logits[i as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let t = f64::from(cfg.temperature);
        self.probs.clear();
        self.probs.extend(
            idx.iter()
                .map(|&i| ((f64::from(logits[i as usize]) - f64::from(max)) / t).exp()),
        );
        let total: f64 = self.probs.iter().sum();
        let mut keep = self.probs.len();
        if cfg.top_p < 1.0 {
            let mut cum = 0.0;
            for (j, &w) in self.probs.iter().enumerate() {
                cum += w / total;
                if cum >= f64::from(cfg.top_p) {
                    keep = j + 1;
                    break;
                }
            }
        }
        let kept: f64 = self.probs[..keep].iter().sum();
        let mut u = self.rng.uniform_f64() * kept;
        for (&w, &id) in self.probs[..keep].iter().zip(idx.iter()) {
            u -= w;
            if u <= 0.0 {
                return id;
            }
        }
        idx[keep - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_top_p_and_penalty() {
        let logits = [1.0f32, 3.0, 2.0, 3.0, -1.0];
        let mut s = Sampler::new(SamplingConfig::greedy(), 0);
        assert_eq!(s.sample(&mut logits.clone(), &[]), 1, "first maximum");
        // Penalty 2 on token 1 (3 → 1.5) makes token 3 the maximum.
        s.cfg.repetition_penalty = 2.0;
        assert_eq!(s.sample(&mut logits.clone(), &[1, 1]), 3);
        let mut l = logits;
        apply_repetition_penalty(&mut l, &[4, 4, 0], 2.0, &mut Vec::new());
        assert_eq!(
            l,
            [0.5, 3.0, 2.0, 3.0, -2.0],
            "applied once per distinct id"
        );
        // top-k 1 is greedy whatever the temperature.
        let mut s = Sampler::new(
            SamplingConfig {
                temperature: 5.0,
                top_k: 1,
                ..Default::default()
            },
            7,
        );
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 9.0, 1.0], &[]), 1);
        }
        // top-p keeps the smallest set reaching p: {2} (p = 0.5 < P(2) ≈ 0.67).
        let mut s = Sampler::new(
            SamplingConfig {
                top_p: 0.5,
                ..Default::default()
            },
            3,
        );
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 0.0, 2.0], &[]), 2);
        }
        // Sampling follows the distribution and the seed.
        let cfg = SamplingConfig::default();
        let draw = |seed| {
            let mut s = Sampler::new(cfg, seed);
            (0..2000)
                .map(|_| s.sample(&mut [0.0, (3.0f32).ln()], &[]))
                .collect::<Vec<_>>()
        };
        let a = draw(1);
        assert_eq!(a, draw(1));
        let ones = a.iter().filter(|&&x| x == 1).count() as f64 / 2000.0;
        assert!((ones - 0.75).abs() < 0.04, "{ones}");
        assert!(SamplingConfig { top_p: 0.0, ..cfg }
            .validate()
            .unwrap_err()
            .to_string()
            .contains("top_p"));
    }
}
