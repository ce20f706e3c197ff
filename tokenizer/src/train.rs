//! Training a byte-level BPE vocabulary from text (Hugging Face `BpeTrainer`'s algorithm).
//!
//! 1. **Count words** (in parallel). Text is read in blocks of `BLOCK_BYTES`, cut at
//!    boundaries pre-tokenization never crosses (`split_at_safe_boundaries`), pre-tokenized
//!    with GPT-2's scanner on all threads, and the pieces counted into one map of distinct
//!    words. Memory is bounded by the number of distinct words (plus one block), not by the
//!    size of the corpus.
//! 2. **Alphabet**: all 256 bytes, with ids in the order of their byte-level characters —
//!    GPT-2's order, and the order HF's trainer gives them when its initial alphabet is
//!    `ByteLevel.alphabet()` (it sorts by code point). Special tokens take the ids after the
//!    merges, as `<|endoftext|>` does in GPT-2 (HF puts them first; that shifts every id by
//!    the same amount and changes no tie-break below).
//! 3. **Pair counts**: for every adjacent pair of every distinct word, its count (weighted by
//!    the word's count) and the words it occurs in.
//! 4. **Merges** with a max-heap of (count, pair, words), updated incrementally: after a
//!    merge only the words listed for the merged pair are rewritten, and each rewrite
//!    reports the pairs it removed (-1) and created (+1). Counts in the heap go stale; a
//!    popped entry whose count differs from the live count is pushed back with the live count
//!    (lazy invalidation) instead of searching the heap.
//!
//! Ties are broken deterministically and exactly as HF does: among pairs of equal count the
//! one with the smallest (left id, right id) wins. With the same words and counts our merges
//! are therefore HF's, rule for rule (checked on the bundled corpus by
//! `tools/tokenizer_train_check.py` and in CI against a committed fixture).
//!
//! Where we differ from HF on purpose:
//! - Special tokens take the last ids, not the first (see 2.); merges are unaffected.
//! - The one rule where merges can differ: occurrences of a special token's string in the
//!   training text (`<|endoftext|>` between documents) are cut out before counting, so the
//!   vocabulary does not spend merges on `<|`, `endoftext`, `|>`. HF's trainer counts them
//!   as ordinary text. On text without special-token strings the merges are identical.

use crate::byte_level::bytes_in_char_order;
use crate::error::{Result, TokenizerError};
use crate::pretokenize::{pieces, split_at_safe_boundaries};
use crate::special::SpecialTokens;
use crate::tokenizer::Tokenizer;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Bytes read from a file at a time while counting words.
const BLOCK_BYTES: usize = 16 << 20;
/// Size of the pieces of a block handed to each thread.
const CHUNK_BYTES: usize = 256 << 10;

/// Distinct pre-tokenized words (as bytes) and how often each occurs.
pub type WordCounts = FxHashMap<Box<[u8]>, u64>;

/// Settings of a training run.
#[derive(Clone, Debug)]
pub struct BpeTrainer {
    /// Size of the final vocabulary, including the 256 bytes and the special tokens.
    pub vocab_size: usize,
    /// Special tokens, given ids after all learned tokens (default `<|endoftext|>`).
    pub special_tokens: Vec<String>,
    /// Pairs seen fewer times than this are never merged (HF's `min_frequency`; 0 = any).
    pub min_frequency: u64,
    /// Draw progress bars on standard error.
    pub show_progress: bool,
}

impl Default for BpeTrainer {
    fn default() -> Self {
        BpeTrainer {
            vocab_size: 16_384,
            special_tokens: vec![crate::ENDOFTEXT.to_string()],
            min_frequency: 0,
            show_progress: false,
        }
    }
}

/// What a training run did, for the CLI and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct TrainStats {
    /// Bytes of text read.
    pub bytes: u64,
    /// Pre-tokenized words in the text.
    pub words: u64,
    /// Distinct words (what memory is proportional to).
    pub distinct_words: usize,
    /// Merge rules learned.
    pub merges: usize,
    /// Seconds spent reading and counting words.
    pub count_seconds: f64,
    /// Seconds spent learning merges.
    pub merge_seconds: f64,
}

/// A candidate merge in the heap: a pair, its count when pushed, the words it occurs in.
#[derive(Debug)]
struct Candidate {
    count: u64,
    /// `(left << 32) | right`: orders like the tuple (left, right).
    pair: u64,
    words: Vec<u32>,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count && self.pair == other.pair
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    /// Max-heap on count; among equal counts the smallest pair is "greatest" (popped first).
    fn cmp(&self, other: &Self) -> Ordering {
        self.count
            .cmp(&other.count)
            .then_with(|| other.pair.cmp(&self.pair))
    }
}

