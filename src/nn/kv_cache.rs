//! The key/value cache of incremental decoding, and the scratch buffers of the inference path.
//!
//! Layout: per layer, keys and values `(B, n_ctx, C)` preallocated once, with head `h` in
//! columns `h·HS..(h+1)·HS` (the layout the attention kernel reads, so row `b`'s first `len[b]`
//! positions are one contiguous `(len[b], C)` slice and no copy is needed to attend).
//!
//! Batches of different lengths: **per-row lengths**, not left padding. Each batch row `b` has its
//! own length `len[b]`; a forward step takes `new[b]` new tokens for each row (the prompt at
//! prefill, 1 when decoding, 0 for a finished row), packed one after another into `(Σ new, C)`.
//! Linear layers, LayerNorms and the MLP run once over all packed rows; attention runs per row
//! over that row's own keys. Why: positions stay exactly those of the unbatched sequence (no
//! position-id shifting as left padding needs), no compute is spent on padding, finished rows
//! cost nothing, and batched generation gives the tokens of one-by-one generation.
//!
//! Encoder-decoder decoders add a [`CrossKv`]: the keys and values of the memory (the encoder
//! output), computed once per source by `Block::prepare_memory` and read at every step.
//! Beam search reorders rows with [`LayerKvCache::reorder`].

use crate::error::{Error, Result};

/// Keys and values of cross-attention over a fixed memory, `(B, Tm, C)` each.
#[derive(Clone, Debug, Default)]
pub struct CrossKv {
    /// Keys `(B, Tm, C)`.
    pub k: Vec<f32>,
    /// Values `(B, Tm, C)`.
    pub v: Vec<f32>,
    /// Memory length `Tm`.
    pub t: usize,
    /// `(B, Tm)` key mask over the memory, 1 = attend (source padding).
    pub key_mask: Option<Vec<u8>>,
}

/// One layer's cache: self-attention keys/values and, for decoders with cross-attention, the
/// memory's keys/values.
#[derive(Clone, Debug)]
pub struct LayerKvCache {
    /// Keys `(B, cap, C)`.
    pub k: Vec<f32>,
    /// Values `(B, cap, C)`.
    pub v: Vec<f32>,
    /// Filled positions per row `(B)`.
    pub len: Vec<usize>,
    /// Positions per row (the model's `n_ctx`).
    pub cap: usize,
    /// Width `C`.
    pub c: usize,
    /// Cross-attention keys/values (encoder-decoder only).
    pub cross: Option<CrossKv>,
    spare: Vec<f32>,
}

impl LayerKvCache {
    /// An empty cache for `b` rows of up to `cap` positions of width `c`.
    pub fn new(b: usize, cap: usize, c: usize) -> Self {
        LayerKvCache {
            k: vec![0.0; b * cap * c],
            v: vec![0.0; b * cap * c],
            len: vec![0; b],
            cap,
            c,
            cross: None,
            spare: Vec::new(),
        }
    }

    /// Number of rows `B`.
    pub fn batch(&self) -> usize {
        self.len.len()
    }

    /// Forgets every position (the buffers are kept).
    pub fn clear(&mut self) {
        self.len.fill(0);
    }

    /// Errors unless every row has room for its `new` tokens.
    pub fn check_room(&self, new: &[usize]) -> Result<()> {
        if new.len() != self.batch() {
            return Err(Error::shape(
                "LayerKvCache",
                format!("new tokens for {} rows", new.len()),
                format!("a cache of {} rows", self.batch()),
            ));
        }
        for (b, (&l, &n)) in self.len.iter().zip(new).enumerate() {
            if l + n > self.cap {
                return Err(Error::Config {
                    field: "n_ctx".into(),
                    reason: format!(
                        "row {b}: {l} cached + {n} new tokens exceed the context of {}",
                        self.cap
                    ),
                });
            }
        }
        Ok(())
    }

    /// Offset of row `b`'s first position in [`LayerKvCache::k`] and [`LayerKvCache::v`].
    pub fn row_start(&self, b: usize) -> usize {
        b * self.cap * self.c
    }

    /// Row `b`'s keys and values for its first `t` positions, each `(t, C)`.
    pub fn row(&self, b: usize, t: usize) -> (&[f32], &[f32]) {
        let start = self.row_start(b);
        (
            &self.k[start..start + t * self.c],
            &self.v[start..start + t * self.c],
        )
    }

    /// Writes `k`, `v` `(n, C)` at positions `len[b]..len[b]+n` of row `b` (lengths are not
    /// advanced: see [`LayerKvCache::advance`]).
    pub fn write(&mut self, b: usize, k: &[f32], v: &[f32]) {
        let c = self.c;
        let start = (b * self.cap + self.len[b]) * c;
        self.k[start..start + k.len()].copy_from_slice(k);
        self.v[start..start + v.len()].copy_from_slice(v);
    }

    /// Adds `new[b]` to each row's length.
    pub fn advance(&mut self, new: &[usize]) {
        for (l, &n) in self.len.iter_mut().zip(new) {
            *l += n;
        }
    }

