//! `GptConfig`: the plain struct that configures a decoder-only Transformer, with presets.

use crate::error::{Error, Result};
use crate::nn::block::NormPlacement;
use crate::nn::mlp::Activation;
use serde::{Deserialize, Serialize};

pub use crate::nn::embedding::Positions;

/// Configuration of a GPT (decoder-only Transformer with an LM head tied to `wte`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Vocabulary size `V`.
    pub vocab_size: usize,
    /// Context length (maximum `T`).
    pub n_ctx: usize,
    /// Number of blocks.
    pub n_layer: usize,
    /// Attention heads per block.
    pub n_head: usize,
    /// Model width `C`.
    pub n_embd: usize,
    /// Dropout on embeddings and residual branches.
    pub dropout: f32,
    /// Biases in linear layers and LayerNorms' shift.
    pub bias: bool,
    /// LayerNorm placement (pre-LN adds a final `ln_f`).
    pub norm: NormPlacement,
    /// Position embeddings.
    pub positions: Positions,
    /// MLP non-linearity.
    pub activation: Activation,
    /// LayerNorm epsilon.
    pub ln_eps: f32,
}

impl GptConfig {
    fn base(vocab_size: usize, n_ctx: usize, n_layer: usize, n_head: usize, n_embd: usize) -> Self {
        GptConfig {
            vocab_size,
            n_ctx,
            n_layer,
            n_head,
            n_embd,
            dropout: 0.1,
            bias: true,
            norm: NormPlacement::Pre,
            positions: Positions::Learned,
            activation: Activation::Gelu,
            ln_eps: 1e-5,
        }
    }

    /// GPT-1: 12 layers, 768 wide, 12 heads, context 512, post-LN, BPE vocabulary of 40,478.
    pub fn gpt1() -> Self {
        GptConfig {
            norm: NormPlacement::Post,
            ..Self::base(40478, 512, 12, 12, 768)
        }
    }

    /// GPT-2 small (124M).
    pub fn gpt2() -> Self {
        Self::base(50257, 1024, 12, 12, 768)
    }

    /// GPT-2 medium (355M).
    pub fn gpt2_medium() -> Self {
        Self::base(50257, 1024, 24, 16, 1024)
    }

    /// GPT-2 large (774M).
    pub fn gpt2_large() -> Self {
        Self::base(50257, 1024, 36, 20, 1280)
    }

    /// GPT-2 XL (1.5B).
    pub fn gpt2_xl() -> Self {
        Self::base(50257, 1024, 48, 25, 1600)
    }

    /// nanoGPT's shakespeare-char setting: 6 layers, 6 heads, 384 wide, context 256.
    pub fn char_baby(vocab_size: usize) -> Self {
        GptConfig {
            dropout: 0.2,
            ..Self::base(vocab_size, 256, 6, 6, 384)
        }
    }

    /// A tiny model for CPU smoke runs: 4 layers, 4 heads, 128 wide, context 128.
    pub fn tiny(vocab_size: usize) -> Self {
        GptConfig {
            dropout: 0.0,
            ..Self::base(vocab_size, 128, 4, 4, 128)
        }
    }

