//! `gpt bench generate`: decoding speed of GPT-2 124M (random weights, created in-process and
//! saved as f32 safetensors, then memory-mapped), batch 1, a 32-token prompt and 128 new tokens
//! greedy; prefill tokens/s; batch-8 throughput. With `--vs-transformers` the same checkpoint
//! runs through `transformers`' `generate` (bench/generate_hf.py) on the same threads in the
//! same run. The memory-bandwidth bound is `copy bandwidth / bytes of weights per token`, with
//! the copy bandwidth (STREAM convention: bytes read + bytes written) measured here too.
//!
//! With `--dtype bf16` the checkpoint is also loaded with the weight matrices in bf16
//! (`InferenceModel::load_as`: no f32 copy) and decoded the same way; and each dtype's peak
//! resident memory is measured in a child process of its own (`--peak-rss-child`: load, then one
//! batch-1 generation), since this process's peak includes the random model it created and the
//! bandwidth probes' buffers.

use crate::cli::CliResult;
use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig, Timing};
use gpt::model::{checkpoint, Gpt, GptConfig};
use gpt::nn::precision::Precision;
use gpt::rng::Rng;
use rayon::prelude::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Options of `gpt bench generate`.
#[derive(clap::Args)]
pub struct GenerateBenchArgs {
    /// Also run `transformers` `generate` on the same checkpoint and threads.
    #[arg(long)]
    pub vs_transformers: bool,
    /// Python interpreter with torch + transformers.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Prompt tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// New tokens (greedy).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Batch size of the throughput run.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed runs (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Model directory to use instead of a fresh random GPT-2 124M.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Also decode with the weight matrices in this dtype (`bf16`: half the bytes per token);
    /// `f32` runs only the f32 rows.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Internal: load `--model` in `--dtype`, generate once at batch 1 and print one JSON line
    /// with the decode speed and this process's peak RSS.
    #[arg(long, hide = true, requires = "model")]
    pub peak_rss_child: bool,
}

/// Sum of a slice with 64 lanes (the decode kernel's inner loop shape).
#[inline(always)]
fn sum64(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 64];
    for v in x.chunks_exact(64) {
        for i in 0..64 {
            acc[i] += v[i];
        }
    }
    acc.iter().sum()
}

/// [`sum64`] compiled for AVX-512 when the CPU has it, like the decode kernel.
fn sum_simd(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn v4(x: &[f32]) -> f32 {
            sum64(x)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            return unsafe { v4(x) };
        }
    }
    sum64(x)
}

/// Read bandwidth in GB/s: every thread sums one contiguous share of a 512 MiB buffer (larger
/// than GPT-2 124M's weights), compiled like the decode kernel; best of 5. This is the access
/// pattern of decoding, which only reads weights.
fn read_bandwidth() -> f64 {
    let n = 128 << 20;
    let src = vec![1.0f32; n];
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        let total: f32 = src.par_chunks(chunk).map(sum_simd).sum();
        best = best.min(t0.elapsed().as_secs_f64());
        std::hint::black_box(total);
    }
    4.0 * n as f64 / best / 1e9
}

