//! Scoring text: the log-probability of every token given the ones before it, with a sliding
//! window for texts longer than the context (the method of Hugging Face's perplexity guide).
//!
//! Windows of `n_ctx` tokens start every `stride` tokens; each window scores only the tokens
//! that no earlier window scored, so every token is scored once, with at least
//! `n_ctx - stride` tokens of context once the text is longer than the context. The first token
//! of the sequence has no logprob (nothing precedes it); prepend `<|endoftext|>` (`--bos`) to
//! score it too. [`score_text`] adds the encoding and the totals (NLL, perplexity, bits per
//! byte) that `gpt score` prints.

use crate::error::{Error, Result};
use crate::model::inference::InferenceModel;
use crate::nn::kv_cache::Scratch;
use crate::tokenizer::{AnyTokenizer, ENDOFTEXT};

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
    let mut cache = model.new_cache_for(1, ids.len());
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
                if !lp.is_finite() {
                    // A NaN or infinite total must never be printed as a score.
                    let why = if row.iter().all(|x| x.is_finite()) {
                        "the model gives it probability 0"
                    } else {
                        "the model's logits there are not finite (its weights or activations \
                         overflow; was it loaded with --allow-nonfinite?)"
                    };
                    return Err(Error::NonFinite {
                        what: format!("the log-probability of token {j} (id {})", ids[j]),
                        value: lp as f32,
                        hint: format!("; {why}"),
                    });
                }
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

/// One scored token of a text.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoredToken {
    /// The id.
    pub id: u32,
    /// Its text (lossy UTF-8 of its bytes).
    pub text: String,
    /// `log p(token | everything before it)`; `None` for the first token of the text.
    pub logprob: Option<f32>,
}

/// A text's score: every token and the totals over the tokens that have a logprob.
#[derive(Clone, Debug)]
pub struct TextScore {
    /// The tokens of the text (not the `<|endoftext|>` prepended by `bos`).
    pub tokens: Vec<ScoredToken>,
    /// Total negative log-likelihood in nats.
    pub nll: f64,
    /// Perplexity `exp(nll / scored)`.
    pub ppl: f64,
    /// Bits per byte: `nll / ln 2 / scored bytes`.
    pub bpb: f64,
    /// Tokens with a logprob.
    pub scored_tokens: usize,
    /// UTF-8 bytes of those tokens.
    pub scored_bytes: usize,
    /// The window step used.
    pub stride: usize,
}

/// Scores `text`: encodes it (special-token strings become their ids), with `bos` prepends
/// `<|endoftext|>` as context so the first token is scored too, and runs [`token_logprobs`]
/// with windows every `stride` tokens (default `n_ctx / 2`). An empty text, or a single token
/// without `bos`, is an error saying what to do.
pub fn score_text(
    model: &InferenceModel,
    tok: &AnyTokenizer,
    text: &str,
    stride: Option<usize>,
    bos: bool,
) -> Result<TextScore> {
    if text.is_empty() {
        return Err(Error::field("text", "the text to score is empty"));
    }
    let mut ids = tok
        .encode(text, true)
        .map_err(|e| Error::field("text", e.to_string()))?;
    let lead = if bos {
        let eot = super::text::eos_id(tok).ok_or_else(|| {
            Error::field("--bos", format!("the tokenizer has no `{ENDOFTEXT}` token"))
        })?;
        ids.insert(0, eot);
        1
    } else {
        0
    };
    if ids.len() < 2 {
        return Err(Error::field(
            "text",
            "nothing to score: the text is a single token and the first token has no \
             logprob; pass --bos to score it after <|endoftext|>",
        ));
    }
    let stride = stride.unwrap_or((model.config.n_ctx / 2).max(1));
    let lps = token_logprobs(model, &ids, stride)?;
    let (mut nll, mut n, mut bytes) = (0.0f64, 0usize, 0usize);
    let mut tokens = Vec::new();
    for (&id, lp) in ids.iter().zip(&lps).skip(lead) {
        let tb = tok.token_bytes(id).map_err(|_| Error::TokenOutOfRange {
            id: id as usize,
            vocab_size: tok.vocab_size(),
        })?;
        if let Some(lp) = lp {
            nll -= f64::from(*lp);
            n += 1;
            bytes += tb.len();
        }
        tokens.push(ScoredToken {
            id,
            text: String::from_utf8_lossy(&tb).into_owned(),
            logprob: *lp,
        });
    }
    Ok(TextScore {
        tokens,
        nll,
        ppl: (nll / n as f64).exp(),
        bpb: nll / std::f64::consts::LN_2 / bytes.max(1) as f64,
        scored_tokens: n,
        scored_bytes: bytes,
        stride,
    })
}
