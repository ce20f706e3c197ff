//! The weights a module reads: one small view passed to every `forward`/`backward` where a flat
//! `&[f32]` went before.
//!
//! A model's parameters live in one flat f32 buffer addressed by [`Param`] handles. Two
//! settings change what a product reads:
//! - **mixed-precision training** adds a bf16 copy of the whole buffer at the same offsets (the
//!   shadow, refreshed after each optimizer step; see [`super::precision`]): linear layers, the
//!   tied head and the attention products then multiply in bf16;
//! - **bf16 or int8 inference** holds the weight matrices only in that format, packed for its
//!   decode kernel ([`PackedMatrices`]); the f32 buffer then holds just the small tensors
//!   (biases, LayerNorm, `wpe`) and each matrix handle is a key past its end (reading it as f32
//!   would panic, never return wrong numbers).
//!
//! Why an explicit view rather than a thread-local scope: which weights a product reads is then
//! visible at every call, nothing leaks across threads or outlives a borrow, and a new model can
//! mix views (a frozen reference model in f32 next to a bf16 policy) without any global state.
//! The precedence is one rule, in [`super::linear::Linear`]: packed matrix, else bf16 shadow,
//! else f32.

use super::params::Param;
use crate::kernels::half::PackedHalf;
use crate::kernels::int8::PackedI8;
use crate::kernels::panel_f32::PanelsF32;
use half::bf16;

/// The weights modules read; `Copy`, four pointers wide.
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a> {
    /// The flat f32 parameters (with packed matrices: only the tensors kept in f32).
    pub f32: &'a [f32],
    /// A bf16 copy of `f32` at the same offsets: products in bf16 (mixed-precision training).
    pub bf16: Option<&'a [bf16]>,
    /// Weight matrices packed in bf16 or int8 for decoding, keyed by handle.
    pub packed: Option<&'a PackedMatrices>,
    /// f32 matrices also packed in panels, read by products of a few rows (see
    /// [`crate::kernels::panel_f32`]); the f32 original serves the others.
    pub panels: Option<&'a PanelMatrices>,
}

impl<'a> Weights<'a> {
    /// Plain f32 weights.
    pub fn new(f32: &'a [f32]) -> Self {
        Weights {
            f32,
            bf16: None,
            packed: None,
            panels: None,
        }
    }

    /// These weights with products in bf16 over `shadow` (same offsets as `f32`).
    pub fn with_bf16(self, shadow: &'a [bf16]) -> Self {
        Weights {
            bf16: Some(shadow),
            ..self
        }
    }

    /// These weights with the matrices of `packed` read from it.
    pub fn with_packed(self, packed: &'a PackedMatrices) -> Self {
        Weights {
            packed: Some(packed),
            ..self
        }
    }

    /// These weights with the panel-packed matrices of `panels`.
    pub fn with_panels(self, panels: &'a PanelMatrices) -> Self {
        Weights {
            panels: Some(panels),
            ..self
        }
    }

    /// The panel-packed copy of matrix `p`, if the model holds one.
    pub fn panels_of(&self, p: Param) -> Option<&'a PanelsF32> {
        self.panels.and_then(|m| m.get(p))
    }

    /// A tensor kept in f32.
    pub fn of(&self, p: Param) -> &'a [f32] {
        p.of(self.f32)
    }

    /// The bf16 shadow of a tensor, when products run in bf16.
    pub fn bf16_of(&self, p: Param) -> Option<&'a [bf16]> {
        self.bf16.map(|s| &s[p.range()])
    }

    /// The packed (bf16 or int8) matrix of handle `p`, if the model holds it so.
    pub fn packed_of(&self, p: Param) -> Option<&'a PackedWeight> {
        self.packed.and_then(|m| m.get(p))
    }

    /// Whether products run in bf16 over a shadow (mixed-precision training).
    pub fn is_bf16(&self) -> bool {
        self.bf16.is_some()
    }
}

impl<'a> From<&'a [f32]> for Weights<'a> {
    fn from(p: &'a [f32]) -> Self {
        Weights::new(p)
    }
}

