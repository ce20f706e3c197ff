//! Shared helpers for integration tests: loading PyTorch fixtures and comparing within tolerances.
//!
//! Fixtures are safetensors files written by scripts in `tools/` (run by a developer with the
//! reference Python environment) and committed under `tests/fixtures/`, so tests need no Python.
#![allow(dead_code)]

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
