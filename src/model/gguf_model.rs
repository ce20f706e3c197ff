//! GPT-2 in GGUF files, as llama.cpp's `convert_hf_to_gguf.py` writes them and its `gpt2`
//! architecture reads them: loading one into an [`InferenceModel`] (with its tokenizer), and
//! exporting ours so that both tools run the same file.
//!
//! Names and orientation: llama.cpp stores every matrix as `(out, in)` rows (`ne = [in, out]`),
//! so GPT-2's `Conv1D` weights (`(in, out)` in Hugging Face and in our buffer) are transposed,
//! while `token_embd` / `position_embd` are the `(V, C)` / `(n_ctx, C)` tables as they are:
//!
//! | ours | GGUF |
//! |---|---|
//! | `wte.weight`, `wpe.weight` | `token_embd.weight`, `position_embd.weight` |
//! | `h.{i}.ln_1.*`, `h.{i}.ln_2.*` | `blk.{i}.attn_norm.*`, `blk.{i}.ffn_norm.*` |
//! | `h.{i}.attn.c_attn.*`, `h.{i}.attn.c_proj.*` | `blk.{i}.attn_qkv.*`, `blk.{i}.attn_output.*` |
//! | `h.{i}.mlp.c_fc.*`, `h.{i}.mlp.c_proj.*` | `blk.{i}.ffn_up.*`, `blk.{i}.ffn_down.*` |
//! | `ln_f.*` | `output_norm.*` |
//!
//! Types: a `Q8_0` matrix loaded as int8 keeps its blocks bit for bit (the same numbers
//! llama.cpp multiplies); F32, F16 and BF16 tensors are widened exactly to f32 and, for
//! `--dtype bf16|int8`, rounded or quantized as a safetensors checkpoint would be. Export writes
//! the five kinds of matrices in the chosen type (f32, f16 or Q8_0, quantized as llama.cpp's
//! reference does) and everything else in f32, with the tokenizer's vocabulary and merges.

use super::checkpoint::NonFinite;
use super::config::GptConfig;
use super::gpt::GptModules;
use super::inference::{packed_placed, InferenceModel, WeightsSource};
use super::packed_weights::{in_out_dims, packed_layout};
use super::weight_dtype::WeightDtype;
use crate::error::{Error, Result};
use crate::io::gguf::{GgmlType, GgufFile, GgufTensor, GgufWriter, Q8_0_BLOCK};
use crate::kernels::half::PackedHalf;
use crate::kernels::int8::{quantize_block, PackedI8, QBLOCK};
use crate::kernels::matmul::WeightLayout;
use crate::nn::params::{ParamEntry, ParamLayout};
use crate::nn::weights::{PackedMatrices, PackedWeight};
use gpt_tokenizer::{AnyTokenizer, Tokenizer};
use half::f16;
use std::path::Path;

/// The GGUF name of our tensor `name`.
pub fn gguf_name(name: &str) -> Result<String> {
    let (stem, kind) = name
        .rsplit_once('.')
        .ok_or_else(|| Error::field("tensor", format!("`{name}` has no GGUF name")))?;
    let mapped = match stem {
        "wte" => "token_embd".to_string(),
        "wpe" => "position_embd".to_string(),
        "ln_f" => "output_norm".to_string(),
        _ => {
            let rest = stem.strip_prefix("h.").unwrap_or("");
            let (layer, part) = rest.split_once('.').unwrap_or(("", ""));
            let part = match part {
                "ln_1" => "attn_norm",
                "ln_2" => "ffn_norm",
                "attn.c_attn" => "attn_qkv",
                "attn.c_proj" => "attn_output",
                "mlp.c_fc" => "ffn_up",
                "mlp.c_proj" => "ffn_down",
                _ => {
                    return Err(Error::field(
                        "tensor",
                        format!("`{name}` has no GGUF name (GPT-2 layout only)"),
                    ))
                }
            };
            format!("blk.{layer}.{part}")
        }
    };
    Ok(format!("{mapped}.{kind}"))
}

