//! Linear layer: `y = x · Wᵀ + b` over the flat parameter buffer.
//!
//! Inside a [`super::precision::with_bf16_weights`] scope the products run in bf16 over the
//! shadow weights (mixed-precision training); otherwise in f32, exactly as before.

use super::params::{two_mut, Init, Param, ParamLayout};
use super::precision::current_shadow;
use crate::error::Result;
use crate::kernels::bf16::{linear_backward_bf16, linear_forward_bf16};
use crate::kernels::matmul::{linear_backward, linear_forward, WeightLayout};

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

    /// `out (N, OC) = inp (N, IC) · Wᵀ + b`.
    pub fn forward(&self, p: &[f32], out: &mut [f32], inp: &[f32], n: usize) {
        let b = self.bias.map(|b| b.of(p));
        let (ic, oc, layout) = (self.ic, self.oc, self.layout);
        current_shadow(|shadow| match shadow {
            Some(s) => {
                let w = &s[self.weight.range()];
                linear_forward_bf16(out, inp, w, b, n, ic, oc, layout);
            }
            None => linear_forward(out, inp, self.weight.of(p), b, n, ic, oc, layout),
        });
    }

    /// Accumulates `dW`, `db` into `g` and, if given, `dinp += dout · W`.
    pub fn backward(
        &self,
        p: &[f32],
        g: &mut [f32],
        dinp: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        n: usize,
    ) {
        let w = self.weight.of(p);
        let (ic, oc, layout) = (self.ic, self.oc, self.layout);
        let (dw, db) = match self.bias {
            Some(b) => {
                let (dw, db) = two_mut(g, self.weight, b);
                (dw, Some(db))
            }
            None => (self.weight.of_mut(g), None),
        };
        current_shadow(|shadow| match shadow {
            Some(s) => {
                let wb = &s[self.weight.range()];
                linear_backward_bf16(dinp, dw, db, dout, inp, wb, n, ic, oc, layout);
            }
            None => linear_backward(dinp, dw, db, dout, inp, w, n, ic, oc, layout),
        });
    }
}
