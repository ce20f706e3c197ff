//! A simple sampler for quick looks at a model: full recompute over the last `n_ctx` tokens per
//! new token, temperature and top-k. (The generation issue adds the KV cache and full controls.)

use super::gpt::Gpt;
use crate::error::{Error, Result};
use crate::rng::Rng;

/// Sampling settings.
#[derive(Clone, Copy, Debug)]
pub struct SampleConfig {
    /// New tokens to produce.
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (0: all).
    pub top_k: usize,
}

/// Picks a token from `logits` (length V) per `cfg`.
pub fn pick(logits: &[f32], cfg: &SampleConfig, rng: &mut Rng) -> u32 {
    let argmax = || {
        logits
            .iter()
            .enumerate()
            .fold((0usize, f32::NEG_INFINITY), |best, (i, &x)| {
                if x > best.1 {
                    (i, x)
                } else {
                    best
                }
            })
            .0 as u32
    };
    if cfg.temperature <= 0.0 {
        return argmax();
    }
    let mut idx: Vec<usize> = (0..logits.len()).collect();
    if cfg.top_k > 0 && cfg.top_k < logits.len() {
        idx.select_nth_unstable_by(cfg.top_k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        idx.truncate(cfg.top_k);
    }
    let max = idx
        .iter()
        .map(|&i| logits[i])
        .fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> = idx
        .iter()
        .map(|&i| (((logits[i] - max) / cfg.temperature) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform_f64() * total;
    for (k, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return idx[k] as u32;
        }
    }
    idx[idx.len() - 1] as u32
}

/// Continues `prompt` by `cfg.max_new_tokens` tokens, calling `on_token` with each new id.
pub fn sample(
    model: &mut Gpt,
    prompt: &[u32],
    cfg: &SampleConfig,
    rng: &mut Rng,
    mut on_token: impl FnMut(u32),
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Msg(
            "the prompt is empty: give at least one token".into(),
        ));
    }
    let n_ctx = model.config.n_ctx;
    let v = model.config.vocab_size;
    let mut ids = prompt.to_vec();
    let mut fwd_rng = Rng::new(0);
    for _ in 0..cfg.max_new_tokens {
        let start = ids.len().saturating_sub(n_ctx);
        let window = &ids[start..];
        let t = window.len();
        model.forward(window, 1, t, false, &mut fwd_rng)?;
        let next = pick(&model.logits[(t - 1) * v..t * v], cfg, rng);
        on_token(next);
        ids.push(next);
    }
    Ok(ids[prompt.len()..].to_vec())
}
