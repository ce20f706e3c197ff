//! Hugging Face-compatible checkpoints: `config.json` + `model.safetensors` with GPT-2's tensor
//! names and layouts, so `GPT2LMHeadModel.from_pretrained(dir)` loads what we save and we load
//! what it saves.
//!
//! Names: ours are GPT-2's without the `transformer.` prefix; files are written with the prefix
//! (what `save_pretrained` writes) and read with or without it. The four projection matrices are
//! stored in `Conv1D` orientation `(in, out)` both in memory and on disk, so nothing is transposed.
//! The tied `lm_head.weight` is not written (it is `wte`); the causal-mask buffers `attn.bias` /
//! `attn.masked_bias` of old checkpoints are ignored.
//!
//! Pre-LN models are saved as `GPT2LMHeadModel`, post-LN (GPT-1 style) models as
//! `OpenAIGPTLMHeadModel` (same block tensor names; embeddings `tokens_embed`/`positions_embed`),
//! and models with sinusoidal positions as `gpt-rs`, which only `gpt` loads. Our full
//! configuration is also kept under the `"gpt"` key of `config.json`.
//!
//! Every write goes through [`crate::io`] (a temporary file in the same directory, renamed into
//! place); the layout table ([`ParamLayout`]) names each tensor of a flat buffer, so one pair of
//! functions ([`layout_tensors`], [`read_layout`]) serves weights and optimizer moments alike.

use super::config::{GptConfig, Positions};
use super::gpt::Gpt;
use crate::error::{Error, Result};
use crate::io::{serialize_f32, write_atomic, TensorFile};
use crate::kernels::vmath::first_nonfinite;
use crate::nn::block::NormPlacement;
use crate::nn::mlp::Activation;
use crate::nn::params::{ParamLayout, Params};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;

/// File name of the weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the configuration.
pub const CONFIG_FILE: &str = "config.json";

/// Which Hugging Face architecture a configuration maps onto.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HfFamily {
    /// Pre-LN with learned positions: `GPT2LMHeadModel` (`model_type` "gpt2").
    Gpt2,
    /// Post-LN with learned positions: `OpenAIGPTLMHeadModel` (`model_type` "openai-gpt"),
    /// whose embeddings are named `tokens_embed` / `positions_embed`.
    OpenAiGpt,
    /// Sinusoidal positions: no `transformers` class matches; only `gpt` loads it.
    Custom,
}

/// The architecture `cfg` is saved as.
pub fn hf_family(cfg: &GptConfig) -> HfFamily {
    match (cfg.positions, cfg.norm) {
        (Positions::Sinusoidal, _) => HfFamily::Custom,
        (Positions::Learned, NormPlacement::Pre) => HfFamily::Gpt2,
        (Positions::Learned, NormPlacement::Post) => HfFamily::OpenAiGpt,
    }
}

/// The on-disk name of one of our tensors (with the `transformer.` prefix).
pub fn hf_name(name: &str, family: HfFamily) -> String {
    let renamed = match (family, name) {
        (HfFamily::OpenAiGpt, "wte.weight") => "tokens_embed.weight",
        (HfFamily::OpenAiGpt, "wpe.weight") => "positions_embed.weight",
        _ => name,
    };
    format!("transformer.{renamed}")
}

/// The Hugging Face `config.json` for `cfg` (see [`HfFamily`]); our own full configuration is
/// kept under the `"gpt"` key. `eot` is the tokenizer's `<|endoftext|>` id, written as GPT-2's
/// `bos_token_id` / `eos_token_id` (`null` without one).
pub fn hf_config(cfg: &GptConfig, eot: Option<u32>) -> Value {
    let act = match cfg.activation {
        Activation::Gelu => "gelu_new",
        Activation::Relu => "relu",
    };
    match hf_family(cfg) {
        HfFamily::OpenAiGpt => {
            return json!({
                "architectures": ["OpenAIGPTLMHeadModel"],
                "model_type": "openai-gpt",
                "vocab_size": cfg.vocab_size,
                "n_positions": cfg.n_ctx,
                "n_embd": cfg.n_embd,
                "n_layer": cfg.n_layer,
                "n_head": cfg.n_head,
                // OpenAIGPT's "gelu" is the tanh form (its own ACT_FNS maps it to gelu_new).
                "afn": if cfg.activation == Activation::Gelu { "gelu" } else { "relu" },
                "resid_pdrop": cfg.dropout,
                "embd_pdrop": cfg.dropout,
                "attn_pdrop": 0.0,
                "layer_norm_epsilon": cfg.ln_eps,
                "initializer_range": 0.02,
                "tie_word_embeddings": true,
                "torch_dtype": "float32",
                "gpt": cfg,
            });
        }
        HfFamily::Custom => {
            return json!({
                "architectures": [],
                "model_type": "gpt-rs",
                "vocab_size": cfg.vocab_size,
                "gpt": cfg,
            })
        }
        HfFamily::Gpt2 => {}
    }
    json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.n_ctx,
        "n_ctx": cfg.n_ctx,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": null,
        "activation_function": act,
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": 0.0,
        "layer_norm_epsilon": cfg.ln_eps,
        "initializer_range": 0.02,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "tie_word_embeddings": true,
        "scale_attn_weights": true,
        "torch_dtype": "float32",
        "gpt": cfg,
    })
}

