//! GPT-1's input transforms (Radford et al. 2018, §3.3, Figure 1): every task becomes one or
//! more token sequences that end in the extract token, whose final hidden state feeds the head.
//!
//! - classify: `start x extract`
//! - entail:   `start premise delim hypothesis extract`
//! - similar:  `start A delim B extract` and `start B delim A extract` (both orders; the two
//!   hidden states at the extract token are summed before the head)
//! - choice:   `start context delim answer_k extract` for each answer k (one scalar each,
//!   softmax over the answers)
//!
//! Truncation, per segment: a sequence may hold `max_len` tokens, so its segments share
//! `max_len - specials` (2 special tokens for classify, 3 otherwise). When they do not fit, the
//! longer segment loses its last token, repeatedly (ties: the later segment), until they fit:
//! "longest first, from the end". In closed form for lengths `a`, `b` and budget `m`: a short
//! segment (at most `m/2`) is kept whole and the other cut to the rest; two long ones get
//! `⌈m/2⌉` and `⌊m/2⌋`. Each choice's (context, answer) pair is cut on its own. An example with
//! any cut is counted ([`EncodeReport::cut`]).

use super::records::{line_error, Inputs, LabelSet, Record};
use super::TaskKind;
use crate::error::{Error, Result};
use crate::tokenizer::AnyTokenizer;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Names of the three tokens appended to the vocabulary.
pub const SPECIAL_NAMES: [&str; 3] = ["<|start|>", "<|delim|>", "<|extract|>"];

/// The ids of the three special tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specials {
    /// Start of every sequence.
    pub start: u32,
    /// Between the two segments.
    pub delim: u32,
    /// Last token; the head reads its hidden state.
    pub extract: u32,
}

/// One encoded example: its sequences and its label index (if labelled).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// 1, 2 (similar) or K (choice) sequences, each ending in the extract token.
    pub seqs: Vec<Vec<u32>>,
    /// Index of the label (choice: of the right answer).
    pub label: Option<usize>,
    /// The record's line in its file.
    pub line: usize,
}

/// What encoding a file did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodeReport {
    /// Examples with at least one segment cut.
    pub cut: usize,
    /// Records skipped as bad (label not in the set, wrong number of choices, untokenizable).
    pub skipped: usize,
}

/// Segment lengths after cutting `a + b` to at most `m` (see the module docs).
pub fn cut_pair(a: usize, b: usize, m: usize) -> (usize, usize) {
    if a + b <= m {
        return (a, b);
    }
    let (hi, lo) = (m.div_ceil(2), m / 2);
    if a <= b && a <= lo {
        (a, m - a)
    } else if b < a && b <= lo {
        (m - b, b)
    } else {
        (hi, lo)
    }
}

/// Builds the sequences of one task from token ids.
#[derive(Clone, Debug)]
pub struct Transform {
    /// The task.
    pub task: TaskKind,
    /// The special tokens.
    pub specials: Specials,
    /// Longest sequence (the model's context).
    pub max_len: usize,
}

impl Transform {
    /// A transform for sequences of at most `max_len` tokens; errors if the specials alone
    /// fill it.
    pub fn new(task: TaskKind, specials: Specials, max_len: usize) -> Result<Self> {
        let need = task.n_special() + 2;
        if max_len < need {
            return Err(Error::field(
                "n_ctx",
                format!(
                    "a context of {max_len} cannot hold a `{}` sequence ({} special tokens and one token per segment); use a base model with a longer context",
                    task.name(),
                    task.n_special()
                ),
            ));
        }
        Ok(Transform {
            task,
            specials,
            max_len,
        })
    }

    /// `start x extract`, `x` cut to fit. Returns the sequence and whether it was cut.
    pub fn single(&self, x: &[u32]) -> (Vec<u32>, bool) {
        let m = self.max_len - 2;
        let n = x.len().min(m);
        let mut s = Vec::with_capacity(n + 2);
        s.push(self.specials.start);
        s.extend_from_slice(&x[..n]);
        s.push(self.specials.extract);
        (s, n < x.len())
    }

    /// `start a delim b extract`, cut per segment. Returns the sequence and whether it was cut.
    pub fn pair(&self, a: &[u32], b: &[u32]) -> (Vec<u32>, bool) {
        let (na, nb) = cut_pair(a.len(), b.len(), self.max_len - 3);
        let mut s = Vec::with_capacity(na + nb + 3);
        s.push(self.specials.start);
        s.extend_from_slice(&a[..na]);
        s.push(self.specials.delim);
        s.extend_from_slice(&b[..nb]);
        s.push(self.specials.extract);
        (s, na < a.len() || nb < b.len())
    }

