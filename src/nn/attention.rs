//! Multi-head attention module: self-attention (GPT-2's fused `c_attn`) and cross-attention
//! (queries from the decoder, keys and values from an encoder's output), with the output
//! projection `c_proj` and residual dropout, over the fused kernel in
//! [`crate::kernels::attention`].
//!
//! Parameter names follow Hugging Face GPT-2: self-attention `attn.c_attn (C, 3C)`,
//! `attn.c_proj (C, C)`; cross-attention `crossattention.q_attn (C, C)`,
//! `crossattention.c_attn (C, 2C)` (keys and values), `crossattention.c_proj`. Weights are stored
//! in `Conv1D` orientation `(IC, OC)` so GPT-2 checkpoints load in place.
//!
//! With a bf16 shadow in the [`Weights`](super::weights::Weights) (mixed precision) the attention's block products
//! run in bf16 with f32 accumulation as well; the softmax and its statistics stay f32.
//!
//! Not implemented: dropout on the attention probabilities (GPT-2's `attn_pdrop`), since the
//! fused kernel never materialises them; checkpoints record `attn_pdrop = 0`. Residual dropout
//! after `c_proj` is applied.

mod cached;

use super::dropout::Dropout;
use super::linear::Linear;
use super::params::ParamLayout;
use crate::error::Result;
use crate::kernels::attention::{
    attention_backward_masked, attention_backward_masked_bf16, attention_forward_masked,
    attention_forward_masked_bf16, AttentionDims, AttentionMask,
};
use crate::kernels::matmul::WeightLayout;
use crate::nn::weights::Weights;
use crate::rng::Rng;

/// Hyper-parameters of an attention module.
#[derive(Clone, Copy, Debug)]
pub struct AttentionConfig {
    /// Model width `C`.
    pub n_embd: usize,
    /// Number of heads `NH`; must divide `C`.
    pub n_head: usize,
    /// Whether linear layers have biases.
    pub bias: bool,
    /// Residual dropout after `c_proj`.
    pub dropout: f32,
    /// Init std of `c_attn`/`q_attn`.
    pub std: f32,
    /// Init std of `c_proj` (GPT-2 scales it by `1/sqrt(2·n_layer)`).
    pub proj_std: f32,
}

/// Where keys and values come from.
#[derive(Clone, Debug)]
enum Projections {
    /// `c_attn: C → 3C` on the input.
    SelfAttention { c_attn: Linear },
    /// `q_attn: C → C` on the input, `c_attn: C → 2C` on the memory.
    Cross { q_attn: Linear, kv_attn: Linear },
}

/// Multi-head attention with its activations, sized once per `(B, Tq, Tk)`.
#[derive(Clone, Debug)]
pub struct MultiHeadAttention {
    proj: Projections,
    /// Output projection `C → C`.
    pub c_proj: Linear,
    /// Residual dropout on the output.
    pub drop: Dropout,
    c: usize,
    nh: usize,
    dims: AttentionDims,
    causal: bool,
    /// `(N, 3C)` for self-attention, `(B·Tk, 2C)` for cross-attention (its keys and values).
    packed: Vec<f32>,
    /// Queries `(B, Tq, C)` (cross-attention: also the `q_attn` output).
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output before `c_proj`, `(B, Tq, C)`.
    att: Vec<f32>,
    /// Log-sum-exp per `(B, NH, Tq)`.
    lse: Vec<f32>,
    /// Output `(B, Tq, C)` of the last forward.
    pub out: Vec<f32>,
    // Backward scratch.
    datt: Vec<f32>,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    dpacked: Vec<f32>,
    dproj: Vec<f32>,
}

fn resize(buf: &mut Vec<f32>, n: usize) {
    buf.resize(n, 0.0);
}

impl MultiHeadAttention {
    fn with_proj(
        params: &mut ParamLayout,
        prefix: &str,
        cfg: &AttentionConfig,
        proj: Projections,
        causal: bool,
    ) -> Result<Self> {
        let c = cfg.n_embd;
        let c_proj = Linear::new(
            params,
            &format!("{prefix}.c_proj"),
            c,
            c,
            cfg.bias,
            WeightLayout::InOut,
            cfg.proj_std,
        )?;
        Ok(MultiHeadAttention {
            proj,
            c_proj,
            drop: Dropout::new(cfg.dropout),
            c,
            nh: cfg.n_head,
            dims: AttentionDims {
                b: 0,
                tq: 0,
                tk: 0,
                nh: cfg.n_head,
                hs: c / cfg.n_head,
            },
            causal,
            packed: Vec::new(),
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            att: Vec::new(),
            lse: Vec::new(),
            out: Vec::new(),
            datt: Vec::new(),
            dq: Vec::new(),
            dk: Vec::new(),
            dv: Vec::new(),
            dpacked: Vec::new(),
            dproj: Vec::new(),
        })
    }

