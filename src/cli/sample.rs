//! `gpt sample`: a quick look at a trained model, through the KV-cache generator of
//! [`gpt::generate`] (temperature and top-k; `gpt generate` has every control).

use super::CliResult;
use clap::Args;
use gpt::generate::stream::TextStream;
use gpt::generate::{generate, GenerateConfig, SamplingConfig};
use gpt::model::inference::load_with_tokenizer;
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
    let (model, tok, _dir) = load_with_tokenizer(&args.model)?;
    let ids = tok.encode(&args.prompt, true)?;
    if ids.len() > model.config.n_ctx {
        return Err(format!(
            "the prompt is {} tokens, over the model's context of {}",
            ids.len(),
            model.config.n_ctx
        )
        .into());
    }
    let cfg = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            ..SamplingConfig::default()
        },
        seed: args.seed,
        eos: None,
    };
    let mut out = std::io::stdout();
    let _ = write!(out, "{}", args.prompt);
    let mut stream = TextStream::new(&tok, &[]);
    generate(&model, &[ids], &cfg, |_, id| {
        let piece = stream.push(id)?;
        // A closed stdout (e.g. `| head`) must not abort sampling with a panic.
        let _ = out.write_all(piece.as_bytes());
        let _ = out.flush();
        Ok(false)
    })?;
    let _ = writeln!(out, "{}", stream.finish());
    Ok(())
}
