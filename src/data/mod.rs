//! Training data: token files written by `gpt prepare` and seeded batch sampling over them.

pub mod loader;
pub mod prepare;
pub mod tokens;