#[inline(always)]
fn pair_key(l: u32, r: u32) -> u64 {
    ((l as u64) << 32) | r as u64
}

/// Counts the words of `text` like `count_words_in`, but first cuts out every occurrence of
/// a special token's string (`skip`), which is never learned from: text on either side is
/// pre-tokenized separately, as `encode_with_specials` will see it.
pub fn count_words_skipping(text: &str, skip: &[String], counts: &mut WordCounts) -> u64 {
    if skip.is_empty() {
        return count_words_in(text, counts);
    }
    let specials = SpecialTokens::new(skip.iter().map(|s| (s.clone(), 0)).collect());
    let mut words = 0;
    let mut pos = 0;
    while let Some((start, end, _)) = specials.find(text, pos) {
        words += count_words_in(&text[pos..start], counts);
        pos = end;
    }
    words + count_words_in(&text[pos..], counts)
}

/// Counts the pre-tokenized words of one text on all threads, adding them to `counts`.
/// Returns the number of words.
pub fn count_words_in(text: &str, counts: &mut WordCounts) -> u64 {
    let chunks = split_at_safe_boundaries(text, CHUNK_BYTES);
    let (local, n) = chunks
        .par_iter()
        .map(|chunk| {
            let mut m: FxHashMap<&[u8], u64> = FxHashMap::default();
            let mut n = 0u64;
            for p in pieces(chunk) {
                *m.entry(p.as_bytes()).or_insert(0) += 1;
                n += 1;
            }
            (m, n)
        })
        .reduce(
            || (FxHashMap::default(), 0),
            |(mut a, na), (b, nb)| {
                let (big, small) = if a.len() >= b.len() {
                    (&mut a, b)
                } else {
                    let mut b = b;
                    std::mem::swap(&mut a, &mut b);
                    (&mut a, b)
                };
                for (k, v) in small {
                    *big.entry(k).or_insert(0) += v;
                }
                (a, na + nb)
            },
        );
    for (k, v) in local {
        match counts.get_mut(k) {
            Some(c) => *c += v,
            None => {
                counts.insert(k.into(), v);
            }
        }
    }
    n
}

/// Reads `path` block by block and counts its words into `counts`, skipping the strings in
/// `skip` (special tokens); the text must be UTF-8. Returns (bytes read, words counted).
pub fn count_words_in_file(
    path: &Path,
    skip: &[String],
    counts: &mut WordCounts,
) -> Result<(u64, u64)> {
    count_words_in_file_blocks(path, skip, counts, BLOCK_BYTES, &|_| {})
}

