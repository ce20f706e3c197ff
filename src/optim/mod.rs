//! Optimisers over the flat parameter buffer.
