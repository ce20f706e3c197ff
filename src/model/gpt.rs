//! The GPT: an [`Embedding`] (token + position), a [`Stack`] of blocks with the final LayerNorm
//! of pre-LN models, and an LM head that is a [`Linear`] view of the token table, trained with
//! fused softmax cross-entropy.
//!
//! The modules are registered once, by [`GptModules::register`], which both this training model
//! and the inference model ([`super::inference::InferenceModel`]) call, so the two can never
//! disagree on names, order or shapes. A task head (classifier, reward, value) is one more
//! module registered after the trunk ([`Gpt::uninit_with`]), reading the trunk's hidden states
//! ([`Gpt::forward_hidden`]) and sending their gradient back ([`Gpt::backward_hidden`]).
//!
//! Packed rows (supervised fine-tuning's "packing", TRL's `padding_free`): several examples
//! share one row of the batch, given their positions ([`Gpt::forward_hidden_packed`]). Positions
//! restart at 0 for each example and self-attention stays inside each example (the document
//! mask of [`crate::kernels::attention`]), so each token's hidden state, loss and gradient are
//! those of its example run alone: the same training without the padding.
//!
//! Shapes: `ids (B, T)`, residual stream `(B, T, C)`, logits `(B, T, V)`.
//! Parameter names are GPT-2's Hugging Face names without the `transformer.` prefix:
//! `wte.weight (V, C)`, `wpe.weight (n_ctx, C)`, `h.{i}.…`, `ln_f.{weight,bias}`.
//!
//! Mixed precision ([`Gpt::set_precision`] with [`Precision::Bf16`]): the linear layers, the LM
//! head and the attention products multiply in bf16 over a shadow of the weights
//! ([`crate::nn::precision`]) passed in the [`Weights`] view, refreshed by
//! [`Gpt::refresh_bf16_weights`] after each optimizer step; all else stays f32.

use super::config::GptConfig;
use crate::error::{Error, Result};
use crate::kernels::crossentropy::{
    crossentropy_backward_rows, crossentropy_forward, crossentropy_forward_backward,
};
use crate::nn::block::{BlockConfig, NormPlacement};
use crate::nn::embedding::{Embedding, EmbeddingConfig};
use crate::nn::linear::Linear;
use crate::nn::params::{ParamLayout, Params};
use crate::nn::precision::{Bf16Shadow, Precision};
use crate::nn::stack::{GradFn, GradHook, Stack, StackInput};
use crate::nn::weights::Weights;
use crate::rng::Rng;

/// Target value that is not counted in the loss (PyTorch's default `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

/// The modules of a GPT, registered in one place (see the module docs).
#[derive(Clone, Debug)]
pub struct GptModules {
    /// Token + position embedding (`wte`, `wpe`).
    pub embed: Embedding,
    /// The blocks `h.0 … h.{L-1}` and, for pre-LN models, `ln_f`.
    pub stack: Stack,
    /// The LM head: a view of `wte` as an `(V, C)` matrix, no bias.
    pub head: Linear,
}

impl GptModules {
    /// Registers `wte`, `wpe`, `h.*`, `ln_f` in that order, with GPT-2's initialisation: N(0,
    /// 0.02) for matrices and embeddings, N(0, 0.02/sqrt(2·n_layer)) for residual output
    /// projections, zero biases, unit LayerNorm gains.
    pub fn register(config: &GptConfig, layout: &mut ParamLayout) -> Result<Self> {
        config.validate()?;
        let c = config.n_embd;
        let embed = Embedding::new(
            layout,
            &EmbeddingConfig {
                table: "wte.weight",
                position_table: "wpe.weight",
                vocab_size: config.vocab_size,
                n_embd: c,
                n_pos: config.n_ctx,
                positions: config.positions,
                scaled: false,
                std: 0.02,
                dropout: config.dropout,
            },
        )?;
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
        let final_ln = config.norm == NormPlacement::Pre;
        let stack = Stack::new(layout, "", &bcfg, config.n_layer, final_ln)?;
        let head = Linear::tied(embed.wte, c, config.vocab_size);
        Ok(GptModules { embed, stack, head })
    }
}

