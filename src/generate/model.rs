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
//! Shapes: packed rows `(N, C)` with `N = Σ new` (see [`crate::generate::kv_cache`]), logits
//! `(rows, V)`.

use super::kv_cache::{sized, KvCache, Scratch};
use crate::error::{Error, Result};
use crate::kernels::embedding::sinusoidal_positions;
use crate::kernels::layernorm::layernorm_forward;
use crate::kernels::matmul::WeightLayout;
use crate::model::checkpoint::{self, hf_family, hf_name, HfFamily};
use crate::model::config::{GptConfig, Positions};
use crate::model::Gpt;
use crate::nn::block::{Block, BlockConfig, NormPlacement};
use crate::nn::layernorm::LayerNorm;
use crate::nn::params::{Init, Param, ParamLayout};
use crate::nn::precision::{with_bf16_weights, Bf16Shadow, Precision};
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
}

/// A GPT ready for cached inference.
pub struct InferenceModel {
    /// The configuration.
    pub config: GptConfig,
    weights: Weights,
    /// The layout the modules read (file offsets when mapped).
    pub layout: ParamLayout,
    /// How the weights were obtained.
    pub source: WeightsSource,
    wte: Param,
    wpe: Option<Param>,
    sinusoid: Vec<f32>,
    /// The blocks `h.0 … h.{L-1}`.
    pub blocks: Vec<Block>,
    ln_f: Option<LayerNorm>,
    /// bf16 copy of the weights that the linear layers and the LM head stream instead of the
    /// f32 ones (`--dtype bf16`, see [`InferenceModel::set_dtype`]); `None` in f32.
    bf16: Option<Bf16Shadow>,
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

/// Converts one stored tensor to f32 (f32, f16 and bf16).
fn convert(view: &TensorView, dst: &mut [f32], name: &str, path: &Path) -> Result<()> {
    let raw = view.data();
    match view.dtype() {
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

impl InferenceModel {
    /// Loads a model directory: `config.json` (GPT-2 / OpenAI GPT / ours) and
    /// `model.safetensors` (f32, f16 or bf16). f32 files are used in place through a memory map.
    pub fn load(dir: &Path) -> Result<Self> {
        let config = checkpoint::load_config(dir)?;
        let path = dir.join(checkpoint::WEIGHTS_FILE);
        let file = std::fs::File::open(&path).map_err(|e| {
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
        // Validate every tensor (presence, shape, dtype) and note whether it can be used in place.
        let (header_end, in_place_offsets) = {
            let st = SafeTensors::deserialize(&mmap).map_err(|e| {
                msg(
                    &path,
                    format!(
                        "not a valid safetensors file ({e}); is it truncated or still downloading?"
                    ),
                )
            })?;
            let by_name: HashMap<String, TensorView> = st.tensors().into_iter().collect();
            let mut offsets = HashMap::new();
            let mut in_place = cfg!(target_endian = "little");
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
                let byte = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
                if view.dtype() != Dtype::F32
                    || !byte.is_multiple_of(4)
                    || !header_end.is_multiple_of(4)
                {
                    in_place = false;
                }
                offsets.insert(e.name.clone(), (byte - header_end) / 4);
            }
            (header_end, in_place.then_some(offsets))
        };
        if let Some(offsets) = in_place_offsets {
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
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| msg(&path, format!("not a valid safetensors file ({e})")))?;
        let by_name: HashMap<String, TensorView> = st.tensors().into_iter().collect();
        let mut data = vec![0.0f32; layout.total()];
        let mut dtypes = Vec::new();
        for e in layout.entries() {
            // Presence was checked above.
            let Some(view) = find(&by_name, &e.name, family) else {
                continue;
            };
            let d = format!("{:?}", view.dtype());
            if !dtypes.contains(&d) {
                dtypes.push(d);
            }
            convert(view, e.param.of_mut(&mut data), &e.name, &path)?;
        }
        Ok(Self::assemble(
            config,
            Weights::Owned(data),
            layout,
            WeightsSource::Converted(dtypes.join("+")),
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

    /// The flat parameter buffer the modules read.
    pub fn params(&self) -> &[f32] {
        self.weights.as_slice()
    }

    /// Bytes of weights read per decoded token: every parameter except the position table
    /// (one row of `wpe` is read per token), in f32, or in bf16 with `--dtype bf16` (the few
    /// f32 biases and LayerNorm gains are counted as bf16 too).
    pub fn bytes_per_token(&self) -> usize {
        let wpe = self.wpe.map_or(0, |w| w.len);
        let bytes = if self.bf16.is_some() { 2 } else { 4 };
        bytes * (self.config.num_params() - wpe)
    }

    /// Sets the dtype of the weight matrices that decoding streams. `Bf16` rounds the weights
    /// to bf16 once (round-to-nearest-even; a bf16 checkpoint, loaded exactly into f32, gets
    /// its own values back bit for bit) and the linear layers and the LM head then read those,
    /// half the bytes per token; LayerNorm, attention, biases and the embedding lookup stay f32.
    pub fn set_dtype(&mut self, dtype: Precision) {
        self.bf16 = match dtype {
            Precision::F32 => None,
            Precision::Bf16 => {
                let mut s = Bf16Shadow::default();
                s.refresh(self.params());
                Some(s)
            }
        };
    }

    /// The dtype of the streamed weight matrices.
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
            Some(s) => with_bf16_weights(&s.data, f),
            None => f(),
        }
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
        let wte = self.wte.of(p);
        let pos_table = match self.wpe {
            Some(w) => w.of(p),
            None => &self.sinusoid[..],
        };
        let mut r = 0;
        for (b, &nb) in new.iter().enumerate() {
            let start = cache.len(b);
            for i in 0..nb {
                let (id, pos) = (ids[r] as usize, start + i);
                let dst = &mut x[r * c..(r + 1) * c];
                let (e, q) = (
                    &wte[id * c..(id + 1) * c],
                    &pos_table[pos * c..(pos + 1) * c],
                );
                for ((d, a), b) in dst.iter_mut().zip(e).zip(q) {
                    *d = a + b;
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
        match &self.bf16 {
            Some(s) => {
                let w = &s.data[self.wte.range()];
                crate::kernels::bf16::linear_small_bf16(out, hidden, w, None, rows, c, v, head);
            }
            None => {
                let w = self.wte.of(self.params());
                super::gemv::linear_small(out, hidden, w, None, rows, c, v, head);
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
    let dir = resolve_dir(dir);
    let model = InferenceModel::load(&dir)?;
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
