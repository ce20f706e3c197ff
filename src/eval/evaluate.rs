//! A task from definition to metrics: read the documents, draw the few-shot examples, build and
//! encode the requests ([`prepare`]), score them ([`super::scorer`]), aggregate
//! ([`finish`]), and lay the results out as lm-eval's JSON ([`results_json`]).

use super::fewshot::FewshotSampler;
use super::metrics;
use super::request::{encode_pair, fewshot_context, truncate, TokenRequest};
use super::scorer::LogLik;
use super::task::{ChoiceSpec, OutputType, TaskDef};
use super::template::{field, Doc};
use super::wikitext;
use super::windows::rolling_windows;
use crate::error::{Error, Result};
use crate::model::inference::InferenceModel;
use crate::tokenizer::{AnyTokenizer, ENDOFTEXT};
use serde_json::{json, Map, Value};
use std::path::Path;

/// Settings of an evaluation (the flags of `gpt eval`).
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// Few-shot examples per document (K).
    pub num_fewshot: usize,
    /// Evaluate only the first N documents.
    pub limit: Option<usize>,
    /// Groups of requests (a context and its continuations) per forward.
    pub batch_size: usize,
    /// Seed of the few-shot sampler (lm-eval's `fewshot_random_seed`, 1234).
    pub seed: i64,
    /// Bootstrap resamples for the perplexity stderr (lm-eval's default 100,000; 0: none).
    pub bootstrap_iters: usize,
    /// `--data-dir`.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            num_fewshot: 0,
            limit: None,
            batch_size: 8,
            seed: 1234,
            bootstrap_iters: 100_000,
            data_dir: None,
        }
    }
}

/// What one document contributes, besides its requests.
#[derive(Clone, Debug)]
pub enum DocInfo {
    /// Multiple choice: the choice texts (as `doc_to_choice` gives them) and the gold index.
    Choice {
        /// The choices.
        choices: Vec<String>,
        /// The correct one.
        gold: usize,
    },
    /// Loglikelihood: one request.
    Target,
    /// Rolling: words and bytes counted as lm-eval counts them.
    Rolling {
        /// `len(re.split(r"\s+", text))`.
        words: usize,
        /// UTF-8 bytes.
        bytes: usize,
    },
}

/// A task with its requests built and encoded, ready to score.
pub struct Prepared {
    /// The definition.
    pub task: TaskDef,
    /// Documents in the evaluated split.
    pub n_original: usize,
    /// Per evaluated document.
    pub docs: Vec<DocInfo>,
    /// The request strings `(context, continuation)` before encoding, in request order.
    pub strings: Vec<(String, String)>,
    /// Encoded (and truncated) requests.
    pub requests: Vec<TokenRequest>,
    /// The document of each request.
    pub request_doc: Vec<usize>,
    /// Requests cut on the left to fit the model's context.
    pub truncated: usize,
    /// Few-shot examples per document asked for.
    pub num_fewshot: usize,
}

/// A metric's value and standard error (`None`: lm-eval's `N/A`).
#[derive(Clone, Debug, PartialEq)]
pub struct MetricValue {
    /// The metric's name (`acc`, `perplexity`, ...).
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its standard error.
    pub stderr: Option<f64>,
}

/// The outcome of one task.
#[derive(Clone, Debug)]
pub struct TaskResult {
    /// The task's name.
    pub name: String,
    /// The metrics, in the task file's order.
    pub metrics: Vec<MetricValue>,
    /// Documents in the split.
    pub n_original: usize,
    /// Documents evaluated.
    pub n_effective: usize,
    /// Requests scored.
    pub n_requests: usize,
    /// Requests left-truncated to the context.
    pub truncated: usize,
    /// Few-shot examples per document.
    pub num_fewshot: usize,
    /// The task definition as written, for `configs`.
    pub config: Value,
}

/// The choice texts of a multiple-choice document.
pub fn choices_of(task: &TaskDef, doc: &Doc) -> Result<Vec<String>> {
    match &task.doc_to_choice {
        Some(ChoiceSpec::Field(f, t)) => match field(doc, f, t)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => t.render_over(doc, f, s),
                    other => t.render_over(doc, f, &other.to_string()),
                })
                .collect(),
            _ => Err(Error::field(
                &t.origin,
                format!(
                    "field `{f}` of {} line {} is not a list of choices",
                    doc.file.display(),
                    doc.line
                ),
            )),
        },
        Some(ChoiceSpec::Templates(ts)) => ts.iter().map(|t| t.render(doc)).collect(),
        None => Err(Error::usage(
            "eval::choices_of",
            "not a multiple-choice task",
        )),
    }
}

