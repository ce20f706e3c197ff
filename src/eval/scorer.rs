//! Scoring `(context, continuation)` requests: the summed log-probability of the continuation
//! tokens and whether each was the greedy (argmax) token — lm-eval's `_loglikelihood_tokens`.
//!
//! How it is made fast without changing the numbers (beyond f32 rounding order):
//! - requests are grouped: consecutive requests with the same context ids (the choices of one
//!   multiple-choice document) form one group whose context is run **once**; the KV cache row is
//!   then copied to one row per continuation ([`KvCache::reorder`]) and only the continuations
//!   are run. The positions and the attended keys are those of the full sequence, so each
//!   continuation's logits are the full forward's;
//! - groups are sorted by length, longest first (lm-eval's order), and run `batch` at a time
//!   through the packed per-row-length path of [`InferenceModel::forward_hidden`] (no padding);
//! - the cache is sized to the batch's longest sequence, not the model's context.
//!
//! [`score_naive`] is the oracle: one plain forward of `context + continuation[..-1]` per
//! request, as lm-eval does.

use super::request::TokenRequest;
use crate::error::{Error, Result};
use crate::model::inference::InferenceModel;
use crate::nn::kv_cache::{KvCache, Scratch};

/// Rows of logits computed at once (bounds memory to `rows × V` floats).
const LOGIT_ROWS: usize = 64;

/// Tokens run per forward at most (bounds activations and the KV cache); a single group may
/// exceed it.
pub const TOKEN_BUDGET: usize = 8_192;

/// Rows of `n_ctx` positions the KV cache of one forward may hold at most: the token budget,
/// or one full-context group of up to 5 choices (ARC's most), whichever is larger. For the
/// memory estimate of `gpt eval`.
pub fn max_cache_rows(n_ctx: usize) -> usize {
    TOKEN_BUDGET.div_ceil(n_ctx.max(1)).max(5)
}

/// The score of one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogLik {
    /// Σ log p(continuation token | everything before it), in nats.
    pub ll: f64,
    /// Whether every continuation token was the argmax of its logits.
    pub greedy: bool,
}

/// Adds the log-probabilities of `targets` under the logits of `hidden` rows `(T, C)` (row `t`
/// predicts `targets[t]`) to `acc`.
fn accumulate(
    model: &InferenceModel,
    hidden: &[f32],
    targets: &[u32],
    logits: &mut Vec<f32>,
    acc: &mut LogLik,
) -> Result<()> {
    let (c, v) = (model.config.n_embd, model.config.vocab_size);
    for (h, t) in hidden
        .chunks(LOGIT_ROWS * c)
        .zip(targets.chunks(LOGIT_ROWS))
    {
        model.logits(logits, h);
        for (row, &tok) in logits.chunks_exact(v).zip(t) {
            let (mut max, mut arg) = (f32::NEG_INFINITY, 0);
            for (i, &x) in row.iter().enumerate() {
                if x > max {
                    max = x;
                    arg = i;
                }
            }
            let sum: f64 = row.iter().map(|&x| f64::from(x - max).exp()).sum();
            let lp = f64::from(row[tok as usize] - max) - sum.ln();
            if !lp.is_finite() {
                return Err(Error::NonFinite {
                    what: format!("the log-probability of continuation token {tok}"),
                    value: lp as f32,
                    hint: "; the model's logits are not finite (was it loaded with \
                           --allow-nonfinite?)"
                        .into(),
                });
            }
            acc.ll += lp;
            acc.greedy &= arg == tok as usize;
        }
    }
    Ok(())
}

fn check(model: &InferenceModel, r: &TokenRequest) -> Result<()> {
    let n_ctx = model.config.n_ctx;
    if r.context.is_empty() || r.continuation.is_empty() {
        return Err(Error::usage(
            "eval::scorer",
            "a request needs at least one context and one continuation token",
        ));
    }
    if r.context.len() + r.continuation.len() - 1 > n_ctx {
        return Err(Error::usage(
            "eval::scorer",
            format!(
                "a request of {} tokens is longer than the context {n_ctx} + 1; truncate it first",
                r.context.len() + r.continuation.len()
            ),
        ));
    }
    if let Some(&bad) = r
        .context
        .iter()
        .chain(&r.continuation)
        .find(|&&t| t as usize >= model.config.vocab_size)
    {
        return Err(Error::TokenOutOfRange {
            id: bad as usize,
            vocab_size: model.config.vocab_size,
        });
    }
    Ok(())
}

