//! `gpt bench translate`: encoder-decoder throughput beside PyTorch `nn.Transformer`, on the
//! same work in one run.
//!
//! - Training tokens/s per preset: the same training batches (token ids, chosen evenly across
//!   the length-sorted token-budget batches of the first `pairs` training pairs) go to our
//!   trainer step and to PyTorch eager f32 (`bench/translate_torch.py train-speed`), dropout on,
//!   Adam step included, two warm-up steps, median of the rest. Tokens = real source tokens +
//!   target tokens (both with EOS), as `gpt translate train` counts them.
//! - Beam search sentences/s: the trained model of `model` translates the first `limit` test
//!   sources (our tokenization, groups of 16 sorted by length) with beam 4; PyTorch loads the
//!   same weights into `nn.Transformer` and runs the same beam algorithm (no KV cache: its
//!   decoder recomputes the prefix; only the newest position is projected to the vocabulary).
//!   The outputs are compared id for id.

use super::harness::{cell, find_python, median, run_json, script, PYTHON_HINT};
use crate::error::{Error, Result};
use crate::model::transformer::{EncoderDecoder, TransformerConfig};
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;
use crate::translate::checkpoint::load_model;
use crate::translate::data::{encode_pairs, make_batch, read_tsv, special_ids, token_batches};
use crate::translate::decode::DecodeConfig;
use crate::translate::translate_in_batches;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Settings of `gpt bench translate`.
#[derive(Clone, Debug)]
pub struct TranslateBench {
    /// A trained `gpt translate` model or run directory: its tokenizer builds the batches and
    /// its weights do the beam search.
    pub model: PathBuf,
    /// Presets timed for training (random weights, the model's vocabulary).
    pub presets: Vec<String>,
    /// Training pairs (TSV).
    pub train: PathBuf,
    /// Test pairs (TSV) whose sources are translated.
    pub test: PathBuf,
    /// Training pairs the batches are drawn from.
    pub pairs: usize,
    /// Token budget per training batch.
    pub max_tokens: usize,
    /// Timed training steps per preset (after two warm-up steps).
    pub steps: usize,
    /// Test sentences translated.
    pub limit: usize,
    /// Beam size.
    pub beam: usize,
    /// Also run PyTorch on the same work.
    pub vs_torch: bool,
    /// Python interpreter with PyTorch and safetensors.
    pub python: Option<PathBuf>,
}

