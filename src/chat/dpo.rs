//! Direct preference optimisation (`gpt dpo`; Rafailov et al. 2023, TRL `DPOTrainer`'s
//! defaults) as a [`Task`] of the one training loop.
//!
//! For a pair, `π_c`, `π_r` are the policy's log-probabilities of the chosen and the rejected
//! answer, summed over the answer's tokens, and
//! `ρ_c`, `ρ_r` the frozen reference's (the starting model), computed once before training (TRL's
//! `precompute_ref_log_probs`, which gives the same values as computing them every step: the
//! reference never changes and dropout is off). With `h = (π_c − ρ_c) − (π_r − ρ_r)`:
//!
//! ```text
//! sigmoid  L = −log σ(β·h)
//! ipo      L = (h' − 1/(2β))²     h' = (π_c − ρ_c)/n_c − (π_r − ρ_r)/n_r  (n: answer tokens)
//! hinge    L = max(0, 1 − β·h)
//! ```
//!
//! averaged over the pairs of a micro-batch. Metrics (TRL's names): `rewards/chosen` = mean of
//! `β(π_c − ρ_c)`, `rewards/rejected` = mean of `β(π_r − ρ_r)`, `rewards/accuracies` = the
//! fraction with the chosen reward above the rejected one, `rewards/margins` = the mean
//! difference; at step 0 (policy = reference) the sigmoid loss is ln 2 and the rewards 0.
//! Validation adds `eval/kl`: the mean over the validation answers' positions of
//! `KL(π(·|context) ‖ π_ref(·|context))`, the exact divergence of the next-token distributions.

use super::config::{plan_steps, start_run, task_state, ChatTrainConfig, DpoLoss};
use super::encode::ChatEncoder;
use super::model::{load_chat_base, save_chat_model};
use super::pairs::{encode_run_pairs, PairBatch, PairData, PairSeqs};
use super::reward::say_pairs;
use super::template::ChatTemplate;
use crate::error::Result;
use crate::model::Gpt;
use crate::nn::params::Params;
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use crate::train::checkpoint::state_field;
use crate::train::epoch_order::EpochOrder;
use crate::train::task::{MicroStep, Task};
use crate::train::trainer::{run, TrainOptions, TrainOutcome};
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Sequence log-probabilities of one pair (summed over the answers' tokens).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairLogps {
    /// Of the chosen answer.
    pub chosen: f64,
    /// Of the rejected answer.
    pub rejected: f64,
    /// Tokens of the chosen answer that were scored.
    pub n_chosen: usize,
    /// Tokens of the rejected answer that were scored.
    pub n_rejected: usize,
}

/// The loss of one pair and its derivatives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PairLoss {
    /// The loss.
    pub loss: f64,
    /// `∂L/∂π_c`.
    pub d_chosen: f64,
    /// `∂L/∂π_r`.
    pub d_rejected: f64,
    /// `β(π_c − ρ_c)`.
    pub reward_chosen: f64,
    /// `β(π_r − ρ_r)`.
    pub reward_rejected: f64,
}

/// DPO's loss of one pair from policy and reference log-probabilities (see the module docs).
pub fn pair_loss(kind: DpoLoss, beta: f64, policy: PairLogps, reference: PairLogps) -> PairLoss {
    let h = (policy.chosen - reference.chosen) - (policy.rejected - reference.rejected);
    // IPO works on log-ratios averaged over each answer's tokens.
    let (nc, nr) = (
        policy.n_chosen.max(1) as f64,
        policy.n_rejected.max(1) as f64,
    );
    let (loss, dh) = match kind {
        DpoLoss::Sigmoid => {
            let z = beta * h;
            // −log σ(z) stably; its derivative is σ(z) − 1 = −σ(−z).
            let loss = if z > 0.0 {
                (-z).exp().ln_1p()
            } else {
                -z + z.exp().ln_1p()
            };
            let sig_neg = 1.0 / (1.0 + z.exp());
            (loss, -beta * sig_neg)
        }
        DpoLoss::Ipo => {
            let avg = (policy.chosen - reference.chosen) / nc
                - (policy.rejected - reference.rejected) / nr;
            let d = avg - 1.0 / (2.0 * beta);
            return PairLoss {
                loss: d * d,
                d_chosen: 2.0 * d / nc,
                d_rejected: -2.0 * d / nr,
                reward_chosen: beta * (policy.chosen - reference.chosen),
                reward_rejected: beta * (policy.rejected - reference.rejected),
            };
        }
        DpoLoss::Hinge => {
            let m = 1.0 - beta * h;
            if m > 0.0 {
                (m, -beta)
            } else {
                (0.0, 0.0)
            }
        }
    };
    PairLoss {
        loss,
        d_chosen: dh,
        d_rejected: -dh,
        reward_chosen: beta * (policy.chosen - reference.chosen),
        reward_rejected: beta * (policy.rejected - reference.rejected),
    }
}

