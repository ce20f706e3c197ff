//! Greedy and beam-search decoding for the encoder-decoder, batched over sources with the
//! encoder run once per source.
//!
//! Beam search follows fairseq's bookkeeping with GNMT's length penalty (Wu et al. 2016,
//! `lp(Y) = ((5 + |Y|) / 6)^α`, the paper's α = 0.6, beam 4):
//!
//! - every live hypothesis extends by every token; the `2k` best continuations by total
//!   log-probability are ranked;
//! - an EOS continuation ranked within the first `k` is finished with score
//!   `log P(Y) / lp(|Y|)`, where `|Y|` counts the generated tokens including EOS;
//! - the first `k` non-EOS continuations stay alive; a source is done once `k` hypotheses have
//!   finished; at the length limit (source length + 50, as the paper) only EOS is allowed;
//! - the best finished hypothesis by score is the translation.
//!
//! With `k = 1` this is exactly greedy decoding (the top continuation is taken; if it is EOS the
//! source is done). Scores use the model's full softmax (padding and BOS are never proposed but
//! are not renormalised away), so a hypothesis' score times its length penalty equals the
//! log-probability the model assigns to it when re-scored with teacher forcing.
//!
//! Decoding runs the decoder incrementally over a KV cache ([`DecoderCache`]: self-attention
//! keys/values per beam row, the source's cross-attention keys/values computed once); beams
//! are selected with [`crate::nn::kv_cache::KvCache::reorder`]. `recompute: true` runs the
//! decoder over the whole prefix at every step instead, the oracle of the cached path.

use crate::error::{Error, Result};
use crate::model::transformer::{DecoderCache, EncoderDecoder, Seq2SeqBatch};
use crate::rng::Rng;

/// Decoding settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DecodeConfig {
    /// Beam size `k` (1 = greedy search through the beam code path).
    pub beam: usize,
    /// Length-penalty exponent α (0 = raw log-probability).
    pub alpha: f32,
    /// Output tokens allowed beyond the source length (including EOS).
    pub max_extra: usize,
    /// Recompute the decoder over the whole prefix at every step instead of using the KV cache
    /// (the oracle the cached path is tested against).
    pub recompute: bool,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            beam: 4,
            alpha: 0.6,
            max_extra: 50,
            recompute: false,
        }
    }
}

/// A decoded output.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Output ids without BOS and EOS.
    pub tokens: Vec<u32>,
    /// Total log-probability of `tokens` + EOS.
    pub log_prob: f32,
    /// `log_prob / lp(tokens.len() + 1)` (the beam's ranking score).
    pub score: f32,
}

/// GNMT length penalty `((5 + len) / 6)^α`.
pub fn length_penalty(len: usize, alpha: f32) -> f32 {
    ((5.0 + len as f32) / 6.0).powf(alpha)
}

/// The encoder output of a batch of sources, kept for every decoding step.
struct Encoded {
    /// Memory `(B, S, C)`.
    memory: Vec<f32>,
    /// `(B, S)` source mask.
    mask: Vec<u8>,
    s: usize,
    /// Per source: the most output tokens (including EOS).
    max_out: Vec<usize>,
}

fn encode_sources(
    model: &mut EncoderDecoder,
    sources: &[&[u32]],
    max_extra: usize,
) -> Result<Encoded> {
    let empty: &[u32] = &[];
    let pairs: Vec<(&[u32], &[u32])> = sources.iter().map(|s| (*s, empty)).collect();
    let batch = Seq2SeqBatch::from_pairs(&pairs, &model.config);
    model.encode(
        &batch.src,
        &batch.src_mask,
        batch.b,
        batch.s,
        false,
        &mut Rng::new(0),
    )?;
    // Decoder inputs are BOS + outputs, so outputs (with EOS) fit in max_len.
    let cap = model.config.max_len;
    Ok(Encoded {
        memory: model.memory().to_vec(),
        mask: batch.src_mask,
        s: batch.s,
        max_out: sources
            .iter()
            // Saturating: any --max-extra past the position table is the table's length.
            .map(|s| {
                (s.len().saturating_add(1).saturating_add(max_extra))
                    .min(cap)
                    .max(1)
            })
            .collect(),
    })
}

