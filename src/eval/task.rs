//! Task definitions: a TOML file per task, as lm-eval's YAML, with `{field}` templates
//! ([`super::template`]). The built-in tasks are the files in `tasks/eval/` (compiled in, so the
//! binary needs no checkout); `--task-file` adds a user's. A definition names its data folder,
//! its split files, the request type, the templates, the delimiters and the metrics:
//!
//! ```toml
//! name = "arc_easy"
//! output_type = "multiple_choice"     # loglikelihood | loglikelihood_rolling | multiple_choice
//! dataset = "arc_easy"                # a folder under the data directory
//! test_split = "test.jsonl"           # the split evaluated (documents in file order)
//! training_split = "train.jsonl"      # few-shot examples: train, else validation, else test
//! validation_split = "valid.jsonl"
//! doc_to_text = "Question: {question}\nAnswer:"
//! doc_to_target = "{label}"           # multiple choice: an index, or the text of a choice
//! doc_to_choice = "{choices}"         # a list field, or a list of templates
//! metrics = ["acc", "acc_norm", "acc_bytes"]
//! ```
//!
//! Data files are JSONL (one object per line) or, with `format = "wikitext"`, a WikiText
//! `.tokens` file split into documents (see [`super::wikitext`]).

use super::template::{origin, Doc, Template};
use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// The request type of a task (lm-eval's `output_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    /// `(context, target)`: log-likelihood and whether the target is the greedy continuation.
    Loglikelihood,
    /// The whole document, scored in disjoint windows ([`super::windows`]).
    LoglikelihoodRolling,
    /// One `(context, delimiter + choice)` request per choice.
    MultipleChoice,
}

impl OutputType {
    /// lm-eval's name.
    pub fn name(self) -> &'static str {
        match self {
            OutputType::Loglikelihood => "loglikelihood",
            OutputType::LoglikelihoodRolling => "loglikelihood_rolling",
            OutputType::MultipleChoice => "multiple_choice",
        }
    }
}

/// How the choices of a multiple-choice document are found.
#[derive(Clone, Debug)]
pub enum ChoiceSpec {
    /// A field holding a list of strings, each put into the template in turn
    /// (`doc_to_choice = "{choices}"`, or `" {choices}"` to prefix each with a space).
    Field(String, Template),
    /// One template per choice (`doc_to_choice = ["{sol1}", "{sol2}"]`).
    Templates(Vec<Template>),
}

/// The data layout of a task's files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    /// One JSON object per line.
    Jsonl,
    /// A WikiText `.tokens` file, split into documents at level-1 headings (field `page`).
    Wikitext,
}

/// Metrics a task may ask for.
pub const METRICS: &[&str] = &[
    "acc",
    "acc_norm",
    "acc_bytes",
    "perplexity",
    "word_perplexity",
    "byte_perplexity",
    "bits_per_byte",
];