/// A GPT model with its parameters, gradients and activations.
pub struct Gpt {
    /// The configuration.
    pub config: GptConfig,
    /// Parameters and gradients in one flat layout.
    pub params: Params,
    /// The embedding, the block stack and the tied LM head.
    pub modules: GptModules,
    b: usize,
    t: usize,
    /// Positions `(B, T)` of the last forward's packed rows; empty when it ran `0..T` per row.
    positions: Vec<u32>,
    /// Logits `(B, T, V)` of the last [`Gpt::forward`]; after [`Gpt::forward_backward`] it holds
    /// their gradient instead (the fused loss overwrites them in place).
    pub logits: Vec<f32>,
    losses: Vec<f32>,
    dh: Vec<f32>,
    demb: Vec<f32>,
    precision: Precision,
    /// bf16 copy of `params.data` read by the products when `precision` is bf16 (else empty).
    shadow: Bf16Shadow,
}

/// The first offset of each block `h.{l}` in `layout`, if everything from there to the end is
/// block `l`, a later block or `ln_f` (see [`Gpt::report_final_grads`]).
fn block_starts(layout: &ParamLayout, n_layer: usize) -> Option<Vec<usize>> {
    let block_of =
        |name: &str| -> Option<usize> { name.strip_prefix("h.")?.split('.').next()?.parse().ok() };
    let mut starts = vec![usize::MAX; n_layer];
    for e in layout.entries() {
        if let Some(l) = block_of(&e.name) {
            let s = starts.get_mut(l)?;
            *s = (*s).min(e.param.offset);
        }
    }
    for (l, &start) in starts.iter().enumerate() {
        let after_ok = layout.entries().iter().all(|e| {
            e.param.offset < start
                || e.name.starts_with("ln_f.")
                || block_of(&e.name).is_some_and(|k| k >= l)
        });
        if start == usize::MAX || !after_ok {
            return None;
        }
    }
    Some(starts)
}

impl Gpt {
    /// Builds the layout for `config` and initialises it as GPT-2 does (see
    /// [`GptModules::register`]).
    pub fn new(config: GptConfig, rng: &mut Rng) -> Result<Self> {
        let mut m = Self::uninit(config)?;
        m.params.init(rng);
        Ok(m)
    }

    /// Builds the layout with all parameters zero (for loading a checkpoint).
    pub fn uninit(config: GptConfig) -> Result<Self> {
        Ok(Self::uninit_with(config, |_| Ok(()))?.0)
    }

