//! Zero- and few-shot evaluation with lm-evaluation-harness 0.4's semantics (`gpt eval`).
//!
//! One concept per file, in the order a task flows through them:
//! - [`task`]: task definitions from TOML files (the built-in ones are `tasks/eval/*.toml`);
//! - [`template`]: `{field}` templates and the documents they read;
//! - [`wikitext`]: WikiText documents, lm-eval's detokenizer and word count;
//! - [`pyrandom`]: Python's `random.Random` (MT19937, `sample`, `shuffle`, `choices`);
//! - [`fewshot`]: lm-eval's few-shot example sampler;
//! - [`request`]: context strings, lm-eval's encoding of `(context, continuation)`, truncation;
//! - [`windows`]: lm-eval's disjoint rolling windows for document-level perplexity;
//! - [`scorer`]: batched scoring with one context prefill per group of continuations;
//! - [`metrics`]: accuracies, perplexities and lm-eval's standard errors;
//! - [`evaluate`]: a task from definition to metrics, and lm-eval's results JSON.

pub mod evaluate;
pub mod fewshot;
pub mod metrics;
pub mod pyrandom;
pub mod request;
pub mod scorer;
pub mod task;
pub mod template;
pub mod wikitext;
pub mod windows;

pub use evaluate::{EvalOptions, MetricValue, Prepared, TaskResult};
pub use task::TaskDef;