/// A parsed, checked task definition.
#[derive(Clone, Debug)]
pub struct TaskDef {
    /// The task's name.
    pub name: String,
    /// Where the definition came from (a path, or `tasks/eval/NAME.toml (built in)`).
    pub source: PathBuf,
    /// The request type.
    pub output_type: OutputType,
    /// Data folder (relative to a data directory, or to the task file's folder).
    pub dataset: String,
    /// File layout.
    pub format: DataFormat,
    /// The evaluated split's file.
    pub test_split: String,
    /// Few-shot pool files, in lm-eval's order of preference (train, validation).
    pub training_split: Option<String>,
    /// Validation split file.
    pub validation_split: Option<String>,
    /// An explicit few-shot split (lm-eval's `fewshot_split`); when it is the test split, one
    /// extra example is drawn so the document itself can be dropped.
    pub fewshot_split: Option<String>,
    /// Rendered before the examples (lm-eval's `description`).
    pub description: Option<Template>,
    /// The document's text (the context's last part).
    pub doc_to_text: Template,
    /// The target: its text (loglikelihood, rolling) or the gold choice (multiple choice).
    pub doc_to_target: Template,
    /// The choices (multiple choice only).
    pub doc_to_choice: Option<ChoiceSpec>,
    /// Between an example's text and its target (lm-eval's default `" "`); also before each
    /// choice of a multiple-choice request.
    pub target_delimiter: String,
    /// After each few-shot example (default `"\n\n"`).
    pub fewshot_delimiter: String,
    /// The metrics reported.
    pub metrics: Vec<String>,
    /// `detokenize = "wikitext"`: the target of a rolling task goes through lm-eval's
    /// `wikitext_detokenizer` before scoring, and words and bytes are counted on the target
    /// *before* it (lm-eval's wikitext rule; without it they are counted on the target scored).
    pub wikitext_detokenize: bool,
    /// The definition as written (reported in the results' `configs`).
    pub raw: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    name: Option<Spanned<String>>,
    output_type: Option<Spanned<String>>,
    dataset: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
    test_split: Option<Spanned<String>>,
    training_split: Option<Spanned<String>>,
    validation_split: Option<Spanned<String>>,
    fewshot_split: Option<Spanned<String>>,
    description: Option<Spanned<String>>,
    doc_to_text: Option<Spanned<String>>,
    doc_to_target: Option<Spanned<String>>,
    doc_to_choice: Option<Spanned<RawChoice>>,
    target_delimiter: Option<String>,
    fewshot_delimiter: Option<String>,
    metrics: Option<Spanned<Vec<String>>>,
    detokenize: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawChoice {
    One(String),
    Many(Vec<String>),
}

/// The built-in task files, compiled in from `tasks/eval/`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("wikitext", include_str!("../../tasks/eval/wikitext.toml")),
    (
        "lambada_openai",
        include_str!("../../tasks/eval/lambada_openai.toml"),
    ),
    ("arc_easy", include_str!("../../tasks/eval/arc_easy.toml")),
    (
        "arc_challenge",
        include_str!("../../tasks/eval/arc_challenge.toml"),
    ),
    ("piqa", include_str!("../../tasks/eval/piqa.toml")),
    ("copa", include_str!("../../tasks/eval/copa.toml")),
];

/// The names of the built-in tasks.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// The built-in task `name`; an unknown name is an error listing the known ones.
pub fn builtin(name: &str) -> Result<TaskDef> {
    match BUILTIN.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => parse(
            text,
            &PathBuf::from(format!("tasks/eval/{n}.toml (built in)")),
        ),
        None => Err(Error::field(
            "--tasks",
            format!(
                "unknown task `{name}`; the known tasks are {} (or define one with --task-file)",
                builtin_names().join(", ")
            ),
        )),
    }
}

/// Reads a task file.
pub fn load(path: &Path) -> Result<TaskDef> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, path)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte.min(text.len())].matches('\n').count() + 1
}

