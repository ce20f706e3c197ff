//! `gpt bench train`: training tokens/s of presets (tiny B16 T128, char-baby B8 T256, gpt2 B4
//! T64) with MFU against a matmul peak measured in the same run, and peak memory; optionally
//! beside PyTorch eager (`bench/train_torch.py`) on the same shapes and threads, and with bf16
//! beside `torch.autocast`.
//!
//! Each preset's steps run in a fresh process of this binary (`gpt bench train-one`, see
//! [`run_one`]) so its peak resident memory is its own.

use super::harness::{
    cell, current_exe, find_python, matmul_peak_gflops, median, peak_rss_mb, run_json, script,
    PYTHON_HINT,
};
use crate::error::{Error, Result};
use crate::kernels::adamw::clip_grad_norm;
use crate::model::{Gpt, GptConfig};
use crate::nn::precision::Precision;
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The presets `gpt bench train` knows, for error messages.
pub const PRESETS: &str = "tiny, char-baby, gpt2";

/// Settings of `gpt bench train`.
#[derive(Clone, Debug)]
pub struct TrainBench {
    /// Presets to time, in order (each one of [`PRESETS`]).
    pub presets: Vec<String>,
    /// Timed steps per preset (median reported; two warm-up steps first).
    pub steps: usize,
    /// Also run PyTorch eager on the same work.
    pub vs_torch: bool,
    /// Python interpreter with PyTorch.
    pub python: Option<PathBuf>,
    /// Precision of our matrix products. With bf16 and `vs_torch`, PyTorch also runs under
    /// `torch.autocast("cpu", dtype=torch.bfloat16)` beside its eager f32.
    pub precision: Precision,
}

/// Settings of one preset's timing in this process (`gpt bench train-one`).
#[derive(Clone, Debug)]
pub struct TrainOne {
    /// The preset.
    pub preset: String,
    /// Sequences per step.
    pub batch_size: usize,
    /// Sequence length.
    pub block_size: usize,
    /// Timed steps (after two warm-up steps).
    pub steps: usize,
    /// Precision of the matrix products.
    pub precision: Precision,
}

/// Batch size, sequence length and vocabulary of a benchmarked preset.
fn preset_shape(name: &str) -> Result<(usize, usize, usize)> {
    match name {
        "tiny" => Ok((16, 128, 65)),
        "char-baby" => Ok((8, 256, 65)),
        "gpt2" => Ok((4, 64, 50257)),
        _ => Err(Error::field(
            "--presets",
            format!("unknown bench preset `{name}` ({PRESETS})"),
        )),
    }
}

