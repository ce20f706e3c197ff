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
    /// The first parameter the moments cover: 0, or with `--zero1` the start of this rank's
    /// slice ([`crate::dist::shard`]); they cover `offset..offset + m.len()`.
    #[serde(skip)]
    pub offset: usize,
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
            offset: 0,
            ranges: layout.decay_ranges(),
        }
    }

    /// This state with the moments of every parameter (`--zero1`: gathered from the ranks).
    pub fn with_whole(&self, m: Vec<f32>, v: Vec<f32>) -> AdamW {
        AdamW {
            m,
            v,
            offset: 0,
            ..self.clone()
        }
    }

    /// Keeps the moments of the parameters `slice` only (`--zero1`): later updates change
    /// those parameters and no others.
    pub fn keep_slice(&mut self, slice: Range<usize>) {
        let (lo, hi) = (slice.start - self.offset, slice.end - self.offset);
        self.m = self.m[lo..hi].to_vec();
        self.v = self.v[lo..hi].to_vec();
        self.offset = slice.start;
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
        let (lo, hi) = (self.offset, self.offset + self.m.len());
        // The layout's ranges within this state's slice, from its start.
        let ranges: Vec<(Range<usize>, bool)> = self
            .ranges
            .iter()
            .map(|(r, d)| (r.start.clamp(lo, hi) - lo..r.end.clamp(lo, hi) - lo, *d))
            .filter(|(r, _)| !r.is_empty())
            .collect();
        adamw_update_ranges(
            &mut params.data[lo..hi],
            &params.grad[lo..hi],
            &mut self.m,
            &mut self.v,
            &ranges,
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
    use crate::nn::params::{Init, ParamLayout, Params};
    use crate::rng::Rng;

    #[test]
    fn slices_updated_apart_equal_one_update_of_the_whole() {
        let mut layout = ParamLayout::new();
        layout.add("w", &[5, 3], true, Init::Normal(0.5)).unwrap();
        layout.add("b", &[4], false, Init::Normal(0.5)).unwrap();
        let mut whole = Params::zeros(layout.clone());
        whole.init(&mut Rng::new(1));
        Rng::new(2).fill_normal(&mut whole.grad, 0.0, 1.0);
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        };
        let mut sliced = whole.clone();
        let mut one = AdamW::new(&layout, cfg);
        // Slices that cut the matrix and the bias apart.
        let mut parts: Vec<AdamW> = [0..7, 7..17, 17..19]
            .into_iter()
            .map(|r| {
                let mut o = AdamW::new(&layout, cfg);
                o.keep_slice(r);
                o
            })
            .collect();
        for _ in 0..3 {
            one.update(&mut whole, 1e-2);
            for p in &mut parts {
                p.update(&mut sliced, 1e-2);
            }
        }
        assert_eq!(whole.data, sliced.data);
        let m: Vec<f32> = parts.iter().flat_map(|p| p.m.clone()).collect();
        assert_eq!(m, one.m);
    }

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
