//! LayerNorm module: owns its output and the per-row statistics backward needs.

use super::kv_cache::{sized, Scratch};
use super::params::{two_mut, Init, Param, ParamLayout};
use crate::error::Result;
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward};
use crate::nn::weights::Weights;

/// LayerNorm over the last dimension with learned gain and bias.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// Gain `(C)`, initialised to ones, not decayed.
    pub weight: Param,
    /// Bias `(C)`, initialised to zeros, not decayed.
    pub bias: Param,
    /// Channels.
    pub c: usize,
    /// Added to the variance (1e-5 in GPT-2 and PyTorch).
    pub eps: f32,
    /// Output `(N, C)` of the last forward.
    pub out: Vec<f32>,
    /// Row means `(N)`.
    pub mean: Vec<f32>,
    /// Row reciprocal standard deviations `(N)`.
    pub rstd: Vec<f32>,
}

impl LayerNorm {
    /// Registers `{prefix}.weight` and `{prefix}.bias`.
    pub fn new(params: &mut ParamLayout, prefix: &str, c: usize, eps: f32) -> Result<Self> {
        Ok(LayerNorm {
            weight: params.add(&format!("{prefix}.weight"), &[c], false, Init::Ones)?,
            bias: params.add(&format!("{prefix}.bias"), &[c], false, Init::Zeros)?,
            c,
            eps,
            out: Vec::new(),
            mean: Vec::new(),
            rstd: Vec::new(),
        })
    }

    /// Normalises `inp (N, C)` into `self.out`.
    pub fn forward(&mut self, p: Weights, inp: &[f32], n: usize) {
        self.out.resize(n * self.c, 0.0);
        self.mean.resize(n, 0.0);
        self.rstd.resize(n, 0.0);
        layernorm_forward(
            &mut self.out,
            &mut self.mean,
            &mut self.rstd,
            inp,
            self.weight.of(p.f32),
            self.bias.of(p.f32),
            n,
            self.c,
            self.eps,
        );
    }

    /// Accumulates parameter gradients into `g` and `dinp += ∂L/∂inp`; `inp` is the forward input.
    pub fn backward(&self, p: Weights, g: &mut [f32], dinp: &mut [f32], dout: &[f32], inp: &[f32]) {
        let n = self.mean.len();
        let (dw, db) = two_mut(g, self.weight, self.bias);
        layernorm_backward(
            dinp,
            dw,
            db,
            dout,
            inp,
            self.weight.of(p.f32),
            &self.mean,
            &self.rstd,
            n,
            self.c,
        );
    }

    /// Inference: `s.ln (N, C) = ln(x)` for `n` rows; nothing is kept for backward (the
    /// statistics go to scratch).
    pub fn forward_infer(&self, p: Weights, x: &[f32], n: usize, s: &mut Scratch) {
        layernorm_forward(
            sized(&mut s.ln, n * self.c),
            sized(&mut s.mean, n),
            sized(&mut s.rstd, n),
            x,
            self.weight.of(p.f32),
            self.bias.of(p.f32),
            n,
            self.c,
            self.eps,
        );
    }

    /// Inference: `x = ln(x)` in place for `n` rows (through `s.ln`).
    pub fn forward_infer_inplace(&self, p: Weights, x: &mut [f32], n: usize, s: &mut Scratch) {
        self.forward_infer(p, x, n, s);
        x.copy_from_slice(&s.ln[..n * self.c]);
    }
}
