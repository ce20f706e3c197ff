//! The fine-tuning model: the GPT trunk, its tied LM head (for the auxiliary loss) and the
//! [`ClassifierHead`] registered after the trunk, with the batch layout and the loss
//! `L3 = L2 + λ·L1` (Radford et al. 2018, eq. 5).
//!
//! A batch of `n` examples is `R = n · S` rows (`S` = 1 for classify and entail, 2 for similar,
//! K for choice), right-padded to the longest row `T`. Why right padding: with learned
//! positions a row's tokens must sit at positions `0..len`, and with causal attention nothing
//! before the extract token ever sees a padding token after it, so a padded row's hidden
//! states (and hence every result) equal the unpadded row's; no attention mask is needed.
//! Left padding would shift the positions (`tests/finetune_padding.rs` checks both claims).
//!
//! Losses: L2 is the mean over examples of the task cross-entropy (classify / entail /
//! similar: softmax over the labels; choice: softmax over the K answers' scalars). L1 is the
//! mean next-token cross-entropy over every real (non-padding) target of every row: the
//! tokens after `start`, the delimiter and the extract token included, as `transformers`'
//! `run_openai_gpt.py` does; padding is ignored. Gradients of both meet at the hidden states
//! and go through the trunk once.

use super::transform::Example;
use super::TaskKind;
use crate::error::{Error, Result};
use crate::kernels::crossentropy::{crossentropy_forward, crossentropy_forward_backward};
use crate::model::gpt::IGNORE_INDEX;
use crate::model::Gpt;
use crate::nn::classifier::ClassifierHead;
use crate::nn::weights::Weights;
use crate::rng::Rng;

/// A right-padded batch of examples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// Token ids `(R, T)`, padding after each row's tokens.
    pub ids: Vec<u32>,
    /// Real length of each row `(R)`; the extract token is at `len - 1`.
    pub lens: Vec<usize>,
    /// Next-token targets `(R, T)`, [`IGNORE_INDEX`] past each row's last real target.
    pub targets: Vec<i32>,
    /// Label index of each example `(n)` ([`IGNORE_INDEX`] when unlabelled).
    pub labels: Vec<i32>,
    /// Examples.
    pub n: usize,
    /// Rows per example.
    pub per_example: usize,
    /// Padded length.
    pub t: usize,
}

impl Batch {
    /// Rows `R = n · per_example`.
    pub fn rows(&self) -> usize {
        self.n * self.per_example
    }

    /// Real tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Lays `examples` out as rows padded with `pad` to the longest row (at least `min_t`).
    pub fn build(examples: &[&Example], pad: u32, min_t: usize) -> Result<Batch> {
        let per = examples.first().map_or(0, |e| e.seqs.len());
        if examples.is_empty() || per == 0 || examples.iter().any(|e| e.seqs.len() != per) {
            return Err(Error::usage(
                "Batch::build",
                "examples must be non-empty with the same number of sequences",
            ));
        }
        let t = examples
            .iter()
            .flat_map(|e| e.seqs.iter().map(Vec::len))
            .max()
            .unwrap_or(0)
            .max(min_t);
        let mut b = Batch {
            n: examples.len(),
            per_example: per,
            t,
            ..Batch::default()
        };
        for e in examples {
            for s in &e.seqs {
                b.lens.push(s.len());
                b.ids.extend_from_slice(s);
                b.ids.extend(std::iter::repeat_n(pad, t - s.len()));
                b.targets.extend(s[1..].iter().map(|&x| x as i32));
                b.targets
                    .extend(std::iter::repeat_n(IGNORE_INDEX, t + 1 - s.len()));
            }
            b.labels.push(e.label.map_or(IGNORE_INDEX, |l| l as i32));
        }
        Ok(b)
    }
}

/// The losses of one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Losses {
    /// L2: the task cross-entropy (mean over examples).
    pub task: f32,
    /// L1: the LM cross-entropy (mean over real targets); `None` when λ = 0 (not computed).
    pub lm: Option<f32>,
    /// L3 = L2 + λ·L1.
    pub total: f32,
}

/// The trunk, the LM head and the task head.
pub struct FinetuneModel {
    /// The GPT (trunk + tied LM head); the task head's tensor is the last of its layout.
    pub gpt: Gpt,
    /// The head: dropout + `score.weight (K, C)`.
    pub head: ClassifierHead,
    /// The task.
    pub task: TaskKind,
    /// Head input `(N, C)`: extract rows (similar: summed per example).
    pooled: Vec<f32>,
    /// Head output `(N, K)`, reshaped to the example scores `(n, classes)`; after a backward,
    /// their gradient.
    scores: Vec<f32>,
    losses: Vec<f32>,
    dh: Vec<f32>,
    dpooled: Vec<f32>,
}

impl FinetuneModel {
    /// Wraps a model whose layout ends with `head`'s tensor.
    pub fn new(gpt: Gpt, head: ClassifierHead, task: TaskKind) -> Self {
        FinetuneModel {
            gpt,
            head,
            task,
            pooled: Vec::new(),
            scores: Vec::new(),
            losses: Vec::new(),
            dh: Vec::new(),
            dpooled: Vec::new(),
        }
    }

