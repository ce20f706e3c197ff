//! Inference forward of [`MultiHeadAttention`] over a KV cache: no dropout, nothing kept for
//! backward. See [`crate::nn::kv_cache`] for the cache layout and the packed-rows
//! convention (`new[b]` new tokens of row `b`, rows packed one after another).

use super::{MultiHeadAttention, Projections};
use crate::error::{Error, Result};
use crate::kernels::attention::{
    attention_forward, attention_single_queries, AttentionDims, SingleQuery,
};
use crate::nn::kv_cache::{sized, CrossKv, LayerKvCache, Scratch};
use crate::nn::weights::Weights;

impl MultiHeadAttention {
    /// Self-attention step: `out (N, C) = c_proj(attn(x))` for packed rows `x (N, C)`,
    /// `N = Σ new`. Each row's new keys and values are appended to `cache` at its current
    /// length (the caller advances the lengths once per layer, see
    /// [`LayerKvCache::advance`]); queries attend the row's cached keys plus the new ones,
    /// causally (bottom-right aligned) when the module is causal.
    pub fn forward_cached(
        &self,
        p: Weights,
        out: &mut [f32],
        x: &[f32],
        new: &[usize],
        cache: &mut LayerKvCache,
        s: &mut Scratch,
    ) -> Result<()> {
        let Projections::SelfAttention { c_attn } = &self.proj else {
            return Err(Error::usage(
                "MultiHeadAttention::forward_cached",
                "this is a cross-attention module; use forward_cross_cached",
            ));
        };
        cache.check_room(new)?;
        let c = self.c;
        let n: usize = new.iter().sum();
        c_attn.forward_infer(p, sized(&mut s.packed, n * 3 * c), x, n);
        let att = sized(&mut s.att, n * c);
        // Rows decoding one token attend in one parallel pass after the loop (their keys and
        // values written first); rows reading several tokens (prompts) attend here.
        let mut single = Vec::new();
        let mut r0 = 0;
        for (b, &nb) in new.iter().enumerate() {
            if nb == 0 {
                continue;
            }
            if nb == 1 {
                // A decoding row: its key and value go to the cache straight from the packed
                // row; its query is read there too, by the single-query pass below.
                let row = &s.packed[r0 * 3 * c..(r0 + 1) * 3 * c];
                cache.write(b, &row[c..2 * c], &row[2 * c..]);
                single.push(SingleQuery {
                    row: r0,
                    kv_start: cache.row_start(b),
                    len: cache.len[b] + 1,
                });
                r0 += 1;
                continue;
            }
            let (q, k, v) = (
                sized(&mut s.q, nb * c),
                sized(&mut s.k, nb * c),
                sized(&mut s.v, nb * c),
            );
            for (i, row) in s.packed[r0 * 3 * c..(r0 + nb) * 3 * c]
                .chunks_exact(3 * c)
                .enumerate()
            {
                q[i * c..(i + 1) * c].copy_from_slice(&row[..c]);
                k[i * c..(i + 1) * c].copy_from_slice(&row[c..2 * c]);
                v[i * c..(i + 1) * c].copy_from_slice(&row[2 * c..]);
            }
            cache.write(b, k, v);
            let tk = cache.len[b] + nb;
            let (kc, vc) = cache.row(b, tk);
            let dims = AttentionDims {
                b: 1,
                tq: nb,
                tk,
                nh: self.nh,
                hs: c / self.nh,
            };
            attention_forward(
                &mut att[r0 * c..(r0 + nb) * c],
                sized(&mut s.lse, self.nh * nb),
                q,
                kc,
                vc,
                None,
                self.causal,
                dims,
            );
            r0 += nb;
        }
        if !single.is_empty() {
            attention_single_queries(
                att,
                &s.packed,
                3 * c,
                &cache.k,
                &cache.v,
                &single,
                self.nh,
                c / self.nh,
            );
        }
        self.c_proj.forward_infer(p, out, &s.att[..n * c], n);
        Ok(())
    }

    /// Cross-attention keys and values of `memory (B, Tm, C)`, computed once per source.
    pub fn cross_kv(
        &self,
        p: Weights,
        memory: &[f32],
        b: usize,
        tm: usize,
        key_mask: Option<&[u8]>,
    ) -> Result<CrossKv> {
        let Projections::Cross { kv_attn, .. } = &self.proj else {
            return Err(Error::usage(
                "MultiHeadAttention::cross_kv",
                "this is a self-attention module",
            ));
        };
        let c = self.c;
        if memory.len() != b * tm * c {
            return Err(Error::shape(
                "cross_kv",
                format!("memory of {} elements", memory.len()),
                format!("(B, Tm, C) = ({b}, {tm}, {c})"),
            ));
        }
        if let Some(m) = key_mask {
            if m.len() != b * tm {
                return Err(Error::shape(
                    "cross_kv",
                    format!("key_mask of {} elements", m.len()),
                    format!("(B, Tm) = ({b}, {tm})"),
                ));
            }
        }
        let nk = b * tm;
        let mut packed = vec![0.0; nk * 2 * c];
        kv_attn.forward(p, &mut packed, memory, nk);
        let mut kv = CrossKv {
            k: vec![0.0; nk * c],
            v: vec![0.0; nk * c],
            t: tm,
            key_mask: key_mask.map(<[u8]>::to_vec),
        };
        for (r, row) in packed.chunks_exact(2 * c).enumerate() {
            kv.k[r * c..(r + 1) * c].copy_from_slice(&row[..c]);
            kv.v[r * c..(r + 1) * c].copy_from_slice(&row[c..]);
        }
        Ok(kv)
    }

    /// Cross-attention step over keys/values from [`MultiHeadAttention::cross_kv`]:
    /// `out (N, C) = c_proj(attn(q_attn(x), K_mem, V_mem))` for packed rows (`N = Σ new`).
    pub fn forward_cross_cached(
        &self,
        p: Weights,
        out: &mut [f32],
        x: &[f32],
        new: &[usize],
        mem: &CrossKv,
        s: &mut Scratch,
    ) -> Result<()> {
        let Projections::Cross { q_attn, .. } = &self.proj else {
            return Err(Error::usage(
                "MultiHeadAttention::forward_cross_cached",
                "this is a self-attention module",
            ));
        };
        let c = self.c;
        let n: usize = new.iter().sum();
        let tm = mem.t;
        if mem.k.len() < new.len() * tm * c {
            return Err(Error::shape(
                "forward_cross_cached",
                format!("memory keys for {} rows", mem.k.len() / (tm * c).max(1)),
                format!("{} rows", new.len()),
            ));
        }
        q_attn.forward_infer(p, sized(&mut s.packed, n * c), x, n);
        let att = sized(&mut s.att, n * c);
        let mut r0 = 0;
        for (b, &nb) in new.iter().enumerate() {
            if nb == 0 {
                continue;
            }
            let dims = AttentionDims {
                b: 1,
                tq: nb,
                tk: tm,
                nh: self.nh,
                hs: c / self.nh,
            };
            let rows = b * tm * c..(b + 1) * tm * c;
            attention_forward(
                &mut att[r0 * c..(r0 + nb) * c],
                sized(&mut s.lse, self.nh * nb),
                &s.packed[r0 * c..(r0 + nb) * c],
                &mem.k[rows.clone()],
                &mem.v[rows],
                mem.key_mask.as_ref().map(|m| &m[b * tm..(b + 1) * tm]),
                false,
                dims,
            );
            r0 += nb;
        }
        self.c_proj.forward_infer(p, out, &s.att[..n * c], n);
        Ok(())
    }
}