    /// Beam search: row `i` becomes a copy of old row `src[i]` (self-attention and memory).
    /// `src` may repeat rows and may change the batch size.
    pub fn reorder(&mut self, src: &[usize]) -> Result<()> {
        let (cap, c, old_b) = (self.cap, self.c, self.batch());
        if let Some(&bad) = src.iter().find(|&&s| s >= old_b) {
            return Err(Error::usage(
                "LayerKvCache::reorder",
                format!("row {bad} is out of range for a batch of {old_b}"),
            ));
        }
        let row = cap * c;
        for buf in [&mut self.k, &mut self.v] {
            // Positions past a row's length are never read, so the spare buffer is not cleared.
            self.spare.resize(src.len() * row, 0.0);
            for (i, &s) in src.iter().enumerate() {
                let n = self.len[s] * c;
                self.spare[i * row..i * row + n].copy_from_slice(&buf[s * row..s * row + n]);
            }
            std::mem::swap(buf, &mut self.spare);
        }
        self.len = src.iter().map(|&s| self.len[s]).collect();
        if let Some(x) = &mut self.cross {
            let row = x.t * c;
            x.k = gather_rows(&x.k, src, row);
            x.v = gather_rows(&x.v, src, row);
            if let Some(m) = &x.key_mask {
                x.key_mask = Some(gather_rows(m, src, x.t));
            }
        }
        Ok(())
    }
}

/// Rows `src[0], src[1], ...` of `buf` (rows of `row` elements), copied slice by slice.
fn gather_rows<T: Copy>(buf: &[T], src: &[usize], row: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(src.len() * row);
    for &s in src {
        out.extend_from_slice(&buf[s * row..(s + 1) * row]);
    }
    out
}

/// A whole model's cache: one [`LayerKvCache`] per block.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// One per layer, `h.0` first.
    pub layers: Vec<LayerKvCache>,
}

impl KvCache {
    /// An empty cache for `n_layer` layers, `b` rows of up to `cap` positions of width `c`.
    pub fn new(n_layer: usize, b: usize, cap: usize, c: usize) -> Self {
        KvCache {
            layers: (0..n_layer).map(|_| LayerKvCache::new(b, cap, c)).collect(),
        }
    }

    /// Filled positions of row `b` (the position of its next token).
    pub fn len(&self, b: usize) -> usize {
        self.layers.first().map_or(0, |l| l.len[b])
    }

    /// Whether no row holds any position.
    pub fn is_empty(&self) -> bool {
        self.layers
            .first()
            .is_none_or(|l| l.len.iter().all(|&x| x == 0))
    }

    /// Number of rows.
    pub fn batch(&self) -> usize {
        self.layers.first().map_or(0, |l| l.batch())
    }

    /// Positions per row.
    pub fn cap(&self) -> usize {
        self.layers.first().map_or(0, |l| l.cap)
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(LayerKvCache::clear);
    }

    /// Forgets row `b`'s positions only.
    pub fn clear_row(&mut self, b: usize) {
        for l in &mut self.layers {
            l.len[b] = 0;
        }
    }

    /// Makes row `dst` a copy of row `src` (its filled positions and length): `n > 1`
    /// completions of one prompt share one prefill.
    pub fn copy_row(&mut self, src: usize, dst: usize) {
        if src == dst {
            return;
        }
        for l in &mut self.layers {
            let (row, n) = (l.cap * l.c, l.len[src] * l.c);
            l.k.copy_within(src * row..src * row + n, dst * row);
            l.v.copy_within(src * row..src * row + n, dst * row);
            l.len[dst] = l.len[src];
        }
    }

    /// Filled positions over all rows, and the positions the cache holds (`B · cap`).
    pub fn usage(&self) -> (usize, usize) {
        self.layers
            .first()
            .map_or((0, 0), |l| (l.len.iter().sum(), l.len.len() * l.cap))
    }

    /// Beam search reorder of every layer (see [`LayerKvCache::reorder`]).
    pub fn reorder(&mut self, src: &[usize]) -> Result<()> {
        self.layers.iter_mut().try_for_each(|l| l.reorder(src))
    }
}

/// Scratch buffers of the inference path, grown on demand and reused across steps (nothing is
/// kept for a backward pass). Shapes for `N` packed rows.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    /// LayerNorm output `(N, C)`.
    pub ln: Vec<f32>,
    /// LayerNorm statistics `(N)` (required outputs of the kernel, unused afterwards).
    pub mean: Vec<f32>,
    /// LayerNorm statistics `(N)`.
    pub rstd: Vec<f32>,
    /// Fused QKV projection `(N, 3C)` (cross-attention: queries `(N, C)`).
    pub packed: Vec<f32>,
    /// One row's queries `(n, C)`, keys and values `(n, C)` each.
    pub q: Vec<f32>,
    /// Keys of one row's new tokens.
    pub k: Vec<f32>,
    /// Values of one row's new tokens.
    pub v: Vec<f32>,
    /// Attention output before `c_proj`, `(N, C)`.
    pub att: Vec<f32>,
    /// Log-sum-exp per head and query (kernel output, unused).
    pub lse: Vec<f32>,
    /// Sublayer output `(N, C)`.
    pub proj: Vec<f32>,
    /// MLP hidden activations `(N, 4C)`.
    pub fc: Vec<f32>,
}

/// Resizes `buf` to `n` elements (contents unspecified).
pub(crate) fn sized(buf: &mut Vec<f32>, n: usize) -> &mut [f32] {
    buf.resize(n, 0.0);
    &mut buf[..n]
}
