//! Rank-based byte pair merging: turning one pre-tokenized piece into token ids.
//!
//! GPT-2's BPE (OpenAI's `encoder.py`, Hugging Face's `BPE` model) starts from the piece's
//! bytes as single-byte tokens and repeatedly merges the adjacent pair whose merge rule has
//! the lowest rank (its line in `merges.txt`), the leftmost one on ties, until no adjacent
//! pair has a rule. Merging the leftmost best pair one at a time gives the same result as
//! `encoder.py`'s "merge every occurrence of the best pair" pass, because a rule that uses a
//! token always ranks after the rule that made it.
//!
//! Two implementations, chosen by piece length (as tiktoken does):
//! - Short pieces (the vast majority: English words are 2-10 bytes) use flat arrays on the
//!   stack: tokens and the packed rank of each adjacent pair. Each step scans for the minimum
//!   and recomputes only the two ranks next to the merge. O(n²) but branch-light and with no
//!   allocation, which beats anything cleverer for n ≤ 128.
//! - Long pieces (a megabyte of `x`, a base64 blob) use a min-heap of (rank, position) over
//!   a doubly linked list of tokens. Entries are invalidated lazily: a popped entry is used
//!   only if the pair now at its position still has that rank. O(n log n), so a 1 MB piece
//!   takes milliseconds instead of minutes.
//!
//! Whole-piece fast path (tiktoken's "treat the set of tokens as a cache"): most pieces are
//! themselves tokens, and one hash lookup answers them. That shortcut is only correct for
//! tokens that BPE actually produces from their own bytes, so `Bpe::new` checks every token
//! and keeps those (all of GPT-2's) in `whole`.

use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Pieces of at most this many bytes use the stack-array merge; longer ones the heap.
pub const SHORT_PIECE: usize = 128;

/// "No merge rule" as a packed rank: larger than every real one.
const NO_RANK: u64 = u64::MAX;

/// A byte-level BPE model: merge rules and the single-byte tokens.
#[derive(Clone, Debug)]
pub struct Bpe {
    /// Token id of each byte value.
    byte_ids: [u32; 256],
    /// `(left << 32) | right` → `(rank << 32) | merged_id`; packed so one `u64` compare
    /// orders by rank.
    rules: FxHashMap<u64, u64>,
    /// Merge rules in rank order: (left, right, merged).
    merges: Vec<(u32, u32, u32)>,
    /// Byte strings that BPE turns into exactly one token, with that token.
    whole: FxHashMap<Box<[u8]>, u32>,
}

