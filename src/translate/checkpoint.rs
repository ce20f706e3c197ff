//! Encoder-decoder model directories: `config.json` (`"model_type": "gpt-rs-transformer"`, our
//! [`TransformerConfig`] under `"transformer"`), `model.safetensors` (layout names, f32) and the
//! joint tokenizer files, so one directory is everything `gpt translate --model DIR` needs.
//!
//! A training run writes one such directory per checkpoint step under `OUT/checkpoints/` and
//! names the newest in `OUT/latest`; `--model OUT` resolves through it. Checkpoint averaging
//! (the paper averages the last 5 or 20) takes the element-wise mean of several directories.

use crate::error::{Error, Result};
use crate::io::{load_tokenizer, save_tokenizer, write_atomic};
use crate::model::checkpoint::{
    load_params_with, params_bytes, NonFinite, CONFIG_FILE, WEIGHTS_FILE,
};
use crate::model::transformer::{EncoderDecoder, TransformerConfig};
use crate::tokenizer::{AnyTokenizer, Tokenizer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `model_type` of our encoder-decoder directories.
pub const MODEL_TYPE: &str = "gpt-rs-transformer";
pub use crate::train::checkpoint::{list_checkpoints, CHECKPOINTS_DIR, LATEST_FILE};

/// Writes `config.json`, `model.safetensors` and the tokenizer into `dir`.
pub fn save_model(
    model: &EncoderDecoder,
    tok: &Tokenizer,
    dir: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(
        &dir.join(WEIGHTS_FILE),
        &params_bytes(&model.params, str::to_string, metadata)?,
    )?;
    save_tokenizer(&AnyTokenizer::Bpe(Box::new(tok.clone())), dir)?;
    let cfg = json!({
        "architectures": ["EncoderDecoder"],
        "model_type": MODEL_TYPE,
        "vocab_size": model.config.vocab_size,
        "transformer": model.config,
    });
    let bytes =
        serde_json::to_vec_pretty(&cfg).map_err(|e| Error::usage("save_model", e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), &bytes)
}

/// The model directory `path` names: itself if it has a `config.json`, else the checkpoint
/// its `latest` file names (a training run's output directory).
pub fn resolve_model_dir(path: &Path) -> Result<PathBuf> {
    if path.join(CONFIG_FILE).exists() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join(LATEST_FILE);
    if latest.exists() {
        let name = std::fs::read_to_string(&latest).map_err(|e| Error::io(&latest, e))?;
        let dir = path.join(name.trim());
        if dir.join(CONFIG_FILE).exists() {
            return Ok(dir);
        }
        return Err(Error::file(
            &latest,
            format!("names {}, which has no {CONFIG_FILE}", dir.display()),
        ));
    }
    Err(Error::file(
        path,
        format!("not a model directory (no {CONFIG_FILE}) nor a `gpt translate train` output (no {LATEST_FILE})"),
    ))
}

/// Reads the [`TransformerConfig`] of a model directory; errors if it is not an encoder-decoder.
pub fn load_config(dir: &Path) -> Result<TransformerConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        field: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let Some(cfg) = v.get("transformer") else {
        let kind = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(Error::file(
            &path,
            format!(
                "not an encoder-decoder model (model_type `{kind}`, expected `{MODEL_TYPE}`); \
                 train one with `gpt translate train`"
            ),
        ));
    };
    let cfg: TransformerConfig =
        serde_json::from_value(cfg.clone()).map_err(|e| Error::Config {
            field: format!("{}: transformer", path.display()),
            reason: e.to_string(),
        })?;
    // An invalid field is named with the file it came from.
    cfg.validate().map_err(|e| match e {
        Error::Config { field, reason } => Error::Config {
            field: format!("{}: transformer.{field}", path.display()),
            reason,
        },
        other => Error::file(&path, other.to_string()),
    })?;
    Ok(cfg)
}

/// Loads a model and its tokenizer from a model directory (or a run directory, see
/// [`resolve_model_dir`]); weights holding NaN or ±inf are an error naming the tensor.
pub fn load_model(path: &Path) -> Result<(EncoderDecoder, Tokenizer)> {
    load_model_with(path, NonFinite::Refuse)
}

/// [`load_model`] with a choice of what non-finite weights do (`--allow-nonfinite`).
pub fn load_model_with(path: &Path, nonfinite: NonFinite) -> Result<(EncoderDecoder, Tokenizer)> {
    let dir = resolve_model_dir(path)?;
    let cfg = load_config(&dir)?;
    let mut model = EncoderDecoder::uninit(cfg)?;
    load_params_with(
        &mut model.params,
        &dir.join(WEIGHTS_FILE),
        |n| vec![n.to_string()],
        nonfinite,
    )?;
    let tok = match load_tokenizer(&dir)? {
        AnyTokenizer::Bpe(t) => t,
        AnyTokenizer::Char(_) => {
            return Err(Error::file(
                &dir,
                "a translation model needs a BPE tokenizer, found a char tokenizer",
            ))
        }
    };
    if tok.vocab_size() != model.config.vocab_size {
        return Err(Error::file(
            &dir,
            format!(
                "the tokenizer has {} ids but the model {}; the directory mixes two models",
                tok.vocab_size(),
                model.config.vocab_size
            ),
        ));
    }
    Ok((model, *tok))
}

/// Averages the parameters of `dirs` (same configuration) into a model directory `out`, with
/// the tokenizer of the last one.
pub fn average(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let Some(last) = dirs.last() else {
        return Err(Error::usage("average", "no checkpoints given"));
    };
    let (mut acc, tok) = load_model(last)?;
    for d in &dirs[..dirs.len() - 1] {
        let (m, _) = load_model(d)?;
        if m.config != acc.config {
            return Err(Error::file(
                d,
                format!(
                    "has a different configuration from {}; average checkpoints of one run",
                    last.display()
                ),
            ));
        }
        for (a, b) in acc.params.data.iter_mut().zip(&m.params.data) {
            *a += b;
        }
    }
    let k = dirs.len() as f32;
    acc.params.data.iter_mut().for_each(|x| *x /= k);
    let meta = [("averaged".to_string(), dirs.len().to_string())];
    save_model(&acc, &tok, out, Some(meta.into_iter().collect()))
}
