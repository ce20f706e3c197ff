//! The Transformer block: self-attention, optional cross-attention, MLP, residuals and
//! LayerNorms, in either placement.
//!
//! - Pre-LN (GPT-2): `h = x + attn(ln_1(x))`, [`h = h + cross(ln_cross_attn(h), mem)`],
//!   `y = h + mlp(ln_2(h))`.
//! - Post-LN (GPT-1, "Attention Is All You Need"): `h = ln_1(x + attn(x))`,
//!   [`h = ln_cross_attn(h + cross(h, mem))`], `y = ln_2(h + mlp(h))`.
//!
//! One struct serves the GPT decoder (causal, no cross), the Transformer encoder (non-causal,
//! key-padding mask) and its decoder (causal + cross-attention). Backward reads as the forward
//! in reverse; all activations and scratch live in the block and are sized once per `(B, T)`.

mod cached;

use super::attention::{AttentionConfig, MultiHeadAttention};
use super::layernorm::LayerNorm;
use super::mlp::{Activation, Mlp, MlpConfig};
use super::params::ParamLayout;
use crate::error::Result;
use crate::kernels::residual::{add_inplace, residual_forward};
use crate::nn::weights::Weights;
use crate::rng::Rng;

/// Where the LayerNorms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormPlacement {
    /// Normalise each sublayer's input (GPT-2; the model adds a final LayerNorm).
    Pre,
    /// Normalise after each residual addition (GPT-1, the original Transformer).
    Post,
}

/// Hyper-parameters of a block.
#[derive(Clone, Copy, Debug)]
pub struct BlockConfig {
    /// Model width `C`.
    pub n_embd: usize,
    /// Heads; must divide `C`.
    pub n_head: usize,
    /// MLP hidden width.
    pub hidden: usize,
    /// Biases in linear layers.
    pub bias: bool,
    /// MLP non-linearity.
    pub activation: Activation,
    /// Residual dropout.
    pub dropout: f32,
    /// LayerNorm placement.
    pub norm: NormPlacement,
    /// LayerNorm epsilon.
    pub ln_eps: f32,
    /// Causal self-attention (decoders).
    pub causal: bool,
    /// Add cross-attention over a memory (encoder-decoder decoders).
    pub cross: bool,
    /// Init std of input projections.
    pub std: f32,
    /// Init std of residual output projections.
    pub proj_std: f32,
}

/// The cross-attention over a memory (the encoder output) and its mask.
#[derive(Clone, Copy, Debug)]
pub struct Memory<'a> {
    /// `(B, Tk, C)`.
    pub data: &'a [f32],
    /// Memory length `Tk`.
    pub t: usize,
    /// `(B, Tk)` key mask, 1 = attend.
    pub key_mask: Option<&'a [u8]>,
}

/// What a block reads in forward and again in backward.
#[derive(Clone, Copy, Debug)]
pub struct BlockInput<'a> {
    /// Input `(B, T, C)`.
    pub x: &'a [f32],
    /// Batch size.
    pub b: usize,
    /// Sequence length.
    pub t: usize,
    /// `(B, T)` self-attention key mask (padding), 1 = attend.
    pub key_mask: Option<&'a [u8]>,
    /// `(B, T)` positions of packed rows (causal self-attention only): each token's position
    /// inside its own example, 0 at its first token; self-attention stays inside each example.
    pub positions: Option<&'a [u32]>,
    /// Encoder output for cross-attention.
    pub memory: Option<Memory<'a>>,
}

/// A Transformer block and its activations.
#[derive(Clone, Debug)]
pub struct Block {
    /// First LayerNorm (`h.{i}.ln_1`).
    pub ln_1: LayerNorm,
    /// Self-attention (`h.{i}.attn`).
    pub attn: MultiHeadAttention,
    /// Cross-attention LayerNorm and module (`ln_cross_attn`, `crossattention`).
    pub cross: Option<(LayerNorm, MultiHeadAttention)>,
    /// Second LayerNorm (`h.{i}.ln_2`).
    pub ln_2: LayerNorm,
    /// Feed-forward (`h.{i}.mlp`).
    pub mlp: Mlp,
    norm: NormPlacement,
    c: usize,
    /// Residual sums after self-attention, cross-attention and MLP, each `(N, C)`.
    r1: Vec<f32>,
    r2: Vec<f32>,
    r3: Vec<f32>,
    s1: Vec<f32>,
    s2: Vec<f32>,
    s3: Vec<f32>,
}

