//! A character-level tokenizer for tiny models (nanoGPT's `shakespeare_char`).
//!
//! The vocabulary is the sorted set of distinct characters of the training text; id = index.
//! It is saved as a small JSON file, `{"type": "char", "chars": ["\n", " ", "!", …]}` (a list,
//! not one string, so each entry is visibly one character), and loaded back with every entry
//! checked.

use crate::error::{Result, TokenizerError};
use crate::vocab_io::{read_file, write_file};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::path::Path;

/// File name of a char tokenizer saved in a model, data or tokenizer directory.
pub const CHAR_TOKENIZER_FILE: &str = "tokenizer_char.json";

/// Character-level tokenizer: one id per distinct character of the corpus.
#[derive(Clone, Debug, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: FxHashMap<char, u32>,
    /// Special tokens after the characters (id = `chars.len() + i`); text never encodes to them.
    specials: Vec<String>,
}

impl CharTokenizer {
    /// The tokenizer whose vocabulary is the sorted distinct characters of `text`.
    pub fn from_text(text: &str) -> CharTokenizer {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        CharTokenizer::from_chars(chars)
    }

    /// A tokenizer over `chars` (sorted and deduplicated here).
    pub fn from_chars(mut chars: Vec<char>) -> CharTokenizer {
        chars.sort_unstable();
        chars.dedup();
        let ids = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        CharTokenizer {
            chars,
            ids,
            specials: Vec::new(),
        }
    }

    /// The characters, by id.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Number of ids: the characters, then the special tokens.
    pub fn vocab_size(&self) -> usize {
        self.chars.len() + self.specials.len()
    }

    /// The special tokens, in id order after the characters.
    pub fn specials(&self) -> &[String] {
        &self.specials
    }

    /// The id of special token `s`.
    pub fn special_id(&self, s: &str) -> Option<u32> {
        self.specials
            .iter()
            .position(|x| x == s)
            .map(|i| (self.chars.len() + i) as u32)
    }

    /// Appends special tokens after every existing id and returns the id of each (one already
    /// present keeps its id). They are saved in the JSON form (`"specials"`), decode to their
    /// string, and are never produced by [`CharTokenizer::encode`]. A one-character string
    /// would be ambiguous with the characters, so it (and the empty string) is an error.
    pub fn add_special_tokens(&mut self, names: &[&str]) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(names.len());
        for &name in names {
            if let Some(id) = self.special_id(name) {
                ids.push(id);
                continue;
            }
            if name.chars().count() < 2 {
                return Err(TokenizerError::BadSpecial {
                    name: name.to_string(),
                    reason: "a char tokenizer's special token needs at least two characters".into(),
                });
            }
            self.specials.push(name.to_string());
            ids.push((self.vocab_size() - 1) as u32);
        }
        Ok(ids)
    }

    /// Ids of `text`; an error naming the first character not in the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.char_indices()
            .map(|(offset, ch)| {
                self.ids
                    .get(&ch)
                    .copied()
                    .ok_or(TokenizerError::UnknownChar {
                        ch,
                        code: ch as u32,
                        offset,
                        vocab_size: self.chars.len(),
                    })
            })
            .collect()
    }

    /// Text of `ids`; an error naming an id outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut out = String::new();
        for &id in ids {
            let i = id as usize;
            if let Some(&c) = self.chars.get(i) {
                out.push(c);
            } else if let Some(sp) = self.specials.get(i - self.chars.len()) {
                out.push_str(sp);
            } else {
                return Err(TokenizerError::TokenOutOfRange {
                    id,
                    vocab_size: self.vocab_size(),
                });
            }
        }
        Ok(out)
    }

    /// The JSON form: `{"type": "char", "chars": [...]}`, plus `"specials": [...]` if any.
    pub fn to_json(&self) -> String {
        let chars: Vec<String> = self.chars.iter().map(|c| c.to_string()).collect();
        // "type" first so the kind is visible at the top of the file; strings always
        // serialize.
        let specials = if self.specials.is_empty() {
            String::new()
        } else {
            format!(
                ", \"specials\": {}",
                serde_json::to_string(&self.specials).unwrap_or_default()
            )
        };
        format!(
            "{{\"type\": \"char\", \"chars\": {}{specials}}}",
            serde_json::to_string(&chars).unwrap_or_default()
        )
    }

    /// Writes the JSON form to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_file(path, self.to_json().as_bytes())
    }

    /// Reads the JSON form from `path`.
    pub fn load(path: &Path) -> Result<CharTokenizer> {
        let bytes = read_file(path)?;
        CharTokenizer::from_json_bytes(&bytes, path)
    }

    /// Parses the JSON form; `path` names the file in errors.
    pub fn from_json_bytes(bytes: &[u8], path: &Path) -> Result<CharTokenizer> {
        let root: Value =
            serde_json::from_slice(bytes).map_err(|e| TokenizerError::json(path, &e))?;
        CharTokenizer::from_json_value(&root, path)
    }

    /// Reads the JSON form from an already parsed value; `path` names the file in errors.
    pub fn from_json_value(root: &Value, path: &Path) -> Result<CharTokenizer> {
        let bad = |key: String, reason: &str| TokenizerError::BadKey {
            path: path.to_path_buf(),
            key,
            reason: reason.into(),
        };
        if root.get("type").and_then(Value::as_str) != Some("char") {
            return Err(bad("type".into(), "expected \"char\""));
        }
        let list = root
            .get("chars")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("chars".into(), "missing or not an array"))?;
        let mut chars = Vec::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            let s = v.as_str().unwrap_or("");
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(c), None) => chars.push(c),
                _ => {
                    return Err(bad(
                        format!("chars[{i}]"),
                        "expected a one-character string",
                    ))
                }
            }
        }
        let n = chars.len();
        let mut tok = CharTokenizer::from_chars(chars.clone());
        if let Some(sp) = root.get("specials") {
            let list = sp
                .as_array()
                .ok_or_else(|| bad("specials".into(), "not an array"))?;
            for (i, v) in list.iter().enumerate() {
                let name = v
                    .as_str()
                    .ok_or_else(|| bad(format!("specials[{i}]"), "not a string"))?;
                tok.add_special_tokens(&[name])
                    .map_err(|e| bad(format!("specials[{i}]"), &e.to_string()))?;
            }
        }
        if tok.chars != chars || tok.chars.len() != n {
            return Err(bad(
                "chars".into(),
                "characters must be sorted and distinct",
            ));
        }
        Ok(tok)
    }

    /// Whether a parsed JSON file is a char tokenizer (`"type": "char"`).
    pub fn is_char_json(root: &Value) -> bool {
        root.get("type").and_then(Value::as_str) == Some("char")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let t = CharTokenizer::from_text("hello, world\n");
        assert_eq!(t.vocab_size(), 10);
        let ids = t.encode("hello").unwrap();
        assert_eq!(t.decode(&ids).unwrap(), "hello");
        assert!(matches!(
            t.encode("z"),
            Err(TokenizerError::UnknownChar { ch: 'z', .. })
        ));
        assert!(t.decode(&[10]).is_err());
        let back = CharTokenizer::from_json_bytes(t.to_json().as_bytes(), Path::new("x")).unwrap();
        assert_eq!(back, t);
        let err = CharTokenizer::from_json_bytes(
            br#"{"type":"char","chars":["ab"]}"#,
            Path::new("c.json"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("c.json") && err.contains("chars[0]"), "{err}");
    }
}