    /// Builds the layout of the trunk and LM head, then lets `extra` register more modules
    /// after them (a task head), returning what it built. All parameters are zero.
    pub fn uninit_with<H>(
        config: GptConfig,
        extra: impl FnOnce(&mut ParamLayout) -> Result<H>,
    ) -> Result<(Self, H)> {
        let mut layout = ParamLayout::new();
        let modules = GptModules::register(&config, &mut layout)?;
        let head = extra(&mut layout)?;
        Ok((
            Gpt {
                config,
                params: Params::zeros(layout),
                modules,
                b: 0,
                t: 0,
                positions: Vec::new(),
                logits: Vec::new(),
                losses: Vec::new(),
                dh: Vec::new(),
                demb: Vec::new(),
                precision: Precision::F32,
                shadow: Bf16Shadow::default(),
            },
            head,
        ))
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

    /// The parameter layout.
    pub fn layout(&self) -> &ParamLayout {
        &self.params.layout
    }

    /// During every later backward pass, calls `ready(offset, grad)` after each block: every
    /// gradient from `offset` to the end of the flat buffer is then final (data parallelism
    /// starts averaging it, [`crate::dist::reducer`]). That holds when the layout puts the
    /// blocks in order after everything the rest of backward still touches (`wte, wpe, h.0 …
    /// h.{L-1}, ln_f`, as [`GptModules::register`] does, `ln_f` finished before the blocks);
    /// for any other layout no hook is installed and `false` is returned. `None` removes it.
    pub fn report_final_grads(&mut self, ready: Option<GradFn>) -> bool {
        let stack = &mut self.modules.stack;
        stack.grad_hook = GradHook::default();
        let Some(ready) = ready else {
            return false;
        };
        let Some(starts) = block_starts(&self.params.layout, stack.blocks.len()) else {
            return false;
        };
        stack.grad_hook = GradHook::new(move |l, g| ready(starts[l], g));
        true
    }

    /// Refreshes a stale shadow (parameters replaced since the last refresh).
    fn ensure_shadow(&mut self) {
        if self.precision == Precision::Bf16 && self.shadow.data.len() != self.params.data.len() {
            self.refresh_bf16_weights();
        }
    }

    /// The weights the modules read: f32, plus the bf16 shadow in mixed precision.
    fn weights<'a>(data: &'a [f32], shadow: &'a Bf16Shadow, precision: Precision) -> Weights<'a> {
        let w = Weights::new(data);
        match precision {
            Precision::Bf16 => w.with_bf16(&shadow.data),
            Precision::F32 => w,
        }
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

    /// Checks that `positions` describe packed rows of `(B, T)`: each row starts an example at
    /// position 0, and each next position is the previous one plus 1 (same example) or 0 (the
    /// next example).
    fn check_positions(positions: &[u32], b: usize, t: usize) -> Result<()> {
        if positions.len() != b * t {
            return Err(Error::shape(
                "Gpt::forward_hidden_packed",
                format!("positions of length {}", positions.len()),
                format!("(B, T) = ({b}, {t})"),
            ));
        }
        for (r, row) in positions.chunks_exact(t).enumerate() {
            if row[0] != 0 {
                return Err(Error::field(
                    "positions",
                    format!(
                        "row {r} starts at position {}; a packed row starts an example, at 0",
                        row[0]
                    ),
                ));
            }
            for (i, w) in row.windows(2).enumerate() {
                let (prev, x) = (w[0], w[1]);
                if x != 0 && x != prev.wrapping_add(1) {
                    return Err(Error::field(
                        "positions",
                        format!(
                            "row {r}, column {}: position {x} after {prev}; each position must \
                             be the previous one plus 1 (same example) or 0 (a new example)",
                            i + 1
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs the trunk (embedding and blocks, final LayerNorm included) on `ids (B, T)`; the
    /// hidden states `(B, T, C)` are in [`Gpt::hidden`]. In training mode dropout is active and
    /// activations are kept for [`Gpt::backward_hidden`]. The same as
    /// [`Gpt::forward_hidden_packed`] with `positions = None`.
    pub fn forward_hidden(
        &mut self,
        ids: &[u32],
        b: usize,
        t: usize,
        train: bool,
        rng: &mut Rng,
    ) -> Result<()> {
        self.forward_hidden_packed(ids, None, b, t, train, rng)
    }

    /// [`Gpt::forward_hidden`] over packed rows: `positions (B, T)` gives each token's position
    /// inside its own example (0 at the example's first token), which selects its position
    /// embedding, and each token attends only to the earlier tokens of its own example. `None`
    /// is one example per row (`0..T`). [`Gpt::backward_hidden`] uses the same positions.
    ///
    /// Errors: the checks of [`Gpt::forward_hidden`], positions of a length other than `B·T`,
    /// or positions that are not a packing (a row not starting at 0, a step other than +1 or a
    /// restart at 0). Trailing padding can be packed as one more example (its targets ignored).
    pub fn forward_hidden_packed(
        &mut self,
        ids: &[u32],
        positions: Option<&[u32]>,
        b: usize,
        t: usize,
        train: bool,
        rng: &mut Rng,
    ) -> Result<()> {
        self.check_inputs(ids, b, t)?;
        if let Some(pos) = positions {
            Self::check_positions(pos, b, t)?;
        }
        self.ensure_shadow();
        self.b = b;
        self.t = t;
        self.positions.clear();
        self.positions
            .extend_from_slice(positions.unwrap_or_default());
        let p = Self::weights(&self.params.data, &self.shadow, self.precision);
        let m = &mut self.modules;
        m.embed.forward(p, ids, positions, b, t, train, rng)?;
        let inp = StackInput {
            x: &m.embed.out,
            b,
            t,
            key_mask: None,
            positions,
            memory: None,
        };
        m.stack.forward(p, &inp, train, rng);
        Ok(())
    }

    /// Hidden states `(B, T, C)` of the last forward (the LM head's input).
    pub fn hidden(&self) -> &[f32] {
        self.modules.stack.output()
    }

    /// Backward of the last [`Gpt::forward_hidden`] (or [`Gpt::forward_hidden_packed`], with
    /// its positions) from `dh = ∂L/∂hidden (B, T, C)`: accumulates every trunk parameter's
    /// gradient into `params.grad`.
    pub fn backward_hidden(&mut self, dh: &[f32]) {
        let n = self.b * self.t * self.config.n_embd;
        let p = Self::weights(&self.params.data, &self.shadow, self.precision);
        let g = &mut self.params.grad;
        let m = &mut self.modules;
        self.demb.clear();
        self.demb.resize(n, 0.0);
        let inp = StackInput {
            x: &m.embed.out,
            b: self.b,
            t: self.t,
            key_mask: None,
            positions: (!self.positions.is_empty()).then_some(&self.positions[..]),
            memory: None,
        };
        m.stack.backward(p, g, &inp, dh, &mut self.demb, None);
        m.embed.backward(g, &mut self.demb);
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
        self.forward_hidden(ids, b, t, train, rng)?;
        let n = b * t;
        let p = Self::weights(&self.params.data, &self.shadow, self.precision);
        self.logits.resize(n * self.config.vocab_size, 0.0);
        let m = &self.modules;
        m.head.forward(p, &mut self.logits, m.stack.output(), n);
        Ok(())
    }

    /// The checks of an LM backward after a forward of `B·T` rows: the targets, and `dh` of
    /// `B·T·C`. Returns `(B·T, vocabulary)`.
    fn check_lm_backward(
        &self,
        what: &'static str,
        targets: &[i32],
        dh: &[f32],
    ) -> Result<(usize, usize)> {
        self.check_targets(targets)?;
        let n = self.b * self.t;
        let c = self.config.n_embd;
        if dh.len() != n * c {
            return Err(Error::shape(
                what,
                format!("dh of length {}", dh.len()),
                format!("B·T·C = {}", n * c),
            ));
        }
        Ok((n, self.config.vocab_size))
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
        let mut dh = std::mem::take(&mut self.dh);
        dh.clear();
        dh.resize(b * t * self.config.n_embd, 0.0);
        let loss = self.lm_backward(targets, label_smoothing, grad_scale, &mut dh);
        if let Err(e) = loss {
            self.dh = dh;
            return Err(e);
        }
        self.backward_hidden(&dh);
        self.dh = dh;
        loss
    }

    /// The LM loss of the last [`Gpt::forward`] against `targets (B, T)` and its backward as
    /// far as the hidden states: `dh (B, T, C) += grad_scale · ∂loss/∂hidden`, LM-head (`wte`)
    /// gradient accumulated; the trunk is not touched, so a task can add its head's gradient
    /// to `dh` before one [`Gpt::backward_hidden`] (GPT-1 fine-tuning's auxiliary LM loss).
    /// Overwrites [`Gpt::logits`] with their gradient. Returns the mean loss.
    pub fn lm_backward(
        &mut self,
        targets: &[i32],
        label_smoothing: f32,
        grad_scale: f32,
        dh: &mut [f32],
    ) -> Result<f32> {
        let (n, v) = self.check_lm_backward("Gpt::lm_backward", targets, dh)?;
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
        // LM head tied to wte: logits = h · wteᵀ; self.logits now holds ∂L/∂logits.
        let p = Self::weights(&self.params.data, &self.shadow, self.precision);
        let m = &self.modules;
        let g = &mut self.params.grad;
        m.head
            .backward(p, g, Some(dh), &self.logits, m.stack.output(), n);
        Ok(loss)
    }

    /// [`Gpt::lm_backward`] after [`Gpt::forward_hidden`], computing logits only for the rows
    /// whose target is not [`IGNORE_INDEX`]: the same loss and gradients (ignored rows add
    /// nothing to either), without the head's work on padding, which in batches of
    /// ragged sequences (fine-tuning) is often most of the rows. Leaves [`Gpt::logits`] holding
    /// the gradient of the kept rows only.
    pub fn lm_backward_rows(
        &mut self,
        targets: &[i32],
        grad_scale: f32,
        dh: &mut [f32],
    ) -> Result<f32> {
        self.check_lm_backward("Gpt::lm_backward_rows", targets, dh)?;
        let kept = self.kept_logits(targets);
        let (k, v) = (kept.rows.len(), self.config.vocab_size);
        self.losses.resize(k, 0.0);
        let loss = crossentropy_forward_backward(
            &mut self.logits,
            &mut self.losses,
            &kept.targets,
            k,
            v,
            IGNORE_INDEX,
            0.0,
            grad_scale,
        );
        self.kept_backward(&kept, dh);
        Ok(loss)
    }

    /// The mean cross-entropy of [`Gpt::lm_backward_rows`] without its backward (evaluation).
    pub fn lm_loss_rows(&mut self, targets: &[i32]) -> Result<f32> {
        self.check_targets(targets)?;
        let kept = self.kept_logits(targets);
        let k = kept.rows.len();
        self.losses.resize(k, 0.0);
        Ok(crossentropy_forward(
            &mut self.losses,
            &self.logits,
            &kept.targets,
            k,
            self.config.vocab_size,
            IGNORE_INDEX,
            0.0,
        ))
    }

    /// After [`Gpt::forward_hidden`]: the logits `(k, V)` of the `k` rows whose target is not
    /// [`IGNORE_INDEX`], in row order.
    pub fn lm_logits_rows(&mut self, targets: &[i32]) -> Result<&[f32]> {
        self.check_targets(targets)?;
        self.kept_logits(targets);
        Ok(&self.logits)
    }

    /// After [`Gpt::forward_hidden`]: `log p(targets[r])` of every row whose target is not
    /// [`IGNORE_INDEX`] (0 for the others), `(B·T)`. Keeps the logits of those rows for
    /// [`Gpt::token_logprobs_backward`]. (Sequence log-probabilities of DPO.)
    pub fn token_logprobs(&mut self, targets: &[i32]) -> Result<Vec<f32>> {
        self.check_targets(targets)?;
        let kept = self.kept_logits(targets);
        let k = kept.rows.len();
        self.losses.resize(k, 0.0);
        crossentropy_forward(
            &mut self.losses,
            &self.logits,
            &kept.targets,
            k,
            self.config.vocab_size,
            IGNORE_INDEX,
            0.0,
        );
        let mut out = vec![0.0f32; targets.len()];
        for (&r, &l) in kept.rows.iter().zip(&self.losses) {
            out[r] = -l;
        }
        Ok(out)
    }

    /// Backward of the last [`Gpt::token_logprobs`] (same `targets`) as far as the hidden
    /// states: with `dlogp[r] = ∂L/∂log p(targets[r])`, `dh (B, T, C) += ∂L/∂hidden` and the
    /// LM head's gradient accumulated; the trunk is not touched (see [`Gpt::lm_backward`]).
    pub fn token_logprobs_backward(
        &mut self,
        targets: &[i32],
        dlogp: &[f32],
        dh: &mut [f32],
    ) -> Result<()> {
        self.check_lm_backward("Gpt::token_logprobs_backward", targets, dh)?;
        if dlogp.len() != targets.len() {
            return Err(Error::shape(
                "Gpt::token_logprobs_backward",
                format!("dlogp of length {}", dlogp.len()),
                format!("B·T = {}", targets.len()),
            ));
        }
        let rows: Vec<usize> = (0..targets.len())
            .filter(|&r| targets[r] != IGNORE_INDEX)
            .collect();
        let k = rows.len();
        let v = self.config.vocab_size;
        if self.logits.len() != k * v {
            return Err(Error::usage(
                "Gpt::token_logprobs_backward",
                "call token_logprobs with the same targets first",
            ));
        }
        let kept_targets: Vec<i32> = rows.iter().map(|&r| targets[r]).collect();
        // ∂L/∂logits = dlogp · (onehot − softmax): the cross-entropy gradient scaled by −dlogp.
        let scales: Vec<f32> = rows.iter().map(|&r| -dlogp[r]).collect();
        crossentropy_backward_rows(&mut self.logits, &kept_targets, &scales, k, v);
        let kept = Kept {
            hidden: self.gather_hidden(&rows),
            rows,
            targets: kept_targets,
        };
        self.kept_backward(&kept, dh);
        Ok(())
    }

    /// The hidden rows `rows` of the last forward, `(k, C)`.
    fn gather_hidden(&self, rows: &[usize]) -> Vec<f32> {
        let c = self.config.n_embd;
        let hidden = self.modules.stack.output();
        let mut h = Vec::with_capacity(rows.len() * c);
        for &r in rows {
            h.extend_from_slice(&hidden[r * c..(r + 1) * c]);
        }
        h
    }

    /// Gathers the rows whose target is not ignored and runs the LM head on them:
    /// [`Gpt::logits`] becomes `(k, V)`.
    fn kept_logits(&mut self, targets: &[i32]) -> Kept {
        let rows: Vec<usize> = (0..targets.len())
            .filter(|&r| targets[r] != IGNORE_INDEX)
            .collect();
        let hidden = self.gather_hidden(&rows);
        let k = rows.len();
        let p = Self::weights(&self.params.data, &self.shadow, self.precision);
        self.logits.resize(k * self.config.vocab_size, 0.0);
        self.modules.head.forward(p, &mut self.logits, &hidden, k);
        Kept {
            targets: rows.iter().map(|&r| targets[r]).collect(),
            rows,
            hidden,
        }
    }

    /// The LM head's backward from the kept rows' logit gradient (in [`Gpt::logits`]),
    /// scattering `∂L/∂hidden` into their rows of `dh`.
    fn kept_backward(&mut self, kept: &Kept, dh: &mut [f32]) {
        let c = self.config.n_embd;
        let k = kept.rows.len();
        let p = Self::weights(&self.params.data, &self.shadow, self.precision);
        let mut dh_kept = vec![0.0f32; k * c];
        self.modules.head.backward(
            p,
            &mut self.params.grad,
            Some(&mut dh_kept),
            &self.logits,
            &kept.hidden,
            k,
        );
        for (i, &r) in kept.rows.iter().enumerate() {
            for (d, s) in dh[r * c..(r + 1) * c]
                .iter_mut()
                .zip(&dh_kept[i * c..(i + 1) * c])
            {
                *d += s;
            }
        }
    }
}

/// The rows of a batch the LM head runs on: their indices, targets and hidden states.
struct Kept {
    rows: Vec<usize>,
    targets: Vec<i32>,
    hidden: Vec<f32>,
}
