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
//! With `--dtype bf16` or `--dtype int8` ([`InferenceModel::load_as`],
//! [`InferenceModel::set_dtype`]) the weight matrices are held only in that format, packed for
//! its decode kernel (see [`super::packed_weights`]); the f32 buffer then holds just the biases,
//! LayerNorm parameters and `wpe`, so the resident weights are about a half (bf16) or a quarter
//! (int8) of those of f32.
//!
//! Shapes: packed rows `(N, C)` with `N = Σ new` (see [`crate::nn::kv_cache`]), logits
//! `(rows, V)`.

use super::checkpoint::{self, hf_family, hf_name, NonFinite};
use super::config::GptConfig;
use super::gpt::{Gpt, GptModules};
use super::packed_weights::{in_out_dims, packed_layout, read_packed, read_packed_int8};
use super::weight_dtype::WeightDtype;
use crate::error::{Error, Result};
use crate::io::safetensors::{dtype_size, to_f32, Dtype, TensorFile};
use crate::kernels::half::PackedHalf;
use crate::kernels::int8::PackedI8;
use crate::kernels::panel_f32::PanelsF32;
use crate::nn::kv_cache::{sized, KvCache, Scratch};
use crate::nn::params::ParamLayout;
use crate::nn::weights::{PackedMatrices, PackedWeight, PanelMatrices, Weights};
use std::collections::HashMap;
use std::path::Path;

/// Where the weights live.
enum Storage {
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

impl Storage {
    /// Drops this process's resident pages of floats `range` of a mapped file (no-op for other
    /// storage): the matrices packed in panels are not read from the map again unless a prompt
    /// of more than `F32_STREAM_ROWS` rows runs `gemm` on them.
    fn release(&self, range: std::ops::Range<usize>) {
        if let Storage::Mapped { mmap, start, .. } = self {
            crate::io::mapped::drop_pages(mmap, start + 4 * range.start, 4 * range.len());
        }
    }

    fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Owned(v) => v,
            Storage::Anon(m, len) => {
                // SAFETY: the map is page-aligned, `len` floats long (checked at creation) and
                // fully initialised by the copy in `copy_to_huge_pages`.
                unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<f32>(), *len) }
            }
            Storage::Mapped { mmap, start, len } => {
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
    /// Matrices packed into the model's dtype ([`InferenceModel::dtype`]: bf16, f16 or int8)
    /// from the named file dtypes (read from the file, or from f32 weights in memory), the
    /// other tensors in f32.
    Packed(String),
    /// Read from a GGUF file (its tensor types), held in the model's dtype.
    Gguf(String),
}

/// A GPT ready for cached inference.
pub struct InferenceModel {
    /// The configuration.
    pub config: GptConfig,
    weights: Storage,
    /// The layout the modules read (file offsets when mapped; with bf16 matrices, see
    /// [`super::packed_weights`]).
    pub layout: ParamLayout,
    /// How the weights were obtained.
    pub source: WeightsSource,
    /// The modules, registered as the training model registers them.
    pub modules: GptModules,
    /// The weight matrices in bf16 or int8 (`--dtype`), which `weights` then lacks; `None` in
    /// f32.
    packed: Option<PackedMatrices>,
    /// The dtype of the weight matrices.
    dtype: WeightDtype,
    /// f32 matrices also packed in panels for few-row products (see
    /// [`InferenceModel::pack_head_panels`]); dropped when the weights change.
    panels: Option<PanelMatrices>,
}

/// The modules over `layout`: [`GptModules::register`], the one registration of a GPT.
fn build(config: &GptConfig, layout: &mut ParamLayout) -> Result<GptModules> {
    GptModules::register(config, layout)
}

