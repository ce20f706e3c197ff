//! Streaming decoding for token-by-token generation.
//!
//! A byte-level token can end in the middle of a UTF-8 character: `🙂` is four bytes and
//! GPT-2 spells it with two tokens. Printing each token's bytes lossily would show `�`
//! twice. `StreamDecoder` keeps the bytes of an incomplete trailing character until the next
//! token completes it, and returns only whole characters. Bytes that can never become valid
//! UTF-8 (an invalid sequence, not merely an unfinished one) are emitted as U+FFFD at once,
//! so one bad token does not stall the stream.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// Turns a stream of ids into a stream of text; see the module docs.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    /// Bytes received but not yet returned (at most the 3 bytes of an unfinished char,
    /// between calls).
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder with nothing pending.
    pub fn new(tokenizer: &'a Tokenizer) -> StreamDecoder<'a> {
        StreamDecoder {
            tokenizer,
            pending: Vec::new(),
        }
    }

    /// Adds one token; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.pending
            .extend_from_slice(self.tokenizer.token_bytes(id)?);
        let mut text = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    text.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // `valid` bytes from `start` were just checked to be UTF-8.
                    text.push_str(
                        std::str::from_utf8(&self.pending[start..start + valid]).unwrap_or(""),
                    );
                    match e.error_len() {
                        // Definitely invalid: replace it and go on.
                        Some(bad) => {
                            text.push('\u{FFFD}');
                            start += valid + bad;
                        }
                        // Unfinished character at the end: hold it back.
                        None => {
                            start += valid;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        Ok(text)
    }

    /// Whether bytes of an unfinished character are held back.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Ends the stream: returns what is held back, lossily (U+FFFD for an unfinished char).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}
