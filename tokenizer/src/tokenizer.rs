//! The byte-level BPE tokenizer: pre-tokenize, merge, look up specials; and decode.
//!
//! `Tokenizer` ties together the scanner (`pretokenize`), the merge rules (`bpe`), the
//! special tokens (`special`) and the id → bytes table. Loading and saving live in
//! `vocab_io`, training in `train`.
//!
//! The piece cache: a piece that is not itself a token (`" tokenizer"` → `" token"`,
//! `"izer"`) goes through BPE once per thread and is remembered in a per-thread map (no lock
//! on the hot path; `thread_local::ThreadLocal` keeps one per tokenizer per thread). The map
//! is bounded: when it reaches `CACHE_ENTRIES` it is cleared, which costs a few re-merges and
//! keeps memory flat on adversarial input.

use crate::bpe::{Bpe, SHORT_PIECE};
use crate::decode_stream::StreamDecoder;
use crate::error::{Result, TokenizerError};
use crate::pretokenize::{pieces, split_at_safe_boundaries};
use crate::special::SpecialTokens;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use thread_local::ThreadLocal;

/// Most pieces remembered per thread before the cache is cleared.
const CACHE_ENTRIES: usize = 1 << 16;

/// Per-thread memo of piece bytes → ids, for pieces that are not a single token.
type PieceCache = FxHashMap<Box<[u8]>, Box<[u32]>>;

/// A byte-level BPE tokenizer (GPT-2's, a Hugging Face `tokenizer.json`, or one we trained).
pub struct Tokenizer {
    bpe: Bpe,
    /// Bytes of each id (specials: their UTF-8 string); `None` for ids the vocabulary skips.
    token_bytes: Vec<Option<Box<[u8]>>>,
    specials: SpecialTokens,
    cache: ThreadLocal<RefCell<PieceCache>>,
}

impl Clone for Tokenizer {
    fn clone(&self) -> Self {
        Tokenizer {
            bpe: self.bpe.clone(),
            token_bytes: self.token_bytes.clone(),
            specials: self.specials.clone(),
            cache: ThreadLocal::new(),
        }
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("merges", &self.bpe.merges().len())
            .field("specials", &self.specials.tokens())
            .finish()
    }
}

impl Tokenizer {
    /// Assembles a tokenizer. `ordinary[id]` is the byte string of each ordinary token
    /// (`None` for specials and unused ids); `merges` are (left, right, merged) in rank
    /// order; `specials` are (string, id). Fails with the first byte value that has no
    /// single-byte token (byte-level BPE needs all 256 to encode any input).
    pub(crate) fn from_parts(
        ordinary: Vec<Option<Vec<u8>>>,
        merges: Vec<(u32, u32, u32)>,
        specials: Vec<(String, u32)>,
    ) -> std::result::Result<Tokenizer, u8> {
        let mut byte_ids = [u32::MAX; 256];
        for (id, bytes) in ordinary.iter().enumerate() {
            if let Some(b) = bytes {
                if b.len() == 1 && byte_ids[b[0] as usize] == u32::MAX {
                    byte_ids[b[0] as usize] = id as u32;
                }
            }
        }
        if let Some(b) = byte_ids.iter().position(|&id| id == u32::MAX) {
            return Err(b as u8);
        }
        let bpe = Bpe::new(byte_ids, merges, &ordinary);
        let n = specials
            .iter()
            .map(|s| s.1 as usize + 1)
            .max()
            .unwrap_or(0)
            .max(ordinary.len());
        let mut token_bytes: Vec<Option<Box<[u8]>>> = ordinary
            .into_iter()
            .map(|b| b.map(Vec::into_boxed_slice))
            .collect();
        token_bytes.resize(n, None);
        for (s, id) in &specials {
            token_bytes[*id as usize] = Some(s.as_bytes().into());
        }
        Ok(Tokenizer {
            bpe,
            token_bytes,
            specials: SpecialTokens::new(specials),
            cache: ThreadLocal::new(),
        })
    }

    /// Number of ids: every id is below this.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The merge rules in rank order as (left id, right id, merged id).
    pub fn merges(&self) -> &[(u32, u32, u32)] {
        self.bpe.merges()
    }

