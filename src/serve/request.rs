//! Parsing and validating the bodies of `/v1/completions` and `/v1/chat/completions`: every
//! field is type- and range-checked, and a bad one gives a 400 naming it ([`ApiError`]).
//! Fields the server does not use (`user`, `suffix`, `tools`, ...) are ignored, as OpenAI-compatible
//! servers do, so that clients that send them still work.
//!
//! Beyond OpenAI: `top_k` and `repetition_penalty` (as vLLM and llama.cpp accept them).

use super::api_error::ApiError;
use crate::chat::template::{Message, Role};
use serde_json::{Map, Value};

/// Stop strings per request at most (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Completions per request at most (OpenAI's limit; the batch size bounds it further).
pub const MAX_N: usize = 128;
/// Alternatives per token at most: completions (`logprobs`) and chat (`top_logprobs`).
pub const MAX_LOGPROBS_COMPLETIONS: usize = 5;
/// See [`MAX_LOGPROBS_COMPLETIONS`].
pub const MAX_TOP_LOGPROBS_CHAT: usize = 20;

/// The prompt of a completion request: texts or token ids, one or many.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    /// Texts (a string or an array of strings).
    Texts(Vec<String>),
    /// Token ids (an array of ids or an array of such arrays).
    Ids(Vec<Vec<u32>>),
}

/// The fields both endpoints share.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    /// `model`, if given.
    pub model: Option<String>,
    /// New tokens at most (`None`: the endpoint's default).
    pub max_tokens: Option<usize>,
    /// 0–2; 0 is greedy.
    pub temperature: f32,
    /// (0, 1] (0 is taken as greedy).
    pub top_p: f32,
    /// 0: no limit.
    pub top_k: usize,
    /// 1: none.
    pub repetition_penalty: f32,
    /// −2..2.
    pub presence_penalty: f32,
    /// −2..2.
    pub frequency_penalty: f32,
    /// Token id → bias in −100..100.
    pub logit_bias: Vec<(u32, f32)>,
    /// Completions per prompt.
    pub n: usize,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Seed; `None`: a fresh one.
    pub seed: Option<u64>,
    /// Server-sent events.
    pub stream: bool,
    /// A last chunk with the usage (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// A `/v1/completions` body.
#[derive(Clone, Debug, PartialEq)]
pub struct CompletionRequest {
    /// The prompt(s).
    pub prompt: Prompt,
    /// Shared fields.
    pub common: Common,
    /// Alternatives per token with log-probabilities (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
    /// Return the prompt before the completion (with its log-probabilities when asked).
    pub echo: bool,
}

/// A `/v1/chat/completions` body.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<Message>,
    /// Shared fields.
    pub common: Common,
    /// Log-probabilities of the answer's tokens.
    pub logprobs: bool,
    /// Alternatives per token.
    pub top_logprobs: usize,
}

/// Typed access to a JSON object's fields with errors naming them.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.0.get(k).filter(|v| !v.is_null())
    }

    fn f32_in(&self, k: &str, default: f32, lo: f32, hi: f32) -> Result<f32, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => {
                let x = v.as_f64().ok_or_else(|| {
                    ApiError::invalid(k, format!("`{k}` must be a number, not {v}"))
                })?;
                if !(x >= f64::from(lo) && x <= f64::from(hi)) {
                    return Err(ApiError::invalid(
                        k,
                        format!("`{k}` is {x}; it must be between {lo} and {hi}"),
                    ));
                }
                Ok(x as f32)
            }
        }
    }

    fn uint(&self, k: &str, lo: u64, hi: u64) -> Result<Option<u64>, ApiError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => {
                let x = v.as_u64().ok_or_else(|| {
                    ApiError::invalid(k, format!("`{k}` must be a non-negative integer, not {v}"))
                })?;
                if x < lo || x > hi {
                    return Err(ApiError::invalid(
                        k,
                        format!("`{k}` is {x}; it must be between {lo} and {hi}"),
                    ));
                }
                Ok(Some(x))
            }
        }
    }

    fn bool(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(ApiError::invalid(
                k,
                format!("`{k}` must be true or false, not {v}"),
            )),
        }
    }
}

