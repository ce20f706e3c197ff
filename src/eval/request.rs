//! Request building, as lm-eval 0.4 builds and encodes requests:
//!
//! - context = description + Σ(example text + target delimiter + example target + few-shot
//!   delimiter) + the document's text ([`fewshot_context`], examples from [`super::fewshot`]);
//! - continuation = the target (`loglikelihood`), or target delimiter + choice for each choice
//!   (`multiple_choice`);
//! - encoding ([`encode_pair`], lm-eval's `_encode_pair`): trailing whitespace of the context
//!   moves to the front of the continuation, the continuation's ids are
//!   `enc(context + continuation)` minus the first `len(enc(context))` ids; an empty context
//!   becomes the end-of-text token and the continuation is encoded alone;
//! - inputs longer than the model's context are left-truncated to its last `L + 1` tokens
//!   ([`truncate`]; the last token is never read, so `L` are).

use super::wikitext::py_space;
use crate::error::{Error, Result};
use crate::tokenizer::AnyTokenizer;

/// A request's ids: `context` (read) then `continuation` (scored).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// Context ids (never empty once built).
    pub context: Vec<u32>,
    /// Continuation ids (the tokens scored).
    pub continuation: Vec<u32>,
}

fn encode(tok: &AnyTokenizer, text: &str) -> Result<Vec<u32>> {
    // Special-token strings become their ids, as a Hugging Face tokenizer does.
    tok.encode(text, true)
        .map_err(|e| Error::field("request text", e.to_string()))
}

/// The context and continuation ids of `(context, continuation)` (lm-eval's `_encode_pair`,
/// and the end-of-text rule for an empty context).
pub fn encode_pair(
    tok: &AnyTokenizer,
    context: &str,
    continuation: &str,
    eot: u32,
) -> Result<TokenRequest> {
    if context.is_empty() {
        return Ok(TokenRequest {
            context: vec![eot],
            continuation: encode(tok, continuation)?,
        });
    }
    let (ctx, cont) = move_trailing_space(context, continuation);
    let whole = encode(tok, &format!("{ctx}{cont}"))?;
    let ctx_ids = encode(tok, &ctx)?;
    let n = ctx_ids.len().min(whole.len());
    Ok(TokenRequest {
        context: ctx_ids,
        continuation: whole[n..].to_vec(),
    })
}

/// Moves the context's trailing whitespace (Python's `rstrip()`) to the continuation.
pub fn move_trailing_space(context: &str, continuation: &str) -> (String, String) {
    let kept = context.trim_end_matches(py_space);
    let moved = &context[kept.len()..];
    (kept.to_string(), format!("{moved}{continuation}"))
}

/// Left-truncates a request to the last `max_len + 1` tokens of context + continuation
/// (lm-eval's `(context + continuation)[-(L + 1):]`), returning whether anything was cut. A
/// continuation longer than `max_len` cannot be scored (lm-eval asserts against it) and is an
/// error naming `what`.
pub fn truncate(req: &mut TokenRequest, max_len: usize, what: &str) -> Result<bool> {
    let cont = req.continuation.len();
    if cont > max_len {
        return Err(Error::limit(
            format!("the continuation of {what} (tokens)"),
            cont as u64,
            max_len as u64,
            "the model's context must hold the whole target (lm-eval refuses it too); use a \
             model with a longer context, or leave the task out",
        ));
    }
    let total = req.context.len() + cont;
    if total <= max_len + 1 {
        return Ok(false);
    }
    let drop = total - (max_len + 1);
    req.context.drain(..drop);
    Ok(true)
}

/// lm-eval's few-shot context: `description + examples + text`, each example being
/// `text + target_delimiter + target + fewshot_delimiter` (an example whose target is empty
/// gives only its text, as lm-eval).
pub fn fewshot_context(
    description: &str,
    examples: &[(String, String)],
    text: &str,
    target_delimiter: &str,
    fewshot_delimiter: &str,
) -> String {
    let mut s = description.to_string();
    for (t, target) in examples {
        s.push_str(t);
        if !target.is_empty() {
            s.push_str(target_delimiter);
            s.push_str(target);
            s.push_str(fewshot_delimiter);
        }
    }
    s.push_str(text);
    s
}
