//! Data-parallel training: several processes (ranks) train one model, each on its own share of
//! every batch, and average their gradients before each optimizer step, so that `N` ranks with
//! `--batch-size B` take the steps of one process with `N·B`.
//!
//! The engine is MPI (`mpirun -np N gpt train ...`, cargo feature `mpi`); the pieces:
//! - [`World`]: this process's rank, the number of ranks and the collectives the loop needs
//!   (all-reduce, all-gather, barrier, abort). Every MPI call runs on one communication thread
//!   ([`comm`]), so a collective can run while the caller goes on computing;
//! - [`reducer::GradReducer`]: the gradient all-reduce in buckets, each posted as soon as the
//!   backward pass has finished the blocks it holds, so communication overlaps the rest of the
//!   backward pass;
//! - [`shard`]: which slice of the flat parameter buffer a rank updates with `--zero1` (optimizer
//!   state sharded across ranks).
//!
//! Without MPI the same code runs with [`World::solo`] (every collective is the identity), and the
//! tests run several ranks as threads of one process ([`World::local_group`]).

pub mod comm;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi_backend;
pub mod reducer;
pub mod shard;

pub use comm::{Pending, ReduceOp, World};

/// FNV-1a of `bytes` on top of `hash` (start from [`FNV_OFFSET`]): a fingerprint that is the
/// same in every process and on every machine, for comparing configurations across ranks.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The starting value of [`fnv1a`].
pub const FNV_OFFSET: u64 = 0xCBF2_9CE4_8422_2325;

/// With several ranks, a generator of this rank's own for one micro-batch, seeded from the
/// shared `stream` (which every rank advances alike, so that rank 0's checkpoint restores every
/// rank) and the rank; alone, `None` (the task draws from `stream` itself, as it always has).
pub fn rank_stream(
    stream: &mut crate::rng::Rng,
    rank: usize,
    ranks: usize,
) -> Option<crate::rng::Rng> {
    (ranks > 1).then(|| {
        let seed = stream.next_u64();
        crate::rng::Rng::new(seed ^ (rank as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    })
}

/// A fingerprint of a configuration as JSON without the fields `paths` (which may differ between
/// nodes), for [`crate::train::Task::fingerprint`].
pub fn config_fingerprint<T: serde::Serialize>(cfg: &T, paths: &[&str]) -> u64 {
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        for p in paths {
            m.remove(*p);
        }
    }
    fnv1a(FNV_OFFSET, v.to_string().as_bytes())
}
