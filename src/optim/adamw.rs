//! AdamW over the flat parameter buffer: moments share the parameters' layout, decay applies to
//! the tensors the layout marks (matrices), and the step is one parallel loop per tensor.

use crate::error::{Error, Result};
use crate::kernels::adamw::adamw_update_ranges;
use crate::nn::params::{ParamLayout, Params};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// AdamW hyper-parameters (nanoGPT's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f32,
    /// Second-moment decay.
    pub beta2: f32,
    /// Denominator epsilon.
    pub eps: f32,
    /// Decoupled weight decay for decayed tensors.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges the update needs, naming the field: `beta1` and `beta2` in [0, 1)
    /// (at 1 a moment never forgets and the bias correction divides by 0), `eps > 0` (the
    /// denominator `sqrt(v) + eps` is 0 where a gradient has always been 0), `weight_decay ≥ 0`,
    /// all finite. The one check of these values, whichever configuration they come from.
    pub fn validate(&self) -> Result<()> {
        for (field, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::field(
                    field,
                    format!("{b} is not in [0, 1) (typical: beta1 0.9, beta2 0.95 to 0.999)"),
                ));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::field(
                "eps",
                format!("{} must be a positive number (typical: 1e-8)", self.eps),
            ));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::field(
                "weight_decay",
                format!(
                    "{} must be a number ≥ 0 (0: no decay; typical: 0.1)",
                    self.weight_decay
                ),
            ));
        }
        Ok(())
    }
}

/// Optimizer state: both moments and the step count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdamW {
    /// Hyper-parameters.
    pub config: AdamWConfig,
    /// First moments, same layout as the parameters.
    pub m: Vec<f32>,
    /// Second moments, same layout as the parameters.
    pub v: Vec<f32>,
    /// Steps taken so far.
    pub step: u64,
    #[serde(skip)]
    ranges: Vec<(Range<usize>, bool)>,
}

impl AdamW {
    /// Zero moments for `layout`.
    pub fn new(layout: &ParamLayout, config: AdamWConfig) -> Self {
        let n = layout.total();
        AdamW {
            config,
            m: vec![0.0; n],
            v: vec![0.0; n],
            step: 0,
            ranges: layout.decay_ranges(),
        }
    }

    /// Re-attaches the layout after deserialising saved state.
    pub fn attach(&mut self, layout: &ParamLayout) {
        self.ranges = layout.decay_ranges();
    }

    /// One update of `params.data` from `params.grad` with learning rate `lr`.
    pub fn update(&mut self, params: &mut Params, lr: f32) {
        if self.ranges.is_empty() {
            self.attach(&params.layout);
        }
        self.step += 1;
        let c = self.config;
        adamw_update_ranges(
            &mut params.data,
            &params.grad,
            &mut self.m,
            &mut self.v,
            &self.ranges,
            lr,
            c.beta1,
            c.beta2,
            c.eps,
            c.weight_decay,
            self.step as usize,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field_out_of_range() {
        assert!(AdamWConfig::default().validate().is_ok());
        let bad = |c: AdamWConfig| c.validate().unwrap_err().to_string();
        let d = AdamWConfig::default();
        for (c, field) in [
            (AdamWConfig { beta1: 1.0, ..d }, "beta1"),
            (AdamWConfig { beta1: -0.1, ..d }, "beta1"),
            (AdamWConfig { beta2: 1.0, ..d }, "beta2"),
            (
                AdamWConfig {
                    beta2: f32::NAN,
                    ..d
                },
                "beta2",
            ),
            (AdamWConfig { eps: 0.0, ..d }, "eps"),
            (
                AdamWConfig {
                    eps: f32::INFINITY,
                    ..d
                },
                "eps",
            ),
            (
                AdamWConfig {
                    weight_decay: -0.1,
                    ..d
                },
                "weight_decay",
            ),
        ] {
            let e = bad(c);
            assert!(e.contains(&format!("invalid {field}:")), "{e}");
        }
    }
}