/// Means over pairs of the loss and TRL's four reward metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct DpoMetrics {
    /// Mean loss.
    pub loss: f64,
    /// `rewards/chosen`.
    pub chosen: f64,
    /// `rewards/rejected`.
    pub rejected: f64,
    /// `rewards/accuracies`.
    pub accuracies: f64,
    /// `rewards/margins`.
    pub margins: f64,
    /// Pairs.
    pub pairs: usize,
}

impl DpoMetrics {
    /// The metrics of `losses`.
    pub fn of(losses: &[PairLoss]) -> DpoMetrics {
        let n = losses.len().max(1) as f64;
        let mean = |f: &dyn Fn(&PairLoss) -> f64| losses.iter().map(f).sum::<f64>() / n;
        DpoMetrics {
            loss: mean(&|l| l.loss),
            chosen: mean(&|l| l.reward_chosen),
            rejected: mean(&|l| l.reward_rejected),
            accuracies: mean(&|l| (l.reward_chosen > l.reward_rejected) as u8 as f64),
            margins: mean(&|l| l.reward_chosen - l.reward_rejected),
            pairs: losses.len(),
        }
    }

    /// As named metrics with `prefix` (`""` or `"eval/"`).
    pub fn named(&self, prefix: &str) -> Vec<(String, f32)> {
        vec![
            (format!("{prefix}rewards/chosen"), self.chosen as f32),
            (format!("{prefix}rewards/rejected"), self.rejected as f32),
            (
                format!("{prefix}rewards/accuracies"),
                self.accuracies as f32,
            ),
            (format!("{prefix}rewards/margins"), self.margins as f32),
        ]
    }
}

/// Per-pair sequence log-probabilities of `batch` under `gpt` (evaluation mode unless
/// `train`), summed over each answer's tokens.
fn batch_logps(
    gpt: &mut Gpt,
    batch: &PairBatch,
    train: bool,
    rng: &mut Rng,
) -> Result<Vec<PairLogps>> {
    gpt.forward_hidden(&batch.ids, batch.rows(), batch.t, train, rng)?;
    let per_token = gpt.token_logprobs(&batch.targets)?;
    let (sums, counts) = batch.row_sums(&per_token);
    let p = batch.pairs;
    Ok((0..p)
        .map(|i| PairLogps {
            chosen: sums[i],
            rejected: sums[p + i],
            n_chosen: counts[i],
            n_rejected: counts[p + i],
        })
        .collect())
}

/// Reference log-probabilities of every pair (evaluation mode), `batch` pairs at a time.
pub fn reference_logps(
    gpt: &mut Gpt,
    pairs: &[PairSeqs],
    pad: u32,
    batch: usize,
) -> Result<Vec<PairLogps>> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut rng = Rng::new(0);
    for chunk in pairs.chunks(batch.max(1)) {
        let refs: Vec<&PairSeqs> = chunk.iter().collect();
        let b = PairBatch::build(&refs, pad);
        out.extend(batch_logps(gpt, &b, false, &mut rng)?);
    }
    Ok(out)
}

/// One DPO training pass over `batch`: loss, backward with `scale`, and the per-pair losses.
pub fn dpo_forward_backward(
    policy: &mut Gpt,
    batch: &PairBatch,
    reference: &[PairLogps],
    kind: DpoLoss,
    beta: f64,
    scale: f32,
    rng: &mut Rng,
) -> Result<Vec<PairLoss>> {
    let logps = batch_logps(policy, batch, true, rng)?;
    let losses: Vec<PairLoss> = logps
        .iter()
        .zip(reference)
        .map(|(&p, &r)| pair_loss(kind, beta, p, r))
        .collect();
    // ∂(scale · mean L)/∂log p(token) for every answer token of each row.
    let n = batch.pairs as f64;
    let mut dlogp = vec![0.0f32; batch.rows() * batch.t];
    for r in 0..batch.rows() {
        let l = &losses[r % batch.pairs];
        let d = if r < batch.pairs {
            l.d_chosen
        } else {
            l.d_rejected
        };
        let d = (d * scale as f64 / n) as f32;
        for i in 0..batch.t {
            if batch.targets[r * batch.t + i] != crate::model::gpt::IGNORE_INDEX {
                dlogp[r * batch.t + i] = d;
            }
        }
    }
    let mut dh = vec![0.0f32; batch.rows() * batch.t * policy.config.n_embd];
    policy.token_logprobs_backward(&batch.targets, &dlogp, &mut dh)?;
    policy.backward_hidden(&dh);
    Ok(losses)
}

