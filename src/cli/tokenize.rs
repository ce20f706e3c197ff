//! `gpt tokenize`: encode files (or standard input) and print ids, a count, the tokens, or
//! JSON lines.
//!
//! ```text
//! gpt tokenize [--tokenizer gpt2|DIR|FILE] [--format ids|count|tokens|json] [--lossy]
//!              [--ordinary] [FILE...]
//! ```
//! Special-token strings (`<|endoftext|>`) in the text become their ids, as document
//! separators usually should; `--ordinary` encodes them as plain text instead. Input must be
//! UTF-8; `--lossy` replaces invalid bytes with U+FFFD instead of stopping with an error
//! that names the file and byte offset.

use super::CliResult;
use clap::{Args, ValueEnum};
use gpt_tokenizer::{AnyTokenizer, TokenizerError};
use std::io::{Read, Write};
use std::path::PathBuf;

/// What `gpt tokenize` prints for each input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenizeFormat {
    /// The ids on one line, separated by spaces.
    Ids,
    /// The number of tokens (and the file name when there are several files).
    Count,
    /// One token per line: id, tab, the token's text as a JSON string.
    Tokens,
    /// One JSON object per input: {"file", "count", "ids"}.
    Json,
}

/// Options of `gpt tokenize`.
#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// `gpt2` (bundled), a directory (tokenizer.json, vocab.json + merges.txt, or
    /// tokenizer_char.json), or a tokenizer.json / char tokenizer JSON file.
    #[arg(long, default_value = "gpt2")]
    pub tokenizer: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TokenizeFormat::Ids)]
    pub format: TokenizeFormat,
    /// Replace invalid UTF-8 with U+FFFD instead of failing.
    #[arg(long)]
    pub lossy: bool,
    /// Encode special-token strings such as <|endoftext|> as plain text.
    #[arg(long)]
    pub ordinary: bool,
    /// Text files to encode (standard input when none).
    pub files: Vec<PathBuf>,
}

/// Reads one input as text, failing (or replacing, with `lossy`) on invalid UTF-8.
fn read_text(
    path: Option<&PathBuf>,
    lossy: bool,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let shown = path.cloned().unwrap_or_else(|| PathBuf::from("-"));
    let bytes = match path {
        Some(p) => std::fs::read(p).map_err(|e| TokenizerError::io(p, e))?,
        None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| TokenizerError::io("-", e))?;
            buf
        }
    };
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) if lossy => Ok(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let hint =
                "convert the file to UTF-8, or pass --lossy to replace invalid bytes with U+FFFD";
            Err(gpt::io::text::utf8_error(&shown, e.as_bytes(), at, hint).into())
        }
    }
}

/// Runs `gpt tokenize`.
pub fn run(args: TokenizeArgs) -> CliResult {
    let tok = AnyTokenizer::load(&args.tokenizer)?;
    let inputs: Vec<Option<&PathBuf>> = if args.files.is_empty() {
        vec![None]
    } else {
        args.files.iter().map(Some).collect()
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total = 0usize;
    for input in &inputs {
        let text = read_text(*input, args.lossy)?;
        let ids = tok.encode(&text, !args.ordinary)?;
        total += ids.len();
        let name = input.map_or("-".to_string(), |p| p.display().to_string());
        match args.format {
            TokenizeFormat::Ids => {
                let line: Vec<String> = ids.iter().map(u32::to_string).collect();
                writeln!(out, "{}", line.join(" "))?;
            }
            TokenizeFormat::Count if inputs.len() > 1 => writeln!(out, "{}\t{name}", ids.len())?,
            TokenizeFormat::Count => writeln!(out, "{}", ids.len())?,
            TokenizeFormat::Tokens => {
                for &id in &ids {
                    let bytes = tok.token_bytes(id)?;
                    let shown = serde_json::to_string(&String::from_utf8_lossy(&bytes))?;
                    writeln!(out, "{id}\t{shown}")?;
                }
            }
            TokenizeFormat::Json => {
                let obj = serde_json::json!({"file": name, "count": ids.len(), "ids": ids});
                writeln!(out, "{obj}")?;
            }
        }
    }
    if args.format == TokenizeFormat::Count && inputs.len() > 1 {
        writeln!(out, "{total}\ttotal")?;
    }
    out.flush()?;
    Ok(())
}