/// GGUF dimensions (fastest first) of our tensor: a `Conv1D` `(in, out)` matrix is stored as
/// `(out, in)` rows, so its `ne` equals our shape; every other tensor's `ne` is our shape
/// reversed.
fn gguf_dims(e: &ParamEntry) -> Vec<usize> {
    match e.weight_layout {
        Some(WeightLayout::InOut) => e.shape.clone(),
        _ => e.shape.iter().rev().copied().collect(),
    }
}

/// The model configuration in a GGUF file's metadata (architecture `gpt2`).
pub fn config_from_gguf(f: &GgufFile) -> Result<GptConfig> {
    let arch = f.str("general.architecture")?;
    if arch != "gpt2" {
        return Err(Error::file(
            f.path(),
            format!("architecture `{arch}` is not supported; this loader reads `gpt2` files"),
        ));
    }
    let get = |k: &str| -> Result<usize> { Ok(f.u64(&format!("gpt2.{k}"))? as usize) };
    let vocab = f
        .tensor("token_embd.weight")?
        .shape
        .get(1)
        .copied()
        .unwrap_or(0);
    let mut cfg = GptConfig::gpt2();
    cfg.vocab_size = vocab;
    cfg.n_ctx = get("context_length")?;
    cfg.n_layer = get("block_count")?;
    cfg.n_head = get("attention.head_count")?;
    cfg.n_embd = get("embedding_length")?;
    cfg.dropout = 0.0;
    if let Some(crate::io::gguf::Value::F64(eps)) =
        f.metadata.get("gpt2.attention.layer_norm_epsilon")
    {
        cfg.ln_eps = *eps as f32;
    }
    let ff = get("feed_forward_length")?;
    if ff != 4 * cfg.n_embd {
        return Err(Error::file(
            f.path(),
            format!(
                "gpt2.feed_forward_length is {ff}; GPT-2 uses 4 × embedding_length = {}",
                4 * cfg.n_embd
            ),
        ));
    }
    cfg.validate()
        .map_err(|e| Error::file(f.path(), e.to_string()))?;
    Ok(cfg)
}

/// The byte-level BPE tokenizer stored in a GGUF file (`tokenizer.ggml.model` = `gpt2`).
pub fn tokenizer_from_gguf(f: &GgufFile) -> Result<AnyTokenizer> {
    let model = f.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(Error::file(
            f.path(),
            format!("tokenizer.ggml.model `{model}` is not supported (only `gpt2` byte-level BPE)"),
        ));
    }
    let tokens = f.strings("tokenizer.ggml.tokens")?;
    let merges = f.strings("tokenizer.ggml.merges")?;
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), serde_json::Value::from(i)))
        .collect();
    let vocab_json =
        serde_json::to_vec(&vocab).map_err(|e| Error::file(f.path(), e.to_string()))?;
    let mut merges_txt = String::from("#version: 0.2\n");
    for m in merges {
        merges_txt.push_str(m);
        merges_txt.push('\n');
    }
    let at = |what: &str| f.path().join(what);
    let tok = Tokenizer::from_vocab_merges_bytes(
        &vocab_json,
        &at("tokenizer.ggml.tokens"),
        &merges_txt,
        &at("tokenizer.ggml.merges"),
    )
    .map_err(|e| Error::file(f.path(), e.to_string()))?;
    Ok(AnyTokenizer::Bpe(Box::new(tok)))
}

/// The dtype a GGUF file runs in by default: int8 when its matrices are `Q8_0`, f16 when they
/// are `F16`, else f32.
pub fn native_dtype(f: &GgufFile) -> WeightDtype {
    match f.get("blk.0.attn_qkv.weight").map(|t| t.ty) {
        Some(GgmlType::Q8_0) => WeightDtype::Int8,
        Some(GgmlType::F16) => WeightDtype::F16,
        _ => WeightDtype::F32,
    }
}

