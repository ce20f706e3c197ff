//! Parallel text: TSV `source<TAB>target` files, a joint byte-level BPE, and batches built by
//! a token budget over length-sorted buckets (the paper batches by ~25k source + target tokens).
//!
//! Bad lines (no tab, or an empty side) are skipped and counted, or with `strict` are an error
//! naming the file and line. Sentences over the length limit are truncated and counted.
//!
//! Batching: pairs are sorted by (source length, target length) and cut greedily into batches
//! whose padded size `B · max(S, T)` stays within the token budget; each epoch visits the
//! batches in an order shuffled by `(seed, epoch)`, so the sampler's state is two integers and
//! resume is exact.

use crate::error::{Error, Result};
use crate::model::transformer::{Seq2SeqBatch, TransformerConfig};
use crate::rng::Rng;
use crate::tokenizer::{BpeTrainer, Tokenizer};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Special tokens of a translation vocabulary, in id order after the learned tokens.
pub const SPECIALS: [&str; 3] = ["<pad>", "<s>", "</s>"];

/// Sentence pairs read from a TSV file, and what was skipped.
#[derive(Clone, Debug, Default)]
pub struct ParallelText {
    /// `(source, target)` pairs.
    pub pairs: Vec<(String, String)>,
    /// Lines skipped (no tab, or an empty side).
    pub skipped: usize,
    /// The 1-based number of the first skipped line, so a report can point at it.
    pub first_skipped: Option<usize>,
}

impl ParallelText {
    /// What was skipped in `path`, for a report: `"2 bad lines skipped (first: f.tsv:7)"`, or
    /// `"0 bad lines skipped"`.
    pub fn skipped_note(&self, path: &Path) -> String {
        match self.first_skipped {
            Some(line) => format!(
                "{} bad lines skipped (first: {}:{line}; --strict makes them errors)",
                self.skipped,
                path.display()
            ),
            None => format!("{} bad lines skipped", self.skipped),
        }
    }
}

/// Reads `source<TAB>target` lines. A line without a tab or with an empty side is skipped and
/// counted, or with `strict` is an error with its line number. Blank lines at the end are
/// ignored. Text after a second tab belongs to the target. Invalid UTF-8 is an error naming
/// the line.
pub fn read_tsv(path: &Path, strict: bool) -> Result<ParallelText> {
    let text = crate::io::read_text(path)?;
    let mut out = ParallelText::default();
    let body = text.trim_end_matches(['\n', '\r']);
    if body.is_empty() {
        return Ok(out);
    }
    for (i, line) in body.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let pair = line
            .split_once('\t')
            .map(|(s, t)| (s.trim(), t.trim()))
            .filter(|(s, t)| !s.is_empty() && !t.is_empty());
        match pair {
            Some((s, t)) => out.pairs.push((s.to_string(), t.to_string())),
            None if strict => {
                let why = if line.contains('\t') {
                    "an empty side"
                } else {
                    "no tab"
                };
                // The line is named as `file:line`, the compiler convention.
                return Err(Error::file(
                    &PathBuf::from(format!("{}:{}", path.display(), i + 1)),
                    format!(
                        "{why}; expected `source<TAB>target` (drop --strict to skip such lines)"
                    ),
                ));
            }
            None => {
                out.skipped += 1;
                out.first_skipped.get_or_insert(i + 1);
            }
        }
    }
    Ok(out)
}

/// Learns a joint byte-level BPE of `vocab_size` ids (including [`SPECIALS`]) on both sides.
pub fn train_joint_bpe(pairs: &[(String, String)], vocab_size: usize) -> Result<Tokenizer> {
    let trainer = BpeTrainer {
        vocab_size,
        special_tokens: SPECIALS.iter().map(|s| s.to_string()).collect(),
        ..BpeTrainer::default()
    };
    let texts: Vec<&str> = pairs
        .iter()
        .flat_map(|(s, t)| [s.as_str(), t.as_str()])
        .collect();
    trainer
        .train_texts(&texts)
        .map(|(tok, _)| tok)
        .map_err(|e| Error::field("vocab_size", format!("training the joint BPE: {e}")))
}

/// The ids of `<pad>`, `<s>`, `</s>` in `tok`.
pub fn special_ids(tok: &Tokenizer) -> Result<[u32; 3]> {
    let mut ids = [0u32; 3];
    for (id, s) in ids.iter_mut().zip(SPECIALS) {
        *id = tok.special_id(s).ok_or_else(|| {
            Error::field(
                "tokenizer",
                format!(
                    "no special token `{s}`; a translation tokenizer needs {}",
                    SPECIALS.join(", ")
                ),
            )
        })?;
    }
    Ok(ids)
}

/// Encoded pairs and the number of sentences that were truncated.
#[derive(Clone, Debug, Default)]
pub struct EncodedPairs {
    /// `(source ids, target ids)` without specials.
    pub pairs: Vec<(Vec<u32>, Vec<u32>)>,
    /// Sentences (either side) cut to the length limit.
    pub truncated: usize,
}

