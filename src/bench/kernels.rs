//! `gpt bench kernels`: every core kernel forward+backward at GPT-2-small shapes (B·T = 1024),
//! printing median time and GFLOP/s or GB/s; with `vs_torch` the same operations run in PyTorch
//! (`bench/kernels_torch.py`) on the same number of threads in the same run, and the table shows
//! PyTorch time / our time (above 1 means we are faster).

use super::harness::{find_python, median_ms, randn, run_peer, script, PYTHON_HINT};
use crate::error::{Error, Result};
use crate::kernels::attention::{attention_backward, attention_forward, AttentionDims};
use crate::kernels::bf16::{matmul_bf16, to_bf16_vec};
use crate::kernels::crossentropy::crossentropy_forward_backward;
use crate::kernels::gelu::{gelu_backward, gelu_forward};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::kernels::matmul::matmul;
use crate::rng::Rng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of `gpt bench kernels`.
#[derive(Clone, Debug)]
pub struct KernelsBench {
    /// Also run the same operations in PyTorch and print time ratios.
    pub vs_torch: bool,
    /// Python interpreter with PyTorch (see [`find_python`] for the default).
    pub python: Option<PathBuf>,
    /// Timed repetitions per operation (the median is reported).
    pub reps: usize,
}

/// One benchmark row: name, median milliseconds, and the work it did.
struct Row {
    name: String,
    ms: f64,
    /// Floating-point operations (for GFLOP/s) or bytes moved (for GB/s).
    work: Work,
}

/// What a row's rate counts.
enum Work {
    Flops(f64),
    Bytes(f64),
}

/// Times our kernels.
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

/// Median milliseconds of the same operations in PyTorch, by row name.
fn torch_times(python: &Path, threads: usize, reps: usize) -> Result<HashMap<String, f64>> {
    let script = script("kernels_torch.py");
    let stdout = run_peer(
        Command::new(python).arg(&script).args([
            "--threads",
            &threads.to_string(),
            "--reps",
            &reps.to_string(),
        ]),
        PYTHON_HINT,
    )?;
    let mut map = HashMap::new();
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::file(&script, format!("bad output line `{line}`: {e}")))?;
        if let (Some(name), Some(ms)) = (v["name"].as_str(), v["median_ms"].as_f64()) {
            map.insert(name.to_string(), ms);
        }
    }
    Ok(map)
}

/// Runs `gpt bench kernels`, printing the table to standard output.
pub fn run(opts: &KernelsBench) -> Result<()> {
    let threads = crate::threads::current();
    println!(
        "gpt bench kernels: {threads} threads, median of {} repetitions",
        opts.reps
    );
    let rows = ours(opts.reps);
    let torch = if opts.vs_torch {
        let py = find_python(opts.python.as_deref());
        Some(torch_times(&py, threads, opts.reps)?)
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
