//! One handle over either tokenizer kind, chosen from a name or a path (for the CLI and
//! for callers that take `--tokenizer gpt2|DIR|FILE`).

use crate::char_level::CharTokenizer;
use crate::error::{Result, TokenizerError};
use crate::tokenizer::Tokenizer;
use crate::vocab_io::read_file;
use std::path::Path;

/// A byte-level BPE tokenizer or a char-level one.
#[derive(Clone, Debug)]
pub enum AnyTokenizer {
    /// Byte-level BPE (GPT-2, tokenizer.json, or trained).
    Bpe(Box<Tokenizer>),
    /// Character-level.
    Char(CharTokenizer),
}

impl AnyTokenizer {
    /// `gpt2` for the bundled GPT-2 tokenizer; else a directory (`tokenizer.json`,
    /// `vocab.json` + `merges.txt`, or `tokenizer_char.json`) or a file (`tokenizer.json`
    /// or a char tokenizer JSON).
    pub fn load(spec: &str) -> Result<AnyTokenizer> {
        if spec == "gpt2" {
            return Ok(AnyTokenizer::Bpe(Box::new(Tokenizer::gpt2())));
        }
        let path = Path::new(spec);
        if path.is_file() {
            let bytes = read_file(path)?;
            let root: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| TokenizerError::json(path, &e))?;
            if CharTokenizer::is_char_json(&root) {
                return Ok(AnyTokenizer::Char(CharTokenizer::from_json_value(
                    &root, path,
                )?));
            }
            return Ok(AnyTokenizer::Bpe(Box::new(
                Tokenizer::from_tokenizer_json_bytes(&bytes, path)?,
            )));
        }
        let char_json = path.join(crate::char_level::CHAR_TOKENIZER_FILE);
        if path.is_dir() && char_json.is_file() && !path.join("tokenizer.json").is_file() {
            return Ok(AnyTokenizer::Char(CharTokenizer::load(&char_json)?));
        }
        Ok(AnyTokenizer::Bpe(Box::new(Tokenizer::from_path(path)?)))
    }

    /// Number of ids.
    pub fn vocab_size(&self) -> usize {
        match self {
            AnyTokenizer::Bpe(t) => t.vocab_size(),
            AnyTokenizer::Char(t) => t.vocab_size(),
        }
    }

    /// Encodes text; BPE matches special tokens when `specials` is set.
    pub fn encode(&self, text: &str, specials: bool) -> Result<Vec<u32>> {
        match self {
            AnyTokenizer::Bpe(t) if specials => Ok(t.encode_with_specials(text)),
            AnyTokenizer::Bpe(t) => Ok(t.encode_ordinary(text)),
            AnyTokenizer::Char(t) => t.encode(text),
        }
    }

    /// Appends special tokens after the vocabulary (see [`Tokenizer::add_special_tokens`] and
    /// [`CharTokenizer::add_special_tokens`]); returns their ids.
    pub fn add_special_tokens(&mut self, names: &[&str]) -> Result<Vec<u32>> {
        match self {
            AnyTokenizer::Bpe(t) => t.add_special_tokens(names),
            AnyTokenizer::Char(t) => t.add_special_tokens(names),
        }
    }

    /// The id of a special token, if the tokenizer has it.
    pub fn special_id(&self, s: &str) -> Option<u32> {
        match self {
            AnyTokenizer::Bpe(t) => t.special_id(s),
            AnyTokenizer::Char(t) => t.special_id(s),
        }
    }

    /// The special tokens as (string, id), by id.
    pub fn special_tokens(&self) -> Vec<(String, u32)> {
        match self {
            AnyTokenizer::Bpe(t) => t.special_tokens().to_vec(),
            AnyTokenizer::Char(t) => t
                .specials()
                .iter()
                .filter_map(|s| Some((s.clone(), t.special_id(s)?)))
                .collect(),
        }
    }

    /// The bytes of one token.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        match self {
            AnyTokenizer::Bpe(t) => Ok(t.token_bytes(id)?.to_vec()),
            AnyTokenizer::Char(t) => Ok(t.decode(&[id])?.into_bytes()),
        }
    }
}
