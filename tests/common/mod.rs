//! Shared helpers for integration tests: loading PyTorch fixtures and comparing within tolerances.
//!
//! Fixtures are safetensors files written by scripts in `tools/` (run by a developer with the
//! reference Python environment) and committed under `tests/fixtures/`, so tests need no Python.
#![allow(dead_code)]

pub mod finetune_base;
pub mod inference;
pub mod runs;
pub mod translation_pairs;

use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::PathBuf;

/// A tensor read from a fixture: shape and f32 data (integer tensors converted exactly).
pub struct FixtureTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Path of a fixture file under `tests/fixtures/`.
pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Loads every tensor of `tests/fixtures/{rel}` as f32.
pub fn load(rel: &str) -> HashMap<String, FixtureTensor> {
    let path = fixture_path(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect(),
            Dtype::F64 => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I64 => raw
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            Dtype::I32 => raw
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                .collect(),
            Dtype::U8 | Dtype::BOOL => raw.iter().map(|&b| b as f32).collect(),
            d => panic!(
                "{}: tensor {name}: unsupported fixture dtype {d:?}",
                path.display()
            ),
        };
        out.insert(
            name,
            FixtureTensor {
                shape: view.shape().to_vec(),
                data,
            },
        );
    }
    out
}

/// Gets a named tensor from a loaded fixture, with a clear panic if it is missing.
pub fn get<'a>(fx: &'a HashMap<String, FixtureTensor>, name: &str) -> &'a FixtureTensor {
    fx.get(name).unwrap_or_else(|| {
        let mut keys: Vec<_> = fx.keys().collect();
        keys.sort();
        panic!("fixture has no tensor `{name}`; it has {keys:?}")
    })
}

/// Asserts `|got - want| <= atol + rtol·|want|` elementwise, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
    let mut worst = (0usize, 0.0f32);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g}");
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i}: got {} want {} (rtol {rtol}, atol {atol})",
            got[i], want[i]
        );
    }
}

/// Tolerances and counts that `README.md` and `bench/README.md` quote. The tests that check a
/// claim use these constants, and `tests/doc_claims.rs` checks that the documents state the
/// same numbers, so a tolerance or a count cannot change in one place and not in the other.
pub mod claims {
    /// Whole 2-layer GPT against PyTorch (`tests/torch_model.rs`): logits and every parameter
    /// gradient within `MODEL_RTOL · |want| + MODEL_ATOL` per element.
    pub const MODEL_RTOL: f32 = 1e-4;
    /// See [`MODEL_RTOL`].
    pub const MODEL_ATOL: f32 = 1e-5;
    /// Steps of the AdamW loss trajectory compared with PyTorch's.
    pub const TRAJECTORY_STEPS: usize = 20;
    /// Relative tolerance of each step's loss in that trajectory.
    pub const TRAJECTORY_RTOL: f32 = 1e-4;
    /// Training steps of the copy task (`tests/translate_copy.rs`).
    pub const COPY_TASK_STEPS: usize = 800;
    /// Held-out random sequences that greedy and beam decoding must reproduce exactly.
    pub const COPY_TASK_HELD_OUT: usize = 20;
    /// A beam's score × length penalty against the re-scored log-probability, relative.
    pub const COPY_TASK_RESCORE_RTOL: f32 = 1e-3;
    /// Beam and greedy scores with the KV cache against full recomputation, relative.
    pub const COPY_TASK_CACHE_RTOL: f32 = 1e-4;
    /// Tokens scored by the bf16-vs-f32 log-probability test (`tests/generate_bf16.rs`).
    pub const BF16_SCORED_TOKENS: usize = 100;
    /// Largest accepted per-token log-probability difference, bf16 weights vs f32.
    pub const BF16_LOGPROB_LIMIT: f32 = 0.02;
    /// Largest accepted decode-logit difference, bf16 weights vs f32.
    pub const BF16_LOGIT_LIMIT: f32 = 0.02;
    /// Largest accepted logit difference between bf16 cached decoding and a bf16 recompute
    /// (measured 1.3e-5 and 2.0e-5 for 20 and 70 rows, 1 and 2 threads: 2.5× the worst).
    pub const BF16_RECOMPUTE_LIMIT: f32 = 5e-5;
    /// Encoder-decoder gradients against PyTorch (`tests/translate_model.rs`): within this
    /// fraction of each tensor's largest gradient.
    pub const TRANSFORMER_GRAD_REL: f32 = 1e-4;
    /// BLEU and chrF against sacreBLEU (`tests/translate_bleu.rs`), absolute.
    pub const BLEU_TOL: f64 = 1e-9;
}
