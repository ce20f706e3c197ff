//! bf16 weight matrices of an [`super::InferenceModel`] (`--dtype bf16`): the matrices that
//! decoding streams (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` of every block and
//! the tied `wte`), held **only** in bf16, packed for the decode kernel
//! ([`crate::kernels::bf16_decode::PackedBf16`]); the model keeps no f32 copy of them.
//!
//! How the modules find them: the modules read parameters as `(offset, len)` handles into the
//! f32 buffer `p`. In bf16 the f32 buffer holds only the small tensors (biases, LayerNorm, `wpe`)
//! and each matrix's handle is a key beyond its end (reading it from `p` would panic, never
//! return wrong numbers); [`Bf16Matrices`] maps those handles to the packed matrices. The model
//! runs its forward inside [`with_bf16_matrices`], and [`super::gemv::linear_infer`] asks
//! [`current_bf16_matrices`] first — the same scoped-context design as
//! [`crate::nn::precision::with_bf16_weights`], for the same reason (one setting read by one
//! function, without a second buffer threaded through every module signature).
//!
//! Loading ([`read_packed`]) streams a tensor from the file through a small buffer, converting
//! each chunk of rows to bf16 and packing it: a bf16 checkpoint is copied bit for bit, an f32 or
//! f16 one rounded to nearest even, and at no point is the whole f32 matrix (or the file's
//! mapping of it) resident.

use crate::error::{Error, Result};
use crate::kernels::bf16::f32_to_bf16_bits;
use crate::kernels::bf16_decode::PackedBf16;
use crate::kernels::matmul::WeightLayout;
use crate::nn::params::{Param, ParamEntry};
use safetensors::tensor::Dtype;
use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The packed bf16 matrices of a model, keyed by their parameter handles.
#[derive(Clone, Debug, Default)]
pub struct Bf16Matrices {
    /// `(handle offset, matrix)`, sorted by offset.
    mats: Vec<(usize, PackedBf16)>,
}

impl Bf16Matrices {
    /// Adds the matrix of handle `param` (handles must be distinct).
    pub fn insert(&mut self, param: Param, m: PackedBf16) {
        let at = self.mats.partition_point(|(o, _)| *o < param.offset);
        debug_assert!(self.mats.get(at).is_none_or(|(o, _)| *o != param.offset));
        self.mats.insert(at, (param.offset, m));
    }

    /// The matrix of handle `param`, if it is one of these.
    pub fn get(&self, param: Param) -> Option<&PackedBf16> {
        self.mats
            .binary_search_by_key(&param.offset, |(o, _)| *o)
            .ok()
            .map(|i| &self.mats[i].1)
    }

    /// Bytes held by the packed matrices.
    pub fn bytes(&self) -> usize {
        self.mats.iter().map(|(_, m)| m.bytes()).sum()
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

/// Whether a model tensor is held in bf16 with `--dtype bf16`, and in which orientation: the
/// linear layers' weights (their registered layout) and the tied embedding `wte` (`(V, C)`, read
/// by the LM head as `(OC, IC)`). Everything else (biases, LayerNorm, `wpe`) stays f32.
pub fn bf16_layout(e: &ParamEntry) -> Option<WeightLayout> {
    if e.name == "wte.weight" {
        return Some(WeightLayout::OutIn);
    }
    e.weight_layout
}

/// `(IC, OC)` of a 2-D tensor stored in `layout`.
pub fn in_out_dims(shape: &[usize], layout: WeightLayout) -> (usize, usize) {
    match layout {
        WeightLayout::InOut => (shape[0], shape[1]),
        WeightLayout::OutIn => (shape[1], shape[0]),
    }
}

thread_local! {
    /// The matrices of the innermost active [`with_bf16_matrices`] scope on this thread.
    static MATRICES: Cell<Option<*const Bf16Matrices>> = const { Cell::new(None) };
}

/// Restores the previous context when a scope ends (normally or by unwinding).
struct Restore(Option<*const Bf16Matrices>);

impl Drop for Restore {
    fn drop(&mut self) {
        MATRICES.with(|s| s.set(self.0));
    }
}

/// Runs `f` with [`super::gemv::linear_infer`] on this thread reading `mats`.
pub fn with_bf16_matrices<R>(mats: &Bf16Matrices, f: impl FnOnce() -> R) -> R {
    let prev = MATRICES.with(|s| s.replace(Some(mats as *const _)));
    let _restore = Restore(prev);
    f()
}

/// Calls `f` with the active matrices of this thread, or `None` outside any scope.
pub fn current_bf16_matrices<R>(f: impl FnOnce(Option<&Bf16Matrices>) -> R) -> R {
    match MATRICES.with(|s| s.get()) {
        // SAFETY: the pointer comes from a `&Bf16Matrices` borrowed by a `with_bf16_matrices`
        // call still running on this thread (the entry is removed when it returns or unwinds),
        // so the value is alive and unchanged for the duration of `f`.
        Some(ptr) => f(Some(unsafe { &*ptr })),
        None => f(None),
    }
}

/// `len` bytes of tensor `name` from byte `start` of `file` (a small tensor kept in f32).
pub fn read_bytes(
    file: &mut std::fs::File,
    path: &Path,
    name: &str,
    start: usize,
    len: usize,
) -> Result<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    file.seek(SeekFrom::Start(start as u64))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| {
            Error::Msg(format!(
                "{}: reading tensor `{name}`: {e}; is the file truncated?",
                path.display()
            ))
        })?;
    Ok(bytes)
}

/// Bytes read from the file per chunk while packing (whole stored rows, at least one).
const CHUNK_BYTES: usize = 1 << 20;

/// Reads a stored matrix of `shape` (`dtype` F32, F16 or BF16, `len_bytes` bytes from byte
/// `start` of `file`) and packs it in bf16 for `layout`, one chunk of rows at a time.
#[allow(clippy::too_many_arguments)]
pub fn read_packed(
    file: &mut std::fs::File,
    path: &Path,
    name: &str,
    dtype: Dtype,
    start: usize,
    shape: &[usize],
    layout: WeightLayout,
) -> Result<PackedBf16> {
    let (ic, oc) = in_out_dims(shape, layout);
    let size = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        d => {
            return Err(Error::Msg(format!(
                "{}: tensor `{name}` has dtype {d:?}; supported: F32, F16, BF16",
                path.display()
            )))
        }
    };
    let (rows, row_len) = (shape[0], shape[1]);
    let mut m = PackedBf16::zeros(ic, oc, layout);
    let per = (CHUNK_BYTES / (size * row_len).max(1)).max(1);
    let mut bytes = vec![0u8; per * row_len * size];
    let mut bits = vec![0u16; per * row_len];
    file.seek(SeekFrom::Start(start as u64))
        .map_err(|e| Error::io(path, e))?;
    let mut r0 = 0;
    while r0 < rows {
        let k = per.min(rows - r0);
        let (raw, out) = (&mut bytes[..k * row_len * size], &mut bits[..k * row_len]);
        file.read_exact(raw).map_err(|e| {
            Error::Msg(format!(
                "{}: reading tensor `{name}` (rows {r0}..{}): {e}; is the file truncated?",
                path.display(),
                r0 + k
            ))
        })?;
        match dtype {
            Dtype::F32 => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(4)) {
                    *o = f32_to_bf16_bits(f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
                }
            }
            Dtype::F16 => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(2)) {
                    *o = f32_to_bf16_bits(half::f16::from_le_bytes([b[0], b[1]]).to_f32());
                }
            }
            _ => {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]);
                }
            }
        }
        m.set_rows(r0, out);
        r0 += k;
    }
    Ok(m)
}