/// Runs `gpt bench translate`, printing its report to standard output.
pub fn run(opts: &TranslateBench) -> Result<()> {
    for (flag, v) in [
        ("--steps", opts.steps),
        ("--max-tokens", opts.max_tokens),
        ("--limit", opts.limit),
        ("--beam", opts.beam),
    ] {
        if v == 0 {
            return Err(Error::field(flag, "must be at least 1"));
        }
    }
    let threads = crate::threads::current();
    let (mut model, tok) = load_model(&opts.model)?;
    let specials = special_ids(&tok)?;
    let limit = model.config.max_len.saturating_sub(1);

    let mut train = read_tsv(&opts.train, false)?.pairs;
    train.truncate(opts.pairs);
    let train_ids = encode_pairs(&tok, &train, 200).pairs;
    let all = token_batches(&train_ids, opts.max_tokens);
    let k = (opts.steps + 2).min(all.len());
    if k < 3 {
        return Err(Error::file(
            &opts.train,
            format!(
                "too few training batches ({}) for a timing; use more --pairs",
                all.len()
            ),
        ));
    }
    // Evenly across the length-sorted batches: short and long sentences alike.
    let chosen: Vec<&Vec<usize>> = (0..k)
        .map(|i| &all[i * (all.len() - 1) / (k - 1)])
        .collect();

    let mut test = read_tsv(&opts.test, false)?.pairs;
    test.truncate(opts.limit);
    let sources: Vec<Vec<u32>> = tok
        .encode_batch(&test.iter().map(|p| p.0.as_str()).collect::<Vec<_>>())
        .into_iter()
        .map(|mut v| {
            v.truncate(limit);
            v
        })
        .collect();

    let work = json!({
        "pad": specials[0], "bos": specials[1], "eos": specials[2],
        "vocab_size": tok.vocab_size(),
        "batches": chosen.iter().map(|b| b.iter().map(|&i| (&train_ids[i].0, &train_ids[i].1)).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "sources": sources,
    });
    let work_path =
        std::env::temp_dir().join(format!("gpt-bench-translate-{}.json", std::process::id()));
    std::fs::write(&work_path, work.to_string()).map_err(|e| Error::io(&work_path, e))?;
    let python = find_python(opts.python.as_deref());
    let torch = |args: &[&str]| -> Result<serde_json::Value> {
        run_json(
            Command::new(&python)
                .arg(script("translate_torch.py"))
                .args(args)
                .args(["--work", &work_path.to_string_lossy()])
                .args(["--threads", &threads.to_string()]),
            PYTHON_HINT,
        )
    };

    println!(
        "gpt bench translate: {threads} threads; training: {} timed steps on batches of <= {} tokens from the first {} pairs of {}; beam {} on the first {} sources of {}",
        k - 2,
        opts.max_tokens,
        train_ids.len(),
        opts.train.display(),
        opts.beam,
        sources.len(),
        opts.test.display()
    );
    println!(
        "{:<20} {:>12} {:>12} {:>7}",
        "training", "ours tok/s", "torch tok/s", "ratio"
    );
    let result = (|| -> Result<()> {
        for preset in &opts.presets {
            let cfg = TransformerConfig::preset(preset, tok.vocab_size(), specials)?;
            let ours = train_speed(cfg, &chosen, &train_ids)?;
            let theirs = if opts.vs_torch {
                torch(&["train-speed", "--preset", preset])?["train_tokens_per_sec"].as_f64()
            } else {
                None
            };
            println!(
                "{:<20} {:>12.0} {:>12} {:>7}",
                preset,
                ours,
                cell(theirs, |v| format!("{v:.0}")),
                cell(theirs, |v| format!("{:.2}x", ours / v)),
            );
        }
        let cfg = DecodeConfig {
            beam: opts.beam,
            ..DecodeConfig::default()
        };
        let (ours_rate, ours_out) = beam_speed(&mut model, &sources, &cfg)?;
        print!("beam {} sentences/s: ours {ours_rate:.2}", opts.beam);
        if opts.vs_torch {
            let v = torch(&[
                "beam-speed",
                "--model",
                &opts.model.to_string_lossy(),
                "--beam",
                &opts.beam.to_string(),
            ])?;
            let rate = v["sentences_per_sec"].as_f64().unwrap_or(f64::NAN);
            let theirs: Vec<Vec<u32>> =
                serde_json::from_value(v["outputs"].clone()).unwrap_or_default();
            let same = ours_out.iter().zip(&theirs).filter(|(a, b)| a == b).count();
            print!(
                ", PyTorch {rate:.2}, ratio {:.2}x; identical outputs {same}/{}",
                ours_rate / rate,
                ours_out.len()
            );
        }
        println!();
        Ok(())
    })();
    let _ = std::fs::remove_file(&work_path);
    result
}

/// Median training tokens/s of our step (zero grads, forward + backward with dropout, Adam
/// update) over `batches`, the first two untimed.
fn train_speed(
    cfg: TransformerConfig,
    batches: &[&Vec<usize>],
    pairs: &[(Vec<u32>, Vec<u32>)],
) -> Result<f64> {
    let mut rng = Rng::new(1234);
    let mut model = EncoderDecoder::new(cfg.clone(), &mut rng)?;
    let adam = AdamWConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-9,
        weight_decay: 0.0,
    };
    let mut opt = AdamW::new(model.layout(), adam);
    let mut rates = Vec::new();
    for (step, idx) in batches.iter().enumerate() {
        let batch = make_batch(pairs, idx, &cfg);
        let tokens =
            batch.src_mask.iter().map(|&m| m as usize).sum::<usize>() + batch.target_tokens();
        let t0 = Instant::now();
        model.params.zero_grad();
        model.forward_backward(&batch, 0.1, 1.0, &mut rng)?;
        opt.update(&mut model.params, 1e-4);
        let dt = t0.elapsed().as_secs_f64();
        if step >= 2 {
            rates.push(tokens as f64 / dt);
        }
    }
    Ok(median(&mut rates))
}

/// Beam search over `sources` in length-sorted groups of 16, as `gpt translate` runs it;
/// returns sentences/s and the outputs in input order.
fn beam_speed(
    model: &mut EncoderDecoder,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
) -> Result<(f64, Vec<Vec<u32>>)> {
    let t0 = Instant::now();
    let hyps = translate_in_batches(model, sources, cfg, 16)?;
    let secs = t0.elapsed().as_secs_f64();
    let out = hyps.into_iter().map(|h| h.tokens).collect();
    Ok((sources.len() as f64 / secs.max(1e-9), out))
}
