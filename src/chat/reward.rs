//! The reward model (`gpt reward`, InstructGPT §3.5; TRL `RewardTrainer`): the SFT model with a
//! scalar head `score.weight (1, C)` read at the last token of `prompt ++ answer` (the answer's
//! end-of-turn token), trained on preference pairs with `−log σ(r_chosen − r_rejected)`, and
//! reporting pairwise accuracy.
//!
//! The loss is exactly GPT-1's multiple-choice loss with two answers and the chosen one right
//! (`softmax([r_c, r_r])[0] = σ(r_c − r_r)`), so the model is a
//! [`FinetuneModel`] of kind [`TaskKind::Choice`] without the auxiliary LM loss: one trunk,
//! one head, one set of kernels for both.

use super::config::{plan_steps, start_run, task_state, ChatTrainConfig};
use super::encode::ChatEncoder;
use super::model::{load_chat_base, save_reward_model, RewardMeta, RewardModel};
use super::pairs::{encode_run_pairs, PairData, PairSeqs};
use super::template::ChatTemplate;
use crate::error::Result;
use crate::finetune::model::{Batch, FinetuneModel};
use crate::finetune::transform::Example;
use crate::finetune::TaskKind;
use crate::nn::classifier::ClassifierHead;
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

/// The two sequences of a pair as a choice example whose right answer is the chosen one.
fn example(p: &PairSeqs) -> Example {
    Example {
        seqs: vec![p.chosen.clone(), p.rejected.clone()],
        label: Some(0),
        line: p.line,
    }
}

/// Rewards `(r_chosen, r_rejected)` of each pair, in evaluation mode, `batch` pairs at a time.
pub fn pair_rewards(
    model: &mut FinetuneModel,
    pairs: &[PairSeqs],
    pad: u32,
    batch: usize,
) -> Result<Vec<(f32, f32)>> {
    let mut out = Vec::with_capacity(pairs.len());
    let mut rng = Rng::new(0);
    for chunk in pairs.chunks(batch.max(1)) {
        let ex: Vec<Example> = chunk.iter().map(example).collect();
        let refs: Vec<&Example> = ex.iter().collect();
        let b = Batch::build(&refs, pad, 0)?;
        model.forward(&b, false, &mut rng)?;
        out.extend(model.scores().chunks(2).map(|s| (s[0], s[1])));
    }
    Ok(out)
}

/// The reward of each sequence (`prompt ++ answer`, read at its last token), in evaluation
/// mode, `batch` at a time.
pub fn score_sequences(
    model: &mut FinetuneModel,
    seqs: &[Vec<u32>],
    pad: u32,
    batch: usize,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(seqs.len());
    let mut rng = Rng::new(0);
    for chunk in seqs.chunks(batch.max(1)) {
        let ex: Vec<Example> = chunk
            .iter()
            .map(|s| Example {
                seqs: vec![s.clone()],
                label: None,
                line: 0,
            })
            .collect();
        let refs: Vec<&Example> = ex.iter().collect();
        let b = Batch::build(&refs, pad, 0)?;
        model.forward(&b, false, &mut rng)?;
        out.extend_from_slice(model.scores());
    }
    Ok(out)
}

/// What a reward model does on a set of pairs, beside two baselines.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RewardReport {
    /// Pairs.
    pub pairs: usize,
    /// Mean `−log σ(r_c − r_r)`.
    pub loss: f32,
    /// Fraction with `r_c > r_r`.
    pub accuracy: f32,
    /// The length heuristic "the shorter answer is chosen" (in tokens before any cut; ties
    /// count half).
    pub shorter_wins: f32,
    /// Pairs whose answers differ in length by at most 20% of the longer (in tokens, before
    /// any cut to the context).
    pub similar_length_pairs: usize,
    /// Accuracy on those pairs (what the model learned beyond length).
    pub similar_length_accuracy: f32,
    /// Mean reward of the chosen and of the rejected answers.
    pub mean_chosen: f32,
    /// Mean reward of the rejected answers.
    pub mean_rejected: f32,
}

