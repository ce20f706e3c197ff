//! Supervised fine-tuning (`gpt sft`, InstructGPT's first step, TRL `SFTTrainer`'s
//! conventions) as a [`Task`] of the one training loop.
//!
//! The loss is the mean next-token cross-entropy over the trained tokens of a micro-batch
//! (assistant answers with their end-of-turn token; plain completions with the EOS appended),
//! prompt, user and system tokens and padding ignored ([`super::encode`]). A micro-batch is the
//! next `batch_size` demonstrations of the epoch order, right-padded with `<|pad|>`, or with
//! `packing` laid into as few rows of the context as fit (first fit, longest first) with
//! positions restarting at each demonstration and no attention across them, which gives the
//! same loss and gradients as the unpacked batch with fewer padded tokens. The LM head runs
//! only on the trained positions ([`Gpt::lm_backward_rows`]).

use super::config::{plan_steps, start_run, task_state, ChatTrainConfig};
use super::encode::{truncate_sft, ChatEncoder, Cuts, Encoded, Truncation};
use super::model::{load_chat_base, save_chat_model};
use super::records::{read_sft, ReadReport, SftRecord};
use super::template::ChatTemplate;
use crate::error::Result;
use crate::model::gpt::IGNORE_INDEX;
use crate::model::Gpt;
use crate::nn::params::Params;
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use crate::train::checkpoint::state_field;
use crate::train::epoch_order::EpochOrder;
use crate::train::task::{MicroStep, Task};
use crate::train::trainer::{run, TrainOptions, TrainOutcome};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// A micro-batch laid out for the trunk.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SftBatch {
    /// Token ids `(B, T)`.
    pub ids: Vec<u32>,
    /// Next-token targets `(B, T)`: the next id where it is trained, else [`IGNORE_INDEX`].
    pub targets: Vec<i32>,
    /// Positions `(B, T)` restarting per demonstration (packed batches only).
    pub positions: Option<Vec<u32>>,
    /// Rows.
    pub b: usize,
    /// Row length.
    pub t: usize,
    /// Real (non-padding) tokens.
    pub tokens: usize,
}

impl SftBatch {
    /// One demonstration per row, right-padded with `pad` to the longest.
    pub fn padded(examples: &[&Encoded], pad: u32) -> SftBatch {
        let t = examples.iter().map(|e| e.len()).max().unwrap_or(1).max(1);
        let mut b = SftBatch {
            b: examples.len(),
            t,
            ..SftBatch::default()
        };
        for e in examples {
            let (ids, targets) = row_of(e);
            b.tokens += ids.len();
            b.ids.extend(
                ids.iter()
                    .copied()
                    .chain(std::iter::repeat_n(pad, t - ids.len())),
            );
            b.targets.extend(
                targets
                    .into_iter()
                    .chain(std::iter::repeat_n(IGNORE_INDEX, t - ids.len())),
            );
        }
        b
    }

    /// Demonstrations packed into rows of at most `max_len` tokens (first fit, longest first),
    /// positions restarting per demonstration, the rows right-padded with `pad` to the longest.
    pub fn packed(examples: &[&Encoded], pad: u32, max_len: usize) -> SftBatch {
        let mut order: Vec<usize> = (0..examples.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(examples[i].len()));
        let mut rows: Vec<Vec<usize>> = Vec::new();
        let mut used: Vec<usize> = Vec::new();
        for i in order {
            let len = examples[i].len();
            match used.iter().position(|&u| u + len <= max_len) {
                Some(r) => {
                    rows[r].push(i);
                    used[r] += len;
                }
                None => {
                    rows.push(vec![i]);
                    used.push(len);
                }
            }
        }
        let t = used.iter().copied().max().unwrap_or(1).max(1);
        let mut b = SftBatch {
            b: rows.len(),
            t,
            positions: Some(Vec::new()),
            ..SftBatch::default()
        };
        let mut positions = Vec::with_capacity(rows.len() * t);
        for (row, &len) in rows.iter().zip(&used) {
            for &i in row {
                let (ids, targets) = row_of(examples[i]);
                b.ids.extend_from_slice(&ids);
                b.targets.extend(targets);
                positions.extend(0..ids.len() as u32);
            }
            b.tokens += len;
            b.ids.extend(std::iter::repeat_n(pad, t - len));
            b.targets.extend(std::iter::repeat_n(IGNORE_INDEX, t - len));
            // Padding continues the last demonstration's positions: it follows it causally
            // and is never a target, so it changes nothing.
            let last = positions.last().map_or(0, |&p| p + 1);
            positions.extend(last..last + (t - len) as u32);
        }
        b.positions = Some(positions);
        b
    }

    /// Trained targets in the batch.
    pub fn n_targets(&self) -> usize {
        self.targets.iter().filter(|&&y| y != IGNORE_INDEX).count()
    }
}

/// A demonstration's ids and next-token targets.
fn row_of(e: &Encoded) -> (Vec<u32>, Vec<i32>) {
    let n = e.len();
    let targets = (0..n)
        .map(|i| {
            if i + 1 < n && e.trained[i + 1] {
                e.ids[i + 1] as i32
            } else {
                IGNORE_INDEX
            }
        })
        .collect();
    (e.ids.clone(), targets)
}

