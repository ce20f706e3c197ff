//! `gpt bench generate`: decoding speed of GPT-2 124M (random weights, created in-process and
//! saved as f32 safetensors, then memory-mapped), batch 1, a 32-token prompt and 128 new tokens
//! greedy; prefill tokens/s; batch-8 throughput. With `vs_transformers` the same checkpoint
//! runs through `transformers`' `generate` (`bench/generate_hf.py`) on the same threads in the
//! same run. The memory-bandwidth bound is `copy bandwidth / bytes of weights per token`, with
//! the copy bandwidth (STREAM convention: bytes read + bytes written) measured here too
//! ([`super::bandwidth`]).
//!
//! With `dtype` bf16 the checkpoint is also loaded with the weight matrices in bf16
//! (`InferenceModel::load_as`: no f32 copy) and decoded the same way; and each dtype's peak
//! resident memory is measured in a child process of its own ([`run_peak_rss_child`]: load,
//! then one batch-1 generation), since this process's peak includes the random model it created
//! and the bandwidth probes' buffers.

use super::bandwidth::{copy_bandwidth, read_bandwidth};
use super::harness::{current_exe, find_python, peak_rss_mb, run_json, run_peer, script};
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig, Timing};
use crate::model::checkpoint::NonFinite;
use crate::model::inference::WeightsSource;
use crate::model::weight_dtype::WeightDtype;
use crate::model::{checkpoint, Gpt, GptConfig};
use crate::rng::Rng;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of `gpt bench generate`.
#[derive(Clone, Debug)]
pub struct GenerateBench {
    /// Also run `transformers` `generate` on the same checkpoint and threads.
    pub vs_transformers: bool,
    /// Python interpreter with torch + transformers.
    pub python: Option<PathBuf>,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// New tokens (greedy).
    pub new_tokens: usize,
    /// Batch size of the throughput run.
    pub batch: usize,
    /// Timed runs (the best is reported).
    pub reps: usize,
    /// Model directory to use instead of a fresh random GPT-2 124M.
    pub model: Option<PathBuf>,
    /// Also decode with the weight matrices in this dtype (bf16, f16: half the bytes per token);
    /// f32 runs only the f32 rows.
    pub dtype: WeightDtype,
}

/// Greedy decoding of `new` tokens after every prompt.
fn greedy(new: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: new,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    }
}