/// Mean per-position `KL(π ‖ π_ref)` over the answer tokens of `batch`, and the positions.
fn batch_kl(policy: &mut Gpt, reference: &mut Gpt, batch: &PairBatch) -> Result<(f64, usize)> {
    let mut rng = Rng::new(0);
    let v = policy.config.vocab_size;
    policy.forward_hidden(&batch.ids, batch.rows(), batch.t, false, &mut rng)?;
    let p = policy.lm_logits_rows(&batch.targets)?.to_vec();
    reference.forward_hidden(&batch.ids, batch.rows(), batch.t, false, &mut rng)?;
    let q = reference.lm_logits_rows(&batch.targets)?;
    let log_softmax = |x: &[f32]| -> Vec<f64> {
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &e| m.max(e as f64));
        let lse = m + x.iter().map(|&e| (e as f64 - m).exp()).sum::<f64>().ln();
        x.iter().map(|&e| e as f64 - lse).collect()
    };
    let mut total = 0.0;
    let k = p.len() / v;
    for i in 0..k {
        let (lp, lq) = (
            log_softmax(&p[i * v..(i + 1) * v]),
            log_softmax(&q[i * v..(i + 1) * v]),
        );
        total += lp
            .iter()
            .zip(&lq)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
    }
    Ok((total, k))
}

/// DPO: the policy, the frozen reference, the pairs with their reference log-probabilities.
pub struct Dpo {
    cfg: ChatTrainConfig,
    policy: Gpt,
    reference: Gpt,
    tok: AnyTokenizer,
    template: ChatTemplate,
    pad: u32,
    train: Vec<PairSeqs>,
    train_ref: Vec<PairLogps>,
    valid: Vec<PairSeqs>,
    valid_ref: Vec<PairLogps>,
    order: EpochOrder,
    rng: Rng,
    step_losses: Vec<PairLoss>,
    /// The last validation's metrics and KL.
    pub last_valid: Option<(DpoMetrics, f64)>,
}

impl Dpo {
    /// Metrics and mean KL on the validation pairs.
    fn validate(&mut self) -> Result<Option<(DpoMetrics, f64)>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let mut rng = Rng::new(0);
        let (mut losses, mut kl, mut positions) = (Vec::new(), 0.0, 0usize);
        for (chunk, refs) in self
            .valid
            .chunks(self.cfg.batch_size)
            .zip(self.valid_ref.chunks(self.cfg.batch_size))
        {
            let pairs: Vec<&PairSeqs> = chunk.iter().collect();
            let b = PairBatch::build(&pairs, self.pad);
            let logps = batch_logps(&mut self.policy, &b, false, &mut rng)?;
            losses.extend(
                logps
                    .iter()
                    .zip(refs)
                    .map(|(&p, &r)| pair_loss(self.cfg.loss, self.cfg.beta as f64, p, r)),
            );
            let (s, k) = batch_kl(&mut self.policy, &mut self.reference, &b)?;
            kl += s;
            positions += k;
        }
        Ok(Some((
            DpoMetrics::of(&losses),
            kl / positions.max(1) as f64,
        )))
    }
}

impl Task for Dpo {
    fn params(&mut self) -> &mut Params {
        &mut self.policy.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let idx = self.order.next(self.cfg.batch_size);
        let pairs: Vec<&PairSeqs> = idx.iter().map(|&i| &self.train[i]).collect();
        let refs: Vec<PairLogps> = idx.iter().map(|&i| self.train_ref[i]).collect();
        let b = PairBatch::build(&pairs, self.pad);
        let (rank, ranks) = self.order.shard();
        let mut own = crate::dist::rank_stream(&mut self.rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.rng);
        let losses = dpo_forward_backward(
            &mut self.policy,
            &b,
            &refs,
            self.cfg.loss,
            self.cfg.beta as f64,
            scale,
            rng,
        )?;
        let loss = DpoMetrics::of(&losses).loss as f32;
        self.step_losses.extend(losses);
        Ok(MicroStep {
            loss,
            tokens: b.tokens(),
        })
    }

