//! `gpt eval`: zero- and few-shot evaluation with lm-evaluation-harness 0.4's semantics (see
//! `gpt::eval`). This file resolves the task names and files, loads the model, shows a progress
//! bar over the requests, prints a table per task and writes lm-eval's results JSON.

use super::CliResult;
use gpt::eval::evaluate::{end_of_text, evaluate_tasks, results_json, Progress};
use gpt::eval::{task, EvalOptions, TaskResult};
use gpt::model::checkpoint::NonFinite;
use gpt::model::inference::{load_with_tokenizer_for, Panels};
use gpt::model::memory::{available, gpt_inference_for_dir};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// Rows of logits the scorer computes at once (its `LOGIT_ROWS`), for the memory estimate.
const LOGIT_ROWS: usize = 64;

/// Options of `gpt eval`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (our checkpoint or a Hugging Face GPT-2 directory with its tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// Built-in tasks, comma-separated: wikitext, lambada_openai, arc_easy, arc_challenge,
    /// piqa, copa.
    #[arg(long, value_delimiter = ',')]
    pub tasks: Vec<String>,
    /// A task definition file (TOML, as tasks/eval/*.toml); repeatable.
    #[arg(long)]
    pub task_file: Vec<PathBuf>,
    /// Few-shot examples per document (K).
    #[arg(long, default_value_t = 0)]
    pub num_fewshot: usize,
    /// Evaluate only the first N documents of each task.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Contexts (each with all its continuations) scored per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Seed of the few-shot sampler (lm-eval's fewshot_random_seed).
    #[arg(long, default_value_t = 1234)]
    pub seed: i64,
    /// Bootstrap resamples for the perplexity stderr (lm-eval's default; 0 turns it off).
    #[arg(long, default_value_t = 100_000)]
    pub bootstrap_iters: usize,
    /// Folder holding the task data (lambada_openai/, wikitext2/, arc_easy/, ... or eval/...);
    /// default: data/eval, then ../shared/data.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print lm-eval's results JSON on standard output instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results JSON to this file (atomically).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// dtype of the weight matrices: f32, bf16 or f16 (half the bytes per token), int8
    /// (llama.cpp's Q8_0: about a quarter), or auto (f32; a GGUF file's own: int8 for Q8_0, f16
    /// for F16, else f32).
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Load the model even when the estimated memory (weights, KV cache, activations) is over
    /// what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Load weights that hold NaN or inf (refused by default, naming the tensor); a non-finite
    /// log-probability is still an error.
    #[arg(long)]
    pub allow_nonfinite: bool,
}

/// Runs `gpt eval`.
pub fn run(args: Args) -> CliResult {
    if args.tasks.is_empty() && args.task_file.is_empty() {
        return Err(format!(
            "no task: pass --tasks (known: {}) or --task-file FILE.toml",
            task::builtin_names().join(", ")
        )
        .into());
    }
    let mut defs = Vec::new();
    for name in args.tasks.iter().filter(|n| !n.trim().is_empty()) {
        defs.push(task::builtin(name.trim())?);
    }
    for f in &args.task_file {
        defs.push(task::load(f)?);
    }
    let opts = EvalOptions {
        num_fewshot: args.num_fewshot,
        limit: args.limit,
        batch_size: args.batch_size.max(1),
        seed: args.seed,
        bootstrap_iters: args.bootstrap_iters,
        data_dir: args.data_dir.clone(),
    };
    let dtype = gpt::model::inference::resolve_dtype(&args.model, &args.dtype)?;
    if let Some(w) = dtype.warning() {
        eprintln!("{w}");
    }
    let n_ctx = gpt::model::inference::load_config_of(&args.model)?.n_ctx;
    let rows = gpt::eval::scorer::max_cache_rows(n_ctx);
    let est = gpt_inference_for_dir(&args.model, rows, LOGIT_ROWS, dtype, Panels::Head, "")?;
    if !args.no_memory_check {
        est.check(available(), "--no-memory-check")?;
    }
    let nonfinite = NonFinite::allowing(args.allow_nonfinite);
    let (model, tok, dir) = load_with_tokenizer_for(&args.model, dtype, nonfinite, Panels::Head)?;
    let eot = end_of_text(&tok, &dir)?;
    let bar = indicatif::ProgressBar::hidden();
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} requests {msg} {per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
    }
    let started = std::time::Instant::now();
    let results = evaluate_tasks(&model, &tok, eot, &defs, &opts, &mut |p| match p {
        Progress::Start { total } => bar.set_length(total as u64),
        Progress::Scored { task, done } => {
            bar.set_message(task.to_string());
            bar.inc(done as u64);
        }
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let total: usize = results.iter().map(|r| r.n_requests).sum();
    let json = results_json(&results, &dir, &opts);
    if let Some(path) = &args.output {
        let text = serde_json::to_string_pretty(&json)? + "\n";
        gpt::io::write_atomic(path, text.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
    } else {
        print_table(&mut out, &results)?;
        writeln!(
            out,
            "{total} requests in {secs:.1} s ({:.1} requests/s), model {} [weights {}]",
            total as f64 / secs.max(1e-9),
            dir.display(),
            dtype.describe()
        )?;
    }
    for r in results.iter().filter(|r| r.truncated > 0) {
        eprintln!(
            "note: {}: {} of {} requests were longer than the model's context ({n_ctx}) + 1 \
             and were cut on the left, as lm-eval does",
            r.name, r.truncated, r.n_requests
        );
    }
    Ok(())
}

/// lm-eval's markdown table: one row per metric.
fn print_table(out: &mut impl Write, results: &[TaskResult]) -> std::io::Result<()> {
    writeln!(out, "| task | n-shot | docs | metric | value | stderr |")?;
    writeln!(out, "|---|---:|---:|---|---:|---:|")?;
    for r in results {
        for m in &r.metrics {
            let se = m.stderr.map_or("N/A".to_string(), |s| format!("± {s:.4}"));
            writeln!(
                out,
                "| {} | {} | {} | {} | {:.4} | {se} |",
                r.name, r.num_fewshot, r.n_effective, m.name, m.value
            )?;
        }
    }
    Ok(())
}
