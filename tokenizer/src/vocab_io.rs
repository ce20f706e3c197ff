//! Reading and writing tokenizer files: GPT-2's `vocab.json` + `merges.txt`, and Hugging
//! Face `tokenizer.json` files of byte-level BPE models.
//!
//! - `vocab.json`: `{"token string": id, …}`, token strings in GPT-2's byte↔unicode
//!   spelling (`byte_level`).
//! - `merges.txt`: an optional `#version` line, then one rule `left right` per line, in rank
//!   order.
//! - `tokenizer.json`: `model.vocab` and `model.merges` as above (merges as `"a b"` strings
//!   or `["a", "b"]` pairs), specials in `added_tokens`. Only what our encoder does exactly
//!   is accepted: a `ByteLevel` pre-tokenizer without prefix space and with GPT-2's regex,
//!   no normalizer, no dropout, no subword prefix/suffix. Anything else is an error naming
//!   the key, rather than silently different ids.
//!
//! Special tokens of a bare `vocab.json`: entries shaped `<|…|>` that no merge rule produces
//! and that are not single bytes (GPT-2's `<|endoftext|>` is one; it has no merge rule, as
//! OpenAI added it to the encoder by hand). Every error names the file and the line or key.

use crate::byte_level::{bytes_to_token_string, token_string_to_bytes};
use crate::error::{Result, TokenizerError};
use crate::tokenizer::Tokenizer;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// GPT-2's `vocab.json`, bundled so `Tokenizer::gpt2()` works offline.
pub const GPT2_VOCAB_JSON: &[u8] = include_bytes!("../data/gpt2/vocab.json");
/// GPT-2's `merges.txt`, bundled.
pub const GPT2_MERGES_TXT: &str = include_str!("../data/gpt2/merges.txt");

/// Ids at or above this are rejected (a typo'd id must not allocate gigabytes).
const MAX_ID: u64 = 1 << 21;

/// One merge rule as read from a file, before ids are resolved.
struct RawMerge {
    /// 1-based line (merges.txt) or index (tokenizer.json) for errors.
    line: usize,
    text: String,
    left: String,
    right: String,
}

/// Reads a whole file, naming it on failure.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| TokenizerError::io(path, e))
}

/// Writes a whole file atomically, naming it on failure: into a temporary sibling, synced, then
/// renamed over `path` (and the directory synced), so a crash or a full disk never leaves a
/// half-written `vocab.json` or `merges.txt` that would load as a different tokenizer. The same
/// scheme as `gpt::io::write_atomic` (this crate does not depend on `gpt`).
pub(crate) fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(TokenizerError::io(path, e));
    }
    // Best effort: some file systems cannot open a directory for syncing.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Splits merges.txt into rules: skips a first `#version` line and blank lines.
