//! Position-wise feed-forward network: `c_fc (C → 4C)`, GELU or ReLU, `c_proj (4C → C)`, dropout.

use super::dropout::Dropout;
use super::linear::Linear;
use super::params::ParamLayout;
use crate::error::Result;
use crate::kernels::gelu::{gelu_backward, gelu_forward, relu_backward, relu_forward};
use crate::kernels::matmul::WeightLayout;
use crate::nn::weights::Weights;
use crate::rng::Rng;

/// The MLP's non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// GELU, tanh approximation (GPT-1, GPT-2).
    Gelu,
    /// ReLU ("Attention Is All You Need").
    Relu,
}

/// Hyper-parameters of an MLP.
#[derive(Clone, Copy, Debug)]
pub struct MlpConfig {
    /// Model width `C`.
    pub n_embd: usize,
    /// Hidden width (4C in GPT and the Transformer paper).
    pub hidden: usize,
    /// Whether linear layers have biases.
    pub bias: bool,
    /// Non-linearity.
    pub activation: Activation,
    /// Residual dropout after `c_proj`.
    pub dropout: f32,
    /// Init std of `c_fc`.
    pub std: f32,
    /// Init std of `c_proj`.
    pub proj_std: f32,
}

/// The feed-forward module with its activations.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// `C → hidden`.
    pub c_fc: Linear,
    /// `hidden → C`.
    pub c_proj: Linear,
    /// Residual dropout.
    pub drop: Dropout,
    activation: Activation,
    n: usize,
    fc: Vec<f32>,
    act: Vec<f32>,
    /// Output `(N, C)` of the last forward.
    pub out: Vec<f32>,
    dact: Vec<f32>,
    dfc: Vec<f32>,
    dproj: Vec<f32>,
}

impl Mlp {
    /// Registers `{prefix}.c_fc` and `{prefix}.c_proj` (Conv1D orientation).
    pub fn new(params: &mut ParamLayout, prefix: &str, cfg: &MlpConfig) -> Result<Self> {
        let (c, h) = (cfg.n_embd, cfg.hidden);
        Ok(Mlp {
            c_fc: Linear::new(
                params,
                &format!("{prefix}.c_fc"),
                c,
                h,
                cfg.bias,
                WeightLayout::InOut,
                cfg.std,
            )?,
            c_proj: Linear::new(
                params,
                &format!("{prefix}.c_proj"),
                h,
                c,
                cfg.bias,
                WeightLayout::InOut,
                cfg.proj_std,
            )?,
            drop: Dropout::new(cfg.dropout),
            activation: cfg.activation,
            n: 0,
            fc: Vec::new(),
            act: Vec::new(),
            out: Vec::new(),
            dact: Vec::new(),
            dfc: Vec::new(),
            dproj: Vec::new(),
        })
    }

    /// The non-linearity.
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// Forward for `x (N, C)` into `self.out`.
    pub fn forward(&mut self, p: Weights, x: &[f32], n: usize, train: bool, rng: &mut Rng) {
        let (h, c) = (self.c_fc.oc, self.c_fc.ic);
        self.n = n;
        self.fc.resize(n * h, 0.0);
        self.act.resize(n * h, 0.0);
        self.out.resize(n * c, 0.0);
        self.c_fc.forward(p, &mut self.fc, x, n);
        match self.activation {
            Activation::Gelu => gelu_forward(&mut self.act, &self.fc),
            Activation::Relu => relu_forward(&mut self.act, &self.fc),
        }
        self.c_proj.forward(p, &mut self.out, &self.act, n);
        self.drop.forward_inplace(&mut self.out, train, rng);
    }

    /// Accumulates parameter gradients into `g` and `dx += ∂L/∂x`; `x` is the forward input.
    pub fn backward(&mut self, p: Weights, g: &mut [f32], x: &[f32], dout: &[f32], dx: &mut [f32]) {
        let n = self.n;
        let h = self.c_fc.oc;
        let dproj: &[f32] = if self.drop.active {
            self.dproj.clear();
            self.dproj.extend_from_slice(dout);
            self.drop.backward_inplace(&mut self.dproj);
            &self.dproj
        } else {
            dout
        };
        self.dact.resize(n * h, 0.0);
        self.dact.fill(0.0);
        self.c_proj
            .backward(p, g, Some(&mut self.dact), dproj, &self.act, n);
        self.dfc.resize(n * h, 0.0);
        self.dfc.fill(0.0);
        match self.activation {
            Activation::Gelu => gelu_backward(&mut self.dfc, &self.fc, &self.dact),
            Activation::Relu => relu_backward(&mut self.dfc, &self.fc, &self.dact),
        }
        self.c_fc.backward(p, g, Some(dx), &self.dfc, x, n);
    }
}