/// Runs `batch` forward and backward through `gpt`: mean cross-entropy over its trained
/// targets, `scale ·` its gradient accumulated. Returns the loss.
pub fn sft_forward_backward(
    gpt: &mut Gpt,
    batch: &SftBatch,
    scale: f32,
    rng: &mut Rng,
) -> Result<f32> {
    forward(gpt, batch, true, rng)?;
    let mut dh = vec![0.0f32; batch.b * batch.t * gpt.config.n_embd];
    let loss = gpt.lm_backward_rows(&batch.targets, scale, &mut dh)?;
    gpt.backward_hidden(&dh);
    Ok(loss)
}

/// The trunk's forward of `batch` (packed or not).
fn forward(gpt: &mut Gpt, batch: &SftBatch, train: bool, rng: &mut Rng) -> Result<()> {
    gpt.forward_hidden_packed(
        &batch.ids,
        batch.positions.as_deref(),
        batch.b,
        batch.t,
        train,
        rng,
    )
}

/// Mean cross-entropy over the trained targets of `batch` in evaluation mode, and their count.
pub fn sft_loss(gpt: &mut Gpt, batch: &SftBatch) -> Result<(f32, usize)> {
    forward(gpt, batch, false, &mut Rng::new(0))?;
    let loss = gpt.lm_loss_rows(&batch.targets)?;
    let n = batch.n_targets();
    Ok((loss, n))
}

/// The mean cross-entropy over the trained targets of `rows` in evaluation mode, `chunk` rows
/// at a time, each chunk batched by `batch_of` (a validation loss).
pub fn mean_sft_loss(
    gpt: &mut Gpt,
    rows: &[Encoded],
    chunk: usize,
    batch_of: impl Fn(&[&Encoded]) -> SftBatch,
) -> Result<f32> {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for part in rows.chunks(chunk.max(1)) {
        let refs: Vec<&Encoded> = part.iter().collect();
        let (loss, n) = sft_loss(gpt, &batch_of(&refs))?;
        sum += loss as f64 * n as f64;
        count += n;
    }
    Ok((sum / count.max(1) as f64) as f32)
}

/// SFT: the model, the encoded demonstrations and the data order.
pub struct Sft {
    cfg: ChatTrainConfig,
    gpt: Gpt,
    tok: AnyTokenizer,
    template: ChatTemplate,
    pad: u32,
    max_len: usize,
    train: Vec<Encoded>,
    valid: Vec<Encoded>,
    order: EpochOrder,
    rng: Rng,
}

impl Sft {
    fn batch_of(&self, examples: &[&Encoded]) -> SftBatch {
        if self.cfg.packing {
            SftBatch::packed(examples, self.pad, self.max_len)
        } else {
            SftBatch::padded(examples, self.pad)
        }
    }
}

impl Task for Sft {
    fn params(&mut self) -> &mut Params {
        &mut self.gpt.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let picked: Vec<&Encoded> = self
            .order
            .next(self.cfg.batch_size)
            .into_iter()
            .map(|i| &self.train[i])
            .collect();
        let batch = self.batch_of(&picked);
        let (rank, ranks) = self.order.shard();
        let mut own = crate::dist::rank_stream(&mut self.rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.rng);
        let loss = sft_forward_backward(&mut self.gpt, &batch, scale, rng)?;
        Ok(MicroStep {
            loss,
            tokens: batch.tokens,
        })
    }

    fn report_final_grads(&mut self, ready: Option<crate::train::FinalGrads>) -> bool {
        self.gpt.report_final_grads(ready)
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.order.set_shard(rank, ranks);
        Ok(())
    }

    fn fingerprint(&self) -> u64 {
        crate::dist::config_fingerprint(&self.cfg, &["model", "data", "valid", "out"])
    }

    fn after_update(&mut self) {
        self.gpt.refresh_bf16_weights();
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        if self.valid.is_empty() {
            return Ok(None);
        }
        let (packing, pad, max_len) = (self.cfg.packing, self.pad, self.max_len);
        let loss = mean_sft_loss(&mut self.gpt, &self.valid, self.cfg.batch_size, |rows| {
            if packing {
                SftBatch::packed(rows, pad, max_len)
            } else {
                SftBatch::padded(rows, pad)
            }
        })?;
        Ok(Some(loss))
    }

    fn save(&self, dir: &Path, meta: HashMap<String, String>) -> Result<()> {
        save_chat_model(&self.gpt, &self.tok, &self.template, dir, meta)
    }

    fn state(&self) -> Result<Map<String, Value>> {
        let mut m = task_state(self.order.cursor, &self.cfg)?;
        m.insert(
            "rng".into(),
            serde_json::to_value(&self.rng)
                .map_err(|e| crate::error::Error::usage("Sft::state", e.to_string()))?,
        );
        Ok(m)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        crate::model::checkpoint::load_weights(
            &mut self.gpt,
            &dir.join(crate::model::checkpoint::WEIGHTS_FILE),
        )?;
        self.order.seek(state_field(dir, state, "cursor")?);
        self.rng = state_field(dir, state, "rng")?;
        self.gpt.set_precision(self.cfg.precision);
        Ok(())
    }
}

