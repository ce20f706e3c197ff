//! Translation with the encoder-decoder Transformer ([`crate::model::transformer`]): parallel
//! data and token-budget batches, the training loop, greedy and beam-search decoding, checkpoint
//! averaging, and corpus BLEU / chrF equal to sacreBLEU's.
//!
//! - [`data`]: TSV pairs, the joint BPE, token-budget batches over length-sorted buckets.
//! - [`trainer`]: label-smoothed training with Adam and the inverse-square-root schedule.
//! - [`checkpoint`]: model directories, `latest`, averaging.
//! - [`decode`]: greedy and beam search over the decoder KV cache.
//! - [`bleu`]: sacreBLEU-equal BLEU and chrF.
//! - [`translate_lines`]: text in, text out, batched ([`translate_in_batches`] for ids);
//!   [`evaluate`]: translate a test set and score it (BLEU, chrF, sentences/s).

pub mod bleu;
pub mod checkpoint;
pub mod data;
pub mod decode;
pub mod trainer;

use crate::error::{Error, Result};
use crate::model::transformer::EncoderDecoder;
use crate::tokenizer::Tokenizer;
use bleu::{corpus_bleu, corpus_chrf, Bleu, Smooth};
use decode::{translate_ids, DecodeConfig, Hypothesis};
use std::time::Instant;

/// Translates sentences in batches of `batch` (sorted by length inside each call so a batch
/// pads little), returning one line per input in input order. Sources longer than the model's
/// limit are truncated; the count of truncated sources is returned alongside.
pub fn translate_lines(
    model: &mut EncoderDecoder,
    tok: &Tokenizer,
    lines: &[String],
    cfg: &DecodeConfig,
    batch: usize,
) -> Result<(Vec<String>, usize)> {
    let limit = model.config.max_len.saturating_sub(1);
    let mut truncated = 0;
    let ids: Vec<Vec<u32>> = tok
        .encode_batch(lines)
        .into_iter()
        .map(|mut v| {
            if v.len() > limit {
                v.truncate(limit);
                truncated += 1;
            }
            v
        })
        .collect();
    let hyps = translate_in_batches(model, &ids, cfg, batch)?;
    let out = hyps
        .iter()
        .enumerate()
        .map(|(i, h)| {
            // Byte-level BPE words carry their leading space; the line does not.
            tok.decode_lossy(&h.tokens)
                .map(|t| t.trim().to_string())
                .map_err(|e| Error::field("tokenizer", format!("decoding output {}: {e}", i + 1)))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out, truncated))
}

/// Decodes id sequences in groups of `batch` sorted by length (so a group pads little),
/// returning one hypothesis per source in input order.
pub fn translate_in_batches(
    model: &mut EncoderDecoder,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
    batch: usize,
) -> Result<Vec<Hypothesis>> {
    let mut order: Vec<usize> = (0..sources.len()).collect();
    order.sort_by_key(|&i| (sources[i].len(), i));
    let mut out: Vec<Option<Hypothesis>> = vec![None; sources.len()];
    for chunk in order.chunks(batch.max(1)) {
        let srcs: Vec<&[u32]> = chunk.iter().map(|&i| &sources[i][..]).collect();
        for (&i, h) in chunk.iter().zip(translate_ids(model, &srcs, cfg)?) {
            out[i] = Some(h);
        }
    }
    // Every index is in exactly one chunk, so every slot was filled.
    Ok(out.into_iter().flatten().collect())
}

/// What [`evaluate`] measured.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// One translation per test pair, in order.
    pub hyps: Vec<String>,
    /// Corpus BLEU (sacreBLEU's default, exp smoothing).
    pub bleu: Bleu,
    /// Corpus chrF2.
    pub chrf: f64,
    /// Wall time of the translation.
    pub seconds: f64,
    /// Sources truncated to the model's length limit.
    pub truncated: usize,
}

impl Evaluation {
    /// Translation speed.
    pub fn sentences_per_sec(&self) -> f64 {
        self.hyps.len() as f64 / self.seconds.max(1e-9)
    }
}

/// Translates the sources of `pairs` (as [`translate_lines`] does, `batch` at a time) and scores
/// the translations against the targets with corpus BLEU and chrF.
pub fn evaluate(
    model: &mut EncoderDecoder,
    tok: &Tokenizer,
    pairs: &[(String, String)],
    cfg: &DecodeConfig,
    batch: usize,
) -> Result<Evaluation> {
    if pairs.is_empty() {
        // BLEU and chrF of nothing would come out as 0 and read as a (bad) result.
        return Err(Error::field(
            "pairs",
            "nothing to evaluate: no sentence pairs; give a test set with `source<TAB>target` lines",
        ));
    }
    let sources: Vec<String> = pairs.iter().map(|p| p.0.clone()).collect();
    let refs: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
    let t0 = Instant::now();
    let (hyps, truncated) = translate_lines(model, tok, &sources, cfg, batch)?;
    let seconds = t0.elapsed().as_secs_f64();
    let bleu = corpus_bleu(&hyps, &refs, Smooth::Exp);
    let chrf = corpus_chrf(&hyps, &refs);
    Ok(Evaluation {
        hyps,
        bleu,
        chrf,
        seconds,
        truncated,
    })
}
