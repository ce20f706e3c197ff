//! Scoring text: the log-probability of every token given the ones before it, with a sliding
//! window for texts longer than the context (the method of Hugging Face's perplexity guide).
//!
//! Windows of `n_ctx` tokens start every `stride` tokens; each window scores only the tokens
//! that no earlier window scored, so every token is scored once, with at least
//! `n_ctx - stride` tokens of context once the text is longer than the context. The first token
//! of the sequence has no logprob (nothing precedes it); prepend `<|endoftext|>` (`--bos`) to
//! score it too.

use super::kv_cache::Scratch;
use super::model::InferenceModel;
use crate::error::{Error, Result};

/// Rows of logits computed at once (bounds memory to `rows × V` floats).
const LOGIT_ROWS: usize = 64;

/// `log p(ids[j] | ids[..j])` for every `j` (`None` for `j = 0`), windows every `stride` tokens.
pub fn token_logprobs(
    model: &InferenceModel,
    ids: &[u32],
    stride: usize,
) -> Result<Vec<Option<f32>>> {
    let (n_ctx, c, v) = (
        model.config.n_ctx,
        model.config.n_embd,
        model.config.vocab_size,
    );
    if stride == 0 || stride > n_ctx {
        return Err(Error::field(
            "stride",
            format!("{stride} must be in 1..={n_ctx} (the context n_ctx)"),
        ));
    }
    let mut out = vec![None; ids.len()];
    let mut cache = model.new_cache(1);
    let (mut s, mut hidden, mut logits) = (Scratch::default(), Vec::new(), Vec::new());
    let mut prev_end = 0;
    let mut begin = 0;
    while begin < ids.len() {
        let end = (begin + n_ctx).min(ids.len());
        let window = &ids[begin..end];
        cache.clear();
        model.forward_hidden(window, &[window.len()], &mut cache, &mut s, &mut hidden)?;
        // Score positions j in max(prev_end, begin + 1)..end from hidden row j - begin - 1.
        let first = prev_end.max(begin + 1);
        let mut j0 = first;
        while j0 < end {
            let j1 = (j0 + LOGIT_ROWS).min(end);
            let rows = &hidden[(j0 - begin - 1) * c..(j1 - begin - 1) * c];
            model.logits(&mut logits, rows);
            for (k, row) in logits.chunks_exact(v).enumerate() {
                let j = j0 + k;
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
                let lp = f64::from(row[ids[j] as usize] - max) - sum.ln();
                out[j] = Some(lp as f32);
            }
            j0 = j1;
        }
        prev_end = end;
        if end == ids.len() {
            break;
        }
        begin += stride;
    }
    Ok(out)
}