fn msg(path: &Path, text: String) -> Error {
    Error::file(path, text)
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

/// A layout for bf16 weights: the tensors that stay f32 ([`packed_layout`] is `None`) at
/// consecutive offsets `0..small` of a compact f32 buffer, each matrix at a distinct offset from
/// `small` on, which indexes nothing in that buffer and serves as its key in [`PackedMatrices`].
pub(crate) fn packed_placed(config: &GptConfig) -> Result<(ParamLayout, GptModules, usize)> {
    let mut consecutive = ParamLayout::new();
    build(config, &mut consecutive)?;
    let mut offsets = HashMap::new();
    let mut small = 0;
    for e in consecutive.entries() {
        if packed_layout(e).is_none() {
            offsets.insert(e.name.clone(), small);
            small += e.param.len;
        }
    }
    let mut key = small;
    for e in consecutive.entries() {
        if packed_layout(e).is_some() {
            offsets.insert(e.name.clone(), key);
            key += e.param.len;
        }
    }
    let mut placed = ParamLayout::placed(offsets);
    let parts = build(config, &mut placed)?;
    Ok((placed, parts, small))
}

/// Which f32 weight matrices loading packs in panels ([`InferenceModel::pack_all_panels`]):
/// what pays depends on how many rows the command's products have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Panels {
    /// Every matrix: generation and serving, whose products have a few rows at a time.
    All,
    /// The LM head only: `gpt eval`, whose contexts run through `gemm` and whose answers then
    /// run the head on a few rows at a time. `gpt eval --tasks arc_easy,piqa --limit 40` on
    /// GPT-2 124M, 2 threads: every matrix packed 8.7 s and 1,100 MB peak (the contexts' `gemm`
    /// brings the originals back beside the panels), the head only 9.1–9.7 s and 768 MB, none
    /// 10.0–10.4 s and 735 MB.
    Head,
    /// None: `gpt score` (every product has many rows and runs `gemm` on the original
    /// matrices) and `gpt quantize` (a conversion). Panels would only cost the packing and,
    /// once `gemm` brings the originals' pages back, a second copy of the weights (`gpt score`
    /// of 1,400 tokens on GPT-2 124M: peak RSS 1,014 MB with every matrix packed, 657 without).
    Off,
}

