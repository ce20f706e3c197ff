//! The GPT: token (+ position) embeddings, a stack of [`Block`]s, an optional final LayerNorm
//! and an LM head tied to the token embedding, trained with fused softmax cross-entropy.
//!
//! Shapes: `ids (B, T)`, residual stream `(B, T, C)`, logits `(B, T, V)`.
//! Parameter names are GPT-2's Hugging Face names without the `transformer.` prefix:
//! `wte.weight (V, C)`, `wpe.weight (n_ctx, C)`, `h.{i}.…`, `ln_f.{weight,bias}`.
//!
//! Mixed precision ([`Gpt::set_precision`] with [`Precision::Bf16`]): the linear layers and the
//! LM head multiply in bf16 over a shadow of the weights ([`crate::nn::precision`]), refreshed by
//! [`Gpt::refresh_bf16_weights`] after each optimizer step; all else stays f32.

use super::config::{GptConfig, Positions};
use crate::error::{Error, Result};
use crate::kernels::bf16::{linear_backward_bf16, linear_forward_bf16};
use crate::kernels::crossentropy::{crossentropy_forward, crossentropy_forward_backward};
use crate::kernels::embedding::{embedding_backward, embedding_forward, sinusoidal_positions};
use crate::kernels::matmul::{linear_backward, linear_forward, WeightLayout};
use crate::kernels::residual::add_inplace;
use crate::nn::block::{Block, BlockConfig, BlockInput, NormPlacement};
use crate::nn::dropout::Dropout;
use crate::nn::layernorm::LayerNorm;
use crate::nn::params::{Init, Param, ParamLayout, Params};
use crate::nn::precision::{current_shadow, with_bf16_weights, Bf16Shadow, Precision};
use crate::rng::Rng;

/// Target value that is not counted in the loss (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// A GPT model with its parameters, gradients and activations.
pub struct Gpt {
    /// The configuration.
    pub config: GptConfig,
    /// Parameters and gradients in one flat layout.
    pub params: Params,
    wte: Param,
    wpe: Option<Param>,
    sinusoid: Vec<f32>,
    /// The blocks `h.0 … h.{L-1}`.
    pub blocks: Vec<Block>,
    /// Final LayerNorm (pre-LN models only).
    pub ln_f: Option<LayerNorm>,
    emb_drop: Dropout,
    // Activations of the last forward, sized once per (B, T).
    b: usize,
    t: usize,
    ids: Vec<u32>,
    pos_ids: Vec<u32>,
    emb: Vec<f32>,
    /// Logits `(B, T, V)` of the last [`Gpt::forward`]; after [`Gpt::forward_backward`] it holds
    /// their gradient instead (the fused loss overwrites them in place).
    pub logits: Vec<f32>,
    losses: Vec<f32>,
    dx: Vec<f32>,
    dy: Vec<f32>,
    precision: Precision,
    /// bf16 copy of `params.data` read by the products when `precision` is bf16 (else empty).
    shadow: Bf16Shadow,
}

impl Gpt {
    /// Builds the layout for `config` and initialises it as GPT-2 does: N(0, 0.02) for matrices
    /// and embeddings, N(0, 0.02/sqrt(2·n_layer)) for residual output projections, zero biases,
    /// unit LayerNorm gains.
    pub fn new(config: GptConfig, rng: &mut Rng) -> Result<Self> {
        let mut m = Self::uninit(config)?;
        m.params.init(rng);
        Ok(m)
    }

    /// Builds the layout with all parameters zero (for loading a checkpoint).
    pub fn uninit(config: GptConfig) -> Result<Self> {
        config.validate()?;
        let c = config.n_embd;
        let mut layout = ParamLayout::new();
        let wte = layout.add(
            "wte.weight",
            &[config.vocab_size, c],
            true,
            Init::Normal(0.02),
        )?;
        let wpe = match config.positions {
            Positions::Learned => {
                Some(layout.add("wpe.weight", &[config.n_ctx, c], true, Init::Normal(0.02))?)
            }
            Positions::Sinusoidal => None,
        };
        let bcfg = BlockConfig {
            n_embd: c,
            n_head: config.n_head,
            hidden: 4 * c,
            bias: config.bias,
            activation: config.activation,
            dropout: config.dropout,
            norm: config.norm,
            ln_eps: config.ln_eps,
            causal: true,
            cross: false,
            std: 0.02,
            proj_std: 0.02 / (2.0 * config.n_layer as f32).sqrt(),
        };
        let blocks = (0..config.n_layer)
            .map(|i| Block::new(&mut layout, &format!("h.{i}"), &bcfg))
            .collect::<Result<Vec<_>>>()?;
        let ln_f = match config.norm {
            NormPlacement::Pre => Some(LayerNorm::new(&mut layout, "ln_f", c, config.ln_eps)?),
            NormPlacement::Post => None,
        };
        let mut sinusoid = Vec::new();
        if config.positions == Positions::Sinusoidal {
            sinusoid = vec![0.0; config.n_ctx * c];
            sinusoidal_positions(&mut sinusoid, config.n_ctx, c);
        }
        Ok(Gpt {
            emb_drop: Dropout::new(config.dropout),
            config,
            params: Params::zeros(layout),
            wte,
            wpe,
            sinusoid,
            blocks,
            ln_f,
            b: 0,
            t: 0,
            ids: Vec::new(),
            pos_ids: Vec::new(),
            emb: Vec::new(),
            logits: Vec::new(),
            losses: Vec::new(),
            dx: Vec::new(),
            dy: Vec::new(),
            precision: Precision::F32,
            shadow: Bf16Shadow::default(),
        })
    }

