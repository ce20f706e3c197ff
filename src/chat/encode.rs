//! From records to token ids with a mask of the tokens the model is trained to produce.
//!
//! A conversation is rendered once with the chat template; the assistant turns are located in
//! the text by rendering its prefixes (`render(turns[..i], add_generation_prompt)` ends where
//! turn `i`'s answer starts, `render(turns[..=i])` where it ends, with the end-of-turn token),
//! and a token is trained when its first byte lies inside an assistant answer: TRL's
//! `assistant_only_loss` (prompt, user and system tokens are not trained; padding never is).
//! Text is encoded with the tokenizer's special tokens matched (leftmost, then longest) and the
//! text between them encoded as ordinary text, so a role token is always one id.
//!
//! Plain prompt/completion text: the completion is trained, and the EOS token is appended
//! (trained) unless the completion already ends with it.
//!
//! Truncation to the context `max_len`: a demonstration keeps its start (TRL SFT's
//! `keep_start`, the default) or its end ([`Truncation::KeepEnd`]); a preference sequence keeps its answer and drops the start of the prompt
//! (TRL DPO's `keep_end`), and an answer longer than the context keeps its start. Each cut is
//! counted per side.

use super::records::{PreferencePair, Prompt, SftRecord};
use super::template::{ChatTemplate, Message, Role};
use crate::error::{Error, Result};
use crate::tokenizer::AnyTokenizer;
use std::ops::Range;
use std::path::Path;

/// Token ids and which of them are trained.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// The ids.
    pub ids: Vec<u32>,
    /// `trained[i]`: the model is trained to produce `ids[i]` (from the tokens before it).
    pub trained: Vec<bool>,
}

impl Encoded {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of trained tokens.
    pub fn n_trained(&self) -> usize {
        self.trained.iter().filter(|&&t| t).count()
    }

    fn push(&mut self, id: u32, trained: bool) {
        self.ids.push(id);
        self.trained.push(trained);
    }
}

/// The tokenizer and template an encoder works with.
pub struct ChatEncoder<'a> {
    /// The tokenizer (its special tokens are matched in the text).
    pub tok: &'a AnyTokenizer,
    /// The chat template (for conversations).
    pub template: &'a ChatTemplate,
    /// The EOS id (appended to plain-text completions).
    pub eos: u32,
    specials: Vec<(String, u32)>,
    /// The file the template came from (named in errors).
    pub origin: &'a Path,
}