/// Runs the decoder on `prefixes` (all of length `t`, each with its source index) and returns
/// the log-softmax of the last position's logits, `(R, V)`.
fn next_log_probs(
    model: &mut EncoderDecoder,
    enc: &Encoded,
    prefixes: &[(&[u32], usize)],
) -> Result<Vec<f32>> {
    let r = prefixes.len();
    let t = prefixes.first().map_or(0, |p| p.0.len());
    let (c, s) = (model.config.d_model, enc.s);
    let mut tgt = Vec::with_capacity(r * t);
    let mut memory = Vec::with_capacity(r * s * c);
    let mut mask = Vec::with_capacity(r * s);
    for (prefix, src) in prefixes {
        tgt.extend_from_slice(prefix);
        memory.extend_from_slice(&enc.memory[src * s * c..(src + 1) * s * c]);
        mask.extend_from_slice(&enc.mask[src * s..(src + 1) * s]);
    }
    model.decode(&memory, &mask, s, &tgt, None, r, t, false, &mut Rng::new(0))?;
    let rows: Vec<usize> = (0..r).map(|i| i * t + t - 1).collect();
    model.generator(Some(&rows));
    let v = model.config.vocab_size;
    log_probs(std::mem::take(&mut model.logits), v)
}

/// Produces next-token log-probabilities for the live rows, cached or by recomputation.
enum Stepper {
    Recompute,
    Cached(Box<DecoderCache>),
}

impl Stepper {
    fn new(model: &EncoderDecoder, enc: &Encoded, recompute: bool) -> Result<Self> {
        if recompute {
            return Ok(Stepper::Recompute);
        }
        let b = enc.max_out.len();
        let cap = enc.max_out.iter().copied().max().unwrap_or(1);
        Ok(Stepper::Cached(Box::new(model.start_decoding(
            &enc.memory,
            &enc.mask,
            b,
            enc.s,
            cap,
        )?)))
    }

    /// Log-softmax `(R, V)` of the next token after each prefix (BOS + outputs, all of one
    /// length), row `i` of the cache being prefix `i`.
    fn next(
        &mut self,
        model: &mut EncoderDecoder,
        enc: &Encoded,
        prefixes: &[(&[u32], usize)],
    ) -> Result<Vec<f32>> {
        match self {
            Stepper::Recompute => next_log_probs(model, enc, prefixes),
            Stepper::Cached(cache) => {
                let last: Vec<u32> = prefixes.iter().map(|p| p.0[p.0.len() - 1]).collect();
                model.decode_step(cache, &last)?;
                log_probs(std::mem::take(&mut model.logits), model.config.vocab_size)
            }
        }
    }

    /// The next step's row `i` continues this step's row `parents[i]`.
    fn select(&mut self, parents: &[usize]) -> Result<()> {
        match self {
            Stepper::Recompute => Ok(()),
            Stepper::Cached(cache) => cache.kv.reorder(parents),
        }
    }
}

/// The log-softmax of each row of `logits (R, V)`; non-finite logits are an error naming the
/// row and the token (a beam over NaN scores would translate into gibberish, silently).
fn log_probs(mut logits: Vec<f32>, v: usize) -> Result<Vec<f32>> {
    crate::model::inference::check_logits(&logits, v)?;
    for row in logits.chunks_exact_mut(v) {
        log_softmax_inplace(row);
    }
    Ok(logits)
}

/// `x ← x - log Σ exp(x)` in f64 accumulation.
pub fn log_softmax_inplace(x: &mut [f32]) {
    let mx = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = x.iter().map(|&e| ((e - mx) as f64).exp()).sum();
    let lse = mx + sum.ln() as f32;
    for e in x.iter_mut() {
        *e -= lse;
    }
}