/// Reads a `GptConfig` from a `config.json` value: our `"gpt"` key when present, else GPT-2's
/// schema (pre-LN, learned positions, tanh GELU). The configuration is validated, and an
/// invalid field is named with the file it came from.
pub fn config_from_hf(v: &Value, path: &Path) -> Result<GptConfig> {
    let cfg = parse_config(v, path)?;
    cfg.validate().map_err(|e| match e {
        Error::Config { field, reason } => Error::Config {
            field: format!("{}: {field}", path.display()),
            reason,
        },
        other => Error::file(path, other.to_string()),
    })?;
    Ok(cfg)
}

/// [`config_from_hf`] before validation.
fn parse_config(v: &Value, path: &Path) -> Result<GptConfig> {
    let bad = |field: &str, reason: &str| Error::Config {
        field: format!("{}: {field}", path.display()),
        reason: reason.to_string(),
    };
    if let Some(ours) = v.get("gpt") {
        let cfg: GptConfig =
            serde_json::from_value(ours.clone()).map_err(|e| bad("gpt", &e.to_string()))?;
        cfg.validate().map_err(|e| bad("gpt", &e.to_string()))?;
        return Ok(cfg);
    }
    let model_type = v.get("model_type").and_then(Value::as_str).unwrap_or("");
    let norm = match model_type {
        "gpt2" => NormPlacement::Pre,
        "openai-gpt" => NormPlacement::Post,
        _ => {
            return Err(bad(
                "model_type",
                &format!("`{model_type}` is not a GPT model (expected \"gpt2\" or \"openai-gpt\")"),
            ))
        }
    };
    let get = |k: &str| -> Result<usize> {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|x| x as usize)
            .ok_or_else(|| bad(k, "missing or not an integer"))
    };
    let n_embd = get("n_embd")?;
    if let Some(inner) = v.get("n_inner").and_then(Value::as_u64) {
        // Checked: a damaged n_embd (say 2^62) must be an error, not an overflow.
        if n_embd.checked_mul(4) != usize::try_from(inner).ok() {
            return Err(bad("n_inner", "only n_inner = 4·n_embd is supported"));
        }
    }
    let act_key = if norm == NormPlacement::Pre {
        "activation_function"
    } else {
        "afn"
    };
    let act = v.get(act_key).and_then(Value::as_str).unwrap_or("gelu_new");
    let activation = match act {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::Gelu,
        "gelu" if norm == NormPlacement::Post => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return Err(bad(
                act_key,
                &format!("`{other}` is not supported (gelu_new, relu)"),
            ))
        }
    };
    let cfg = GptConfig {
        vocab_size: get("vocab_size")?,
        n_ctx: get("n_positions")?,
        n_layer: get("n_layer")?,
        n_head: get("n_head")?,
        n_embd,
        dropout: v.get("resid_pdrop").and_then(Value::as_f64).unwrap_or(0.1) as f32,
        bias: true,
        norm,
        positions: Positions::Learned,
        activation,
        ln_eps: v
            .get("layer_norm_epsilon")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5) as f32,
    };
    Ok(cfg)
}

/// Serialises the model's parameters as safetensors bytes with HF names; `metadata` goes into
/// the header (e.g. `{"format": "pt"}` plus our precision).
pub fn weights_bytes(model: &Gpt, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let family = hf_family(&model.config);
    params_bytes(&model.params, |n| hf_name(n, family), metadata)
}