impl<'a> ChatEncoder<'a> {
    /// An encoder; the template's EOS must be a special token of `tok`.
    pub fn new(
        tok: &'a AnyTokenizer,
        template: &'a ChatTemplate,
        origin: &'a Path,
    ) -> Result<ChatEncoder<'a>> {
        let eos = tok.special_id(&template.eos_token).ok_or_else(|| {
            Error::file(
                origin,
                format!(
                    "the chat template's eos_token {:?} is not a special token of the tokenizer",
                    template.eos_token
                ),
            )
        })?;
        Ok(ChatEncoder {
            tok,
            template,
            eos,
            specials: tok.special_tokens(),
            origin,
        })
    }

    /// The next special token in `text` at or after `from`: (start, end, id).
    fn next_special(&self, text: &str, from: usize) -> Option<(usize, usize, u32)> {
        let mut best: Option<(usize, usize, u32)> = None;
        for (s, id) in &self.specials {
            if let Some(p) = text[from..].find(s.as_str()) {
                let (a, b) = (from + p, from + p + s.len());
                if best.is_none_or(|(ba, bb, _)| a < ba || (a == ba && b > bb)) {
                    best = Some((a, b, *id));
                }
            }
        }
        best
    }

    /// Encodes `text`; a token is trained when its first byte lies in one of `spans`.
    pub fn encode_spans(&self, text: &str, spans: &[Range<usize>]) -> Result<Encoded> {
        let inside = |at: usize| spans.iter().any(|s| s.contains(&at));
        let mut out = Encoded::default();
        let mut pos = 0;
        let ordinary = |out: &mut Encoded, piece: &str, start: usize| -> Result<()> {
            let ids = self
                .tok
                .encode(piece, false)
                .map_err(|e| Error::file(self.origin, format!("encoding a chat text: {e}")))?;
            let mut at = start;
            for id in ids {
                out.push(id, inside(at));
                at += self
                    .tok
                    .token_bytes(id)
                    .map_err(|e| Error::file(self.origin, e.to_string()))?
                    .len();
            }
            Ok(())
        };
        while let Some((a, b, id)) = self.next_special(text, pos) {
            if a > pos {
                ordinary(&mut out, &text[pos..a], pos)?;
            }
            out.push(id, inside(a));
            pos = b;
        }
        if pos < text.len() {
            ordinary(&mut out, &text[pos..], pos)?;
        }
        Ok(out)
    }

    /// The rendered text of `turns` and the byte spans of its assistant answers.
    pub fn render_with_spans(&self, turns: &[Message]) -> Result<(String, Vec<Range<usize>>)> {
        let full = self.template.render(turns, false, self.origin)?;
        let mut spans = Vec::new();
        for (i, m) in turns.iter().enumerate() {
            if m.role != Role::Assistant {
                continue;
            }
            let head = self.template.render(&turns[..i], true, self.origin)?;
            let upto = self.template.render(&turns[..=i], false, self.origin)?;
            if !upto.starts_with(&head) || !full.starts_with(&upto) {
                return Err(Error::file(
                    self.origin,
                    "the chat template is not prefix-stable (rendering more turns changes the text of earlier ones), so the assistant answers cannot be located; use a template whose rendering of a conversation starts with the rendering of each of its prefixes",
                ));
            }
            spans.push(head.len()..upto.len());
        }
        Ok((full, spans))
    }

    /// A demonstration's ids and trained mask (untruncated).
    pub fn sft(&self, rec: &SftRecord) -> Result<Encoded> {
        match rec {
            SftRecord::Chat(turns) => {
                let (text, spans) = self.render_with_spans(turns)?;
                self.encode_spans(&text, &spans)
            }
            SftRecord::Text { prompt, completion } => {
                let text = format!("{prompt}{completion}");
                let mut e =
                    self.encode_spans(&text, std::slice::from_ref(&(prompt.len()..text.len())))?;
                if e.ids.last() != Some(&self.eos) {
                    e.push(self.eos, true);
                }
                Ok(e)
            }
        }
    }

    /// The prompt's ids and one answer's ids (the answer's all trained, ending in EOS).
    pub fn answer(&self, prompt: &Prompt, answer: &str) -> Result<(Vec<u32>, Vec<u32>)> {
        let (text, span) = match prompt {
            Prompt::Chat(turns) => {
                let mut all = turns.clone();
                all.push(Message::new(Role::Assistant, answer));
                let (text, spans) = self.render_with_spans(&all)?;
                // Only the last answer is the completion; earlier assistant turns are prompt.
                let last = spans.last().cloned().unwrap_or(text.len()..text.len());
                (text, last)
            }
            Prompt::Text(p) => {
                let text = format!("{p}{answer}");
                (text.clone(), p.len()..text.len())
            }
        };
        let e = self.encode_spans(&text, std::slice::from_ref(&span))?;
        // The completion starts at the first trained token.
        let split = e.trained.iter().position(|&t| t).unwrap_or(e.ids.len());
        let (p, mut c) = (e.ids[..split].to_vec(), e.ids[split..].to_vec());
        if c.last() != Some(&self.eos) {
            c.push(self.eos);
        }
        Ok((p, c))
    }

    /// A preference pair's two sequences.
    pub fn pair(&self, p: &PreferencePair) -> Result<EncodedPair> {
        let (prompt, chosen) = self.answer(&p.prompt, &p.chosen)?;
        let (prompt_r, rejected) = self.answer(&p.prompt, &p.rejected)?;
        if prompt != prompt_r {
            return Err(Error::file(
                self.origin,
                format!(
                    "record on line {}: the prompt encodes differently before the two answers (the template or the tokenizer merges across the boundary)",
                    p.line
                ),
            ));
        }
        Ok(EncodedPair {
            prompt,
            chosen,
            rejected,
            line: p.line,
        })
    }
}