/// Copy bandwidth in GB/s (read + write bytes), all threads, 256 MiB buffers, best of 5.
fn copy_bandwidth() -> f64 {
    let n = 64 << 20;
    let src = vec![1.0f32; n];
    let mut dst = vec![0.0f32; n];
    let chunk = n / (4 * rayon::current_num_threads().max(1));
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best = best.min(t0.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * 4.0 * n as f64 / best / 1e9
}

fn run_ours(model: &InferenceModel, prompts: &[Vec<u32>], new: usize, reps: usize) -> Timing {
    let cfg = GenerateConfig {
        max_new_tokens: new,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let mut best: Option<Timing> = None;
    for _ in 0..reps.max(1) {
        // Bench input is fixed and valid; an error here is a bug worth a panic message.
        let (_, t) = generate(model, prompts, &cfg, |_, _| Ok(false)).expect("generate");
        best = Some(match best {
            Some(b) if b.decode_tokens_per_sec() >= t.decode_tokens_per_sec() => Timing {
                prefill_secs: b.prefill_secs.min(t.prefill_secs),
                ..b
            },
            Some(b) => Timing {
                prefill_secs: b.prefill_secs.min(t.prefill_secs),
                ..t
            },
            None => t,
        });
    }
    best.unwrap_or_default()
}

/// The batch-1 prompt of the benchmark and the batch prompts (the same in every process).
fn prompts(args: &GenerateBenchArgs, vocab: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut rng = Rng::new(1);
    let v = vocab as u64;
    let mut prompt = || -> Vec<u32> { (0..args.prompt_len).map(|_| rng.below(v) as u32).collect() };
    let p1 = vec![prompt()];
    let pb = (0..args.batch).map(|_| prompt()).collect();
    (p1, pb)
}

/// `--peak-rss-child`: load, one batch-1 generation, one JSON line.
fn peak_rss_child(args: &GenerateBenchArgs, dtype: Precision) -> CliResult {
    let dir = args
        .model
        .as_ref()
        .ok_or("--peak-rss-child needs --model")?;
    let model = InferenceModel::load_as(dir, dtype)?;
    let (p1, _) = prompts(args, model.config.vocab_size);
    let t = run_ours(&model, &p1, args.new_tokens, 1);
    println!(
        "{}",
        serde_json::json!({
            "dtype": dtype.name(),
            "decode_tokens_per_sec": t.decode_tokens_per_sec(),
            "weight_mb": model.weight_bytes() as f64 / (1 << 20) as f64,
            "peak_rss_mb": super::peak_rss_mb(),
        })
    );
    Ok(())
}

/// Runs [`peak_rss_child`] for `dtype` in a new process of this executable.
fn measure_peak_rss(
    args: &GenerateBenchArgs,
    dir: &std::path::Path,
    dtype: Precision,
) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let threads = rayon::current_num_threads().to_string();
    let out = Command::new(&exe)
        .args([
            "--threads",
            &threads,
            "bench",
            "generate",
            "--peak-rss-child",
        ])
        .arg("--model")
        .arg(dir)
        .args(["--dtype", dtype.name()])
        .args(["--prompt-len", &args.prompt_len.to_string()])
        .args(["--new-tokens", &args.new_tokens.to_string()])
        .output()
        .map_err(|e| format!("{}: {e}", exe.display()))?;
    if !out.status.success() {
        return Err(format!(
            "peak-RSS child ({}) failed: {}",
            dtype.name(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("peak-RSS child output `{line}`: {e}"))
}

/// Runs `gpt bench generate`.
pub fn run(args: GenerateBenchArgs) -> CliResult {
    let threads = rayon::current_num_threads();
    let dtype = Precision::parse_for("dtype", &args.dtype)?;
    if args.peak_rss_child {
        return peak_rss_child(&args, dtype);
    }
    let tmp;
    let dir = match &args.model {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("gpt-bench-gpt2-{}", std::process::id()));
            eprintln!("creating a random GPT-2 124M in {} ...", tmp.display());
            let mut cfg = GptConfig::gpt2();
            cfg.dropout = 0.0;
            let gpt = Gpt::new(cfg, &mut Rng::new(0))?;
            checkpoint::save(&gpt, &tmp, None)?;
            tmp.clone()
        }
    };
    let model = InferenceModel::load(&dir)?;
    let bw = copy_bandwidth();
    let read_bw = read_bandwidth();
    let bytes = model.bytes_per_token() as f64;
    let bound = bw * 1e9 / bytes;
    let read_bound = read_bw * 1e9 / bytes;
    let (p1, pb) = prompts(&args, model.config.vocab_size);
    let one = run_ours(&model, &p1, args.new_tokens, args.reps);
    let many = run_ours(&model, &pb, args.new_tokens, 1);
    let huge = {
        let mut m = InferenceModel::load(&dir)?;
        m.copy_to_huge_pages()?;
        run_ours(&m, &p1, args.new_tokens, args.reps)
    };
    println!(
        "GPT-2 124M {:?} weights, {threads} threads, prompt {} tokens, {} new tokens greedy",
        model.source, args.prompt_len, args.new_tokens
    );
    println!(
        "copy bandwidth {bw:.1} GB/s; weights read per token {:.3} GB; bound {bound:.1} tokens/s",
        bytes / 1e9
    );
    println!(
        "read bandwidth {read_bw:.1} GB/s (sum over a buffer, the decode access pattern); read bound {read_bound:.1} tokens/s"
    );
    let ours_decode = one.decode_tokens_per_sec();
    println!(
        "ours   batch 1: decode {ours_decode:.1} tokens/s ({:.2} of the copy bound, {:.2} of the read bound), prefill {:.0} tokens/s",
        ours_decode / bound,
        ours_decode / read_bound,
        one.prefill_tokens_per_sec()
    );
    println!(
        "ours   batch 1, weights copied to huge pages: decode {:.1} tokens/s ({:.2} of the bound)",
        huge.decode_tokens_per_sec(),
        huge.decode_tokens_per_sec() / bound
    );
    println!(
        "ours   batch {}: decode {:.1} tokens/s in all, prefill {:.0} tokens/s",
        args.batch,
        many.decode_tokens_per_sec(),
        many.prefill_tokens_per_sec()
    );
    // bf16 weights: the same batch-1 decode, against the bounds for the halved bytes.
    let bf16_decode = if dtype == Precision::Bf16 {
        let m = InferenceModel::load_as(&dir, dtype)?;
        let bytes16 = m.bytes_per_token() as f64;
        let (bound16, read_bound16) = (bw * 1e9 / bytes16, read_bw * 1e9 / bytes16);
        let r = run_ours(&m, &p1, args.new_tokens, args.reps);
        let d = r.decode_tokens_per_sec();
        println!(
            "ours   batch 1, {} weights ({:.3} GB per token): decode {d:.1} tokens/s ({:.2} of its copy bound {bound16:.1}, {:.2} of its read bound {read_bound16:.1}), prefill {:.0} tokens/s",
            dtype.describe(),
            bytes16 / 1e9,
            d / bound16,
            d / read_bound16,
            r.prefill_tokens_per_sec()
        );
        Some(d)
    } else {
        None
    };
    // Peak resident memory per dtype, each in a fresh process (load + one batch-1 generation).
    let mut rss = Vec::new();
    for dt in [Precision::F32, dtype] {
        if rss.iter().any(|(d, _)| *d == dt) {
            continue;
        }
        match measure_peak_rss(&args, &dir, dt) {
            Ok(v) => rss.push((dt, v)),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    if !rss.is_empty() {
        let parts: Vec<String> = rss
            .iter()
            .map(|(dt, v)| {
                format!(
                    "{} {:.0} MiB (weights {:.0} MiB{})",
                    dt.name(),
                    v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
                    v["weight_mb"].as_f64().unwrap_or(f64::NAN),
                    if *dt == Precision::F32
                        && model.source == gpt::model::inference::WeightsSource::Mapped
                    {
                        ", memory-mapped file pages"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        println!(
            "peak RSS (a separate process per dtype: load + one batch-1 generation): {}",
            parts.join("; ")
        );
    }
    if args.vs_transformers {
        let python = super::find_python(args.python.clone());
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/generate_hf.py");
        let ids = |ps: &[Vec<u32>]| serde_json::to_string(ps).unwrap_or_default();
        let out = Command::new(&python)
            .arg(&script)
            .arg("--model")
            .arg(&dir)
            .args(["--threads", &threads.to_string()])
            .args(["--new-tokens", &args.new_tokens.to_string()])
            .args(["--reps", &args.reps.to_string()])
            .args(["--prompt", &ids(&p1), "--batch-prompts", &ids(&pb)])
            .output()
            .map_err(|e| format!("{}: {e}", python.display()))?;
        if !out.status.success() {
            return Err(format!(
                "bench/generate_hf.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("bench/generate_hf.py output: {e}"))?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let hf = f("decode_tokens_per_sec");
        if let Some(d) = bf16_decode {
            println!(
                "ratio ours bf16 weights / transformers f32: batch 1 decode {:.2}x",
                d / hf
            );
        }
        println!(
            "transformers batch 1: decode {hf:.1} tokens/s ({:.2} of the bound), prefill {:.0} tokens/s",
            hf / bound,
            f("prefill_tokens_per_sec")
        );
        println!(
            "transformers batch {}: decode {:.1} tokens/s in all",
            args.batch,
            f("batch_decode_tokens_per_sec")
        );
        println!(
            "ratio ours / transformers: batch 1 decode {:.2}x, prefill {:.2}x, batch {} {:.2}x; same greedy tokens: {}",
            ours_decode / hf,
            one.prefill_tokens_per_sec() / f("prefill_tokens_per_sec"),
            args.batch,
            many.decode_tokens_per_sec() / f("batch_decode_tokens_per_sec"),
            {
                let cfg = GenerateConfig {
                    max_new_tokens: args.new_tokens,
                    sampling: SamplingConfig::greedy(),
                    seed: 0,
                    eos: None,
                };
                let (g, _) = generate(&model, &p1, &cfg, |_, _| Ok(false))?;
                let theirs: Vec<u32> = v["ids"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect())
                    .unwrap_or_default();
                g[0].ids == theirs
            }
        );
    }
    if args.model.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