/// The tensors of a flat buffer in `layout` (parameters, or an optimizer moment), each named
/// `name(layout name)`, ready for [`crate::io::serialize_f32`].
pub fn layout_tensors<'a>(
    layout: &ParamLayout,
    flat: &'a [f32],
    name: impl Fn(&str) -> String,
) -> Vec<(String, Vec<usize>, &'a [f32])> {
    layout
        .entries()
        .iter()
        .map(|e| (name(&e.name), e.shape.clone(), e.param.of(flat)))
        .collect()
}

/// Serialises every tensor of `params` as f32 safetensors under `name(layout name)`; shared by
/// every model saved from a [`Params`] layout (GPT, encoder-decoder).
pub fn params_bytes(
    params: &Params,
    name: impl Fn(&str) -> String,
    metadata: Option<HashMap<String, String>>,
) -> Result<Vec<u8>> {
    serialize_f32(
        &layout_tensors(&params.layout, &params.data, name),
        metadata.unwrap_or_default(),
    )
}

/// GPT-2's `<|endoftext|>` id (50256) when the vocabulary is GPT-2's or larger, else `None`:
/// the `eot` of [`save`], which has no tokenizer to ask.
pub fn default_eot(cfg: &GptConfig) -> Option<u32> {
    (cfg.vocab_size > 50256).then_some(50256)
}

/// Saves `config.json` and `model.safetensors` into `dir` atomically (weights first, so a
/// config never describes weights that are not there); the config's `<|endoftext|>` id is
/// [`default_eot`] (see [`save_with_tokenizer`] for a model with its own tokenizer).
pub fn save(model: &Gpt, dir: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
    save_with_eot(model, dir, metadata, default_eot(&model.config))
}

/// [`save`], then the tokenizer files beside the weights; the config names the tokenizer's
/// `<|endoftext|>` id.
pub fn save_with_tokenizer(
    model: &Gpt,
    dir: &Path,
    metadata: Option<HashMap<String, String>>,
    tok: &crate::tokenizer::AnyTokenizer,
) -> Result<()> {
    save_with_eot(
        model,
        dir,
        metadata,
        tok.special_id(crate::tokenizer::ENDOFTEXT),
    )?;
    crate::io::save_tokenizer(tok, dir)
}

fn save_with_eot(
    model: &Gpt,
    dir: &Path,
    metadata: Option<HashMap<String, String>>,
    eot: Option<u32>,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    write_atomic(&dir.join(WEIGHTS_FILE), &weights_bytes(model, metadata)?)?;
    let cfg = serde_json::to_vec_pretty(&hf_config(&model.config, eot))
        .map_err(|e| Error::usage("checkpoint::save", e.to_string()))?;
    write_atomic(&dir.join(CONFIG_FILE), &cfg)
}

/// Reads the model configuration of a checkpoint directory.
pub fn load_config(dir: &Path) -> Result<GptConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| Error::Config {
        field: path.display().to_string(),
        reason: e.to_string(),
    })?;
    config_from_hf(&v, &path)
}

/// Loads a checkpoint directory (ours or a Hugging Face GPT-2) into a new model.
pub fn load(dir: &Path) -> Result<Gpt> {
    let cfg = load_config(dir)?;
    let mut model = Gpt::uninit(cfg)?;
    load_weights(&mut model, &dir.join(WEIGHTS_FILE))?;
    Ok(model)
}

/// Fills `model`'s parameters from a safetensors file, checking every name and shape.
pub fn load_weights(model: &mut Gpt, path: &Path) -> Result<()> {
    let family = hf_family(&model.config);
    load_params(&mut model.params, path, |n| {
        let prefixed = hf_name(n, family);
        let bare = prefixed.trim_start_matches("transformer.").to_string();
        vec![prefixed, bare]
    })
}

/// What a loader does with NaN or ±inf in the values it reads.
///
/// Why refuse by default: such weights only ever produce NaN (a diverged run, a broken
/// conversion), and the error then names the tensor and the file instead of a NaN score or
/// gibberish far downstream. `--allow-nonfinite` loads them anyway, to inspect a checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// An error naming the file and the first tensor holding one.
    #[default]
    Refuse,
    /// Load them as they are.
    Allow,
}

