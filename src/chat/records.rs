//! The record formats of chat training, read from JSON-lines files into two normalised forms:
//! [`SftRecord`] (a demonstration) and [`PreferencePair`] (a prompt with a preferred and a
//! rejected answer).
//!
//! Demonstrations (`gpt sft`), one JSON object per line:
//! - `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`;
//! - `{"prompt": "...", "completion": "..."}` (plain text, no template: TRL's "standard"
//!   prompt-completion form);
//! - `{"prompt": [messages], "completion": [messages]}` (TRL's conversational form);
//! - a preference pair (below): its chosen answer is the demonstration, the usual SFT step
//!   before DPO.
//!
//! Preference pairs (`gpt reward`, `gpt dpo`):
//! - `{"prompt": "...", "chosen": "...", "rejected": "..."}`. A prompt written as Anthropic
//!   HH-RLHF dialogue text (`"\n\nHuman: ...\n\nAssistant:"`) becomes a conversation (Human →
//!   user, Assistant → assistant) and the answers assistant turns, so a chat model sees them in
//!   its own template; other text stays text;
//! - `{"chosen": "...", "rejected": "..."}`, two whole HH-RLHF dialogues: the prompt is their
//!   common prefix up to its last `"\n\nAssistant:"`;
//! - `{"prompt": [messages], "chosen": [messages], "rejected": [messages]}` (TRL's
//!   conversational form; each answer one assistant message).
//!
//! Errors name the file and line. A message with an unknown role or a malformed record is an
//! error (or, with `skip_bad`, skipped and counted); a conversation with no assistant turn and
//! a pair whose answers are identical are skipped and counted, never trained on.

use super::template::{Message, Role};
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// A demonstration: what the model should say, in context.
#[derive(Clone, Debug, PartialEq)]
pub enum SftRecord {
    /// A conversation rendered with the chat template; every assistant turn is trained.
    Chat(Vec<Message>),
    /// Plain text: the completion (and the EOS token after it) is trained.
    Text {
        /// The context.
        prompt: String,
        /// The answer.
        completion: String,
    },
}

/// The context of a preference pair.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Turns rendered with the chat template, ending where the assistant answers.
    Chat(Vec<Message>),
    /// Plain text the answers continue.
    Text(String),
}

/// A prompt with the answer people preferred and the one they rejected.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferencePair {
    /// The context.
    pub prompt: Prompt,
    /// The preferred answer.
    pub chosen: String,
    /// The other answer.
    pub rejected: String,
    /// The line in its file.
    pub line: usize,
}

/// What reading a file counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Records read into examples.
    pub kept: usize,
    /// Malformed records skipped (with `skip_bad`).
    pub bad: usize,
    /// Conversations without an assistant turn (skipped).
    pub no_assistant: usize,
    /// Pairs whose chosen answer equals the rejected one (skipped).
    pub identical: usize,
}

impl ReadReport {
    /// Records skipped for any reason.
    pub fn skipped(&self) -> usize {
        self.bad + self.no_assistant + self.identical
    }
}

/// Reads the lines of a JSON-lines file as objects: (line number, object).
fn json_lines(path: &Path) -> Result<Vec<(usize, std::result::Result<Value, String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str::<Value>(line)
            .map_err(|e| format!("not valid JSON: {e}"))
            .and_then(|v| {
                if v.is_object() {
                    Ok(v)
                } else {
                    Err("not a JSON object".to_string())
                }
            });
        out.push((i + 1, v));
    }
    Ok(out)
}

fn line_error(path: &Path, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::file(path, format!("line {line}: {msg}"))
}

/// A list of messages from a JSON array (`field` names it in errors).
pub fn messages(v: &Value, field: &str) -> std::result::Result<Vec<Message>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("`{field}` must be a list of messages"))?;
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m
                .get("role")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{field}[{i}] has no string `role`"))?;
            let role = Role::parse(role).ok_or_else(|| {
                format!("{field}[{i}] has the unknown role {role:?} (system, user or assistant)")
            })?;
            let content = m
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{field}[{i}] has no string `content`"))?;
            Ok(Message::new(role, content))
        })
        .collect()
}