impl InferenceModel {
    /// Loads a model directory: `config.json` (GPT-2 / OpenAI GPT / ours) and
    /// `model.safetensors` (f32, f16 or bf16). f32 files are used in place through a memory map.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_as(dir, WeightDtype::F32)
    }

    /// [`InferenceModel::load`] with the weight matrices in `dtype`. `Bf16` reads each matrix
    /// from the file in chunks straight into packed bf16 (a bf16 checkpoint bit for bit, f32 and
    /// f16 rounded to nearest even), never holding an f32 copy of it; `Int8` reads one matrix at
    /// a time and quantizes it; the other tensors are f32.
    ///
    /// Weights holding NaN or ±inf are an error naming the tensor and the file.
    pub fn load_as(dir: &Path, dtype: WeightDtype) -> Result<Self> {
        Self::load_with(dir, dtype, NonFinite::Refuse)
    }

    /// [`InferenceModel::load_as`] with a choice of what non-finite weights do
    /// (`--allow-nonfinite`). The check is one vectorised pass over the f32 weights (for a
    /// mapped file, a read of its pages, which decoding reads anyway) and, with bf16 matrices,
    /// over each chunk as it is packed.
    pub fn load_with(dir: &Path, dtype: WeightDtype, nonfinite: NonFinite) -> Result<Self> {
        Self::load_for(dir, dtype, nonfinite, Panels::All)
    }

    /// [`InferenceModel::load_with`] with a choice of which matrices of a memory-mapped f32
    /// model are packed in panels (`load_with`: all).
    pub fn load_for(
        dir: &Path,
        dtype: WeightDtype,
        nonfinite: NonFinite,
        panels: Panels,
    ) -> Result<Self> {
        let config = checkpoint::load_config(dir)?;
        let path = dir.join(checkpoint::WEIGHTS_FILE);
        let file = TensorFile::open(&path).map_err(|e| match e {
            Error::Io { source, .. } => msg(
                &path,
                format!(
                    "cannot open the weights ({source}); a model directory holds config.json \
                     and model.safetensors"
                ),
            ),
            e => e,
        })?;
        let mut layout = ParamLayout::new();
        let parts = build(&config, &mut layout)?;
        let family = hf_family(&config);
        // Validate every tensor (presence, shape, dtype) and note where it is. This reads only
        // the header: the data pages of the map are not touched.
        let header_end = file.header_end();
        let mut stored = HashMap::new();
        for e in layout.entries() {
            let prefixed = hf_name(&e.name, family);
            let bare = prefixed.trim_start_matches("transformer.");
            let t = file.get(&prefixed).or_else(|| file.get(bare)).ok_or_else(|| {
                msg(
                    &path,
                    format!(
                        "missing tensor `{prefixed}` (expected by config.json: {} layers, n_embd {})",
                        config.n_layer, config.n_embd
                    ),
                )
            })?;
            if t.shape != e.shape {
                return Err(msg(
                    &path,
                    format!(
                        "tensor `{prefixed}` has shape {:?}, expected {:?} from config.json",
                        t.shape, e.shape
                    ),
                ));
            }
            if dtype_size(t.dtype).is_none() {
                return Err(msg(
                    &path,
                    format!(
                        "tensor `{prefixed}` has dtype {:?}; supported: F32, F16, BF16",
                        t.dtype
                    ),
                ));
            }
            let (dtype, start, len) = (t.dtype, t.start, t.len);
            stored.insert(e.name.clone(), Stored { dtype, start, len });
        }
        let mut dtypes = Vec::new();
        for e in layout.entries() {
            let d = format!("{:?}", stored[&e.name].dtype);
            if !dtypes.contains(&d) {
                dtypes.push(d);
            }
        }
        let dtypes = dtypes.join("+");
        if dtype != WeightDtype::F32 {
            // Every tensor is read with file reads, not through the map: touching a few small
            // tensors through it mapped whole neighbourhoods of the file (78 MB resident for
            // GPT-2 124M, measured), while read() leaves nothing of the file resident.
            let (placed, parts, small) = packed_placed(&config)?;
            let mut data = vec![0.0f32; small];
            let mut mats = PackedMatrices::default();
            for e in placed.entries() {
                let s = stored[&e.name];
                let name = hf_name(&e.name, family);
                match packed_layout(e) {
                    None => {
                        let mut raw = vec![0u8; s.len];
                        file.read_at(s.start, &mut raw, &format!("tensor `{name}`"))?;
                        to_f32(s.dtype, &raw, e.param.of_mut(&mut data), &name, &path)?
                    }
                    Some(l) => {
                        let (f, at) = (&file, s.start);
                        let m = match dtype.half_format() {
                            Some(h) => PackedWeight::Half(read_packed(
                                f, &name, s.dtype, at, &e.shape, l, nonfinite, h,
                            )?),
                            None => PackedWeight::Int8(read_packed_int8(
                                f, &name, s.dtype, at, &e.shape, l, nonfinite,
                            )?),
                        };
                        mats.insert(e.param, m)
                    }
                }
            }
            let source = WeightsSource::Packed(dtypes);
            let mut m = Self::assemble(config, Storage::Owned(data), placed, source, parts);
            m.packed = Some(mats);
            m.dtype = dtype;
            m.check_finite(&path, nonfinite)?;
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
            let mmap = file.into_map();
            let len = (mmap.len() - header_end) / 4;
            let mut m = Self::assemble(
                config,
                Storage::Mapped {
                    mmap,
                    start: header_end,
                    len,
                },
                placed,
                WeightsSource::Mapped,
                parts,
            );
            m.check_finite(&path, nonfinite)?;
            match panels {
                Panels::All => {
                    // The finiteness pass read every page; drop them before packing, so the
                    // peak stays about one copy of the weights.
                    m.weights.release(0..m.params().len());
                    m.pack_all_panels();
                }
                Panels::Head => m.pack_head_panels(),
                Panels::Off => {}
            }
            return Ok(m);
        }
        let mut data = vec![0.0f32; layout.total()];
        for e in layout.entries() {
            let s = stored[&e.name];
            let name = hf_name(&e.name, family);
            let raw = &file.map()[s.start..s.start + s.len];
            to_f32(s.dtype, raw, e.param.of_mut(&mut data), &name, &path)?;
        }
        let m = Self::assemble(
            config,
            Storage::Owned(data),
            layout,
            WeightsSource::Converted(dtypes),
            parts,
        );
        m.check_finite(&path, nonfinite)?;
        Ok(m)
    }

    /// With [`NonFinite::Refuse`], an error naming `path` and the first tensor of the f32
    /// buffer that holds a NaN or ±inf (the bf16 matrices are checked as they are packed).
    fn check_finite(&self, path: &Path, nonfinite: NonFinite) -> Result<()> {
        if nonfinite == NonFinite::Allow {
            return Ok(());
        }
        let (p, family) = (self.params(), hf_family(&self.config));
        for e in self.layout.entries() {
            if self.packed.is_some() && packed_layout(e).is_some() {
                continue;
            }
            nonfinite.check(path, &hf_name(&e.name, family), e.param.of(p))?;
        }
        Ok(())
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
            Storage::Owned(data),
            layout,
            WeightsSource::Copied,
            parts,
        ))
    }

    fn assemble(
        config: GptConfig,
        weights: Storage,
        layout: ParamLayout,
        source: WeightsSource,
        modules: GptModules,
    ) -> Self {
        InferenceModel {
            config,
            weights,
            layout,
            source,
            modules,
            packed: None,
            dtype: WeightDtype::F32,
            panels: None,
        }
    }

    /// A model over weights already in memory (e.g. read from a GGUF file): `data` over
    /// `layout` (with `packed` matrices, the small f32 buffer of [`packed_placed`]'s layout).
    pub(crate) fn from_memory(
        config: GptConfig,
        data: Vec<f32>,
        layout: ParamLayout,
        modules: GptModules,
        packed: Option<(PackedMatrices, WeightDtype)>,
        source: WeightsSource,
    ) -> Self {
        let mut m = Self::assemble(config, Storage::Owned(data), layout, source, modules);
        if let Some((mats, dtype)) = packed {
            m.packed = Some(mats);
            m.dtype = dtype;
        }
        m
    }

    /// Copies the weights into anonymous memory advised to use transparent huge pages (same
    /// layout). Why: decoding streams every weight once per token, and a file mapping uses
    /// 4 KiB pages, one TLB miss per 64 cache lines; 2 MiB pages remove most of them. The copy
    /// costs one pass over the weights and their size in memory.
    pub fn copy_to_huge_pages(&mut self) -> Result<()> {
        let src = self.params();
        let len = src.len();
        let mut m = memmap2::MmapMut::map_anon(len * 4).map_err(|e| {
            Error::limit(
                "weight bytes",
                (len * 4) as u64,
                0,
                &format!("cannot allocate anonymous memory for them: {e}"),
            )
        })?;
        #[cfg(target_os = "linux")]
        {
            // Advice only: without transparent huge pages the copy still works.
            let _ = m.advise(memmap2::Advice::HugePage);
        }
        for (d, s) in m.chunks_exact_mut(4).zip(src) {
            d.copy_from_slice(&s.to_ne_bytes());
        }
        self.weights = Storage::Anon(m, len);
        Ok(())
    }

    /// The flat f32 parameter buffer the modules read: every tensor, or with bf16 matrices only
    /// the biases, LayerNorm parameters and `wpe` (the matrices' handles point past its end).
    pub fn params(&self) -> &[f32] {
        self.weights.as_slice()
    }

    /// Bytes of weights read per decoded token: every parameter except the position table
    /// (one row of `wpe` is read per token); with packed matrices, their packed bytes plus the
    /// f32 bytes of the other tensors.
    pub fn bytes_per_token(&self) -> usize {
        let wpe = self.modules.embed.wpe().map_or(0, |w| w.len);
        match &self.packed {
            Some(m) => m.bytes() + 4 * (self.params().len() - wpe),
            None => 4 * (self.config.num_params() - wpe),
        }
    }

    /// The stored words of every weight matrix decoding streams: the packed matrices (bf16,
    /// f16, int8) or the f32 panels; empty when neither exists. For read probes
    /// (`gpt bench generate --vs-llamacpp`).
    pub fn packed_words(&self) -> Vec<&[u32]> {
        match (&self.packed, &self.panels) {
            (Some(m), _) => m.words(),
            (None, Some(p)) => p.words(),
            (None, None) => Vec::new(),
        }
    }

    /// Bytes of weights the model holds: the f32 buffer (for a mapped file, the whole map, of
    /// which the matrices packed in panels are not resident) plus the packed matrices and the
    /// panels.
    pub fn weight_bytes(&self) -> usize {
        4 * self.params().len()
            + self.packed.as_ref().map_or(0, |m| m.bytes())
            + self.panels.as_ref().map_or(0, |m| m.bytes())
    }

    /// Sets the dtype of the weight matrices. `Bf16` rounds the f32 matrices to bf16 once
    /// (round-to-nearest-even; a bf16 checkpoint, loaded exactly into f32, gets its own values
    /// back bit for bit), packs them for the decode kernel and **drops the f32 weights** (an
    /// owned buffer is freed, a file map released), keeping the biases, LayerNorm parameters and
    /// `wpe` in a small f32 buffer. `Int8` quantizes the f32 matrices to `Q8_0` blocks the same
    /// way. `F32` on a packed model widens the matrices back (exactly; the rounding is not
    /// undone); between bf16 and int8 the matrices go through f32. To avoid the f32 round trip
    /// altogether, load with [`InferenceModel::load_as`].
    pub fn set_dtype(&mut self, dtype: WeightDtype) {
        if dtype == self.dtype {
            return;
        }
        if self.dtype != WeightDtype::F32 {
            self.convert_to_f32();
        }
        if dtype != WeightDtype::F32 {
            self.convert_to_packed(dtype);
        }
    }

    /// f32 weights → packed matrices + small f32 buffer (see [`InferenceModel::set_dtype`]).
    fn convert_to_packed(&mut self, dtype: WeightDtype) {
        // The layout was valid when the model was built from this config.
        let (placed, parts, small) = packed_placed(&self.config).expect("layout of a built model");
        let p = self.params();
        let mut data = vec![0.0f32; small];
        let mut mats = PackedMatrices::default();
        for e in placed.entries() {
            let Some(old) = self.layout.get(&e.name) else {
                continue;
            };
            let src = old.param.of(p);
            match packed_layout(e) {
                None => e.param.of_mut(&mut data).copy_from_slice(src),
                Some(l) => {
                    let (ic, oc) = in_out_dims(&e.shape, l);
                    let m = match dtype.half_format() {
                        Some(h) => PackedWeight::Half(PackedHalf::from_f32(src, ic, oc, l, h)),
                        None => PackedWeight::Int8(PackedI8::from_f32(src, ic, oc, l)),
                    };
                    mats.insert(e.param, m);
                }
            }
        }
        let from = match &self.source {
            WeightsSource::Mapped => "F32".to_string(),
            WeightsSource::Converted(d) => d.clone(),
            WeightsSource::Copied => "F32 (copied)".to_string(),
            WeightsSource::Packed(d) | WeightsSource::Gguf(d) => d.clone(),
        };
        self.replace(Storage::Owned(data), placed, parts, Some(mats));
        self.source = WeightsSource::Packed(from);
        self.dtype = dtype;
    }

    /// Packed matrices → f32 weights in the consecutive layout.
    fn convert_to_f32(&mut self) {
        let mut layout = ParamLayout::new();
        let parts = build(&self.config, &mut layout).expect("layout of a built model");
        let mut data = vec![0.0f32; layout.total()];
        let (p, mats) = (self.params(), self.packed.as_ref());
        for e in layout.entries() {
            let Some(old) = self.layout.get(&e.name) else {
                continue;
            };
            let dst = e.param.of_mut(&mut data);
            match mats.and_then(|m| m.get(old.param)) {
                Some(m) => dst.copy_from_slice(&m.to_f32()),
                None => dst.copy_from_slice(old.param.of(p)),
            }
        }
        self.replace(Storage::Owned(data), layout, parts, None);
        self.source = WeightsSource::Copied;
        self.dtype = WeightDtype::F32;
    }

    /// Swaps in new weights, the layout they follow and the modules built on it.
    fn replace(
        &mut self,
        weights: Storage,
        layout: ParamLayout,
        modules: GptModules,
        packed: Option<PackedMatrices>,
    ) {
        self.weights = weights;
        self.layout = layout;
        self.modules = modules;
        self.packed = packed;
        self.panels = None;
    }

    /// Packs only the f32 LM head (the tied `wte`) in panels ([`Panels::Head`]), for products
    /// of a few rows (answers in `gpt eval`, batched decoding; see
    /// [`crate::kernels::panel_f32`]): a batch-8 decoding step then spends ≈ 2× less in the
    /// head. As in [`InferenceModel::pack_all_panels`], a memory-mapped file's pages of the head
    /// are dropped once packed (the embedding lookup brings back the rows it reads). Only the
    /// order of additions in the head differs from the unpacked product. No-op with packed
    /// matrices or panels already there.
    pub fn pack_head_panels(&mut self) {
        if self.packed.is_some() || self.panels.is_some() {
            return;
        }
        let head = &self.modules.head;
        let w = head.weight.of(self.params());
        let m = PanelsF32::pack(w, head.ic, head.oc, head.layout);
        let mut map = PanelMatrices::default();
        map.insert(head.weight, m);
        self.weights.release(head.weight.range());
        self.panels = Some(map);
    }

    /// Packs every f32 weight matrix (the layers' and the head) in panels, so that products of
    /// up to `F32_STREAM_ROWS` rows (decoding, short prompts) read each weight once, in order,
    /// with the accumulators in registers: batch-1 decoding of GPT-2 124M 1.27–1.38× the
    /// unpacked kernels, 4 rows 1.20–1.31×, a 64-token prompt 1.15–1.36×
    /// (`examples/decode_ab.rs panels`). A memory-mapped file's pages of each matrix are dropped
    /// once it is packed, so the resident size stays about that of the f32 weights; longer
    /// prompts run `gemm` on the original matrices and bring their pages back. No-op with packed
    /// matrices.
    pub fn pack_all_panels(&mut self) {
        if self.packed.is_some() {
            return;
        }
        let p = self.params();
        let mut map = PanelMatrices::default();
        for e in self.layout.entries() {
            if let Some(l) = packed_layout(e) {
                let (ic, oc) = in_out_dims(&e.shape, l);
                map.insert(e.param, PanelsF32::pack(e.param.of(p), ic, oc, l));
                self.weights.release(e.param.range());
            }
        }
        self.panels = Some(map);
    }

    /// Drops the matrices packed in panels: products then read the original matrices (for
    /// A/B measurements, `examples/decode_ab.rs panels`).
    pub fn drop_panels(&mut self) {
        self.panels = None;
    }

    /// Bytes of the panels that loading with `panels` packs for an f32 model of `config`
    /// ([`InferenceModel::load_for`]; `Panels::All`: every matrix [`packed_layout`] names, as
    /// [`InferenceModel::pack_all_panels`] does), outputs padded to whole panels. They come on top of the original matrices whenever a
    /// product of more than a few rows (a long prompt, an evaluation context) runs `gemm` and
    /// brings the originals' pages back, so memory checks count both.
    pub fn panel_bytes_of(config: &GptConfig, panels: Panels) -> Result<u64> {
        // The matrices do not depend on the context length; a sinusoidal table of the
        // config's (it may be the size the memory check is about to refuse) is not built.
        let mut shape_only = config.clone();
        shape_only.n_ctx = shape_only.n_ctx.min(1);
        let mut layout = ParamLayout::new();
        let modules = build(&shape_only, &mut layout)?;
        Ok(layout
            .entries()
            .iter()
            .filter(|e| match panels {
                Panels::All => true,
                Panels::Head => e.param == modules.head.weight,
                Panels::Off => false,
            })
            .filter_map(|e| {
                let (ic, oc) = in_out_dims(&e.shape, packed_layout(e)?);
                Some(PanelsF32::bytes_for(ic, oc) as u64)
            })
            .sum())
    }

    /// The dtype of the weight matrices.
    pub fn dtype(&self) -> WeightDtype {
        self.dtype
    }

    /// The weights the modules read: the f32 buffer and, for a bf16 or int8 model, the packed
    /// matrices.
    pub fn weights(&self) -> Weights<'_> {
        let w = Weights::new(self.params());
        let w = match &self.panels {
            Some(m) => w.with_panels(m),
            None => w,
        };
        match &self.packed {
            Some(m) => w.with_packed(m),
            None => w,
        }
    }

    /// An empty cache for `b` rows of up to `n_ctx` positions.
    pub fn new_cache(&self, b: usize) -> KvCache {
        self.new_cache_for(b, self.config.n_ctx)
    }

    /// An empty cache for `b` rows of up to `positions` positions (at most `n_ctx`): what a
    /// job that knows its length needs. A batch-8 cache of GPT-2's full 1,024 positions is
    /// 600 MB, and zeroing it cost a generation of 32 tokens more than its decoding did.
    pub fn new_cache_for(&self, b: usize, positions: usize) -> KvCache {
        KvCache::new(
            self.config.n_layer,
            b,
            positions.min(self.config.n_ctx),
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
        let c = self.config.n_embd;
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
        let p = self.weights();
        let x = sized(hidden, n * c);
        let start: Vec<usize> = (0..new.len()).map(|b| cache.len(b)).collect();
        self.modules.embed.forward_cached(p, x, ids, new, &start)?;
        self.modules.stack.forward_cached(p, x, new, cache, s)
    }

    /// Logits `(rows, V)` of hidden states `(rows, C)` through the LM head tied to `wte`.
    pub fn logits(&self, out: &mut Vec<f32>, hidden: &[f32]) {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let rows = hidden.len() / c;
        let out = sized(out, rows * v);
        self.modules
            .head
            .forward_infer(self.weights(), out, hidden, rows);
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
        check_logits(logits, self.config.vocab_size)
    }
}

