//! A GPT for inference: weights memory-mapped from `model.safetensors` (or converted once into
//! an owned buffer), the modules of [`crate::nn`] reading them in place, and a forward pass over a
//! [`KvCache`] that keeps nothing for backward.
//!
//! Why a separate struct from [`Gpt`]: the training model owns its parameters, gradients and
//! per-layer activations (`3 × params + activations`); inference needs none of that and should
//! not copy 0.5 GB of weights it can map. Modules only need `p: &[f32]` and offsets
//! ([`crate::nn::params::Param`]), so when the file is f32 and every tensor is 4-byte aligned the
//! mapped data section *is* `p`: the modules are built with [`ParamLayout::placed`], whose
//! offsets point at each tensor inside the file. Other files (f16, bf16, misaligned) are
//! converted tensor by tensor into a `Vec<f32>` in our usual consecutive layout.
//!
//! With `--dtype bf16` ([`InferenceModel::load_as`], [`InferenceModel::set_dtype`]) the weight
//! matrices are held only in bf16, packed for the decode kernel (see
//! [`super::bf16_weights`]); the f32 buffer then holds just the biases, LayerNorm parameters and
//! `wpe`, so the resident weights are about half those of f32.
//!
//! Shapes: packed rows `(N, C)` with `N = Σ new` (see [`crate::generate::kv_cache`]), logits
//! `(rows, V)`.

use super::bf16_weights::{
    bf16_layout, in_out_dims, read_bytes, read_packed, with_bf16_matrices, Bf16Matrices,
};
use super::kv_cache::{sized, KvCache, Scratch};
use crate::error::{Error, Result};
use crate::kernels::bf16_decode::{linear_packed_bf16, PackedBf16};
use crate::kernels::embedding::sinusoidal_positions;
use crate::kernels::layernorm::layernorm_forward;
use crate::kernels::matmul::WeightLayout;
use crate::model::checkpoint::{self, hf_family, hf_name, HfFamily};
use crate::model::config::{GptConfig, Positions};
use crate::model::Gpt;
use crate::nn::block::{Block, BlockConfig, NormPlacement};
use crate::nn::layernorm::LayerNorm;
use crate::nn::params::{Init, Param, ParamLayout};
use crate::nn::precision::Precision;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// Where the weights live.
enum Weights {
    /// f32 data section of the mapped file, used in place: `len` floats from byte `start`.
    Mapped {
        mmap: memmap2::Mmap,
        start: usize,
        len: usize,
    },
    /// Converted or copied into memory.
    Owned(Vec<f32>),
    /// Copied into anonymous memory advised to use huge pages (see
    /// [`InferenceModel::copy_to_huge_pages`]).
    Anon(memmap2::MmapMut, usize),
}

impl Weights {
    fn as_slice(&self) -> &[f32] {
        match self {
            Weights::Owned(v) => v,
            Weights::Anon(m, len) => {
                // SAFETY: the map is page-aligned, `len` floats long (checked at creation) and
                // fully initialised by the copy in `copy_to_huge_pages`.
                unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<f32>(), *len) }
            }
            Weights::Mapped { mmap, start, len } => {
                let bytes = &mmap[*start..*start + 4 * *len];
                // SAFETY: `load` checked that `start` (and so the pointer, the map being
                // page-aligned) is a multiple of 4 and that the range lies in the map; f32 has
                // no invalid bit patterns; the target is little-endian (checked in `load`), as
                // safetensors stores. The map is read-only and lives as long as `self`.
                unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<f32>(), *len) }
            }
        }
    }
}

/// How the weights were obtained (reported by `gpt generate --json` and the benchmark).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WeightsSource {
    /// f32 file used in place through the memory map.
    Mapped,
    /// Converted from the named dtype into memory.
    Converted(String),
    /// Copied from a training model in memory.
    Copied,
    /// Matrices packed into bf16 (from the named dtype, read chunk by chunk from the file, or
    /// from f32 weights in memory), the other tensors in f32.
    Bf16(String),
}

