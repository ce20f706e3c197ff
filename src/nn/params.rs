//! Parameters of a model in one flat buffer with a named layout table.
//!
//! Every module registers its tensors in a [`ParamLayout`] under GPT-2's Hugging Face names
//! (`h.0.attn.c_attn.weight`, ...), receiving a [`Param`] handle (offset and length). Parameters,
//! gradients and optimizer moments are flat `Vec<f32>`s sharing that layout, so the optimizer step
//! is one loop, gradient clipping one reduction, and checkpoint I/O one table walk.

use crate::error::{Error, Result};
use crate::kernels::matmul::WeightLayout;
use crate::rng::Rng;
use std::collections::HashMap;
use std::ops::Range;

/// A handle to one tensor in the flat buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Param {
    /// First element in the flat buffer.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Param {
    /// The element range in the flat buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }

    /// This tensor's slice of a flat buffer (parameters, gradients or moments).
    pub fn of<'a>(&self, flat: &'a [f32]) -> &'a [f32] {
        &flat[self.range()]
    }

    /// This tensor's mutable slice of a flat buffer.
    pub fn of_mut<'a>(&self, flat: &'a mut [f32]) -> &'a mut [f32] {
        &mut flat[self.range()]
    }
}

/// How a tensor is initialised.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros (biases).
    Zeros,
    /// All ones (LayerNorm gains).
    Ones,
    /// N(0, std²).
    Normal(f32),
}

/// One entry of the layout table.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamEntry {
    /// Hugging Face GPT-2 style name.
    pub name: String,
    /// Logical shape as stored in our buffer.
    pub shape: Vec<usize>,
    /// Where the tensor lives.
    pub param: Param,
    /// Whether AdamW applies weight decay (matrices yes; biases, gains, embeddings' choice is the
    /// model's).
    pub decay: bool,
    /// Initialisation.
    pub init: Init,
    /// Storage orientation for matrices of linear layers (`None` for other tensors).
    pub weight_layout: Option<WeightLayout>,
}

/// The table of named tensors in a flat buffer.
#[derive(Clone, Debug, Default)]
pub struct ParamLayout {
    entries: Vec<ParamEntry>,
    index: HashMap<String, usize>,
    total: usize,
    /// Fixed offsets by name (see [`ParamLayout::placed`]); `None`: consecutive offsets.
    placed: Option<HashMap<String, usize>>,
}

impl ParamLayout {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// A layout whose tensors sit at given element offsets instead of one after another, so
    /// modules can read their parameters straight out of an existing buffer (a memory-mapped
    /// safetensors file: see `model::inference`). Registering a name absent from `offsets` is an
    /// error; [`ParamLayout::total`] is then one past the furthest tensor.
    pub fn placed(offsets: HashMap<String, usize>) -> Self {
        ParamLayout {
            placed: Some(offsets),
            ..Self::default()
        }
    }

    /// Registers a tensor; errors if the name is taken.
    pub fn add(&mut self, name: &str, shape: &[usize], decay: bool, init: Init) -> Result<Param> {
        self.add_entry(name, shape, decay, init, None)
    }

    /// Registers a linear layer's weight matrix with its storage orientation.
    pub fn add_matrix(
        &mut self,
        name: &str,
        shape: &[usize],
        init: Init,
        layout: WeightLayout,
    ) -> Result<Param> {
        self.add_entry(name, shape, true, init, Some(layout))
    }

    fn add_entry(
        &mut self,
        name: &str,
        shape: &[usize],
        decay: bool,
        init: Init,
        weight_layout: Option<WeightLayout>,
    ) -> Result<Param> {
        if self.index.contains_key(name) {
            return Err(Error::usage(
                "ParamLayout::add",
                format!("parameter `{name}` registered twice"),
            ));
        }
        let len = shape.iter().product();
        let offset = match &self.placed {
            None => self.total,
            Some(map) => *map
                .get(name)
                .ok_or_else(|| Error::UnknownParam(name.to_string()))?,
        };
        let param = Param { offset, len };
        self.total = self.total.max(offset + len);
        self.index.insert(name.to_string(), self.entries.len());
        self.entries.push(ParamEntry {
            name: name.to_string(),
            shape: shape.to_vec(),
            param,
            decay,
            init,
            weight_layout,
        });
        Ok(param)
    }