fn text<'a>(v: &'a Value, field: &str) -> std::result::Result<&'a str, String> {
    v.get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{field}` must be a string"))
}

/// One SFT record, or `Ok(None)` for a conversation without an assistant turn.
pub fn sft_record(v: &Value) -> std::result::Result<Option<SftRecord>, String> {
    let msgs = if let Some(m) = v.get("messages") {
        messages(m, "messages")?
    } else {
        match (v.get("prompt"), v.get("completion")) {
            (Some(Value::String(p)), Some(Value::String(c))) => {
                return Ok(Some(SftRecord::Text {
                    prompt: p.clone(),
                    completion: c.clone(),
                }))
            }
            (Some(p @ Value::Array(_)), Some(c @ Value::Array(_))) => {
                let mut m = messages(p, "prompt")?;
                m.extend(messages(c, "completion")?);
                m
            }
            _ if v.get("chosen").is_some() => {
                // A preference pair: its chosen answer is the demonstration (the SFT step
                // before DPO).
                let p = preference(v, 0)?;
                let mut m = match p.prompt {
                    Prompt::Chat(turns) => turns,
                    Prompt::Text(prompt) => {
                        return Ok(Some(SftRecord::Text {
                            prompt,
                            completion: p.chosen,
                        }))
                    }
                };
                m.push(Message::new(Role::Assistant, p.chosen));
                m
            }
            _ => {
                return Err(
                    "expected {\"messages\": [...]}, {\"prompt\", \"completion\"} (both strings or both lists of messages), or a preference pair (its chosen answer is trained)"
                        .into(),
                )
            }
        }
    };
    if msgs.iter().any(|m| m.role == Role::Assistant) {
        Ok(Some(SftRecord::Chat(msgs)))
    } else {
        Ok(None)
    }
}

/// Reads demonstrations from `path` (see the module docs).
pub fn read_sft(path: &Path, skip_bad: bool) -> Result<(Vec<SftRecord>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut out = Vec::new();
    for (line, v) in json_lines(path)? {
        match v.and_then(|v| sft_record(&v)) {
            Ok(Some(r)) => out.push(r),
            Ok(None) => report.no_assistant += 1,
            Err(msg) if skip_bad => {
                let _ = msg;
                report.bad += 1
            }
            Err(msg) => return Err(line_error(path, line, msg)),
        }
    }
    report.kept = out.len();
    if out.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "no usable demonstrations ({} without an assistant turn, {} malformed)",
                report.no_assistant, report.bad
            ),
        ));
    }
    Ok((out, report))
}

/// The marker of a human turn in HH-RLHF dialogue text.
const HUMAN: &str = "\n\nHuman:";
/// The marker of an assistant turn in HH-RLHF dialogue text.
const ASSISTANT: &str = "\n\nAssistant:";

/// Splits HH-RLHF dialogue text into turns, or `None` if it is not such text. A trailing empty
/// assistant turn (a prompt ending in `"\n\nAssistant:"`) is dropped.
pub fn parse_dialogue(s: &str) -> Option<Vec<Message>> {
    if !s.starts_with(HUMAN) {
        return None;
    }
    let mut turns = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (role, marker) = if rest.starts_with(HUMAN) {
            (Role::User, HUMAN)
        } else if rest.starts_with(ASSISTANT) {
            (Role::Assistant, ASSISTANT)
        } else {
            return None;
        };
        rest = &rest[marker.len()..];
        let end = [rest.find(HUMAN), rest.find(ASSISTANT)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        turns.push(Message::new(role, rest[..end].trim()));
        rest = &rest[end..];
    }
    if turns
        .last()
        .is_some_and(|m| m.role == Role::Assistant && m.content.is_empty())
    {
        turns.pop();
    }
    Some(turns)
}

/// The answer text of a preference record's `field`: a string, or a list holding one
/// assistant message.
fn answer(v: &Value, field: &str) -> std::result::Result<String, String> {
    match v.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(list @ Value::Array(_)) => {
            let m = messages(list, field)?;
            match m.as_slice() {
                [one] if one.role == Role::Assistant => Ok(one.content.clone()),
                _ => Err(format!("`{field}` must hold exactly one assistant message")),
            }
        }
        _ => Err(format!("`{field}` must be a string or a list of messages")),
    }
}

/// One preference record in any of the accepted forms.
fn preference(v: &Value, line: usize) -> std::result::Result<PreferencePair, String> {
    let (prompt, chosen, rejected) = match v.get("prompt") {
        Some(Value::String(p)) => {
            let (c, r) = (answer(v, "chosen")?, answer(v, "rejected")?);
            match parse_dialogue(p) {
                Some(turns) if p.trim_end().ends_with("Assistant:") => (
                    Prompt::Chat(turns),
                    c.trim().to_string(),
                    r.trim().to_string(),
                ),
                _ => (Prompt::Text(p.clone()), c, r),
            }
        }
        Some(p @ Value::Array(_)) => (
            Prompt::Chat(messages(p, "prompt")?),
            answer(v, "chosen")?,
            answer(v, "rejected")?,
        ),
        Some(_) => return Err("`prompt` must be a string or a list of messages".into()),
        None => {
            // Two whole dialogues: the prompt is their common prefix up to its last
            // assistant marker.
            let (c, r) = (text(v, "chosen")?, text(v, "rejected")?);
            let common = c.bytes().zip(r.bytes()).take_while(|(a, b)| a == b).count();
            let mut cut = c[..common].rfind(ASSISTANT).ok_or(
                "without `prompt`, `chosen` and `rejected` must be two HH-RLHF dialogues (\"\\n\\nHuman: ...\\n\\nAssistant: ...\") sharing their prompt",
            )?;
            cut += ASSISTANT.len();
            let turns = parse_dialogue(&c[..cut])
                .ok_or("the shared prompt is not HH-RLHF dialogue text")?;
            (
                Prompt::Chat(turns),
                c[cut..].trim().to_string(),
                r[cut..].trim().to_string(),
            )
        }
    };
    Ok(PreferencePair {
        prompt,
        chosen,
        rejected,
        line,
    })
}

/// Reads preference pairs from `path` (see the module docs).
pub fn read_preferences(path: &Path, skip_bad: bool) -> Result<(Vec<PreferencePair>, ReadReport)> {
    let mut report = ReadReport::default();
    let mut out = Vec::new();
    for (line, v) in json_lines(path)? {
        match v.and_then(|v| preference(&v, line)) {
            Ok(p) if p.chosen == p.rejected => report.identical += 1,
            Ok(p) => out.push(p),
            Err(_) if skip_bad => report.bad += 1,
            Err(msg) => return Err(line_error(path, line, msg)),
        }
    }
    report.kept = out.len();
    if out.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "no usable preference pairs ({} with identical answers, {} malformed)",
                report.identical, report.bad
            ),
        ));
    }
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hh_dialogue_text_becomes_turns() {
        let t =
            parse_dialogue("\n\nHuman: Hi there\n\nAssistant: Hello.\n\nHuman: Why?\n\nAssistant:")
                .unwrap();
        assert_eq!(
            t,
            vec![
                Message::new(Role::User, "Hi there"),
                Message::new(Role::Assistant, "Hello."),
                Message::new(Role::User, "Why?"),
            ]
        );
        assert!(parse_dialogue("plain text").is_none());
    }

    #[test]
    fn every_preference_form_gives_the_same_pair() {
        let forms = [
            r#"{"prompt": "\n\nHuman: Hi\n\nAssistant:", "chosen": " Hello", "rejected": " Go away"}"#,
            r#"{"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away"}"#,
            r#"{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}], "rejected": [{"role": "assistant", "content": "Go away"}]}"#,
        ];
        for f in forms {
            let p = preference(&serde_json::from_str(f).unwrap(), 1).unwrap();
            assert_eq!(
                p.prompt,
                Prompt::Chat(vec![Message::new(Role::User, "Hi")]),
                "{f}"
            );
            assert_eq!(
                (p.chosen.as_str(), p.rejected.as_str()),
                ("Hello", "Go away"),
                "{f}"
            );
        }
    }
}