/// Parses a task definition; `path` names it in errors (with the line of the offending key).
pub fn parse(text: &str, path: &Path) -> Result<TaskDef> {
    let raw: RawTask = toml::from_str(text)
        .map_err(|e| Error::file(path, format!("not a task definition: {e}")))?;
    let table: toml::Table = toml::from_str(text).map_err(|e| Error::file(path, e.to_string()))?;
    let need = |v: Option<Spanned<String>>, key: &str, why: &str| {
        v.ok_or_else(|| {
            Error::file(
                path,
                format!("missing field `{key}`{why}; see tasks/eval/*.toml for examples"),
            )
        })
    };
    let tmpl = |v: &Spanned<String>, key: &str| {
        Template::parse(
            v.get_ref(),
            &origin(path, line_of(text, v.span().start), key),
        )
    };
    let name = need(raw.name, "name", "")?.into_inner();
    let ot = need(raw.output_type, "output_type", "")?;
    let output_type = match ot.get_ref().as_str() {
        "loglikelihood" => OutputType::Loglikelihood,
        "loglikelihood_rolling" => OutputType::LoglikelihoodRolling,
        "multiple_choice" => OutputType::MultipleChoice,
        other => {
            return Err(Error::field(
                origin(path, line_of(text, ot.span().start), "output_type"),
                format!(
                    "`{other}` is not one of loglikelihood, loglikelihood_rolling, \
                     multiple_choice"
                ),
            ))
        }
    };
    let format = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("jsonl") => DataFormat::Jsonl,
        Some("wikitext") => DataFormat::Wikitext,
        Some(other) => {
            let f = raw.format.as_ref().map_or(0, |f| f.span().start);
            return Err(Error::field(
                origin(path, line_of(text, f), "format"),
                format!("`{other}` is not one of jsonl, wikitext"),
            ));
        }
    };
    let dataset = need(raw.dataset, "dataset", " (the data folder)")?.into_inner();
    let test_split = need(raw.test_split, "test_split", " (the file evaluated)")?.into_inner();
    let doc_to_text = match &raw.doc_to_text {
        Some(t) => tmpl(t, "doc_to_text")?,
        None if output_type == OutputType::LoglikelihoodRolling => Template::parse("", "")?,
        None => {
            return Err(Error::file(
                path,
                "missing field `doc_to_text`; see tasks/eval/*.toml for examples",
            ))
        }
    };
    let target = need(raw.doc_to_target, "doc_to_target", "")?;
    let doc_to_target = tmpl(&target, "doc_to_target")?;
    let doc_to_choice = match (&raw.doc_to_choice, output_type) {
        (Some(c), OutputType::MultipleChoice) => {
            let line = line_of(text, c.span().start);
            Some(match c.get_ref() {
                RawChoice::One(s) => {
                    let t = Template::parse(s, &origin(path, line, "doc_to_choice"))?;
                    let Some(f) = t.single_field().map(str::to_string) else {
                        return Err(Error::field(
                            origin(path, line, "doc_to_choice"),
                            "must name exactly one field, holding a list, or be a list of templates",
                        ));
                    };
                    ChoiceSpec::Field(f, t)
                }
                RawChoice::Many(v) => ChoiceSpec::Templates(
                    v.iter()
                        .map(|s| Template::parse(s, &origin(path, line, "doc_to_choice")))
                        .collect::<Result<_>>()?,
                ),
            })
        }
        (None, OutputType::MultipleChoice) => {
            return Err(Error::file(
                path,
                "missing field `doc_to_choice` (required for output_type multiple_choice)",
            ))
        }
        (Some(c), _) => {
            return Err(Error::field(
                origin(path, line_of(text, c.span().start), "doc_to_choice"),
                "only multiple_choice tasks have choices",
            ))
        }
        (None, _) => None,
    };
    let metrics_sp = need_metrics(raw.metrics, path)?;
    let metrics = metrics_sp.get_ref().clone();
    let allowed: &[&str] = match output_type {
        OutputType::MultipleChoice => &["acc", "acc_norm", "acc_bytes"],
        OutputType::Loglikelihood => &["acc", "perplexity"],
        OutputType::LoglikelihoodRolling => {
            &["word_perplexity", "byte_perplexity", "bits_per_byte"]
        }
    };
    if let Some(bad) = metrics.iter().find(|m| !allowed.contains(&m.as_str())) {
        return Err(Error::field(
            origin(path, line_of(text, metrics_sp.span().start), "metrics"),
            format!(
                "`{bad}` is not a metric of {} tasks (those are: {})",
                output_type.name(),
                allowed.join(", ")
            ),
        ));
    }
    let wikitext_detokenize = match &raw.detokenize {
        None => false,
        Some(d) if d.get_ref() == "wikitext" => true,
        Some(d) => {
            return Err(Error::field(
                origin(path, line_of(text, d.span().start), "detokenize"),
                format!(
                    "`{}` is not a known detokenizer (known: wikitext)",
                    d.get_ref()
                ),
            ))
        }
    };
    Ok(TaskDef {
        name,
        wikitext_detokenize,
        source: path.to_path_buf(),
        output_type,
        dataset,
        format,
        test_split,
        training_split: raw.training_split.map(Spanned::into_inner),
        validation_split: raw.validation_split.map(Spanned::into_inner),
        fewshot_split: raw.fewshot_split.map(Spanned::into_inner),
        description: raw
            .description
            .as_ref()
            .map(|d| tmpl(d, "description"))
            .transpose()?,
        doc_to_text,
        doc_to_target,
        doc_to_choice,
        target_delimiter: raw.target_delimiter.unwrap_or_else(|| " ".into()),
        fewshot_delimiter: raw.fewshot_delimiter.unwrap_or_else(|| "\n\n".into()),
        metrics,
        raw: table,
    })
}

