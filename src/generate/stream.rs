//! Turning generated ids into text as they come: UTF-8 safe (bytes of a character split across
//! tokens are held until the character is complete) and aware of stop strings (text that could
//! be the beginning of a stop string is held back until it is known not to be one, so a stop
//! string never reaches the output, even partly).

use crate::error::{Error, Result};
use gpt_tokenizer::AnyTokenizer;

/// Incremental detokeniser with stop strings.
pub struct TextStream<'a> {
    tok: &'a AnyTokenizer,
    stops: Vec<String>,
    /// Bytes of an incomplete UTF-8 character.
    pending: Vec<u8>,
    /// Decoded text not yet emitted (a possible stop-string prefix).
    held: String,
    /// Everything emitted so far.
    text: String,
    stopped: bool,
}

impl<'a> TextStream<'a> {
    /// A stream over `tok`; empty stop strings are ignored.
    pub fn new(tok: &'a AnyTokenizer, stops: &[String]) -> Self {
        TextStream {
            tok,
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: Vec::new(),
            held: String::new(),
            text: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string was found.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// All text emitted so far.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds a token; returns the text that became safe to emit.
    pub fn push(&mut self, id: u32) -> Result<String> {
        if self.stopped {
            return Ok(String::new());
        }
        let bytes = self
            .tok
            .token_bytes(id)
            // `token_bytes` fails only for an id the tokenizer has no bytes for.
            .map_err(|_| Error::TokenOutOfRange {
                id: id as usize,
                vocab_size: self.tok.vocab_size(),
            })?;
        self.pending.extend(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid, not merely incomplete: emit it lossily rather than waiting forever.
                self.pending.len()
            }
            Err(e) => e.valid_up_to(),
        };
        let chunk = String::from_utf8_lossy(&self.pending[..valid]).into_owned();
        self.pending.drain(..valid);
        self.held.push_str(&chunk);
        Ok(self.release())
    }

    fn release(&mut self) -> String {
        // A stop string inside `held` ends the text just before it.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            self.stopped = true;
            self.text.push_str(&out);
            return out;
        }
        // Hold back the longest suffix that is a proper prefix of a stop string.
        let mut keep_from = self.held.len();
        for (i, _) in self.held.char_indices() {
            let suffix = &self.held[i..];
            if self.stops.iter().any(|s| s.starts_with(suffix)) {
                keep_from = i;
                break;
            }
        }
        let out = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        self.text.push_str(&out);
        out
    }

    /// Flushes what is held at the end of generation (an incomplete character lossily).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let mut out = std::mem::take(&mut self.held);
        out.push_str(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
        self.text.push_str(&out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpt_tokenizer::Tokenizer;

    #[test]
    fn utf8_split_and_stop_strings() {
        let tok = AnyTokenizer::Bpe(Box::new(Tokenizer::gpt2_shared().clone()));
        let ids = tok.encode("héllo 🙂 world. END here", false).unwrap();
        let mut s = TextStream::new(&tok, &["END".to_string()]);
        let mut out = String::new();
        for &id in &ids {
            let piece = s.push(id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
            out.push_str(&piece);
            if s.stopped() {
                break;
            }
        }
        out.push_str(&s.finish());
        assert_eq!(out, "héllo 🙂 world. ");
        assert_eq!(s.text(), out);
        let mut s = TextStream::new(&tok, &["ZZZ".to_string()]);
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&s.push(id).unwrap());
        }
        out.push_str(&s.finish());
        assert_eq!(out, "héllo 🙂 world. END here");
    }
}