/// The gold index of a multiple-choice document: `doc_to_target` rendered, read as an index
/// or, failing that, found among the choices (lm-eval's rule for an int or a str target).
pub fn gold_of(task: &TaskDef, doc: &Doc, choices: &[String]) -> Result<usize> {
    let t = task.doc_to_target.render(doc)?;
    let idx = match t.trim().parse::<usize>() {
        Ok(i) => Some(i),
        Err(_) => choices.iter().position(|c| *c == t),
    };
    match idx {
        Some(i) if i < choices.len() => Ok(i),
        _ => Err(Error::field(
            &task.doc_to_target.origin,
            format!(
                "`{t}` ({} line {}) is neither a choice index below {} nor one of the choices",
                doc.file.display(),
                doc.line,
                choices.len()
            ),
        )),
    }
}

/// A few-shot example as `(text, target)`: for multiple choice the target is the gold
/// choice's text.
fn example(task: &TaskDef, doc: &Doc) -> Result<(String, String)> {
    let text = task.doc_to_text.render(doc)?;
    let target = match task.output_type {
        OutputType::MultipleChoice => {
            let ch = choices_of(task, doc)?;
            let g = gold_of(task, doc, &ch)?;
            ch[g].clone()
        }
        _ => task.doc_to_target.render(doc)?,
    };
    Ok((text, target))
}

/// The context string of every document (description, examples, text), drawing examples from
/// `pool` with the task's sampler in document order. Rolling tasks have no context.
pub fn contexts(
    task: &TaskDef,
    docs: &[Doc],
    pool: Vec<Doc>,
    k: usize,
    seed: i64,
) -> Result<Vec<String>> {
    let mut sampler = FewshotSampler::new(seed, pool, task.draws_extra());
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let examples = sampler
            .examples(doc, k)?
            .into_iter()
            .map(|d| example(task, d))
            .collect::<Result<Vec<_>>>()?;
        let description = match &task.description {
            Some(t) => t.render(doc)?,
            None => String::new(),
        };
        let text = task.doc_to_text.render(doc)?;
        out.push(fewshot_context(
            &description,
            &examples,
            &text,
            &task.target_delimiter,
            &task.fewshot_delimiter,
        ));
    }
    Ok(out)
}

/// Reads the task's data and builds its encoded requests for a model of context `n_ctx`
/// whose end-of-text token is `eot`.
pub fn prepare(
    task: &TaskDef,
    tok: &AnyTokenizer,
    n_ctx: usize,
    eot: u32,
    opts: &EvalOptions,
) -> Result<Prepared> {
    let folder = task.data_folder(opts.data_dir.as_deref())?;
    let mut docs = task.read_docs(&folder, &task.test_split)?;
    let n_original = docs.len();
    if let Some(l) = opts.limit {
        docs.truncate(l);
    }
    if docs.is_empty() {
        return Err(Error::field(
            "--limit",
            format!("0 documents of task {} to evaluate", task.name),
        ));
    }
    let k = if task.output_type == OutputType::LoglikelihoodRolling {
        0
    } else {
        opts.num_fewshot
    };
    let ctxs = if task.output_type == OutputType::LoglikelihoodRolling {
        vec![String::new(); docs.len()]
    } else {
        let pool = if k > 0 {
            task.read_docs(&folder, task.fewshot_file())?
        } else {
            Vec::new()
        };
        contexts(task, &docs, pool, k, opts.seed)?
    };
    let mut p = Prepared {
        task: task.clone(),
        n_original,
        docs: Vec::with_capacity(docs.len()),
        strings: Vec::new(),
        requests: Vec::new(),
        request_doc: Vec::new(),
        truncated: 0,
        num_fewshot: k,
    };
    for (di, (doc, ctx)) in docs.iter().zip(ctxs).enumerate() {
        let what = || format!("{} line {}", doc.file.display(), doc.line);
        match task.output_type {
            OutputType::MultipleChoice => {
                let choices = choices_of(task, doc)?;
                let gold = gold_of(task, doc, &choices)?;
                for ch in &choices {
                    let cont = format!("{}{ch}", task.target_delimiter);
                    push(&mut p, tok, eot, n_ctx, di, ctx.clone(), cont, &what())?;
                }
                p.docs.push(DocInfo::Choice { choices, gold });
            }
            OutputType::Loglikelihood => {
                let cont = task.doc_to_target.render(doc)?;
                push(&mut p, tok, eot, n_ctx, di, ctx, cont, &what())?;
                p.docs.push(DocInfo::Target);
            }
            OutputType::LoglikelihoodRolling => {
                let raw = task.doc_to_target.render(doc)?;
                let text = if task.wikitext_detokenize {
                    wikitext::detokenize(&raw)
                } else {
                    raw.clone()
                };
                let counted = if task.wikitext_detokenize {
                    &raw
                } else {
                    &text
                };
                let ids = tok
                    .encode(&text, true)
                    .map_err(|e| Error::field(what(), e.to_string()))?;
                for w in rolling_windows(&ids, eot, n_ctx) {
                    p.requests.push(TokenRequest {
                        context: w.context,
                        continuation: w.continuation,
                    });
                    p.request_doc.push(di);
                }
                p.strings.push((String::new(), text.clone()));
                p.docs.push(DocInfo::Rolling {
                    words: wikitext::count_words(counted),
                    bytes: counted.len(),
                });
            }
        }
    }
    Ok(p)
}