    /// Classes an example is scored over: the labels, or the choices of a choice batch.
    fn classes(&self, b: &Batch) -> usize {
        match self.task {
            TaskKind::Choice => b.per_example,
            _ => self.head.n_out(),
        }
    }

    /// Head rows `N`: examples, or every row for choice.
    fn head_rows(&self, b: &Batch) -> usize {
        match self.task {
            TaskKind::Choice => b.rows(),
            _ => b.n,
        }
    }

    /// Runs the trunk and the head; the example scores `(n, classes)` are in
    /// [`FinetuneModel::scores`]. (The auxiliary LM loss's logits are computed in
    /// [`FinetuneModel::forward_backward`], for the real tokens only.)
    pub fn forward(&mut self, b: &Batch, train: bool, rng: &mut Rng) -> Result<()> {
        self.gpt.forward_hidden(&b.ids, b.rows(), b.t, train, rng)?;
        let c = self.gpt.config.n_embd;
        let h = self.gpt.hidden();
        let n_head = self.head_rows(b);
        self.pooled.clear();
        self.pooled.resize(n_head * c, 0.0);
        // Row r's extract state is h[r, len_r - 1]; similar sums its two rows per example.
        let per_head_row = if self.task == TaskKind::Similar {
            b.per_example
        } else {
            1
        };
        for (r, &len) in b.lens.iter().enumerate() {
            let src = &h[(r * b.t + len - 1) * c..(r * b.t + len) * c];
            let dst = &mut self.pooled[(r / per_head_row) * c..(r / per_head_row + 1) * c];
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        }
        self.scores.clear();
        self.scores.resize(n_head * self.head.n_out(), 0.0);
        let w = Weights::new(&self.gpt.params.data);
        self.head
            .forward(w, &mut self.scores, &self.pooled, n_head, train, rng);
        Ok(())
    }

    /// Per-example task losses of the last [`FinetuneModel::forward_backward`] or
    /// [`FinetuneModel::task_loss`].
    pub fn example_losses(&self) -> &[f32] {
        &self.losses
    }

    /// Example scores `(n, classes)` of the last forward (logits before the softmax).
    pub fn scores(&self) -> &[f32] {
        &self.scores
    }

    /// Class probabilities `(n, classes)` of the last forward.
    pub fn probs(&self, b: &Batch) -> Vec<f32> {
        let k = self.classes(b);
        let mut p = self.scores.clone();
        for row in p.chunks_mut(k) {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x as f64;
            }
            for x in row.iter_mut() {
                *x = (*x as f64 / sum) as f32;
            }
        }
        p
    }

    /// L2 of the last forward (mean task cross-entropy over the labelled examples).
    pub fn task_loss(&mut self, b: &Batch) -> f32 {
        let k = self.classes(b);
        self.losses.resize(b.n, 0.0);
        crossentropy_forward(
            &mut self.losses,
            &self.scores,
            &b.labels,
            b.n,
            k,
            IGNORE_INDEX,
            0.0,
        )
    }

    /// One training pass: forward (dropout active), `L3 = L2 + λ·L1`, and backward,
    /// accumulating `scale · ∂L3/∂θ` into `gpt.params.grad`.
    pub fn forward_backward(
        &mut self,
        b: &Batch,
        lambda: f32,
        scale: f32,
        rng: &mut Rng,
    ) -> Result<Losses> {
        if b.labels.contains(&IGNORE_INDEX) {
            return Err(Error::usage(
                "FinetuneModel::forward_backward",
                "every training example needs a label",
            ));
        }
        let lm = lambda != 0.0;
        self.forward(b, true, rng)?;
        let (c, k, n_head) = (self.gpt.config.n_embd, self.classes(b), self.head_rows(b));
        self.losses.resize(b.n, 0.0);
        let task = crossentropy_forward_backward(
            &mut self.scores,
            &mut self.losses,
            &b.labels,
            b.n,
            k,
            IGNORE_INDEX,
            0.0,
            scale,
        );
        // Head backward: scores now hold ∂(scale·L2)/∂scores.
        self.dpooled.clear();
        self.dpooled.resize(n_head * c, 0.0);
        {
            let w = Weights::new(&self.gpt.params.data);
            self.head.backward(
                w,
                &mut self.gpt.params.grad,
                &mut self.dpooled,
                &self.scores,
                n_head,
            );
        }
        let mut dh = std::mem::take(&mut self.dh);
        dh.clear();
        dh.resize(b.rows() * b.t * c, 0.0);
        let per_head_row = if self.task == TaskKind::Similar {
            b.per_example
        } else {
            1
        };
        for (r, &len) in b.lens.iter().enumerate() {
            let src = &self.dpooled[(r / per_head_row) * c..(r / per_head_row + 1) * c];
            dh[(r * b.t + len - 1) * c..(r * b.t + len) * c].copy_from_slice(src);
        }
        let lm_loss = if lm {
            match self
                .gpt
                .lm_backward_rows(&b.targets, scale * lambda, &mut dh)
            {
                Ok(l) => Some(l),
                Err(e) => {
                    self.dh = dh;
                    return Err(e);
                }
            }
        } else {
            None
        };
        self.gpt.backward_hidden(&dh);
        self.dh = dh;
        Ok(Losses {
            task,
            lm: lm_loss,
            total: task + lambda * lm_loss.unwrap_or(0.0),
        })
    }
}