/// Times `opts.steps` training steps of one preset on random tokens in this process and
/// prints one JSON line: `step_s` (median), `tokens_per_sec`, `peak_rss_mb`.
pub fn run_one(opts: &TrainOne) -> Result<()> {
    let (_, _, vocab) = preset_shape(&opts.preset)?;
    for (flag, v) in [
        ("--steps", opts.steps),
        ("--batch-size", opts.batch_size),
        ("--block-size", opts.block_size),
    ] {
        if v == 0 {
            return Err(Error::field(flag, "must be at least 1"));
        }
    }
    let mut cfg = GptConfig::preset(&opts.preset, vocab)?;
    cfg.n_ctx = cfg.n_ctx.max(opts.block_size);
    let mut rng = Rng::new(0);
    let mut model = Gpt::new(cfg, &mut rng)?;
    model.set_precision(opts.precision);
    let mut opt = AdamW::new(model.layout(), AdamWConfig::default());
    let n = opts.batch_size * opts.block_size;
    let mut times = Vec::new();
    for s in 0..opts.steps + 2 {
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
        let targets: Vec<i32> = (0..n).map(|_| rng.below(vocab as u64) as i32).collect();
        let t0 = Instant::now();
        model.params.zero_grad();
        model.forward_backward(
            &ids,
            &targets,
            opts.batch_size,
            opts.block_size,
            0.0,
            1.0,
            &mut rng,
        )?;
        clip_grad_norm(&mut model.params.grad, 1.0);
        opt.update(&mut model.params, 6e-4);
        model.refresh_bf16_weights();
        if s >= 2 {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    let med = median(&mut times);
    println!(
        "{}",
        serde_json::json!({"step_s": med, "tokens_per_sec": n as f64 / med, "peak_rss_mb": peak_rss_mb()})
    );
    Ok(())
}

/// Runs `gpt bench train`, printing the table to standard output.
pub fn run(opts: &TrainBench) -> Result<()> {
    if opts.steps == 0 {
        return Err(Error::field("--steps", "must be at least 1"));
    }
    let threads = crate::threads::current();
    let precision = opts.precision;
    if let Some(w) = precision.warning() {
        eprintln!("{w}");
    }
    let autocast = opts.vs_torch && precision == Precision::Bf16;
    // Matmul peak measured now, on this machine, for MFU.
    let peak = matmul_peak_gflops();
    println!("gpt bench train: {threads} threads, {} timed steps per preset, precision {}; f32 matmul peak {peak:.1} GFLOP/s (1024x768x3072, for MFU)", opts.steps, precision.describe());
    print!(
        "{:<10} {:>10} {:>12} {:>7} {:>9} {:>12} {:>7} {:>9} {:>7}",
        "preset",
        "B x T",
        "ours tok/s",
        "MFU",
        "ours MiB",
        "torch tok/s",
        "MFU",
        "torch MiB",
        "ratio"
    );
    if autocast {
        print!(" {:>14} {:>10} {:>7}", "autocast tok/s", "MiB", "ratio");
    }
    println!();
    let exe = current_exe()?;
    let python = find_python(opts.python.as_deref());
    for preset in &opts.presets {
        let (b, t, vocab) = preset_shape(preset)?;
        let cfg = GptConfig::preset(preset, vocab)?;
        let n_params = cfg.num_params() - cfg.n_ctx * cfg.n_embd;
        let flops_per_token = 6.0 * n_params as f64 + 12.0 * (cfg.n_layer * cfg.n_embd * t) as f64;
        let ours = run_json(
            Command::new(&exe)
                .args([
                    "--threads",
                    &threads.to_string(),
                    "bench",
                    "train-one",
                    "--preset",
                    preset,
                ])
                .args([
                    "--batch-size",
                    &b.to_string(),
                    "--block-size",
                    &t.to_string(),
                    "--steps",
                    &opts.steps.to_string(),
                    "--precision",
                    precision.name(),
                ]),
            "",
        )?;
        let ours_tps = ours["tokens_per_sec"].as_f64().unwrap_or(0.0);
        let mfu = |tps: f64| format!("{:.0}%", 100.0 * tps * flops_per_token / (peak * 1e9));
        let torch_run = |autocast: bool| -> Result<(Option<f64>, Option<f64>)> {
            let mut cmd = Command::new(&python);
            cmd.arg(script("train_torch.py"));
            if autocast {
                cmd.arg("--autocast");
            }
            let v = run_json(
                cmd.args([
                    "--vocab",
                    &vocab.to_string(),
                    "--n-layer",
                    &cfg.n_layer.to_string(),
                ])
                .args([
                    "--n-head",
                    &cfg.n_head.to_string(),
                    "--n-embd",
                    &cfg.n_embd.to_string(),
                ])
                .args([
                    "--block-size",
                    &t.to_string(),
                    "--batch-size",
                    &b.to_string(),
                ])
                .args([
                    "--dropout",
                    &cfg.dropout.to_string(),
                    "--steps",
                    &opts.steps.to_string(),
                ])
                .args(["--threads", &threads.to_string()]),
                PYTHON_HINT,
            )?;
            Ok((v["tokens_per_sec"].as_f64(), v["peak_rss_mb"].as_f64()))
        };
        let (torch_tps, torch_mem) = if opts.vs_torch {
            torch_run(false)?
        } else {
            (None, None)
        };
        print!(
            "{:<10} {:>10} {:>12.0} {:>7} {:>9.0} {:>12} {:>7} {:>9} {:>7}",
            preset,
            format!("{b} x {t}"),
            ours_tps,
            mfu(ours_tps),
            ours["peak_rss_mb"].as_f64().unwrap_or(0.0),
            cell(torch_tps, |v| format!("{v:.0}")),
            cell(torch_tps, mfu),
            cell(torch_mem, |v| format!("{v:.0}")),
            cell(torch_tps, |v| format!("{:.2}x", ours_tps / v)),
        );
        if autocast {
            let (tps, mem) = torch_run(true)?;
            print!(
                " {:>14} {:>10} {:>7}",
                cell(tps, |v| format!("{v:.0}")),
                cell(mem, |v| format!("{v:.0}")),
                cell(tps, |v| format!("{:.2}x", ours_tps / v)),
            );
        }
        println!();
    }
    if opts.vs_torch {
        println!("ratio = our tokens/s / PyTorch tokens/s (above 1: we are faster); MFU against the f32 matmul peak");
    }
    Ok(())
}
