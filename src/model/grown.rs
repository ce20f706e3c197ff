//! A base model prepared for further training with special tokens appended to its vocabulary:
//! the one loader behind GPT-1 fine-tuning (start / delim / extract) and chat training (role
//! tokens and padding).
//!
//! The tokenizer gains the tokens at its next free ids, the token table `wte` grows by as many
//! rows (new rows N(0, 0.02)), every other tensor is copied from the base, and a task head may
//! be registered after the trunk. A special id that falls inside the old table (a vocabulary
//! padded past the tokenizer's) is given a fresh row too.

use super::checkpoint;
use super::Gpt;
use crate::error::{Error, Result};
use crate::io::load_tokenizer;
use crate::nn::params::ParamLayout;
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use std::path::{Path, PathBuf};

/// A base model with its vocabulary grown by special tokens.
pub struct Grown<H> {
    /// The model (trunk and LM head).
    pub gpt: Gpt,
    /// The task head registered after the trunk.
    pub head: H,
    /// The tokenizer with the special tokens appended.
    pub tokenizer: AnyTokenizer,
    /// The ids of the special tokens, in the order asked.
    pub ids: Vec<u32>,
    /// The resolved base directory.
    pub dir: PathBuf,
}

/// How to load a base for further training.
#[derive(Clone, Debug)]
pub struct GrowOptions<'a> {
    /// Special tokens to append (existing ones keep their ids).
    pub specials: &'a [&'a str],
    /// Dropout of every layer.
    pub dropout: f32,
    /// Seed of the new rows, the head and (with `from_scratch`) every weight.
    pub seed: u64,
    /// Keep only the base's architecture and tokenizer; initialise every weight afresh.
    pub from_scratch: bool,
}

/// Loads the base model in `dir` (ours, or a Hugging Face GPT-2 directory with its tokenizer),
/// appends `opts.specials` to its tokenizer and embedding, sets the dropout and registers the
/// head `head` builds (initialised with the rest: N(0, 0.02) for a linear head).
pub fn load_grown<H>(
    dir: &Path,
    opts: &GrowOptions,
    head: impl FnOnce(&mut ParamLayout, usize) -> Result<H>,
) -> Result<Grown<H>> {
    let dir = super::inference::resolve_dir(dir);
    let files = [
        "tokenizer.json",
        "vocab.json",
        crate::io::CHAR_TOKENIZER_FILE,
    ];
    if !files.iter().any(|f| dir.join(f).exists()) {
        return Err(Error::file(
            &dir,
            "the base model has no tokenizer (tokenizer.json, vocab.json + merges.txt, or tokenizer_char.json), which training needs to encode the records and to save with the model; copy the tokenizer it was trained with into this directory",
        ));
    }
    let mut tok = load_tokenizer(&dir)?;
    let base = checkpoint::load(&dir)?;
    let v0 = base.config.vocab_size;
    if tok.vocab_size() > v0 {
        return Err(Error::file(
            &dir,
            format!(
                "the tokenizer has {} ids but the model's vocabulary is {v0}; put the model's own tokenizer beside it",
                tok.vocab_size()
            ),
        ));
    }
    let had: Vec<bool> = opts
        .specials
        .iter()
        .map(|s| tok.special_id(s).is_some())
        .collect();
    let ids = tok
        .add_special_tokens(opts.specials)
        .map_err(|e| Error::file(&dir, format!("adding the special tokens: {e}")))?;
    let mut cfg = base.config.clone();
    cfg.vocab_size = v0.max(tok.vocab_size());
    cfg.dropout = opts.dropout;
    let c = cfg.n_embd;
    let (mut gpt, head) = Gpt::uninit_with(cfg, |l| head(l, c))?;
    let mut rng = Rng::new(opts.seed);
    gpt.params.init(&mut rng);
    // From scratch the fresh initialisation stays (GPT-1's "no pre-training" ablation).
    let copied = if opts.from_scratch {
        &[][..]
    } else {
        base.params.layout.entries()
    };
    for e in copied {
        let src = e.param.of(&base.params.data);
        let dst = gpt.params.tensor_mut(&e.name)?;
        // wte grows by rows; every other tensor has the same shape.
        dst[..src.len()].copy_from_slice(src);
    }
    let wte = gpt.params.tensor_mut("wte.weight")?;
    for (&id, had) in ids.iter().zip(had) {
        let id = id as usize;
        if !had && id < v0 {
            rng.fill_normal(&mut wte[id * c..(id + 1) * c], 0.0, 0.02);
        }
    }
    Ok(Grown {
        gpt,
        head,
        tokenizer: tok,
        ids,
        dir,
    })
}