    /// The special tokens as (string, id), by id.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        self.specials.tokens()
    }

    /// The id of a special token, e.g. `special_id("<|endoftext|>") == Some(50256)` for GPT-2.
    pub fn special_id(&self, s: &str) -> Option<u32> {
        self.specials.id(s)
    }

    /// Whether `id` is a special token.
    pub fn is_special(&self, id: u32) -> bool {
        self.specials.string(id).is_some()
    }

    /// The bytes of token `id` (a special token's are its UTF-8 string).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        match self.token_bytes.get(id as usize) {
            Some(Some(b)) => Ok(b),
            _ => Err(TokenizerError::TokenOutOfRange {
                id,
                vocab_size: self.vocab_size(),
            }),
        }
    }

    /// The id of the ordinary token whose bytes are exactly `bytes`, if any.
    pub fn token_id(&self, bytes: &[u8]) -> Option<u32> {
        if bytes.len() == 1 {
            return Some(self.bpe.byte_id(bytes[0]));
        }
        self.bpe.whole_piece(bytes)
    }

    /// Encodes text with special tokens treated as plain text (tiktoken's `encode_ordinary`).
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_ordinary_into(text, &mut out);
        out
    }

    /// Appends the ids of `text` (specials as plain text) to `out`.
    pub fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) {
        let cache = self.cache.get_or(|| RefCell::new(PieceCache::default()));
        // Each thread has its own cell and nothing below re-enters the tokenizer, so the
        // borrow cannot be held twice.
        let mut cache = cache.borrow_mut();
        for piece in pieces(text) {
            self.encode_piece(piece.as_bytes(), &mut cache, out);
        }
    }

    #[inline(always)]
    fn encode_piece(&self, piece: &[u8], cache: &mut PieceCache, out: &mut Vec<u32>) {
        if let Some(id) = self.bpe.whole_piece(piece) {
            out.push(id);
            return;
        }
        if piece.len() > SHORT_PIECE {
            // Long pieces are rare and unlikely to repeat; do not let them fill the cache.
            self.bpe.merge_long(piece, out);
            return;
        }
        if let Some(ids) = cache.get(piece) {
            out.extend_from_slice(ids);
            return;
        }
        let start = out.len();
        self.bpe.merge_short(piece, out);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(piece.into(), out[start..].into());
    }

    /// Encodes text, turning each occurrence of a special token's string (`<|endoftext|>`)
    /// into its id (tiktoken's `encode(text, allowed_special="all")`).
    pub fn encode_with_specials(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut pos = 0;
        while let Some((start, end, id)) = self.specials.find(text, pos) {
            self.encode_ordinary_into(&text[pos..start], &mut out);
            out.push(id);
            pos = end;
        }
        self.encode_ordinary_into(&text[pos..], &mut out);
        out
    }

    /// Encodes many texts on all threads of the rayon pool (specials as plain text).
    pub fn encode_batch<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .map(|t| self.encode_ordinary(t.as_ref()))
            .collect()
    }

    /// Encodes many texts on all threads, matching special tokens.
    pub fn encode_batch_with_specials<S: AsRef<str> + Sync>(&self, texts: &[S]) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .map(|t| self.encode_with_specials(t.as_ref()))
            .collect()
    }

    /// Encodes one long text on all threads: it is cut where pre-tokenization never cuts
    /// (see `split_at_safe_boundaries`), so the ids equal `encode_ordinary(text)`.
    pub fn encode_ordinary_parallel(&self, text: &str) -> Vec<u32> {
        let chunks = split_at_safe_boundaries(text, 256 * 1024);
        let parts: Vec<Vec<u32>> = chunks.par_iter().map(|c| self.encode_ordinary(c)).collect();
        parts.concat()
    }

    /// Appends the bytes of `ids` to `out`.
    pub fn decode_into(&self, ids: &[u32], out: &mut Vec<u8>) -> Result<()> {
        for &id in ids {
            out.extend_from_slice(self.token_bytes(id)?);
        }
        Ok(())
    }

    /// The bytes of a token sequence.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        self.decode_into(ids, &mut out)?;
        Ok(out)
    }

    /// The text of a token sequence; an error if its bytes are not valid UTF-8.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        String::from_utf8(bytes).map_err(|e| TokenizerError::DecodedNotUtf8 {
            offset: e.utf8_error().valid_up_to(),
        })
    }

    /// The text of a token sequence, invalid UTF-8 replaced by U+FFFD (tiktoken's default).
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Appends special tokens at the next free ids (`vocab_size()`, `vocab_size() + 1`, …) and
    /// returns the id of each; a string that is already special keeps its id. The saved files
    /// (`vocab.json`, `tokenizer.json`'s `added_tokens`) then list them, so a model whose
    /// embedding grew by these rows (GPT-1 fine-tuning's start / delimiter / extract) is saved
    /// with a tokenizer that knows them. Ordinary encoding never produces them; an empty string
    /// or the spelling of an ordinary token is an error.
    pub fn add_special_tokens(&mut self, names: &[&str]) -> Result<Vec<u32>> {
        let mut list = self.specials.tokens().to_vec();
        let mut ids = Vec::with_capacity(names.len());
        for &name in names {
            if let Some(id) = list.iter().find(|t| t.0 == name).map(|t| t.1) {
                ids.push(id);
                continue;
            }
            let reason = if name.is_empty() {
                Some("it is empty")
            } else if self.token_id(name.as_bytes()).is_some() {
                Some("it is already an ordinary token")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(TokenizerError::BadSpecial {
                    name: name.to_string(),
                    reason: reason.to_string(),
                });
            }
            let id = self.token_bytes.len() as u32;
            self.token_bytes.push(Some(name.as_bytes().into()));
            list.push((name.to_string(), id));
            ids.push(id);
        }
        self.specials = SpecialTokens::new(list);
        Ok(ids)
    }

    /// A decoder for token-by-token generation that holds back incomplete UTF-8.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self)
    }
}
