//! Modules over the kernels. Each has `forward` (keeping in its own buffers what backward
//! needs) and `backward` (accumulating parameter gradients into the flat gradient buffer and
//! input gradients into caller buffers, `+=`). Backward takes the same inputs as the forward
//! that preceded it. Parameters live in one flat buffer described by [`params::ParamLayout`].
//!
//! Shapes of user-facing inputs are validated by the model that owns the modules (returning
//! [`crate::Error`]); inside, kernels assert buffer lengths (see [`crate::kernels`]).

pub mod attention;
pub mod block;
pub mod classifier;
pub mod dropout;
pub mod embedding;
pub mod kv_cache;
pub mod layernorm;
pub mod linear;
pub mod mlp;
pub mod params;
pub mod precision;
pub mod stack;
pub mod weights;

use crate::error::{Error, Result};

/// Errors unless `n_head` divides `n_embd`.
pub fn check_heads(n_embd: usize, n_head: usize) -> Result<()> {
    if n_head == 0 || !n_embd.is_multiple_of(n_head) {
        return Err(Error::Config {
            field: "n_head".into(),
            reason: format!("n_embd {n_embd} is not divisible by n_head {n_head}"),
        });
    }
    Ok(())
}
