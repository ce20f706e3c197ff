//! `gpt bench eval`: wall time of `gpt eval` per task beside lm-evaluation-harness 0.4 on the
//! same requests (`bench/eval_lm_eval.py`: transformers backend, float32, CPU, its default batch
//! of 1, the same threads, model, files, few-shot setting and bootstrap resamples). Each side is
//! timed from building the requests to the metrics, with the model already loaded; the metrics
//! of both are compared (largest difference reported).

use super::harness::{cell, find_python, run_json, script};
use crate::error::{Error, Result};
use crate::eval::evaluate::{end_of_text, finish, prepare};
use crate::eval::scorer::score;
use crate::eval::{task, EvalOptions};
use crate::model::inference::load_with_tokenizer;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Settings of `gpt bench eval`.
#[derive(Clone, Debug)]
pub struct EvalBench {
    /// Model directory (with its tokenizer; `transformers` must load it for `--vs-lm-eval`).
    pub model: PathBuf,
    /// Built-in tasks timed.
    pub tasks: Vec<String>,
    /// Documents per task.
    pub limit: usize,
    /// Few-shot examples per document.
    pub num_fewshot: usize,
    /// Contexts per forward on our side.
    pub batch_size: usize,
    /// Bootstrap resamples of the perplexity stderr (both sides).
    pub bootstrap_iters: usize,
    /// `--data-dir` of the tasks.
    pub data_dir: Option<PathBuf>,
    /// Also run lm-eval on the same work.
    pub vs_lm_eval: bool,
    /// Python interpreter with lm-eval and transformers.
    pub python: Option<PathBuf>,
}

/// Runs `gpt bench eval`, printing a table to standard output.
pub fn run(opts: &EvalBench) -> Result<()> {
    if opts.limit == 0 {
        return Err(Error::field("--limit", "must be at least 1"));
    }
    let defs = opts
        .tasks
        .iter()
        .map(|t| task::builtin(t))
        .collect::<Result<Vec<_>>>()?;
    let threads = crate::threads::current();
    let (model, tok, dir) = load_with_tokenizer(&opts.model)?;
    let eot = end_of_text(&tok, &dir)?;
    let eval_opts = EvalOptions {
        num_fewshot: opts.num_fewshot,
        limit: Some(opts.limit),
        batch_size: opts.batch_size.max(1),
        bootstrap_iters: opts.bootstrap_iters,
        data_dir: opts.data_dir.clone(),
        ..EvalOptions::default()
    };
    let mut ours = Vec::new();
    for d in &defs {
        let t0 = Instant::now();
        let p = prepare(d, &tok, model.config.n_ctx, eot, &eval_opts)?;
        let lls = score(&model, &p.requests, eval_opts.batch_size, &mut |_| {})?;
        let r = finish(&p, &lls, &eval_opts)?;
        ours.push((r, p.requests.len(), t0.elapsed().as_secs_f64()));
    }
    let theirs = if opts.vs_lm_eval {
        let python = find_python(opts.python.as_deref());
        let mut cmd = Command::new(&python);
        cmd.arg(script("eval_lm_eval.py"))
            .args(["--model", &dir.to_string_lossy()])
            .args(["--tasks", &opts.tasks.join(",")])
            .args(["--limit", &opts.limit.to_string()])
            .args(["--num-fewshot", &opts.num_fewshot.to_string()])
            .args(["--bootstrap-iters", &opts.bootstrap_iters.to_string()])
            .args(["--threads", &threads.to_string()]);
        if let Some(d) = &opts.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        Some(run_json(
            &mut cmd,
            "pass --python PATH to a Python with lm-eval 0.4 and transformers",
        )?)
    } else {
        None
    };
    println!(
        "gpt bench eval: {} ({} threads), {} documents per task, {}-shot, batch {} (ours)",
        dir.display(),
        threads,
        opts.limit,
        opts.num_fewshot,
        eval_opts.batch_size
    );
    println!("| task | requests | ours s | lm-eval s | speed-up | largest metric difference |");
    println!("|---|---:|---:|---:|---:|---:|");
    let (mut sum_ours, mut sum_theirs) = (0.0, 0.0);
    for (r, n, secs) in &ours {
        let t = theirs.as_ref().map(|v| &v["tasks"][&r.name]);
        let their_secs = t.and_then(|t| t["seconds"].as_f64());
        let diff = t.map(|t| {
            r.metrics
                .iter()
                .flat_map(|m| {
                    let key = format!("{},none", m.name);
                    let skey = format!("{}_stderr,none", m.name);
                    let rel = |a: f64, b: f64| {
                        if m.name.contains("perplexity") {
                            (a - b).abs() / b.abs().max(1e-12)
                        } else {
                            (a - b).abs()
                        }
                    };
                    let v = t["metrics"][&key].as_f64().map(|w| rel(m.value, w));
                    let s = match (m.stderr, t["metrics"][&skey].as_f64()) {
                        (Some(a), Some(b)) => Some(rel(a, b)),
                        (None, None) => Some(0.0),
                        _ => Some(f64::INFINITY),
                    };
                    [v.unwrap_or(f64::INFINITY), s.unwrap_or(f64::INFINITY)]
                })
                .fold(0.0, f64::max)
        });
        sum_ours += secs;
        sum_theirs += their_secs.unwrap_or(0.0);
        println!(
            "| {} | {n} | {secs:.2} | {} | {} | {} |",
            r.name,
            cell(their_secs, |v| format!("{v:.2}")),
            cell(their_secs, |v| format!("{:.1}x", v / secs.max(1e-9))),
            cell(diff, |d| format!("{d:.1e}")),
        );
    }
    if theirs.is_some() {
        println!(
            "| total | | {sum_ours:.2} | {sum_theirs:.2} | {:.1}x | |",
            sum_theirs / sum_ours.max(1e-9)
        );
    }
    Ok(())
}