impl<'a> From<&'a Vec<f32>> for Weights<'a> {
    fn from(p: &'a Vec<f32>) -> Self {
        Weights::new(p)
    }
}

/// A packed form of a weight matrix kept in a [`MatrixMap`].
pub trait PackedMatrix {
    /// Bytes held.
    fn bytes(&self) -> usize;
    /// The stored 32-bit words, in the order decoding streams them (for read probes).
    fn words(&self) -> &[u32];
}

impl PackedMatrix for PackedHalf {
    fn bytes(&self) -> usize {
        PackedHalf::bytes(self)
    }
    fn words(&self) -> &[u32] {
        PackedHalf::words(self)
    }
}

/// A weight matrix held for inference in a packed format.
#[derive(Clone, Debug)]
pub enum PackedWeight {
    /// f16 or bf16 in strips, widened in registers.
    Half(PackedHalf),
    /// `Q8_0` blocks in strips for `vpdpbusd`.
    Int8(PackedI8),
}

impl PackedWeight {
    /// Stored row `j` of an `(OC, IC)` matrix read back as f32 (the embedding lookup of a
    /// tied `wte`).
    pub fn row_f32(&self, j: usize, dst: &mut [f32]) {
        match self {
            PackedWeight::Half(m) => m.row_f32(j, dst),
            PackedWeight::Int8(m) => m.row_f32(j, dst),
        }
    }

    /// The matrix read back as f32 in its stored layout.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            PackedWeight::Half(m) => m.to_f32(),
            PackedWeight::Int8(m) => m.to_f32(),
        }
    }
}

impl PackedMatrix for PackedWeight {
    fn bytes(&self) -> usize {
        match self {
            PackedWeight::Half(m) => m.bytes(),
            PackedWeight::Int8(m) => m.bytes(),
        }
    }
    fn words(&self) -> &[u32] {
        match self {
            PackedWeight::Half(m) => m.words(),
            PackedWeight::Int8(m) => m.words(),
        }
    }
}

impl PackedMatrix for PanelsF32 {
    fn bytes(&self) -> usize {
        PanelsF32::bytes(self)
    }
    fn words(&self) -> &[u32] {
        let data = self.data();
        // SAFETY: f32 and u32 have the same size and alignment and every bit pattern is a
        // valid u32; the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u32>(), data.len()) }
    }
}

/// Packed weight matrices keyed by their parameter handles.
#[derive(Clone, Debug)]
pub struct MatrixMap<T> {
    /// `(handle offset, matrix)`, sorted by offset.
    mats: Vec<(usize, T)>,
}

impl<T> Default for MatrixMap<T> {
    fn default() -> Self {
        MatrixMap { mats: Vec::new() }
    }
}

/// Weight matrices packed for decoding (bf16 or int8 inference).
pub type PackedMatrices = MatrixMap<PackedWeight>;

/// f32 weight matrices packed in panels for few-row products (the LM head of a server).
pub type PanelMatrices = MatrixMap<PanelsF32>;

impl<T: PackedMatrix> MatrixMap<T> {
    /// Adds the matrix of handle `param` (handles must be distinct).
    pub fn insert(&mut self, param: Param, m: T) {
        let at = self.mats.partition_point(|(o, _)| *o < param.offset);
        debug_assert!(self.mats.get(at).is_none_or(|(o, _)| *o != param.offset));
        self.mats.insert(at, (param.offset, m));
    }

    /// The matrix of handle `param`, if it is one of these.
    pub fn get(&self, param: Param) -> Option<&T> {
        self.mats
            .binary_search_by_key(&param.offset, |(o, _)| *o)
            .ok()
            .map(|i| &self.mats[i].1)
    }

    /// Bytes held by the packed matrices.
    pub fn bytes(&self) -> usize {
        self.mats.iter().map(|(_, m)| m.bytes()).sum()
    }

    /// Each matrix's stored words, in the order of their handles (for read probes).
    pub fn words(&self) -> Vec<&[u32]> {
        self.mats.iter().map(|(_, m)| m.words()).collect()
    }

    /// Number of matrices.
    pub fn len(&self) -> usize {
        self.mats.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.mats.is_empty()
    }
}