/// An error naming the row and the token if `logits (R, V)` hold a NaN or ±inf: sampling from
/// them would pick an arbitrary token, and a score would be NaN.
pub fn check_logits(logits: &[f32], v: usize) -> Result<()> {
    match crate::kernels::vmath::first_nonfinite(logits) {
        None => Ok(()),
        Some(i) => Err(Error::NonFinite {
            what: format!(
                "the logit of token {} in row {}",
                i % v.max(1),
                i / v.max(1)
            ),
            value: logits[i],
            hint: "; the model's weights or activations are not finite (was it loaded with \
                   --allow-nonfinite?)"
                .into(),
        }),
    }
}

/// Whether `path` names a GGUF file (by its extension) rather than a model directory.
pub fn is_gguf(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        && !path.is_dir()
}

/// The dtype `--dtype FLAG` asks for with `--model model`: `auto` is the file's own precision
/// for a GGUF file (int8 for `Q8_0` matrices, else f32) and f32 for a safetensors directory;
/// any other value is parsed ([`WeightDtype::parse_for`]).
pub fn resolve_dtype(model: &Path, flag: &str) -> Result<WeightDtype> {
    if !flag.eq_ignore_ascii_case("auto") {
        return WeightDtype::parse_for("--dtype", flag);
    }
    if is_gguf(model) {
        let f = crate::io::gguf::GgufFile::open(model)?;
        return Ok(super::gguf_model::native_dtype(&f));
    }
    Ok(WeightDtype::F32)
}

