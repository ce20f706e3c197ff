//! Inference forward of [`Block`] over a KV cache (see [`crate::nn::kv_cache`]): the
//! residual stream is updated in place, nothing is kept for backward, dropout is off.
//!
//! The same call serves the GPT decoder (self-attention cache only) and an encoder-decoder
//! decoder (self-attention cache plus cross-attention keys/values of the memory, prepared once
//! with [`Block::prepare_memory`]).

use super::{Block, Memory, NormPlacement};
use crate::error::{Error, Result};
use crate::kernels::gelu::gelu_forward_inplace;
use crate::kernels::residual::add_inplace;
use crate::nn::kv_cache::{sized, LayerKvCache, Scratch};
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::weights::Weights;

/// `s.proj = mlp(inp)` for `n` rows.
fn mlp_into(mlp: &Mlp, p: Weights, inp: &[f32], n: usize, fc: &mut Vec<f32>, out: &mut Vec<f32>) {
    let (c, h) = (mlp.c_fc.ic, mlp.c_fc.oc);
    let fc = sized(fc, n * h);
    mlp.c_fc.forward_infer(p, fc, inp, n);
    match mlp.activation() {
        Activation::Gelu => gelu_forward_inplace(fc),
        Activation::Relu => fc.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
    mlp.c_proj.forward_infer(p, sized(out, n * c), fc, n);
}

impl Block {
    /// Computes the cross-attention keys and values of `memory` into `cache.cross` (once per
    /// source; encoder-decoder decoders only).
    pub fn prepare_memory(
        &self,
        p: Weights,
        cache: &mut LayerKvCache,
        memory: &Memory,
        b: usize,
    ) -> Result<()> {
        let Some((_, cross)) = &self.cross else {
            return Err(Error::usage(
                "Block::prepare_memory",
                "this block has no cross-attention",
            ));
        };
        cache.cross = Some(cross.cross_kv(p, memory.data, b, memory.t, memory.key_mask)?);
        Ok(())
    }

    /// One cached step over packed rows `x (N, C)`, `N = Σ new` (`new[b]` new tokens of row
    /// `b`), updated in place to the block's output. Appends the rows' keys and values to
    /// `cache` and advances its lengths. Blocks with cross-attention read `cache.cross`.
    pub fn forward_cached(
        &self,
        p: Weights,
        x: &mut [f32],
        new: &[usize],
        cache: &mut LayerKvCache,
        s: &mut Scratch,
    ) -> Result<()> {
        let c = self.c;
        let n: usize = new.iter().sum();
        if x.len() != n * c {
            return Err(Error::shape(
                "Block::forward_cached",
                format!("x of {} elements", x.len()),
                format!("(Σ new, C) = ({n}, {c})"),
            ));
        }
        if self.cross.is_some() && cache.cross.is_none() {
            return Err(Error::usage(
                "Block::forward_cached",
                "a cross-attention block needs cache.cross (call Block::prepare_memory first)",
            ));
        }
        let mut proj = std::mem::take(&mut s.proj);
        let mut fc = std::mem::take(&mut s.fc);
        let r = self.forward_cached_inner(p, x, new, n, cache, s, &mut proj, &mut fc);
        s.proj = proj;
        s.fc = fc;
        r?;
        cache.advance(new);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_cached_inner(
        &self,
        p: Weights,
        x: &mut [f32],
        new: &[usize],
        n: usize,
        cache: &mut LayerKvCache,
        s: &mut Scratch,
        proj: &mut Vec<f32>,
        fc: &mut Vec<f32>,
    ) -> Result<()> {
        let c = self.c;
        let cross_kv = cache.cross.take();
        let res = (|| -> Result<()> {
            match self.norm {
                NormPlacement::Pre => {
                    self.ln_1.forward_infer(p, x, n, s);
                    let ln = std::mem::take(&mut s.ln);
                    let r = self.attn.forward_cached(
                        p,
                        sized(proj, n * c),
                        &ln[..n * c],
                        new,
                        cache,
                        s,
                    );
                    s.ln = ln;
                    r?;
                    add_inplace(x, &proj[..n * c]);
                    if let (Some((ln_c, cross)), Some(mem)) = (&self.cross, &cross_kv) {
                        ln_c.forward_infer(p, x, n, s);
                        let ln = std::mem::take(&mut s.ln);
                        let r = cross.forward_cross_cached(
                            p,
                            sized(proj, n * c),
                            &ln[..n * c],
                            new,
                            mem,
                            s,
                        );
                        s.ln = ln;
                        r?;
                        add_inplace(x, &proj[..n * c]);
                    }
                    self.ln_2.forward_infer(p, x, n, s);
                    mlp_into(&self.mlp, p, &s.ln[..n * c], n, fc, proj);
                    add_inplace(x, &proj[..n * c]);
                }
                NormPlacement::Post => {
                    self.attn
                        .forward_cached(p, sized(proj, n * c), x, new, cache, s)?;
                    add_inplace(x, &proj[..n * c]);
                    self.ln_1.forward_infer_inplace(p, x, n, s);
                    if let (Some((ln_c, cross)), Some(mem)) = (&self.cross, &cross_kv) {
                        cross.forward_cross_cached(p, sized(proj, n * c), x, new, mem, s)?;
                        add_inplace(x, &proj[..n * c]);
                        ln_c.forward_infer_inplace(p, x, n, s);
                    }
                    mlp_into(&self.mlp, p, x, n, fc, proj);
                    add_inplace(x, &proj[..n * c]);
                    self.ln_2.forward_infer_inplace(p, x, n, s);
                }
            }
            Ok(())
        })();
        cache.cross = cross_kv;
        res
    }
}