/// The body as a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_json(format!("The body is not valid JSON: {e}")))?;
    match v {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_json(format!(
            "The body must be a JSON object, not {}",
            kind_of(&other)
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn common(f: &Fields, max_tokens_keys: &[&str], vocab: usize) -> Result<Common, ApiError> {
    let model = match f.get("model") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => {
            return Err(ApiError::invalid(
                "model",
                format!("`model` must be a string, not {v}"),
            ))
        }
    };
    let mut max_tokens = None;
    for k in max_tokens_keys {
        if let Some(x) = f.uint(k, 0, u32::MAX as u64)? {
            max_tokens = Some(x as usize);
            break;
        }
    }
    let temperature = f.f32_in("temperature", 1.0, 0.0, 2.0)?;
    let mut top_p = f.f32_in("top_p", 1.0, 0.0, 1.0)?;
    let mut temperature = temperature;
    if top_p == 0.0 {
        // Only the most likely token has mass 0 < p: greedy.
        temperature = 0.0;
        top_p = 1.0;
    }
    let top_k = f.uint("top_k", 0, vocab as u64)?.unwrap_or(0) as usize;
    let repetition_penalty = f.f32_in("repetition_penalty", 1.0, 0.01, 100.0)?;
    let presence_penalty = f.f32_in("presence_penalty", 0.0, -2.0, 2.0)?;
    let frequency_penalty = f.f32_in("frequency_penalty", 0.0, -2.0, 2.0)?;
    let mut logit_bias = Vec::new();
    match f.get("logit_bias") {
        None => {}
        Some(Value::Object(m)) => {
            if m.len() > 300 {
                return Err(ApiError::invalid(
                    "logit_bias",
                    format!("`logit_bias` has {} entries; at most 300", m.len()),
                ));
            }
            for (k, v) in m {
                let id: u32 = k.parse().ok().filter(|&id: &u32| (id as usize) < vocab).ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("`logit_bias` key {k:?} is not a token id below the vocabulary size {vocab}"),
                    )
                })?;
                let b = v.as_f64().filter(|b| (-100.0..=100.0).contains(b)).ok_or_else(|| {
                    ApiError::invalid(
                        "logit_bias",
                        format!("`logit_bias[{k}]` is {v}; it must be a number between -100 and 100"),
                    )
                })?;
                logit_bias.push((id, b as f32));
            }
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "logit_bias",
                format!(
                    "`logit_bias` must be an object of token id → bias, not {}",
                    kind_of(v)
                ),
            ))
        }
    }
    let n = f.uint("n", 1, MAX_N as u64)?.unwrap_or(1) as usize;
    let stop = match f.get("stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => {
            if a.len() > MAX_STOP {
                return Err(ApiError::invalid(
                    "stop",
                    format!("`stop` has {} strings; at most {MAX_STOP}", a.len()),
                ));
            }
            a.iter()
                .map(|s| {
                    s.as_str().map(str::to_string).ok_or_else(|| {
                        ApiError::invalid("stop", format!("`stop` must hold strings, not {s}"))
                    })
                })
                .collect::<Result<_, _>>()?
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "stop",
                format!(
                    "`stop` must be a string or an array of strings, not {}",
                    kind_of(v)
                ),
            ))
        }
    };
    let seed = match f.get("seed") {
        None => None,
        Some(v) => Some(
            v.as_i64()
                .map(|s| s as u64)
                .or_else(|| v.as_u64())
                .ok_or_else(|| {
                    ApiError::invalid("seed", format!("`seed` must be an integer, not {v}"))
                })?,
        ),
    };
    let stream = f.bool("stream")?;
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(m)) => {
            if !stream {
                return Err(ApiError::invalid(
                    "stream_options",
                    "`stream_options` is only allowed when `stream` is true",
                ));
            }
            Fields(m).bool("include_usage")?
        }
        Some(v) => {
            return Err(ApiError::invalid(
                "stream_options",
                format!("`stream_options` must be an object, not {}", kind_of(v)),
            ))
        }
    };
    Ok(Common {
        model,
        max_tokens,
        temperature,
        top_p,
        top_k,
        repetition_penalty,
        presence_penalty,
        frequency_penalty,
        logit_bias,
        n,
        stop,
        seed,
        stream,
        include_usage,
    })
}

