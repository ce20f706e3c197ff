//! The input embedding: token rows plus position rows (learned or sinusoidal), optionally the
//! token rows scaled by `sqrt(C)` ("Attention Is All You Need" §3.4), then dropout.
//!
//! One module serves the GPT (`wte` + `wpe`, GPT-1/2) and the encoder-decoder (`embed.weight`,
//! scaled, sinusoidal), in two modes: full sequences (training and evaluation; keeps the ids
//! backward needs; positions `0..T` in each row, or given per token for packed rows, where
//! several examples share a row and each restarts at 0) and packed cached rows (inference: each
//! row's tokens start at that row's cached length). The token table is also the LM head's
//! matrix ([`super::linear::Linear::tied`]); a bf16 model holds it only packed, and the lookup
//! widens the row from there.
//!
//! Shapes: `ids (B, T)`, `positions (B, T)` → `out (B, T, C)`; cached: `ids (N)` packed →
//! `out (N, C)`.

use super::dropout::Dropout;
use super::params::{Init, Param, ParamLayout};
use super::weights::Weights;
use crate::error::{Error, Result};
use crate::kernels::embedding::{embedding_backward, embedding_forward, sinusoidal_positions};
use crate::rng::Rng;
use rayon::prelude::*;
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
    /// Token ids `(B, T)` of the last full forward.
    ids: Vec<u32>,
    /// Position ids `(B, T)` of the last full forward (rows of the position table).
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

    /// `out (B, T, C) = scale · wte[ids] + pos[positions]`, dropout in training.
    /// `positions (B, T)` are the rows of the position table, one per token (packed rows restart
    /// them at 0 for each example); `None` means `0..T` in every row. `ids (B, T)` must be in
    /// range (checked by the model). Errors on positions of the wrong length or at or past the
    /// table's `n_pos` rows (for `None`: `T > n_pos`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &mut self,
        p: Weights,
        ids: &[u32],
        positions: Option<&[u32]>,
        b: usize,
        t: usize,
        train: bool,
        rng: &mut Rng,
    ) -> Result<()> {
        const OP: &str = "Embedding::forward";
        let (c, v) = (self.c, self.v);
        let n = b * t;
        let hint = "positions index the model's context (n_ctx); shorten the rows";
        match positions {
            Some(pos) if pos.len() != n => {
                return Err(Error::shape(
                    OP,
                    format!("positions of length {}", pos.len()),
                    format!("(B, T) = ({b}, {t})"),
                ));
            }
            Some(pos) => {
                if let Some((i, &x)) = pos
                    .iter()
                    .enumerate()
                    .find(|(_, &x)| x as usize >= self.n_pos)
                {
                    let what = format!(
                        "the position of token {i} (row {}, column {})",
                        i / t,
                        i % t
                    );
                    let last = self.n_pos.saturating_sub(1) as u64;
                    return Err(Error::limit(what, x as u64, last, hint));
                }
            }
            None if t > self.n_pos => {
                return Err(Error::limit(
                    "sequence length",
                    t as u64,
                    self.n_pos as u64,
                    hint,
                ));
            }
            None => {}
        }
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.pos_ids.clear();
        match positions {
            Some(pos) => self.pos_ids.extend_from_slice(pos),
            None => self.pos_ids.extend((0..n).map(|i| (i % t) as u32)),
        }
        self.out.resize(n * c, 0.0);
        embedding_forward(&mut self.out, ids, p.of(self.wte), n, c, v);
        if let Some(s) = self.scale {
            self.out.iter_mut().for_each(|x| *x *= s);
        }
        // Position rows gathered by id: with `0..T` the same sums as adding the table's first
        // T rows to each row of the batch.
        let table = Self::position_table(&self.positions, &p);
        self.out
            .par_chunks_exact_mut(c)
            .zip(self.pos_ids.par_iter())
            .for_each(|(row, &pos)| {
                let pos = pos as usize;
                for (x, q) in row.iter_mut().zip(&table[pos * c..(pos + 1) * c]) {
                    *x += q;
                }
            });
        self.drop.forward_inplace(&mut self.out, train, rng);
        Ok(())
    }

    /// Backward of the last forward: accumulates the token (and learned position) table
    /// gradients into `g`, scattering into the rows the forward gathered (its positions);
    /// `dout` is consumed as scratch.
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
