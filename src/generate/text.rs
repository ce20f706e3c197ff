//! Text in, text out: prompts encoded and fitted to the context (the one place where an empty or
//! over-long prompt is handled), generated, and handed back as UTF-8-safe pieces as they are
//! produced, with stop strings and the end-of-text token applied.
//!
//! `gpt generate` (and its `gpt sample` alias) is this module plus printing.

use super::generator::{check_prompts, generate, FinishReason, GenerateConfig, Timing};
use super::sampler::SamplingConfig;
use super::stream::TextStream;
use crate::error::{Error, Result};
use crate::model::inference::InferenceModel;
use crate::tokenizer::{AnyTokenizer, ENDOFTEXT};

/// Prompts as token ids, fitted to the context.
#[derive(Clone, Debug, Default)]
pub struct Prompts {
    /// One id sequence per prompt, each at most `n_ctx` long when truncation was asked for.
    pub ids: Vec<Vec<u32>>,
    /// One line per prompt that was cut to its last `n_ctx` tokens (for the user).
    pub warnings: Vec<String>,
}

/// Encodes `texts` (special-token strings such as `<|endoftext|>` become their ids). With
/// `truncate`, a prompt longer than `n_ctx` keeps its last `n_ctx` tokens and gets a warning;
/// without it, it is an error naming the prompt, its length and the context. An empty prompt is
/// an error (a prompt needs at least one token).
pub fn encode_prompts(
    tok: &AnyTokenizer,
    texts: &[String],
    n_ctx: usize,
    truncate: bool,
) -> Result<Prompts> {
    let mut out = Prompts::default();
    for (i, text) in texts.iter().enumerate() {
        if text.is_empty() {
            return Err(Error::field(
                "prompt",
                format!(
                    "prompt {i} is empty: give some text (or `{ENDOFTEXT}` to start from nothing)"
                ),
            ));
        }
        let mut ids = tok
            .encode(text, true)
            .map_err(|e| Error::field("prompt", format!("prompt {i}: {e}")))?;
        if ids.len() > n_ctx && truncate {
            out.warnings.push(format!(
                "prompt {i} is {} tokens; keeping its last {n_ctx} (the context)",
                ids.len()
            ));
            ids.drain(..ids.len() - n_ctx);
        }
        out.ids.push(ids);
    }
    Ok(out)
}

/// What happens to prompts that will outgrow the context: `None` when every prompt plus
/// `max_new_tokens` fits in `n_ctx`, else one line for the user. Generation does not stop at
/// the context: when a row's context is full, its window slides (the row is re-read from its
/// last `n_ctx / 2` tokens, see [`super::generator`]), so the text goes on but the model no
/// longer sees what slid out; the result reports how often (`context_slides`).
pub fn context_note(prompts: &[Vec<u32>], max_new_tokens: usize, n_ctx: usize) -> Option<String> {
    let over: Vec<usize> = (0..prompts.len())
        .filter(|&b| prompts[b].len().saturating_add(max_new_tokens) > n_ctx)
        .collect();
    let &first = over.first()?;
    let len = prompts[first].len();
    let which = match over.len() {
        1 => format!("prompt {first} ({len} tokens)"),
        k if k == prompts.len() => format!("every prompt (prompt {first}: {len} tokens)"),
        k => format!("{k} prompts (prompt {first}: {len} tokens)"),
    };
    Some(format!(
        "{which} + --max-new-tokens {max_new_tokens} is more than the context n_ctx = {n_ctx}: \
         when the context is full the window slides (generation goes on from the last {} \
         tokens, so the model no longer sees the start); lower --max-new-tokens to stay within \
         the context",
        (n_ctx / 2).max(1),
    ))
}

/// Settings of a text generation.
#[derive(Clone, Debug)]
pub struct TextConfig {
    /// New tokens per prompt, at most.
    pub max_new_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplingConfig,
    /// Seed of prompt 0 (prompt `b` uses `seed + b`).
    pub seed: u64,
    /// Stop a row when this text appears (it is not part of the output).
    pub stop: Vec<String>,
    /// Stop a row at `<|endoftext|>` (BPE tokenizers that have it), which is not printed.
    pub stop_at_eos: bool,
}