/// The configuration of a model directory or GGUF file, reading only its `config.json` (or
/// the GGUF header).
pub fn load_config_of(model: &Path) -> Result<GptConfig> {
    if is_gguf(model) {
        let f = crate::io::gguf::GgufFile::open(model)?;
        return super::gguf_model::config_from_gguf(&f);
    }
    checkpoint::load_config(&resolve_dir(model))
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
    load_with_tokenizer_as(dir, WeightDtype::F32, NonFinite::Refuse)
}

/// [`load_with_tokenizer`] with the weight matrices in `dtype` and a choice of what
/// non-finite weights do (see [`InferenceModel::load_with`]).
pub fn load_with_tokenizer_as(
    dir: &Path,
    dtype: WeightDtype,
    nonfinite: NonFinite,
) -> Result<(
    InferenceModel,
    gpt_tokenizer::AnyTokenizer,
    std::path::PathBuf,
)> {
    load_with_tokenizer_for(dir, dtype, nonfinite, Panels::All)
}

/// [`load_with_tokenizer_as`] with a choice of the matrices packed in panels (see
/// [`InferenceModel::load_for`]).
pub fn load_with_tokenizer_for(
    dir: &Path,
    dtype: WeightDtype,
    nonfinite: NonFinite,
    panels: Panels,
) -> Result<(
    InferenceModel,
    gpt_tokenizer::AnyTokenizer,
    std::path::PathBuf,
)> {
    if is_gguf(dir) {
        let (model, tok) = super::gguf_model::load_gguf(dir, Some(dtype), nonfinite)?;
        return Ok((model, tok, dir.to_path_buf()));
    }
    let dir = resolve_dir(dir);
    let model = InferenceModel::load_for(&dir, dtype, nonfinite, panels)?;
    let tok = crate::io::load_tokenizer(&dir)?;
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
