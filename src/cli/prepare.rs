//! `gpt prepare`: text files, folders and JSONL into train/val token files.

use super::CliResult;
use clap::Args;
use gpt::data::prepare::{prepare, read_documents, tokenizer_for};
use std::path::PathBuf;

/// Options of `gpt prepare`.
#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// Text files, folders (read recursively, sorted) or JSONL files with a `text` field.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// `gpt2`, `char` (built from the inputs), or a tokenizer directory/file.
    #[arg(long, default_value = "gpt2")]
    pub tokenizer: String,
    /// Output directory (train.bin, val.bin, tokenizer, prepare.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Fraction held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f32,
    /// Seed of the document-level split.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
}

/// Runs `gpt prepare`.
pub fn run(args: PrepareArgs) -> CliResult {
    if !(0.0..1.0).contains(&args.val_fraction) {
        return Err(gpt::Error::field(
            "--val-fraction",
            format!("{} is not in [0, 1)", args.val_fraction),
        )
        .into());
    }
    let docs = read_documents(&args.inputs)?;
    let tok = tokenizer_for(&args.tokenizer, &docs)?;
    let s = prepare(&docs, &tok, &args.out, args.val_fraction, args.seed)?;
    println!(
        "{} documents -> {} train + {} val tokens ({} tokenizer, vocabulary {}) in {}",
        s.documents,
        s.train_tokens,
        s.val_tokens,
        s.tokenizer,
        s.vocab_size,
        args.out.display()
    );
    Ok(())
}