/// One request, the plain way: a forward of `context + continuation[..-1]` from an empty
/// cache, scoring the last `len(continuation)` positions.
pub fn score_naive(model: &InferenceModel, r: &TokenRequest) -> Result<LogLik> {
    check(model, r)?;
    let mut ids = r.context.clone();
    ids.extend_from_slice(&r.continuation[..r.continuation.len() - 1]);
    let c = model.config.n_embd;
    let mut cache = KvCache::new(model.config.n_layer, 1, ids.len(), c);
    let (mut s, mut hidden, mut logits) = (Scratch::default(), Vec::new(), Vec::new());
    model.forward_hidden(&ids, &[ids.len()], &mut cache, &mut s, &mut hidden)?;
    let first = r.context.len() - 1;
    let mut acc = LogLik {
        ll: 0.0,
        greedy: true,
    };
    accumulate(
        model,
        &hidden[first * c..],
        &r.continuation,
        &mut logits,
        &mut acc,
    )?;
    Ok(acc)
}

/// A context shared by consecutive requests `start..start + n`.
struct Group {
    start: usize,
    n: usize,
    /// Context length + longest continuation − 1: the cache positions it needs.
    len: usize,
}

/// Scores every request (see the module doc); `progress(k)` is called as `k` more requests
/// finish. Results are in request order.
pub fn score(
    model: &InferenceModel,
    reqs: &[TokenRequest],
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<LogLik>> {
    for r in reqs {
        check(model, r)?;
    }
    let mut groups: Vec<Group> = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let len = r.context.len() + r.continuation.len() - 1;
        match groups.last_mut() {
            Some(g) if reqs[g.start].context == r.context => {
                g.n += 1;
                g.len = g.len.max(len);
            }
            _ => groups.push(Group {
                start: i,
                n: 1,
                len,
            }),
        }
    }
    // Longest first; ties keep request order, so the result never depends on the sort.
    groups.sort_by(|a, b| b.len.cmp(&a.len).then(a.start.cmp(&b.start)));
    let mut out = vec![
        LogLik {
            ll: 0.0,
            greedy: true
        };
        reqs.len()
    ];
    let (c, n_layer) = (model.config.n_embd, model.config.n_layer);
    let (mut s, mut hidden, mut hidden2, mut logits) =
        (Scratch::default(), Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while i < groups.len() {
        // Take groups while the batch and the token budget allow (at least one).
        let mut j = i + 1;
        let mut tokens = groups[i].len * groups[i].n;
        while j < groups.len() && j - i < batch.max(1) {
            let t = groups[j].len * groups[j].n;
            if tokens + t > TOKEN_BUDGET {
                break;
            }
            tokens += t;
            j += 1;
        }
        let batch_groups = &groups[i..j];
        let cap = batch_groups.iter().map(|g| g.len).max().unwrap_or(1);
        let mut cache = KvCache::new(n_layer, batch_groups.len(), cap, c);
        // 1. Every context once.
        let mut ids = Vec::new();
        let mut new = Vec::new();
        for g in batch_groups {
            ids.extend_from_slice(&reqs[g.start].context);
            new.push(reqs[g.start].context.len());
        }
        model.forward_hidden(&ids, &new, &mut cache, &mut s, &mut hidden)?;
        let mut last_rows = Vec::with_capacity(batch_groups.len());
        let mut off = 0;
        for &n in &new {
            off += n;
            last_rows.push(off - 1);
        }
        // 2. One cache row per continuation, then every continuation but its last token.
        let mut src = Vec::new();
        let mut ids2 = Vec::new();
        let mut new2 = Vec::new();
        for (gi, g) in batch_groups.iter().enumerate() {
            for r in &reqs[g.start..g.start + g.n] {
                src.push(gi);
                ids2.extend_from_slice(&r.continuation[..r.continuation.len() - 1]);
                new2.push(r.continuation.len() - 1);
            }
        }
        cache.reorder(&src)?;
        if !ids2.is_empty() {
            model.forward_hidden(&ids2, &new2, &mut cache, &mut s, &mut hidden2)?;
        }
        // 3. Score: the context's last row predicts each continuation's first token, the
        //    continuation's own rows the rest.
        let mut row = 0;
        let mut rows = Vec::new();
        for (gi, g) in batch_groups.iter().enumerate() {
            let last = last_rows[gi];
            for k in 0..g.n {
                let r = &reqs[g.start + k];
                let m = r.continuation.len() - 1;
                rows.clear();
                rows.extend_from_slice(&hidden[last * c..(last + 1) * c]);
                rows.extend_from_slice(&hidden2[row * c..(row + m) * c]);
                row += m;
                accumulate(
                    model,
                    &rows,
                    &r.continuation,
                    &mut logits,
                    &mut out[g.start + k],
                )?;
            }
        }
        progress(batch_groups.iter().map(|g| g.n).sum());
        i = j;
    }
    Ok(out)
}
