//! Benchmark driver for `bench/tokenizer.py` (which runs tiktoken and HF `tokenizers`
//! beside it in the same run and compares ids).
//!
//! ```text
//! tokenizer_bench encode FILE [--repeat N] [--ids-out PATH] [--chunks-out PATH]
//! tokenizer_bench train FILE --vocab-size N --out DIR [--encode FILE2 --ids-out PATH]
//! ```
//! `encode` times single-threaded `encode_ordinary` on the whole text and batch encoding
//! of its safe chunks on all threads (best of `--repeat`), and writes the ids as
//! little-endian u32. `train` trains a vocabulary and reports time and peak memory
//! (VmHWM from /proc/self/status). Output: one JSON object on stdout.

use gpt_tokenizer::pretokenize::split_at_safe_boundaries;
use gpt_tokenizer::{BpeTrainer, Tokenizer};
use std::path::PathBuf;
use std::time::Instant;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: tokenizer_bench encode|train FILE [options]";
    let mode = args.get(1).ok_or(usage)?.clone();
    let file = PathBuf::from(args.get(2).ok_or(usage)?);
    match mode.as_str() {
        "encode" => {
            let text = std::fs::read_to_string(&file)?;
            let repeat: usize = arg(&args, "--repeat").map_or(Ok(3), |s| s.parse())?;
            let chunk_kb: usize = arg(&args, "--chunk-kb").map_or(Ok(64), |s| s.parse())?;
            let t0 = Instant::now();
            let tok = Tokenizer::gpt2();
            let load_s = t0.elapsed().as_secs_f64();
            let mb = text.len() as f64 / 1e6;
            let mut best1 = f64::INFINITY;
            let mut ids = Vec::new();
            for _ in 0..repeat {
                let t = Instant::now();
                ids = tok.encode_ordinary(&text);
                best1 = best1.min(t.elapsed().as_secs_f64());
            }
            let chunks = split_at_safe_boundaries(&text, chunk_kb * 1024);
            let mut bestn = f64::INFINITY;
            let mut batch = Vec::new();
            for _ in 0..repeat {
                let t = Instant::now();
                batch = tok.encode_batch(&chunks);
                bestn = bestn.min(t.elapsed().as_secs_f64());
            }
            let same = batch.concat() == ids;
            if let Some(out) = arg(&args, "--ids-out") {
                let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
                std::fs::write(out, bytes)?;
            }
            if let Some(out) = arg(&args, "--chunks-out") {
                // Chunk lengths in bytes, one per line, so Python batches the same pieces.
                let lens: Vec<String> = chunks.iter().map(|c| c.len().to_string()).collect();
                std::fs::write(out, lens.join("\n"))?;
            }
            println!(
                "{{\"bytes\": {}, \"tokens\": {}, \"load_s\": {load_s:.4}, \"single_s\": {best1:.4}, \
                 \"single_mb_s\": {:.2}, \"threads\": {}, \"batch_s\": {bestn:.4}, \
                 \"batch_mb_s\": {:.2}, \"chunks\": {}, \"batch_equals_single\": {same}}}",
                text.len(),
                ids.len(),
                mb / best1,
                rayon::current_num_threads(),
                mb / bestn,
                chunks.len()
            );
        }
        "train" => {
            let vocab: usize = arg(&args, "--vocab-size").ok_or(usage)?.parse()?;
            let out = PathBuf::from(arg(&args, "--out").ok_or(usage)?);
            let trainer = BpeTrainer::new(vocab);
            let t = Instant::now();
            let (tok, stats) = trainer.train_files(&[file])?;
            let secs = t.elapsed().as_secs_f64();
            tok.save(&out)?;
            if let (Some(src), Some(dst)) = (arg(&args, "--encode"), arg(&args, "--ids-out")) {
                let text = std::fs::read_to_string(src)?;
                let ids = tok.encode_ordinary(&text);
                let bytes: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
                std::fs::write(dst, bytes)?;
            }
            println!(
                "{{\"train_s\": {secs:.3}, \"count_s\": {:.3}, \"merge_s\": {:.3}, \
                 \"bytes\": {}, \"distinct_words\": {}, \"merges\": {}, \"peak_rss_mb\": {:.1}}}",
                stats.count_seconds,
                stats.merge_seconds,
                stats.bytes,
                stats.distinct_words,
                stats.merges,
                peak_rss_mb()
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
