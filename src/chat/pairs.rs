//! Preference pairs as token sequences, for the reward model and DPO: each pair is two
//! sequences `prompt ++ answer` (chosen, rejected) cut to the context ([`pair_sequence`]:
//! the prompt loses its start first), and a batch of pairs is `2B` right-padded rows, the
//! chosen sequences first (TRL's `concatenated_forward` layout).

use super::encode::{pair_sequence, ChatEncoder, Cuts};
use super::records::{read_preferences, ReadReport};
use crate::error::Result;
use crate::model::gpt::IGNORE_INDEX;
use std::path::Path;

/// One pair, encoded and cut to the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairSeqs {
    /// `prompt ++ chosen`.
    pub chosen: Vec<u32>,
    /// Index of the chosen answer's first token.
    pub chosen_start: usize,
    /// `prompt ++ rejected`.
    pub rejected: Vec<u32>,
    /// Index of the rejected answer's first token.
    pub rejected_start: usize,
    /// The record's line.
    pub line: usize,
    /// Tokens of the chosen and the rejected answer before any cut (EOS included).
    pub answer_lens: (usize, usize),
}

/// The pairs of a file and what reading and cutting them counted.
#[derive(Clone, Debug, Default)]
pub struct PairData {
    /// The pairs.
    pub pairs: Vec<PairSeqs>,
    /// What reading counted.
    pub read: ReadReport,
    /// Sequences cut (prompt start / answer end).
    pub cuts: Cuts,
}

/// The training pairs of a run (`cfg.data`) and its validation pairs (`cfg.valid`, none
/// without), encoded and cut to `max_len`: the data of `gpt reward` and `gpt dpo`.
pub fn encode_run_pairs(
    cfg: &super::ChatTrainConfig,
    enc: &ChatEncoder,
    max_len: usize,
) -> Result<(PairData, Vec<PairSeqs>)> {
    let data = encode_pairs_file(&cfg.data, enc, max_len, cfg.skip_bad)?;
    let valid = match &cfg.valid {
        Some(p) => encode_pairs_file(p, enc, max_len, cfg.skip_bad)?.pairs,
        None => Vec::new(),
    };
    Ok((data, valid))
}

/// Reads and encodes the preference pairs in `path`, each sequence cut to `max_len`.
pub fn encode_pairs_file(
    path: &Path,
    enc: &ChatEncoder,
    max_len: usize,
    skip_bad: bool,
) -> Result<PairData> {
    let (records, read) = read_preferences(path, skip_bad)?;
    let mut data = PairData {
        read,
        ..PairData::default()
    };
    for r in &records {
        let e = enc.pair(r)?;
        let (chosen, chosen_start) = pair_sequence(&e.prompt, &e.chosen, max_len, &mut data.cuts);
        let (rejected, rejected_start) =
            pair_sequence(&e.prompt, &e.rejected, max_len, &mut data.cuts);
        data.pairs.push(PairSeqs {
            chosen,
            chosen_start,
            rejected,
            rejected_start,
            line: r.line,
            answer_lens: (e.chosen.len(), e.rejected.len()),
        });
    }
    Ok(data)
}

/// A batch of `B` pairs as `2B` right-padded rows: chosen rows `0..B`, rejected rows `B..2B`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PairBatch {
    /// Token ids `(2B, T)`.
    pub ids: Vec<u32>,
    /// Next-token targets `(2B, T)`: the answer's tokens, [`IGNORE_INDEX`] elsewhere.
    pub targets: Vec<i32>,
    /// Real length of each row `(2B)`.
    pub lens: Vec<usize>,
    /// Pairs `B`.
    pub pairs: usize,
    /// Row length `T`.
    pub t: usize,
}

impl PairBatch {
    /// Lays out `pairs`, padding with `pad`.
    pub fn build(pairs: &[&PairSeqs], pad: u32) -> PairBatch {
        let seqs: Vec<(&[u32], usize)> = pairs
            .iter()
            .map(|p| (p.chosen.as_slice(), p.chosen_start))
            .chain(
                pairs
                    .iter()
                    .map(|p| (p.rejected.as_slice(), p.rejected_start)),
            )
            .collect();
        let t = seqs.iter().map(|s| s.0.len()).max().unwrap_or(1).max(1);
        let mut b = PairBatch {
            pairs: pairs.len(),
            t,
            ..PairBatch::default()
        };
        for (ids, start) in seqs {
            b.lens.push(ids.len());
            b.ids.extend_from_slice(ids);
            b.ids.extend(std::iter::repeat_n(pad, t - ids.len()));
            for i in 0..t {
                // Position i predicts token i + 1: a target when that token is in the answer.
                let target = if i + 1 < ids.len() && i + 1 >= start.max(1) {
                    ids[i + 1] as i32
                } else {
                    IGNORE_INDEX
                };
                b.targets.push(target);
            }
        }
        b
    }

    /// Rows `2B`.
    pub fn rows(&self) -> usize {
        2 * self.pairs
    }

    /// Real tokens.
    pub fn tokens(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Per-row sums of per-position values `(2B, T)` over each row's targets, and the number
    /// of targets of each row.
    pub fn row_sums(&self, per_position: &[f32]) -> (Vec<f64>, Vec<usize>) {
        let mut sums = vec![0.0f64; self.rows()];
        let mut counts = vec![0usize; self.rows()];
        for r in 0..self.rows() {
            for i in 0..self.t {
                if self.targets[r * self.t + i] != IGNORE_INDEX {
                    sums[r] += per_position[r * self.t + i] as f64;
                    counts[r] += 1;
                }
            }
        }
        (sums, counts)
    }
}
