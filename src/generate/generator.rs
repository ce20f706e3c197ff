//! The generation loop: prefill every prompt in one pass, then decode all rows together one
//! token per step over the KV cache, sampling each row with its own [`Sampler`].
//!
//! Rows of a batch are independent (per-row lengths, see [`crate::nn::kv_cache`]): row `b` gives the
//! tokens a single generation of its prompt gives with seed `seed + b`. A row stops at
//! `max_new_tokens`, at its end-of-text token when `stop_at_eos` is set, or when the `on_token`
//! callback says so (stop strings live there, since they need the tokenizer).
//!
//! Context: prompts must fit in `n_ctx` (the caller truncates or errors). When a row's cache is
//! full and it must go on, the row is re-prefilled with its last `n_ctx / 2` tokens (a sliding
//! window that costs one prefill every `n_ctx / 2` tokens, instead of a full recompute per
//! token as the naive sampler did).

use super::sampler::{Sampler, SamplingConfig};
use crate::error::{Error, Result};
use crate::model::inference::InferenceModel;
use crate::nn::kv_cache::Scratch;
use std::time::Instant;

/// Settings of one generation call.
#[derive(Clone, Debug)]
pub struct GenerateConfig {
    /// New tokens per row, at most.
    pub max_new_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingConfig,
    /// Seed of row 0 (row `b` uses `seed + b`).
    pub seed: u64,
    /// Stop a row when it produces this id (e.g. `<|endoftext|>`); `None`: never.
    pub eos: Option<u32>,
}

/// Why a row stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// The end-of-text id was produced.
    Eos,
    /// The callback asked to stop (a stop string).
    Stop,
}

/// One row's result.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The new tokens (including the end-of-text id or the token completing a stop string).
    pub ids: Vec<u32>,
    /// Why the row stopped.
    pub finish: FinishReason,
    /// Times the row's context was full and the window slid (see the module documentation):
    /// after the first, the model no longer sees the start of the prompt.
    pub context_slides: usize,
}

/// Token counts and wall time of the two phases.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Prompt tokens run in the prefill.
    pub prefill_tokens: usize,
    /// Seconds of the prefill (including sampling the first tokens).
    pub prefill_secs: f64,
    /// Tokens produced by decode steps (all rows; the first token of each row comes from the
    /// prefill and is not counted).
    pub decode_tokens: usize,
    /// Seconds of the decode steps.
    pub decode_secs: f64,
}

impl Timing {
    /// Prefill throughput.
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    /// Decode throughput (all rows together).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_secs.max(1e-9)
    }
}

/// Checks prompts against the model: non-empty, within the context, ids in the vocabulary.
pub fn check_prompts(model: &InferenceModel, prompts: &[Vec<u32>]) -> Result<()> {
    let (n_ctx, v) = (model.config.n_ctx, model.config.vocab_size);
    if prompts.is_empty() {
        return Err(Error::usage("generate", "no prompt given"));
    }
    for (b, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::field(
                "prompt",
                format!("prompt {b} is empty: give at least one token (e.g. `<|endoftext|>`)"),
            ));
        }
        if p.len() > n_ctx {
            return Err(Error::field(
                "prompt",
                format!(
                    "prompt {b} is {} tokens, over the context n_ctx = {n_ctx}; shorten it or \
                     pass --truncate to keep its last {n_ctx} tokens",
                    p.len()
                ),
            ));
        }
        if let Some(&id) = p.iter().find(|&&id| id as usize >= v) {
            return Err(Error::TokenOutOfRange {
                id: id as usize,
                vocab_size: v,
            });
        }
    }
    Ok(())
}

/// Generates up to `cfg.max_new_tokens` tokens after each prompt. `on_token(row, id)` is called
/// for every new token as soon as it is sampled; returning `Ok(true)` stops that row.
pub fn generate(
    model: &InferenceModel,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    mut on_token: impl FnMut(usize, u32) -> Result<bool>,
) -> Result<(Vec<Generation>, Timing)> {
    generate_observed(model, prompts, cfg, false, |b, id, _| on_token(b, id))
}

