//! Reading weight matrices into a packed format for a bf16 or int8
//! [`super::inference::InferenceModel`] (`--dtype bf16|int8`): the matrices that decoding
//! streams (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` of every block and the tied
//! `wte`) are held **only** in that format, packed for its decode kernel
//! ([`crate::kernels::bf16_decode::PackedBf16`], [`crate::kernels::int8::PackedI8`]) in a
//! [`crate::nn::weights::PackedMatrices`] that the modules read through their
//! [`crate::nn::weights::Weights`] view.
//!
//! Loading ([`read_packed`]) streams a tensor from the file through a small buffer, converting
//! each chunk of rows to bf16 and packing it: a bf16 checkpoint is copied bit for bit, an f32 or
//! f16 one rounded to nearest even, and at no point is the whole f32 matrix (or the file's
//! mapping of it) resident. int8 ([`read_packed_int8`]) reads one whole matrix into f32 at a
//! time (its blocks run along the input channels, across the stored rows of a `(IC, OC)`
//! matrix), so at most one f32 matrix is resident besides the packed ones.

use super::checkpoint::{nonfinite_error, NonFinite};
use super::weight_dtype::WeightDtype;
use crate::error::{Error, Result};
use crate::io::safetensors::{dtype_size, to_f32, Dtype, TensorFile};
use crate::kernels::bf16::f32_to_bf16_bits;
use crate::kernels::bf16_decode::PackedBf16;
use crate::kernels::f16::PackedF16;
use crate::kernels::int8::PackedI8;
use crate::kernels::matmul::WeightLayout;
use crate::kernels::vmath::first_nonfinite_bf16;
use crate::nn::params::ParamEntry;
use crate::nn::weights::PackedWeight;

/// Whether a model tensor is held packed with `--dtype bf16|int8`, and in which orientation: the
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

/// Bytes per element of a stored matrix, or an error naming the tensor if its dtype is not one
/// we convert.
fn element_size(file: &TensorFile, name: &str, dtype: Dtype) -> Result<usize> {
    dtype_size(dtype).ok_or_else(|| {
        Error::file(
            file.path(),
            format!("tensor `{name}` has dtype {dtype:?}; supported: F32, F16, BF16"),
        )
    })
}

/// Bytes read from the file per chunk while packing (whole stored rows, at least one).
const CHUNK_BYTES: usize = 1 << 20;

/// Reads a stored matrix `name` of `shape` (`dtype` F32, F16 or BF16, from byte `start` of
/// `file`) with file reads and packs it in bf16 for `layout`, one chunk of rows at a time. With
/// [`NonFinite::Refuse`], a NaN or ±inf (also an f32 value beyond bf16's range, which rounds to
/// ±inf) is an error naming the tensor and the file.
pub fn read_packed(
    file: &TensorFile,
    name: &str,
    dtype: Dtype,
    start: usize,
    shape: &[usize],
    layout: WeightLayout,
    nonfinite: NonFinite,
) -> Result<PackedBf16> {
    let (ic, oc) = in_out_dims(shape, layout);
    let size = element_size(file, name, dtype)?;
    let (rows, row_len) = (shape[0], shape[1]);
    let mut m = PackedBf16::zeros(ic, oc, layout);
    let per = (CHUNK_BYTES / (size * row_len).max(1)).max(1);
    let mut bytes = vec![0u8; per * row_len * size];
    let mut bits = vec![0u16; per * row_len];
    let mut r0 = 0;
    while r0 < rows {
        let k = per.min(rows - r0);
        let (raw, out) = (&mut bytes[..k * row_len * size], &mut bits[..k * row_len]);
        let what = format!("tensor `{name}` (rows {r0}..{})", r0 + k);
        file.read_at(start + r0 * row_len * size, raw, &what)?;
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
        if nonfinite == NonFinite::Refuse {
            if let Some(i) = first_nonfinite_bf16(out) {
                let value = crate::kernels::bf16::bf16_bits_to_f32(out[i]);
                let at = format!("{value} in bf16 at element {}", r0 * row_len + i);
                return Err(nonfinite_error(file.path(), name, &at));
            }
        }
        m.set_rows(r0, out);
        r0 += k;
    }
    Ok(m)
}

/// Reads one `(rows, cols)` matrix tensor whole as f32 and packs it for `dtype` (int8:
/// `Q8_0` blocks, see [`crate::kernels::int8`]; f16: strips, see [`crate::kernels::f16`]).
/// With [`NonFinite::Refuse`], a NaN or ±inf is an error naming the tensor and the file, and
/// so is, for f16, a value beyond f16's range (it would round to ±inf).
#[allow(clippy::too_many_arguments)]
pub fn read_packed_via_f32(
    file: &TensorFile,
    name: &str,
    dtype: Dtype,
    start: usize,
    shape: &[usize],
    layout: WeightLayout,
    nonfinite: NonFinite,
    target: WeightDtype,
) -> Result<PackedWeight> {
    let (ic, oc) = in_out_dims(shape, layout);
    let size = element_size(file, name, dtype)?;
    let mut raw = vec![0u8; ic * oc * size];
    file.read_at(start, &mut raw, &format!("tensor `{name}`"))?;
    let mut w = vec![0.0f32; ic * oc];
    to_f32(dtype, &raw, &mut w, name, file.path())?;
    drop(raw);
    nonfinite.check(file.path(), name, &w)?;
    Ok(match target {
        WeightDtype::F16 => {
            if nonfinite == NonFinite::Refuse {
                let max = half::f16::MAX.to_f32();
                if let Some(i) = w.iter().position(|x| x.abs() > max) {
                    let at = format!("{} at element {i}, beyond f16's range (±{max})", w[i]);
                    return Err(nonfinite_error(file.path(), name, &at));
                }
            }
            PackedWeight::F16(PackedF16::from_f32(&w, ic, oc, layout))
        }
        _ => PackedWeight::Int8(PackedI8::from_f32(&w, ic, oc, layout)),
    })
}