/// Encodes pairs (specials in the text are ordinary text), truncating each side to `max_len`
/// tokens (room for EOS/BOS is the caller's: pass the model's `max_len - 1`).
pub fn encode_pairs(tok: &Tokenizer, pairs: &[(String, String)], max_len: usize) -> EncodedPairs {
    let texts: Vec<&str> = pairs
        .iter()
        .flat_map(|(s, t)| [s.as_str(), t.as_str()])
        .collect();
    let ids = tok.encode_batch(&texts);
    let mut out = EncodedPairs::default();
    for pair in ids.chunks_exact(2) {
        let mut sides = [pair[0].clone(), pair[1].clone()];
        for s in &mut sides {
            if s.len() > max_len {
                s.truncate(max_len);
                out.truncated += 1;
            }
        }
        let [s, t] = sides;
        out.pairs.push((s, t));
    }
    out
}

/// Batches of pair indices under a token budget over length-sorted pairs.
pub fn token_batches(pairs: &[(Vec<u32>, Vec<u32>)], max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| (pairs[i].0.len(), pairs[i].1.len(), i));
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0usize;
    for i in order {
        // +1: EOS on the source, BOS/EOS on the target.
        let len = pairs[i].0.len().max(pairs[i].1.len()) + 1;
        let l = longest.max(len);
        if !cur.is_empty() && l * (cur.len() + 1) > max_tokens {
            batches.push(std::mem::take(&mut cur));
            longest = len;
        } else {
            longest = l;
        }
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// The padded model batch of pairs `idx`.
pub fn make_batch(
    pairs: &[(Vec<u32>, Vec<u32>)],
    idx: &[usize],
    cfg: &TransformerConfig,
) -> Seq2SeqBatch {
    let refs: Vec<(&[u32], &[u32])> = idx
        .iter()
        .map(|&i| (&pairs[i].0[..], &pairs[i].1[..]))
        .collect();
    Seq2SeqBatch::from_pairs(&refs, cfg)
}

/// Where the training sampler is: epoch and position in that epoch's shuffled batch order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchCursor {
    /// Epochs completed.
    pub epoch: u64,
    /// Batches taken in the current epoch.
    pub pos: usize,
}

/// Visits token-budget batches in a fresh shuffled order every epoch.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    batches: Vec<Vec<usize>>,
    order: Vec<usize>,
    seed: u64,
    /// The position (saved in checkpoints).
    pub cursor: BatchCursor,
}

impl BatchSampler {
    /// A sampler over `batches`, positioned at `cursor`.
    pub fn new(batches: Vec<Vec<usize>>, seed: u64, cursor: BatchCursor) -> Result<Self> {
        if batches.is_empty() {
            return Err(Error::field(
                "train",
                "no training batches: the training set has no usable pairs",
            ));
        }
        let mut s = BatchSampler {
            order: Vec::new(),
            batches,
            seed,
            cursor,
        };
        s.shuffle();
        Ok(s)
    }

    fn shuffle(&mut self) {
        let mut rng = Rng::new(self.seed ^ self.cursor.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.order = (0..self.batches.len()).collect();
        for i in (1..self.order.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            self.order.swap(i, j);
        }
    }

    /// The next batch's pair indices.
    pub fn next_batch(&mut self) -> &[usize] {
        if self.cursor.pos >= self.order.len() {
            self.cursor.epoch += 1;
            self.cursor.pos = 0;
            self.shuffle();
        }
        let b = self.order[self.cursor.pos];
        self.cursor.pos += 1;
        &self.batches[b]
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Whether there are no batches (never: [`BatchSampler::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_bad_lines_are_counted_or_errors_with_line_numbers() {
        let dir = std::env::temp_dir().join(format!("gpt-tsv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.tsv");
        std::fs::write(
            &p,
            "hola\thello\nno tab here\n\n\tempty source\nsí\tyes\r\n\n",
        )
        .unwrap();
        let t = read_tsv(&p, false).unwrap();
        assert_eq!(t.pairs.len(), 2);
        assert_eq!(t.skipped, 3); // no tab, empty side, blank line in the middle
        assert_eq!(t.pairs[1], ("sí".to_string(), "yes".to_string()));
        let err = read_tsv(&p, true).unwrap_err().to_string();
        assert!(err.contains("x.tsv:2: no tab"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn token_batches_respect_the_budget_and_cover_every_pair() {
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..50)
            .map(|i| (vec![3; 1 + i % 13], vec![4; 1 + (i * 7) % 11]))
            .collect();
        let batches = token_batches(&pairs, 40);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        for b in &batches {
            let longest = b
                .iter()
                .map(|&i| pairs[i].0.len().max(pairs[i].1.len()) + 1)
                .max()
                .unwrap();
            assert!(b.len() == 1 || longest * b.len() <= 40);
        }
        let mut s = BatchSampler::new(batches.clone(), 1, BatchCursor::default()).unwrap();
        let first: Vec<Vec<usize>> = (0..batches.len() + 3)
            .map(|_| s.next_batch().to_vec())
            .collect();
        let mut r = BatchSampler::new(batches, 1, BatchCursor { epoch: 1, pos: 2 }).unwrap();
        assert_eq!(r.next_batch(), &first[batches_len(&first) + 2][..]);
    }

    fn batches_len(v: &[Vec<usize>]) -> usize {
        v.len() - 3
    }
}