fn check_sources(model: &EncoderDecoder, sources: &[&[u32]]) -> Result<()> {
    let max = model.config.max_len;
    if let Some((i, s)) = sources.iter().enumerate().find(|(_, s)| s.len() + 1 > max) {
        return Err(Error::limit(
            format!("source {i}'s length in tokens (with EOS)"),
            s.len() as u64 + 1,
            max as u64,
            "the model's position table (max_len) is shorter; truncate the source",
        ));
    }
    Ok(())
}

/// Whether a token may be proposed (never padding or BOS).
fn proposable(model: &EncoderDecoder, id: usize) -> bool {
    id != model.config.pad_id as usize && id != model.config.bos_id as usize
}

/// Greedy decoding of a batch of sources: at each step the most probable token (lowest id on
/// ties), until EOS or the length limit (where EOS is forced).
pub fn greedy(
    model: &mut EncoderDecoder,
    sources: &[&[u32]],
    cfg: &DecodeConfig,
) -> Result<Vec<Hypothesis>> {
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    check_sources(model, sources)?;
    let enc = encode_sources(model, sources, cfg.max_extra)?;
    let mut stepper = Stepper::new(model, &enc, cfg.recompute)?;
    let (bos, eos) = (model.config.bos_id, model.config.eos_id);
    let v = model.config.vocab_size;
    let mut seqs: Vec<Vec<u32>> = vec![vec![bos]; sources.len()];
    let mut logp = vec![0.0f32; sources.len()];
    let mut done = vec![false; sources.len()];
    while done.iter().any(|d| !d) {
        let live: Vec<usize> = (0..sources.len()).filter(|&i| !done[i]).collect();
        let prefixes: Vec<(&[u32], usize)> = live.iter().map(|&i| (&seqs[i][..], i)).collect();
        let lp = stepper.next(model, &enc, &prefixes)?;
        let mut parents = Vec::with_capacity(live.len());
        for (r, (row, &i)) in lp.chunks_exact(v).zip(&live).enumerate() {
            let generated = seqs[i].len(); // outputs so far + this one, BOS excluded
            let next = if generated >= enc.max_out[i] {
                eos as usize
            } else {
                let mut best = eos as usize;
                for (id, &x) in row.iter().enumerate() {
                    if proposable(model, id) && (x > row[best]) {
                        best = id;
                    }
                }
                // `best` starts at EOS; a lower id with an equal value wins the tie.
                (0..best)
                    .find(|&id| proposable(model, id) && row[id] == row[best])
                    .unwrap_or(best)
            };
            logp[i] += row[next];
            if next == eos as usize {
                done[i] = true;
            } else {
                seqs[i].push(next as u32);
                parents.push(r);
            }
        }
        if !parents.is_empty() {
            stepper.select(&parents)?;
        }
    }
    Ok(seqs
        .into_iter()
        .zip(logp)
        .map(|(s, lp)| {
            let tokens = s[1..].to_vec();
            Hypothesis {
                score: lp,
                log_prob: lp,
                tokens,
            }
        })
        .collect())
}

/// A live beam entry.
#[derive(Clone, Debug)]
struct Live {
    /// BOS + outputs.
    seq: Vec<u32>,
    log_prob: f32,
}

