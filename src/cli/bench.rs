//! `gpt bench kernels`: every core kernel forward+backward at GPT-2-small shapes (B·T = 1024),
//! printing median time and GFLOP/s or GB/s; with `--vs-torch` the same operations run in
//! PyTorch (bench/kernels_torch.py) on the same number of threads in the same run, and the
//! table shows PyTorch time / our time (above 1 means we are faster).

use super::CliResult;

mod generate;
mod translate;
use clap::{Args, Subcommand};
use gpt::kernels::attention::{attention_backward, attention_forward, AttentionDims};
use gpt::kernels::bf16::{matmul_bf16, to_bf16_vec};
use gpt::kernels::crossentropy::crossentropy_forward_backward;
use gpt::kernels::gelu::{gelu_backward, gelu_forward};
use gpt::kernels::layernorm::{layernorm_backward, layernorm_forward};
use gpt::kernels::matmul::matmul;
use gpt::rng::Rng;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Benchmark subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Every kernel forward+backward at GPT-2-small shapes, optionally beside PyTorch.
    Kernels(KernelArgs),
    /// Training tokens/s of presets (tiny B16 T128, char-baby B8 T256, gpt2 B4 T64), with MFU
    /// and peak memory, optionally beside PyTorch eager.
    Train(TrainBenchArgs),
    /// One preset's training steps in this process (used by `bench train` to measure memory).
    #[command(hide = true)]
    TrainOne(TrainOneArgs),
    /// GPT-2 124M decoding (batch 1 and batch 8, KV cache, greedy) against the memory-bandwidth
    /// bound, optionally beside transformers' generate.
    Generate(generate::GenerateBenchArgs),
    /// Encoder-decoder training tokens/s (transformer-small, -base) and beam-4 sentences/s of a
    /// trained model, optionally beside PyTorch `nn.Transformer` on the same batches and weights.
    Translate(Box<translate::TranslateBenchArgs>),
}