    /// Self-attention registering `{prefix}.c_attn` and `{prefix}.c_proj`; `causal` for decoders.
    pub fn new_self(
        params: &mut ParamLayout,
        prefix: &str,
        cfg: &AttentionConfig,
        causal: bool,
    ) -> Result<Self> {
        super::check_heads(cfg.n_embd, cfg.n_head)?;
        let c = cfg.n_embd;
        let c_attn = Linear::new(
            params,
            &format!("{prefix}.c_attn"),
            c,
            3 * c,
            cfg.bias,
            WeightLayout::InOut,
            cfg.std,
        )?;
        Self::with_proj(
            params,
            prefix,
            cfg,
            Projections::SelfAttention { c_attn },
            causal,
        )
    }

    /// Cross-attention registering `{prefix}.q_attn`, `{prefix}.c_attn` (keys and values) and
    /// `{prefix}.c_proj`.
    pub fn new_cross(
        params: &mut ParamLayout,
        prefix: &str,
        cfg: &AttentionConfig,
    ) -> Result<Self> {
        super::check_heads(cfg.n_embd, cfg.n_head)?;
        let c = cfg.n_embd;
        let q_attn = Linear::new(
            params,
            &format!("{prefix}.q_attn"),
            c,
            c,
            cfg.bias,
            WeightLayout::InOut,
            cfg.std,
        )?;
        let kv_attn = Linear::new(
            params,
            &format!("{prefix}.c_attn"),
            c,
            2 * c,
            cfg.bias,
            WeightLayout::InOut,
            cfg.std,
        )?;
        Self::with_proj(
            params,
            prefix,
            cfg,
            Projections::Cross { q_attn, kv_attn },
            false,
        )
    }

    /// Whether this is a cross-attention module.
    pub fn is_cross(&self) -> bool {
        matches!(self.proj, Projections::Cross { .. })
    }

