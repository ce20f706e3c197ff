//! Translation with the encoder-decoder Transformer ([`crate::model::transformer`]): parallel
//! data and token-budget batches, the training loop, greedy and beam-search decoding, checkpoint
//! averaging, and corpus BLEU / chrF equal to sacreBLEU's.
//!
//! - [`data`]: TSV pairs, the joint BPE, token-budget batches over length-sorted buckets.
//! - [`trainer`]: label-smoothed training with Adam and the inverse-square-root schedule.
//! - [`checkpoint`]: model directories, `latest`, averaging.
//! - [`decode`]: greedy and beam search over the decoder KV cache.
//! - [`bleu`]: sacreBLEU-equal BLEU and chrF.
//! - [`translate_lines`]: text in, text out, batched ([`translate_in_batches`] for ids).

pub mod bleu;
pub mod checkpoint;
pub mod data;
pub mod decode;
pub mod trainer;

use crate::error::{Error, Result};
use crate::model::transformer::EncoderDecoder;
use crate::tokenizer::Tokenizer;
use decode::{translate_ids, DecodeConfig, Hypothesis};

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