fn zeroed(buf: &mut Vec<f32>, n: usize) {
    buf.clear();
    buf.resize(n, 0.0);
}

impl Block {
    /// Registers the block's parameters under `prefix` (e.g. `h.3`).
    pub fn new(params: &mut ParamLayout, prefix: &str, cfg: &BlockConfig) -> Result<Self> {
        let c = cfg.n_embd;
        let acfg = AttentionConfig {
            n_embd: c,
            n_head: cfg.n_head,
            bias: cfg.bias,
            dropout: cfg.dropout,
            std: cfg.std,
            proj_std: cfg.proj_std,
        };
        let ln_1 = LayerNorm::new(params, &format!("{prefix}.ln_1"), c, cfg.ln_eps)?;
        let attn =
            MultiHeadAttention::new_self(params, &format!("{prefix}.attn"), &acfg, cfg.causal)?;
        let cross = if cfg.cross {
            Some((
                LayerNorm::new(params, &format!("{prefix}.ln_cross_attn"), c, cfg.ln_eps)?,
                MultiHeadAttention::new_cross(params, &format!("{prefix}.crossattention"), &acfg)?,
            ))
        } else {
            None
        };
        let ln_2 = LayerNorm::new(params, &format!("{prefix}.ln_2"), c, cfg.ln_eps)?;
        let mcfg = MlpConfig {
            n_embd: c,
            hidden: cfg.hidden,
            bias: cfg.bias,
            activation: cfg.activation,
            dropout: cfg.dropout,
            std: cfg.std,
            proj_std: cfg.proj_std,
        };
        let mlp = Mlp::new(params, &format!("{prefix}.mlp"), &mcfg)?;
        Ok(Block {
            ln_1,
            attn,
            cross,
            ln_2,
            mlp,
            norm: cfg.norm,
            c,
            r1: Vec::new(),
            r2: Vec::new(),
            r3: Vec::new(),
            s1: Vec::new(),
            s2: Vec::new(),
            s3: Vec::new(),
        })
    }

    /// The output `(B, T, C)` of the last forward.
    pub fn output(&self) -> &[f32] {
        match self.norm {
            NormPlacement::Pre => &self.r3,
            NormPlacement::Post => &self.ln_2.out,
        }
    }

    /// Forward; the result is in [`Block::output`].
    pub fn forward(&mut self, p: Weights, inp: &BlockInput, train: bool, rng: &mut Rng) {
        let (b, t, c) = (inp.b, inp.t, self.c);
        let n = b * t;
        let x = inp.x;
        let mem = inp.memory.map(|m| (m.data, m.t));
        let mem_mask = inp.memory.and_then(|m| m.key_mask);
        for buf in [&mut self.r1, &mut self.r2, &mut self.r3] {
            buf.resize(n * c, 0.0);
        }
        match self.norm {
            NormPlacement::Pre => {
                self.ln_1.forward(p, x, n);
                let (km, pos) = (inp.key_mask, inp.positions);
                self.attn
                    .forward(p, &self.ln_1.out, None, km, pos, b, t, train, rng);
                residual_forward(&mut self.r1, x, &self.attn.out);
                let h = if let Some((ln_c, cross)) = &mut self.cross {
                    ln_c.forward(p, &self.r1, n);
                    cross.forward(p, &ln_c.out, mem, mem_mask, None, b, t, train, rng);
                    residual_forward(&mut self.r2, &self.r1, &cross.out);
                    &self.r2
                } else {
                    &self.r1
                };
                self.ln_2.forward(p, h, n);
                self.mlp.forward(p, &self.ln_2.out, n, train, rng);
                let h = if self.cross.is_some() {
                    &self.r2
                } else {
                    &self.r1
                };
                residual_forward(&mut self.r3, h, &self.mlp.out);
            }
            NormPlacement::Post => {
                let (km, pos) = (inp.key_mask, inp.positions);
                self.attn.forward(p, x, None, km, pos, b, t, train, rng);
                residual_forward(&mut self.r1, x, &self.attn.out);
                self.ln_1.forward(p, &self.r1, n);
                if let Some((ln_c, cross)) = &mut self.cross {
                    cross.forward(p, &self.ln_1.out, mem, mem_mask, None, b, t, train, rng);
                    residual_forward(&mut self.r2, &self.ln_1.out, &cross.out);
                    ln_c.forward(p, &self.r2, n);
                }
                let h = match &self.cross {
                    Some((ln_c, _)) => &ln_c.out,
                    None => &self.ln_1.out,
                };
                self.mlp.forward(p, h, n, train, rng);
                residual_forward(&mut self.r3, h, &self.mlp.out);
                self.ln_2.forward(p, &self.r3, n);
            }
        }
    }

