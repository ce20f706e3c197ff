//! `gpt sample`: a quick look at a trained model.

use super::CliResult;
use clap::Args;
use gpt::data::prepare::load_tokenizer;
use gpt::model::checkpoint;
use gpt::model::sample::{sample, SampleConfig};
use gpt::rng::Rng;
use std::io::Write;
use std::path::PathBuf;

/// Options of `gpt sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A model directory (config.json + model.safetensors + tokenizer), or a training output
    /// directory containing `checkpoint/`.
    #[arg(long)]
    pub model: PathBuf,
    /// Text to continue.
    #[arg(long, default_value = "\n")]
    pub prompt: String,
    /// Tokens to generate.
    #[arg(long, default_value_t = 300)]
    pub max_new_tokens: usize,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Top-k (0: all).
    #[arg(long, default_value_t = 200)]
    pub top_k: usize,
    /// Seed.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
}

/// Runs `gpt sample`.
pub fn run(args: SampleArgs) -> CliResult {
    let mut dir = args.model.clone();
    if !dir.join(checkpoint::CONFIG_FILE).exists()
        && dir
            .join("checkpoint")
            .join(checkpoint::CONFIG_FILE)
            .exists()
    {
        dir = dir.join("checkpoint");
    }
    let mut model = checkpoint::load(&dir)?;
    let tok = load_tokenizer(&dir)?;
    if tok.vocab_size() > model.config.vocab_size {
        return Err(format!(
            "{}: tokenizer has {} ids but the model's vocabulary is {}",
            dir.display(),
            tok.vocab_size(),
            model.config.vocab_size
        )
        .into());
    }
    let ids = tok.encode(&args.prompt, true)?;
    if ids.len() > model.config.n_ctx {
        return Err(format!(
            "the prompt is {} tokens, over the model's context of {}",
            ids.len(),
            model.config.n_ctx
        )
        .into());
    }
    let cfg = SampleConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
    };
    let mut rng = Rng::new(args.seed);
    let mut out = std::io::stdout();
    let _ = write!(out, "{}", args.prompt);
    let mut pending = Vec::new();
    sample(&mut model, &ids, &cfg, &mut rng, |id| {
        if let Ok(b) = tok.token_bytes(id) {
            pending.extend(b);
        }
        // Print whole UTF-8 sequences only.
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            let _ = out.write_all(&pending[..valid]);
            let _ = out.flush();
            pending.drain(..valid);
        }
    })?;
    let _ = out.write_all(String::from_utf8_lossy(&pending).as_bytes());
    println!();
    Ok(())
}
