//! GPT-1 fine-tuning (Radford et al. 2018, §3.2–3.3) on any of our checkpoints or a Hugging Face
//! GPT-2 directory: the four input transforms ([`transform`]), the head (dropout + a bias-free
//! linear layer, [`crate::nn::classifier`]), the loss `L3 = L2 + λ·L1` ([`model`]), the training
//! task driven by the one loop ([`task`]), and evaluation / prediction ([`eval`]).
//!
//! A fine-tuned model directory holds `config.json` + `model.safetensors` (for classify and
//! entail on a pre-LN base: `transformers`' `GPT2ForSequenceClassification`; on a post-LN base:
//! `OpenAIGPTForSequenceClassification`; the head is `score.weight (K, C)` and `pad_token_id`
//! is the start token, so `transformers` pools at the last token that is not padding, which is
//! the extract token), the tokenizer with the three special tokens appended, and
//! `finetune.json` (the task, the label set, the special ids). `similar` (two orders summed)
//! and `choice` (softmax over per-answer scalars) have no `transformers` class that computes
//! them; their `config.json` names the trunk class (`GPT2Model` / `OpenAIGPTModel`), which
//! loads the trunk and ignores `score.weight`.

pub mod eval;
pub mod model;
pub mod records;
pub mod task;
pub mod transform;

pub use eval::{evaluate_file, Classifier, EvalReport, Prediction};
pub use model::{Batch, FinetuneModel, Losses};
pub use task::{finetune, FinetuneConfig, FinetuneOutcome};
pub use transform::{Specials, Transform, SPECIAL_NAMES};

use crate::error::{Error, Result};
use crate::io::{load_tokenizer, save_tokenizer, write_atomic};
use crate::model::checkpoint::{
    self, hf_config, hf_family, hf_name, params_bytes, HfFamily, CONFIG_FILE, WEIGHTS_FILE,
};
use crate::model::grown::{load_grown, GrowOptions};
use crate::model::Gpt;
use crate::nn::classifier::{ClassifierHead, SCORE};
use crate::tokenizer::AnyTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// File of a fine-tuned model directory describing the task and its labels.
pub const META_FILE: &str = "finetune.json";
/// Version of [`META_FILE`] this code writes and reads.
pub const META_VERSION: u32 = 1;

/// The four task kinds of GPT-1's Figure 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// Text classification: `{"text", "label"}`.
    Classify,
    /// Textual entailment: `{"premise", "hypothesis", "label"}`.
    Entail,
    /// Similarity (both orders summed): `{"sentence1", "sentence2", "label"}`.
    Similar,
    /// Multiple choice: `{"question", "choices", "label"}`.
    Choice,
}

impl TaskKind {
    /// Every kind.
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Classify,
        TaskKind::Entail,
        TaskKind::Similar,
        TaskKind::Choice,
    ];

    /// The kind named `s` (`--task`).
    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                Error::field(
                    "--task",
                    format!("`{s}` is not one of classify, entail, similar, choice"),
                )
            })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Classify => "classify",
            TaskKind::Entail => "entail",
            TaskKind::Similar => "similar",
            TaskKind::Choice => "choice",
        }
    }

    /// Special tokens in each of its sequences.
    pub fn n_special(self) -> usize {
        match self {
            TaskKind::Classify => 2,
            _ => 3,
        }
    }
}

/// `finetune.json`: what inference needs beyond the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FinetuneMeta {
    /// [`META_VERSION`].
    pub version: u32,
    /// The task.
    pub task: TaskKind,
    /// The label set, in index order (empty for choice).
    pub labels: Vec<Value>,
    /// Answers per question (choice), else 0.
    pub n_choices: usize,
    /// The special tokens' ids.
    pub specials: Specials,
    /// The padding id (the start token: never after an extract token).
    pub pad_token_id: u32,
    /// Longest sequence (the context).
    pub max_len: usize,
    /// λ of the run that made it.
    pub aux_lm: f32,
    /// The base model directory.
    pub base: PathBuf,
}

impl FinetuneMeta {
    /// The label set (classify, entail, similar).
    pub fn label_set(&self) -> records::LabelSet {
        records::LabelSet {
            labels: self.labels.clone(),
        }
    }

    /// Outputs of the head: the labels, or one scalar per answer.
    pub fn head_outputs(&self) -> usize {
        match self.task {
            TaskKind::Choice => 1,
            _ => self.labels.len(),
        }
    }

    /// Reads `dir/finetune.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(META_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::file(
                &path,
                format!("{e}; is this a `gpt finetune` output directory?"),
            )
        })?;
        let meta: FinetuneMeta = serde_json::from_str(&text)
            .map_err(|e| Error::file(&path, format!("not a valid {META_FILE}: {e}")))?;
        if meta.version != META_VERSION {
            return Err(Error::file(
                &path,
                format!(
                    "version {} is not {META_VERSION}; use the gpt that wrote it",
                    meta.version
                ),
            ));
        }
        Ok(meta)
    }
}

/// The stored names of one of our tensors: the head's as is, the trunk's as GPT-2's.
pub(crate) fn stored_names(name: &str, family: HfFamily) -> Vec<String> {
    if name.starts_with(SCORE) {
        return vec![name.to_string()];
    }
    let prefixed = hf_name(name, family);
    let bare = prefixed.trim_start_matches("transformer.").to_string();
    vec![prefixed, bare]
}