/// `m (rows, cols)` row-major, transposed to `(cols, rows)`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    for (r, row) in m.chunks_exact(cols).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            t[c * rows + r] = x;
        }
    }
    t
}

/// A stored `(out, in)` matrix's values in our orientation `layout` (row-major).
fn oriented(vals: Vec<f32>, ic: usize, oc: usize, layout: WeightLayout) -> Vec<f32> {
    match layout {
        WeightLayout::OutIn => vals,
        WeightLayout::InOut => transpose(&vals, oc, ic),
    }
}

/// Checks that tensor `t` has the dimensions our entry `e` needs.
fn check_shape(f: &GgufFile, t: &GgufTensor, e: &ParamEntry, cfg: &GptConfig) -> Result<()> {
    let want = gguf_dims(e);
    if t.shape != want {
        return Err(Error::file(
            f.path(),
            format!(
                "tensor `{}` has dimensions {:?}, expected {want:?} from its metadata \
                 ({} layers, embedding {})",
                t.name, t.shape, cfg.n_layer, cfg.n_embd
            ),
        ));
    }
    Ok(())
}

/// Loads a GPT-2 GGUF file with its tokenizer; `dtype` `None` runs it in its own precision
/// ([`native_dtype`]). Non-finite weights are an error naming the tensor with
/// [`NonFinite::Refuse`].
pub fn load_gguf(
    path: &Path,
    dtype: Option<WeightDtype>,
    nonfinite: NonFinite,
) -> Result<(InferenceModel, AnyTokenizer)> {
    let f = GgufFile::open(path)?;
    let config = config_from_gguf(&f)?;
    if f.get("output.weight").is_some() {
        return Err(Error::file(
            path,
            "the file has an untied `output.weight`; GPT-2's head is tied to token_embd",
        ));
    }
    let tok = tokenizer_from_gguf(&f)?;
    if tok.vocab_size() > config.vocab_size {
        return Err(Error::file(
            path,
            format!(
                "the tokenizer has {} ids but token_embd has {} rows",
                tok.vocab_size(),
                config.vocab_size
            ),
        ));
    }
    let dtype = dtype.unwrap_or_else(|| native_dtype(&f));
    let types: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for t in f.tensors() {
            let n = format!("{:?}", t.ty).to_uppercase();
            if !v.contains(&n) {
                v.push(n);
            }
        }
        v
    };
    let source = WeightsSource::Gguf(types.join("+"));
    let values = |t: &GgufTensor| -> Result<Vec<f32>> {
        let v = f.to_f32(t);
        nonfinite.check(path, &t.name, &v)?;
        Ok(v)
    };
    if dtype == WeightDtype::F32 {
        let mut layout = ParamLayout::new();
        let parts = GptModules::register(&config, &mut layout)?;
        let mut data = vec![0.0f32; layout.total()];
        for e in layout.entries() {
            let t = f.tensor(&gguf_name(&e.name)?)?;
            check_shape(&f, t, e, &config)?;
            let v = values(t)?;
            let v = match e.weight_layout {
                Some(WeightLayout::InOut) => {
                    let (ic, oc) = in_out_dims(&e.shape, WeightLayout::InOut);
                    oriented(v, ic, oc, WeightLayout::InOut)
                }
                _ => v,
            };
            e.param.of_mut(&mut data).copy_from_slice(&v);
            f.release(t);
        }
        let m = InferenceModel::from_memory(config, data, layout, parts, None, source);
        return Ok((m, tok));
    }
    let (placed, parts, small) = packed_placed(&config)?;
    let mut data = vec![0.0f32; small];
    let mut mats = PackedMatrices::default();
    for e in placed.entries() {
        let t = f.tensor(&gguf_name(&e.name)?)?;
        check_shape(&f, t, e, &config)?;
        let Some(layout) = packed_layout(e) else {
            e.param.of_mut(&mut data).copy_from_slice(&values(t)?);
            f.release(t);
            continue;
        };
        let (ic, oc) = in_out_dims(&e.shape, layout);
        // f32 models were built above: what is left is 16-bit (`Some`) or int8.
        let m = match (dtype.half_format(), t.ty) {
            (None, GgmlType::Q8_0) => {
                if nonfinite == NonFinite::Refuse {
                    for j in 0..oc {
                        for b in 0..ic / Q8_0_BLOCK {
                            let d = f.q8_0_block(t, j, b).0.to_f32();
                            if !d.is_finite() {
                                let at = format!("scale {d} of row {j}, block {b}");
                                return Err(super::checkpoint::nonfinite_error(path, &t.name, &at));
                            }
                        }
                    }
                }
                PackedWeight::Int8(PackedI8::from_blocks(ic, oc, layout, |j, b| {
                    f.q8_0_block(t, j, b)
                }))
            }
            (None, _) => {
                let v = values(t)?;
                PackedWeight::Int8(PackedI8::from_blocks(ic, oc, layout, |j, b| {
                    let row = &v[j * ic..(j + 1) * ic];
                    let blk = &row[b * QBLOCK..((b + 1) * QBLOCK).min(ic)];
                    let (d, q) = quantize_block(blk);
                    (f16::from_f32(d), q)
                }))
            }
            // The tensor is `(OC, IC)`: row j holds output j's weights (exact for an `F16` file
            // run as f16).
            (Some(h), _) => {
                let v = values(t)?;
                PackedWeight::Half(PackedHalf::from_fn(ic, oc, layout, h, |i, j| {
                    h.bits_of(v[j * ic + i])
                }))
            }
        };
        f.release(t);
        mats.insert(e.param, m);
    }
    let m = InferenceModel::from_memory(config, data, placed, parts, Some((mats, dtype)), source);
    Ok((m, tok))
}