    /// Sets the precision of the matrix products. bf16 builds the shadow weights from the
    /// current parameters; f32 frees them.
    pub fn set_precision(&mut self, precision: Precision) {
        self.precision = precision;
        self.shadow = Bf16Shadow::default();
        self.refresh_bf16_weights();
    }

    /// The precision of the matrix products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Re-rounds the bf16 shadow from the f32 parameters (a no-op in f32). Call after every
    /// change to `params.data`: the trainer does after each optimizer step, not per micro-batch.
    pub fn refresh_bf16_weights(&mut self) {
        if self.precision == Precision::Bf16 {
            self.shadow.refresh(&self.params.data);
        }
    }

    /// Runs `f` on the model, inside the bf16 scope when the precision asks for it.
    fn with_precision<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        if self.precision == Precision::F32 {
            return f(self);
        }
        if self.shadow.data.len() != self.params.data.len() {
            self.refresh_bf16_weights();
        }
        let shadow = std::mem::take(&mut self.shadow);
        let r = with_bf16_weights(&shadow.data, || f(self));
        self.shadow = shadow;
        r
    }

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.params.layout
    }

    fn check_inputs(&self, ids: &[u32], b: usize, t: usize) -> Result<()> {
        if t == 0 || b == 0 {
            return Err(Error::shape(
                "Gpt::forward",
                format!("(B, T) = ({b}, {t})"),
                "B > 0 and T > 0",
            ));
        }
        if t > self.config.n_ctx {
            return Err(Error::Config {
                field: "block_size".into(),
                reason: format!(
                    "sequence length {t} exceeds the context n_ctx = {}",
                    self.config.n_ctx
                ),
            });
        }
        if ids.len() != b * t {
            return Err(Error::shape(
                "Gpt::forward",
                format!("ids of length {}", ids.len()),
                format!("(B, T) = ({b}, {t})"),
            ));
        }
        if let Some(&id) = ids
            .iter()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(Error::TokenOutOfRange {
                id: id as usize,
                vocab_size: self.config.vocab_size,
            });
        }
        Ok(())
    }

    /// Runs the model on `ids (B, T)`, leaving logits `(B, T, V)` in [`Gpt::logits`]. In training
    /// mode dropout is active and activations are kept for [`Gpt::forward_backward`].
    pub fn forward(
        &mut self,
        ids: &[u32],
        b: usize,
        t: usize,
        train: bool,
        rng: &mut Rng,
    ) -> Result<()> {
        self.check_inputs(ids, b, t)?;
        self.with_precision(|m| m.forward_checked(ids, b, t, train, rng));
        Ok(())
    }

    /// [`Gpt::forward`] after its input checks.
    fn forward_checked(&mut self, ids: &[u32], b: usize, t: usize, train: bool, rng: &mut Rng) {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let n = b * t;
        let p = &self.params.data;
        self.b = b;
        self.t = t;
        self.ids.clear();
        self.ids.extend_from_slice(ids);
        self.emb.resize(n * c, 0.0);
        embedding_forward(&mut self.emb, ids, self.wte.of(p), n, c, v);
        match self.wpe {
            Some(wpe) => {
                self.pos_ids.clear();
                self.pos_ids.extend((0..n).map(|i| (i % t) as u32));
                let table = &wpe.of(p)[..t * c];
                for row in self.emb.chunks_exact_mut(t * c) {
                    add_inplace(row, table);
                }
            }
            None => {
                for row in self.emb.chunks_exact_mut(t * c) {
                    add_inplace(row, &self.sinusoid[..t * c]);
                }
            }
        }
        self.emb_drop.forward_inplace(&mut self.emb, train, rng);
        for l in 0..self.blocks.len() {
            let (prev, rest) = self.blocks.split_at_mut(l);
            let x = if l == 0 {
                &self.emb[..]
            } else {
                prev[l - 1].output()
            };
            let inp = BlockInput {
                x,
                b,
                t,
                key_mask: None,
                memory: None,
            };
            rest[0].forward(p, &inp, train, rng);
        }
        let last = self.blocks.last().map_or(&self.emb[..], |blk| blk.output());
        let x = match &mut self.ln_f {
            Some(ln) => {
                ln.forward(p, last, n);
                &ln.out[..]
            }
            None => last,
        };
        self.logits.resize(n * v, 0.0);
        let (logits, wte) = (&mut self.logits, self.wte);
        current_shadow(|shadow| match shadow {
            Some(s) => {
                let w = &s[wte.range()];
                linear_forward_bf16(logits, x, w, None, n, c, v, WeightLayout::OutIn);
            }
            None => linear_forward(logits, x, wte.of(p), None, n, c, v, WeightLayout::OutIn),
        });
    }

    fn check_targets(&self, targets: &[i32]) -> Result<()> {
        let n = self.b * self.t;
        if targets.len() != n {
            return Err(Error::shape(
                "Gpt::loss",
                format!("targets of length {}", targets.len()),
                format!("B·T = {n}"),
            ));
        }
        if let Some(&bad) = targets
            .iter()
            .find(|&&y| y != IGNORE_INDEX && (y < 0 || y as usize >= self.config.vocab_size))
        {
            return Err(Error::TokenOutOfRange {
                id: bad.max(0) as usize,
                vocab_size: self.config.vocab_size,
            });
        }
        Ok(())
    }

    /// Mean cross-entropy of the last forward's logits against `targets (B, T)`
    /// ([`IGNORE_INDEX`] rows not counted). Leaves the logits intact.
    pub fn loss(&mut self, targets: &[i32]) -> Result<f32> {
        self.check_targets(targets)?;
        let n = self.b * self.t;
        self.losses.resize(n, 0.0);
        Ok(crossentropy_forward(
            &mut self.losses,
            &self.logits,
            targets,
            n,
            self.config.vocab_size,
            IGNORE_INDEX,
            0.0,
        ))
    }

    /// One training pass: forward in training mode, fused cross-entropy, and backward,
    /// accumulating `grad_scale · ∂loss/∂θ` into `params.grad` (`grad_scale` = 1/accumulation
    /// steps). Returns the mean loss. `label_smoothing` is usually 0.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward(
        &mut self,
        ids: &[u32],
        targets: &[i32],
        b: usize,
        t: usize,
        label_smoothing: f32,
        grad_scale: f32,
        rng: &mut Rng,
    ) -> Result<f32> {
        self.forward(ids, b, t, true, rng)?;
        self.check_targets(targets)?;
        let v = self.config.vocab_size;
        let n = b * t;
        self.losses.resize(n, 0.0);
        let loss = crossentropy_forward_backward(
            &mut self.logits,
            &mut self.losses,
            targets,
            n,
            v,
            IGNORE_INDEX,
            label_smoothing,
            grad_scale,
        );
        self.with_precision(|m| m.backward_from_dlogits());
        Ok(loss)
    }

    /// Backward from `self.logits` holding ∂L/∂logits.
    fn backward_from_dlogits(&mut self) {
        let (b, t) = (self.b, self.t);
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let n = b * t;
        let p = &self.params.data;
        let g = &mut self.params.grad;
        self.dy.clear();
        self.dy.resize(n * c, 0.0);
        // LM head tied to wte: logits = x · wteᵀ.
        let last = self.blocks.last().map_or(&self.emb[..], |blk| blk.output());
        let x_head = self.ln_f.as_ref().map_or(last, |ln| &ln.out[..]);
        let (dy, dlogits, wte) = (&mut self.dy, &self.logits, self.wte);
        let dw = wte.of_mut(g);
        current_shadow(|shadow| match shadow {
            Some(s) => {
                let w = &s[wte.range()];
                let head = WeightLayout::OutIn;
                linear_backward_bf16(Some(dy), dw, None, dlogits, x_head, w, n, c, v, head);
            }
            None => {
                let w = wte.of(p);
                linear_backward(
                    Some(dy),
                    dw,
                    None,
                    dlogits,
                    x_head,
                    w,
                    n,
                    c,
                    v,
                    WeightLayout::OutIn,
                );
            }
        });
        if let Some(ln) = &self.ln_f {
            self.dx.clear();
            self.dx.resize(n * c, 0.0);
            ln.backward(p, g, &mut self.dx, &self.dy, last);
            std::mem::swap(&mut self.dx, &mut self.dy);
        }
        for l in (0..self.blocks.len()).rev() {
            self.dx.clear();
            self.dx.resize(n * c, 0.0);
            let (prev, rest) = self.blocks.split_at_mut(l);
            let x = if l == 0 {
                &self.emb[..]
            } else {
                prev[l - 1].output()
            };
            let inp = BlockInput {
                x,
                b,
                t,
                key_mask: None,
                memory: None,
            };
            rest[0].backward(p, g, &inp, &self.dy, &mut self.dx, None);
            std::mem::swap(&mut self.dx, &mut self.dy);
        }
        // self.dy now holds ∂L/∂emb.
        self.emb_drop.backward_inplace(&mut self.dy);
        embedding_backward(self.wte.of_mut(g), &self.dy, &self.ids, n, c, v);
        if let Some(wpe) = self.wpe {
            embedding_backward(
                wpe.of_mut(g),
                &self.dy,
                &self.pos_ids,
                n,
                c,
                self.config.n_ctx,
            );
        }
    }
}