/// The `config.json` of a fine-tuned model (see the module docs); `eot` is the tokenizer's
/// `<|endoftext|>` id (`bos_token_id` / `eos_token_id`, `null` without one).
pub fn finetuned_config(model: &FinetuneModel, meta: &FinetuneMeta, eot: Option<u32>) -> Value {
    let cfg = &model.gpt.config;
    let mut v = hf_config(cfg, eot);
    let family = hf_family(cfg);
    let hf_head = matches!(meta.task, TaskKind::Classify | TaskKind::Entail);
    let arch = match (family, hf_head) {
        (HfFamily::Gpt2, true) => Some("GPT2ForSequenceClassification"),
        (HfFamily::Gpt2, false) => Some("GPT2Model"),
        (HfFamily::OpenAiGpt, true) => Some("OpenAIGPTForSequenceClassification"),
        (HfFamily::OpenAiGpt, false) => Some("OpenAIGPTModel"),
        (HfFamily::Custom, _) => None,
    };
    if let Some(obj) = v.as_object_mut() {
        if let Some(a) = arch {
            obj.insert("architectures".into(), json!([a]));
        }
        let set = meta.label_set();
        let n = meta.head_outputs();
        let name = |i: usize| match meta.task {
            TaskKind::Choice => "score".to_string(),
            _ => set.name(i),
        };
        let id2label: serde_json::Map<String, Value> = (0..n)
            .map(|i| (i.to_string(), Value::from(name(i))))
            .collect();
        let label2id: serde_json::Map<String, Value> =
            (0..n).map(|i| (name(i), Value::from(i))).collect();
        obj.insert("num_labels".into(), n.into());
        obj.insert("id2label".into(), Value::Object(id2label));
        obj.insert("label2id".into(), Value::Object(label2id));
        obj.insert("pad_token_id".into(), meta.pad_token_id.into());
        obj.insert("problem_type".into(), "single_label_classification".into());
    }
    v
}

/// Saves a fine-tuned model into `dir`: weights, `config.json`, the tokenizer and
/// `finetune.json`, each file atomically (weights first).
pub fn save_finetuned(
    model: &FinetuneModel,
    meta: &FinetuneMeta,
    tok: &AnyTokenizer,
    dir: &Path,
    metadata: HashMap<String, String>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let family = hf_family(&model.gpt.config);
    let bytes = params_bytes(
        &model.gpt.params,
        |n| stored_names(n, family).remove(0),
        Some(metadata),
    )?;
    write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
    write_atomic(
        &dir.join(CONFIG_FILE),
        &pretty(&finetuned_config(
            model,
            meta,
            tok.special_id(crate::tokenizer::ENDOFTEXT),
        ))?,
    )?;
    save_tokenizer(tok, dir)?;
    write_atomic(&dir.join(META_FILE), &pretty(meta)?)
}

/// Pretty JSON bytes of a serialisable value.
fn pretty<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v).map_err(|e| Error::usage("save_finetuned", e.to_string()))
}

/// Loads a fine-tuned model directory (or its run directory, whose `checkpoint/` is used).
pub fn load_finetuned(dir: &Path) -> Result<(FinetuneModel, FinetuneMeta, AnyTokenizer)> {
    let dir = crate::model::inference::resolve_dir(dir);
    let meta = FinetuneMeta::read(&dir)?;
    let cfg = checkpoint::load_config(&dir)?;
    let c = cfg.n_embd;
    let k = meta.head_outputs();
    let dropout = cfg.dropout;
    let (mut gpt, head) = Gpt::uninit_with(cfg, |l| ClassifierHead::new(l, c, k, dropout))?;
    let family = hf_family(&gpt.config);
    checkpoint::load_params(&mut gpt.params, &dir.join(WEIGHTS_FILE), |n| {
        stored_names(n, family)
    })?;
    let tok = load_tokenizer(&dir)?;
    if tok.special_id(SPECIAL_NAMES[2]) != Some(meta.specials.extract) {
        return Err(Error::file(
            &dir,
            format!(
                "the tokenizer does not map {} to id {} as {META_FILE} says; keep the tokenizer files `gpt finetune` wrote",
                SPECIAL_NAMES[2], meta.specials.extract
            ),
        ));
    }
    Ok((FinetuneModel::new(gpt, head, meta.task), meta, tok))
}

/// A base model ready to fine-tune: the trunk with its vocabulary grown by the special tokens,
/// the head, and the tokenizer that knows them.
pub struct Base {
    /// The model (head initialised N(0, 0.02), new embedding rows N(0, 0.02)).
    pub model: FinetuneModel,
    /// The tokenizer with the special tokens appended.
    pub tokenizer: AnyTokenizer,
    /// Their ids.
    pub specials: Specials,
    /// The resolved base directory.
    pub dir: PathBuf,
}

/// Loads the base model in `dir` (ours, or a Hugging Face GPT-2 directory with its tokenizer),
/// appends the three special tokens to its tokenizer and embedding (new rows N(0, 0.02), drawn
/// from `seed`), sets the dropout of every layer to `dropout` and adds a head of `n_out`
/// outputs. With `from_scratch` only the base's architecture and tokenizer are kept: every
/// weight is freshly initialised.
pub fn load_base(
    dir: &Path,
    task: TaskKind,
    n_out: usize,
    dropout: f32,
    seed: u64,
    from_scratch: bool,
) -> Result<Base> {
    let opts = GrowOptions {
        specials: &SPECIAL_NAMES,
        dropout,
        seed,
        from_scratch,
    };
    let g = load_grown(dir, &opts, |l, c| ClassifierHead::new(l, c, n_out, dropout))?;
    let specials = Specials {
        start: g.ids[0],
        delim: g.ids[1],
        extract: g.ids[2],
    };
    let (gpt, head, tok, dir) = (g.gpt, g.head, g.tokenizer, g.dir);
    Ok(Base {
        model: FinetuneModel::new(gpt, head, task),
        tokenizer: tok,
        specials,
        dir,
    })
}