/// A preference pair as ids: the shared prompt and the two answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedPair {
    /// The prompt's ids.
    pub prompt: Vec<u32>,
    /// The preferred answer's ids (EOS last).
    pub chosen: Vec<u32>,
    /// The rejected answer's ids (EOS last).
    pub rejected: Vec<u32>,
    /// The record's line.
    pub line: usize,
}

/// What truncation to the context cut.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cuts {
    /// Sequences whose prompt lost its start.
    pub prompt: usize,
    /// Sequences whose answer (or demonstration) lost its end.
    pub answer: usize,
}

impl Cuts {
    /// Adds another count.
    pub fn add(&mut self, o: Cuts) {
        self.prompt += o.prompt;
        self.answer += o.answer;
    }
}

/// Which end of an over-long demonstration survives (TRL's `truncation_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Truncation {
    /// Keep the first `max_len` tokens (TRL SFT's default).
    #[default]
    KeepStart,
    /// Keep the last `max_len` tokens: the end of a long conversation, with its last answer.
    KeepEnd,
}

impl Truncation {
    /// The mode named `s` (`keep_start`, `keep_end`).
    pub fn parse(s: &str) -> Result<Truncation> {
        match s {
            "keep_start" => Ok(Truncation::KeepStart),
            "keep_end" => Ok(Truncation::KeepEnd),
            _ => Err(Error::field(
                "--truncation",
                format!("`{s}` is not one of keep_start, keep_end"),
            )),
        }
    }
}

/// Cuts a demonstration to `max_len` tokens, keeping its start or its end; counts it in
/// `cuts.answer` (keep_start) or `cuts.prompt` (keep_end).
pub fn truncate_sft(e: &mut Encoded, max_len: usize, mode: Truncation, cuts: &mut Cuts) {
    let n = e.ids.len();
    if n <= max_len {
        return;
    }
    match mode {
        Truncation::KeepStart => {
            e.ids.truncate(max_len);
            e.trained.truncate(max_len);
            cuts.answer += 1;
        }
        Truncation::KeepEnd => {
            e.ids.drain(..n - max_len);
            e.trained.drain(..n - max_len);
            cuts.prompt += 1;
        }
    }
}

/// One sequence of a pair, `prompt ++ answer`, cut to `max_len`: the prompt loses its start
/// first (TRL's `keep_end`), then an answer longer than the context loses its end. Returns the
/// ids and the index where the answer starts.
pub fn pair_sequence(
    prompt: &[u32],
    answer: &[u32],
    max_len: usize,
    cuts: &mut Cuts,
) -> (Vec<u32>, usize) {
    let answer = if answer.len() > max_len {
        cuts.answer += 1;
        &answer[..max_len]
    } else {
        answer
    };
    let keep = (max_len - answer.len()).min(prompt.len());
    if keep < prompt.len() {
        cuts.prompt += 1;
    }
    let mut ids = prompt[prompt.len() - keep..].to_vec();
    ids.extend_from_slice(answer);
    (ids, keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_sequences_drop_the_prompt_start_first() {
        let mut cuts = Cuts::default();
        let (ids, start) = pair_sequence(&[1, 2, 3, 4], &[5, 6], 4, &mut cuts);
        assert_eq!((ids, start), (vec![3, 4, 5, 6], 2));
        let (ids, start) = pair_sequence(&[1, 2], &[5, 6, 7, 8, 9], 3, &mut cuts);
        assert_eq!((ids, start), (vec![5, 6, 7], 0));
        assert_eq!(
            cuts,
            Cuts {
                prompt: 2,
                answer: 1
            }
        );
    }
}