    /// The sequences of one example from its segments' ids (see the module docs). Returns them
    /// and whether any segment was cut.
    pub fn sequences(&self, segments: &[Vec<u32>]) -> (Vec<Vec<u32>>, bool) {
        match self.task {
            TaskKind::Classify => {
                let (s, cut) = self.single(&segments[0]);
                (vec![s], cut)
            }
            TaskKind::Entail => {
                let (s, cut) = self.pair(&segments[0], &segments[1]);
                (vec![s], cut)
            }
            TaskKind::Similar => {
                let (ab, cut) = self.pair(&segments[0], &segments[1]);
                let (ba, _) = self.pair(&segments[1], &segments[0]);
                (vec![ab, ba], cut)
            }
            TaskKind::Choice => {
                let mut cut = false;
                let seqs = segments[1..]
                    .iter()
                    .map(|ans| {
                        let (s, c) = self.pair(&segments[0], ans);
                        cut |= c;
                        s
                    })
                    .collect();
                (seqs, cut)
            }
        }
    }
}

/// The texts of a record's segments, in order (choice: the context, then each answer).
pub fn segments(inputs: &Inputs) -> Vec<&str> {
    match inputs {
        Inputs::Text(t) => vec![t],
        Inputs::Pair(a, b) => vec![a, b],
        Inputs::Choice(q, c) => std::iter::once(q.as_str())
            .chain(c.iter().map(String::as_str))
            .collect(),
    }
}

/// How records map to examples: the label set (classify, entail, similar) or the number of
/// choices (choice).
#[derive(Clone, Debug)]
pub struct Labels<'a> {
    /// The label set (not used by choice).
    pub set: Option<&'a LabelSet>,
    /// Answers per question (choice only).
    pub n_choices: usize,
}

/// Encodes `records` of `path`: tokens (ordinary text, specials never matched), the transform,
/// the label index. A label not in the set, a choice list of another length or text the
/// tokenizer cannot encode is an error naming the file and line, or with `skip_bad` skipped and
/// counted.
pub fn encode_records(
    path: &Path,
    records: &[Record],
    tok: &AnyTokenizer,
    tf: &Transform,
    labels: &Labels,
    skip_bad: bool,
) -> Result<(Vec<Example>, EncodeReport)> {
    let mut out = Vec::with_capacity(records.len());
    let mut report = EncodeReport::default();
    for r in records {
        match encode_one(r, tok, tf, labels) {
            Ok((ex, cut)) => {
                report.cut += cut as usize;
                out.push(ex);
            }
            Err(reason) if skip_bad => {
                let _ = reason;
                report.skipped += 1;
            }
            Err(reason) => return Err(line_error(path, r.line, reason)),
        }
    }
    if out.is_empty() {
        return Err(Error::file(
            path,
            format!("no usable records ({} skipped)", report.skipped),
        ));
    }
    Ok((out, report))
}

fn encode_one(
    r: &Record,
    tok: &AnyTokenizer,
    tf: &Transform,
    labels: &Labels,
) -> std::result::Result<(Example, bool), String> {
    if let Inputs::Choice(_, c) = &r.inputs {
        if c.len() != labels.n_choices {
            return Err(format!(
                "{} choices, but the model was trained with {}",
                c.len(),
                labels.n_choices
            ));
        }
    }
    let label = match &r.label {
        None => None,
        Some(v) => Some(match (tf.task, labels.set) {
            (TaskKind::Choice, _) => match v.as_u64() {
                Some(i) if (i as usize) < labels.n_choices => i as usize,
                _ => {
                    return Err(format!(
                        "label {v} is not a choice index 0..{}",
                        labels.n_choices
                    ))
                }
            },
            (_, Some(set)) => set.index(v).ok_or_else(|| {
                format!(
                    "label {v} is not in the label set of the training file ({})",
                    set.labels
                        .iter()
                        .map(|l| l.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
            (_, None) => return Err("no label set".into()),
        }),
    };
    let mut ids = Vec::new();
    for s in segments(&r.inputs) {
        ids.push(tok.encode(s, false).map_err(|e| e.to_string())?);
    }
    let (seqs, cut) = tf.sequences(&ids);
    Ok((
        Example {
            seqs,
            label,
            line: r.line,
        },
        cut,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule as stated: cut the longer segment's last token until they fit (ties: the later).
    fn cut_by_steps(mut a: usize, mut b: usize, m: usize) -> (usize, usize) {
        while a + b > m {
            if a > b {
                a -= 1;
            } else {
                b -= 1;
            }
        }
        (a, b)
    }

    #[test]
    fn closed_form_cut_is_the_stepwise_rule() {
        for m in 0..20 {
            for a in 0..25 {
                for b in 0..25 {
                    assert_eq!(cut_pair(a, b, m), cut_by_steps(a, b, m), "{a} {b} {m}");
                }
            }
        }
    }
}
