//! `gpt quantize`: writes a model as a GGUF file (llama.cpp's format) with its matrices in
//! f32, f16 or int8 (`Q8_0`), the tokenizer inside; `gpt generate|score|eval|serve --model
//! FILE.gguf` run it (int8 by default for `Q8_0`), and so does llama.cpp. The work is
//! [`gpt::model::gguf_model::export_gguf`].

use super::CliResult;
use gpt::error::Error;
use gpt::model::checkpoint::NonFinite;
use gpt::model::gguf_model::{export_gguf, ExportType};
use gpt::model::inference::{load_with_tokenizer_for, Panels};
use gpt::model::weight_dtype::WeightDtype;
use std::path::PathBuf;

/// Options of `gpt quantize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (ours, or a Hugging Face GPT-2) or a GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Type of the weight matrices in the file: int8 (Q8_0: 32 weights and an f16 scale per
    /// block), f16 or f32. Biases, LayerNorm and the position table stay f32.
    #[arg(long, default_value = "int8")]
    pub dtype: String,
    /// Output GGUF file (written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// `general.name` in the file (default: the output file's stem).
    #[arg(long)]
    pub name: Option<String>,
}

/// Runs `gpt quantize`.
pub fn run(args: Args) -> CliResult {
    let ty = ExportType::parse_for("--dtype", &args.dtype)?;
    if !args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return Err(Error::field(
            "--out",
            format!("`{}` must end in .gguf", args.out.display()),
        )
        .into());
    }
    let (model, tok, _) = load_with_tokenizer_for(
        &args.model,
        WeightDtype::F32,
        NonFinite::Refuse,
        Panels::Off,
    )?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.out
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    export_gguf(&model, &tok, ty, &name, &args.out)?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "wrote {} ({:.1} MB, matrices {})",
        args.out.display(),
        bytes as f64 / 1e6,
        args.dtype
    );
    Ok(())
}
