//! The input embedding: token rows plus position rows (learned or sinusoidal), optionally the
//! token rows scaled by `sqrt(C)` ("Attention Is All You Need" §3.4), then dropout.
//!
//! One module serves the GPT (`wte` + `wpe`, GPT-1/2) and the encoder-decoder (`embed.weight`,
//! scaled, sinusoidal), in two modes: full sequences (training and evaluation; keeps the ids
//! backward needs) and packed cached rows (inference: each row's tokens start at that row's
//! cached length). The token table is also the LM head's matrix ([`super::linear::Linear::tied`]);
//! a bf16 model holds it only packed, and the lookup widens the row from there.
//!
//! Shapes: `ids (B, T)` → `out (B, T, C)`; cached: `ids (N)` packed → `out (N, C)`.

use super::dropout::Dropout;
use super::params::{Init, Param, ParamLayout};
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::kernels::embedding::{embedding_backward, embedding_forward, sinusoidal_positions};
use crate::kernels::residual::add_inplace;
use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// Position information added to token embeddings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned table `wpe (n_ctx, C)` (GPT-1, GPT-2).
    Learned,
    /// The fixed sine/cosine table of "Attention Is All You Need".
    Sinusoidal,
}

/// How an [`Embedding`] is registered.
#[derive(Clone, Debug)]
pub struct EmbeddingConfig<'a> {
    /// Name of the token table (`wte.weight`, `embed.weight`).
    pub table: &'a str,
    /// Name of the learned position table (`wpe.weight`), used with [`Positions::Learned`].
    pub position_table: &'a str,
    /// Vocabulary `V`.
    pub vocab_size: usize,
    /// Width `C`.
    pub n_embd: usize,
    /// Positions covered `(n_ctx)`.
    pub n_pos: usize,
    /// Learned or sinusoidal positions.
    pub positions: Positions,
    /// Multiply token rows by `sqrt(C)` before adding positions.
    pub scaled: bool,
    /// Init std of the token table (and of a learned position table).
    pub std: f32,
    /// Dropout on the sum.
    pub dropout: f32,
}

/// Where position rows come from.
#[derive(Clone, Debug)]
enum PositionRows {
    Learned(Param),
    Sinusoidal(Vec<f32>),
}

/// Token + position embedding with its activations.
#[derive(Clone, Debug)]
pub struct Embedding {
    /// The token table `(V, C)`.
    pub wte: Param,
    positions: PositionRows,
    scale: Option<f32>,
    v: usize,
    c: usize,
    n_pos: usize,
    drop: Dropout,
    ids: Vec<u32>,
    pos_ids: Vec<u32>,
    /// Output `(B, T, C)` of the last full forward.
    pub out: Vec<f32>,
}

impl Embedding {
    /// Registers the token table and, for learned positions, the position table.
    pub fn new(layout: &mut ParamLayout, cfg: &EmbeddingConfig) -> Result<Self> {
        let (v, c, n) = (cfg.vocab_size, cfg.n_embd, cfg.n_pos);
        let wte = layout.add(cfg.table, &[v, c], true, Init::Normal(cfg.std))?;
        let positions = match cfg.positions {
            Positions::Learned => PositionRows::Learned(layout.add(
                cfg.position_table,
                &[n, c],
                true,
                Init::Normal(cfg.std),
            )?),
            Positions::Sinusoidal => {
                let mut table = vec![0.0; n * c];
                sinusoidal_positions(&mut table, n, c);
                PositionRows::Sinusoidal(table)
            }
        };
        Ok(Embedding {
            wte,
            positions,
            scale: cfg.scaled.then(|| (c as f32).sqrt()),
            v,
            c,
            n_pos: n,
            drop: Dropout::new(cfg.dropout),
            ids: Vec::new(),
            pos_ids: Vec::new(),
            out: Vec::new(),
        })
    }

    /// The learned position table, if any.
    pub fn wpe(&self) -> Option<Param> {
        match self.positions {
            PositionRows::Learned(p) => Some(p),
            PositionRows::Sinusoidal(_) => None,
        }
    }