/// `count_words_in_file` with a chosen block size (tests use small blocks to exercise the
/// cuts between blocks). Each block is cut at its last safe boundary and the tail carried
/// into the next, so the words counted are exactly those of the whole file; memory is one
/// block plus the distinct words. `progress` is told the bytes of each block counted.
/// A special token never contains a newline, so one never straddles a cut.
pub fn count_words_in_file_blocks(
    path: &Path,
    skip: &[String],
    counts: &mut WordCounts,
    block: usize,
    progress: &dyn Fn(u64),
) -> Result<(u64, u64)> {
    let block = block.max(16);
    let mut file = std::fs::File::open(path).map_err(|e| TokenizerError::io(path, e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(block);
    let mut consumed = 0u64; // file offset of buf[0]
    let mut lines_before = 0usize; // line breaks before buf[0], for error messages
    let mut words = 0u64;
    let mut eof = false;
    while !(eof && buf.is_empty()) {
        if !eof {
            // Fill up to one block past what is carried over.
            let old = buf.len();
            buf.resize(old + block, 0);
            let mut filled = old;
            while filled < buf.len() {
                let n = file
                    .read(&mut buf[filled..])
                    .map_err(|e| TokenizerError::io(path, e))?;
                if n == 0 {
                    eof = true;
                    break;
                }
                filled += n;
            }
            buf.truncate(filled);
        }
        // Validate UTF-8; an unfinished character at the end of a block waits for the next
        // block, anything else invalid is an error naming the file offset.
        let valid = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() && !eof => e.valid_up_to(),
            Err(e) => {
                let in_buf = e.valid_up_to();
                let newlines = buf[..in_buf].iter().filter(|&&b| b == b'\n').count();
                return Err(TokenizerError::InputNotUtf8 {
                    path: path.to_path_buf(),
                    line: lines_before + newlines + 1,
                    offset: consumed as usize + in_buf,
                });
            }
        };
        // Checked just above.
        let text = std::str::from_utf8(&buf[..valid]).unwrap_or("");
        let take = if eof {
            valid
        } else {
            // The first safe boundary in the last quarter of the text, if any.
            let parts = split_at_safe_boundaries(text, text.len() - text.len() / 4);
            if parts.len() > 1 {
                parts[0].len()
            } else if buf.len() >= 64 * block {
                // No safe boundary in 64 blocks (a file without line breaks): cut at a
                // char boundary; only the words at this cut can differ from a whole pass.
                valid
            } else {
                0 // read another block first
            }
        };
        if take > 0 {
            words += count_words_skipping(&text[..take], skip, counts);
            lines_before += text.as_bytes()[..take]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            buf.drain(..take);
            consumed += take as u64;
            progress(take as u64);
        }
    }
    Ok((consumed, words))
}

/// Rewrites every occurrence of `a b` in `word` as `new`, reporting pair changes exactly as
/// HF's `Word::merge` does: for each occurrence, -1 for the pairs it breaks up and +1 for the
/// pairs it forms (the merged pair's own count is not adjusted; it has left the heap).
fn merge_word(word: &mut Vec<u32>, a: u32, b: u32, new: u32, changes: &mut Vec<(u64, i64)>) {
    let mut i = 0;
    while i < word.len() {
        if word[i] == a && i + 1 < word.len() && word[i + 1] == b {
            if i > 0 {
                changes.push((pair_key(word[i - 1], a), -1));
                changes.push((pair_key(word[i - 1], new), 1));
            }
            word[i] = new;
            word.remove(i + 1);
            if i + 1 < word.len() {
                changes.push((pair_key(b, word[i + 1]), -1));
                changes.push((pair_key(new, word[i + 1]), 1));
            }
        }
        i += 1;
    }
}

fn progress_bar(show: bool, len: u64, message: &'static str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "[{elapsed_precise}] {msg:<16} {wide_bar} {pos}/{len} ({per_sec})",
    ) {
        bar.set_style(style);
    }
    bar.set_message(message);
    bar
}

impl BpeTrainer {
    /// A trainer for a vocabulary of `vocab_size` ids with `<|endoftext|>` as its special.
    pub fn new(vocab_size: usize) -> BpeTrainer {
        BpeTrainer {
            vocab_size,
            ..BpeTrainer::default()
        }
    }

    fn check(&self) -> Result<()> {
        // Ids are u32 (token files, merges): a vocabulary past that cannot be written.
        let max = u32::MAX as usize;
        if self.vocab_size > max {
            return Err(TokenizerError::BadTrainConfig {
                reason: format!(
                    "vocab size {} is over the {max} ids a u32 id holds; ask for fewer",
                    self.vocab_size
                ),
            });
        }
        let min = 256 + self.special_tokens.len();
        if self.vocab_size < min {
            return Err(TokenizerError::BadTrainConfig {
                reason: format!(
                    "vocab size {} is below the {min} ids that the 256 bytes and {} special \
                     token(s) take; ask for at least {min}",
                    self.vocab_size,
                    self.special_tokens.len()
                ),
            });
        }
        Ok(())
    }

    /// Trains on text files (UTF-8), read block by block.
    pub fn train_files(&self, paths: &[PathBuf]) -> Result<(Tokenizer, TrainStats)> {
        self.check()?;
        let start = Instant::now();
        let mut counts = WordCounts::default();
        let mut stats = TrainStats::default();
        let total: u64 = paths
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        let bar = progress_bar(self.show_progress, total, "count words");
        for p in paths {
            let (bytes, words) = count_words_in_file_blocks(
                p,
                &self.special_tokens,
                &mut counts,
                BLOCK_BYTES,
                &|n| bar.inc(n),
            )?;
            stats.bytes += bytes;
            stats.words += words;
        }
        bar.finish_and_clear();
        stats.count_seconds = start.elapsed().as_secs_f64();
        self.finish(counts, stats)
    }