/// The best decode speed (and best prefill) of `reps` greedy generations.
fn run_ours(
    model: &InferenceModel,
    prompts: &[Vec<u32>],
    new: usize,
    reps: usize,
) -> Result<Timing> {
    let cfg = greedy(new);
    let mut best: Option<Timing> = None;
    for _ in 0..reps.max(1) {
        let (_, t) = generate(model, prompts, &cfg, |_, _| Ok(false))?;
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
    Ok(best.unwrap_or_default())
}

/// The batch-1 prompt of the benchmark and the batch prompts (the same in every process).
fn prompts(opts: &GenerateBench, vocab: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let mut rng = Rng::new(1);
    let v = vocab as u64;
    let mut prompt = || -> Vec<u32> { (0..opts.prompt_len).map(|_| rng.below(v) as u32).collect() };
    let p1 = vec![prompt()];
    let pb = (0..opts.batch).map(|_| prompt()).collect();
    (p1, pb)
}

/// The child of the peak-memory measurement (`--peak-rss-child`): loads `opts.model` in
/// `opts.dtype`, generates once at batch 1 and prints one JSON line (dtype, decode speed,
/// weight MiB, this process's peak RSS).
pub fn run_peak_rss_child(opts: &GenerateBench) -> Result<()> {
    let dir = opts
        .model
        .as_ref()
        .ok_or_else(|| Error::usage("bench generate", "--peak-rss-child needs --model"))?;
    let dtype = opts.dtype;
    let model = if crate::model::inference::is_gguf(dir) {
        crate::model::gguf_model::load_gguf(dir, Some(dtype), NonFinite::Refuse)?.0
    } else {
        InferenceModel::load_as(dir, dtype)?
    };
    let (p1, _) = prompts(opts, model.config.vocab_size);
    let t = run_ours(&model, &p1, opts.new_tokens, 1)?;
    println!(
        "{}",
        serde_json::json!({
            "dtype": dtype.name(),
            "decode_tokens_per_sec": t.decode_tokens_per_sec(),
            "weight_mb": model.weight_bytes() as f64 / (1 << 20) as f64,
            "peak_rss_mb": peak_rss_mb(),
        })
    );
    Ok(())
}

/// Runs [`run_peak_rss_child`] for `model` (a directory or a GGUF file) in `dtype` in a new
/// process of this executable.
pub(crate) fn measure_peak_rss(
    model: &Path,
    dtype: WeightDtype,
    prompt_len: usize,
    new_tokens: usize,
) -> Result<serde_json::Value> {
    let exe = current_exe()?;
    let threads = rayon::current_num_threads().to_string();
    run_json(
        Command::new(&exe)
            .args([
                "--threads",
                &threads,
                "bench",
                "generate",
                "--peak-rss-child",
            ])
            .arg("--model")
            .arg(model)
            .args(["--dtype", dtype.name()])
            .args(["--prompt-len", &prompt_len.to_string()])
            .args(["--new-tokens", &new_tokens.to_string()]),
        "",
    )
}

/// Runs `gpt bench generate`, printing its report to standard output.
pub fn run(opts: &GenerateBench) -> Result<()> {
    for (flag, v) in [
        ("--prompt-len", opts.prompt_len),
        ("--new-tokens", opts.new_tokens),
        ("--batch", opts.batch),
    ] {
        if v == 0 {
            return Err(Error::field(flag, "must be at least 1"));
        }
    }
    let threads = rayon::current_num_threads();
    let dtype = opts.dtype;
    let tmp;
    let dir = match &opts.model {
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
    let (p1, pb) = prompts(opts, model.config.vocab_size);
    let one = run_ours(&model, &p1, opts.new_tokens, opts.reps)?;
    let many = run_ours(&model, &pb, opts.new_tokens, 1)?;
    let huge = {
        // The unpacked matrices (what huge pages could help): loading packs them in panels.
        let mut m = InferenceModel::load(&dir)?;
        m.drop_panels();
        m.copy_to_huge_pages()?;
        run_ours(&m, &p1, opts.new_tokens, opts.reps)?
    };
    println!(
        "GPT-2 124M {:?} weights, {threads} threads, prompt {} tokens, {} new tokens greedy",
        model.source, opts.prompt_len, opts.new_tokens
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
        "ours   batch 1, unpacked matrices copied to huge pages: decode {:.1} tokens/s ({:.2} of the bound)",
        huge.decode_tokens_per_sec(),
        huge.decode_tokens_per_sec() / bound
    );
    println!(
        "ours   batch {}: decode {:.1} tokens/s in all, prefill {:.0} tokens/s",
        opts.batch,
        many.decode_tokens_per_sec(),
        many.prefill_tokens_per_sec()
    );
    // bf16 or int8 weights: the same batch-1 decode, against the bounds for their bytes.
    let packed_decode = if dtype != WeightDtype::F32 {
        let m = InferenceModel::load_as(&dir, dtype)?;
        let bytes_p = m.bytes_per_token() as f64;
        let (bound_p, read_bound_p) = (bw * 1e9 / bytes_p, read_bw * 1e9 / bytes_p);
        let r = run_ours(&m, &p1, opts.new_tokens, opts.reps)?;
        let d = r.decode_tokens_per_sec();
        println!(
            "ours   batch 1, {} weights ({:.3} GB per token): decode {d:.1} tokens/s ({:.2} of its copy bound {bound_p:.1}, {:.2} of its read bound {read_bound_p:.1}), prefill {:.0} tokens/s",
            dtype.describe(),
            bytes_p / 1e9,
            d / bound_p,
            d / read_bound_p,
            r.prefill_tokens_per_sec()
        );
        Some(d)
    } else {
        None
    };
    // Peak resident memory per dtype, each in a fresh process (load + one batch-1 generation).
    let mut rss = Vec::new();
    for dt in [WeightDtype::F32, dtype] {
        if rss.iter().any(|(d, _)| *d == dt) {
            continue;
        }
        match measure_peak_rss(&dir, dt, opts.prompt_len, opts.new_tokens) {
            Ok(v) => rss.push((dt, v)),
            Err(e) => eprintln!("warning: peak-RSS child ({}): {e}", dt.name()),
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
                    if *dt == WeightDtype::F32 && model.source == WeightsSource::Mapped {
                        ": the matrices packed in panels plus the memory-mapped file, whose \
                         matrix pages are dropped once packed"
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
    if opts.vs_transformers {
        let python = find_python(opts.python.as_deref());
        let script = script("generate_hf.py");
        let ids = |ps: &[Vec<u32>]| serde_json::to_string(ps).unwrap_or_default();
        let stdout = run_peer(
            Command::new(&python)
                .arg(&script)
                .arg("--model")
                .arg(&dir)
                .args(["--threads", &threads.to_string()])
                .args(["--new-tokens", &opts.new_tokens.to_string()])
                .args(["--reps", &opts.reps.to_string()])
                .args(["--prompt", &ids(&p1), "--batch-prompts", &ids(&pb)]),
            "pass --python PATH to a Python with torch and transformers",
        )?;
        let v: serde_json::Value = serde_json::from_str(&stdout)
            .map_err(|e| Error::file(&script, format!("bad output: {e}")))?;
        let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let hf = f("decode_tokens_per_sec");
        if let Some(d) = packed_decode {
            println!(
                "ratio ours {} weights / transformers f32: batch 1 decode {:.2}x",
                dtype.name(),
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
            opts.batch,
            f("batch_decode_tokens_per_sec")
        );
        let (g, _) = generate(&model, &p1, &greedy(opts.new_tokens), |_, _| Ok(false))?;
        let theirs: Vec<u32> = v["ids"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "ratio ours / transformers: batch 1 decode {:.2}x, prefill {:.2}x, batch {} {:.2}x; same greedy tokens: {}",
            ours_decode / hf,
            one.prefill_tokens_per_sec() / f("prefill_tokens_per_sec"),
            opts.batch,
            many.decode_tokens_per_sec() / f("batch_decode_tokens_per_sec"),
            g[0].ids == theirs
        );
    }
    if opts.model.is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