    /// Changes the initialisation of a registered tensor (e.g. GPT-2's scaled residual
    /// projections).
    pub fn set_init(&mut self, name: &str, init: Init) -> Result<()> {
        let i = *self
            .index
            .get(name)
            .ok_or_else(|| Error::UnknownParam(name.to_string()))?;
        self.entries[i].init = init;
        Ok(())
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// All entries in registration order.
    pub fn entries(&self) -> &[ParamEntry] {
        &self.entries
    }

    /// Total number of elements.
    pub fn total(&self) -> usize {
        self.total
    }

    /// `(range, decay)` per tensor, for [`crate::kernels::adamw`].
    pub fn decay_ranges(&self) -> Vec<(Range<usize>, bool)> {
        self.entries
            .iter()
            .map(|e| (e.param.range(), e.decay))
            .collect()
    }

    /// Number of elements with and without weight decay.
    pub fn decay_counts(&self) -> (usize, usize) {
        let d = self
            .entries
            .iter()
            .filter(|e| e.decay)
            .map(|e| e.param.len)
            .sum();
        (d, self.total - d)
    }
}

/// A model's parameters and gradients, sharing one layout.
#[derive(Clone, Debug)]
pub struct Params {
    /// The layout table.
    pub layout: ParamLayout,
    /// Parameter values.
    pub data: Vec<f32>,
    /// Gradients (same layout), accumulated by backward passes.
    pub grad: Vec<f32>,
}

impl Params {
    /// Zero-filled parameters and gradients for `layout`.
    pub fn zeros(layout: ParamLayout) -> Self {
        let n = layout.total();
        Params {
            layout,
            data: vec![0.0; n],
            grad: vec![0.0; n],
        }
    }

    /// Initialises every tensor per its [`Init`], in registration order (deterministic).
    pub fn init(&mut self, rng: &mut Rng) {
        for e in self.layout.entries() {
            let dst = e.param.of_mut(&mut self.data);
            match e.init {
                Init::Zeros => dst.fill(0.0),
                Init::Ones => dst.fill(1.0),
                Init::Normal(std) => rng.fill_normal(dst, 0.0, std),
            }
        }
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grad.fill(0.0);
    }

    /// A tensor's values by name.
    pub fn tensor(&self, name: &str) -> Result<&[f32]> {
        let e = self
            .layout
            .get(name)
            .ok_or_else(|| Error::UnknownParam(name.to_string()))?;
        Ok(e.param.of(&self.data))
    }

    /// A tensor's values by name, mutable.
    pub fn tensor_mut(&mut self, name: &str) -> Result<&mut [f32]> {
        let e = self
            .layout
            .get(name)
            .ok_or_else(|| Error::UnknownParam(name.to_string()))?;
        let p = e.param;
        Ok(p.of_mut(&mut self.data))
    }

    /// A tensor's gradient by name.
    pub fn grad_of(&self, name: &str) -> Result<&[f32]> {
        let e = self
            .layout
            .get(name)
            .ok_or_else(|| Error::UnknownParam(name.to_string()))?;
        Ok(e.param.of(&self.grad))
    }
}

/// Two disjoint mutable tensors of one flat buffer (e.g. a weight's and a bias's gradients).
///
/// Panics if they overlap, which a [`ParamLayout`] never produces.
pub fn two_mut(flat: &mut [f32], a: Param, b: Param) -> (&mut [f32], &mut [f32]) {
    assert!(
        a.offset + a.len <= b.offset || b.offset + b.len <= a.offset,
        "overlapping params"
    );
    if a.offset < b.offset {
        let (lo, hi) = flat.split_at_mut(b.offset);
        (&mut lo[a.range()], &mut hi[..b.len])
    } else {
        let (lo, hi) = flat.split_at_mut(a.offset);
        (&mut hi[..a.len], &mut lo[b.range()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_assigns_consecutive_offsets_and_rejects_duplicates() {
        let mut l = ParamLayout::new();
        let a = l.add("a", &[2, 3], true, Init::Normal(0.02)).unwrap();
        let b = l.add("b", &[3], false, Init::Zeros).unwrap();
        assert_eq!((a.offset, a.len, b.offset, b.len), (0, 6, 6, 3));
        assert_eq!(l.total(), 9);
        assert_eq!(l.decay_counts(), (6, 3));
        assert!(l.add("a", &[1], true, Init::Ones).is_err());
        let mut p = Params::zeros(l);
        p.init(&mut Rng::new(0));
        assert!(p.tensor("b").unwrap().iter().all(|&x| x == 0.0));
        assert!(p.tensor("a").unwrap().iter().any(|&x| x != 0.0));
        assert!(matches!(p.tensor("c"), Err(Error::UnknownParam(_))));
    }
}
