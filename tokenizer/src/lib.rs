//! Byte-level BPE tokenizer for `gpt` (placeholder until the tokenizer issue lands).
