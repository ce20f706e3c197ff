//! `gpt prepare`: text files, folders and JSONL (`text` field) into `train.bin` / `val.bin`
//! token files plus the tokenizer and a `prepare.json` summary.
//!
//! Documents are separated by `<|endoftext|>` (BPE tokenizers) or a blank line (char-level,
//! whose vocabulary has no special token). The validation split is seeded: with at least
//! [`MIN_DOCS_FOR_DOC_SPLIT`] documents, whole documents are assigned at random; with fewer
//! (a single book, say) the last `val_fraction` of the token stream is held out, as nanoGPT does.

use super::tokens::write_token_file;
use crate::error::{Error, Result};
use crate::io::{save_tokenizer, write_atomic};
use crate::rng::Rng;
use crate::tokenizer::{AnyTokenizer, CharTokenizer, ENDOFTEXT};
use std::path::{Path, PathBuf};

/// Below this many documents the split is a contiguous tail of the token stream.
pub const MIN_DOCS_FOR_DOC_SPLIT: usize = 20;

/// What `prepare` produced.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PrepareStats {
    /// Documents read.
    pub documents: usize,
    /// Training tokens.
    pub train_tokens: usize,
    /// Validation tokens.
    pub val_tokens: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Tokenizer kind (`bpe` or `char`).
    pub tokenizer: String,
}

/// Reads a file as UTF-8, naming the file, line and byte offset if it is not.
pub use crate::io::read_text;

/// Collects the documents under `inputs` in a deterministic order.
pub fn read_documents(inputs: &[PathBuf]) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for input in inputs {
        collect_files(input, &mut files)?;
    }
    let mut docs = Vec::new();
    for f in files {
        if f.extension().is_some_and(|e| e == "jsonl") {
            let text = read_text(&f)?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                // Errors name the line as `file:line`, the compiler convention.
                let at = PathBuf::from(format!("{}:{}", f.display(), i + 1));
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| Error::file(&at, format!("invalid JSON: {e}")))?;
                let t = v
                    .get("text")
                    .and_then(|t| t.as_str())
                    .ok_or_else(|| Error::file(&at, "no string field `text`"))?;
                docs.push(t.to_string());
            }
        } else {
            docs.push(read_text(&f)?);
        }
    }
    if docs.iter().all(|d| d.is_empty()) {
        return Err(Error::field(
            "inputs",
            format!("no text found in {inputs:?}; give non-empty text files, folders or JSONL"),
        ));
    }
    Ok(docs)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for e in entries {
        collect_files(&e, out)?;
    }
    Ok(())
}

/// Resolves a tokenizer spec; `char` builds a char-level vocabulary from `docs`.
pub fn tokenizer_for(spec: &str, docs: &[String]) -> Result<AnyTokenizer> {
    if spec == "char" {
        let mut all = String::new();
        for d in docs {
            all.push_str(d);
        }
        all.push('\n');
        return Ok(AnyTokenizer::Char(CharTokenizer::from_text(&all)));
    }
    AnyTokenizer::load(spec).map_err(|e| Error::field("tokenizer", format!("`{spec}`: {e}")))
}

/// Encodes `docs` and writes `train.bin`, `val.bin`, the tokenizer and `prepare.json` to `out`.
pub fn prepare(
    docs: &[String],
    tok: &AnyTokenizer,
    out: &Path,
    val_fraction: f32,
    seed: u64,
) -> Result<PrepareStats> {
    let (sep_ids, kind) = match tok {
        AnyTokenizer::Bpe(t) => {
            let eot = t
                .special_id(ENDOFTEXT)
                .map(|id| vec![id])
                .unwrap_or_default();
            (eot, "bpe")
        }
        AnyTokenizer::Char(_) => (
            tok.encode("\n\n", false)
                .map_err(|e| Error::field("tokenizer", format!("encoding the separator: {e}")))?,
            "char",
        ),
    };
    let encoded: Vec<Vec<u32>> = {
        use rayon::prelude::*;
        docs.par_iter()
            .enumerate()
            .map(|(i, d)| {
                tok.encode(d, false)
                    .map_err(|e| Error::field("tokenizer", format!("encoding document {i}: {e}")))
            })
            .collect::<Result<_>>()?
    };
    let mut train = Vec::new();
    let mut val = Vec::new();
    if docs.len() >= MIN_DOCS_FOR_DOC_SPLIT {
        let mut rng = Rng::new(seed);
        for ids in &encoded {
            let dst = if rng.uniform() < val_fraction {
                &mut val
            } else {
                &mut train
            };
            dst.extend_from_slice(ids);
            dst.extend_from_slice(&sep_ids);
        }
    } else {
        let mut all = Vec::new();
        for (i, ids) in encoded.iter().enumerate() {
            if i > 0 {
                all.extend_from_slice(&sep_ids);
            }
            all.extend_from_slice(ids);
        }
        let n_val = (all.len() as f64 * val_fraction as f64).round() as usize;
        val = all.split_off(all.len() - n_val);
        train = all;
    }
    let v = tok.vocab_size();
    write_token_file(&out.join("train.bin"), &train, v)?;
    write_token_file(&out.join("val.bin"), &val, v)?;
    save_tokenizer(tok, out)?;
    let stats = PrepareStats {
        documents: docs.len(),
        train_tokens: train.len(),
        val_tokens: val.len(),
        vocab_size: v,
        tokenizer: kind.into(),
    };
    let summary = out.join("prepare.json");
    let json =
        serde_json::to_vec_pretty(&stats).map_err(|e| Error::file(&summary, e.to_string()))?;
    write_atomic(&summary, &json)?;
    Ok(stats)
}