/// A GPT ready for cached inference.
pub struct InferenceModel {
    /// The configuration.
    pub config: GptConfig,
    weights: Weights,
    /// The layout the modules read (file offsets when mapped; with bf16 matrices, see
    /// [`super::bf16_weights`]).
    pub layout: ParamLayout,
    /// How the weights were obtained.
    pub source: WeightsSource,
    wte: Param,
    wpe: Option<Param>,
    sinusoid: Vec<f32>,
    /// The blocks `h.0 … h.{L-1}`.
    pub blocks: Vec<Block>,
    ln_f: Option<LayerNorm>,
    /// The weight matrices in bf16 (`--dtype bf16`), which `weights` then lacks; `None` in f32.
    bf16: Option<Bf16Matrices>,
}

struct Parts {
    wte: Param,
    wpe: Option<Param>,
    blocks: Vec<Block>,
    ln_f: Option<LayerNorm>,
}

/// Registers the model's tensors in the order of [`Gpt::uninit`] (so a consecutive layout equals
/// the training model's).
fn build(config: &GptConfig, layout: &mut ParamLayout) -> Result<Parts> {
    let c = config.n_embd;
    let wte = layout.add("wte.weight", &[config.vocab_size, c], true, Init::Zeros)?;
    let wpe = match config.positions {
        Positions::Learned => {
            Some(layout.add("wpe.weight", &[config.n_ctx, c], true, Init::Zeros)?)
        }
        Positions::Sinusoidal => None,
    };
    let bcfg = BlockConfig {
        n_embd: c,
        n_head: config.n_head,
        hidden: 4 * c,
        bias: config.bias,
        activation: config.activation,
        dropout: 0.0,
        norm: config.norm,
        ln_eps: config.ln_eps,
        causal: true,
        cross: false,
        std: 0.0,
        proj_std: 0.0,
    };
    let blocks = (0..config.n_layer)
        .map(|i| Block::new(layout, &format!("h.{i}"), &bcfg))
        .collect::<Result<Vec<_>>>()?;
    let ln_f = match config.norm {
        NormPlacement::Pre => Some(LayerNorm::new(layout, "ln_f", c, config.ln_eps)?),
        NormPlacement::Post => None,
    };
    Ok(Parts {
        wte,
        wpe,
        blocks,
        ln_f,
    })
}

fn msg(path: &Path, text: String) -> Error {
    Error::Msg(format!("{}: {text}", path.display()))
}

