//! Optimisers over the flat parameter buffer.

pub mod adamw;
pub mod schedule;

pub use adamw::{AdamW, AdamWConfig};
pub use schedule::Schedule;