#[allow(clippy::too_many_arguments)]
fn push(
    p: &mut Prepared,
    tok: &AnyTokenizer,
    eot: u32,
    n_ctx: usize,
    doc: usize,
    ctx: String,
    cont: String,
    what: &str,
) -> Result<()> {
    let mut r = encode_pair(tok, &ctx, &cont, eot)?;
    if r.continuation.is_empty() {
        return Err(Error::field(
            what.to_string(),
            format!("the continuation {cont:?} encodes to no tokens; nothing to score"),
        ));
    }
    if truncate(&mut r, n_ctx, what)? {
        p.truncated += 1;
    }
    p.strings.push((ctx, cont));
    p.requests.push(r);
    p.request_doc.push(doc);
    Ok(())
}

/// Aggregates the scores of `p`'s requests (`lls`, in request order) into its metrics.
pub fn finish(p: &Prepared, lls: &[LogLik], opts: &EvalOptions) -> Result<TaskResult> {
    if lls.len() != p.requests.len() {
        return Err(Error::shape(
            "eval::finish",
            format!("{} scores", lls.len()),
            format!("{} requests", p.requests.len()),
        ));
    }
    // Per-document request ranges (requests are in document order).
    let mut per_doc: Vec<Vec<LogLik>> = vec![Vec::new(); p.docs.len()];
    for (r, &d) in lls.iter().zip(&p.request_doc) {
        per_doc[d].push(*r);
    }
    let mut values: std::collections::HashMap<&str, (f64, Option<f64>)> = Default::default();
    match p.task.output_type {
        OutputType::MultipleChoice => {
            let (mut acc, mut norm, mut bytes) = (Vec::new(), Vec::new(), Vec::new());
            for (info, scores) in p.docs.iter().zip(&per_doc) {
                if let DocInfo::Choice { choices, gold } = info {
                    let l: Vec<f64> = scores.iter().map(|s| s.ll).collect();
                    let (a, n, b) = metrics::choice_scores(&l, choices, *gold);
                    acc.push(a);
                    norm.push(n);
                    bytes.push(b);
                }
            }
            for (name, xs) in [("acc", &acc), ("acc_norm", &norm), ("acc_bytes", &bytes)] {
                values.insert(name, (metrics::mean(xs), metrics::mean_stderr(xs)));
            }
        }
        OutputType::Loglikelihood => {
            let ll: Vec<f64> = per_doc.iter().map(|s| s[0].ll).collect();
            let acc: Vec<f64> = per_doc
                .iter()
                .map(|s| if s[0].greedy { 1.0 } else { 0.0 })
                .collect();
            values.insert("acc", (metrics::mean(&acc), metrics::mean_stderr(&acc)));
            if p.task.metrics.iter().any(|m| m == "perplexity") {
                values.insert(
                    "perplexity",
                    (
                        metrics::perplexity(&ll),
                        metrics::bootstrap_stderr(metrics::perplexity, &ll, opts.bootstrap_iters),
                    ),
                );
            }
        }
        OutputType::LoglikelihoodRolling => {
            let ll: Vec<f64> = per_doc
                .iter()
                .map(|s| s.iter().map(|x| x.ll).sum())
                .collect();
            let (mut words, mut bytes) = (Vec::new(), Vec::new());
            for info in &p.docs {
                if let DocInfo::Rolling { words: w, bytes: b } = info {
                    words.push(*w);
                    bytes.push(*b);
                }
            }
            values.insert(
                "word_perplexity",
                (metrics::weighted_perplexity(&ll, &words), None),
            );
            values.insert(
                "byte_perplexity",
                (metrics::weighted_perplexity(&ll, &bytes), None),
            );
            values.insert("bits_per_byte", (metrics::bits_per_byte(&ll, &bytes), None));
        }
    }
    let metrics = p
        .task
        .metrics
        .iter()
        .filter_map(|m| {
            values.get(m.as_str()).map(|&(value, stderr)| MetricValue {
                name: m.clone(),
                value,
                stderr,
            })
        })
        .collect();
    let config = serde_json::to_value(&p.task.raw)
        .map_err(|e| Error::usage("eval::finish", e.to_string()))?;
    Ok(TaskResult {
        name: p.task.name.clone(),
        metrics,
        n_original: p.n_original,
        n_effective: p.docs.len(),
        n_requests: p.requests.len(),
        truncated: p.truncated,
        num_fewshot: p.num_fewshot,
        config,
    })
}