    /// A preset by name (`gpt1`, `gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`, `char-baby`,
    /// `tiny`); the CPU-sized presets take the tokenizer's vocabulary size.
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        Ok(match name {
            "gpt1" => Self::gpt1(),
            "gpt2" => Self::gpt2(),
            "gpt2-medium" => Self::gpt2_medium(),
            "gpt2-large" => Self::gpt2_large(),
            "gpt2-xl" => Self::gpt2_xl(),
            "char-baby" => Self::char_baby(vocab_size),
            "tiny" => Self::tiny(vocab_size),
            other => {
                return Err(Error::Config {
                    field: "preset".into(),
                    reason: format!(
                        "unknown preset `{other}`; valid: gpt1, gpt2, gpt2-medium, gpt2-large, gpt2-xl, char-baby, tiny"
                    ),
                })
            }
        })
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(Error::Config {
                field: field.into(),
                reason,
            })
        };
        if self.vocab_size == 0 {
            return bad("vocab_size", "must be positive".into());
        }
        if self.n_ctx == 0 {
            return bad("n_ctx", "must be positive".into());
        }
        if self.n_layer == 0 {
            return bad("n_layer", "must be positive".into());
        }
        crate::nn::check_heads(self.n_embd, self.n_head)?;
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        if !(self.ln_eps > 0.0 && self.ln_eps.is_finite()) {
            return bad(
                "ln_eps",
                format!(
                    "{} must be a positive number (LayerNorm divides by sqrt(var + eps); typical: 1e-5)",
                    self.ln_eps
                ),
            );
        }
        if self.positions == Positions::Sinusoidal && !self.n_embd.is_multiple_of(2) {
            return bad("n_embd", "sinusoidal positions need an even width".into());
        }
        // Every buffer the model sizes from these numbers is at most a product of two of them
        // and a small constant; the parameter count covers the largest (n_layer · 12 n_embd²),
        // the position table (n_ctx · n_embd, also the KV cache row) is checked beside it.
        if self.checked_num_params().is_none() || self.n_ctx.checked_mul(self.n_embd).is_none() {
            return bad(
                "n_layer/n_embd/n_ctx/vocab_size",
                format!(
                    "the model's size overflows (n_layer {}, n_embd {}, n_ctx {}, vocab_size {}); \
                     use sizes a machine can hold",
                    self.n_layer, self.n_embd, self.n_ctx, self.vocab_size
                ),
            );
        }
        Ok(())
    }

    /// Number of parameters (with the tied head counted once). Call it on a validated config
    /// (see [`GptConfig::checked_num_params`] otherwise).
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// Number of parameters, or `None` when the count overflows `usize`.
    pub fn checked_num_params(&self) -> Option<usize> {
        let (v, t, l, c) = (self.vocab_size, self.n_ctx, self.n_layer, self.n_embd);
        let b = usize::from(self.bias);
        let wpe = if self.positions == Positions::Learned {
            t.checked_mul(c)?
        } else {
            0
        };
        // Per block: two LayerNorms (4c), c_attn (3c² + 3c), c_proj (c² + c), c_fc (4c² + 4c),
        // mlp.c_proj (4c² + c): 12c² + 4c + 9c·bias.
        let cc = c.checked_mul(c)?;
        let block = cc.checked_mul(12)?.checked_add(c.checked_mul(4 + 9 * b)?)?;
        let ln_f = if self.norm == NormPlacement::Pre {
            c.checked_mul(2)?
        } else {
            0
        };
        v.checked_mul(c)?
            .checked_add(wpe)?
            .checked_add(l.checked_mul(block)?)?
            .checked_add(ln_f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_small_has_124m_parameters() {
        assert_eq!(GptConfig::gpt2().num_params(), 124_439_808);
        assert!(GptConfig::preset("nope", 65)
            .unwrap_err()
            .to_string()
            .contains("valid:"));
        let mut c = GptConfig::tiny(65);
        c.n_head = 3;
        assert!(c.validate().unwrap_err().to_string().contains("divisible"));
        for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
            let c = GptConfig {
                ln_eps: eps,
                ..GptConfig::tiny(65)
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("invalid ln_eps:"), "{e}");
        }
    }

    #[test]
    fn sizes_that_overflow_are_errors_not_panics() {
        for edit in [
            |c: &mut GptConfig| c.n_embd = 1 << 62,
            |c: &mut GptConfig| c.n_layer = usize::MAX,
            |c: &mut GptConfig| c.n_ctx = usize::MAX / 2,
            |c: &mut GptConfig| c.vocab_size = usize::MAX / 64,
        ] {
            let mut c = GptConfig::tiny(65);
            edit(&mut c);
            c.n_head = 1;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("overflows") && e.contains("n_embd"), "{e}");
        }
        for c in [GptConfig::gpt2(), GptConfig::gpt2_xl(), GptConfig::tiny(65)] {
            assert_eq!(c.checked_num_params(), Some(c.num_params()));
        }
    }
}