    /// Positions covered.
    pub fn n_pos(&self) -> usize {
        self.n_pos
    }

    /// The position table `(n_pos, C)`: learned (from `p`) or sinusoidal.
    fn position_table<'a>(positions: &'a PositionRows, p: &Weights<'a>) -> &'a [f32] {
        match positions {
            PositionRows::Learned(w) => p.of(*w),
            PositionRows::Sinusoidal(t) => t,
        }
    }

    /// `out (B, T, C) = scale · wte[ids] + pos[0..T]`, dropout in training. `ids` must be in
    /// range and `T ≤ n_pos` (checked by the model).
    pub fn forward(
        &mut self,
        p: Weights,
        ids: &[u32],
        b: usize,
        t: usize,
        train: bool,
        rng: &mut Rng,
    ) {
        let (c, v) = (self.c, self.v);
        let n = b * t;
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.out.resize(n * c, 0.0);
        embedding_forward(&mut self.out, ids, p.of(self.wte), n, c, v);
        if let PositionRows::Learned(_) = self.positions {
            self.pos_ids.clear();
            self.pos_ids.extend((0..n).map(|i| (i % t) as u32));
        }
        let table = &Self::position_table(&self.positions, &p)[..t * c];
        for row in self.out.chunks_exact_mut(t * c) {
            if let Some(s) = self.scale {
                row.iter_mut().for_each(|x| *x *= s);
            }
            add_inplace(row, table);
        }
        self.drop.forward_inplace(&mut self.out, train, rng);
    }

    /// Backward of the last forward: accumulates the token (and learned position) table
    /// gradients into `g`; `dout` is consumed as scratch.
    pub fn backward(&self, g: &mut [f32], dout: &mut [f32]) {
        let (c, v) = (self.c, self.v);
        let n = self.ids.len();
        self.drop.backward_inplace(dout);
        if let Some(s) = self.scale {
            dout.iter_mut().for_each(|x| *x *= s);
        }
        embedding_backward(self.wte.of_mut(g), dout, &self.ids, n, c, v);
        if let PositionRows::Learned(wpe) = self.positions {
            embedding_backward(wpe.of_mut(g), dout, &self.pos_ids, n, c, self.n_pos);
        }
    }

    /// Cached mode: `out (N, C)` for packed `ids (N)`, row `b`'s `new[b]` tokens at positions
    /// `start[b]..start[b] + new[b]`. Errors on an id out of range or a position past the table.
    pub fn forward_cached(
        &self,
        p: Weights,
        out: &mut [f32],
        ids: &[u32],
        new: &[usize],
        start: &[usize],
    ) -> Result<()> {
        let c = self.c;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.v) {
            return Err(Error::TokenOutOfRange {
                id: id as usize,
                vocab_size: self.v,
            });
        }
        let table = Self::position_table(&self.positions, &p);
        let packed = p.packed_of(self.wte);
        let mut r = 0;
        for (&nb, &s0) in new.iter().zip(start) {
            if s0 + nb > self.n_pos {
                return Err(Error::limit(
                    "position",
                    (s0 + nb) as u64,
                    self.n_pos as u64,
                    "the model's context (n_ctx) is full; shorten the input",
                ));
            }
            for pos in s0..s0 + nb {
                let id = ids[r] as usize;
                let dst = &mut out[r * c..(r + 1) * c];
                // The token's row: widened from the packed bf16 table, or read from f32.
                match packed {
                    Some(w) => w.row_f32(id, dst),
                    None => dst.copy_from_slice(&p.of(self.wte)[id * c..(id + 1) * c]),
                }
                if let Some(s) = self.scale {
                    dst.iter_mut().for_each(|x| *x *= s);
                }
                for (d, q) in dst.iter_mut().zip(&table[pos * c..(pos + 1) * c]) {
                    *d += q;
                }
                r += 1;
            }
        }
        Ok(())
    }
}