/// Converts one stored tensor's bytes (`dtype` F32, F16 or BF16, little-endian) to f32.
fn convert(dtype: Dtype, raw: &[u8], dst: &mut [f32], name: &str, path: &Path) -> Result<()> {
    match dtype {
        Dtype::F32 => {
            for (d, b) in dst.iter_mut().zip(raw.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (d, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                *d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (d, b) in dst.iter_mut().zip(raw.chunks_exact(2)) {
                *d = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        d => {
            return Err(msg(
                path,
                format!(
                    "tensor `{name}` has dtype {d:?}; supported: F32, F16, BF16 (convert the \
                     checkpoint, e.g. `model.to(torch.float32).save_pretrained(dir)`)"
                ),
            ))
        }
    }
    Ok(())
}

/// Where one tensor sits in the file.
#[derive(Clone, Copy)]
struct Stored {
    dtype: Dtype,
    /// First byte of its data, from the start of the file.
    start: usize,
    /// Bytes of data.
    len: usize,
}

/// A layout for bf16 weights: the tensors that stay f32 ([`bf16_layout`] is `None`) at
/// consecutive offsets `0..small` of a compact f32 buffer, each matrix at a distinct offset from
/// `small` on, which indexes nothing in that buffer and serves as its key in [`Bf16Matrices`].
fn bf16_placed(config: &GptConfig) -> Result<(ParamLayout, Parts, usize)> {
    let mut consecutive = ParamLayout::new();
    build(config, &mut consecutive)?;
    let mut offsets = HashMap::new();
    let mut small = 0;
    for e in consecutive.entries() {
        if bf16_layout(e).is_none() {
            offsets.insert(e.name.clone(), small);
            small += e.param.len;
        }
    }
    let mut key = small;
    for e in consecutive.entries() {
        if bf16_layout(e).is_some() {
            offsets.insert(e.name.clone(), key);
            key += e.param.len;
        }
    }
    let mut placed = ParamLayout::placed(offsets);
    let parts = build(config, &mut placed)?;
    Ok((placed, parts, small))
}

impl InferenceModel {
    /// Loads a model directory: `config.json` (GPT-2 / OpenAI GPT / ours) and
    /// `model.safetensors` (f32, f16 or bf16). f32 files are used in place through a memory map.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, Precision::F32)
    }

    /// [`InferenceModel::load`] with the weight matrices in `dtype`. `Bf16` reads each matrix
    /// from the file in chunks straight into packed bf16 (a bf16 checkpoint bit for bit, f32 and
    /// f16 rounded to nearest even), never holding an f32 copy of it; the other tensors are f32.
    pub fn load_as(dir: &Path, dtype: Precision) -> Result<Self> {
        let config = checkpoint::load_config(dir)?;
        let path = dir.join(checkpoint::WEIGHTS_FILE);
        let mut file = std::fs::File::open(&path).map_err(|e| {
            msg(
                &path,
                format!("cannot open the weights ({e}); a model directory holds config.json and model.safetensors"),
            )
        })?;
        // SAFETY: mapped read-only; the file must not be modified while the model lives (the
        // hazard every mmap-based loader accepts).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let mut layout = ParamLayout::new();
        let parts = build(&config, &mut layout)?;
        let family = hf_family(&config);
        // Validate every tensor (presence, shape, dtype) and note where it is. This reads only
        // the header: the data pages of the map are not touched.
        let (header_end, stored) = {
            let st = SafeTensors::deserialize(&mmap).map_err(|e| {
                msg(
                    &path,
                    format!(
                        "not a valid safetensors file ({e}); is it truncated or still downloading?"
                    ),
                )
            })?;
            let by_name: HashMap<String, TensorView> = st.tensors().into_iter().collect();
            let mut stored = HashMap::new();
            let header_end = 8 + st_header_len(&mmap);
            for e in layout.entries() {
                let view = find(&by_name, &e.name, family).ok_or_else(|| {
                    msg(
                        &path,
                        format!(
                            "missing tensor `{}` (expected by config.json: {} layers, n_embd {})",
                            hf_name(&e.name, family),
                            config.n_layer,
                            config.n_embd
                        ),
                    )
                })?;
                if view.shape() != e.shape.as_slice() {
                    return Err(msg(
                        &path,
                        format!(
                            "tensor `{}` has shape {:?}, expected {:?} from config.json",
                            hf_name(&e.name, family),
                            view.shape(),
                            e.shape
                        ),
                    ));
                }
                match view.dtype() {
                    Dtype::F32 | Dtype::F16 | Dtype::BF16 => {}
                    d => {
                        return Err(msg(
                            &path,
                            format!(
                                "tensor `{}` has dtype {d:?}; supported: F32, F16, BF16",
                                hf_name(&e.name, family)
                            ),
                        ))
                    }
                }
                let start = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
                let len = view.data().len();
                let dtype = view.dtype();
                stored.insert(e.name.clone(), Stored { dtype, start, len });
            }
            (header_end, stored)
        };
        let mut dtypes = Vec::new();
        for e in layout.entries() {
            let d = format!("{:?}", stored[&e.name].dtype);
            if !dtypes.contains(&d) {
                dtypes.push(d);
            }
        }
        let dtypes = dtypes.join("+");
        if dtype == Precision::Bf16 {
            // Every tensor is read with file reads, not through the map: touching a few small
            // tensors through it mapped whole neighbourhoods of the file (78 MB resident for
            // GPT-2 124M, measured), while read() leaves nothing of the file resident.
            let (placed, parts, small) = bf16_placed(&config)?;
            let mut data = vec![0.0f32; small];
            let mut mats = Bf16Matrices::default();
            for e in placed.entries() {
                let s = stored[&e.name];
                let name = hf_name(&e.name, family);
                match bf16_layout(e) {
                    None => convert(
                        s.dtype,
                        &read_bytes(&mut file, &path, &name, s.start, s.len)?,
                        e.param.of_mut(&mut data),
                        &name,
                        &path,
                    )?,
                    Some(l) => mats.insert(
                        e.param,
                        read_packed(&mut file, &path, &name, s.dtype, s.start, &e.shape, l)?,
                    ),
                }
            }
            let mut m = Self::assemble(
                config,
                Weights::Owned(data),
                placed,
                WeightsSource::Bf16(dtypes),
                parts,
            );
            m.bf16 = Some(mats);
            return Ok(m);
        }
        let in_place = cfg!(target_endian = "little")
            && header_end.is_multiple_of(4)
            && stored
                .values()
                .all(|s| s.dtype == Dtype::F32 && s.start.is_multiple_of(4));
        if in_place {
            let offsets = stored
                .iter()
                .map(|(name, s)| (name.clone(), (s.start - header_end) / 4))
                .collect();
            let mut placed = ParamLayout::placed(offsets);
            let parts = build(&config, &mut placed)?;
            let len = (mmap.len() - header_end) / 4;
            return Ok(Self::assemble(
                config,
                Weights::Mapped {
                    mmap,
                    start: header_end,
                    len,
                },
                placed,
                WeightsSource::Mapped,
                parts,
            ));
        }
        let mut data = vec![0.0f32; layout.total()];
        for e in layout.entries() {
            let s = stored[&e.name];
            let name = hf_name(&e.name, family);
            let raw = &mmap[s.start..s.start + s.len];
            convert(s.dtype, raw, e.param.of_mut(&mut data), &name, &path)?;
        }
        Ok(Self::assemble(
            config,
            Weights::Owned(data),
            layout,
            WeightsSource::Converted(dtypes),
            parts,
        ))
    }

    /// An inference copy of a training model's current weights.
    pub fn from_gpt(model: &Gpt) -> Result<Self> {
        let config = model.config.clone();
        let mut layout = ParamLayout::new();
        let parts = build(&config, &mut layout)?;
        let mut data = vec![0.0f32; layout.total()];
        for e in layout.entries() {
            e.param
                .of_mut(&mut data)
                .copy_from_slice(model.params.tensor(&e.name)?);
        }
        Ok(Self::assemble(
            config,
            Weights::Owned(data),
            layout,
            WeightsSource::Copied,
            parts,
        ))
    }

    fn assemble(
        config: GptConfig,
        weights: Weights,
        layout: ParamLayout,
        source: WeightsSource,
        parts: Parts,
    ) -> Self {
        let mut sinusoid = Vec::new();
        if config.positions == Positions::Sinusoidal {
            sinusoid = vec![0.0; config.n_ctx * config.n_embd];
            sinusoidal_positions(&mut sinusoid, config.n_ctx, config.n_embd);
        }
        InferenceModel {
            config,
            weights,
            layout,
            source,
            wte: parts.wte,
            wpe: parts.wpe,
            sinusoid,
            blocks: parts.blocks,
            ln_f: parts.ln_f,
            bf16: None,
        }
    }

    /// Copies the weights into anonymous memory advised to use transparent huge pages (same
    /// layout). Why: decoding streams every weight once per token, and a file mapping uses
    /// 4 KiB pages, one TLB miss per 64 cache lines; 2 MiB pages remove most of them. The copy
    /// costs one pass over the weights and their size in memory.
    pub fn copy_to_huge_pages(&mut self) -> Result<()> {
        let src = self.params();
        let len = src.len();
        let mut m = memmap2::MmapMut::map_anon(len * 4).map_err(|e| {
            Error::Msg(format!(
                "cannot allocate {} bytes for the weights: {e}",
                len * 4
            ))
        })?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without transparent huge pages the copy still works.
            let _ = m.advise(memmap2::Advice::HugePage);
        }
        for (d, s) in m.chunks_exact_mut(4).zip(src) {
            d.copy_from_slice(&s.to_ne_bytes());
        }
        self.weights = Weights::Anon(m, len);
        Ok(())
    }

    /// The flat f32 parameter buffer the modules read: every tensor, or with bf16 matrices only
    /// the biases, LayerNorm parameters and `wpe` (the matrices' handles point past its end).
    pub fn params(&self) -> &[f32] {
        self.weights.as_slice()
    }

    /// Bytes of weights read per decoded token: every parameter except the position table
    /// (one row of `wpe` is read per token); with bf16 matrices, their packed bytes plus the f32
    /// bytes of the other tensors.
    pub fn bytes_per_token(&self) -> usize {
        let wpe = self.wpe.map_or(0, |w| w.len);
        match &self.bf16 {
            Some(m) => m.bytes() + 4 * (self.params().len() - wpe),
            None => 4 * (self.config.num_params() - wpe),
        }
    }

    /// Bytes of weights the model holds in memory: the f32 buffer (for a mapped file, the part
    /// of the map that decoding touches) plus the bf16 matrices.
    pub fn weight_bytes(&self) -> usize {
        4 * self.params().len() + self.bf16.as_ref().map_or(0, |m| m.bytes())
    }

    /// Sets the dtype of the weight matrices. `Bf16` rounds the f32 matrices to bf16 once
    /// (round-to-nearest-even; a bf16 checkpoint, loaded exactly into f32, gets its own values
    /// back bit for bit), packs them for the decode kernel and **drops the f32 weights** (an
    /// owned buffer is freed, a file map released), keeping the biases, LayerNorm parameters and
    /// `wpe` in a small f32 buffer. `F32` on a bf16 model widens the bf16 matrices back (exactly;
    /// the rounding is not undone). To avoid the f32 round trip altogether, load with
    /// [`InferenceModel::load_as`].
    pub fn set_dtype(&mut self, dtype: Precision) {
        match (dtype, self.bf16.is_some()) {
            (Precision::Bf16, false) => self.convert_to_bf16(),
            (Precision::F32, true) => self.convert_to_f32(),
            _ => {}
        }
    }

    /// f32 weights → bf16 matrices + small f32 buffer (see [`InferenceModel::set_dtype`]).
    fn convert_to_bf16(&mut self) {
        // The layout was valid when the model was built from this config.
        let (placed, parts, small) = bf16_placed(&self.config).expect("layout of a built model");
        let p = self.params();
        let mut data = vec![0.0f32; small];
        let mut mats = Bf16Matrices::default();
        for e in placed.entries() {
            let Some(old) = self.layout.get(&e.name) else {
                continue;
            };
            let src = old.param.of(p);
            match bf16_layout(e) {
                None => e.param.of_mut(&mut data).copy_from_slice(src),
                Some(l) => {
                    let (ic, oc) = in_out_dims(&e.shape, l);
                    mats.insert(e.param, PackedBf16::from_f32(src, ic, oc, l));
                }
            }
        }
        let from = match &self.source {
            WeightsSource::Mapped => "F32".to_string(),
            WeightsSource::Converted(d) => d.clone(),
            WeightsSource::Copied => "F32 (copied)".to_string(),
            WeightsSource::Bf16(d) => d.clone(),
        };
        self.replace(Weights::Owned(data), placed, parts, Some(mats));
        self.source = WeightsSource::Bf16(from);
    }

    /// bf16 matrices → f32 weights in the consecutive layout.
    fn convert_to_f32(&mut self) {
        let mut layout = ParamLayout::new();
        let parts = build(&self.config, &mut layout).expect("layout of a built model");
        let mut data = vec![0.0f32; layout.total()];
        let (p, mats) = (self.params(), self.bf16.as_ref());
        for e in layout.entries() {
            let Some(old) = self.layout.get(&e.name) else {
                continue;
            };
            let dst = e.param.of_mut(&mut data);
            match mats.and_then(|m| m.get(old.param)) {
                Some(m) => {
                    let mut bits = vec![0u16; dst.len()];
                    m.unpack(&mut bits);
                    for (d, b) in dst.iter_mut().zip(bits) {
                        *d = crate::kernels::bf16::bf16_bits_to_f32(b);
                    }
                }
                None => dst.copy_from_slice(old.param.of(p)),
            }
        }
        self.replace(Weights::Owned(data), layout, parts, None);
        self.source = WeightsSource::Copied;
    }

    /// Swaps in new weights, the layout they follow and the modules built on it.
    fn replace(
        &mut self,
        weights: Weights,
        layout: ParamLayout,
        parts: Parts,
        bf16: Option<Bf16Matrices>,
    ) {
        self.weights = weights;
        self.layout = layout;
        self.wte = parts.wte;
        self.wpe = parts.wpe;
        self.blocks = parts.blocks;
        self.ln_f = parts.ln_f;
        self.bf16 = bf16;
    }

    /// The dtype of the weight matrices.
    pub fn dtype(&self) -> Precision {
        if self.bf16.is_some() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// Runs `f` inside the bf16 scope when the weights are bf16.
    fn with_dtype<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bf16 {
            Some(m) => with_bf16_matrices(m, f),
            None => f(),
        }
    }

    /// The packed tied embedding / LM head (bf16 models only).
    fn wte_bf16(&self) -> Option<&PackedBf16> {
        self.bf16.as_ref().and_then(|m| m.get(self.wte))
    }

    /// An empty cache for `b` rows of up to `n_ctx` positions.
    pub fn new_cache(&self, b: usize) -> KvCache {
        KvCache::new(
            self.config.n_layer,
            b,
            self.config.n_ctx,
            self.config.n_embd,
        )
    }

    /// Runs packed new tokens `ids (Σ new)` through the model over `cache` (advancing it),
    /// leaving the final hidden states `(Σ new, C)` in `hidden`. Row `b`'s tokens sit at
    /// positions `cache.len(b)..cache.len(b) + new[b]`.
    pub fn forward_hidden(
        &self,
        ids: &[u32],
        new: &[usize],
        cache: &mut KvCache,
        s: &mut Scratch,
        hidden: &mut Vec<f32>,
    ) -> Result<()> {
        self.with_dtype(|| self.forward_hidden_f(ids, new, cache, s, hidden))
    }

    /// [`InferenceModel::forward_hidden`] in the current dtype scope.
    fn forward_hidden_f(
        &self,
        ids: &[u32],
        new: &[usize],
        cache: &mut KvCache,
        s: &mut Scratch,
        hidden: &mut Vec<f32>,
    ) -> Result<()> {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let n: usize = new.iter().sum();
        if ids.len() != n {
            return Err(Error::shape(
                "InferenceModel::forward",
                format!("{} ids", ids.len()),
                format!("Σ new = {n}"),
            ));
        }
        if new.len() != cache.batch() {
            return Err(Error::shape(
                "InferenceModel::forward",
                format!("new tokens for {} rows", new.len()),
                format!("a cache of {} rows", cache.batch()),
            ));
        }
        if let Some(layer) = cache.layers.first() {
            layer.check_room(new)?;
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= v) {
            return Err(Error::TokenOutOfRange {
                id: id as usize,
                vocab_size: v,
            });
        }
        let p = self.params();
        let x = sized(hidden, n * c);
        let pos_table = match self.wpe {
            Some(w) => w.of(p),
            None => &self.sinusoid[..],
        };
        let wte_bf16 = self.wte_bf16();
        let mut r = 0;
        for (b, &nb) in new.iter().enumerate() {
            let start = cache.len(b);
            for i in 0..nb {
                let (id, pos) = (ids[r] as usize, start + i);
                let dst = &mut x[r * c..(r + 1) * c];
                // The token's embedding row: widened from bf16, or read from the f32 weights.
                match wte_bf16 {
                    Some(w) => w.row_f32(id, dst),
                    None => dst.copy_from_slice(&self.wte.of(p)[id * c..(id + 1) * c]),
                }
                for (d, q) in dst.iter_mut().zip(&pos_table[pos * c..(pos + 1) * c]) {
                    *d += q;
                }
                r += 1;
            }
        }
        for (block, layer) in self.blocks.iter().zip(&mut cache.layers) {
            block.forward_cached(p, x, new, layer, s)?;
        }
        if let Some(ln) = &self.ln_f {
            layernorm_forward(
                sized(&mut s.ln, n * c),
                sized(&mut s.mean, n),
                sized(&mut s.rstd, n),
                x,
                ln.weight.of(p),
                ln.bias.of(p),
                n,
                c,
                ln.eps,
            );
            x.copy_from_slice(&s.ln[..n * c]);
        }
        Ok(())
    }

    /// Logits `(rows, V)` of hidden states `(rows, C)` through the LM head tied to `wte`.
    pub fn logits(&self, out: &mut Vec<f32>, hidden: &[f32]) {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let rows = hidden.len() / c;
        let out = sized(out, rows * v);
        let head = WeightLayout::OutIn;
        match self.wte_bf16() {
            Some(w) => linear_packed_bf16(out, hidden, w, None, rows),
            None => {
                let w = self.wte.of(self.params());
                crate::kernels::few_rows::linear_small(out, hidden, w, None, rows, c, v, head);
            }
        }
    }

    /// One step: runs packed `ids` and writes the logits `(R, V)` of the last new token of each
    /// row with `new[b] > 0` (R such rows, in row order) into `logits`.
    pub fn step(
        &self,
        ids: &[u32],
        new: &[usize],
        cache: &mut KvCache,
        s: &mut Scratch,
        hidden: &mut Vec<f32>,
        logits: &mut Vec<f32>,
    ) -> Result<()> {
        self.forward_hidden(ids, new, cache, s, hidden)?;
        let c = self.config.n_embd;
        let mut last = Vec::with_capacity(new.len() * c);
        let mut r = 0;
        for &nb in new {
            if nb > 0 {
                r += nb;
                last.extend_from_slice(&hidden[(r - 1) * c..r * c]);
            }
        }
        self.logits(logits, &last);
        Ok(())
    }
}

/// The tensor named `name` (ours) in a file, with or without the `transformer.` prefix.
fn find<'a, 'b>(
    by_name: &'a HashMap<String, TensorView<'b>>,
    name: &str,
    family: HfFamily,
) -> Option<&'a TensorView<'b>> {
    let prefixed = hf_name(name, family);
    let bare = prefixed.trim_start_matches("transformer.");
    by_name.get(&prefixed).or_else(|| by_name.get(bare))
}

/// The header length `N` of a safetensors file (its first 8 bytes, little-endian); the data
/// section starts at byte `8 + N`. Only called after the file parsed.
fn st_header_len(bytes: &[u8]) -> usize {
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(n) as usize
}

/// The checkpoint directory `dir` names: itself, or its `checkpoint/` (a training output
/// directory).
pub fn resolve_dir(dir: &Path) -> std::path::PathBuf {
    let inner = dir.join("checkpoint");
    if !dir.join(checkpoint::CONFIG_FILE).exists() && inner.join(checkpoint::CONFIG_FILE).exists() {
        return inner;
    }
    dir.to_path_buf()
}

/// Loads a model directory and the tokenizer beside it (`vocab.json` + `merges.txt`,
/// `tokenizer.json`, or our char tokenizer), checking that every tokenizer id exists in the
/// model's vocabulary.
pub fn load_with_tokenizer(
    dir: &Path,
) -> Result<(
    InferenceModel,
    gpt_tokenizer::AnyTokenizer,
    std::path::PathBuf,
)> {
    load_with_tokenizer_as(dir, Precision::F32)
}

/// [`load_with_tokenizer`] with the weight matrices in `dtype` (see [`InferenceModel::load_as`]).
pub fn load_with_tokenizer_as(
    dir: &Path,
    dtype: Precision,
) -> Result<(
    InferenceModel,
    gpt_tokenizer::AnyTokenizer,
    std::path::PathBuf,
)> {
    let dir = resolve_dir(dir);
    let model = InferenceModel::load_as(&dir, dtype)?;
    let tok = crate::data::prepare::load_tokenizer(&dir)?;
    if tok.vocab_size() > model.config.vocab_size {
        return Err(Error::Config {
            field: format!(
                "{}: vocab_size",
                dir.join(checkpoint::CONFIG_FILE).display()
            ),
            reason: format!(
                "the tokenizer beside the model has {} ids but the model's vocabulary is {}; \
                 put the tokenizer the model was trained with in {}",
                tok.vocab_size(),
                model.config.vocab_size,
                dir.display()
            ),
        });
    }
    Ok((model, tok, dir))
}
