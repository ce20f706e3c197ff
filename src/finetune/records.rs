//! The input records of the four tasks, one JSON object per line (the formats of
//! `data/tasks/`): `{"text", "label"}` (classify), `{"premise", "hypothesis", "label"}`
//! (entail), `{"sentence1", "sentence2", "label"}` (similar), `{"question", "choices": [...],
//! "label"}` (choice; the label is the index of the right choice). Other fields are ignored.
//!
//! Labels may be integers or strings. The label set is read from the training file and saved
//! with the model ([`LabelSet`]): integers in numeric order, strings in byte order, so label
//! `1` of a binary task is index 1 (the positive class of F1) whatever the file order.
//!
//! Bad lines — not JSON, a field missing or empty, a label missing or not in the set, a choice
//! list of the wrong length — are errors naming the file and line, or with `skip_bad` are
//! skipped and counted. A record that has another task's fields instead of this task's is
//! always an error (the wrong `--task`, not one bad line).

use super::TaskKind;
use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The inputs of one record, by task.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// classify: one text.
    Text(String),
    /// entail (premise, hypothesis) or similar (sentence1, sentence2).
    Pair(String, String),
    /// choice: the context and each answer.
    Choice(String, Vec<String>),
}

/// One record of a task file.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// 1-based line in its file.
    pub line: usize,
    /// Its inputs.
    pub inputs: Inputs,
    /// Its label as written (`None` when absent and not required).
    pub label: Option<Value>,
}

/// What a file's reading kept and skipped.
#[derive(Clone, Debug, Default)]
pub struct ReadReport {
    /// Lines skipped as bad (only with `skip_bad`).
    pub skipped: usize,
    /// The first skipped line's error, for the summary.
    pub first_skipped: Option<String>,
}

/// The fields each task's records carry (inputs only).
fn fields(task: TaskKind) -> &'static [&'static str] {
    match task {
        TaskKind::Classify => &["text"],
        TaskKind::Entail => &["premise", "hypothesis"],
        TaskKind::Similar => &["sentence1", "sentence2"],
        TaskKind::Choice => &["question", "choices"],
    }
}

/// The error for line `line` of `path`.
pub fn line_error(path: &Path, line: usize, reason: impl std::fmt::Display) -> Error {
    Error::file(path, format!("line {line}: {reason}"))
}

fn text_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<String, String> {
    match obj.get(key) {
        None => Err(format!("missing field `{key}`")),
        Some(Value::String(s)) if s.trim().is_empty() => Err(format!("field `{key}` is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field `{key}` is not a string")),
    }
}

/// Parses one line into a record; `Err((reason, fatal))`, fatal for a task mismatch.
fn parse_line(
    text: &str,
    line: usize,
    task: TaskKind,
    need_label: bool,
) -> std::result::Result<Record, (String, bool)> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| (format!("not a JSON object: {e}"), false))?;
    let Value::Object(obj) = v else {
        return Err(("not a JSON object".into(), false));
    };
    let ours = fields(task);
    if !ours.iter().any(|k| obj.contains_key(*k)) {
        for other in TaskKind::ALL {
            let theirs = fields(other);
            if other != task && theirs.iter().all(|k| obj.contains_key(*k)) {
                return Err((
                    format!(
                        "the record has the fields of `--task {}` ({}), not those of `--task {}` ({}); use --task {} (or a model fine-tuned for it)",
                        other.name(),
                        theirs.join(", "),
                        task.name(),
                        ours.join(", "),
                        other.name()
                    ),
                    true,
                ));
            }
        }
    }
    let bad = |r: String| (r, false);
    let inputs = match task {
        TaskKind::Classify => Inputs::Text(text_field(&obj, "text").map_err(bad)?),
        TaskKind::Entail | TaskKind::Similar => Inputs::Pair(
            text_field(&obj, ours[0]).map_err(bad)?,
            text_field(&obj, ours[1]).map_err(bad)?,
        ),
        TaskKind::Choice => {
            let q = text_field(&obj, "question").map_err(bad)?;
            let list = match obj.get("choices") {
                Some(Value::Array(a)) => a,
                Some(_) => return Err(bad("field `choices` is not an array".into())),
                None => return Err(bad("missing field `choices`".into())),
            };
            if list.len() < 2 {
                return Err(bad(format!(
                    "`choices` has {} entries; a choice task needs at least 2",
                    list.len()
                )));
            }
            let mut choices = Vec::with_capacity(list.len());
            for (i, c) in list.iter().enumerate() {
                match c {
                    Value::String(s) if !s.trim().is_empty() => choices.push(s.clone()),
                    Value::String(_) => return Err(bad(format!("choices[{i}] is empty"))),
                    _ => return Err(bad(format!("choices[{i}] is not a string"))),
                }
            }
            Inputs::Choice(q, choices)
        }
    };
    let label = match obj.get("label") {
        None | Some(Value::Null) if need_label => return Err(bad("missing field `label`".into())),
        None | Some(Value::Null) => None,
        Some(v @ Value::String(_)) => Some(v.clone()),
        Some(Value::Number(n)) if n.is_i64() => Some(Value::Number(n.clone())),
        Some(other) => {
            return Err(bad(format!(
                "label {other} is neither an integer nor a string"
            )))
        }
    };
    Ok(Record {
        line,
        inputs,
        label,
    })
}

