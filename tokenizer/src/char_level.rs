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
        CharTokenizer { chars, ids }
    }

    /// The characters, by id.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
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
        ids.iter()
            .map(|&id| {
                self.chars
                    .get(id as usize)
                    .copied()
                    .ok_or(TokenizerError::TokenOutOfRange {
                        id,
                        vocab_size: self.chars.len(),
                    })
            })
            .collect()
    }

    /// The JSON form: `{"type": "char", "chars": [...]}`.
    pub fn to_json(&self) -> String {
        let chars: Vec<String> = self.chars.iter().map(|c| c.to_string()).collect();
        // "type" first so the kind is visible at the top of the file; strings always
        // serialize.
        format!(
            "{{\"type\": \"char\", \"chars\": {}}}",
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
        let tok = CharTokenizer::from_chars(chars.clone());
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
