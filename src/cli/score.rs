//! `gpt score`: per-token log-probabilities of a text under a model, with total NLL, perplexity
//! and bits per byte; texts longer than the context are scored with a sliding window
//! (`--stride`, see `gpt::generate::score`).
//!
//! First-token rule: the first token of the text has nothing before it, so it gets no logprob
//! (`null` in JSON) and is not counted in NLL, perplexity or bits per byte. With `--bos`, an
//! `<|endoftext|>` is prepended as context (not itself scored), so every token of the text is
//! scored. Bits per byte = NLL / ln 2 / (UTF-8 bytes of the scored tokens). The work is
//! [`gpt::generate::score::score_text`]; this file reads the text and prints.

use super::CliResult;

use gpt::generate::score::score_text;
use gpt::model::checkpoint::NonFinite;
use gpt::model::inference::{load_with_tokenizer_for, Panels};
use gpt::model::memory::{available, gpt_inference_for_dir};
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;

/// Options of `gpt score`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (as for `gpt generate`).
    #[arg(long)]
    pub model: PathBuf,
    /// Text file to score; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Window step for texts longer than the context (default n_ctx / 2): every token gets at
    /// least n_ctx - stride tokens of context.
    #[arg(long)]
    pub stride: Option<usize>,
    /// Print one JSON object: {"tokens":[{"id","text","logprob"}],"nll","ppl","bpb",...}.
    #[arg(long)]
    pub json: bool,
    /// Prepend `<|endoftext|>` so the first token is scored too.
    #[arg(long)]
    pub bos: bool,
    /// dtype of the weight matrices: f32, bf16 or f16 (half the bytes per token), int8
    /// (llama.cpp's Q8_0: about a quarter), or auto (f32; a GGUF file's own: int8 for Q8_0, f16
    /// for F16, else f32).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Load the model even when the estimated memory (weights, one window's KV cache and
    /// logits) is over what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Load weights that hold NaN or inf (refused by default, naming the tensor); a non-finite
    /// log-probability is still an error, never a printed score.
    #[arg(long)]
    pub allow_nonfinite: bool,
}

/// Runs `gpt score`.
pub fn run(args: Args) -> CliResult {
    let text = gpt::io::read_text_or_stdin(args.file.as_deref())?;
    let dtype = gpt::model::inference::resolve_dtype(&args.model, &args.dtype)?;
    if let Some(w) = dtype.warning() {
        eprintln!("{w}");
    }
    let n_ctx = gpt::model::inference::load_config_of(&args.model)?.n_ctx;
    let est = gpt_inference_for_dir(&args.model, 1, n_ctx, dtype, Panels::Off, "")?;
    if !args.no_memory_check {
        est.check(available(), "--no-memory-check")?;
    }
    let nonfinite = NonFinite::allowing(args.allow_nonfinite);
    let (model, tok, _dir) = load_with_tokenizer_for(&args.model, dtype, nonfinite, Panels::Off)?;
    let s = score_text(&model, &tok, &text, args.stride, args.bos)?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let toks: Vec<_> = s
            .tokens
            .iter()
            .map(|t| json!({"id": t.id, "text": t.text, "logprob": t.logprob}))
            .collect();
        let obj = json!({
            "tokens": toks, "nll": s.nll, "ppl": s.ppl, "bpb": s.bpb,
            "scored_tokens": s.scored_tokens, "scored_bytes": s.scored_bytes,
            "stride": s.stride, "bos": args.bos, "dtype": dtype.name(),
        });
        writeln!(out, "{obj}")?;
    } else {
        for t in &s.tokens {
            let lp = t.logprob.map_or("-".to_string(), |x| format!("{x:.4}"));
            writeln!(out, "{}\t{lp}\t{:?}", t.id, t.text)?;
        }
        writeln!(
            out,
            "tokens scored {}, nll {:.4} nats, ppl {:.4}, bits/byte {:.4}",
            s.scored_tokens, s.nll, s.ppl, s.bpb
        )?;
        eprintln!("[weights {}]", dtype.describe());
    }
    Ok(())
}