    /// Trains on in-memory texts (each pre-tokenized on its own).
    pub fn train_texts<S: AsRef<str>>(&self, texts: &[S]) -> Result<(Tokenizer, TrainStats)> {
        self.check()?;
        let start = Instant::now();
        let mut counts = WordCounts::default();
        let mut stats = TrainStats::default();
        for t in texts {
            stats.bytes += t.as_ref().len() as u64;
            stats.words += count_words_skipping(t.as_ref(), &self.special_tokens, &mut counts);
        }
        stats.count_seconds = start.elapsed().as_secs_f64();
        self.finish(counts, stats)
    }

    fn finish(&self, counts: WordCounts, mut stats: TrainStats) -> Result<(Tokenizer, TrainStats)> {
        stats.distinct_words = counts.len();
        let start = Instant::now();
        let tok = self.train_from_counts(counts)?;
        stats.merge_seconds = start.elapsed().as_secs_f64();
        stats.merges = tok.merges().len();
        Ok((tok, stats))
    }

    /// Learns merges from word counts (step 2-4 of the module docs).
    pub fn train_from_counts(&self, counts: WordCounts) -> Result<Tokenizer> {
        self.check()?;
        // 2. Alphabet: byte ids in byte-level character order.
        let order = bytes_in_char_order();
        let mut byte_id = [0u32; 256];
        // The vocabulary asked for is an upper bound (merges stop when the data runs out of
        // pairs): reserve no more than a GPT-2-sized table up front.
        let mut tokens: Vec<Vec<u8>> = Vec::with_capacity(self.vocab_size.min(1 << 16));
        for (id, &b) in order.iter().enumerate() {
            byte_id[b as usize] = id as u32;
            tokens.push(vec![b]);
        }
        let mut token_ids: FxHashMap<Vec<u8>, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let target = self.vocab_size - self.special_tokens.len();

        // Distinct words as id sequences. Sorting makes the run independent of hash order
        // (only the order of equal heap entries could depend on it; see the module docs).
        let mut entries: Vec<(Box<[u8]>, u64)> = counts.into_iter().collect();
        entries.par_sort_unstable();
        let freq: Vec<u64> = entries.iter().map(|e| e.1).collect();
        let mut words: Vec<Vec<u32>> = entries
            .into_iter()
            .map(|(w, _)| w.iter().map(|&b| byte_id[b as usize]).collect())
            .collect();

        // 3. Pair counts and where each pair occurs, in parallel over slices of words.
        let slice = (words.len() / (4 * rayon::current_num_threads()).max(1)).max(1024);
        let partials: Vec<FxHashMap<u64, (i64, Vec<u32>)>> = words
            .par_chunks(slice)
            .enumerate()
            .map(|(c, ws)| {
                let mut m: FxHashMap<u64, (i64, Vec<u32>)> = FxHashMap::default();
                for (k, w) in ws.iter().enumerate() {
                    let wi = (c * slice + k) as u32;
                    for p in w.windows(2) {
                        let e = m.entry(pair_key(p[0], p[1])).or_default();
                        e.0 += freq[wi as usize] as i64;
                        if e.1.last() != Some(&wi) {
                            e.1.push(wi);
                        }
                    }
                }
                m
            })
            .collect();
        let mut pair_counts: FxHashMap<u64, i64> = FxHashMap::default();
        let mut where_: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        for part in partials {
            for (pair, (c, ws)) in part {
                *pair_counts.entry(pair).or_insert(0) += c;
                where_.entry(pair).or_default().extend(ws);
            }
        }
        let mut heap: BinaryHeap<Candidate> = where_
            .drain()
            .filter_map(|(pair, words)| {
                // `where_` and `pair_counts` were filled with the same keys just above.
                let count = pair_counts[&pair];
                (count > 0).then_some(Candidate {
                    count: count as u64,
                    pair,
                    words,
                })
            })
            .collect();

        // 4. Merges.
        let bar = progress_bar(
            self.show_progress,
            target.saturating_sub(tokens.len()) as u64,
            "learn merges",
        );
        let mut merges: Vec<(u32, u32, u32)> = Vec::with_capacity(target.min(1 << 16));
        let mut changes: Vec<(u64, i64)> = Vec::new();
        let mut updates: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        while tokens.len() < target {
            let Some(mut top) = heap.pop() else { break };
            let live = pair_counts.get(&top.pair).copied().unwrap_or(0).max(0) as u64;
            if top.count != live {
                top.count = live;
                heap.push(top);
                continue;
            }
            if top.count < 1 || self.min_frequency > top.count {
                break;
            }
            let (a, b) = ((top.pair >> 32) as u32, top.pair as u32);
            let mut merged = tokens[a as usize].clone();
            merged.extend_from_slice(&tokens[b as usize]);
            // A string can arise from two different pairs; like HF, reuse its id.
            let new_id = match token_ids.get(&merged) {
                Some(&id) => id,
                None => {
                    let id = tokens.len() as u32;
                    token_ids.insert(merged.clone(), id);
                    tokens.push(merged);
                    bar.inc(1);
                    id
                }
            };
            merges.push((a, b, new_id));
            for &wi in &top.words {
                changes.clear();
                merge_word(&mut words[wi as usize], a, b, new_id, &mut changes);
                let f = freq[wi as usize] as i64;
                for &(pair, delta) in &changes {
                    *pair_counts.entry(pair).or_insert(0) += delta * f;
                    if delta > 0 {
                        let list = updates.entry(pair).or_default();
                        if list.last() != Some(&wi) {
                            list.push(wi);
                        }
                    }
                }
            }
            for (pair, words) in updates.drain() {
                // Every pair in `updates` had its count updated (inserted) in the loop above.
                let count = pair_counts[&pair];
                if count > 0 {
                    heap.push(Candidate {
                        count: count as u64,
                        pair,
                        words,
                    });
                }
            }
        }
        bar.finish_and_clear();

        let mut ordinary: Vec<Option<Vec<u8>>> = tokens.into_iter().map(Some).collect();
        let mut specials = Vec::new();
        for s in &self.special_tokens {
            if !specials.iter().any(|(t, _): &(String, u32)| t == s) {
                specials.push((s.clone(), ordinary.len() as u32));
                ordinary.push(None);
            }
        }
        // All 256 bytes are in `ordinary`, so `from_parts` cannot report a missing byte.
        Tokenizer::from_parts(ordinary, merges, specials).map_err(|b| {
            TokenizerError::BadTrainConfig {
                reason: format!("internal: byte 0x{b:02x} missing from the alphabet"),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_word_reports_like_hf() {
        let mut w = vec![1, 1, 1, 1];
        let mut ch = Vec::new();
        merge_word(&mut w, 1, 1, 9, &mut ch);
        assert_eq!(w, [9, 9]);
        let net: i64 = ch
            .iter()
            .filter(|c| c.0 == pair_key(9, 9))
            .map(|c| c.1)
            .sum();
        assert_eq!(net, 1);
    }

    #[test]
    fn special_token_strings_are_not_learned() {
        let text = "xy<|endoftext|>zw".repeat(50);
        let (tok, _) = BpeTrainer::new(270).train_texts(&[text.as_str()]).unwrap();
        let merged: Vec<Vec<u8>> = tok
            .merges()
            .iter()
            .map(|m| tok.token_bytes(m.2).unwrap().to_vec())
            .collect();
        assert!(merged.contains(&b"xy".to_vec()) && merged.contains(&b"zw".to_vec()));
        assert!(!merged
            .iter()
            .any(|t| t.contains(&b'|') || t.contains(&b'e')));
        assert_eq!(
            tok.encode_with_specials("xy<|endoftext|>zw").len(),
            3,
            "{:?}",
            tok.merges()
        );
    }

    #[test]
    fn vocabularies_past_u32_ids_are_errors_and_huge_ones_reserve_little() {
        let text = "the cat sat on the mat. ".repeat(20);
        let e = BpeTrainer::new(usize::MAX)
            .train_texts(&[text.as_str()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("vocab size") && e.contains("u32"), "{e}");
        // Just under the limit: trains (the data runs out of pairs), no 100 GB reservation.
        let (tok, _) = BpeTrainer::new(u32::MAX as usize)
            .train_texts(&[text.as_str()])
            .unwrap();
        assert!(tok.vocab_size() < 400);
    }

    #[test]
    fn small_training_roundtrips() {
        let text = "the cat sat on the mat; the cat ate the rat. ".repeat(20);
        let (tok, stats) = BpeTrainer::new(300).train_texts(&[text.as_str()]).unwrap();
        // The corpus runs out of pairs before 300 ids: every word becomes one token.
        assert!(tok.vocab_size() <= 300);
        assert_eq!(stats.merges, tok.vocab_size() - 257);
        assert_eq!(tok.encode_ordinary(" cat").len(), 1);
        let ids = tok.encode_ordinary(&text);
        assert!(ids.len() < text.len() / 3);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        assert_eq!(
            tok.special_id("<|endoftext|>"),
            Some(tok.vocab_size() as u32 - 1)
        );
    }
}
