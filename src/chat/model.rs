//! Chat model directories: loading the model a chat training starts from, and saving what it
//! makes.
//!
//! - A chat model (`gpt sft`, `gpt dpo`): a GPT-2 checkpoint (`config.json` +
//!   `model.safetensors`, `transformers`' `GPT2LMHeadModel`), its tokenizer with the role tokens,
//!   and `tokenizer_config.json` holding the chat template ([`super::template`]). `gpt generate`,
//!   `gpt chat` and `transformers` all load it.
//! - A reward model (`gpt reward`): the same plus `score.weight (1, C)`, saved as
//!   `transformers`' `GPT2ForSequenceClassification` with one label and the `<|pad|>` id as
//!   `pad_token_id` (so `transformers` pools at the last real token), and `reward.json`.

use super::template::{ChatTemplate, CHAT_SPECIALS, TOKENIZER_CONFIG_FILE};
use crate::error::{Error, Result};
use crate::finetune::{stored_names, FinetuneModel, TaskKind};
use crate::io::{save_tokenizer, write_atomic};
use crate::model::checkpoint::{
    self, hf_config, hf_family, params_bytes, save_with_tokenizer, CONFIG_FILE, WEIGHTS_FILE,
};
use crate::model::grown::{load_grown, GrowOptions};
use crate::model::Gpt;
use crate::nn::classifier::ClassifierHead;
use crate::tokenizer::AnyTokenizer;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A model ready for chat training: weights with the role tokens in the vocabulary, the
/// tokenizer, the template, and the template's file (named in errors).
pub struct ChatBase<H> {
    /// The model.
    pub gpt: Gpt,
    /// A task head registered after the trunk (the reward model's), or `()`.
    pub head: H,
    /// The tokenizer.
    pub tokenizer: AnyTokenizer,
    /// The chat template (the model's own, or [`super::template::DEFAULT_TEMPLATE`]).
    pub template: ChatTemplate,
    /// Where the template came from.
    pub template_origin: PathBuf,
    /// The padding id (`<|pad|>`, or EOS for a template without a pad token).
    pub pad: u32,
    /// The resolved model directory.
    pub dir: PathBuf,
}

/// Loads `dir` for chat training with dropout 0: a model that carries a chat template keeps it;
/// one without gets [`super::template::DEFAULT_TEMPLATE`] and its role tokens (appended to the
/// vocabulary, new rows N(0, 0.02) from `seed`). `head` registers a task head after the trunk.
pub fn load_chat_base<H>(
    dir: &Path,
    seed: u64,
    head: impl FnOnce(&mut crate::nn::params::ParamLayout, usize) -> Result<H>,
) -> Result<ChatBase<H>> {
    let resolved = crate::model::inference::resolve_dir(dir);
    let own = ChatTemplate::load(&resolved)?;
    let (template, origin) = match own {
        Some(t) => (t, resolved.join(TOKENIZER_CONFIG_FILE)),
        None => (
            ChatTemplate::default_template(),
            PathBuf::from("<default chat template>"),
        ),
    };
    let mut specials: Vec<&str> = vec![&template.eos_token];
    if template.source() == super::template::DEFAULT_TEMPLATE {
        specials.extend(CHAT_SPECIALS);
    }
    if let Some(p) = &template.pad_token {
        specials.push(p);
    }
    specials.retain(|s| !s.is_empty());
    specials.dedup();
    let opts = GrowOptions {
        specials: &specials,
        dropout: 0.0,
        seed,
        from_scratch: false,
    };
    let g = load_grown(&resolved, &opts, head)?;
    let pad = template
        .pad_token
        .as_deref()
        .and_then(|p| g.tokenizer.special_id(p))
        .or_else(|| g.tokenizer.special_id(&template.eos_token))
        .ok_or_else(|| {
            Error::file(
                &origin,
                "the chat template has neither a pad_token nor an eos_token the tokenizer knows",
            )
        })?;
    Ok(ChatBase {
        gpt: g.gpt,
        head: g.head,
        tokenizer: g.tokenizer,
        template,
        template_origin: origin,
        pad,
        dir: g.dir,
    })
}

