//! `gpt translate`: train an encoder-decoder on parallel text, translate, evaluate (BLEU, chrF,
//! sentences/s) and average checkpoints.
//!
//! ```text
//! gpt translate train --train train.tsv --valid valid.tsv [--preset transformer-small] --out DIR
//! gpt translate --model DIR [--beam 4] [FILE|-]        one source per line in, one out
//! gpt translate eval --model DIR --pairs test.tsv      BLEU, chrF, sentences/s
//! gpt translate average --model RUN [--last 5] --out DIR
//! ```

use super::interrupt::StopSignal;
use super::CliResult;
use clap::{Args, Subcommand};
use gpt::io::write_atomic;
use gpt::model::checkpoint::NonFinite;
use gpt::model::memory::{available, transformer_decoding};
use gpt::model::transformer::{EncoderDecoder, TransformerConfig};
use gpt::tokenizer::Tokenizer;
use gpt::train::config::read_toml_over;
use gpt::train::OnNan;
use gpt::translate::checkpoint::{
    average, list_checkpoints, load_config, load_model_with, resolve_model_dir,
};
use gpt::translate::data::read_tsv;
use gpt::translate::decode::DecodeConfig;
use gpt::translate::trainer::{train, TranslateConfig, TranslateOptions};
use gpt::translate::{evaluate, translate_lines};
use gpt::Error;
use std::io::Write;
use std::path::PathBuf;

/// `gpt translate`: with a subcommand, train / eval / average; without, translate lines.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TranslateArgs {
    /// Subcommand (train, eval, average); none: translate.
    #[command(subcommand)]
    pub command: Option<TranslateCommand>,
    /// Translation options (when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands of `gpt translate`.
#[derive(Subcommand, Debug)]
pub enum TranslateCommand {
    /// Train an encoder-decoder on TSV `source<TAB>target` pairs.
    Train(Box<TrainArgs>),
    /// Translate the sources of a TSV file and score against its targets.
    Eval(EvalArgs),
    /// Average the parameters of the last k checkpoints of a run.
    Average(AverageArgs),
}

/// Decoding options shared by translate and eval.
#[derive(Args, Debug, Clone)]
pub struct DecodeArgs {
    /// Model directory, or a `gpt translate train` output directory (its latest checkpoint).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Beam size (1: greedy).
    #[arg(long, default_value_t = 4)]
    pub beam: usize,
    /// Length-penalty exponent α (GNMT).
    #[arg(long, default_value_t = 0.6)]
    pub alpha: f32,
    /// Output tokens allowed beyond the source length.
    #[arg(long, default_value_t = 50)]
    pub max_extra: usize,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Decode even when the estimated memory (weights, KV caches of `--batch` × `--beam`
    /// hypotheses) is over what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Load weights that hold NaN or inf (refused by default, naming the tensor).
    #[arg(long)]
    pub allow_nonfinite: bool,
}

impl DecodeArgs {
    /// The decoding settings; a zero beam or batch is an error naming the flag.
    fn config(&self) -> Result<DecodeConfig, Error> {
        for (flag, v) in [("--beam", self.beam), ("--batch", self.batch)] {
            if v == 0 {
                return Err(Error::field(flag, "must be at least 1"));
            }
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(Error::field(
                "--alpha",
                format!("{} must be a number ≥ 0", self.alpha),
            ));
        }
        Ok(DecodeConfig {
            beam: self.beam,
            alpha: self.alpha,
            max_extra: self.max_extra,
            recompute: false,
        })
    }

    /// The model directory and its configuration (read first: a bad `--model` is reported
    /// before the input is read).
    fn model_config(&self) -> Result<(PathBuf, TransformerConfig), Error> {
        let path = self.model()?;
        let cfg = load_config(&resolve_model_dir(&path)?)?;
        Ok((path, cfg))
    }

    /// Loads the model (`--allow-nonfinite` decides about NaN/inf weights) after checking that `--batch` × `--beam` hypotheses (at most
    /// `sentences` sentences at a time) fit in memory: the estimate from the model's
    /// configuration, before anything is allocated.
    fn load(
        &self,
        (path, cfg): (PathBuf, TransformerConfig),
        sentences: usize,
    ) -> Result<(EncoderDecoder, Tokenizer), Error> {
        let batch = self.batch.min(sentences.max(1));
        let est = transformer_decoding(&cfg, batch, self.beam, ["--batch", "--beam"])?;
        if !self.no_memory_check {
            est.check(available(), "--no-memory-check")?;
        }
        load_model_with(&path, NonFinite::allowing(self.allow_nonfinite))
    }

    /// The model directory, which is required.
    fn model(&self) -> Result<PathBuf, Error> {
        self.model
            .clone()
            .ok_or_else(|| Error::field("--model", "is required: a trained model directory"))
    }
}

/// `gpt translate --model DIR [FILE|-]`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Decoding options.
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Source sentences, one per line (`-` or absent: standard input).
    pub input: Option<PathBuf>,
}