/// Element type of the matrices in an exported file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportType {
    /// 32-bit floats.
    F32,
    /// IEEE halves.
    F16,
    /// llama.cpp's `Q8_0` (our int8).
    Q8_0,
}

impl ExportType {
    /// Parses `f32`, `f16` or `int8` / `q8_0` given for `field`.
    pub fn parse_for(field: &str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(ExportType::F32),
            "f16" => Ok(ExportType::F16),
            "int8" | "q8_0" => Ok(ExportType::Q8_0),
            _ => Err(Error::field(
                field,
                format!("unknown type `{s}`; valid: f32, f16, int8 (GGUF Q8_0)"),
            )),
        }
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            ExportType::F32 => 0,
            ExportType::F16 => 1,
            ExportType::Q8_0 => 7,
        }
    }
}

/// Writes `model` (f32 weights) and its byte-level BPE tokenizer as a GPT-2 GGUF file at
/// `path` (atomically), the matrices in `ty`.
pub fn export_gguf(
    model: &InferenceModel,
    tok: &AnyTokenizer,
    ty: ExportType,
    name: &str,
    path: &Path,
) -> Result<()> {
    let cfg = &model.config;
    let AnyTokenizer::Bpe(bpe) = tok else {
        return Err(Error::field(
            "tokenizer",
            "GGUF export needs a byte-level BPE tokenizer (a character tokenizer has no GGUF form)",
        ));
    };
    if model.dtype() != WeightDtype::F32 {
        return Err(Error::field(
            "dtype",
            "export from f32 weights (load the model without --dtype)",
        ));
    }
    if cfg.norm != crate::nn::block::NormPlacement::Pre
        || cfg.positions != crate::nn::embedding::Positions::Learned
        || !cfg.bias
    {
        return Err(Error::field(
            "model",
            "GGUF's gpt2 architecture is pre-LN with learned positions and biases; this model is not",
        ));
    }
    let mut w = GgufWriter::new();
    w.str("general.architecture", "gpt2");
    w.str("general.type", "model");
    w.str("general.name", name);
    w.u32("gpt2.block_count", cfg.n_layer as u32);
    w.u32("gpt2.context_length", cfg.n_ctx as u32);
    w.u32("gpt2.embedding_length", cfg.n_embd as u32);
    w.u32("gpt2.feed_forward_length", 4 * cfg.n_embd as u32);
    w.u32("gpt2.attention.head_count", cfg.n_head as u32);
    w.f32("gpt2.attention.layer_norm_epsilon", cfg.ln_eps);
    w.u32("general.file_type", ty.file_type());
    if ty == ExportType::Q8_0 {
        w.u32("general.quantization_version", 2);
    }
    // Tokens by id in their byte-level form (the keys of vocab.json), and the merges.
    let vocab: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&bpe.to_vocab_json())
            .map_err(|e| Error::field("tokenizer", e.to_string()))?;
    let mut tokens = vec![String::new(); tok.vocab_size()];
    for (t, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = t;
        }
    }
    let eot = tok.special_id("<|endoftext|>");
    let types: Vec<i32> = (0..tokens.len())
        .map(|i| if Some(i as u32) == eot { 3 } else { 1 })
        .collect();
    let merges: Vec<String> = bpe
        .to_merges_txt()
        .lines()
        .filter(|l| !l.starts_with("#version") && !l.is_empty())
        .map(str::to_string)
        .collect();
    w.str("tokenizer.ggml.model", "gpt2");
    w.str("tokenizer.ggml.pre", "gpt-2");
    w.strings("tokenizer.ggml.tokens", &tokens);
    w.i32s("tokenizer.ggml.token_type", &types);
    w.strings("tokenizer.ggml.merges", &merges);
    if let Some(id) = eot {
        w.u32("tokenizer.ggml.bos_token_id", id);
        w.u32("tokenizer.ggml.eos_token_id", id);
    }
    let p = model.params();
    for e in model.layout.entries() {
        let v = e.param.of(p);
        let dims = gguf_dims(e);
        let (kind, bytes) = match packed_layout(e) {
            Some(layout) => {
                let (ic, oc) = in_out_dims(&e.shape, layout);
                // Rows of the stored (out, in) matrix.
                let rows = match layout {
                    WeightLayout::OutIn => v.to_vec(),
                    WeightLayout::InOut => transpose(v, ic, oc),
                };
                match ty {
                    ExportType::F32 => (GgmlType::F32, f32_bytes(&rows)),
                    ExportType::F16 => (
                        GgmlType::F16,
                        rows.iter()
                            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                            .collect(),
                    ),
                    ExportType::Q8_0 if ic.is_multiple_of(Q8_0_BLOCK) => {
                        let mut out = Vec::with_capacity(rows.len() / 32 * 34);
                        for blk in rows.chunks_exact(Q8_0_BLOCK) {
                            let (d, q) = quantize_block(blk);
                            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                            out.extend(q.iter().map(|&q| q as u8));
                        }
                        (GgmlType::Q8_0, out)
                    }
                    // Q8_0 needs rows of a multiple of 32; keep such a matrix in f32.
                    ExportType::Q8_0 => (GgmlType::F32, f32_bytes(&rows)),
                }
            }
            None => (GgmlType::F32, f32_bytes(v)),
        };
        w.tensor(&gguf_name(&e.name)?, &dims, kind, bytes);
    }
    w.write(path)
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp_names() {
        assert_eq!(gguf_name("wte.weight").unwrap(), "token_embd.weight");
        assert_eq!(
            gguf_name("h.11.attn.c_attn.bias").unwrap(),
            "blk.11.attn_qkv.bias"
        );
        assert_eq!(
            gguf_name("h.0.mlp.c_proj.weight").unwrap(),
            "blk.0.ffn_down.weight"
        );
        assert_eq!(gguf_name("ln_f.weight").unwrap(), "output_norm.weight");
        assert!(gguf_name("h.0.crossattn.weight").is_err());
    }
}
