//! Rolling windows over a long document, as lm-eval scores `loglikelihood_rolling` requests
//! (`get_rolling_token_windows` then `make_disjoint_window` in `lm_eval/utils.py`, with
//! `context_len = 1` and `max_seq_len` = the model's context):
//!
//! - the first window predicts the first `min(L, n)` tokens after the prefix (end-of-text) token;
//! - each later window predicts the next `L` tokens (fewer at the end) with the tokens before
//!   them as context, the input being the `L + 1` tokens ending at the last predicted one,
//!   minus that one; so a full window has one token of context, and the last, partial window
//!   re-reads earlier (already predicted) tokens as context.
//!
//! Every token is predicted exactly once.

/// One window: `context` tokens read, `continuation` tokens predicted (after the context).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Tokens read as context only.
    pub context: Vec<u32>,
    /// Tokens predicted.
    pub continuation: Vec<u32>,
}

/// The disjoint rolling windows of `tokens` for a model of context `max_seq_len` (`L >= 1`),
/// `prefix` being the token before the first one. No windows for no tokens.
pub fn rolling_windows(tokens: &[u32], prefix: u32, max_seq_len: usize) -> Vec<Window> {
    let l = max_seq_len.max(1);
    let n = tokens.len();
    let mut out = Vec::new();
    if n == 0 {
        return out;
    }
    // First window: input [prefix] + tokens[..first-1], predicts tokens[..first]; made
    // disjoint, its context is just the prefix.
    let first = l.min(n);
    out.push(Window {
        context: vec![prefix],
        continuation: tokens[..first].to_vec(),
    });
    let mut predicted = first;
    while predicted < n {
        let pred = (n - predicted).min(l);
        let end = predicted + pred;
        // Input tokens[end - L - 1 .. end - 1] (end > L here, so the start is >= 0); the
        // disjoint context is its first L - (pred - 1) tokens.
        let start = end - l - 1;
        let keep = l - (pred - 1);
        out.push(Window {
            context: tokens[start..start + keep].to_vec(),
            continuation: tokens[end - pred..end].to_vec(),
        });
        predicted = end;
    }
    out
}
