//! Dropout module: inverted dropout that remembers its mask, and costs nothing when inactive.

use crate::kernels::dropout::{dropout_backward_inplace, dropout_forward_inplace};
use crate::rng::Rng;

/// Inverted dropout with probability `p`; active only in training with `p > 0`.
#[derive(Clone, Debug, Default)]
pub struct Dropout {
    /// Drop probability.
    pub p: f32,
    /// Keep mask of the last active forward (1 = kept).
    pub mask: Vec<u8>,
    /// Whether the last forward dropped anything.
    pub active: bool,
}

impl Dropout {
    /// A dropout of probability `p`.
    pub fn new(p: f32) -> Self {
        Dropout {
            p,
            mask: Vec::new(),
            active: false,
        }
    }

    /// Whether a forward with `train` would drop anything (callers skip the copy otherwise).
    pub fn will_drop(&self, train: bool) -> bool {
        train && self.p > 0.0
    }

    /// `buf = dropout(buf)` in place.
    pub fn forward_inplace(&mut self, buf: &mut [f32], train: bool, rng: &mut Rng) {
        self.active = self.will_drop(train);
        if !self.active {
            return;
        }
        self.mask.resize(buf.len(), 0);
        dropout_forward_inplace(buf, &mut self.mask, self.p, true, rng);
    }

    /// Backward in place: `grad = mask ⊙ grad / (1 - p)` when the last forward was active.
    pub fn backward_inplace(&self, grad: &mut [f32]) {
        if !self.active {
            return;
        }
        dropout_backward_inplace(grad, &self.mask, self.p);
    }
}