/// `gpt translate train`; each option overrides the TOML file, which overrides the defaults.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML file with `TranslateConfig` keys (unknown keys are errors).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Training pairs (TSV).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Validation pairs (TSV).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Preset: transformer-small, transformer-base, transformer-big.
    #[arg(long)]
    pub preset: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Joint BPE vocabulary size.
    #[arg(long)]
    pub vocab_size: Option<usize>,
    /// Token budget per micro-batch.
    #[arg(long)]
    pub max_tokens: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Time budget in minutes (a checkpoint is saved when it runs out).
    #[arg(long)]
    pub max_minutes: Option<f64>,
    /// Warmup steps of the inverse-square-root schedule.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Multiplier of the schedule.
    #[arg(long)]
    pub lr_scale: Option<f32>,
    /// Dropout (default: the preset's).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Longest sentence in tokens (longer ones are truncated).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Error (with the line number) on a TSV line without a tab or with an empty side.
    #[arg(long)]
    pub strict: bool,
    /// Validation loss every N steps.
    #[arg(long)]
    pub eval_interval: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub ckpt_interval: Option<usize>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Continue from OUT's latest checkpoint. The saved configuration governs, with --config
    /// and the flags read over it: only --max-steps, --max-minutes, --warmup-steps,
    /// --lr-scale, --eval-interval, --ckpt-interval (and keep_checkpoints) may change; any other
    /// flag that differs is ignored with a warning. --max-steps at or below the saved step is an
    /// error.
    #[arg(long)]
    pub resume: bool,
    /// Replace the run already in --out (without this or --resume, an existing run is an
    /// error). The old run is moved into OUT/.previous-run and deleted once the new run has
    /// saved its first checkpoint.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// One JSON object per step on standard output instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// Start even when the estimated memory (parameters, activations of `--max-tokens`,
    /// optimizer state) is over what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Data-parallel runs (`mpirun -np N`): shard AdamW's moments across the ranks (ZeRO stage
    /// 1).
    #[arg(long)]
    pub zero1: bool,
    /// A step whose loss or gradient norm is NaN/inf: skip it (no update) or stop. Default skip.
    #[arg(long, value_parser = OnNan::NAMES)]
    pub on_nan: Option<String>,
    /// With --on-nan skip: steps in a row that may be skipped before the run stops. Default 5.
    #[arg(long)]
    pub max_nan_skips: Option<usize>,
}

/// `gpt translate eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Decoding options.
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Test pairs (TSV).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Evaluate only the first N pairs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write the translations here, one per line.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Error (with the line number) on a TSV line without a tab or with an empty side.
    #[arg(long)]
    pub strict: bool,
}