/// [`generate`] whose callback also receives the model's raw logits `(V)` for the position the
/// token was sampled from (before penalties and temperature), for log-probabilities and for
/// tests that compare them with a full forward. `logits` is empty unless `with_logits`.
pub fn generate_observed(
    model: &InferenceModel,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    with_logits: bool,
    mut on_token: impl FnMut(usize, u32, &[f32]) -> Result<bool>,
) -> Result<(Vec<Generation>, Timing)> {
    check_prompts(model, prompts)?;
    cfg.sampling.validate()?;
    let bsz = prompts.len();
    let (n_ctx, v) = (model.config.n_ctx, model.config.vocab_size);
    let mut timing = Timing::default();
    let mut out: Vec<Generation> = (0..bsz)
        .map(|_| Generation {
            ids: Vec::new(),
            finish: FinishReason::Length,
            context_slides: 0,
        })
        .collect();
    if cfg.max_new_tokens == 0 {
        return Ok((out, timing));
    }
    let mut samplers: Vec<Sampler> = (0..bsz)
        .map(|b| Sampler::new(cfg.sampling, cfg.seed.wrapping_add(b as u64)))
        .collect();
    let mut seqs: Vec<Vec<u32>> = prompts.to_vec();
    let mut active = vec![true; bsz];
    // A row's cache holds at most its prompt and all but the last new token, unless it
    // slides (only when that exceeds n_ctx, and then the cache has all n_ctx positions).
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let mut cache = model.new_cache_for(bsz, longest.saturating_add(cfg.max_new_tokens));
    let (mut s, mut hidden, mut logits) = (Scratch::default(), Vec::new(), Vec::new());
    let mut ids: Vec<u32> = prompts.concat();
    let mut new: Vec<usize> = prompts.iter().map(Vec::len).collect();
    let mut first = true;
    let mut raw: Vec<f32> = Vec::new();
    loop {
        let t0 = Instant::now();
        model.step(&ids, &new, &mut cache, &mut s, &mut hidden, &mut logits)?;
        let mut r = 0;
        let mut produced = 0;
        for b in 0..bsz {
            if new[b] == 0 {
                continue;
            }
            let row = &mut logits[r * v..(r + 1) * v];
            r += 1;
            if with_logits {
                raw.clear();
                raw.extend_from_slice(row);
            }
            let id = samplers[b].sample(row, &seqs[b]);
            seqs[b].push(id);
            out[b].ids.push(id);
            produced += 1;
            if on_token(b, id, &raw)? {
                out[b].finish = FinishReason::Stop;
                active[b] = false;
            } else if cfg.eos == Some(id) {
                out[b].finish = FinishReason::Eos;
                active[b] = false;
            } else if out[b].ids.len() >= cfg.max_new_tokens {
                active[b] = false;
            }
        }
        let dt = t0.elapsed().as_secs_f64();
        if first {
            timing.prefill_tokens = ids.len();
            timing.prefill_secs = dt;
            first = false;
        } else {
            timing.decode_tokens += produced;
            timing.decode_secs += dt;
        }
        if !active.iter().any(|&a| a) {
            break;
        }
        ids.clear();
        for b in 0..bsz {
            new[b] = 0;
            if !active[b] {
                continue;
            }
            if cache.len(b) + 1 > n_ctx {
                // Slide: re-prefill the row with its last n_ctx / 2 tokens.
                cache.clear_row(b);
                out[b].context_slides += 1;
                let keep = (n_ctx / 2).max(1);
                ids.extend_from_slice(&seqs[b][seqs[b].len() - keep..]);
                new[b] = keep;
            } else {
                ids.push(seqs[b][seqs[b].len() - 1]);
                new[b] = 1;
            }
        }
    }
    Ok((out, timing))
}
