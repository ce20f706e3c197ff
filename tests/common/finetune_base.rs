//! A tiny char-level base model and task files for the fine-tuning tests.

use gpt::io::save_tokenizer;
use gpt::model::{checkpoint, Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::mlp::Activation;
use gpt::rng::Rng;
use gpt::tokenizer::{AnyTokenizer, CharTokenizer};
use gpt::train::TrainOptions;
use std::path::{Path, PathBuf};

/// A fresh, empty temporary directory for test `name` of binary `prefix`.
pub fn tmp(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny char-level base model in `dir` (with its tokenizer unless `tokenizer` is false).
pub fn base(dir: &Path, tokenizer: bool) {
    let tok = CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyz ?.");
    let cfg = GptConfig {
        vocab_size: tok.vocab_size(),
        n_ctx: 32,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        bias: true,
        norm: NormPlacement::Pre,
        positions: Positions::Learned,
        activation: Activation::Gelu,
        ln_eps: 1e-5,
    };
    let model = Gpt::new(cfg, &mut Rng::new(1)).unwrap();
    checkpoint::save(&model, dir, None).unwrap();
    if tokenizer {
        save_tokenizer(&AnyTokenizer::Char(tok), dir).unwrap();
    }
}

/// Writes `lines` (newline-terminated) to `dir/name`.
pub fn write(dir: &Path, name: &str, lines: &[&str]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

/// Training options that print nothing.
pub fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}
