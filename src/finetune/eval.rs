//! Inference with a fine-tuned model: [`Classifier`] predicts the label (choice: the answer)
//! and class probabilities of records, and [`evaluate_file`] scores a labelled file:
//! accuracy, F1 of the positive class (index 1: label `1`, or the second label in sort order)
//! for two-label tasks, and the count.

use super::model::{Batch, FinetuneModel};
use super::records::{parse_records, read_records, Inputs, Record};
use super::task::argmax;
use super::transform::{encode_records, Example, Labels, Transform};
use super::{load_finetuned, FinetuneMeta, TaskKind};
use crate::error::Result;
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// Examples per forward pass.
const EVAL_BATCH: usize = 32;

/// One prediction.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Prediction {
    /// The predicted label as written in the training file (choice: the answer's index).
    pub label: Value,
    /// Index of the prediction.
    #[serde(skip)]
    pub index: usize,
    /// Probabilities over the labels (choice: over the answers).
    pub probs: Vec<f32>,
    /// The model's input after the transform: one sequence (classify, entail) or a list of
    /// them (similar: both orders; choice: one per answer).
    pub ids: Value,
    /// The record's label index, when it had one.
    #[serde(skip)]
    pub gold: Option<usize>,
}

/// A loaded fine-tuned model.
pub struct Classifier {
    /// The model.
    pub model: FinetuneModel,
    /// Its `finetune.json`.
    pub meta: FinetuneMeta,
    /// Its tokenizer (with the special tokens).
    pub tokenizer: AnyTokenizer,
}

impl Classifier {
    /// Loads a `gpt finetune` output (its run directory or the checkpoint inside).
    pub fn load(dir: &Path) -> Result<Self> {
        let (model, meta, tokenizer) = load_finetuned(dir)?;
        Ok(Classifier {
            model,
            meta,
            tokenizer,
        })
    }

    /// The transform of this model.
    pub fn transform(&self) -> Result<Transform> {
        Transform::new(self.meta.task, self.meta.specials, self.meta.max_len)
    }

    /// Encodes records of `path` (labels optional) into examples.
    pub fn encode(&self, path: &Path, records: &[Record], skip_bad: bool) -> Result<Vec<Example>> {
        let set = self.meta.label_set();
        let labels = Labels {
            set: Some(&set),
            n_choices: self.meta.n_choices,
        };
        let tf = self.transform()?;
        Ok(encode_records(path, records, &self.tokenizer, &tf, &labels, skip_bad)?.0)
    }

    /// Predictions for `examples`, in order, in batches of 32 (evaluation mode).
    pub fn predict(&mut self, examples: &[Example]) -> Result<Vec<Prediction>> {
        let mut out = Vec::with_capacity(examples.len());
        let mut rng = Rng::new(0);
        for chunk in examples.chunks(EVAL_BATCH) {
            let picked: Vec<&Example> = chunk.iter().collect();
            let b = Batch::build(&picked, self.meta.pad_token_id, 0)?;
            self.model.forward(&b, false, &mut rng)?;
            let probs = self.model.probs(&b);
            let k = probs.len() / b.n;
            for (ex, p) in chunk.iter().zip(probs.chunks(k)) {
                let index = argmax(p);
                let label = match self.meta.task {
                    TaskKind::Choice => Value::from(index),
                    _ => self.meta.labels[index].clone(),
                };
                let ids = match self.meta.task {
                    TaskKind::Classify | TaskKind::Entail => Value::from(ex.seqs[0].clone()),
                    _ => Value::from(ex.seqs.clone()),
                };
                out.push(Prediction {
                    label,
                    index,
                    probs: p.to_vec(),
                    ids,
                    gold: ex.label,
                });
            }
        }
        Ok(out)
    }

    /// Predictions for the lines of `text` (from `path`, for errors): JSON records of the
    /// model's task (a label is ignored); for classify, a line that is not a JSON object is
    /// the text itself. Blank lines are skipped.
    pub fn predict_lines(&mut self, path: &Path, text: &str) -> Result<Vec<Prediction>> {
        let task = self.meta.task;
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if task == TaskKind::Classify && !line.trim_start().starts_with('{') {
                records.push(Record {
                    line: i + 1,
                    inputs: Inputs::Text(line.to_string()),
                    label: None,
                });
                continue;
            }
            let (mut r, _) = parse_records(path, line, task, false, false)?;
            for rec in &mut r {
                rec.line = i + 1;
                rec.label = None;
            }
            records.extend(r);
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let examples = self.encode(path, &records, false)?;
        self.predict(&examples)
    }
}

/// Accuracy (and F1) of a labelled file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// Fraction of examples predicted right.
    pub accuracy: f64,
    /// F1 of the positive class (index 1) for two-label tasks (`null` otherwise).
    pub f1: Option<f64>,
    /// Examples scored.
    pub n: usize,
    /// Records skipped as bad (with `skip_bad`).
    pub skipped: usize,
}

/// Scores the model in `model_dir` on the labelled records of `data`.
pub fn evaluate_file(model_dir: &Path, data: &Path, skip_bad: bool) -> Result<EvalReport> {
    let mut c = Classifier::load(model_dir)?;
    let (records, read) = read_records(data, c.meta.task, true, skip_bad)?;
    let examples = c.encode(data, &records, skip_bad)?;
    let preds = c.predict(&examples)?;
    let n = preds.len();
    let right = preds.iter().filter(|p| p.gold == Some(p.index)).count();
    let binary = c.meta.task != TaskKind::Choice && c.meta.labels.len() == 2;
    let f1 = binary.then(|| {
        let count = |pred: bool, gold: bool| {
            preds
                .iter()
                .filter(|p| (p.index == 1) == pred && (p.gold == Some(1)) == gold)
                .count() as f64
        };
        let (tp, fp, fneg) = (count(true, true), count(true, false), count(false, true));
        if tp == 0.0 {
            0.0
        } else {
            2.0 * tp / (2.0 * tp + fp + fneg)
        }
    });
    Ok(EvalReport {
        accuracy: right as f64 / n as f64,
        f1,
        n,
        skipped: read.skipped + (records.len() - examples.len()),
    })
}
