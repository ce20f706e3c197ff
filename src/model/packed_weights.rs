//! Reading weight matrices into a packed format for a bf16, f16 or int8
//! [`super::inference::InferenceModel`] (`--dtype bf16|f16|int8`): the matrices that decoding
//! streams (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`, `mlp.c_proj` of every block and the tied
//! `wte`) are held **only** in that format, packed for its kernel
//! ([`crate::kernels::half::PackedHalf`], [`crate::kernels::int8::PackedI8`]) in a
//! [`crate::nn::weights::PackedMatrices`] that the modules read through their
//! [`crate::nn::weights::Weights`] view.
//!
//! 16-bit loading ([`read_packed`]) streams a tensor from the file through a small buffer,
//! converting each chunk of rows and packing it: a file already in the format is copied bit for
//! bit, anything else rounded to nearest even, and at no point is the whole f32 matrix (or the
//! file's mapping of it) resident. int8 ([`read_packed_int8`]) reads one whole matrix into f32
//! at a time (its blocks run along the input channels, across the stored rows of a `(IC, OC)`
//! matrix), so at most one f32 matrix is resident besides the packed ones.

use super::checkpoint::{nonfinite_error, NonFinite};
use crate::error::{Error, Result};
use crate::io::safetensors::{dtype_size, to_f32, Dtype, TensorFile};
use crate::kernels::half::{HalfFormat, PackedHalf};
use crate::kernels::int8::PackedI8;
use crate::kernels::matmul::WeightLayout;
use crate::nn::params::ParamEntry;
use rayon::prelude::*;

/// Whether a model tensor is a weight matrix held packed (in bf16, f16 or int8 strips with
/// `--dtype`, in f32 panels otherwise), and in which orientation: the linear layers' weights
/// (their registered layout) and the tied embedding `wte` (`(V, C)`, read by the LM head as
/// `(OC, IC)`). Everything else (biases, LayerNorm, `wpe`) stays f32 as stored.
pub fn packed_layout(e: &ParamEntry) -> Option<WeightLayout> {
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
/// Elements per parallel task of the conversion to 16 bits.
const CONVERT_CHUNK: usize = 1 << 14;

/// Reads a stored matrix `name` (F32, F16 or BF16) chunk by chunk into `format` for `layout`
/// (see the module docs). With [`NonFinite::Refuse`], a NaN or ±inf (also a value beyond the
/// format's range, which rounds to ±inf: f16 above 65504) is an error naming the tensor and the
/// file.
#[allow(clippy::too_many_arguments)]
pub fn read_packed(
    file: &TensorFile,
    name: &str,
    dtype: Dtype,
    start: usize,
    shape: &[usize],
    layout: WeightLayout,
    nonfinite: NonFinite,
    format: HalfFormat,
) -> Result<PackedHalf> {
    let (ic, oc) = in_out_dims(shape, layout);
    let size = element_size(file, name, dtype)?;
    let (rows, row_len) = (shape[0], shape[1]);
    let mut m = PackedHalf::zeros(ic, oc, layout, format);
    let per = (CHUNK_BYTES / (size * row_len).max(1)).max(1);
    let mut bytes = vec![0u8; per * row_len * size];
    let mut bits = vec![0u16; per * row_len];
    let same = matches!(
        (dtype, format),
        (Dtype::F16, HalfFormat::F16) | (Dtype::BF16, HalfFormat::Bf16)
    );
    let mut r0 = 0;
    while r0 < rows {
        let k = per.min(rows - r0);
        let (raw, out) = (&mut bytes[..k * row_len * size], &mut bits[..k * row_len]);
        let what = format!("tensor `{name}` (rows {r0}..{})", r0 + k);
        file.read_at(start + r0 * row_len * size, raw, &what)?;
        out.par_chunks_mut(CONVERT_CHUNK)
            .zip(raw.par_chunks(CONVERT_CHUNK * size))
            .for_each(|(out, raw)| {
                for (o, b) in out.iter_mut().zip(raw.chunks_exact(size)) {
                    *o = match dtype {
                        _ if same => u16::from_le_bytes([b[0], b[1]]),
                        Dtype::F32 => format.bits_of(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        Dtype::F16 => {
                            format.bits_of(half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                        }
                        _ => format.bits_of(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                    };
                }
            });
        if nonfinite == NonFinite::Refuse {
            if let Some(i) = out.iter().position(|&b| format.is_nonfinite(b)) {
                let at = format!(
                    "{} in {} at element {} (the file's value may be beyond the format's range)",
                    format.to_f32(out[i]),
                    format.name(),
                    r0 * row_len + i
                );
                return Err(nonfinite_error(file.path(), name, &at));
            }
        }
        m.set_rows(r0, out);
        r0 += k;
    }
    Ok(m)
}

/// Reads a stored matrix `name` (F32, F16 or BF16) and quantizes it to int8 blocks for `layout`
/// (see [`crate::kernels::int8`]). With [`NonFinite::Refuse`], a NaN or ±inf is an error naming
/// the tensor and the file.
pub fn read_packed_int8(
    file: &TensorFile,
    name: &str,
    dtype: Dtype,
    start: usize,
    shape: &[usize],
    layout: WeightLayout,
    nonfinite: NonFinite,
) -> Result<PackedI8> {
    let (ic, oc) = in_out_dims(shape, layout);
    let size = element_size(file, name, dtype)?;
    let mut raw = vec![0u8; ic * oc * size];
    file.read_at(start, &mut raw, &format!("tensor `{name}`"))?;
    let mut w = vec![0.0f32; ic * oc];
    to_f32(dtype, &raw, &mut w, name, file.path())?;
    drop(raw);
    nonfinite.check(file.path(), name, &w)?;
    Ok(PackedI8::from_f32(&w, ic, oc, layout))
}
