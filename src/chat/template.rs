//! Chat templates: the Jinja program that turns a conversation into the text a chat model reads,
//! stored and rendered the way Hugging Face `transformers` does it.
//!
//! A model directory carries its template in `tokenizer_config.json` (`chat_template`, with
//! `bos_token`, `eos_token` and `pad_token`), and `tokenizer.apply_chat_template(messages,
//! tokenize=False, add_generation_prompt=...)` in `transformers` renders the same string as
//! [`ChatTemplate::render`] (checked by `tools/check_chat_template.py`). Rendering goes through
//! the `minijinja` engine with `transformers`' settings: `trim_blocks` and `lstrip_blocks` on,
//! the loop controls, `raise_exception(msg)`, Python string methods (`.strip()`, ...), and the
//! variables `messages`, `add_generation_prompt`, `bos_token`, `eos_token`.
//!
//! The template `gpt sft` gives a model that has none ([`DEFAULT_TEMPLATE`]) marks each turn
//! with a role token added to the vocabulary and ends it with the end-of-text token:
//!
//! ```text
//! <|system|>\nYou are terse.<|endoftext|><|user|>\nHi<|endoftext|><|assistant|>\nHello<|endoftext|>
//! ```
//!
//! so the model learns to stop after its answer, and `gpt chat` stops generating there. Models
//! that already carry a chat template keep theirs.

use crate::error::{Error, Result};
use crate::io::write_atomic;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::path::Path;

/// The file of a model directory holding the chat template (as `transformers` names it).
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// The role tokens [`DEFAULT_TEMPLATE`] uses, added to the vocabulary by `gpt sft`, and the
/// padding token (never trained, never generated).
pub const CHAT_SPECIALS: [&str; 4] = ["<|system|>", "<|user|>", "<|assistant|>", "<|pad|>"];

/// The end-of-text token: the end of every turn in [`DEFAULT_TEMPLATE`] (GPT-2's EOS).
pub const END_OF_TURN: &str = "<|endoftext|>";

/// The template given to a model without one (see the module docs).
pub const DEFAULT_TEMPLATE: &str = "{% for message in messages %}\
{% if message['role'] not in ['system', 'user', 'assistant'] %}\
{{ raise_exception('unknown role ' + message['role']) }}\
{% endif %}\
{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token }}\
{% endfor %}\
{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

/// Who speaks in a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The person.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role named `s` (`system`, `user`, `assistant`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }

    /// Its name in a message.
    pub fn name(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What they say.
    pub content: String,
}

