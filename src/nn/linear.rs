//! Linear layer: `y = x · Wᵀ + b` over the flat parameter buffer, and the tied LM head (a
//! `Linear` view of the token embedding).
//!
//! Which product runs is decided here, once, from the [`Weights`] view: in training
//! ([`Linear::forward`], [`Linear::backward`]) bf16 products over the shadow when it is present
//! (mixed precision), else f32 `gemm`; in inference ([`Linear::forward_infer`], a handful of
//! rows streaming the weights) the packed bf16 or int8 matrix when the model holds one, else the bf16
//! shadow, else f32, each through the few-row decode kernel.

use super::params::{two_mut, Init, Param, ParamLayout};
use super::weights::{PackedWeight, Weights};
use crate::error::Result;
use crate::kernels::bf16::{linear_backward_bf16, linear_forward_bf16, linear_small_bf16};
use crate::kernels::few_rows::F32_STREAM_ROWS;
use crate::kernels::half::linear_half;
use crate::kernels::int8::linear_int8;
use crate::kernels::matmul::{linear_backward, linear_forward, WeightLayout};
use crate::kernels::panel_f32::linear_panels_f32;

/// A linear layer. Stateless: the caller keeps the input for backward.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Weight, `(OC, IC)` or `(IC, OC)` per `layout`.
    pub weight: Param,
    /// Optional bias `(OC)`.
    pub bias: Option<Param>,
    /// Input channels.
    pub ic: usize,
    /// Output channels.
    pub oc: usize,
    /// Storage orientation of the weight.
    pub layout: WeightLayout,
}

impl Linear {
    /// Registers `{prefix}.weight` (N(0, std²), decayed) and `{prefix}.bias` (zeros, not decayed).
    pub fn new(
        params: &mut ParamLayout,
        prefix: &str,
        ic: usize,
        oc: usize,
        bias: bool,
        layout: WeightLayout,
        std: f32,
    ) -> Result<Self> {
        let shape = match layout {
            WeightLayout::OutIn => [oc, ic],
            WeightLayout::InOut => [ic, oc],
        };
        let weight = params.add_matrix(
            &format!("{prefix}.weight"),
            &shape,
            Init::Normal(std),
            layout,
        )?;
        let bias = if bias {
            Some(params.add(&format!("{prefix}.bias"), &[oc], false, Init::Zeros)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            ic,
            oc,
            layout,
        })
    }

    /// A bias-free view of an already registered `(OC, IC)` matrix: the LM head tied to the
    /// token embedding `(V, C)` (`ic = C`, `oc = V`). Registers nothing.
    pub fn tied(weight: Param, ic: usize, oc: usize) -> Self {
        Linear {
            weight,
            bias: None,
            ic,
            oc,
            layout: WeightLayout::OutIn,
        }
    }

    /// `out (N, OC) = inp (N, IC) · Wᵀ + b` (training and full-sequence evaluation).
    pub fn forward(&self, w: Weights, out: &mut [f32], inp: &[f32], n: usize) {
        let b = self.bias.map(|b| w.of(b));
        let (ic, oc, layout) = (self.ic, self.oc, self.layout);
        match w.bf16_of(self.weight) {
            Some(wb) => linear_forward_bf16(out, inp, wb, b, n, ic, oc, layout),
            None => linear_forward(out, inp, w.of(self.weight), b, n, ic, oc, layout),
        }
    }

    /// Accumulates `dW`, `db` into `g` and, if given, `dinp += dout · W`.
    pub fn backward(
        &self,
        w: Weights,
        g: &mut [f32],
        dinp: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        n: usize,
    ) {
        let (ic, oc, layout) = (self.ic, self.oc, self.layout);
        let (dw, db) = match self.bias {
            Some(b) => {
                let (dw, db) = two_mut(g, self.weight, b);
                (dw, Some(db))
            }
            None => (self.weight.of_mut(g), None),
        };
        match w.bf16_of(self.weight) {
            Some(wb) => linear_backward_bf16(dinp, dw, db, dout, inp, wb, n, ic, oc, layout),
            None => {
                let wf = w.of(self.weight);
                linear_backward(dinp, dw, db, dout, inp, wf, n, ic, oc, layout)
            }
        }
    }

    /// Inference product for a few rows (decoding) or more (prefill): the weights are read, in
    /// this order of precedence, from the packed matrix of a bf16, f16 or int8 model (half or
    /// about a quarter of the bytes of f32), the bf16 shadow of a mixed-precision model, or the
    /// f32 parameters; each through the few-row kernel that streams the matrix once, which
    /// hands over to `gemm` past its row threshold.
    pub fn forward_infer(&self, w: Weights, out: &mut [f32], inp: &[f32], n: usize) {
        let b = self.bias.map(|b| w.of(b));
        let (ic, oc, layout) = (self.ic, self.oc, self.layout);
        match w.packed_of(self.weight) {
            Some(PackedWeight::Half(m)) => return linear_half(out, inp, m, b, n),
            Some(PackedWeight::Int8(m)) => return linear_int8(out, inp, m, b, n),
            None => {}
        }
        if (1..=F32_STREAM_ROWS).contains(&n) {
            if let Some(m) = w.panels_of(self.weight) {
                return linear_panels_f32(out, inp, m, b, n);
            }
        }
        match w.bf16_of(self.weight) {
            Some(wb) => linear_small_bf16(out, inp, wb, b, n, ic, oc, layout),
            None => {
                let wf = w.of(self.weight);
                crate::kernels::few_rows::linear_small(out, inp, wf, b, n, ic, oc, layout)
            }
        }
    }
}