#[inline(always)]
fn pair_key(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

impl Bpe {
    /// Builds the model from the byte tokens, the rules in rank order, and the byte string
    /// of every ordinary token (`token_bytes[id]`, `None` for specials and unused ids).
    pub fn new(
        byte_ids: [u32; 256],
        merges: Vec<(u32, u32, u32)>,
        token_bytes: &[Option<Vec<u8>>],
    ) -> Bpe {
        let mut rules = FxHashMap::default();
        rules.reserve(merges.len());
        for (rank, &(l, r, m)) in merges.iter().enumerate() {
            // A repeated rule keeps its first (lowest) rank.
            rules
                .entry(pair_key(l, r))
                .or_insert(((rank as u64) << 32) | m as u64);
        }
        let mut bpe = Bpe {
            byte_ids,
            rules,
            merges,
            whole: FxHashMap::default(),
        };
        let mut whole = FxHashMap::default();
        // Sized by the tokens there are, not by the id range: one id near the 2^21 limit in a
        // tokenizer file must not reserve a 100 MiB table (found by tests/fuzz_parsers.rs).
        whole.reserve(token_bytes.iter().filter(|b| b.is_some()).count());
        let mut out = Vec::new();
        for (id, bytes) in token_bytes.iter().enumerate() {
            let Some(bytes) = bytes else { continue };
            if bytes.is_empty() {
                continue;
            }
            out.clear();
            bpe.merge(bytes, &mut out);
            if out.len() == 1 && out[0] == id as u32 {
                whole.insert(bytes.clone().into_boxed_slice(), id as u32);
            }
        }
        bpe.whole = whole;
        bpe
    }

    /// The merge rules in rank order: (left id, right id, merged id).
    pub fn merges(&self) -> &[(u32, u32, u32)] {
        &self.merges
    }

    /// Token id of a single byte.
    pub fn byte_id(&self, b: u8) -> u32 {
        self.byte_ids[b as usize]
    }

    /// The token that BPE makes of the whole of `piece`, if it makes exactly one.
    #[inline(always)]
    pub fn whole_piece(&self, piece: &[u8]) -> Option<u32> {
        self.whole.get(piece).copied()
    }

    /// Packed (rank, merged id) of the rule for `left right`, or `NO_RANK`.
    #[inline(always)]
    fn rank(&self, left: u32, right: u32) -> u64 {
        match self.rules.get(&pair_key(left, right)) {
            Some(&packed) => packed,
            None => NO_RANK,
        }
    }

    /// Appends the ids of `piece` to `out`, choosing the algorithm by length.
    pub fn merge(&self, piece: &[u8], out: &mut Vec<u32>) {
        if piece.len() <= SHORT_PIECE {
            self.merge_short(piece, out)
        } else {
            self.merge_long(piece, out)
        }
    }

    /// Stack-array merge for pieces of at most `SHORT_PIECE` bytes.
    pub fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        debug_assert!(n <= SHORT_PIECE);
        if n == 0 {
            return;
        }
        let mut toks = [0u32; SHORT_PIECE];
        let mut ranks = [NO_RANK; SHORT_PIECE];
        for (t, &b) in toks.iter_mut().zip(piece) {
            *t = self.byte_ids[b as usize];
        }
        for i in 0..n - 1 {
            ranks[i] = self.rank(toks[i], toks[i + 1]);
        }
        let mut len = n;
        while len > 1 {
            // Leftmost minimum: strict `<` keeps the first of equal ranks.
            let mut best = NO_RANK;
            let mut at = 0;
            for (i, &r) in ranks[..len - 1].iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == NO_RANK {
                break;
            }
            toks[at] = best as u32;
            toks.copy_within(at + 2..len, at + 1);
            ranks.copy_within(at + 1..len - 1, at);
            len -= 1;
            if at > 0 {
                ranks[at - 1] = self.rank(toks[at - 1], toks[at]);
            }
            if at + 1 < len {
                ranks[at] = self.rank(toks[at], toks[at + 1]);
            }
        }
        out.extend_from_slice(&toks[..len]);
    }

    /// Heap merge over a linked list, O(n log n), for pieces of any length.
    pub fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        const NONE: u32 = u32::MAX;
        let n = piece.len();
        if n == 0 {
            return;
        }
        let mut toks: Vec<u32> = piece.iter().map(|&b| self.byte_ids[b as usize]).collect();
        let mut next: Vec<u32> = (1..=n as u32).collect();
        next[n - 1] = NONE;
        let mut prev: Vec<u32> = (0..n as u32).map(|i| i.wrapping_sub(1)).collect();
        prev[0] = NONE;
        let mut alive = vec![true; n];
        // Min-heap on (packed rank, position): lowest rank first, then leftmost.
        let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let r = self.rank(toks[i], toks[i + 1]);
            if r != NO_RANK {
                heap.push(Reverse((r, i as u32)));
            }
        }
        while let Some(Reverse((packed, i))) = heap.pop() {
            let i = i as usize;
            if !alive[i] || next[i] == NONE {
                continue;
            }
            let j = next[i] as usize;
            // Stale entry: the pair at `i` changed since it was pushed. A rank names one
            // rule, so an equal rank means the very same pair is still there.
            if self.rank(toks[i], toks[j]) != packed {
                continue;
            }
            toks[i] = packed as u32;
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j] as usize] = i as u32;
            }
            if prev[i] != NONE {
                let p = prev[i] as usize;
                let r = self.rank(toks[p], toks[i]);
                if r != NO_RANK {
                    heap.push(Reverse((r, p as u32)));
                }
            }
            if next[i] != NONE {
                let r = self.rank(toks[i], toks[next[i] as usize]);
                if r != NO_RANK {
                    heap.push(Reverse((r, i as u32)));
                }
            }
        }
        let mut i = 0u32;
        while i != NONE {
            out.push(toks[i as usize]);
            i = next[i as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy model over bytes a, b: rules "a a" → 256, "aa a" → 257, "b a" → 258.
    fn toy() -> Bpe {
        let mut byte_ids = [0u32; 256];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = b as u32;
        }
        let merges = vec![(97, 97, 256), (256, 97, 257), (98, 97, 258)];
        let mut token_bytes: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        token_bytes.push(Some(b"aa".to_vec()));
        token_bytes.push(Some(b"aaa".to_vec()));
        token_bytes.push(Some(b"ba".to_vec()));
        Bpe::new(byte_ids, merges, &token_bytes)
    }

    #[test]
    fn short_and_long_agree() {
        let bpe = toy();
        for s in [
            "",
            "a",
            "aa",
            "aaa",
            "aaaa",
            "aaaaa",
            "baaab",
            "abababaaaaaab",
        ] {
            let (mut x, mut y) = (vec![], vec![]);
            bpe.merge_short(s.as_bytes(), &mut x);
            bpe.merge_long(s.as_bytes(), &mut y);
            assert_eq!(x, y, "{s}");
        }
        let mut x = vec![];
        bpe.merge_short(b"aaaa", &mut x);
        assert_eq!(x, [256, 256]);
        x.clear();
        bpe.merge_short(b"baaa", &mut x);
        // "b a" ranks after "a a": a a merges first, leaving b, aa, a → b, aaa.
        assert_eq!(x, [98, 257]);
        assert_eq!(bpe.whole_piece(b"aaa"), Some(257));
    }
}