fn parse_merges_txt(text: &str, path: &Path) -> Result<Vec<RawMerge>> {
    let mut out = Vec::with_capacity(text.len() / 9);
    for (i, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        let (left, right) = match (parts.next(), parts.next(), parts.next()) {
            (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => (l, r),
            _ => {
                return Err(TokenizerError::BadMerge {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: line.to_string(),
                    reason: "expected two tokens separated by one space".into(),
                })
            }
        };
        out.push(RawMerge {
            line: i + 1,
            text: line.to_string(),
            left: left.to_string(),
            right: right.to_string(),
        });
    }
    Ok(out)
}

/// Parses JSON bytes, naming the file and position of a syntax error.
fn parse_json(bytes: &[u8], path: &Path) -> Result<Value> {
    serde_json::from_slice(bytes).map_err(|e| TokenizerError::json(path, &e))
}

/// Reads a `{"token": id}` object into (token, id) pairs, checking every id.
fn vocab_entries(obj: &serde_json::Map<String, Value>, path: &Path) -> Result<Vec<(String, u32)>> {
    let mut entries = Vec::with_capacity(obj.len());
    for (key, value) in obj {
        let id = match value.as_u64() {
            Some(id) if id < MAX_ID => id as u32,
            _ => {
                return Err(TokenizerError::BadVocabEntry {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    reason: format!("id must be an integer in 0..{MAX_ID}, found {value}"),
                })
            }
        };
        entries.push((key.clone(), id));
    }
    Ok(entries)
}

/// Resolves vocabulary strings and merge rules into a `Tokenizer`.
///
/// `specials` are the declared special tokens (from `added_tokens`); with `guess_specials`
/// (bare vocab.json), unreachable `<|…|>` entries become specials as well.
fn assemble(
    vocab: Vec<(String, u32)>,
    merges: Vec<RawMerge>,
    declared: Vec<(String, u32)>,
    guess_specials: bool,
    vocab_path: &Path,
    merges_path: &Path,
) -> Result<Tokenizer> {
    let declared_set: FxHashSet<&str> = declared.iter().map(|s| s.0.as_str()).collect();
    let n = vocab.iter().map(|e| e.1 as usize + 1).max().unwrap_or(0);
    let mut ordinary: Vec<Option<Vec<u8>>> = vec![None; n];
    let mut owner: Vec<Option<&str>> = vec![None; n];
    let mut by_string: FxHashMap<&str, u32> = FxHashMap::default();
    by_string.reserve(vocab.len());
    for (key, id) in &vocab {
        if let Some(other) = owner[*id as usize] {
            return Err(TokenizerError::BadVocabEntry {
                path: vocab_path.to_path_buf(),
                key: key.clone(),
                reason: format!("id {id} is also the id of {other:?}"),
            });
        }
        owner[*id as usize] = Some(key);
        by_string.insert(key, *id);
        if declared_set.contains(key.as_str()) {
            continue;
        }
        match token_string_to_bytes(key) {
            Some(bytes) if !bytes.is_empty() => ordinary[*id as usize] = Some(bytes),
            _ => {
                return Err(TokenizerError::BadVocabEntry {
                    path: vocab_path.to_path_buf(),
                    key: key.clone(),
                    reason: "not a byte-level token: it has a character outside GPT-2's 256 \
                             byte characters (or is empty); is this a byte-level BPE vocabulary?"
                        .into(),
                })
            }
        }
    }
    let mut rules = Vec::with_capacity(merges.len());
    let mut produced: FxHashSet<u32> = FxHashSet::default();
    for m in &merges {
        let bad = |reason: String| TokenizerError::BadMerge {
            path: merges_path.to_path_buf(),
            line: m.line,
            text: m.text.clone(),
            reason,
        };
        let id_of = |s: &str| -> Result<u32> {
            by_string
                .get(s)
                .copied()
                .ok_or_else(|| bad(format!("token {s:?} is not in the vocabulary")))
        };
        let (l, r) = (id_of(&m.left)?, id_of(&m.right)?);
        let merged = format!("{}{}", m.left, m.right);
        let id = by_string.get(merged.as_str()).copied().ok_or_else(|| {
            bad(format!(
                "the merged token {merged:?} is not in the vocabulary"
            ))
        })?;
        if ordinary[l as usize].is_none() || ordinary[r as usize].is_none() {
            return Err(bad("a special token cannot be part of a merge".into()));
        }
        produced.insert(id);
        rules.push((l, r, id));
    }
    let mut specials = declared;
    if guess_specials {
        for (key, id) in &vocab {
            let single = ordinary[*id as usize]
                .as_ref()
                .is_some_and(|b| b.len() == 1);
            if key.starts_with("<|") && key.ends_with("|>") && !single && !produced.contains(id) {
                ordinary[*id as usize] = None;
                specials.push((key.clone(), *id));
            }
        }
    }
    Tokenizer::from_parts(ordinary, rules, specials).map_err(|b| TokenizerError::BadVocabEntry {
        path: vocab_path.to_path_buf(),
        key: bytes_to_token_string(&[b]),
        reason: format!(
            "missing: byte-level BPE needs a token for each of the 256 bytes (byte 0x{b:02x})"
        ),
    })
}

impl Tokenizer {
    /// GPT-2's tokenizer from the bundled files (50257 ids, `<|endoftext|>` = 50256).
    pub fn gpt2() -> Tokenizer {
        // The bundled files are fixed at compile time and loaded by every test run, so this
        // cannot fail at run time.
        Tokenizer::from_vocab_merges_bytes(
            GPT2_VOCAB_JSON,
            Path::new("<bundled gpt2>/vocab.json"),
            GPT2_MERGES_TXT,
            Path::new("<bundled gpt2>/merges.txt"),
        )
        .expect("bundled GPT-2 files are valid")
    }

    /// The bundled GPT-2 tokenizer, built once per process and shared (building one takes
    /// about 70 ms: parsing 1 MB of JSON and checking which tokens encode to themselves).
    pub fn gpt2_shared() -> &'static Tokenizer {
        static GPT2: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
        GPT2.get_or_init(Tokenizer::gpt2)
    }

    /// Loads `vocab.json` + `merges.txt` (GPT-2 / Hugging Face "slow" layout).
    pub fn from_vocab_merges_files(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
        let v = read_file(vocab)?;
        let m = read_file(merges)?;
        let m = std::str::from_utf8(&m)
            .map_err(|e| TokenizerError::not_utf8(merges, &m, e.valid_up_to()))?;
        Tokenizer::from_vocab_merges_bytes(&v, vocab, m, merges)
    }

    /// Loads from the contents of `vocab.json` and `merges.txt`; the paths name them in errors.
    pub fn from_vocab_merges_bytes(
        vocab_json: &[u8],
        vocab_path: &Path,
        merges_txt: &str,
        merges_path: &Path,
    ) -> Result<Tokenizer> {
        let value = parse_json(vocab_json, vocab_path)?;
        let Value::Object(obj) = value else {
            return Err(TokenizerError::BadKey {
                path: vocab_path.to_path_buf(),
                key: "(top level)".into(),
                reason: "expected an object of token string → id".into(),
            });
        };
        let vocab = vocab_entries(&obj, vocab_path)?;
        let merges = parse_merges_txt(merges_txt, merges_path)?;
        assemble(vocab, merges, Vec::new(), true, vocab_path, merges_path)
    }

    /// Loads a Hugging Face `tokenizer.json` of a byte-level BPE model.
    pub fn from_tokenizer_json_file(path: &Path) -> Result<Tokenizer> {
        let bytes = read_file(path)?;
        Tokenizer::from_tokenizer_json_bytes(&bytes, path)
    }

    /// Loads a `tokenizer.json` from its contents; `path` names it in errors.
    pub fn from_tokenizer_json_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
        let root = parse_json(bytes, path)?;
        let bad = |key: &str, reason: &str| TokenizerError::BadKey {
            path: path.to_path_buf(),
            key: key.into(),
            reason: reason.into(),
        };
        let model = root
            .get("model")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("model", "missing or not an object"))?;
        match model.get("type").and_then(Value::as_str) {
            Some("BPE") | None => {}
            Some(other) => {
                return Err(bad(
                    "model.type",
                    &format!("{other:?} is not supported; only byte-level \"BPE\" models are"),
                ))
            }
        }
        let null_or = |key: &str, ok: &dyn Fn(&Value) -> bool| -> Result<()> {
            match model.get(key) {
                None | Some(Value::Null) => Ok(()),
                Some(v) if ok(v) => Ok(()),
                Some(v) => Err(bad(
                    &format!("model.{key}"),
                    &format!("{v} is not supported"),
                )),
            }
        };
        null_or("dropout", &|_| false)?;
        null_or("continuing_subword_prefix", &|v| v.as_str() == Some(""))?;
        null_or("end_of_word_suffix", &|v| v.as_str() == Some(""))?;
        null_or("byte_fallback", &|v| v.as_bool() == Some(false))?;
        null_or("ignore_merges", &|v| v.as_bool() == Some(false))?;
        match root.get("normalizer") {
            None | Some(Value::Null) => {}
            Some(_) => {
                return Err(bad(
                    "normalizer",
                    "normalizers are not supported; expected null",
                ))
            }
        }
        let pre = root
            .get("pre_tokenizer")
            .ok_or_else(|| bad("pre_tokenizer", "missing; expected ByteLevel"))?;
        if pre.get("type").and_then(Value::as_str) != Some("ByteLevel") {
            return Err(bad(
                "pre_tokenizer.type",
                "only a ByteLevel pre-tokenizer (GPT-2's regex) is supported",
            ));
        }
        if pre.get("add_prefix_space").and_then(Value::as_bool) == Some(true) {
            return Err(bad(
                "pre_tokenizer.add_prefix_space",
                "true is not supported (GPT-2 uses false)",
            ));
        }
        if pre.get("use_regex").and_then(Value::as_bool) == Some(false) {
            return Err(bad("pre_tokenizer.use_regex", "false is not supported"));
        }
        let vocab_obj = model
            .get("vocab")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("model.vocab", "missing or not an object"))?;
        let vocab = vocab_entries(vocab_obj, path)?;
        let merges_arr = model
            .get("merges")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("model.merges", "missing or not an array"))?;
        let mut merges = Vec::with_capacity(merges_arr.len());
        for (i, m) in merges_arr.iter().enumerate() {
            let (left, right) = match m {
                Value::String(s) => match s.split_once(' ') {
                    Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains(' ') => {
                        (l.to_string(), r.to_string())
                    }
                    _ => (String::new(), String::new()),
                },
                Value::Array(a) if a.len() == 2 => (
                    a[0].as_str().unwrap_or("").to_string(),
                    a[1].as_str().unwrap_or("").to_string(),
                ),
                _ => (String::new(), String::new()),
            };
            if left.is_empty() || right.is_empty() {
                return Err(TokenizerError::BadMerge {
                    path: path.to_path_buf(),
                    line: i + 1,
                    text: m.to_string(),
                    reason: "model.merges entries must be \"left right\" or [\"left\", \"right\"]"
                        .into(),
                });
            }
            merges.push(RawMerge {
                line: i + 1,
                text: m.to_string(),
                left,
                right,
            });
        }
        let mut specials = Vec::new();
        if let Some(added) = root.get("added_tokens") {
            let arr = added
                .as_array()
                .ok_or_else(|| bad("added_tokens", "not an array"))?;
            for (i, t) in arr.iter().enumerate() {
                let content = t.get("content").and_then(Value::as_str);
                let id = t
                    .get("id")
                    .and_then(Value::as_u64)
                    .filter(|&id| id < MAX_ID);
                match (content, id) {
                    (Some(c), Some(id)) => specials.push((c.to_string(), id as u32)),
                    _ => {
                        return Err(bad(
                            &format!("added_tokens[{i}]"),
                            "needs a string `content` and an integer `id`",
                        ))
                    }
                }
            }
        }
        // Added tokens live in model.vocab too in most files; where one is not, add it so the
        // id → bytes table covers it.
        let mut vocab = vocab;
        for (s, id) in &specials {
            if !vocab.iter().any(|(k, _)| k == s) {
                vocab.push((s.clone(), *id));
            }
        }
        assemble(vocab, merges, specials, false, path, path)
    }

    /// Loads a byte-level BPE tokenizer from a directory (`tokenizer.json`, else
    /// `vocab.json` + `merges.txt`) or a `tokenizer.json` file.
    pub fn from_path(path: &Path) -> Result<Tokenizer> {
        if path.is_dir() {
            let tj = path.join("tokenizer.json");
            if tj.is_file() {
                return Tokenizer::from_tokenizer_json_file(&tj);
            }
            let (v, m) = (path.join("vocab.json"), path.join("merges.txt"));
            if v.is_file() && m.is_file() {
                return Tokenizer::from_vocab_merges_files(&v, &m);
            }
            return Err(TokenizerError::NotFound {
                path: path.to_path_buf(),
            });
        }
        if path.is_file() {
            return Tokenizer::from_tokenizer_json_file(path);
        }
        Err(TokenizerError::NotFound {
            path: path.to_path_buf(),
        })
    }

    /// The vocabulary string of every id (byte-level spelling; specials as themselves).
    fn token_strings(&self) -> Vec<Option<String>> {
        (0..self.vocab_size() as u32)
            .map(|id| {
                if let Some(s) = self
                    .special_tokens()
                    .iter()
                    .find(|t| t.1 == id)
                    .map(|t| t.0.clone())
                {
                    return Some(s);
                }
                self.token_bytes(id).ok().map(bytes_to_token_string)
            })
            .collect()
    }

    /// `vocab.json` contents: `{"token": id, …}` in id order.
    pub fn to_vocab_json(&self) -> String {
        let mut s = String::from("{");
        for (id, tok) in self.token_strings().iter().enumerate() {
            if let Some(tok) = tok {
                if s.len() > 1 {
                    s.push_str(", ");
                }
                // Serializing a string to JSON cannot fail.
                s.push_str(&serde_json::to_string(tok).unwrap_or_default());
                let _ = write!(s, ": {id}");
            }
        }
        s.push('}');
        s
    }

    /// `merges.txt` contents: `#version: 0.2`, then `left right` per rule in rank order.
    pub fn to_merges_txt(&self) -> String {
        let strings = self.token_strings();
        let mut s = String::from("#version: 0.2\n");
        for &(l, r, _) in self.merges() {
            let name = |id: u32| strings[id as usize].as_deref().unwrap_or("");
            let _ = writeln!(s, "{} {}", name(l), name(r));
        }
        s
    }

    /// A Hugging Face `tokenizer.json` (loadable by Python `tokenizers`).
    pub fn to_tokenizer_json(&self) -> String {
        let strings = self.token_strings();
        let added: Vec<Value> = self
            .special_tokens()
            .iter()
            .map(|(content, id)| {
                serde_json::json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                })
            })
            .collect();
        let byte_level = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        });
        let mut vocab = serde_json::Map::new();
        for (id, tok) in strings.iter().enumerate() {
            if let Some(tok) = tok {
                vocab.insert(tok.clone(), Value::from(id));
            }
        }
        let merges: Vec<Value> = self
            .merges()
            .iter()
            .map(|&(l, r, _)| {
                let name = |id: u32| strings[id as usize].clone().unwrap_or_default();
                Value::from(format!("{} {}", name(l), name(r)))
            })
            .collect();
        let root = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": byte_level,
            "post_processor": byte_level,
            "decoder": byte_level,
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges
            }
        });
        // A `Value` built from strings and numbers always serializes.
        serde_json::to_string(&root).unwrap_or_default()
    }

    /// Writes `vocab.json`, `merges.txt` and `tokenizer.json` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|e| TokenizerError::io(dir, e))?;
        let files = [
            ("vocab.json", self.to_vocab_json()),
            ("merges.txt", self.to_merges_txt()),
            ("tokenizer.json", self.to_tokenizer_json()),
        ];
        let mut written = Vec::new();
        for (name, contents) in files {
            let p = dir.join(name);
            write_file(&p, contents.as_bytes())?;
            written.push(p);
        }
        Ok(written)
    }
}