fn need_metrics(m: Option<Spanned<Vec<String>>>, path: &Path) -> Result<Spanned<Vec<String>>> {
    match m {
        Some(m) if !m.get_ref().is_empty() => Ok(m),
        _ => Err(Error::file(
            path,
            format!(
                "missing field `metrics` (a non-empty list of: {})",
                METRICS.join(", ")
            ),
        )),
    }
}

/// The directories searched for a task's data folder, in order: with `--data-dir D`, `D`,
/// `D/eval` and `D/tasks/multiple_choice` (the layouts of the repository's `data/` and of
/// `../shared/data`); without it, `data/eval`, `../shared/data/eval`,
/// `../shared/data/tasks/multiple_choice` and the source checkout's `data/eval`. A user task
/// file's own folder is searched first.
pub fn data_roots(data_dir: Option<&Path>) -> Vec<PathBuf> {
    match data_dir {
        Some(d) => vec![
            d.to_path_buf(),
            d.join("eval"),
            d.join("tasks").join("multiple_choice"),
        ],
        None => vec![
            PathBuf::from("data/eval"),
            PathBuf::from("../shared/data/eval"),
            PathBuf::from("../shared/data/tasks/multiple_choice"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/eval"),
        ],
    }
}

impl TaskDef {
    /// The folder holding this task's data: the first root that has `dataset/test_split`; an
    /// error listing every place looked in otherwise.
    pub fn data_folder(&self, data_dir: Option<&Path>) -> Result<PathBuf> {
        let mut roots = Vec::new();
        if !self.source.to_string_lossy().ends_with("(built in)") {
            if let Some(parent) = self.source.parent() {
                roots.push(parent.to_path_buf());
            }
        }
        roots.extend(data_roots(data_dir));
        let tried: Vec<PathBuf> = roots.iter().map(|r| r.join(&self.dataset)).collect();
        for t in &tried {
            if t.join(&self.test_split).is_file() {
                return Ok(t.clone());
            }
        }
        Err(Error::field(
            format!("task {} data", self.name),
            format!(
                "`{}/{}` is in none of: {}; pass --data-dir DIR (a folder holding `{}/`)",
                self.dataset,
                self.test_split,
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.dataset
            ),
        ))
    }

    /// The few-shot pool's file: `fewshot_split`, else train, else validation, else test (as
    /// lm-eval's `fewshot_docs`).
    pub fn fewshot_file(&self) -> &str {
        self.fewshot_split
            .as_deref()
            .or(self.training_split.as_deref())
            .or(self.validation_split.as_deref())
            .unwrap_or(&self.test_split)
    }

    /// Whether lm-eval draws one extra example to drop the document itself: only when the
    /// few-shot split is *configured* as the test split (lm-eval compares `fewshot_split` with
    /// `test_split`; a pool that falls back to test docs draws exactly K and may lose one).
    pub fn draws_extra(&self) -> bool {
        self.fewshot_split.as_deref() == Some(self.test_split.as_str())
    }

    /// Reads the documents of `file` in this task's format.
    pub fn read_docs(&self, folder: &Path, file: &str) -> Result<Vec<Doc>> {
        let path = folder.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let docs = match self.format {
            DataFormat::Jsonl => read_jsonl(&path, &text)?,
            DataFormat::Wikitext => super::wikitext::documents(&path, &text),
        };
        if docs.is_empty() {
            return Err(Error::file(
                &path,
                "holds no documents; the task needs at least one",
            ));
        }
        Ok(docs)
    }
}

/// One JSON object per non-blank line; a line that is not an object is an error naming it.
pub fn read_jsonl(path: &Path, text: &str) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::file(path, format!("line {}: not JSON: {e}", i + 1)))?;
        let serde_json::Value::Object(fields) = v else {
            return Err(Error::file(
                path,
                format!("line {}: not a JSON object", i + 1),
            ));
        };
        docs.push(Doc {
            fields,
            file: path.to_path_buf(),
            line: i + 1,
        });
    }
    Ok(docs)
}