/// Saves a chat model (trunk and LM head) into `dir`: weights, `config.json`, the tokenizer
/// and `tokenizer_config.json` with the template, each file atomically (weights first).
pub fn save_chat_model(
    gpt: &Gpt,
    tok: &AnyTokenizer,
    template: &ChatTemplate,
    dir: &Path,
    meta: HashMap<String, String>,
) -> Result<()> {
    save_with_tokenizer(gpt, dir, Some(meta), tok)?;
    template.save(dir, &tok.special_tokens(), gpt.config.n_ctx)
}

/// File of a reward-model directory with what scoring needs beyond the weights.
pub const REWARD_META_FILE: &str = "reward.json";

/// `reward.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardMeta {
    /// Format version (1).
    pub version: u32,
    /// The padding id.
    pub pad_token_id: u32,
    /// Longest sequence.
    pub max_len: usize,
}

/// Saves a reward model into `dir`: weights (trunk as GPT-2's, `score.weight`), `config.json`
/// for `GPT2ForSequenceClassification`, the tokenizer, the template and `reward.json`.
pub fn save_reward_model(
    gpt: &Gpt,
    tok: &AnyTokenizer,
    template: &ChatTemplate,
    meta: &RewardMeta,
    dir: &Path,
    metadata: HashMap<String, String>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let family = hf_family(&gpt.config);
    let bytes = params_bytes(
        &gpt.params,
        |n| stored_names(n, family).remove(0),
        Some(metadata),
    )?;
    write_atomic(&dir.join(WEIGHTS_FILE), &bytes)?;
    let mut v = hf_config(&gpt.config, tok.special_id(&template.eos_token));
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "architectures".into(),
            json!(["GPT2ForSequenceClassification"]),
        );
        o.insert("num_labels".into(), json!(1));
        o.insert("id2label".into(), json!({"0": "reward"}));
        o.insert("label2id".into(), json!({"reward": 0}));
        o.insert("pad_token_id".into(), json!(meta.pad_token_id));
        o.insert("problem_type".into(), json!("regression"));
    }
    let pretty = |v: &serde_json::Value| {
        serde_json::to_vec_pretty(v).map_err(|e| Error::usage("save_reward_model", e.to_string()))
    };
    write_atomic(&dir.join(CONFIG_FILE), &pretty(&v)?)?;
    save_tokenizer(tok, dir)?;
    template.save(dir, &tok.special_tokens(), gpt.config.n_ctx)?;
    write_atomic(
        &dir.join(REWARD_META_FILE),
        &pretty(&serde_json::to_value(meta).unwrap_or_default())?,
    )
}

/// A trained reward model: the trunk with its scalar head, the tokenizer and the template.
pub struct RewardModel {
    /// Trunk and head (a two-answer choice model: see [`super::reward`]).
    pub model: FinetuneModel,
    /// The tokenizer.
    pub tokenizer: AnyTokenizer,
    /// The chat template.
    pub template: ChatTemplate,
    /// `reward.json`.
    pub meta: RewardMeta,
    /// The directory.
    pub dir: PathBuf,
}

/// Loads a reward model saved by `gpt reward` (its directory or its run directory).
pub fn load_reward_model(dir: &Path) -> Result<RewardModel> {
    let dir = crate::model::inference::resolve_dir(dir);
    let path = dir.join(REWARD_META_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::file(
            &path,
            format!("{e}; is this a `gpt reward` output directory?"),
        )
    })?;
    let meta: RewardMeta = serde_json::from_str(&text)
        .map_err(|e| Error::file(&path, format!("not a valid {REWARD_META_FILE}: {e}")))?;
    let cfg = checkpoint::load_config(&dir)?;
    let c = cfg.n_embd;
    let (mut gpt, head) = Gpt::uninit_with(cfg, |l| ClassifierHead::new(l, c, 1, 0.0))?;
    let family = hf_family(&gpt.config);
    checkpoint::load_params(&mut gpt.params, &dir.join(WEIGHTS_FILE), |n| {
        stored_names(n, family)
    })?;
    let tokenizer = crate::io::load_tokenizer(&dir)?;
    let template = ChatTemplate::load(&dir)?.ok_or_else(|| {
        Error::file(
            &dir.join(TOKENIZER_CONFIG_FILE),
            "the reward model has no chat template; keep the files `gpt reward` wrote",
        )
    })?;
    Ok(RewardModel {
        model: FinetuneModel::new(gpt, head, TaskKind::Choice),
        tokenizer,
        template,
        meta,
        dir,
    })
}
