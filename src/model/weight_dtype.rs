//! The dtype of an inference model's weight matrices (`--dtype` of `generate`, `score`, `eval`,
//! `serve`, `chat`): f32, bf16, f16 or int8. Training has its own, narrower choice
//! ([`crate::nn::precision::Precision`]: f32 or bf16 products over f32 master weights).
//!
//! Whatever the dtype, the small tensors (biases, LayerNorm, `wpe`) stay f32, and so do the
//! activations, attention and the KV cache; the dtype says how the matrices that decoding
//! streams (the four projections of every block and the tied `wte`) are held and multiplied:
//! - `f32`: as stored;
//! - `bf16`, `f16`: rounded to bfloat16 or IEEE half (a GGUF `F16` file's own weights, as
//!   stored), in strips widened to f32 in registers ([`crate::kernels::half`]);
//! - `int8`: llama.cpp's `Q8_0` (blocks of 32 with an f16 scale), inputs quantized on the fly,
//!   integer products ([`crate::kernels::int8`]).

use crate::error::{Error, Result};
use crate::kernels::half::{HalfFormat, HalfPath};
use crate::nn::precision::Precision;
use std::fmt;
use std::str::FromStr;

/// How the weight matrices of an inference model are held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WeightDtype {
    /// 4 bytes per weight.
    #[default]
    F32,
    /// 2 bytes per weight, bf16 products with f32 accumulation.
    Bf16,
    /// 2 bytes per weight (IEEE half), widened exactly to f32 for the products.
    F16,
    /// 1.0625 bytes per weight (`Q8_0`), 8-bit products.
    Int8,
}

impl WeightDtype {
    /// The accepted names.
    pub const NAMES: [&'static str; 4] = ["f32", "bf16", "f16", "int8"];

    /// `f32`, `bf16`, `f16` or `int8`.
    pub fn name(self) -> &'static str {
        match self {
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::F16 => "f16",
            WeightDtype::Int8 => "int8",
        }
    }

    /// The name with the kernel path that will run it, for logs (e.g. `int8 (avx512vnni)`).
    pub fn describe(self) -> String {
        match self {
            WeightDtype::F32 => "f32".into(),
            WeightDtype::Bf16 | WeightDtype::F16 => {
                format!("{} ({})", self.name(), HalfPath::detect().name())
            }
            WeightDtype::Int8 => {
                format!("int8 ({})", crate::kernels::int8::Int8Path::detect().name())
            }
        }
    }

    /// A warning to print when the dtype runs on a slow portable path, else `None`.
    pub fn warning(self) -> Option<String> {
        use crate::kernels::int8::Int8Path;
        match self {
            WeightDtype::F32 => None,
            WeightDtype::Bf16 | WeightDtype::F16 => (HalfPath::detect() == HalfPath::Portable)
                .then(|| {
                    format!(
                        "warning: this CPU lacks AVX-512 (with F16C); {} products run on the \
                         portable path (same results, slower)",
                        self.name()
                    )
                }),
            WeightDtype::Int8 => (Int8Path::detect() == Int8Path::Portable).then(|| {
                "warning: this CPU lacks AVX-512 VNNI; int8 products run on the portable path \
                 (same results, slower)"
                    .to_string()
            }),
        }
    }

    /// The 16-bit format of bf16 and f16 matrices ([`crate::kernels::half`]); `None` for f32
    /// and int8.
    pub fn half_format(self) -> Option<HalfFormat> {
        match self {
            WeightDtype::Bf16 => Some(HalfFormat::Bf16),
            WeightDtype::F16 => Some(HalfFormat::F16),
            WeightDtype::F32 | WeightDtype::Int8 => None,
        }
    }

    /// Bytes held per 32 weights of a matrix (int8: 32 bytes and a 2-byte scale), in whole
    /// bytes so size estimates stay integers.
    pub fn bytes_per_32_weights(self) -> u64 {
        match self {
            WeightDtype::F32 => 128,
            WeightDtype::Bf16 | WeightDtype::F16 => 64,
            WeightDtype::Int8 => 34,
        }
    }

    /// Parses a dtype given for `field`; an unknown name is an error naming the field and
    /// listing the valid names.
    pub fn parse_for(field: &str, s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(WeightDtype::F32),
            "bf16" | "bfloat16" => Ok(WeightDtype::Bf16),
            "f16" | "fp16" | "float16" | "half" => Ok(WeightDtype::F16),
            "int8" | "i8" | "q8_0" => Ok(WeightDtype::Int8),
            _ => Err(Error::Config {
                field: field.into(),
                reason: format!(
                    "unknown {field} `{s}`; valid: {}",
                    WeightDtype::NAMES.join(", ")
                ),
            }),
        }
    }
}

impl From<Precision> for WeightDtype {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F32 => WeightDtype::F32,
            Precision::Bf16 => WeightDtype::Bf16,
        }
    }
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        WeightDtype::parse_for("dtype", s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_lists_the_valid_ones() {
        assert_eq!("INT8".parse::<WeightDtype>().unwrap(), WeightDtype::Int8);
        assert_eq!("q8_0".parse::<WeightDtype>().unwrap(), WeightDtype::Int8);
        assert_eq!("bf16".parse::<WeightDtype>().unwrap(), WeightDtype::Bf16);
        assert_eq!("F16".parse::<WeightDtype>().unwrap(), WeightDtype::F16);
        assert_eq!("half".parse::<WeightDtype>().unwrap(), WeightDtype::F16);
        for d in WeightDtype::NAMES {
            assert_eq!(d.parse::<WeightDtype>().unwrap().name(), d);
        }
        let err = "fp8".parse::<WeightDtype>().unwrap_err().to_string();
        assert!(
            err.contains("fp8") && err.contains("f32, bf16, f16, int8"),
            "{err}"
        );
    }
}