/// What reading and encoding a file of demonstrations did.
#[derive(Clone, Debug, Default)]
pub struct SftData {
    /// The encoded demonstrations (truncated).
    pub examples: Vec<Encoded>,
    /// What reading counted.
    pub read: ReadReport,
    /// What truncation cut.
    pub cuts: Cuts,
    /// Demonstrations with no trained token left after truncation (skipped).
    pub empty: usize,
}

/// A demonstration encoded and truncated to `max_len` by `mode` (cuts counted), or `None` when
/// nothing is left to train (such a demonstration is skipped).
pub fn encode_sft_record(
    r: &SftRecord,
    enc: &ChatEncoder,
    max_len: usize,
    mode: Truncation,
    cuts: &mut Cuts,
) -> Result<Option<Encoded>> {
    let mut e = enc.sft(r)?;
    truncate_sft(&mut e, max_len, mode, cuts);
    // The first token is never a target.
    Ok(e.trained.iter().skip(1).any(|&t| t).then_some(e))
}

/// Reads and encodes the demonstrations in `path`, truncated to `max_len`.
pub fn encode_sft_file(
    path: &Path,
    enc: &ChatEncoder,
    max_len: usize,
    mode: Truncation,
    skip_bad: bool,
) -> Result<SftData> {
    let (records, read) = read_sft(path, skip_bad)?;
    let mut data = SftData {
        read,
        ..SftData::default()
    };
    for r in &records {
        match encode_sft_record(r, enc, max_len, mode, &mut data.cuts)? {
            Some(e) => data.examples.push(e),
            None => data.empty += 1,
        }
    }
    if data.examples.is_empty() {
        return Err(crate::error::Error::file(
            path,
            "no demonstration has a trained token within the context",
        ));
    }
    Ok(data)
}

/// What an SFT run did.
#[derive(Clone, Debug)]
pub struct SftOutcome {
    /// The loop's outcome.
    pub train: TrainOutcome,
    /// Training data (encoded, counts).
    pub data: SftData,
    /// Validation demonstrations.
    pub n_valid: usize,
    /// Optimizer steps of the run.
    pub max_steps: usize,
}

/// Supervised fine-tuning of `cfg.model` on `cfg.data` into `cfg.out` (the model is
/// `OUT/checkpoint`); `opts.resume` continues an interrupted run.
pub fn sft(cfg: &ChatTrainConfig, opts: &TrainOptions) -> Result<SftOutcome> {
    let (cfg, resume) = start_run(cfg, opts)?;
    let base = load_chat_base(&cfg.model, cfg.seed, |_, _| Ok(()))?;
    let max_len = cfg.max_len_for(base.gpt.config.n_ctx);
    let enc = ChatEncoder::new(&base.tokenizer, &base.template, &base.template_origin)?;
    let data = encode_sft_file(&cfg.data, &enc, max_len, cfg.truncation, cfg.skip_bad)?;
    let valid = match &cfg.valid {
        Some(p) => encode_sft_file(p, &enc, max_len, cfg.truncation, cfg.skip_bad)?.examples,
        None => Vec::new(),
    };
    let (max_steps, per_epoch) = plan_steps(&cfg, data.examples.len(), resume.as_ref())?;
    if opts.talk() {
        let m = &base.gpt.config;
        eprintln!(
            "gpt sft: base {} ({} layers, width {}, context {}, vocabulary {}); template {}",
            base.dir.display(),
            m.n_layer,
            m.n_embd,
            m.n_ctx,
            m.vocab_size,
            base.template_origin.display()
        );
        eprintln!(
            "data: {} demonstrations ({} without an assistant turn, {} malformed skipped; {} cut to {max_len} tokens keeping the {}, {} with nothing left to train), {} valid; {max_steps} steps, batch {}{}, lr {}",
            data.examples.len(),
            data.read.no_assistant,
            data.read.bad,
            data.cuts.answer + data.cuts.prompt,
            match cfg.truncation {
                Truncation::KeepStart => "start",
                Truncation::KeepEnd => "end",
            },
            data.empty,
            valid.len(),
            cfg.batch_size,
            if cfg.packing { " packed" } else { "" },
            cfg.lr
        );
    }
    let mut gpt = base.gpt;
    gpt.set_precision(cfg.precision);
    let mut task = Sft {
        order: EpochOrder::new(data.examples.len(), cfg.seed),
        rng: Rng::new(cfg.seed.wrapping_add(1)),
        cfg: cfg.clone(),
        gpt,
        tok: base.tokenizer,
        template: base.template,
        pad: base.pad,
        max_len,
        train: data.examples.clone(),
        valid,
    };
    let outcome = run(
        &mut task,
        &cfg.loop_config(max_steps, per_epoch),
        opts,
        resume.as_ref(),
    )?;
    Ok(SftOutcome {
        train: outcome,
        n_valid: task.valid.len(),
        data,
        max_steps,
    })
}
