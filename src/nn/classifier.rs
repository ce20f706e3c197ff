//! The task head of GPT-1 fine-tuning (Radford et al. 2018, §3.1–3.2): dropout on the final
//! hidden state at the extract token, then a linear layer `W_y`, `P(y | x) = softmax(h · W_yᵀ)`.
//!
//! Why no bias: the paper's head is `h_l W_y` (no bias term), and `transformers`'
//! `GPT2ForSequenceClassification` / `OpenAIGPTForSequenceClassification` hold exactly one
//! bias-free `score` Linear, so this head is saved as `score.weight (K, C)` and loads there
//! unchanged.
//!
//! Shapes: `h (N, C)` (one row per pooled sequence, or per pair for `similar`) → `out (N, K)`.
//! The caller gathers the extract rows from the trunk's `(B, T, C)` hidden states and scatters
//! the returned gradient back (see `crate::finetune::model`).

use super::dropout::Dropout;
use super::linear::Linear;
use super::params::ParamLayout;
use super::weights::Weights;
use crate::error::Result;
use crate::kernels::matmul::WeightLayout;
use crate::rng::Rng;

/// Registered name prefix of the head's matrix (`score.weight`, as `transformers` names it).
pub const SCORE: &str = "score";

/// Dropout then a bias-free linear layer; keeps the dropped input for backward.
#[derive(Clone, Debug)]
pub struct ClassifierHead {
    /// `score.weight (K, C)`.
    pub score: Linear,
    /// Dropout on the head's input.
    pub drop: Dropout,
    /// The head's input after dropout `(N, C)`, from the last forward.
    pub x: Vec<f32>,
    dx: Vec<f32>,
}

impl ClassifierHead {
    /// Registers `score.weight (n_out, n_embd)`, initialised N(0, 0.02²) like GPT-2's other
    /// matrices (and `transformers`' `initializer_range`); decayed like every matrix.
    pub fn new(
        layout: &mut ParamLayout,
        n_embd: usize,
        n_out: usize,
        dropout: f32,
    ) -> Result<Self> {
        let score = Linear::new(
            layout,
            SCORE,
            n_embd,
            n_out,
            false,
            WeightLayout::OutIn,
            0.02,
        )?;
        Ok(ClassifierHead {
            score,
            drop: Dropout::new(dropout),
            x: Vec::new(),
            dx: Vec::new(),
        })
    }

    /// Outputs per row `K`.
    pub fn n_out(&self) -> usize {
        self.score.oc
    }

    /// `out (N, K) = dropout(h (N, C)) · Wᵀ`; dropout only when `train`.
    pub fn forward(
        &mut self,
        w: Weights,
        out: &mut [f32],
        h: &[f32],
        n: usize,
        train: bool,
        rng: &mut Rng,
    ) {
        debug_assert_eq!(h.len(), n * self.score.ic, "ClassifierHead: h");
        debug_assert_eq!(out.len(), n * self.score.oc, "ClassifierHead: out");
        self.x.clear();
        self.x.extend_from_slice(h);
        self.drop.forward_inplace(&mut self.x, train, rng);
        self.score.forward(w, out, &self.x, n);
    }

    /// Backward of the last forward: accumulates `dW` into `g` and `dh += ∂L/∂h` from
    /// `dout = ∂L/∂out (N, K)`.
    pub fn backward(&mut self, w: Weights, g: &mut [f32], dh: &mut [f32], dout: &[f32], n: usize) {
        debug_assert_eq!(dh.len(), n * self.score.ic, "ClassifierHead: dh");
        self.dx.clear();
        self.dx.resize(dh.len(), 0.0);
        self.score
            .backward(w, g, Some(&mut self.dx), dout, &self.x, n);
        self.drop.backward_inplace(&mut self.dx);
        for (a, b) in dh.iter_mut().zip(&self.dx) {
            *a += b;
        }
    }
}