/// Beam search over a batch of sources (see the module docs). Returns the best finished
/// hypothesis per source.
pub fn beam_search(
    model: &mut EncoderDecoder,
    sources: &[&[u32]],
    cfg: &DecodeConfig,
) -> Result<Vec<Hypothesis>> {
    if cfg.beam == 0 {
        return Err(Error::Config {
            field: "beam".into(),
            reason: "must be at least 1".into(),
        });
    }
    if sources.is_empty() {
        return Ok(Vec::new());
    }
    check_sources(model, sources)?;
    let k = cfg.beam;
    let enc = encode_sources(model, sources, cfg.max_extra)?;
    let mut stepper = Stepper::new(model, &enc, cfg.recompute)?;
    let (bos, eos) = (model.config.bos_id, model.config.eos_id as usize);
    let v = model.config.vocab_size;
    let n = sources.len();
    let mut live: Vec<Vec<Live>> = vec![
        vec![Live {
            seq: vec![bos],
            log_prob: 0.0
        }];
        n
    ];
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); n];
    let mut step = 0usize;
    loop {
        step += 1; // length of outputs after this step, EOS included
        let active: Vec<usize> = (0..n)
            .filter(|&i| finished[i].len() < k && !live[i].is_empty())
            .collect();
        if active.is_empty() {
            break;
        }
        let mut prefixes: Vec<(&[u32], usize)> = Vec::new();
        for &i in &active {
            prefixes.extend(live[i].iter().map(|h| (&h.seq[..], i)));
        }
        let lp = stepper.next(model, &enc, &prefixes)?;
        let mut row0 = 0;
        let mut parents: Vec<Vec<usize>> = Vec::with_capacity(active.len());
        for &i in &active {
            let hyps = std::mem::take(&mut live[i]);
            let force_eos = step >= enc.max_out[i];
            // Top 2k continuations: (log_prob, hyp, token).
            let mut cands: Vec<(f32, usize, usize)> = Vec::new();
            for (h, hyp) in hyps.iter().enumerate() {
                let row = &lp[(row0 + h) * v..(row0 + h + 1) * v];
                if force_eos {
                    cands.push((hyp.log_prob + row[eos], h, eos));
                    continue;
                }
                let mut ids: Vec<usize> = (0..v).filter(|&id| proposable(model, id)).collect();
                let take = (2 * k).min(ids.len());
                let by_value = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
                if take < ids.len() {
                    ids.select_nth_unstable_by(take, by_value);
                    ids.truncate(take);
                }
                cands.extend(ids.into_iter().map(|id| (hyp.log_prob + row[id], h, id)));
            }
            row0 += hyps.len();
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
            cands.truncate(2 * k);
            let mut next = Vec::with_capacity(k);
            let mut rows = Vec::with_capacity(k);
            for (rank, &(lp_total, h, id)) in cands.iter().enumerate() {
                if id == eos {
                    if rank < k && finished[i].len() < k {
                        finished[i].push(Hypothesis {
                            tokens: hyps[h].seq[1..].to_vec(),
                            log_prob: lp_total,
                            score: lp_total / length_penalty(step, cfg.alpha),
                        });
                    }
                } else if next.len() < k {
                    let mut seq = hyps[h].seq.clone();
                    seq.push(id as u32);
                    next.push(Live {
                        seq,
                        log_prob: lp_total,
                    });
                    rows.push(row0 - hyps.len() + h);
                }
            }
            live[i] = next;
            parents.push(rows);
        }
        // Rows of the next step: the live beams of sources that are not done, in order.
        let mut keep = Vec::new();
        for (&i, rows) in active.iter().zip(parents) {
            if finished[i].len() < k && !live[i].is_empty() {
                keep.extend(rows);
            }
        }
        if !keep.is_empty() {
            stepper.select(&keep)?;
        }
    }
    finished
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            f.into_iter()
                .max_by(|a, b| a.score.total_cmp(&b.score))
                .ok_or_else(|| {
                    Error::usage(
                        "beam_search",
                        format!("beam search finished no hypothesis for source {i}"),
                    )
                })
        })
        .collect()
}

/// Greedy (`beam == 1` and α = 0 is equivalent) or beam search, by `cfg.beam`.
pub fn translate_ids(
    model: &mut EncoderDecoder,
    sources: &[&[u32]],
    cfg: &DecodeConfig,
) -> Result<Vec<Hypothesis>> {
    if cfg.beam <= 1 {
        greedy(model, sources, cfg)
    } else {
        beam_search(model, sources, cfg)
    }
}