/// The [`RewardReport`] of `rewards` on `pairs`.
pub fn reward_report(pairs: &[PairSeqs], rewards: &[(f32, f32)]) -> RewardReport {
    let n = pairs.len().max(1) as f64;
    let (mut loss, mut right, mut shorter, mut sim, mut sim_right, mut mc, mut mr) =
        (0.0f64, 0usize, 0.0f64, 0usize, 0usize, 0.0f64, 0.0f64);
    for (p, &(c, r)) in pairs.iter().zip(rewards) {
        let d = (c - r) as f64;
        // −log σ(d), stably.
        loss += if d > 0.0 {
            (-d).exp().ln_1p()
        } else {
            -d + d.exp().ln_1p()
        };
        right += (c > r) as usize;
        let (lc, lr) = p.answer_lens;
        shorter += match lc.cmp(&lr) {
            std::cmp::Ordering::Less => 1.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Greater => 0.0,
        };
        if lc.abs_diff(lr) * 5 <= lc.max(lr) {
            sim += 1;
            sim_right += (c > r) as usize;
        }
        mc += c as f64;
        mr += r as f64;
    }
    RewardReport {
        pairs: pairs.len(),
        loss: (loss / n) as f32,
        accuracy: (right as f64 / n) as f32,
        shorter_wins: (shorter / n) as f32,
        similar_length_pairs: sim,
        similar_length_accuracy: (sim_right as f64 / sim.max(1) as f64) as f32,
        mean_chosen: (mc / n) as f32,
        mean_rejected: (mr / n) as f32,
    }
}

/// Reward-model training: the model, the pairs and the data order.
pub struct RewardTraining {
    cfg: ChatTrainConfig,
    model: FinetuneModel,
    tok: AnyTokenizer,
    template: ChatTemplate,
    pad: u32,
    max_len: usize,
    train: Vec<PairSeqs>,
    valid: Vec<PairSeqs>,
    order: EpochOrder,
    rng: Rng,
    step_acc: Vec<f32>,
    /// The last validation's report.
    pub last_valid: Option<RewardReport>,
}

impl Task for RewardTraining {
    fn params(&mut self) -> &mut Params {
        &mut self.model.gpt.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let picked: Vec<Example> = self
            .order
            .next(self.cfg.batch_size)
            .into_iter()
            .map(|i| example(&self.train[i]))
            .collect();
        let refs: Vec<&Example> = picked.iter().collect();
        let b = Batch::build(&refs, self.pad, 0)?;
        let (rank, ranks) = self.order.shard();
        let mut own = crate::dist::rank_stream(&mut self.rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.rng);
        let losses = self.model.forward_backward(&b, 0.0, scale, rng)?;
        // With two answers the chosen one wins (r_c > r_r) exactly when its loss is below ln 2.
        let per_pair = self.model.example_losses();
        let right = per_pair
            .iter()
            .filter(|&&l| l < std::f32::consts::LN_2)
            .count();
        self.step_acc
            .push(right as f32 / per_pair.len().max(1) as f32);
        Ok(MicroStep {
            loss: losses.total,
            tokens: b.tokens(),
        })
    }

    fn report_final_grads(&mut self, ready: Option<crate::train::FinalGrads>) -> bool {
        self.model.gpt.report_final_grads(ready)
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.order.set_shard(rank, ranks);
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        crate::dist::config_fingerprint(&self.cfg, &["model", "data", "valid", "out"])
    }

    fn after_update(&mut self) {
        self.model.gpt.refresh_bf16_weights();
    }

    fn step_metrics(&mut self) -> Vec<(String, f32)> {
        let n = self.step_acc.len().max(1) as f32;
        let acc = self.step_acc.drain(..).sum::<f32>() / n;
        vec![("accuracy".into(), acc)]
    }

    fn eval_metrics(&mut self) -> Vec<(String, f32)> {
        self.last_valid
            .as_ref()
            .map(|r| vec![("eval/accuracy".into(), r.accuracy)])
            .unwrap_or_default()
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let rewards = pair_rewards(&mut self.model, &self.valid, self.pad, self.cfg.batch_size)?;
        let report = reward_report(&self.valid, &rewards);
        let loss = report.loss;
        self.last_valid = Some(report);
        Ok(Some(loss))
    }

    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        let rm = RewardMeta {
            version: 1,
            pad_token_id: self.pad,
            max_len: self.max_len,
        };
        save_reward_model(&self.model.gpt, &self.tok, &self.template, &rm, dir, meta)
    }

    fn state(&self) -> Result<Map<String, Value>> {
        task_state(self.order.cursor, &self.cfg)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        let family = crate::model::checkpoint::hf_family(&self.model.gpt.config);
        crate::model::checkpoint::load_params(
            &mut self.model.gpt.params,
            &dir.join(crate::model::checkpoint::WEIGHTS_FILE),
            |n| crate::finetune::stored_names(n, family),
        )?;
        self.order.seek(state_field(dir, state, "cursor")?);
        self.model.gpt.set_precision(self.cfg.precision);
        Ok(())
    }
}

