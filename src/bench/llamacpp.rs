//! `gpt bench generate --vs-llamacpp`: batch-1 greedy decoding and prefill of random GPT-2
//! models (124M and, with `--sizes`, 355M) in three precisions, ours beside llama.cpp (through
//! the `llama-cpp-python` package, `bench/generate_llamacpp.py`) on the same weights, threads and
//! prompts, alternating, `runs` repetitions, medians reported:
//!
//! | ours | llama.cpp |
//! |---|---|
//! | f32: the safetensors checkpoint, memory-mapped | f32 GGUF |
//! | bf16 (packed for `vdpbf16ps`) | f16 GGUF |
//! | int8: **the same Q8_0 GGUF file** llama.cpp runs | Q8_0 GGUF |
//!
//! Every GGUF file is made by llama.cpp's own `convert_hf_to_gguf.py` (`bench/setup_llamacpp.sh`
//! fetches it) from the checkpoint directory we write. Decode tokens/s: 128 new tokens after a
//! 28-token prompt (the first token comes from the prefill and is not counted); prefill tokens/s:
//! one forward of a 128-token prompt. The read bandwidth (`super::bandwidth`) is measured just
//! before and just after each of our decoding runs, and each precision's decode rate is
//! reported as a fraction of the bound of its bytes per token: the median over repetitions of
//! the run's rate over the bound of the mean of its two probes. This host's read bandwidth
//! moves between regimes (about 27 and 43 GB/s) from one second to the next, for a buffer
//! allocated once as much as for a fresh one, so a single probe at the start does not describe
//! runs made minutes later. Beside it, the rate of merely reading the model's own matrices the
//! way decoding does ([`read_matrices`]: each matrix split over the threads, a join after each)
//! is measured after each run, and decoding's rate over that one reported too. Peak RSS per
//! precision: ours from a child process of its own (load + one generation), llama.cpp's from
//! its Python process (which includes the interpreter and numpy, about 60 MB).

use super::bandwidth::{read_bandwidth, read_matrices};
use super::generate::measure_peak_rss;
use super::harness::{find_python, median, run_json, script};
use crate::error::{Error, Result};
use crate::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
use crate::model::checkpoint::{self, NonFinite};
use crate::model::gguf_model::load_gguf;
use crate::model::weight_dtype::WeightDtype;
use crate::model::{Gpt, GptConfig};
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings of the comparison.
#[derive(Clone, Debug)]
pub struct LlamaCppBench {
    /// Python with `llama_cpp` and `gguf`.
    pub python: Option<PathBuf>,
    /// llama.cpp's `convert_hf_to_gguf.py` (default: where `bench/setup_llamacpp.sh` puts it).
    pub converter: Option<PathBuf>,
    /// Presets compared (`gpt2`, `gpt2-medium`).
    pub sizes: Vec<String>,
    /// Alternating repetitions (medians reported).
    pub runs: usize,
    /// Prompt tokens before decoding.
    pub prompt_len: usize,
    /// New tokens decoded.
    pub new_tokens: usize,
    /// Tokens of the prefill prompt.
    pub prefill_len: usize,
    /// Where the checkpoints and GGUF files are kept between runs (default: the temp dir).
    pub work_dir: Option<PathBuf>,
}

/// One precision: ours, llama.cpp's GGUF type, and how we load ours.
/// f16 and int8 run the very GGUF file llama.cpp runs; f32 and bf16 load the checkpoint.
const PRECISIONS: [(WeightDtype, &str); 4] = [
    (WeightDtype::F32, "f32"),
    (WeightDtype::Bf16, "f16"),
    (WeightDtype::F16, "f16"),
    (WeightDtype::Int8, "q8_0"),
];

fn default_converter() -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache/gpt-llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/convert_hf_to_gguf.py")
}

/// A random GPT-2 of `preset` with the GPT-2 tokenizer in `dir` (kept if already there).
fn checkpoint_for(preset: &str, dir: &Path) -> Result<()> {
    if dir.join(checkpoint::WEIGHTS_FILE).exists() {
        return Ok(());
    }
    eprintln!("creating a random {preset} in {} ...", dir.display());
    let mut cfg = GptConfig::preset(preset, 50257)?;
    cfg.dropout = 0.0;
    let gpt = Gpt::new(cfg, &mut Rng::new(0))?;
    let tok = AnyTokenizer::Bpe(Box::new(crate::tokenizer::Tokenizer::gpt2()));
    checkpoint::save_with_tokenizer(&gpt, dir, None, &tok)
}