    fn report_final_grads(&mut self, ready: Option<crate::train::FinalGrads>) -> bool {
        self.policy.report_final_grads(ready)
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.order.set_shard(rank, ranks);
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        crate::dist::config_fingerprint(&self.cfg, &["model", "data", "valid", "out"])
    }

    fn after_update(&mut self) {
        self.policy.refresh_bf16_weights();
    }

    fn step_metrics(&mut self) -> Vec<(String, f32)> {
        let m = DpoMetrics::of(&self.step_losses);
        self.step_losses.clear();
        m.named("")
    }

    fn eval_metrics(&mut self) -> Vec<(String, f32)> {
        match &self.last_valid {
            Some((m, kl)) => {
                let mut v = m.named("eval/");
                v.push(("eval/kl".into(), *kl as f32));
                v
            }
            None => Vec::new(),
        }
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        self.last_valid = self.validate()?;
        Ok(self.last_valid.map(|(m, _)| m.loss as f32))
    }

    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        save_chat_model(&self.policy, &self.tok, &self.template, dir, meta)
    }

    fn state(&self) -> Result<Map<String, Value>> {
        task_state(self.order.cursor, &self.cfg)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        crate::model::checkpoint::load_weights(
            &mut self.policy,
            &dir.join(crate::model::checkpoint::WEIGHTS_FILE),
        )?;
        self.order.seek(state_field(dir, state, "cursor")?);
        self.policy.set_precision(self.cfg.precision);
        Ok(())
    }
}

/// What a DPO run did.
#[derive(Clone, Debug)]
pub struct DpoOutcome {
    /// The loop's outcome.
    pub train: TrainOutcome,
    /// Training pairs and counts.
    pub data: PairData,
    /// Validation metrics and KL before training (policy = reference).
    pub valid_before: Option<(DpoMetrics, f64)>,
    /// Validation metrics and KL at the end.
    pub valid_after: Option<(DpoMetrics, f64)>,
    /// Optimizer steps of the run.
    pub max_steps: usize,
}

/// DPO of `cfg.model` (an SFT model, also the reference) on `cfg.data` into `cfg.out`.
pub fn dpo(cfg: &ChatTrainConfig, opts: &TrainOptions) -> Result<DpoOutcome> {
    let (cfg, resume) = start_run(cfg, opts)?;
    let base = load_chat_base(&cfg.model, cfg.seed, |_, _| Ok(()))?;
    let max_len = cfg.max_len_for(base.gpt.config.n_ctx);
    let enc = ChatEncoder::new(&base.tokenizer, &base.template, &base.template_origin)?;
    let (data, valid) = encode_run_pairs(&cfg, &enc, max_len)?;
    let (max_steps, per_epoch) = plan_steps(&cfg, data.pairs.len(), resume.as_ref())?;
    if opts.talk() {
        eprintln!(
            "gpt dpo: policy and reference {} ({} layers, width {}, context {}); loss {:?}, β {}",
            base.dir.display(),
            base.gpt.config.n_layer,
            base.gpt.config.n_embd,
            base.gpt.config.n_ctx,
            cfg.loss,
            cfg.beta
        );
        say_pairs(&data, valid.len(), max_len);
        eprintln!(
            "{max_steps} steps, batch {} pairs, lr {}",
            cfg.batch_size, cfg.lr
        );
    }
    let mut reference = base.gpt;
    let train_ref = reference_logps(&mut reference, &data.pairs, base.pad, cfg.batch_size)?;
    let valid_ref = reference_logps(&mut reference, &valid, base.pad, cfg.batch_size)?;
    let mut policy = crate::model::Gpt::uninit(reference.config.clone())?;
    policy.params.data.copy_from_slice(&reference.params.data);
    policy.set_precision(cfg.precision);
    let mut task = Dpo {
        order: EpochOrder::new(data.pairs.len(), cfg.seed),
        rng: Rng::new(cfg.seed.wrapping_add(1)),
        cfg: cfg.clone(),
        policy,
        reference,
        tok: base.tokenizer,
        template: base.template,
        pad: base.pad,
        train: data.pairs.clone(),
        train_ref,
        valid,
        valid_ref,
        step_losses: Vec::new(),
        last_valid: None,
    };
    let valid_before = if resume.is_none() {
        task.validate()?
    } else {
        None
    };
    let outcome = run(
        &mut task,
        &cfg.loop_config(max_steps, per_epoch),
        opts,
        resume.as_ref(),
    )?;
    Ok(DpoOutcome {
        train: outcome,
        data,
        valid_before,
        valid_after: task.last_valid,
        max_steps,
    })
}
