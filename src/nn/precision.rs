//! Precision of the linear layers' matrix products, and the bf16 shadow of the weights that
//! mixed-precision training reads.
//!
//! With [`Precision::Bf16`], every linear layer (and the tied LM head) rounds its weight and its
//! input activations to bf16 (round-to-nearest-even) for the matrix products of the forward and
//! of both backward products, accumulating in f32 ([`crate::kernels::bf16`]). Master weights,
//! gradients, AdamW moments, LayerNorm, softmax, attention and the loss stay f32.
//!
//! The weights are converted once per optimizer step, not once per product: a [`Bf16Shadow`] is a
//! bf16 copy of the whole flat parameter buffer (same offsets, so a [`super::params::Param`]
//! indexes both), refreshed by the model's owner after each update.
//!
//! The model passes the shadow to its modules in the [`super::weights::Weights`] view
//! (`Weights::with_bf16`); the linear layers and the attention products read it from there.

use crate::error::{Error, Result};
use crate::kernels::bf16::to_bf16;
use half::bf16;
use std::fmt;
use std::str::FromStr;

/// Precision of the matrix products of linear layers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// bf16 products with f32 accumulation; f32 master weights and everything else.
    Bf16,
}

impl Precision {
    /// The accepted names.
    pub const NAMES: [&'static str; 2] = ["f32", "bf16"];

    /// `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The name with the kernel path that will run it, for logs: `f32`, `bf16 (avx512bf16)` or
    /// `bf16 (portable)`.
    pub fn describe(self) -> String {
        match self {
            Precision::F32 => "f32".into(),
            Precision::Bf16 => {
                format!("bf16 ({})", crate::kernels::bf16::Bf16Path::detect().name())
            }
        }
    }

    /// A warning to print when bf16 runs without AVX-512 BF16 (slower than f32), else `None`.
    pub fn warning(self) -> Option<String> {
        use crate::kernels::bf16::Bf16Path;
        (self == Precision::Bf16 && Bf16Path::detect() == Bf16Path::Portable).then(|| {
            "warning: this CPU lacks AVX-512 BF16; bf16 products run on the portable path \
             (same results, slower than f32)"
                .to_string()
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Precision {
    /// Parses a precision given for `field` (`precision`, `dtype`); an unknown name is an error
    /// naming the field and listing the valid names.
    pub fn parse_for(field: &str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::Config {
                field: field.into(),
                reason: format!(
                    "unknown {field} `{s}`; valid: {}",
                    Precision::NAMES.join(", ")
                ),
            }),
        }
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Precision::parse_for("precision", s)
    }
}

/// A bf16 copy of a flat parameter buffer, at the same offsets.
#[derive(Clone, Debug, Default)]
pub struct Bf16Shadow {
    /// The rounded parameters.
    pub data: Vec<bf16>,
}

impl Bf16Shadow {
    /// Rounds `params` (round-to-nearest-even) into the shadow, resizing it if needed.
    pub fn refresh(&mut self, params: &[f32]) {
        self.data.resize(params.len(), bf16::ZERO);
        to_bf16(&mut self.data, params);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_lists_the_valid_ones() {
        assert_eq!("bf16".parse::<Precision>().unwrap(), Precision::Bf16);
        assert_eq!("F32".parse::<Precision>().unwrap(), Precision::F32);
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("fp8") && err.contains("f32, bf16"), "{err}");
    }
}