/// Decode and prefill tokens/s of one of our models, and its greedy ids.
fn ours_once(
    model: &InferenceModel,
    prompt: &[u32],
    prefill: &[u32],
    new: usize,
) -> Result<(f64, f64, Vec<u32>)> {
    let cfg = |n| GenerateConfig {
        max_new_tokens: n,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let (g, t) = generate(model, &[prompt.to_vec()], &cfg(new), |_, _| Ok(false))?;
    let (_, tp) = generate(model, &[prefill.to_vec()], &cfg(1), |_, _| Ok(false))?;
    Ok((
        t.decode_tokens_per_sec(),
        tp.prefill_tokens_per_sec(),
        g[0].ids.clone(),
    ))
}

/// Length of the common prefix of two id lists.
fn agree(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Runs the comparison, printing one table per size.
pub fn run(opts: &LlamaCppBench) -> Result<()> {
    let python = find_python(opts.python.as_deref());
    let converter = opts.converter.clone().unwrap_or_else(default_converter);
    if !converter.exists() {
        return Err(Error::file(
            &converter,
            "llama.cpp's convert_hf_to_gguf.py is not there; run bench/setup_llamacpp.sh \
             (or pass --llamacpp-convert PATH)",
        ));
    }
    let threads = rayon::current_num_threads();
    let work = opts
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("gpt-bench-llamacpp"));
    let mut rng = Rng::new(7);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(50257) as u32).collect() };
    let prompt = ids(opts.prompt_len);
    let prefill = ids(opts.prefill_len);
    let script = script("generate_llamacpp.py");
    for preset in &opts.sizes {
        let dir = work.join(preset);
        checkpoint_for(preset, &dir)?;
        let files = run_json(
            Command::new(&python)
                .arg(&script)
                .arg("convert")
                .arg("--model")
                .arg(&dir)
                .arg("--converter")
                .arg(&converter)
                .args(["--outtypes", "f32,f16,q8_0", "--out-dir"])
                .arg(dir.join("gguf")),
            "pass --python PATH to a Python with llama_cpp and gguf (../shared/tools/setup-ref.sh --extras)",
        )?;
        let gguf = |t: &str| PathBuf::from(files[t].as_str().unwrap_or_default());
        let mut ours = Vec::new();
        for (dt, ty) in PRECISIONS {
            let m = match dt {
                WeightDtype::Int8 | WeightDtype::F16 => {
                    load_gguf(&gguf(ty), None, NonFinite::Refuse)?.0
                }
                _ => InferenceModel::load_as(&dir, dt)?,
            };
            ours.push(m);
        }
        // rows: (ours decode, prefill, ids), (theirs decode, prefill, ids, rss) per rep.
        let mut o: Vec<Vec<(f64, f64, Vec<u32>)>> = vec![Vec::new(); PRECISIONS.len()];
        let mut t: Vec<Vec<serde_json::Value>> = vec![Vec::new(); PRECISIONS.len()];
        // The read bandwidth around each of our runs, and the rate of reading the matrices
        // after it, per precision.
        let mut bws: Vec<Vec<f64>> = vec![Vec::new(); PRECISIONS.len()];
        let mut mats: Vec<Vec<f64>> = vec![Vec::new(); PRECISIONS.len()];
        for rep in 0..opts.runs.max(1) {
            eprintln!("{preset}: run {} of {}", rep + 1, opts.runs.max(1));
            for (k, (_, ty)) in PRECISIONS.iter().enumerate() {
                let before = read_bandwidth();
                o[k].push(ours_once(&ours[k], &prompt, &prefill, opts.new_tokens)?);
                bws[k].push((before + read_bandwidth()) / 2.0);
                let words = ours[k].packed_words();
                if !words.is_empty() {
                    mats[k].push(read_matrices(&words));
                }
                let js = |v: &[u32]| serde_json::to_string(v).unwrap_or_default();
                t[k].push(run_json(
                    Command::new(&python)
                        .arg(&script)
                        .arg("run")
                        .arg("--gguf")
                        .arg(gguf(ty))
                        .args(["--threads", &threads.to_string()])
                        .args(["--new-tokens", &opts.new_tokens.to_string()])
                        .args(["--prompt", &js(&prompt), "--prefill-prompt", &js(&prefill)]),
                    "",
                )?);
            }
        }
        let params = ours[0].config.num_params() as f64 / 1e6;
        let mut all_bws: Vec<f64> = bws.concat();
        let (bw_lo, bw_hi) = all_bws
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &b| {
                (lo.min(b), hi.max(b))
            });
        let read_bw = median(&mut all_bws);
        println!(
            "\n{preset} ({params:.0}M parameters, random weights), {threads} threads, batch 1 greedy: \
             decode {} new tokens after {} prompt tokens, prefill of {} tokens; medians of {} \
             alternating runs; read bandwidth {read_bw:.1} GB/s (median; {bw_lo:.1}–{bw_hi:.1} \
             around our runs: each run's bound is the mean of probes just before and after it)",
            opts.new_tokens,
            opts.prompt_len,
            opts.prefill_len,
            opts.runs.max(1)
        );
        println!(
            "| precision (ours / llama.cpp) | decode ours | decode llama.cpp | ratio | read bound | of read bound | of reading its matrices | prefill ours | prefill llama.cpp | ratio | peak RSS ours / llama.cpp (MiB) | greedy tokens agreeing |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (k, (dt, ty)) in PRECISIONS.iter().enumerate() {
            let od = median(&mut o[k].iter().map(|r| r.0).collect::<Vec<_>>());
            let op = median(&mut o[k].iter().map(|r| r.1).collect::<Vec<_>>());
            let f = |key: &str| {
                median(
                    &mut t[k]
                        .iter()
                        .map(|v| v[key].as_f64().unwrap_or(f64::NAN))
                        .collect::<Vec<_>>(),
                )
            };
            let (td, tp, trss) = (
                f("decode_tokens_per_sec"),
                f("prefill_tokens_per_sec"),
                f("peak_rss_mb"),
            );
            let theirs_ids: Vec<u32> = t[k][0]["ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_u64())
                        .map(|x| x as u32)
                        .collect()
                })
                .unwrap_or_default();
            let bytes = ours[k].bytes_per_token() as f64;
            let bound = median(&mut bws[k].clone()) * 1e9 / bytes;
            // Each run's decode rate over the bound measured around it.
            let of_bound = median(
                &mut o[k]
                    .iter()
                    .zip(&bws[k])
                    .map(|(r, bw)| r.0 / (bw * 1e9 / bytes))
                    .collect::<Vec<_>>(),
            );
            // Each run's decode rate over the rate of reading its matrices after it.
            let packed_bytes: usize = ours[k].packed_words().iter().map(|m| 4 * m.len()).sum();
            let of_matrices = if mats[k].is_empty() {
                "-".to_string()
            } else {
                let per_run: Vec<f64> = o[k]
                    .iter()
                    .zip(&mats[k])
                    .map(|(r, gbs)| r.0 / (gbs * 1e9 / packed_bytes as f64))
                    .collect();
                format!(
                    "{:.2} ({:.1} GB/s, {:.0} MB)",
                    median(&mut per_run.clone()),
                    median(&mut mats[k].clone()),
                    packed_bytes as f64 / 1e6
                )
            };
            let model_arg = if matches!(*dt, WeightDtype::Int8 | WeightDtype::F16) {
                gguf(ty)
            } else {
                dir.clone()
            };
            let rss = match measure_peak_rss(&model_arg, *dt, opts.prompt_len, opts.new_tokens) {
                Ok(v) => v["peak_rss_mb"].as_f64().unwrap_or(f64::NAN),
                Err(e) => {
                    eprintln!("peak RSS of {} {}: {e}", dt.name(), model_arg.display());
                    f64::NAN
                }
            };
            println!(
                "| {} / {ty} | {od:.1} | {td:.1} | **{:.2}x** | {bound:.1} | {of_bound:.2} | {of_matrices} | {op:.0} | {tp:.0} | **{:.2}x** | {rss:.0} / {trss:.0} | {} of {} |",
                dt.describe(),
                od / td,
                op / tp,
                agree(&o[k][0].2, &theirs_ids),
                theirs_ids.len()
            );
        }
    }
    Ok(())
}