/// What a reward-model run did.
#[derive(Clone, Debug)]
pub struct RewardOutcome {
    /// The loop's outcome.
    pub train: TrainOutcome,
    /// Training pairs and counts.
    pub data: PairData,
    /// The final model on the training pairs.
    pub train_report: RewardReport,
    /// The final model on the validation pairs.
    pub valid_report: Option<RewardReport>,
    /// Optimizer steps of the run.
    pub max_steps: usize,
}

/// Trains a reward model from `cfg.model` (an SFT model) on `cfg.data` into `cfg.out`.
pub fn train_reward(cfg: &ChatTrainConfig, opts: &TrainOptions) -> Result<RewardOutcome> {
    let (cfg, resume) = start_run(cfg, opts)?;
    let base = load_chat_base(&cfg.model, cfg.seed, |l, c| {
        ClassifierHead::new(l, c, 1, 0.0)
    })?;
    let max_len = cfg.max_len_for(base.gpt.config.n_ctx);
    let enc = ChatEncoder::new(&base.tokenizer, &base.template, &base.template_origin)?;
    let (data, valid) = encode_run_pairs(&cfg, &enc, max_len)?;
    let (max_steps, per_epoch) = plan_steps(&cfg, data.pairs.len(), resume.as_ref())?;
    if opts.talk() {
        eprintln!(
            "gpt reward: from {} ({} layers, width {}, context {})",
            base.dir.display(),
            base.gpt.config.n_layer,
            base.gpt.config.n_embd,
            base.gpt.config.n_ctx
        );
        say_pairs(&data, valid.len(), max_len);
        eprintln!(
            "{max_steps} steps, batch {} pairs, lr {}",
            cfg.batch_size, cfg.lr
        );
    }
    let mut gpt = base.gpt;
    gpt.set_precision(cfg.precision);
    let mut task = RewardTraining {
        order: EpochOrder::new(data.pairs.len(), cfg.seed),
        rng: Rng::new(cfg.seed.wrapping_add(1)),
        cfg: cfg.clone(),
        model: FinetuneModel::new(gpt, base.head, TaskKind::Choice),
        tok: base.tokenizer,
        template: base.template,
        pad: base.pad,
        max_len,
        train: data.pairs.clone(),
        valid,
        step_acc: Vec::new(),
        last_valid: None,
    };
    let outcome = run(
        &mut task,
        &cfg.loop_config(max_steps, per_epoch),
        opts,
        resume.as_ref(),
    )?;
    let rewards = pair_rewards(&mut task.model, &task.train, task.pad, cfg.batch_size)?;
    let train_report = reward_report(&task.train, &rewards);
    Ok(RewardOutcome {
        train: outcome,
        data,
        train_report,
        valid_report: task.last_valid.clone(),
        max_steps,
    })
}

/// Prints what reading and cutting the pairs counted.
pub fn say_pairs(data: &PairData, n_valid: usize, max_len: usize) {
    eprintln!(
        "data: {} pairs ({} with identical answers, {} malformed skipped; {} sequences cut to {max_len} tokens at the prompt's start, {} at the answer's end), {n_valid} valid",
        data.pairs.len(),
        data.read.identical,
        data.read.bad,
        data.cuts.prompt,
        data.cuts.answer,
    );
}

/// Scores `pairs` with the reward model `rm`.
pub fn evaluate_reward_model(rm: &mut RewardModel, pairs: &[PairSeqs]) -> Result<RewardReport> {
    let rewards = pair_rewards(&mut rm.model, pairs, rm.meta.pad_token_id, 8)?;
    Ok(reward_report(pairs, &rewards))
}
