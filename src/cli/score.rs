//! `gpt score`: per-token log-probabilities of a text under a model, with total NLL, perplexity
//! and bits per byte; texts longer than the context are scored with a sliding window
//! (`--stride`, see `gpt::generate::score`).
//!
//! First-token rule: the first token of the text has nothing before it, so it gets no logprob
//! (`null` in JSON) and is not counted in NLL, perplexity or bits per byte. With `--bos`, an
//! `<|endoftext|>` is prepended as context (not itself scored), so every token of the text is
//! scored. Bits per byte = NLL / ln 2 / (UTF-8 bytes of the scored tokens).

use super::CliResult;

use gpt::generate::score::token_logprobs;
use gpt::model::inference::load_with_tokenizer_as;
use serde_json::json;
use std::io::{Read, Write};
use std::path::PathBuf;

/// Options of `gpt score`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory (as for `gpt generate`).
    #[arg(long)]
    pub model: PathBuf,
    /// Text file to score; `-` or nothing reads standard input.
    pub file: Option<PathBuf>,
    /// Window step for texts longer than the context (default n_ctx / 2): every token gets at
    /// least n_ctx - stride tokens of context.
    #[arg(long)]
    pub stride: Option<usize>,
    /// Print one JSON object: {"tokens":[{"id","text","logprob"}],"nll","ppl","bpb",...}.
    #[arg(long)]
    pub json: bool,
    /// Prepend `<|endoftext|>` so the first token is scored too.
    #[arg(long)]
    pub bos: bool,
    /// dtype of the weight matrices: f32, or bf16 (products over bf16-rounded weights).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

/// Runs `gpt score`.
pub fn run(args: Args) -> CliResult {
    let text = match &args.file {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?
        }
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| format!("standard input: {e}"))?;
            s
        }
    };
    if text.is_empty() {
        return Err("the text to score is empty".into());
    }
    let dtype = gpt::nn::precision::Precision::parse_for("dtype", &args.dtype)?;
    if let Some(w) = dtype.warning() {
        eprintln!("{w}");
    }
    let (model, tok, _dir) = load_with_tokenizer_as(&args.model, dtype)?;
    let mut ids = tok.encode(&text, true)?;
    let lead = if args.bos {
        let eot = match &tok {
            gpt::tokenizer::AnyTokenizer::Bpe(t) => t.special_id("<|endoftext|>"),
            gpt::tokenizer::AnyTokenizer::Char(_) => None,
        }
        .ok_or("--bos: the tokenizer has no `<|endoftext|>` token")?;
        ids.insert(0, eot);
        1
    } else {
        0
    };
    if ids.len() < 2 {
        return Err(
            "nothing to score: the text is a single token and the first token has no \
             logprob; pass --bos to score it after <|endoftext|>"
                .into(),
        );
    }
    let stride = args.stride.unwrap_or((model.config.n_ctx / 2).max(1));
    let lps = token_logprobs(&model, &ids, stride)?;
    let (mut nll, mut n, mut bytes) = (0.0f64, 0usize, 0usize);
    let mut tokens = Vec::new();
    for (&id, lp) in ids.iter().zip(&lps).skip(lead) {
        let tb = tok.token_bytes(id)?;
        if let Some(lp) = lp {
            nll -= f64::from(*lp);
            n += 1;
            bytes += tb.len();
        }
        tokens.push((id, String::from_utf8_lossy(&tb).into_owned(), *lp));
    }
    let ppl = (nll / n as f64).exp();
    let bpb = nll / std::f64::consts::LN_2 / bytes.max(1) as f64;
    let mut out = std::io::stdout().lock();
    if args.json {
        let toks: Vec<_> = tokens
            .iter()
            .map(|(id, t, lp)| json!({"id": id, "text": t, "logprob": lp}))
            .collect();
        let obj = json!({
            "tokens": toks, "nll": nll, "ppl": ppl, "bpb": bpb,
            "scored_tokens": n, "scored_bytes": bytes, "stride": stride, "bos": args.bos,
            "dtype": dtype.name(),
        });
        writeln!(out, "{obj}")?;
    } else {
        for (id, t, lp) in &tokens {
            let lp = lp.map_or("-".to_string(), |x| format!("{x:.4}"));
            writeln!(out, "{id}\t{lp}\t{t:?}")?;
        }
        writeln!(
            out,
            "tokens scored {n}, nll {nll:.4} nats, ppl {ppl:.4}, bits/byte {bpb:.4}"
        )?;
        eprintln!("[weights {}]", dtype.describe());
    }
    Ok(())
}
