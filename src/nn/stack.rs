//! A stack of [`Block`]s with an optional final LayerNorm: the GPT trunk, the encoder, the
//! decoder. Two modes over the same modules: full sequences ([`Stack::forward`] keeping
//! activations, [`Stack::backward`]) and incremental decoding over a [`KvCache`]
//! ([`Stack::forward_cached`], nothing kept for backward).

use super::block::{Block, BlockConfig, BlockInput, Memory};
use super::kv_cache::{KvCache, Scratch};
use super::layernorm::LayerNorm;
use super::params::ParamLayout;
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::kernels::residual::add_inplace;
use crate::rng::Rng;
use std::fmt;
use std::sync::Arc;

/// Told during [`Stack::backward`], after each block, that the block's parameter gradients are
/// final: `(block index, the whole gradient buffer)`. Data parallelism starts averaging them
/// while backward goes on with the earlier blocks ([`crate::dist::reducer`]). Empty by default.
#[derive(Clone, Default)]
pub struct GradHook(Option<GradFn>);

/// A shared callback told `(index or offset, the whole gradient buffer)` during backward.
pub type GradFn = Arc<dyn Fn(usize, &[f32]) + Send + Sync>;

impl GradHook {
    /// A hook that calls `f`.
    pub fn new(f: impl Fn(usize, &[f32]) + Send + Sync + 'static) -> Self {
        GradHook(Some(Arc::new(f)))
    }

    fn call(&self, block: usize, grad: &[f32]) {
        if let Some(f) = &self.0 {
            f(block, grad);
        }
    }
}

impl fmt::Debug for GradHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "GradHook(set)"
        } else {
            "GradHook(none)"
        })
    }
}

/// A stack of blocks with an optional final LayerNorm: the encoder or the decoder.
#[derive(Clone, Debug)]
pub struct Stack {
    /// The layers `{prefix}.h.{i}`.
    pub blocks: Vec<Block>,
    /// Final LayerNorm (pre-LN only).
    pub ln_f: Option<LayerNorm>,
    /// Called after each block's backward ([`GradHook`]).
    pub grad_hook: GradHook,
    c: usize,
    dx: Vec<f32>,
    dy: Vec<f32>,
}

/// What a stack reads besides its input: the padding mask of its own keys and, for the
/// decoder, the memory.
#[derive(Clone, Copy, Debug)]
pub struct StackInput<'a> {
    /// Input `(B, T, C)`.
    pub x: &'a [f32],
    /// Batch size.
    pub b: usize,
    /// Length.
    pub t: usize,
    /// `(B, T)` key mask of the stack's self-attention.
    pub key_mask: Option<&'a [u8]>,
    /// `(B, T)` positions of packed rows (see [`BlockInput::positions`]).
    pub positions: Option<&'a [u32]>,
    /// Encoder output for the decoder's cross-attention.
    pub memory: Option<Memory<'a>>,
}

