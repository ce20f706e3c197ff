//! The tokenizer files of a model or data directory: BPE as `vocab.json` + `merges.txt` +
//! `tokenizer.json` (what Hugging Face writes), char-level as `tokenizer_char.json`.

use crate::error::{Error, Result};
use crate::tokenizer::{AnyTokenizer, CharTokenizer};
use std::path::Path;

/// File name of a saved char-level tokenizer.
pub const CHAR_TOKENIZER_FILE: &str = "tokenizer_char.json";

/// Saves a tokenizer into `dir` (created if needed).
pub fn save_tokenizer(tok: &AnyTokenizer, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    match tok {
        AnyTokenizer::Bpe(t) => t
            .save(dir)
            .map(|_| ())
            .map_err(|e| Error::file(dir, format!("saving the BPE tokenizer: {e}"))),
        AnyTokenizer::Char(t) => {
            let path = dir.join(CHAR_TOKENIZER_FILE);
            t.save(&path)
                .map_err(|e| Error::file(&path, format!("saving the char tokenizer: {e}")))
        }
    }
}

/// Loads the tokenizer saved in `dir`: `tokenizer_char.json` if present, else the BPE files.
pub fn load_tokenizer(dir: &Path) -> Result<AnyTokenizer> {
    let char_file = dir.join(CHAR_TOKENIZER_FILE);
    if char_file.exists() {
        return CharTokenizer::load(&char_file)
            .map(AnyTokenizer::Char)
            .map_err(|e| {
                // The tokenizer crate's message already starts with the path: name it once.
                let msg = e.to_string();
                let prefix = format!("{}: ", char_file.display());
                let reason = msg.strip_prefix(&prefix).unwrap_or(&msg);
                Error::file(&char_file, reason)
            });
    }
    AnyTokenizer::load(&dir.to_string_lossy()).map_err(|e| {
        Error::file(
            dir,
            format!("no usable tokenizer ({e}); a model directory holds tokenizer.json or vocab.json + merges.txt, or {CHAR_TOKENIZER_FILE}"),
        )
    })
}