/// `gpt translate average`.
#[derive(Args, Debug)]
pub struct AverageArgs {
    /// A `gpt translate train` output directory.
    #[arg(long)]
    pub model: PathBuf,
    /// How many of the newest checkpoints to average.
    #[arg(long, default_value_t = 5)]
    pub last: usize,
    /// Output model directory.
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `gpt translate …`.
pub fn run(args: TranslateArgs) -> CliResult {
    match args.command {
        Some(TranslateCommand::Train(a)) => run_train(*a),
        Some(TranslateCommand::Eval(a)) => run_eval(a),
        Some(TranslateCommand::Average(a)) => run_average(a),
        None => run_translate(args.run),
    }
}

/// Resolves defaults (with `--resume`: the run's saved configuration), the TOML file and the
/// flags into a `TranslateConfig`.
fn resolve_train(a: &TrainArgs) -> Result<TranslateConfig, Error> {
    let fresh = resolve_train_over(a, TranslateConfig::default())?;
    if !a.resume {
        return Ok(fresh);
    }
    resolve_train_over(a, TranslateConfig::saved_in(&fresh.out)?)
}

/// The TOML file and the flags over `base`.
fn resolve_train_over(a: &TrainArgs, base: TranslateConfig) -> Result<TranslateConfig, Error> {
    let mut c = match &a.config {
        Some(p) => read_toml_over(p, &base)?,
        None => base,
    };
    macro_rules! set {
        ($($f:ident),*) => { $(if let Some(v) = a.$f.clone() { c.$f = v; })* };
    }
    set!(train, valid, preset, out, vocab_size, max_tokens, grad_accum, max_steps);
    set!(
        warmup_steps,
        lr_scale,
        max_len,
        eval_interval,
        ckpt_interval,
        seed,
        max_nan_skips
    );
    if let Some(o) = &a.on_nan {
        c.on_nan = o.parse()?;
    }
    if a.max_minutes.is_some() {
        c.max_minutes = a.max_minutes;
    }
    if a.dropout.is_some() {
        c.dropout = a.dropout;
    }
    c.strict |= a.strict;
    Ok(c)
}

/// Runs `gpt translate train`; a run stopped by SIGINT or SIGTERM exits with 130 or 143.
/// Under `mpirun` with several ranks (`--features mpi`) it trains data-parallel: each rank takes
/// its own token-budget batch of every `ranks` in turn (the steps of one process with
/// `--grad-accum` × ranks).
fn run_train(a: TrainArgs) -> CliResult {
    let c = resolve_train(&a)?;
    let stop = StopSignal::install(
        "interrupt: saving a checkpoint after this step (Ctrl-C again to quit now)",
    );
    let opts = TranslateOptions {
        check_memory: !a.no_memory_check,
        zero1: a.zero1,
        ..stop.train_options(a.json, a.resume, a.overwrite)
    };
    let outcome = train(&c, &opts)?;
    stop.exit_if_stopped(outcome.stopped_early);
    Ok(())
}

/// The lines of `input`, or of standard input when it is absent or `-`.
fn read_lines(input: Option<&PathBuf>) -> Result<Vec<String>, Error> {
    let text = gpt::io::read_text_or_stdin(input.map(PathBuf::as_path))?;
    Ok(text.lines().map(str::to_string).collect())
}

fn run_translate(a: RunArgs) -> CliResult {
    let cfg = a.decode.config()?;
    let model_cfg = a.decode.model_config()?;
    let lines = read_lines(a.input.as_ref())?;
    let (mut model, tok) = a.decode.load(model_cfg, lines.len())?;
    let (out, truncated) = translate_lines(&mut model, &tok, &lines, &cfg, a.decode.batch)?;
    if truncated > 0 {
        eprintln!("note: {truncated} source(s) truncated to the model's length limit");
    }
    let mut stdout = std::io::stdout().lock();
    for l in out {
        writeln!(stdout, "{l}")?;
    }
    Ok(())
}

fn run_eval(a: EvalArgs) -> CliResult {
    let cfg = a.decode.config()?;
    let model_cfg = a.decode.model_config()?;
    let text = read_tsv(&a.pairs, a.strict)?;
    let mut pairs = text.pairs.clone();
    if let Some(n) = a.limit {
        pairs.truncate(n);
    }
    if pairs.is_empty() {
        // A BLEU of zero sentences would print as 0 and read as a result.
        let why = if a.limit == Some(0) {
            "--limit 0 leaves no pairs".to_string()
        } else if text.skipped > 0 {
            format!(
                "none of its {} lines is a `source<TAB>target` pair",
                text.skipped
            )
        } else {
            "the file has no pairs".to_string()
        };
        return Err(Error::file(&a.pairs, format!("nothing to evaluate: {why}")).into());
    }
    let (mut model, tok) = a.decode.load(model_cfg, pairs.len())?;
    let ev = evaluate(&mut model, &tok, &pairs, &cfg, a.decode.batch)?;
    if let Some(p) = &a.output {
        write_atomic(p, (ev.hyps.join("\n") + "\n").as_bytes())?;
    }
    let (hyps, bleu, chrf, secs, truncated) =
        (&ev.hyps, &ev.bleu, ev.chrf, ev.seconds, ev.truncated);
    let rate = ev.sentences_per_sec();
    if a.json {
        let v = serde_json::json!({
            "bleu": bleu.score, "chrf": chrf, "bp": bleu.bp, "precisions": bleu.precisions,
            "sentences": hyps.len(), "seconds": secs, "sentences_per_sec": rate,
            "beam": a.decode.beam, "skipped_lines": text.skipped, "truncated": truncated,
        });
        println!("{v}");
        if text.skipped > 0 {
            eprintln!("warning: {}", text.skipped_note(&a.pairs));
        }
    } else {
        println!("{bleu}");
        println!("chrF2 = {chrf:.2}");
        println!(
            "{} sentences in {secs:.1} s ({rate:.2} sentences/s, beam {}); {}, {truncated} truncated",
            hyps.len(),
            a.decode.beam,
            text.skipped_note(&a.pairs)
        );
    }
    Ok(())
}

fn run_average(a: AverageArgs) -> CliResult {
    if a.last == 0 {
        return Err("--last must be at least 1".into());
    }
    let all = list_checkpoints(&a.model)?;
    if all.is_empty() {
        return Err(format!("{}: no checkpoints to average", a.model.display()).into());
    }
    let take = &all[all.len().saturating_sub(a.last)..];
    average(take, &a.out)?;
    eprintln!(
        "averaged {} checkpoint(s) ({} … {}) into {}",
        take.len(),
        take[0].display(),
        take[take.len() - 1].display(),
        a.out.display()
    );
    Ok(())
}
