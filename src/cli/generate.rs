//! `gpt generate`: continue a prompt with a GPT-2 (Hugging Face directory or our checkpoint),
//! streaming text to stdout as it is produced (UTF-8 safe), with the usual sampling controls.
//!
//! Defaults follow `transformers`' `generate` with sampling on: temperature 1, top-k 50,
//! top-p 1, no repetition penalty; `--temperature 0` is greedy. Generation stops at
//! `--max-new-tokens`, at `<|endoftext|>` (unless `--ignore-eos`), or at a `--stop` string,
//! which is not printed. Several `--prompt`s run as one batch.

use super::CliResult;

use gpt::generate::stream::TextStream;
use gpt::generate::{generate, GenerateConfig, SamplingConfig};
use gpt::model::inference::load_with_tokenizer_as;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Options of `gpt generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory: config.json + model.safetensors (f32/f16/bf16) + tokenizer files, or a
    /// training output directory containing `checkpoint/`.
    #[arg(long)]
    pub model: PathBuf,
    /// Text to continue; repeat for a batch (`<|endoftext|>` is the special token).
    #[arg(long, required = true)]
    pub prompt: Vec<String>,
    /// New tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most likely tokens up to this probability mass (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Repetition penalty (1: none; 1.2 is common).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Stop when this text appears (repeatable); it is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Random seed (row b of a batch uses seed + b).
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Print one JSON object per prompt instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Keep the last n_ctx tokens of a prompt that is longer than the context (with a warning)
    /// instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Keep generating after `<|endoftext|>`.
    #[arg(long)]
    pub ignore_eos: bool,
    /// dtype of the streamed weight matrices: f32, or bf16 (half the bytes per token).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Runs `gpt generate`.
pub fn run(args: Args) -> CliResult {
    let sampling = SamplingConfig {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        repetition_penalty: args.repetition_penalty,
    };
    sampling.validate()?;
    let dtype = gpt::nn::precision::Precision::parse_for("dtype", &args.dtype)?;
    if let Some(w) = dtype.warning() {
        eprintln!("{w}");
    }
    let (model, tok, _dir) = load_with_tokenizer_as(&args.model, dtype)?;
    let n_ctx = model.config.n_ctx;
    let mut prompts = Vec::new();
    for (i, text) in args.prompt.iter().enumerate() {
        if text.is_empty() {
            return Err(format!(
                "prompt {i} is empty: give some text (or `<|endoftext|>` to start from nothing)"
            )
            .into());
        }
        let mut ids = tok.encode(text, true)?;
        if ids.len() > n_ctx {
            if !args.truncate {
                return Err(format!(
                    "prompt {i} is {} tokens, over the model's context n_ctx = {n_ctx}; shorten \
                     it or pass --truncate to keep its last {n_ctx} tokens",
                    ids.len()
                )
                .into());
            }
            eprintln!(
                "warning: prompt {i} is {} tokens; keeping its last {n_ctx} (the context)",
                ids.len()
            );
            ids.drain(..ids.len() - n_ctx);
        }
        prompts.push(ids);
    }
    let eos = match &tok {
        gpt::tokenizer::AnyTokenizer::Bpe(t) if !args.ignore_eos => t.special_id("<|endoftext|>"),
        _ => None,
    };
    let cfg = GenerateConfig {
        max_new_tokens: args.max_new_tokens,
        sampling,
        seed: args.seed,
        eos,
    };
    let mut streams: Vec<TextStream> = prompts
        .iter()
        .map(|_| TextStream::new(&tok, &args.stop))
        .collect();
    let stream_stdout = !args.json && prompts.len() == 1;
    let mut out = std::io::stdout().lock();
    if stream_stdout {
        write!(out, "{}", args.prompt[0])?;
        out.flush()?;
    }
    let (gens, timing) = generate(&model, &prompts, &cfg, |b, id| {
        if eos == Some(id) {
            return Ok(false);
        }
        let piece = streams[b].push(id)?;
        if stream_stdout && !piece.is_empty() {
            // A closed stdout (e.g. `| head`) must not abort generation with a panic.
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        }
        Ok(streams[b].stopped())
    })?;
    for (b, s) in streams.iter_mut().enumerate() {
        let rest = s.finish();
        if stream_stdout {
            let _ = writeln!(out, "{rest}");
        } else if !args.json {
            let _ = writeln!(out, "{}{}", args.prompt[b], s.text());
        }
    }
    if args.json {
        for (b, g) in gens.iter().enumerate() {
            let obj = json!({
                "prompt": args.prompt[b],
                "prompt_ids": prompts[b],
                "ids": g.ids,
                "text": streams[b].text(),
                "finish_reason": g.finish,
                "prefill_tokens_per_sec": timing.prefill_tokens_per_sec(),
                "decode_tokens_per_sec": timing.decode_tokens_per_sec(),
                "prefill_tokens": timing.prefill_tokens,
                "decode_tokens": timing.decode_tokens,
                "weights": format!("{:?}", model.source),
                "dtype": dtype.name(),
            });
            writeln!(out, "{obj}")?;
        }
    } else {
        eprintln!(
            "[prefill {} tokens at {:.1} tokens/s, decode {} tokens at {:.1} tokens/s, weights {}]",
            timing.prefill_tokens,
            timing.prefill_tokens_per_sec(),
            timing.decode_tokens,
            timing.decode_tokens_per_sec(),
            dtype.describe()
        );
    }
    Ok(())
}
