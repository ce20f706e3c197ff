//! Byte-level BPE tokenization for `gpt`: GPT-2's exact ids, fast; training new
//! vocabularies; a char-level tokenizer for tiny models.
//!
//! ```
//! use gpt_tokenizer::Tokenizer;
//! let tok = Tokenizer::gpt2();
//! let ids = tok.encode_ordinary("hello world");
//! assert_eq!(ids, [31373, 995]);
//! assert_eq!(tok.decode(&ids).unwrap(), "hello world");
//! ```
//!
//! Layout, one concept per file:
//! - `byte_level`: GPT-2's byte ↔ unicode table used by the vocabulary files.
//! - `unicode_class`: the `\p{L}` / `\p{N}` / `\s` classes of the pre-tokenizer regex.
//! - `pretokenize`: the hand-written scanner equivalent to GPT-2's regex.
//! - `bpe`: rank-based merging of one piece (stack arrays for short pieces, heap for long).
//! - `special`: special tokens such as `<|endoftext|>`.
//! - `tokenizer`: `Tokenizer`, encode / batch encode / decode.
//! - `decode_stream`: token-by-token decoding that holds back incomplete UTF-8.
//! - `vocab_io`: vocab.json + merges.txt and tokenizer.json, loading and saving.
//! - `train`: learning a byte-level BPE from text files.
//! - `char_level`: the character-level tokenizer.
//! - `any`: one handle over either kind, for the CLI.
//! - `error`: the error enum.

#![warn(missing_docs)]

pub mod any;
pub mod bpe;
pub mod byte_level;
pub mod char_level;
pub mod decode_stream;
pub mod error;
pub mod pretokenize;
pub mod special;
pub mod tokenizer;
pub mod train;
pub mod unicode_class;
pub mod vocab_io;

pub use any::AnyTokenizer;
pub use char_level::CharTokenizer;
pub use decode_stream::StreamDecoder;
pub use error::{Result, TokenizerError};
pub use tokenizer::Tokenizer;
pub use train::{BpeTrainer, TrainStats};

/// GPT-2's end-of-text token string.
pub const ENDOFTEXT: &str = "<|endoftext|>";
