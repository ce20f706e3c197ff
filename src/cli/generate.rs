//! `gpt generate` (and `gpt sample`, the same command with the old `sample` defaults): continue
//! a prompt with a GPT-2 (Hugging Face directory or our checkpoint), streaming text to stdout as
//! it is produced. The work is [`gpt::generate::text`]; this file parses flags and prints.
//!
//! Defaults follow `transformers`' `generate` with sampling on: temperature 1, top-k 50,
//! top-p 1, no repetition penalty; `--temperature 0` is greedy. Generation stops at
//! `--max-new-tokens`, at `<|endoftext|>` (unless `--ignore-eos`), or at a `--stop` string,
//! which is not printed. Several `--prompt`s run as one batch.
//!
//! Past the context: generation does not stop at `n_ctx`; the window slides (see
//! [`gpt::generate::text::context_note`], printed as a note when a prompt + `--max-new-tokens`
//! will outgrow it). With `--json` the text streams as `{"index", "delta"}` lines, then one
//! object per prompt with `finish_reason` and `context_slides`.

use super::CliResult;

use gpt::generate::text::{context_note, encode_prompts, generate_text, TextConfig};
use gpt::generate::SamplingConfig;
use gpt::model::checkpoint::NonFinite;
use gpt::model::inference::{load_with_tokenizer_as, Panels};
use gpt::model::memory::{available, gpt_inference_for_dir};
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
    /// JSON lines: `{"index", "delta"}` for each piece of text as it is produced, then one
    /// object per prompt (`finish_reason`, `context_slides`, ids, text, speeds).
    #[arg(long)]
    pub json: bool,
    /// Keep the last n_ctx tokens of a prompt that is longer than the context (with a warning)
    /// instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Keep generating after `<|endoftext|>`.
    #[arg(long)]
    pub ignore_eos: bool,
    /// dtype of the weight matrices: f32, bf16 or f16 (half the bytes per token), int8
    /// (llama.cpp's Q8_0: about a quarter), or auto (f32; a GGUF file's own: int8 for Q8_0, f16
    /// for F16, else f32).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Load the model even when the estimated memory (weights, KV cache of every prompt) is
    /// over what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Load weights that hold NaN or inf (refused by default, naming the tensor); generation
    /// still stops with an error at the first non-finite logit.
    #[arg(long)]
    pub allow_nonfinite: bool,
}

/// Options of `gpt sample`: `gpt generate` with the defaults `sample` always had (prompt a
/// newline, 300 tokens, temperature 0.8, top-k 200, no stop at `<|endoftext|>`).
#[derive(clap::Args, Debug)]
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
    /// Keep the last n_ctx tokens of a prompt longer than the context instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Load the model even when the estimated memory (weights, KV cache) is over what the
    /// machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
}

impl From<SampleArgs> for Args {
    fn from(a: SampleArgs) -> Self {
        Args {
            model: a.model,
            prompt: vec![a.prompt],
            max_new_tokens: a.max_new_tokens,
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: 1.0,
            repetition_penalty: 1.0,
            stop: Vec::new(),
            seed: a.seed,
            json: false,
            truncate: a.truncate,
            ignore_eos: true,
            dtype: "auto".into(),
            no_memory_check: a.no_memory_check,
            allow_nonfinite: false,
        }
    }
}

/// Runs `gpt generate`.
pub fn run(args: Args) -> CliResult {
    let cfg = TextConfig {
        max_new_tokens: args.max_new_tokens,
        sampling: SamplingConfig {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
        },
        seed: args.seed,
        stop: args.stop.clone(),
        stop_at_eos: !args.ignore_eos,
    };
    cfg.sampling.validate()?;
    let dtype = gpt::model::inference::resolve_dtype(&args.model, &args.dtype)?;
    if let Some(w) = dtype.warning() {
        eprintln!("{w}");
    }
    let rows = args.prompt.len();
    let est = gpt_inference_for_dir(
        &args.model,
        rows,
        rows,
        dtype,
        Panels::All,
        "--prompt (count)",
    )?;
    if !args.no_memory_check {
        est.check(available(), "--no-memory-check")?;
    }
    let nonfinite = NonFinite::allowing(args.allow_nonfinite);
    let (model, tok, _dir) = load_with_tokenizer_as(&args.model, dtype, nonfinite)?;
    let prompts = encode_prompts(&tok, &args.prompt, model.config.n_ctx, args.truncate)?;
    for w in &prompts.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(note) = context_note(&prompts.ids, args.max_new_tokens, model.config.n_ctx) {
        eprintln!("note: {note}");
    }
    let stream_stdout = !args.json && prompts.ids.len() == 1;
    let mut out = std::io::stdout().lock();
    if stream_stdout {
        write!(out, "{}", args.prompt[0])?;
        out.flush()?;
    }
    let (gens, timing) = generate_text(&model, &tok, &prompts.ids, &cfg, |b, piece| {
        // A closed stdout (e.g. `| head`) must not abort generation with a panic.
        if stream_stdout {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        } else if args.json {
            // JSON mode streams too: one line per piece, then one final object per prompt.
            let _ = writeln!(out, "{}", json!({"index": b, "delta": piece}));
            let _ = out.flush();
        }
    })?;
    if args.json {
        for (b, g) in gens.iter().enumerate() {
            let obj = json!({
                "index": b,
                "context_slides": g.context_slides,
                "prompt": args.prompt[b],
                "prompt_ids": prompts.ids[b],
                "ids": g.ids,
                "text": g.text,
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
        for (b, g) in gens.iter().enumerate() {
            if stream_stdout {
                let _ = writeln!(out);
            } else {
                let _ = writeln!(out, "{}{}", args.prompt[b], g.text);
            }
        }
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
