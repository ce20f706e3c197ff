//! The vocabulary of a log-key model: three special tokens, then the keys seen in training.
//!
//! Ids: 0 `<s>` (session start, the first token of every sequence), 1 `</s>` (session end: the
//! model learns when a session stops, which is where most HDFS anomalies show), 2 `<unk>` (a key
//! not seen in training: never a target in training, so never predicted, and flagged as unseen
//! by the detectors), then the training keys sorted (numerically when they are numbers).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Session start.
pub const BOS: u32 = 0;
/// Session end.
pub const EOS: u32 = 1;
/// A key unseen in training.
pub const UNK: u32 = 2;
/// The special tokens' names, by id.
pub const SPECIALS: [&str; 3] = ["<s>", "</s>", "<unk>"];
/// File name of the vocabulary in a model directory.
pub const KEYS_FILE: &str = "keys.json";

/// The keys a model knows and their ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyVocab {
    keys: Vec<String>,
    ids: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
struct KeysFile {
    specials: Vec<String>,
    keys: Vec<String>,
}

impl KeyVocab {
    /// The vocabulary of the keys in `sessions` (each key once).
    pub fn build<'a>(keys: impl IntoIterator<Item = &'a str>) -> KeyVocab {
        let mut all: Vec<String> = keys.into_iter().map(str::to_string).collect();
        all.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            _ => a.cmp(b),
        });
        all.dedup();
        KeyVocab::from_keys(all)
    }

    fn from_keys(keys: Vec<String>) -> KeyVocab {
        let ids = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.clone(), (i + SPECIALS.len()) as u32))
            .collect();
        KeyVocab { keys, ids }
    }

    /// Tokens in the model's vocabulary (specials and keys).
    pub fn size(&self) -> usize {
        self.keys.len() + SPECIALS.len()
    }

    /// Number of keys (without the specials).
    pub fn n_keys(&self) -> usize {
        self.keys.len()
    }

    /// The id of `key`, [`UNK`] when it was not seen in training.
    pub fn id(&self, key: &str) -> u32 {
        self.ids.get(key).copied().unwrap_or(UNK)
    }

    /// The name of token `id` (a key, or a special token's name).
    pub fn name(&self, id: u32) -> &str {
        let i = id as usize;
        if i < SPECIALS.len() {
            SPECIALS[i]
        } else {
            self.keys
                .get(i - SPECIALS.len())
                .map_or("<?>", String::as_str)
        }
    }

    /// `<s> keys... </s>` as ids (`end`: with the end token).
    pub fn encode(&self, keys: &[String], end: bool) -> Vec<u32> {
        let mut ids = Vec::with_capacity(keys.len() + 2);
        ids.push(BOS);
        ids.extend(keys.iter().map(|k| self.id(k)));
        if end {
            ids.push(EOS);
        }
        ids
    }

    /// Writes `keys.json` into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let file = KeysFile {
            specials: SPECIALS.iter().map(|s| s.to_string()).collect(),
            keys: self.keys.clone(),
        };
        let text = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::usage("KeyVocab::save", e.to_string()))?;
        crate::io::atomic::write_atomic(&dir.join(KEYS_FILE), &text)
    }

    /// Reads `keys.json` from `dir`; an error names the file when it is missing or malformed.
    pub fn load(dir: &Path) -> Result<KeyVocab> {
        let path = dir.join(KEYS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::file(
                &path,
                format!("{e}; a log-key model directory (made by `gpt logs train`) has one"),
            )
        })?;
        let file: KeysFile =
            serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
        if file.specials != SPECIALS {
            return Err(Error::file(
                &path,
                format!(
                    "special tokens {:?}, expected {:?} (made by another version?)",
                    file.specials, SPECIALS
                ),
            ));
        }
        let vocab = KeyVocab::from_keys(file.keys);
        if vocab.ids.len() != vocab.keys.len() {
            return Err(Error::file(&path, "a key is listed twice"));
        }
        Ok(vocab)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_numerically_and_unseen_keys_are_unk() {
        let v = KeyVocab::build(["22", "5", "E3", "5", "100"]);
        assert_eq!(v.size(), 7);
        assert_eq!(v.id("5"), 3);
        assert_eq!(v.id("22"), 4);
        assert_eq!(v.id("100"), 5);
        assert_eq!(v.id("E3"), 6);
        assert_eq!(v.id("7"), UNK);
        assert_eq!(v.name(4), "22");
        assert_eq!(v.name(EOS), "</s>");
        let ids = v.encode(&["5".into(), "9".into()], true);
        assert_eq!(ids, [BOS, 3, UNK, EOS]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = std::env::temp_dir().join(format!("gpt-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let v = KeyVocab::build(["1", "2", "x"]);
        v.save(&dir).unwrap();
        assert_eq!(KeyVocab::load(&dir).unwrap(), v);
        std::fs::write(dir.join(KEYS_FILE), "{").unwrap();
        let e = KeyVocab::load(&dir).unwrap_err().to_string();
        assert!(e.contains("keys.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
