//! `gpt tokenizer train`: learn a byte-level BPE (or a char-level) tokenizer from text files.
//!
//! ```text
//! gpt tokenizer train --vocab-size 16384 --out DIR FILE...
//! gpt tokenizer train --char --out DIR FILE...
//! ```
//! BPE writes `DIR/vocab.json`, `DIR/merges.txt` and `DIR/tokenizer.json` (loadable by
//! Hugging Face `tokenizers` and by `gpt tokenize --tokenizer DIR`); `--char` writes
//! `DIR/tokenizer_char.json`. A progress bar is drawn on standard error unless
//! `--no-progress`.

use super::CliResult;
use clap::{Args, Subcommand};
use gpt_tokenizer::{BpeTrainer, CharTokenizer, TokenizerError};
use std::path::PathBuf;
use std::time::Instant;

/// Tokenizer subcommands.
#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Learn a tokenizer from text files.
    Train(TrainArgs),
}

/// Options of `gpt tokenizer train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Size of the vocabulary, counting the 256 bytes and the special tokens (BPE only).
    #[arg(long, required_unless_present = "char")]
    pub vocab_size: Option<usize>,
    /// Directory to write the tokenizer files into (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// Special tokens, given the last ids (repeatable; default: <|endoftext|>).
    #[arg(long = "special")]
    pub specials: Vec<String>,
    /// Never merge pairs seen fewer times than this.
    #[arg(long, default_value_t = 0)]
    pub min_frequency: u64,
    /// Train a character-level tokenizer (vocabulary = the sorted characters of the text).
    #[arg(long)]
    pub char: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// UTF-8 text files to learn from.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Runs a tokenizer subcommand.
pub fn run(cmd: TokenizerCommand) -> CliResult {
    match cmd {
        TokenizerCommand::Train(args) if args.char => train_char(args),
        TokenizerCommand::Train(args) => train_bpe(args),
    }
}

fn train_bpe(args: TrainArgs) -> CliResult {
    let vocab_size = args
        .vocab_size
        .ok_or_else(|| gpt::Error::field("--vocab-size", "is required for BPE training"))?;
    let mut trainer = BpeTrainer::new(vocab_size);
    if !args.specials.is_empty() {
        trainer.special_tokens = args.specials.clone();
    }
    trainer.min_frequency = args.min_frequency;
    trainer.show_progress = !args.no_progress;
    let start = Instant::now();
    let (tok, stats) = trainer.train_files(&args.files)?;
    let written = tok.save(&args.out)?;
    eprintln!(
        "trained {} ids ({} merges) on {:.1} MB: {} words, {} distinct; {:.2}s counting, \
         {:.2}s merging, {:.2}s total",
        tok.vocab_size(),
        stats.merges,
        stats.bytes as f64 / 1e6,
        stats.words,
        stats.distinct_words,
        stats.count_seconds,
        stats.merge_seconds,
        start.elapsed().as_secs_f64()
    );
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn train_char(args: TrainArgs) -> CliResult {
    let mut chars = Vec::new();
    for path in &args.files {
        let bytes = std::fs::read(path).map_err(|e| TokenizerError::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            TokenizerError::not_utf8(path, e.as_bytes(), e.utf8_error().valid_up_to())
        })?;
        chars.extend(CharTokenizer::from_text(&text).chars().iter().copied());
    }
    let tok = CharTokenizer::from_chars(chars);
    std::fs::create_dir_all(&args.out).map_err(|e| TokenizerError::io(&args.out, e))?;
    let path = args
        .out
        .join(gpt_tokenizer::char_level::CHAR_TOKENIZER_FILE);
    tok.save(&path)?;
    eprintln!("wrote {} ({} characters)", path.display(), tok.vocab_size());
    Ok(())
}