/// Options of `gpt bench train`.
#[derive(Args)]
pub struct TrainBenchArgs {
    /// Comma-separated presets.
    #[arg(long, default_value = "tiny,char-baby,gpt2")]
    pub presets: String,
    /// Timed steps per preset (median reported; two warm-up steps first).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also run PyTorch eager on the same work.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Precision of our matrix products: f32 or bf16. With bf16 and `--vs-torch`, PyTorch also
    /// runs under `torch.autocast("cpu", dtype=torch.bfloat16)` beside its eager f32.
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

/// Options of the hidden `gpt bench train-one`.
#[derive(Args)]
pub struct TrainOneArgs {
    #[arg(long)]
    preset: String,
    #[arg(long)]
    batch_size: usize,
    #[arg(long)]
    block_size: usize,
    #[arg(long)]
    steps: usize,
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// Options of `gpt bench kernels`.
#[derive(Args)]
pub struct KernelArgs {
    /// Also run the same operations in PyTorch and print time ratios.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch (default: $GPT_PYTHON, ~/.cache/gpt-refenv/bin/python,
    /// then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Timed repetitions per operation (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
}

/// Runs a benchmark subcommand.
pub fn run(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Kernels(args) => kernels(args),
        BenchCommand::Train(args) => train_bench(args),
        BenchCommand::TrainOne(args) => train_one(args),
        BenchCommand::Generate(args) => generate::run(args),
        BenchCommand::Translate(args) => translate::run(*args),
    }
}

/// One benchmark row: name, median milliseconds, and the work it did.
struct Row {
    name: String,
    ms: f64,
    /// Floating-point operations (for GFLOP/s) or bytes moved (for GB/s).
    work: Work,
}

enum Work {
    Flops(f64),
    Bytes(f64),
}

fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn randn(n: usize, std: f32, rng: &mut Rng) -> Vec<f32> {
    let mut v = vec![0.0; n];
    rng.fill_normal(&mut v, 0.0, std);
    v
}

fn ours(reps: usize) -> Vec<Row> {
    let mut rng = Rng::new(0);
    let mut rows = Vec::new();
    let n = 1024;
    for (ic, oc) in [(768, 2304), (768, 3072), (3072, 768), (768, 50304)] {
        let x = randn(n * ic, 1.0, &mut rng);
        let w = randn(ic * oc, 0.02, &mut rng);
        let dy = randn(n * oc, 1.0, &mut rng);
        let mut y = vec![0.0; n * oc];
        let mut dx = vec![0.0; n * ic];
        let mut dw = vec![0.0; ic * oc];
        let tag = format!("{n}x{ic}x{oc}");
        let flops = Work::Flops(2.0 * (n * ic * oc) as f64);
        // Same layouts as the PyTorch side: x·W, dy·Wᵀ, xᵀ·dy.
        let ms = median_ms(reps, || {
            matmul(&mut y, &x, &w, n, ic, oc, false, false, false)
        });
        rows.push(Row {
            name: format!("matmul {tag} forward"),
            ms,
            work: flops,
        });
        let ms = median_ms(reps, || {
            matmul(&mut dx, &dy, &w, n, oc, ic, false, true, false)
        });
        rows.push(Row {
            name: format!("matmul {tag} dinp"),
            ms,
            work: Work::Flops(2.0 * (n * ic * oc) as f64),
        });
        let ms = median_ms(reps, || {
            matmul(&mut dw, &x, &dy, ic, n, oc, true, false, false)
        });
        rows.push(Row {
            name: format!("matmul {tag} dweight"),
            ms,
            work: Work::Flops(2.0 * (n * ic * oc) as f64),
        });
        // The same three products in bf16 (inputs already bf16, as the shadow weights and the
        // converted activations of mixed-precision training); "×f32" is f32 time / bf16 time.
        let f32_ms: Vec<f64> = rows[rows.len() - 3..].iter().map(|r| r.ms).collect();
        let (xb, wb, dyb) = (to_bf16_vec(&x), to_bf16_vec(&w), to_bf16_vec(&dy));
        let products: [(&str, f64); 3] = [
            (
                "forward",
                median_ms(reps, || {
                    matmul_bf16(&mut y, &xb, &wb, n, ic, oc, false, false, false)
                }),
            ),
            (
                "dinp",
                median_ms(reps, || {
                    matmul_bf16(&mut dx, &dyb, &wb, n, oc, ic, false, true, false)
                }),
            ),
            (
                "dweight",
                median_ms(reps, || {
                    matmul_bf16(&mut dw, &xb, &dyb, ic, n, oc, true, false, false)
                }),
            ),
        ];
        for ((what, ms), f) in products.into_iter().zip(f32_ms) {
            rows.push(Row {
                name: format!("bf16 {tag} {what} ({:.2}x f32)", f / ms),
                ms,
                work: Work::Flops(2.0 * (n * ic * oc) as f64),
            });
        }
    }

    let d = AttentionDims {
        b: 8,
        tq: 128,
        tk: 128,
        nh: 12,
        hs: 64,
    };
    let c = d.nh * d.hs;
    let m = d.b * d.tq * c;
    let (q, k, v, dout) = (
        randn(m, 1.0, &mut rng),
        randn(m, 1.0, &mut rng),
        randn(m, 1.0, &mut rng),
        randn(m, 1.0, &mut rng),
    );
    let (mut out, mut lse) = (vec![0.0; m], vec![0.0; d.b * d.nh * d.tq]);
    let (mut dq, mut dk, mut dv) = (vec![0.0; m], vec![0.0; m], vec![0.0; m]);
    let ms = median_ms(reps, || {
        attention_forward(&mut out, &mut lse, &q, &k, &v, None, true, d);
        attention_backward(
            &mut dq, &mut dk, &mut dv, &dout, &out, &lse, &q, &k, &v, None, true, d,
        );
    });
    // Model FLOPs: forward is 2 products (QKᵀ, PV), backward 5 (recomputed QKᵀ, dV, dP, dQ, dK),
    // each 2·Tq·Tk·HS multiply-adds per head, halved by the causal mask.
    let per_head = 2.0 * (d.tq * d.tk * d.hs) as f64 * 0.5;
    let flops = per_head * (d.b * d.nh) as f64 * 7.0;
    rows.push(Row {
        name: "attention B8 H12 T128 d64 causal fwd+bwd".into(),
        ms,
        work: Work::Flops(flops),
    });

    let c = 768;
    let x = randn(n * c, 1.0, &mut rng);
    let dy = randn(n * c, 1.0, &mut rng);
    let (g, b) = (vec![1.0; c], vec![0.0; c]);
    let (mut y, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    let (mut dx, mut dg, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    let ms = median_ms(reps, || {
        layernorm_forward(&mut y, &mut mean, &mut rstd, &x, &g, &b, n, c, 1e-5);
        layernorm_backward(&mut dx, &mut dg, &mut db, &dy, &x, &g, &mean, &rstd, n, c);
    });
    // Bytes: forward reads x, writes y; backward reads x, dy, writes dx (4 passes of N·C f32 + 1).
    rows.push(Row {
        name: "layernorm 1024x768 fwd+bwd".into(),
        ms,
        work: Work::Bytes(5.0 * 4.0 * (n * c) as f64),
    });

    let h = 3072;
    let x = randn(n * h, 1.0, &mut rng);
    let dy = randn(n * h, 1.0, &mut rng);
    let (mut y, mut dx) = (vec![0.0; n * h], vec![0.0; n * h]);
    let ms = median_ms(reps, || {
        gelu_forward(&mut y, &x);
        gelu_backward(&mut dx, &x, &dy);
    });
    rows.push(Row {
        name: "gelu 1024x3072 fwd+bwd".into(),
        ms,
        work: Work::Bytes(5.0 * 4.0 * (n * h) as f64),
    });

    let v = 50257;
    let logits0 = randn(n * v, 1.0, &mut rng);
    let targets: Vec<i32> = (0..n).map(|_| rng.below(v as u64) as i32).collect();
    let mut logits = logits0.clone();
    let mut losses = vec![0.0; n];
    // The fused kernel overwrites the logits with their gradient, so each repetition restores
    // them first; the copy is timed separately and subtracted.
    let copy_ms = median_ms(reps, || logits.copy_from_slice(&logits0));
    let ms = median_ms(reps, || {
        logits.copy_from_slice(&logits0);
        crossentropy_forward_backward(&mut logits, &mut losses, &targets, n, v, -100, 0.0, 1.0);
    }) - copy_ms;
    rows.push(Row {
        name: "crossentropy 1024x50257 fwd+bwd".into(),
        ms,
        work: Work::Bytes(2.0 * 4.0 * (n * v) as f64),
    });
    rows
}

fn find_python(explicit: Option<PathBuf>) -> PathBuf {
    if let Some(p) = explicit {
        return p;
    }
    if let Some(p) = std::env::var_os("GPT_PYTHON") {
        return PathBuf::from(p);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".cache/gpt-refenv/bin/python");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("python3")
}

fn torch_times(
    python: &PathBuf,
    threads: usize,
    reps: usize,
) -> Result<HashMap<String, f64>, String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/kernels_torch.py");
    let output = Command::new(python)
        .arg(&script)
        .args([
            "--threads",
            &threads.to_string(),
            "--reps",
            &reps.to_string(),
        ])
        .output()
        .map_err(|e| {
            format!(
                "could not run {}: {e} (pass --python PATH to a Python with PyTorch)",
                python.display()
            )
        })?;
    if !output.status.success() {
        return Err(format!(
            "{} {} failed: {}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let mut map = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("bad line from torch bench `{line}`: {e}"))?;
        if let (Some(name), Some(ms)) = (v["name"].as_str(), v["median_ms"].as_f64()) {
            map.insert(name.to_string(), ms);
        }
    }
    Ok(map)
}

fn kernels(args: KernelArgs) -> CliResult {
    let threads = gpt::threads::current();
    println!(
        "gpt bench kernels: {threads} threads, median of {} repetitions",
        args.reps
    );
    let rows = ours(args.reps);
    let torch = if args.vs_torch {
        let py = find_python(args.python);
        Some(torch_times(&py, threads, args.reps)?)
    } else {
        None
    };
    println!(
        "{:<44} {:>10} {:>14} {:>11} {:>9}",
        "operation", "ours ms", "rate", "torch ms", "ratio"
    );
    for r in &rows {
        let rate = match r.work {
            Work::Flops(f) => format!("{:.1} GFLOP/s", f / r.ms / 1e6),
            Work::Bytes(b) => format!("{:.1} GB/s", b / r.ms / 1e6),
        };
        let (tms, ratio) = match torch.as_ref().and_then(|t| t.get(&r.name)) {
            Some(&t) => (format!("{t:.3}"), format!("{:.2}x", t / r.ms)),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<44} {:>10.3} {:>14} {:>11} {:>9}",
            r.name, r.ms, rate, tms, ratio
        );
    }
    if torch.is_some() {
        println!("ratio = PyTorch time / our time (above 1: we are faster)");
    }
    Ok(())
}

/// Batch shape and vocabulary of each benchmarked preset.
fn preset_shape(name: &str) -> Option<(usize, usize, usize)> {
    match name {
        "tiny" => Some((16, 128, 65)),
        "char-baby" => Some((8, 256, 65)),
        "gpt2" => Some((4, 64, 50257)),
        _ => None,
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn train_one(a: TrainOneArgs) -> CliResult {
    use gpt::kernels::adamw::clip_grad_norm;
    use gpt::model::{Gpt, GptConfig};
    use gpt::optim::{AdamW, AdamWConfig};
    let (_, _, vocab) =
        preset_shape(&a.preset).ok_or_else(|| format!("unknown bench preset `{}`", a.preset))?;
    let mut cfg = GptConfig::preset(&a.preset, vocab)?;
    cfg.n_ctx = cfg.n_ctx.max(a.block_size);
    let mut rng = Rng::new(0);
    let mut model = Gpt::new(cfg, &mut rng)?;
    model.set_precision(a.precision.parse()?);
    let mut opt = AdamW::new(model.layout(), AdamWConfig::default());
    let n = a.batch_size * a.block_size;
    let mut times = Vec::new();
    for s in 0..a.steps + 2 {
        let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u64) as u32).collect();
        let targets: Vec<i32> = (0..n).map(|_| rng.below(vocab as u64) as i32).collect();
        let t0 = Instant::now();
        model.params.zero_grad();
        model.forward_backward(
            &ids,
            &targets,
            a.batch_size,
            a.block_size,
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
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{}",
        serde_json::json!({"step_s": med, "tokens_per_sec": n as f64 / med, "peak_rss_mb": peak_rss_mb()})
    );
    Ok(())
}

fn run_json(cmd: &mut Command) -> Result<serde_json::Value, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("bad JSON `{line}` from {cmd:?}: {e}"))
}

fn train_bench(a: TrainBenchArgs) -> CliResult {
    let threads = gpt::threads::current();
    let precision: gpt::nn::precision::Precision = a.precision.parse()?;
    if let Some(w) = precision.warning() {
        eprintln!("{w}");
    }
    let autocast = a.vs_torch && precision == gpt::nn::precision::Precision::Bf16;
    // Matmul peak measured now, on this machine, for MFU.
    let (m, k, nn) = (1024, 768, 3072);
    let mut rng = Rng::new(1);
    let x = randn(m * k, 1.0, &mut rng);
    let w = randn(k * nn, 1.0, &mut rng);
    let mut y = vec![0.0; m * nn];
    let ms = median_ms(10, || matmul(&mut y, &x, &w, m, k, nn, false, false, false));
    let peak = 2.0 * (m * k * nn) as f64 / ms / 1e6;
    println!("gpt bench train: {threads} threads, {} timed steps per preset, precision {}; f32 matmul peak {peak:.1} GFLOP/s (1024x768x3072, for MFU)", a.steps, precision.describe());
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
    let exe = std::env::current_exe()?;
    let python = find_python(a.python.clone());
    for preset in a
        .presets
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (b, t, vocab) = preset_shape(preset)
            .ok_or_else(|| format!("unknown bench preset `{preset}` (tiny, char-baby, gpt2)"))?;
        let cfg = gpt::model::GptConfig::preset(preset, vocab)?;
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
                    &a.steps.to_string(),
                    "--precision",
                    precision.name(),
                ]),
        )?;
        let ours_tps = ours["tokens_per_sec"].as_f64().unwrap_or(0.0);
        let mfu = |tps: f64| format!("{:.0}%", 100.0 * tps * flops_per_token / (peak * 1e9));
        let torch_run = |autocast: bool| -> Result<(Option<f64>, Option<f64>), String> {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/train_torch.py");
            let mut cmd = Command::new(&python);
            cmd.arg(&script);
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
                    &a.steps.to_string(),
                ])
                .args(["--threads", &threads.to_string()]),
            )?;
            Ok((v["tokens_per_sec"].as_f64(), v["peak_rss_mb"].as_f64()))
        };
        let (torch_tps, torch_mem) = if a.vs_torch {
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
            torch_tps.map_or("-".into(), |v| format!("{v:.0}")),
            torch_tps.map_or("-".into(), mfu),
            torch_mem.map_or("-".into(), |v| format!("{v:.0}")),
            torch_tps.map_or("-".into(), |v| format!("{:.2}x", ours_tps / v)),
        );
        if autocast {
            let (tps, mem) = torch_run(true)?;
            print!(
                " {:>14} {:>10} {:>7}",
                tps.map_or("-".into(), |v| format!("{v:.0}")),
                mem.map_or("-".into(), |v| format!("{v:.0}")),
                tps.map_or("-".into(), |v| format!("{:.2}x", ours_tps / v)),
            );
        }
        println!();
    }
    if a.vs_torch {
        println!("ratio = our tokens/s / PyTorch tokens/s (above 1: we are faster); MFU against the f32 matmul peak");
    }
    Ok(())
}
