//! `gpt bench translate`: encoder-decoder throughput beside PyTorch `nn.Transformer`, on the
//! same work in one run.
//!
//! - Training tokens/s per preset: the same training batches (token ids, chosen evenly across
//!   the length-sorted token-budget batches of the first `--pairs` training pairs) go to our
//!   trainer step and to PyTorch eager f32 (bench/translate_torch.py `train-speed`), dropout on,
//!   Adam step included, two warm-up steps, median of the rest. Tokens = real source tokens +
//!   target tokens (both with EOS), as `gpt translate train` counts them.
//! - Beam search sentences/s: the trained model of `--model` translates the first `--limit`
//!   test sources (our tokenization, groups of 16 sorted by length) with beam 4; PyTorch loads the
//!   same weights into `nn.Transformer` and runs the same beam algorithm (no KV cache: its
//!   decoder recomputes the prefix; only the newest position is projected to the vocabulary).
//!   The outputs are compared id for id.

use crate::cli::CliResult;
use gpt::model::transformer::{EncoderDecoder, TransformerConfig};
use gpt::optim::{AdamW, AdamWConfig};
use gpt::rng::Rng;
use gpt::translate::checkpoint::load_model;
use gpt::translate::data::{encode_pairs, make_batch, read_tsv, special_ids, token_batches};
use gpt::translate::decode::DecodeConfig;
use gpt::translate::translate_in_batches;
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Options of `gpt bench translate`.
#[derive(clap::Args)]
pub struct TranslateBenchArgs {
    /// A trained `gpt translate` model or run directory: its tokenizer builds the batches and
    /// its weights do the beam search.
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated presets timed for training (random weights, the model's vocabulary).
    #[arg(long, default_value = "transformer-small,transformer-base")]
    pub presets: String,
    /// Training pairs (TSV).
    #[arg(long, default_value = "data/bible_es_en/train.tsv")]
    pub train: PathBuf,
    /// Test pairs (TSV) whose sources are translated.
    #[arg(long, default_value = "data/bible_es_en/test.tsv")]
    pub test: PathBuf,
    /// Training pairs the batches are drawn from.
    #[arg(long, default_value_t = 5000)]
    pub pairs: usize,
    /// Token budget per training batch.
    #[arg(long, default_value_t = 3000)]
    pub max_tokens: usize,
    /// Timed training steps per preset (after two warm-up steps).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Test sentences translated.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// Beam size.
    #[arg(long, default_value_t = 4)]
    pub beam: usize,
    /// Also run PyTorch on the same work.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch and safetensors.
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Runs `gpt bench translate`.
pub fn run(a: TranslateBenchArgs) -> CliResult {
    let threads = gpt::threads::current();
    let (mut model, tok) = load_model(&a.model)?;
    let specials = special_ids(&tok)?;
    let limit = model.config.max_len.saturating_sub(1);

    let mut train = read_tsv(&a.train, false)?.pairs;
    train.truncate(a.pairs);
    let train_ids = encode_pairs(&tok, &train, 200).pairs;
    let all = token_batches(&train_ids, a.max_tokens);
    let k = (a.steps + 2).min(all.len());
    if k < 3 {
        return Err(format!(
            "{}: too few training batches ({}) for a timing; use more --pairs",
            a.train.display(),
            all.len()
        )
        .into());
    }
    // Evenly across the length-sorted batches: short and long sentences alike.
    let chosen: Vec<&Vec<usize>> = (0..k)
        .map(|i| &all[i * (all.len() - 1) / (k - 1)])
        .collect();

    let mut test = read_tsv(&a.test, false)?.pairs;
    test.truncate(a.limit);
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
    std::fs::write(&work_path, work.to_string())
        .map_err(|e| format!("{}: {e}", work_path.display()))?;
    let python = super::find_python(a.python.clone());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/translate_torch.py");
    let torch = |args: &[&str]| -> Result<serde_json::Value, String> {
        super::run_json(
            Command::new(&python)
                .arg(&script)
                .args(args)
                .args(["--work", &work_path.to_string_lossy()])
                .args(["--threads", &threads.to_string()]),
        )
    };

    println!(
        "gpt bench translate: {threads} threads; training: {} timed steps on batches of <= {} tokens from the first {} pairs of {}; beam {} on the first {} sources of {}",
        k - 2,
        a.max_tokens,
        train_ids.len(),
        a.train.display(),
        a.beam,
        sources.len(),
        a.test.display()
    );
    println!(
        "{:<20} {:>12} {:>12} {:>7}",
        "training", "ours tok/s", "torch tok/s", "ratio"
    );
    let result = (|| -> CliResult {
        for preset in a
            .presets
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let cfg = TransformerConfig::preset(preset, tok.vocab_size(), specials)?;
            let ours = train_speed(cfg, &chosen, &train_ids)?;
            let theirs = if a.vs_torch {
                torch(&["train-speed", "--preset", preset])?["train_tokens_per_sec"].as_f64()
            } else {
                None
            };
            println!(
                "{:<20} {:>12.0} {:>12} {:>7}",
                preset,
                ours,
                theirs.map_or("-".into(), |v| format!("{v:.0}")),
                theirs.map_or("-".into(), |v| format!("{:.2}x", ours / v)),
            );
        }
        let cfg = DecodeConfig {
            beam: a.beam,
            ..DecodeConfig::default()
        };
        let (ours_rate, ours_out) = beam_speed(&mut model, &sources, &cfg)?;
        print!("beam {} sentences/s: ours {ours_rate:.2}", a.beam);
        if a.vs_torch {
            let v = torch(&[
                "beam-speed",
                "--model",
                &a.model.to_string_lossy(),
                "--beam",
                &a.beam.to_string(),
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
) -> Result<f64, gpt::error::Error> {
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
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// Beam search over `sources` in length-sorted groups of 16, as `gpt translate` runs it;
/// returns sentences/s and the outputs in input order.
fn beam_speed(
    model: &mut EncoderDecoder,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
) -> Result<(f64, Vec<Vec<u32>>), gpt::error::Error> {
    let t0 = Instant::now();
    let hyps = translate_in_batches(model, sources, cfg, 16)?;
    let secs = t0.elapsed().as_secs_f64();
    let out = hyps.into_iter().map(|h| h.tokens).collect();
    Ok((sources.len() as f64 / secs.max(1e-9), out))
}
