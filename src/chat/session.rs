//! Talking to a chat model: the conversation is the input (every turn extends the context, as
//! the source document describes ChatGPT), rendered with the model's template and continued by
//! the model until its end-of-turn token.
//!
//! When the conversation no longer fits the context (the rendered prompt plus room for the
//! answer), the oldest turns are dropped (a system message is kept) and the caller is told how
//! many, so it can say so on screen.

use super::encode::ChatEncoder;
use super::template::{ChatTemplate, Message, Role, TOKENIZER_CONFIG_FILE};
use crate::error::{Error, Result};
use crate::generate::stream::TextStream;
use crate::generate::{generate, FinishReason, GenerateConfig, InferenceModel};
use crate::model::weight_dtype::WeightDtype;
use crate::tokenizer::AnyTokenizer;
use std::path::{Path, PathBuf};

/// A chat model ready to answer: weights for inference, tokenizer and template.
pub struct ChatModel {
    /// The model.
    pub model: InferenceModel,
    /// Its tokenizer.
    pub tok: AnyTokenizer,
    /// Its chat template.
    pub template: ChatTemplate,
    /// The template's file (named in errors).
    pub origin: PathBuf,
}

/// One answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The answer's text (without the end-of-turn token).
    pub text: String,
    /// Why generation stopped.
    pub finish: FinishReason,
    /// Tokens generated.
    pub tokens: usize,
    /// Oldest turns dropped to fit the context.
    pub dropped_turns: usize,
}

impl ChatModel {
    /// Loads the chat model in `dir` (a `gpt sft` / `gpt dpo` output or any model directory
    /// whose `tokenizer_config.json` has a chat template).
    pub fn load(dir: &Path, precision: WeightDtype) -> Result<ChatModel> {
        let dir = crate::model::inference::resolve_dir(dir);
        let origin = dir.join(TOKENIZER_CONFIG_FILE);
        let template = ChatTemplate::load(&dir)?.ok_or_else(|| {
            Error::file(
                &origin,
                "the model has no chat template (tokenizer_config.json with chat_template); make one with `gpt sft`",
            )
        })?;
        let tok = crate::io::load_tokenizer(&dir)?;
        let model = InferenceModel::load_as(&dir, precision)?;
        if tok.special_id(&template.eos_token).is_none() {
            return Err(Error::file(
                &origin,
                format!(
                    "eos_token {:?} is not a special token of the model's tokenizer",
                    template.eos_token
                ),
            ));
        }
        Ok(ChatModel {
            model,
            tok,
            template,
            origin,
        })
    }

    /// The ids of `turns` rendered with the generation prompt (the assistant speaks next).
    pub fn prompt_ids(&self, turns: &[Message]) -> Result<Vec<u32>> {
        let enc = ChatEncoder::new(&self.tok, &self.template, &self.origin)?;
        let text = self.template.render(turns, true, &self.origin)?;
        Ok(enc.encode_spans(&text, &[])?.ids)
    }

    /// Drops the oldest turns of `history` (a leading system message stays) until its prompt
    /// leaves `room` tokens of the context for the answer; returns the prompt's ids and how
    /// many turns went. An error when even the last turn alone does not fit.
    pub fn fit(&self, history: &mut Vec<Message>, room: usize) -> Result<(Vec<u32>, usize)> {
        let limit = self.model.config.n_ctx.saturating_sub(room).max(1);
        let keep_first = history.first().is_some_and(|m| m.role == Role::System) as usize;
        let mut dropped = 0;
        loop {
            let ids = self.prompt_ids(history)?;
            if ids.len() <= limit {
                return Ok((ids, dropped));
            }
            if history.len() <= keep_first + 1 {
                return Err(Error::field(
                    "prompt",
                    format!(
                        "the last message alone is {} tokens with the template; the context is {} tokens and {room} are kept for the answer",
                        ids.len(),
                        self.model.config.n_ctx
                    ),
                ));
            }
            history.remove(keep_first);
            dropped += 1;
        }
    }

    /// The end-of-turn id (the template's EOS).
    pub fn eos(&self) -> u32 {
        // Checked in `load`.
        self.tok.special_id(&self.template.eos_token).unwrap_or(0)
    }

    /// Answers the conversation `history` (its last turn is the user's), dropping old turns to
    /// fit; `on_text` receives the answer's text as it becomes safe to show and returns
    /// `true` to stop early (Ctrl-C).
    pub fn reply(
        &self,
        history: &mut Vec<Message>,
        cfg: &GenerateConfig,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Reply> {
        let room = cfg.max_new_tokens.min(self.model.config.n_ctx / 2);
        let (ids, dropped) = self.fit(history, room)?;
        let cfg = GenerateConfig {
            eos: Some(self.eos()),
            max_new_tokens: cfg.max_new_tokens.min(self.model.config.n_ctx - ids.len()),
            ..cfg.clone()
        };
        let eos = self.eos();
        let mut stream = TextStream::new(&self.tok, &[]);
        let mut stop_asked = false;
        let (gens, _) = generate(&self.model, &[ids], &cfg, |_, id| {
            if id != eos {
                let piece = stream.push(id)?;
                if !piece.is_empty() && on_text(&piece) {
                    stop_asked = true;
                    return Ok(true);
                }
            }
            Ok(false)
        })?;
        let rest = stream.finish();
        if !rest.is_empty() {
            on_text(&rest);
        }
        let g = &gens[0];
        Ok(Reply {
            text: stream.text().to_string(),
            finish: if stop_asked {
                FinishReason::Stop
            } else {
                g.finish
            },
            tokens: g.ids.len(),
            dropped_turns: dropped,
        })
    }

    /// Greedy (or sampled, per `cfg`) answers to many conversations at once (batched
    /// generation), each fitted to the context (old turns dropped; a last turn longer than the
    /// context loses its start).
    pub fn reply_batch(
        &self,
        conversations: &[Vec<Message>],
        cfg: &GenerateConfig,
    ) -> Result<Vec<String>> {
        let room = cfg.max_new_tokens.min(self.model.config.n_ctx / 2);
        let mut prompts = Vec::with_capacity(conversations.len());
        let limit = self.model.config.n_ctx.saturating_sub(room).max(1);
        for c in conversations {
            let mut h = c.clone();
            let ids = match self.fit(&mut h, room) {
                Ok((ids, _)) => ids,
                // A last turn too long for the context keeps its end (TRL's `keep_end`): a
                // batch answers every conversation rather than failing on one.
                Err(_) => {
                    let ids = self.prompt_ids(&h)?;
                    ids[ids.len().saturating_sub(limit)..].to_vec()
                }
            };
            prompts.push(ids);
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let cfg = GenerateConfig {
            eos: Some(self.eos()),
            max_new_tokens: cfg.max_new_tokens.min(self.model.config.n_ctx - longest),
            ..cfg.clone()
        };
        let (gens, _) = generate(&self.model, &prompts, &cfg, |_, _| Ok(false))?;
        let eos = self.eos();
        gens.iter()
            .map(|g| {
                let ids: Vec<u32> = g.ids.iter().copied().filter(|&id| id != eos).collect();
                let mut s = TextStream::new(&self.tok, &[]);
                for id in ids {
                    s.push(id)?;
                }
                s.finish();
                Ok(s.text().to_string())
            })
            .collect()
    }
}