/// The end-of-text id lm-eval's requests need (the context of an empty-context request, the
/// first token of every document's windows); an error naming `model_dir` if the tokenizer has
/// none.
pub fn end_of_text(tok: &AnyTokenizer, model_dir: &Path) -> Result<u32> {
    tok.special_id(ENDOFTEXT).ok_or_else(|| {
        Error::field(
            "--model",
            format!(
                "the tokenizer of {} has no `{ENDOFTEXT}` token, which lm-eval's requests need \
                 (empty contexts, document windows); use a BPE model with one",
                model_dir.display()
            ),
        )
    })
}

/// What [`evaluate_tasks`] reports as it goes.
pub enum Progress<'a> {
    /// Every task is prepared: `total` requests to score.
    Start {
        /// Requests of all tasks.
        total: usize,
    },
    /// `done` more requests of task `task` are scored.
    Scored {
        /// The task's name.
        task: &'a str,
        /// Requests just finished.
        done: usize,
    },
}

/// Evaluates `tasks` on `model`: every task is prepared first (so bad data stops the run before
/// any scoring, and the total is known), then each is scored and aggregated in order.
pub fn evaluate_tasks(
    model: &InferenceModel,
    tok: &AnyTokenizer,
    eot: u32,
    tasks: &[TaskDef],
    opts: &EvalOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<TaskResult>> {
    let prepared = tasks
        .iter()
        .map(|t| prepare(t, tok, model.config.n_ctx, eot, opts))
        .collect::<Result<Vec<_>>>()?;
    progress(Progress::Start {
        total: prepared.iter().map(|p| p.requests.len()).sum(),
    });
    let mut results = Vec::with_capacity(prepared.len());
    for p in &prepared {
        let lls = super::scorer::score(model, &p.requests, opts.batch_size, &mut |done| {
            progress(Progress::Scored {
                task: &p.task.name,
                done,
            })
        })?;
        results.push(finish(p, &lls, opts)?);
    }
    Ok(results)
}

/// lm-eval's results layout: `results` (`"acc,none"`, `"acc_stderr,none"`, ... per task;
/// a missing stderr is `"N/A"`), `configs`, `n-shot`, `n-samples`, `higher_is_better`, and
/// `config` (the run's settings); our additions are under `gpt` (truncated requests, request
/// counts).
pub fn results_json(results: &[TaskResult], model: &Path, opts: &EvalOptions) -> Value {
    let mut res = Map::new();
    let mut configs = Map::new();
    let mut nshot = Map::new();
    let mut nsamples = Map::new();
    let mut hib = Map::new();
    let mut ours = Map::new();
    for r in results {
        let mut m = Map::new();
        m.insert("alias".into(), json!(r.name));
        let mut h = Map::new();
        for v in &r.metrics {
            m.insert(format!("{},none", v.name), json!(v.value));
            m.insert(
                format!("{}_stderr,none", v.name),
                v.stderr.map_or(json!("N/A"), |s| json!(s)),
            );
            h.insert(v.name.clone(), json!(v.name.starts_with("acc")));
        }
        res.insert(r.name.clone(), Value::Object(m));
        let mut c = r.config.clone();
        if let Value::Object(o) = &mut c {
            o.insert("num_fewshot".into(), json!(r.num_fewshot));
            o.insert("fewshot_seed".into(), json!(opts.seed));
        }
        configs.insert(r.name.clone(), c);
        nshot.insert(r.name.clone(), json!(r.num_fewshot));
        nsamples.insert(
            r.name.clone(),
            json!({"original": r.n_original, "effective": r.n_effective}),
        );
        hib.insert(r.name.clone(), Value::Object(h));
        ours.insert(
            r.name.clone(),
            json!({"requests": r.n_requests, "truncated": r.truncated}),
        );
    }
    json!({
        "results": res,
        "configs": configs,
        "n-shot": nshot,
        "n-samples": nsamples,
        "higher_is_better": hib,
        "config": {
            "model": model.display().to_string(),
            "batch_size": opts.batch_size,
            "limit": opts.limit,
            "bootstrap_iters": opts.bootstrap_iters,
            "fewshot_seed": opts.seed,
            "num_fewshot": opts.num_fewshot,
        },
        "gpt": ours,
    })
}