impl NonFinite {
    /// [`NonFinite::Allow`] when `allow` (the `--allow-nonfinite` flag), else `Refuse`.
    pub fn allowing(allow: bool) -> Self {
        if allow {
            NonFinite::Allow
        } else {
            NonFinite::Refuse
        }
    }

    /// With `Refuse`, an error naming `path` and the tensor `name` if `values` hold a NaN or
    /// ±inf (one vectorised pass, [`first_nonfinite`]).
    pub fn check(self, path: &Path, name: &str, values: &[f32]) -> Result<()> {
        if self == NonFinite::Allow {
            return Ok(());
        }
        match first_nonfinite(values) {
            None => Ok(()),
            Some(i) => Err(nonfinite_error(
                path,
                name,
                &format!("{} at element {i}", values[i]),
            )),
        }
    }
}

/// The error of a tensor `name` of `path` that holds a non-finite value (`found` says which,
/// and where).
pub fn nonfinite_error(path: &Path, name: &str, found: &str) -> Error {
    Error::file(
        path,
        format!(
            "tensor `{name}` holds {found}: the weights are not finite (a diverged run or a \
             broken conversion?); load an earlier checkpoint, or pass --allow-nonfinite to load \
             them anyway"
        ),
    )
}

/// Fills `params` from a safetensors file (f32, f16 or bf16), checking every name and shape;
/// `names(layout name)` lists the stored names to try, first found wins. Non-finite values are
/// an error ([`NonFinite::Refuse`]).
pub fn load_params(
    params: &mut Params,
    path: &Path,
    names: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    load_params_with(params, path, names, NonFinite::Refuse)
}

/// [`load_params`] with a choice of what non-finite values do.
pub fn load_params_with(
    params: &mut Params,
    path: &Path,
    names: impl Fn(&str) -> Vec<String>,
    nonfinite: NonFinite,
) -> Result<()> {
    let file = TensorFile::open(path)?;
    read_layout_with(&file, &params.layout, &mut params.data, names, nonfinite)
}

/// Fills the flat buffer `flat` (in `layout`) from `file`, every tensor converted to f32;
/// `names(layout name)` lists the stored names to try. Errors name the file and the tensor,
/// also for a tensor holding NaN or ±inf ([`NonFinite::Refuse`]).
pub fn read_layout(
    file: &TensorFile,
    layout: &ParamLayout,
    flat: &mut [f32],
    names: impl Fn(&str) -> Vec<String>,
) -> Result<()> {
    read_layout_with(file, layout, flat, names, NonFinite::Refuse)
}

/// [`read_layout`] with a choice of what non-finite values do.
pub fn read_layout_with(
    file: &TensorFile,
    layout: &ParamLayout,
    flat: &mut [f32],
    names: impl Fn(&str) -> Vec<String>,
    nonfinite: NonFinite,
) -> Result<()> {
    if flat.len() != layout.total() {
        return Err(Error::shape(
            "read_layout",
            format!("buffer of {}", flat.len()),
            format!("layout of {}", layout.total()),
        ));
    }
    for e in layout.entries() {
        let t = file.find(&names(&e.name))?;
        let dst = e.param.of_mut(flat);
        file.read_f32_into(t, &e.shape, dst)?;
        nonfinite.check(file.path(), &t.name, dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_text_id_is_the_tokenizers_and_inside_the_vocabulary() {
        // A small vocabulary has no id 50256: the config must not name one.
        let small = GptConfig::tiny(65);
        assert_eq!(default_eot(&small), None);
        let v = hf_config(&small, default_eot(&small));
        assert!(v["eos_token_id"].is_null() && v["bos_token_id"].is_null());
        let v = hf_config(&small, Some(64));
        assert_eq!(
            (v["bos_token_id"].as_u64(), v["eos_token_id"].as_u64()),
            (Some(64), Some(64))
        );
        assert_eq!(default_eot(&GptConfig::gpt2()), Some(50256));
    }

    #[test]
    fn n_inner_with_a_huge_n_embd_is_an_error_not_an_overflow() {
        let mut v = hf_config(&GptConfig::tiny(65), None);
        let o = v.as_object_mut().unwrap();
        o.remove("gpt");
        o.insert("n_embd".into(), json!(1u64 << 62));
        o.insert("n_inner".into(), json!(0));
        let err = config_from_hf(&v, Path::new("dir/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dir/config.json") && err.contains("n_inner"),
            "{err}"
        );
    }
}
