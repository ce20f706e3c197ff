//! `gpt serve`: an OpenAI-compatible HTTP server over a model directory (see
//! [`gpt::serve`]). This file turns flags into [`ServeOptions`], checks the memory the batch
//! needs, and prints where it listens.

use super::CliResult;
use gpt::model::inference::Panels;
use gpt::model::memory::{available, gpt_inference_for_dir};
use gpt::serve::engine::EngineConfig;
use gpt::serve::http::HttpConfig;
use gpt::serve::{run, ServeOptions};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `gpt serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Model directory (config.json + model.safetensors + tokenizer; a chat template in
    /// tokenizer_config.json is used by /v1/chat/completions).
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* and /metrics (/ and /health stay public).
    #[arg(long, conflicts_with = "api_key_file")]
    pub api_key: Option<String>,
    /// Read the API key from this file (its first line), keeping it out of `ps`.
    #[arg(long)]
    pub api_key_file: Option<PathBuf>,
    /// The model id clients use (default: the model directory's name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Completions decoded together at most (KV-cache rows).
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Requests waiting for a slot at most; more get 429.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// `max_tokens` allowed per request at most (default: the model's context).
    #[arg(long)]
    pub max_tokens_limit: Option<usize>,
    /// Prompt tokens prefilled per engine step (smaller: running streams stall less while a
    /// long prompt is read).
    #[arg(long, default_value_t = 256)]
    pub prefill_chunk: usize,
    /// Request bodies over this many bytes get 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// dtype of the weight matrices: f32, bf16 or f16 (half the bytes per token), int8
    /// (llama.cpp's Q8_0: about a quarter), or auto (f32; a GGUF file's own: int8 for Q8_0, f16
    /// for F16, else f32).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Allow cross-origin requests from this origin (repeatable; `*` for any).
    #[arg(long)]
    pub cors: Vec<String>,
    /// Start even when the estimated memory (weights and a full KV cache for --max-batch rows)
    /// is over what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
}

/// Runs `gpt serve`.
pub fn run_serve(args: ServeArgs) -> CliResult {
    if args.max_batch == 0 || args.max_queue == 0 || args.prefill_chunk == 0 {
        return Err("--max-batch, --max-queue and --prefill-chunk must be at least 1".into());
    }
    let dtype = gpt::model::inference::resolve_dtype(&args.model, &args.dtype)?;
    if let Some(w) = dtype.warning() {
        eprintln!("{w}");
    }
    let cfg = gpt::model::inference::load_config_of(&args.model)?;
    // `rows` are KV-cache rows of n_ctx positions each: one per completion decoded at once.
    // Decoding reads the panels; a prefill chunk of more than 64 rows reads the original
    // matrices, so both can be resident (the estimate counts both).
    let est = gpt_inference_for_dir(
        &args.model,
        args.max_batch,
        args.max_batch + args.prefill_chunk,
        dtype,
        Panels::All,
        "--max-batch",
    )?;
    if !args.no_memory_check {
        est.check(available(), "--no-memory-check")?;
    }
    let api_key = match (&args.api_key, &args.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(f)) => {
            let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
            let key = text.lines().next().unwrap_or("").trim().to_string();
            if key.is_empty() {
                return Err(
                    format!("{}: the API key file's first line is empty", f.display()).into(),
                );
            }
            Some(key)
        }
        (None, None) => None,
    };
    let model_name = args.model_name.clone().unwrap_or_else(|| {
        args.model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "gpt".into())
    });
    let opts = ServeOptions {
        model: args.model.clone(),
        dtype,
        addr: SocketAddr::new(args.host, args.port),
        http: HttpConfig {
            model_name: model_name.clone(),
            api_key,
            max_body_bytes: args.max_body_bytes,
            body_timeout: Duration::from_secs(30),
            max_tokens_limit: args.max_tokens_limit.unwrap_or(cfg.n_ctx),
            cors: args.cors.clone(),
        },
        engine: EngineConfig {
            max_batch: args.max_batch,
            max_queue: args.max_queue,
            prefill_chunk: args.prefill_chunk,
        },
    };
    let batch = args.max_batch;
    run(
        opts,
        |addr| {
            eprintln!(
                "gpt serve: listening on http://{addr} (model `{model_name}` loading; /health is 503 until it is ready)"
            );
        },
        move |r| {
            match r {
            Ok(()) => eprintln!(
                "gpt serve: ready: POST /v1/completions, /v1/chat/completions; chat page at /; up to {batch} completions at once. Ctrl-C stops."
            ),
            Err(e) => eprintln!("error: {e}"),
        }
        },
    )?;
    eprintln!("gpt serve: stopped");
    Ok(())
}