impl Stack {
    /// Registers `n_layer` blocks `{prefix}h.{i}` and, with `final_ln`, `{prefix}ln_f`
    /// (`prefix` is empty for a GPT, `encoder.` / `decoder.` for the encoder-decoder).
    pub fn new(
        layout: &mut ParamLayout,
        prefix: &str,
        cfg: &BlockConfig,
        n_layer: usize,
        final_ln: bool,
    ) -> Result<Self> {
        let blocks = (0..n_layer)
            .map(|i| Block::new(layout, &format!("{prefix}h.{i}"), cfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = if final_ln {
            Some(LayerNorm::new(
                layout,
                &format!("{prefix}ln_f"),
                cfg.n_embd,
                cfg.ln_eps,
            )?)
        } else {
            None
        };
        Ok(Stack {
            blocks,
            ln_f,
            grad_hook: GradHook::default(),
            c: cfg.n_embd,
            dx: Vec::new(),
            dy: Vec::new(),
        })
    }

    /// A stack with no layers (a placeholder while the real one is borrowed).
    pub fn empty() -> Self {
        Stack {
            blocks: Vec::new(),
            ln_f: None,
            grad_hook: GradHook::default(),
            c: 0,
            dx: Vec::new(),
            dy: Vec::new(),
        }
    }

    /// Output `(B, T, C)` of the last forward.
    pub fn output(&self) -> &[f32] {
        match &self.ln_f {
            Some(ln) => &ln.out,
            None => self.blocks.last().map_or(&[][..], |b| b.output()),
        }
    }

    fn block_input<'a>(blocks: &'a [Block], l: usize, inp: &StackInput<'a>) -> BlockInput<'a> {
        BlockInput {
            x: if l == 0 {
                inp.x
            } else {
                blocks[l - 1].output()
            },
            b: inp.b,
            t: inp.t,
            key_mask: inp.key_mask,
            positions: inp.positions,
            memory: inp.memory,
        }
    }

    /// Forward; the result is in [`Stack::output`].
    pub fn forward(&mut self, p: Weights, inp: &StackInput, train: bool, rng: &mut Rng) {
        for l in 0..self.blocks.len() {
            let (prev, rest) = self.blocks.split_at_mut(l);
            let bin = Self::block_input(prev, l, inp);
            rest[0].forward(p, &bin, train, rng);
        }
        if let Some(ln) = &mut self.ln_f {
            let last = self.blocks.last().map_or(inp.x, |b| b.output());
            ln.forward(p, last, inp.b * inp.t);
        }
    }

    /// Backward of the last forward from `dy = ∂L/∂output`: parameter gradients into `g`,
    /// `dx += ∂L/∂x`, `dmemory += ∂L/∂memory` (decoder).
    pub fn backward(
        &mut self,
        p: Weights,
        g: &mut [f32],
        inp: &StackInput,
        dy: &[f32],
        dx: &mut [f32],
        mut dmemory: Option<&mut [f32]>,
    ) {
        let n = inp.b * inp.t * self.c;
        let (mut cur, mut next) = (std::mem::take(&mut self.dy), std::mem::take(&mut self.dx));
        cur.clear();
        match &self.ln_f {
            Some(ln) => {
                cur.resize(n, 0.0);
                let last = self.blocks.last().map_or(inp.x, |b| b.output());
                ln.backward(p, g, &mut cur, dy, last);
            }
            None => cur.extend_from_slice(dy),
        }
        for l in (0..self.blocks.len()).rev() {
            let (prev, rest) = self.blocks.split_at_mut(l);
            let bin = Self::block_input(prev, l, inp);
            if l == 0 {
                rest[0].backward(p, g, &bin, &cur, dx, dmemory.as_deref_mut());
            } else {
                next.clear();
                next.resize(n, 0.0);
                rest[0].backward(p, g, &bin, &cur, &mut next, dmemory.as_deref_mut());
                std::mem::swap(&mut cur, &mut next);
            }
            self.grad_hook.call(l, g);
        }
        if self.blocks.is_empty() {
            add_inplace(dx, &cur);
        }
        self.dy = cur;
        self.dx = next;
    }
}

impl Stack {
    /// Computes every cross-attention block's keys and values of `memory` into `cache` (once
    /// per source; decoders with cross-attention only).
    pub fn prepare_memory(
        &self,
        p: Weights,
        cache: &mut KvCache,
        memory: &Memory,
        b: usize,
    ) -> Result<()> {
        for (block, layer) in self.blocks.iter().zip(&mut cache.layers) {
            block.prepare_memory(p, layer, memory, b)?;
        }
        Ok(())
    }

    /// One cached step over packed rows `x (N, C)`, `N = Σ new`, updated in place to the
    /// stack's output (after the final LayerNorm). Appends every layer's keys and values to
    /// `cache` and advances its lengths.
    pub fn forward_cached(
        &self,
        p: Weights,
        x: &mut [f32],
        new: &[usize],
        cache: &mut KvCache,
        s: &mut Scratch,
    ) -> Result<()> {
        if cache.layers.len() != self.blocks.len() {
            return Err(Error::shape(
                "Stack::forward_cached",
                format!("a cache of {} layers", cache.layers.len()),
                format!("{} blocks", self.blocks.len()),
            ));
        }
        for (block, layer) in self.blocks.iter().zip(&mut cache.layers) {
            block.forward_cached(p, x, new, layer, s)?;
        }
        if let Some(ln) = &self.ln_f {
            let n = x.len() / self.c.max(1);
            ln.forward_infer_inplace(p, x, n, s);
        }
        Ok(())
    }
}
