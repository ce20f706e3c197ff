//! Turning a request into prompt ids: completion prompts (texts or ids) and chat conversations,
//! the latter with the model's chat template (`tokenizer_config.json`, as `gpt sft` writes it
//! and Hugging Face models carry it) or, for a model without one, a plain `role: content`
//! rendering that ends with `assistant:` and stops at the next `\nuser:`.

use super::api_error::ApiError;
use crate::chat::encode::ChatEncoder;
use crate::chat::template::{ChatTemplate, Message};
use crate::error::Result;
use crate::generate::text::eos_id;
use crate::tokenizer::AnyTokenizer;
use std::path::{Path, PathBuf};

/// How conversations become prompts.
pub enum ChatFormat {
    /// The model's template and the file it came from.
    Template(Box<ChatTemplate>, PathBuf),
    /// `role: content` lines, then `assistant:`.
    Plain,
}

/// A conversation's prompt: ids, the id that ends the answer, and stop strings the format adds.
pub struct ChatPrompt {
    /// Prompt ids.
    pub ids: Vec<u32>,
    /// End-of-turn id (`None`: the tokenizer has no end-of-text token).
    pub eos: Option<u32>,
    /// Stop strings of the format (the plain format's next `\nuser:`).
    pub stops: Vec<String>,
}

impl ChatFormat {
    /// The model's template from `dir`, else [`ChatFormat::Plain`].
    pub fn load(dir: &Path, tok: &AnyTokenizer) -> Result<ChatFormat> {
        let origin = dir.join(crate::chat::template::TOKENIZER_CONFIG_FILE);
        Ok(match ChatTemplate::load(dir)? {
            Some(t) => {
                // Fails early (at startup) when the template's EOS is not a token.
                ChatEncoder::new(tok, &t, &origin)?;
                ChatFormat::Template(Box::new(t), origin)
            }
            None => ChatFormat::Plain,
        })
    }

    /// A short name for logs: `template` or `plain`.
    pub fn name(&self) -> &'static str {
        match self {
            ChatFormat::Template(..) => "the model's chat template",
            ChatFormat::Plain => "plain `role: content` lines (the model has no chat template)",
        }
    }

    /// The prompt of `messages` (the assistant speaks next).
    pub fn prompt(
        &self,
        tok: &AnyTokenizer,
        messages: &[Message],
    ) -> std::result::Result<ChatPrompt, ApiError> {
        match self {
            ChatFormat::Template(t, origin) => {
                let enc = ChatEncoder::new(tok, t, origin)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                let text = t
                    .render(messages, true, origin)
                    .map_err(|e| ApiError::invalid("messages", e.to_string()))?;
                let ids = enc
                    .encode_spans(&text, &[])
                    .map_err(|e| ApiError::invalid("messages", e.to_string()))?
                    .ids;
                Ok(ChatPrompt {
                    ids,
                    eos: Some(enc.eos),
                    stops: Vec::new(),
                })
            }
            ChatFormat::Plain => {
                let mut text = String::new();
                for m in messages {
                    text.push_str(m.role.name());
                    text.push_str(": ");
                    text.push_str(&m.content);
                    text.push('\n');
                }
                text.push_str("assistant:");
                let ids = tok.encode(&text, false).map_err(|e| {
                    ApiError::invalid("messages", format!("cannot encode the conversation: {e}"))
                })?;
                Ok(ChatPrompt {
                    ids,
                    eos: eos_id(tok),
                    stops: vec!["\nuser:".into()],
                })
            }
        }
    }
}

/// Encodes a completion prompt text; `<|endoftext|>` written in the text is the special token
/// (as `gpt generate` reads prompts).
pub fn encode_text(tok: &AnyTokenizer, text: &str) -> std::result::Result<Vec<u32>, ApiError> {
    let ids = tok
        .encode(text, true)
        .map_err(|e| ApiError::invalid("prompt", format!("cannot encode the prompt: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "the prompt is empty; give at least one token (e.g. `<|endoftext|>`)",
        ));
    }
    Ok(ids)
}

/// The text of a token (lossy UTF-8 of its bytes; empty for an id without bytes).
pub fn token_text(tok: &AnyTokenizer, id: u32) -> String {
    String::from_utf8_lossy(&token_bytes(tok, id)).into_owned()
}

/// The bytes of a token (empty for an id the tokenizer has none for).
pub fn token_bytes(tok: &AnyTokenizer, id: u32) -> Vec<u8> {
    tok.token_bytes(id).unwrap_or_default()
}

/// The text of `ids` (tokens' bytes joined, then lossy UTF-8).
pub fn ids_text(tok: &AnyTokenizer, ids: &[u32]) -> String {
    let bytes: Vec<u8> = ids.iter().flat_map(|&id| token_bytes(tok, id)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}