    /// Forward for `x (B, Tq, C)`. Cross-attention reads keys and values from
    /// `memory (B, Tk, C)`; self-attention ignores `memory` (Tk = Tq). `key_mask (B, Tk)` marks
    /// keys to attend (1) or skip (0). `positions (B, Tq)` packs several examples per row
    /// (causal self-attention only): each token's position inside its own example, 0 at its
    /// first token, and a query attends only the keys of its own example (the document mask of
    /// [`crate::kernels::attention`]). The result is in `self.out`.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        p: Weights,
        x: &[f32],
        memory: Option<(&[f32], usize)>,
        key_mask: Option<&[u8]>,
        positions: Option<&[u32]>,
        b: usize,
        tq: usize,
        train: bool,
        rng: &mut Rng,
    ) {
        let c = self.c;
        let n = b * tq;
        let tk = match (&self.proj, memory) {
            (Projections::Cross { .. }, Some((_, tk))) => tk,
            (Projections::Cross { .. }, None) => panic!("cross-attention forward needs a memory"),
            _ => tq,
        };
        self.dims = AttentionDims {
            b,
            tq,
            tk,
            nh: self.nh,
            hs: c / self.nh,
        };
        let nk = b * tk;
        resize(&mut self.q, n * c);
        resize(&mut self.k, nk * c);
        resize(&mut self.v, nk * c);
        match &self.proj {
            Projections::SelfAttention { c_attn } => {
                resize(&mut self.packed, n * 3 * c);
                c_attn.forward(p, &mut self.packed, x, n);
                for (r, row) in self.packed.chunks_exact(3 * c).enumerate() {
                    self.q[r * c..(r + 1) * c].copy_from_slice(&row[..c]);
                    self.k[r * c..(r + 1) * c].copy_from_slice(&row[c..2 * c]);
                    self.v[r * c..(r + 1) * c].copy_from_slice(&row[2 * c..]);
                }
            }
            Projections::Cross { q_attn, kv_attn } => {
                // `memory` is Some here: the None case panicked above.
                let mem = memory.map(|m| m.0).unwrap_or(&[]);
                q_attn.forward(p, &mut self.q, x, n);
                resize(&mut self.packed, nk * 2 * c);
                kv_attn.forward(p, &mut self.packed, mem, nk);
                for (r, row) in self.packed.chunks_exact(2 * c).enumerate() {
                    self.k[r * c..(r + 1) * c].copy_from_slice(&row[..c]);
                    self.v[r * c..(r + 1) * c].copy_from_slice(&row[c..]);
                }
            }
        }
        resize(&mut self.att, n * c);
        resize(&mut self.lse, b * self.nh * tq);
        // Inside a bf16 scope (mixed precision) the score and value products run in bf16 too.
        let attention_forward = if p.is_bf16() {
            attention_forward_masked_bf16
        } else {
            attention_forward_masked
        };
        let mask = AttentionMask {
            key_mask,
            causal: self.causal,
            positions,
        };
        attention_forward(
            &mut self.att,
            &mut self.lse,
            &self.q,
            &self.k,
            &self.v,
            mask,
            self.dims,
        );
        resize(&mut self.out, n * c);
        self.c_proj.forward(p, &mut self.out, &self.att, n);
        self.drop.forward_inplace(&mut self.out, train, rng);
    }

    /// Backward of the last forward: accumulates parameter gradients into `g`, `dx += ∂L/∂x`
    /// and, for cross-attention, `dmemory += ∂L/∂memory`. `x`, `memory`, `key_mask` and
    /// `positions` must be those of the forward.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        p: Weights,
        g: &mut [f32],
        x: &[f32],
        memory: Option<&[f32]>,
        key_mask: Option<&[u8]>,
        positions: Option<&[u32]>,
        dout: &[f32],
        dx: &mut [f32],
        dmemory: Option<&mut [f32]>,
    ) {
        let c = self.c;
        let AttentionDims { b, tq, tk, .. } = self.dims;
        let (n, nk) = (b * tq, b * tk);
        // Residual dropout (only copied when it was active), then c_proj.
        let dproj: &[f32] = if self.drop.active {
            self.dproj.clear();
            self.dproj.extend_from_slice(dout);
            self.drop.backward_inplace(&mut self.dproj);
            &self.dproj
        } else {
            dout
        };
        resize(&mut self.datt, n * c);
        self.datt.fill(0.0);
        self.c_proj
            .backward(p, g, Some(&mut self.datt), dproj, &self.att, n);
        // Attention core.
        for (buf, len) in [
            (&mut self.dq, n * c),
            (&mut self.dk, nk * c),
            (&mut self.dv, nk * c),
        ] {
            resize(buf, len);
            buf.fill(0.0);
        }
        let attention_backward = if p.is_bf16() {
            attention_backward_masked_bf16
        } else {
            attention_backward_masked
        };
        let mask = AttentionMask {
            key_mask,
            causal: self.causal,
            positions,
        };
        attention_backward(
            &mut self.dq,
            &mut self.dk,
            &mut self.dv,
            &self.datt,
            &self.att,
            &self.lse,
            &self.q,
            &self.k,
            &self.v,
            mask,
            self.dims,
        );
        match &self.proj {
            Projections::SelfAttention { c_attn } => {
                resize(&mut self.dpacked, n * 3 * c);
                for (r, row) in self.dpacked.chunks_exact_mut(3 * c).enumerate() {
                    row[..c].copy_from_slice(&self.dq[r * c..(r + 1) * c]);
                    row[c..2 * c].copy_from_slice(&self.dk[r * c..(r + 1) * c]);
                    row[2 * c..].copy_from_slice(&self.dv[r * c..(r + 1) * c]);
                }
                c_attn.backward(p, g, Some(dx), &self.dpacked, x, n);
            }
            Projections::Cross { q_attn, kv_attn } => {
                q_attn.backward(p, g, Some(dx), &self.dq, x, n);
                resize(&mut self.dpacked, nk * 2 * c);
                for (r, row) in self.dpacked.chunks_exact_mut(2 * c).enumerate() {
                    row[..c].copy_from_slice(&self.dk[r * c..(r + 1) * c]);
                    row[c..].copy_from_slice(&self.dv[r * c..(r + 1) * c]);
                }
                let mem = memory.unwrap_or(&[]);
                kv_attn.backward(p, g, dmemory, &self.dpacked, mem, nk);
            }
        }
    }
}