/// What one prompt produced.
#[derive(Clone, Debug)]
pub struct TextGeneration {
    /// The new ids (the end-of-text id included when it ended the row).
    pub ids: Vec<u32>,
    /// The new text (without a stop string or the end-of-text token).
    pub text: String,
    /// Why the row stopped.
    pub finish: FinishReason,
    /// Times the context was full and the window slid ([`context_note`] says what that means).
    pub context_slides: usize,
}

/// The end-of-text id of `tok`, if it has one.
pub fn eos_id(tok: &AnyTokenizer) -> Option<u32> {
    match tok {
        AnyTokenizer::Bpe(t) => t.special_id(ENDOFTEXT),
        AnyTokenizer::Char(_) => None,
    }
}

/// Generates after every prompt (ids from [`encode_prompts`]); `on_text(row, piece)` receives
/// each row's text as soon as it is safe to show (complete UTF-8, not part of a stop string),
/// the last piece when the row's generation ends.
pub fn generate_text(
    model: &InferenceModel,
    tok: &AnyTokenizer,
    prompts: &[Vec<u32>],
    cfg: &TextConfig,
    mut on_text: impl FnMut(usize, &str),
) -> Result<(Vec<TextGeneration>, Timing)> {
    check_prompts(model, prompts)?;
    let eos = if cfg.stop_at_eos { eos_id(tok) } else { None };
    let gen_cfg = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        sampling: cfg.sampling,
        seed: cfg.seed,
        eos,
    };
    let mut streams: Vec<TextStream> = prompts
        .iter()
        .map(|_| TextStream::new(tok, &cfg.stop))
        .collect();
    let (gens, timing) = generate(model, prompts, &gen_cfg, |b, id| {
        if eos == Some(id) {
            return Ok(false);
        }
        let piece = streams[b].push(id)?;
        if !piece.is_empty() {
            on_text(b, &piece);
        }
        Ok(streams[b].stopped())
    })?;
    let mut out = Vec::with_capacity(gens.len());
    for (b, (g, mut s)) in gens.into_iter().zip(streams).enumerate() {
        let rest = s.finish();
        if !rest.is_empty() {
            on_text(b, &rest);
        }
        out.push(TextGeneration {
            ids: g.ids,
            text: s.text().to_string(),
            finish: g.finish,
            context_slides: g.context_slides,
        });
    }
    Ok((out, timing))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt_tokenizer::Tokenizer;

    #[test]
    fn prompts_are_truncated_with_a_warning_or_refused_when_empty() {
        let tok = AnyTokenizer::Bpe(Box::new(Tokenizer::gpt2_shared().clone()));
        let long = "word ".repeat(20);
        let p = encode_prompts(&tok, &[long.clone(), "hi".into()], 8, true).unwrap();
        assert_eq!(p.ids[0].len(), 8);
        assert_eq!(p.ids[1], tok.encode("hi", true).unwrap());
        assert_eq!(p.warnings.len(), 1);
        assert!(p.warnings[0].contains("prompt 0") && p.warnings[0].contains("last 8"));
        // Without truncation the prompt is kept whole (the generator refuses it, naming n_ctx).
        let p = encode_prompts(&tok, &[long], 8, false).unwrap();
        assert!(p.ids[0].len() > 8 && p.warnings.is_empty());
        let e = encode_prompts(&tok, &["a".into(), String::new()], 8, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("prompt 1 is empty"), "{e}");
        assert_eq!(eos_id(&tok), Some(50256));
    }

    #[test]
    fn prompts_that_outgrow_the_context_are_named() {
        let p = vec![vec![1u32; 10], vec![1u32; 100]];
        assert_eq!(context_note(&p, 28, 128), None);
        let n = context_note(&p, 29, 128).unwrap();
        assert!(
            n.starts_with("prompt 1 (100 tokens) + --max-new-tokens 29")
                && n.contains("n_ctx = 128")
                && n.contains("slides")
                && n.contains("last 64 tokens"),
            "{n}"
        );
        let n = context_note(&p, 500, 128).unwrap();
        assert!(n.starts_with("every prompt (prompt 0: 10 tokens)"), "{n}");
    }
}
