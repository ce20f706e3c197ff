//! `gpt bleu --ref REF [HYP|-] [--json]`: corpus BLEU (sacreBLEU's default: 13a tokenizer, exp
//! smoothing) and chrF2 of a hypothesis file against a reference file, one segment per line.

use super::CliResult;
use clap::Args;
use gpt::translate::bleu::{corpus_bleu, corpus_chrf, segments, Smooth};
use gpt::Error;
use std::path::PathBuf;

/// Options of `gpt bleu`.
#[derive(Args, Debug)]
pub struct BleuArgs {
    /// Reference file, one segment per line.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Hypothesis file (`-` or absent: standard input).
    pub hyp: Option<PathBuf>,
    /// Print `{"bleu":..,"chrf":..,"bp":..,"precisions":[..]}`.
    #[arg(long)]
    pub json: bool,
    /// Turn sacreBLEU's default exp smoothing off (`--smooth-method none`).
    #[arg(long)]
    pub no_smooth: bool,
}

/// Runs `gpt bleu`.
pub fn run(a: BleuArgs) -> CliResult {
    let refs = gpt::io::read_text(&a.reference)?;
    let hyp_name = match a.hyp.as_ref().filter(|p| p.as_os_str() != "-") {
        Some(p) => p.clone(),
        None => PathBuf::from("standard input"),
    };
    let hyps = gpt::io::read_text_or_stdin(a.hyp.as_deref())?;
    let (r, h) = (segments(&refs), segments(&hyps));
    if r.len() != h.len() {
        return Err(Error::file(
            &hyp_name,
            format!(
                "has {} lines but {} has {}; they must align line by line",
                h.len(),
                a.reference.display(),
                r.len()
            ),
        )
        .into());
    }
    if r.is_empty() {
        // A BLEU of zero segments would print as 0 and read as a result.
        return Err(Error::file(
            &a.reference,
            "nothing to score: the reference has no lines (and the hypotheses none either)",
        )
        .into());
    }
    let smooth = if a.no_smooth {
        Smooth::None
    } else {
        Smooth::Exp
    };
    let bleu = corpus_bleu(&h, &r, smooth);
    let chrf = corpus_chrf(&h, &r);
    if a.json {
        let v = serde_json::json!({
            "bleu": bleu.score,
            "chrf": chrf,
            "bp": bleu.bp,
            "precisions": bleu.precisions,
            "sys_len": bleu.sys_len,
            "ref_len": bleu.ref_len,
        });
        println!("{v}");
    } else {
        println!("{bleu}");
        println!("chrF2 = {chrf:.2}");
    }
    Ok(())
}