    /// Backward of the last forward given `dy = ∂L/∂output`: accumulates parameter gradients into
    /// `g`, `dx += ∂L/∂x` and `dmemory += ∂L/∂memory` for cross-attention blocks.
    pub fn backward(
        &mut self,
        p: Weights,
        g: &mut [f32],
        inp: &BlockInput,
        dy: &[f32],
        dx: &mut [f32],
        dmemory: Option<&mut [f32]>,
    ) {
        let n = inp.b * inp.t;
        let c = self.c;
        let x = inp.x;
        let mem = inp.memory.map(|m| m.data);
        let mem_mask = inp.memory.and_then(|m| m.key_mask);
        let (mut s1, mut s2, mut s3) = (
            std::mem::take(&mut self.s1),
            std::mem::take(&mut self.s2),
            std::mem::take(&mut self.s3),
        );
        match self.norm {
            NormPlacement::Pre => {
                // y = h + mlp(ln_2(h)):  s1 = ∂L/∂ln_2.out, s2 = ∂L/∂h
                zeroed(&mut s1, n * c);
                let h2 = if self.cross.is_some() {
                    &self.r2
                } else {
                    &self.r1
                };
                self.mlp.backward(p, g, &self.ln_2.out, dy, &mut s1);
                s2.clear();
                s2.extend_from_slice(dy);
                self.ln_2.backward(p, g, &mut s2, &s1, h2);
                if let Some((ln_c, cross)) = &mut self.cross {
                    // h2 = h1 + cross(ln_c(h1)): s1 = ∂L/∂ln_c.out, s3 = ∂L/∂h1
                    zeroed(&mut s1, n * c);
                    let h = &ln_c.out;
                    cross.backward(p, g, h, mem, mem_mask, None, &s2, &mut s1, dmemory);
                    s3.clear();
                    s3.extend_from_slice(&s2);
                    ln_c.backward(p, g, &mut s3, &s1, &self.r1);
                    std::mem::swap(&mut s2, &mut s3);
                }
                // h1 = x + attn(ln_1(x)): s1 = ∂L/∂ln_1.out
                zeroed(&mut s1, n * c);
                let (km, pos) = (inp.key_mask, inp.positions);
                let h = &self.ln_1.out;
                self.attn
                    .backward(p, g, h, None, km, pos, &s2, &mut s1, None);
                add_inplace(dx, &s2);
                self.ln_1.backward(p, g, dx, &s1, x);
            }
            NormPlacement::Post => {
                // y = ln_2(r3), r3 = h + mlp(h): s1 = ∂L/∂r3, s2 = ∂L/∂h
                zeroed(&mut s1, n * c);
                self.ln_2.backward(p, g, &mut s1, dy, &self.r3);
                s2.clear();
                s2.extend_from_slice(&s1);
                let h = match &self.cross {
                    Some((ln_c, _)) => &ln_c.out,
                    None => &self.ln_1.out,
                };
                self.mlp.backward(p, g, h, &s1, &mut s2);
                if let Some((ln_c, cross)) = &mut self.cross {
                    // h = ln_c(r2), r2 = h1 + cross(h1): s1 = ∂L/∂r2, s3 = ∂L/∂h1
                    zeroed(&mut s1, n * c);
                    ln_c.backward(p, g, &mut s1, &s2, &self.r2);
                    s3.clear();
                    s3.extend_from_slice(&s1);
                    let h = &self.ln_1.out;
                    cross.backward(p, g, h, mem, mem_mask, None, &s1, &mut s3, dmemory);
                    std::mem::swap(&mut s2, &mut s3);
                }
                // h1 = ln_1(r1), r1 = x + attn(x): s1 = ∂L/∂r1
                zeroed(&mut s1, n * c);
                self.ln_1.backward(p, g, &mut s1, &s2, &self.r1);
                add_inplace(dx, &s1);
                let (km, pos) = (inp.key_mask, inp.positions);
                self.attn.backward(p, g, x, None, km, pos, &s1, dx, None);
            }
        }
        self.s1 = s1;
        self.s2 = s2;
        self.s3 = s3;
    }
}