/// Reads the records of `text` (the contents of `path`); blank lines are ignored. Errors name
/// `path` and the line; with `skip_bad` bad lines are skipped and counted instead.
pub fn parse_records(
    path: &Path,
    text: &str,
    task: TaskKind,
    need_label: bool,
    skip_bad: bool,
) -> Result<(Vec<Record>, ReadReport)> {
    let mut out = Vec::new();
    let mut report = ReadReport::default();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        match parse_line(l, i + 1, task, need_label) {
            Ok(r) => out.push(r),
            Err((reason, fatal)) => {
                if fatal || !skip_bad {
                    return Err(line_error(path, i + 1, reason));
                }
                report.skipped += 1;
                report
                    .first_skipped
                    .get_or_insert_with(|| format!("line {}: {reason}", i + 1));
            }
        }
    }
    Ok((out, report))
}

/// Reads a task file (see [`parse_records`]); an empty result is an error.
pub fn read_records(
    path: &Path,
    task: TaskKind,
    need_label: bool,
    skip_bad: bool,
) -> Result<(Vec<Record>, ReadReport)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (records, report) = parse_records(path, &text, task, need_label, skip_bad)?;
    if records.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "no usable `{}` records ({} skipped){}",
                task.name(),
                report.skipped,
                report
                    .first_skipped
                    .as_ref()
                    .map(|s| format!("; first: {s}"))
                    .unwrap_or_default()
            ),
        ));
    }
    Ok((records, report))
}

/// The labels of a classify, entail or similar model, in index order (ints or strings, as
/// written in the training file).
#[derive(Clone, Debug, PartialEq)]
pub struct LabelSet {
    /// The labels by index.
    pub labels: Vec<Value>,
}

impl LabelSet {
    /// The set of labels of `records` (from `path`): integers in numeric order, strings in byte
    /// order; mixing the two, or fewer than two labels, is an error.
    pub fn from_records(path: &Path, records: &[Record]) -> Result<Self> {
        let mut ints: Vec<i64> = Vec::new();
        let mut strs: Vec<String> = Vec::new();
        for r in records {
            match &r.label {
                Some(Value::String(s)) => strs.push(s.clone()),
                Some(v) => ints.push(v.as_i64().unwrap_or_default()),
                None => return Err(line_error(path, r.line, "missing field `label`")),
            }
            if !ints.is_empty() && !strs.is_empty() {
                return Err(line_error(
                    path,
                    r.line,
                    "labels mix integers and strings; use one kind in a file",
                ));
            }
        }
        ints.sort_unstable();
        ints.dedup();
        strs.sort();
        strs.dedup();
        let labels: Vec<Value> = if strs.is_empty() {
            ints.into_iter().map(Value::from).collect()
        } else {
            strs.into_iter().map(Value::from).collect()
        };
        if labels.len() < 2 {
            return Err(Error::file(
                path,
                format!(
                    "only one label ({}) in the file; a classifier needs at least two",
                    labels.first().map(|v| v.to_string()).unwrap_or_default()
                ),
            ));
        }
        Ok(LabelSet { labels })
    }

    /// The index of `label`, if it is in the set (an integer label also matches its string
    /// spelling and vice versa: `1` and `"1"`).
    pub fn index(&self, label: &Value) -> Option<usize> {
        let key = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let k = key(label);
        self.labels.iter().position(|l| key(l) == k)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A label as a display string (`id2label` of `config.json`).
    pub fn name(&self, i: usize) -> String {
        match &self.labels[i] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}