fn token_ids(v: &[Value], vocab: usize) -> Result<Vec<u32>, ApiError> {
    v.iter()
        .map(|x| {
            x.as_u64()
                .filter(|&id| (id as usize) < vocab)
                .map(|id| id as u32)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "prompt",
                        format!(
                            "`prompt` token {x} is not an id below the vocabulary size {vocab}"
                        ),
                    )
                })
        })
        .collect()
}

/// Parses a `/v1/completions` body for a model of `vocab` tokens.
pub fn parse_completion(body: &[u8], vocab: usize) -> Result<CompletionRequest, ApiError> {
    let m = object(body)?;
    let f = Fields(&m);
    let common = common(&f, &["max_tokens"], vocab)?;
    let bad = |why: &str| ApiError::invalid("prompt", why.to_string());
    let prompt = match f.get("prompt") {
        None => return Err(bad("`prompt` is required")),
        Some(Value::String(s)) => Prompt::Texts(vec![s.clone()]),
        Some(Value::Array(a)) if a.is_empty() => return Err(bad("`prompt` is an empty array")),
        Some(Value::Array(a)) => match &a[0] {
            Value::String(_) => Prompt::Texts(
                a.iter()
                    .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad("`prompt` mixes strings and other types")))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Number(_) => Prompt::Ids(vec![token_ids(a, vocab)?]),
            Value::Array(_) => Prompt::Ids(
                a.iter()
                    .map(|p| match p {
                        Value::Array(ids) if !ids.is_empty() => token_ids(ids, vocab),
                        Value::Array(_) => Err(bad("`prompt` holds an empty list of token ids")),
                        _ => Err(bad("`prompt` mixes lists of ids and other types")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => {
                return Err(bad(&format!(
                    "`prompt` must be a string, strings, token ids or lists of token ids, not an array of {}",
                    kind_of(other)
                )))
            }
        },
        Some(v) => {
            return Err(bad(&format!(
                "`prompt` must be a string, strings, token ids or lists of token ids, not {}",
                kind_of(v)
            )))
        }
    };
    let logprobs = f
        .uint("logprobs", 0, MAX_LOGPROBS_COMPLETIONS as u64)?
        .map(|x| x as usize);
    let echo = f.bool("echo")?;
    Ok(CompletionRequest {
        prompt,
        common,
        logprobs,
        echo,
    })
}

/// Parses a `/v1/chat/completions` body for a model of `vocab` tokens.
pub fn parse_chat(body: &[u8], vocab: usize) -> Result<ChatRequest, ApiError> {
    let m = object(body)?;
    let f = Fields(&m);
    let common = common(&f, &["max_completion_tokens", "max_tokens"], vocab)?;
    if common.max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "max_completion_tokens",
            "`max_completion_tokens` must be at least 1",
        ));
    }
    let bad = |why: String| ApiError::invalid("messages", why);
    let messages = match f.get("messages") {
        None => return Err(bad("`messages` is required".into())),
        Some(Value::Array(a)) if a.is_empty() => return Err(bad("`messages` is empty".into())),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let m = m
                    .as_object()
                    .ok_or_else(|| bad(format!("`messages[{i}]` must be an object")))?;
                let role = m
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("`messages[{i}].role` must be a string")))?;
                // OpenAI's newer name for the system role.
                let role = if role == "developer" { "system" } else { role };
                let role = Role::parse(role).ok_or_else(|| {
                    bad(format!(
                        "`messages[{i}].role` is {role:?}; it must be system, developer, user or assistant"
                    ))
                })?;
                let content = match m.get("content") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(parts)) => parts
                        .iter()
                        .map(|p| {
                            match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                                (Some("text"), Some(t)) => Ok(t.to_string()),
                                _ => Err(bad(format!(
                                    "`messages[{i}].content` parts must be {{\"type\": \"text\", \"text\": ...}}; this server reads text only"
                                ))),
                            }
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .join(""),
                    Some(Value::Null) | None if role == Role::Assistant => String::new(),
                    _ => return Err(bad(format!("`messages[{i}].content` must be a string or text parts"))),
                };
                Ok(Message::new(role, content))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(bad(format!("`messages` must be an array, not {}", kind_of(v)))),
    };
    let logprobs = f.bool("logprobs")?;
    let top_logprobs = f
        .uint("top_logprobs", 0, MAX_TOP_LOGPROBS_CHAT as u64)?
        .map(|x| x as usize);
    if top_logprobs.is_some() && !logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` needs `logprobs: true`",
        ));
    }
    Ok(ChatRequest {
        messages,
        common,
        logprobs,
        top_logprobs: top_logprobs.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_of_every_shape_and_errors_that_name_the_field() {
        let p = |s: &str| parse_completion(s.as_bytes(), 100);
        assert_eq!(
            p(r#"{"prompt": "hi"}"#).unwrap().prompt,
            Prompt::Texts(vec!["hi".into()])
        );
        assert_eq!(
            p(r#"{"prompt": [1, 2]}"#).unwrap().prompt,
            Prompt::Ids(vec![vec![1, 2]])
        );
        assert_eq!(
            p(r#"{"prompt": [[1], [2, 3]]}"#).unwrap().prompt,
            Prompt::Ids(vec![vec![1], vec![2, 3]])
        );
        let r =
            p(r#"{"prompt": "a", "stop": "x", "logit_bias": {"5": -100}, "seed": -1, "top_p": 0}"#)
                .unwrap();
        assert_eq!(r.common.stop, ["x"]);
        assert_eq!(r.common.logit_bias, [(5, -100.0)]);
        assert_eq!(r.common.seed, Some(u64::MAX));
        assert_eq!(r.common.temperature, 0.0, "top_p 0 is greedy");
        for (body, param) in [
            (r#"{"prompt": [100]}"#, "prompt"),
            (r#"{"prompt": 3}"#, "prompt"),
            (r#"{}"#, "prompt"),
            (r#"{"prompt": "a", "temperature": 3}"#, "temperature"),
            (r#"{"prompt": "a", "temperature": "hot"}"#, "temperature"),
            (r#"{"prompt": "a", "max_tokens": -1}"#, "max_tokens"),
            (r#"{"prompt": "a", "n": 0}"#, "n"),
            (r#"{"prompt": "a", "logprobs": 6}"#, "logprobs"),
            (r#"{"prompt": "a", "stop": ["a","b","c","d","e"]}"#, "stop"),
            (r#"{"prompt": "a", "logit_bias": {"x": 1}}"#, "logit_bias"),
            (
                r#"{"prompt": "a", "stream_options": {"include_usage": true}}"#,
                "stream_options",
            ),
            (r#"{"prompt": "a", "echo": 1}"#, "echo"),
        ] {
            let e = p(body).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {}", e.message);
        }
        let e = p("{not json").unwrap_err();
        assert_eq!((e.status, e.param.clone()), (400, None));
        assert!(p("[1]").unwrap_err().message.contains("an array"));
    }

    #[test]
    fn chat_messages_and_logprob_fields() {
        let c = |s: &str| parse_chat(s.as_bytes(), 100);
        let r = c(
            r#"{"messages": [{"role": "developer", "content": "be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                     "max_tokens": 5, "logprobs": true, "top_logprobs": 2}"#,
        )
        .unwrap();
        assert_eq!(r.messages[0].role, Role::System);
        assert_eq!(r.messages[1].content, "hi");
        assert_eq!(
            (r.common.max_tokens, r.logprobs, r.top_logprobs),
            (Some(5), true, 2)
        );
        assert_eq!(
            c(r#"{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 3, "max_tokens": 9}"#)
                .unwrap()
                .common
                .max_tokens,
            Some(3),
            "max_completion_tokens wins over the deprecated max_tokens"
        );
        for (body, param) in [
            (r#"{"messages": []}"#, "messages"),
            (
                r#"{"messages": [{"role": "robot", "content": "x"}]}"#,
                "messages",
            ),
            (r#"{"messages": [{"role": "user"}]}"#, "messages"),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "top_logprobs": 3}"#,
                "top_logprobs",
            ),
            (
                r#"{"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}"#,
                "top_logprobs",
            ),
        ] {
            assert_eq!(c(body).unwrap_err().param.as_deref(), Some(param), "{body}");
        }
    }
}