impl Message {
    /// A turn of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// A compiled chat template with the special-token strings it is rendered with.
pub struct ChatTemplate {
    source: String,
    env: minijinja::Environment<'static>,
    /// The end-of-sequence token string (`eos_token`).
    pub eos_token: String,
    /// The beginning-of-sequence token string (`bos_token`; often the same as EOS).
    pub bos_token: String,
    /// The padding token string, if any.
    pub pad_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `origin` (a file) is named in errors.
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
        pad_token: Option<&str>,
        origin: &Path,
    ) -> Result<ChatTemplate> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| Error::file(origin, format!("the chat template does not compile: {e}")))?;
        Ok(ChatTemplate {
            source: source.to_string(),
            env,
            eos_token: eos_token.to_string(),
            bos_token: bos_token.to_string(),
            pad_token: pad_token.map(str::to_string),
        })
    }

    /// [`DEFAULT_TEMPLATE`] with GPT-2's end-of-text token as BOS and EOS and `<|pad|>`.
    pub fn default_template() -> ChatTemplate {
        // The default template is a constant that compiles (tested).
        ChatTemplate::new(
            DEFAULT_TEMPLATE,
            END_OF_TURN,
            END_OF_TURN,
            Some(CHAT_SPECIALS[3]),
            Path::new("<default chat template>"),
        )
        .expect("the default chat template compiles")
    }

    /// The template's Jinja source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's
    /// next answer starts. `origin` is named in errors (a template that raises or fails).
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        origin: &Path,
    ) -> Result<String> {
        let tpl = self
            .env
            .get_template("chat")
            .map_err(|e| Error::file(origin, format!("chat template: {e}")))?;
        tpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
            pad_token => &self.pad_token,
        })
        .map_err(|e| Error::file(origin, format!("the chat template failed to render: {e}")))
    }

    /// The chat template stored in `dir`'s `tokenizer_config.json`, or `None` when the model
    /// has none (no file, or no `chat_template` field).
    pub fn load(dir: &Path) -> Result<Option<ChatTemplate>> {
        let path = dir.join(TOKENIZER_CONFIG_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not valid JSON: {e}")))?;
        let source = match v.get("chat_template") {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            // transformers also allows a list of named templates; take "default".
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .ok_or_else(|| {
                    Error::file(
                        &path,
                        "chat_template is a list without a template named \"default\"",
                    )
                })?
                .to_string(),
            Some(_) => {
                return Err(Error::file(
                    &path,
                    "chat_template must be a string (a Jinja template)",
                ))
            }
        };
        let token = |field: &str| -> Option<String> {
            match v.get(field)? {
                Value::String(s) => Some(s.clone()),
                // The older form {"content": "...", ...}.
                Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let eos = token("eos_token").unwrap_or_default();
        let bos = token("bos_token").unwrap_or_else(|| eos.clone());
        let pad = token("pad_token");
        ChatTemplate::new(&source, &bos, &eos, pad.as_deref(), &path).map(Some)
    }

    /// Writes `tokenizer_config.json` into `dir` with this template, the token strings and
    /// `added_tokens_decoder` for `specials` (string, id), atomically.
    pub fn save(
        &self,
        dir: &Path,
        specials: &[(String, u32)],
        model_max_length: usize,
    ) -> Result<()> {
        let mut added = Map::new();
        for (s, id) in specials {
            added.insert(
                id.to_string(),
                serde_json::json!({
                    "content": s, "lstrip": false, "normalized": false, "rstrip": false,
                    "single_word": false, "special": true
                }),
            );
        }
        let v = serde_json::json!({
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": false,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": null,
            "model_max_length": model_max_length,
            "clean_up_tokenization_spaces": false,
            "added_tokens_decoder": added,
            "chat_template": self.source,
        });
        let bytes = serde_json::to_vec_pretty(&v)
            .map_err(|e| Error::usage("ChatTemplate::save", e.to_string()))?;
        write_atomic(&dir.join(TOKENIZER_CONFIG_FILE), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convo() -> Vec<Message> {
        vec![
            Message::new(Role::System, "Be terse."),
            Message::new(Role::User, "Hi"),
            Message::new(Role::Assistant, "Hello"),
        ]
    }

    #[test]
    fn the_default_template_renders_turns_with_role_tokens() {
        let t = ChatTemplate::default_template();
        let p = Path::new("x");
        assert_eq!(
            t.render(&convo(), false, p).unwrap(),
            "<|system|>\nBe terse.<|endoftext|><|user|>\nHi<|endoftext|><|assistant|>\nHello<|endoftext|>"
        );
        assert_eq!(
            t.render(&convo()[..2], true, p).unwrap(),
            "<|system|>\nBe terse.<|endoftext|><|user|>\nHi<|endoftext|><|assistant|>\n"
        );
    }

    #[test]
    fn a_template_that_raises_names_its_file() {
        let t = ChatTemplate::new(
            "{{ raise_exception('no system role') }}",
            "",
            "",
            None,
            Path::new("m/tokenizer_config.json"),
        )
        .unwrap();
        let e = t.render(&convo(), false, Path::new("m/tokenizer_config.json"));
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.contains("m/tokenizer_config.json") && msg.contains("no system role"),
            "{msg}"
        );
        let bad = ChatTemplate::new("{% for %}", "", "", None, Path::new("bad.json"));
        assert!(bad.unwrap_err().to_string().contains("bad.json"));
    }

    #[test]
    fn python_string_methods_work_as_in_transformers() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{{ m['content'].strip() | upper }}{% if not loop.last %}|{% endif %}{% endfor %}",
            "",
            "",
            None,
            Path::new("x"),
        )
        .unwrap();
        let msgs = vec![
            Message::new(Role::User, "  a "),
            Message::new(Role::Assistant, "b\n"),
        ];
        assert_eq!(t.render(&msgs, false, Path::new("x")).unwrap(), "A|B");
    }
}
