//! `gpt finetune` (GPT-1 fine-tuning of a base model on a task file), `gpt finetune eval`
//! (accuracy and F1 of a fine-tuned model on a labelled file) and `gpt classify` (one
//! prediction per input line). Flags in, a [`gpt::finetune`] call, results printed.

use super::interrupt::StopSignal;
use super::CliResult;
use gpt::finetune::{evaluate_file, finetune, Classifier, FinetuneConfig, TaskKind};
use gpt::train::TrainOptions;
use serde_json::json;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Options of `gpt finetune` (the paper's recipe by default).
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct FinetuneArgs {
    /// `eval`: score a fine-tuned model on a labelled file.
    #[command(subcommand)]
    pub command: Option<FinetuneCommand>,
    /// Base model directory: one of our checkpoints or a Hugging Face GPT-2 directory (with its
    /// tokenizer).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// classify, entail, similar or choice.
    #[arg(long)]
    pub task: Option<String>,
    /// Training records (JSONL).
    #[arg(long)]
    pub train: Option<PathBuf>,
    /// Validation records (JSONL): loss and accuracy after each epoch.
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Output directory; the model is OUT/checkpoint.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// λ, the weight of the auxiliary language-model loss (0: off).
    #[arg(long, default_value_t = 0.5)]
    pub aux_lm: f32,
    /// Passes over the training set.
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    /// Peak learning rate (linear warm-up over 0.2% of the steps, linear decay to 0).
    #[arg(long, default_value_t = 6.25e-5)]
    pub lr: f32,
    /// Examples per optimizer step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Dropout of the trunk and the head.
    #[arg(long, default_value_t = 0.1)]
    pub dropout: f32,
    /// Seed (new embedding rows, head, data order, dropout).
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Skip and count bad records instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Keep only the base's architecture and tokenizer and start every weight from a fresh
    /// initialisation (GPT-1's "no pre-training" ablation).
    #[arg(long)]
    pub from_scratch: bool,
    /// Precision of the matrix products: f32, or bf16 (mixed precision, f32 master weights).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Replace a run already in --out (kept in `--out/.previous-run` until this run's first
    /// checkpoint).
    #[arg(long)]
    pub overwrite: bool,
    /// Print one JSON object per step, then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// Subcommands of `gpt finetune`.
#[derive(clap::Subcommand, Debug)]
pub enum FinetuneCommand {
    /// Accuracy (and F1 for two labels) of a fine-tuned model on a labelled file.
    Eval(EvalArgs),
}

/// Options of `gpt finetune eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// Fine-tuned model directory (`gpt finetune --out`, or its checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled records (JSONL) of the model's task.
    #[arg(long)]
    pub data: PathBuf,
    /// Skip and count bad records instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print {"accuracy", "f1", "n"} as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `gpt classify`.
#[derive(clap::Args, Debug)]
pub struct ClassifyArgs {
    /// Fine-tuned model directory.
    #[arg(long)]
    pub model: PathBuf,
    /// JSONL records of the model's task (for classify also plain text lines); `-` or nothing
    /// reads standard input.
    pub file: Option<PathBuf>,
    /// One JSON object per line: {"label", "probs", "ids"}.
    #[arg(long)]
    pub json: bool,
}

fn required<T: Clone>(v: &Option<T>, flag: &str) -> Result<T, gpt::Error> {
    v.clone().ok_or_else(|| {
        gpt::Error::field(
            flag,
            "is required (gpt finetune --model BASE --task T --train F --out DIR)",
        )
    })
}

/// Runs `gpt finetune` or `gpt finetune eval`.
pub fn run(args: FinetuneArgs) -> CliResult {
    if let Some(FinetuneCommand::Eval(e)) = args.command {
        let r = evaluate_file(&e.model, &e.data, e.skip_bad)?;
        let mut out = std::io::stdout().lock();
        if e.json {
            writeln!(
                out,
                "{}",
                json!({"accuracy": r.accuracy, "f1": r.f1, "n": r.n, "skipped": r.skipped})
            )?;
        } else {
            let f1 = r.f1.map(|f| format!(", F1 {f:.4}")).unwrap_or_default();
            writeln!(
                out,
                "accuracy {:.4}{f1} on {} examples{}",
                r.accuracy,
                r.n,
                if r.skipped > 0 {
                    format!(" ({} skipped)", r.skipped)
                } else {
                    String::new()
                }
            )?;
        }
        return Ok(());
    }
    let cfg = FinetuneConfig {
        model: required(&args.model, "--model")?,
        task: TaskKind::parse(&required(&args.task, "--task")?)?,
        train: required(&args.train, "--train")?,
        valid: args.valid.clone(),
        out: required(&args.out, "--out")?,
        aux_lm: args.aux_lm,
        epochs: args.epochs,
        lr: args.lr,
        batch_size: args.batch_size,
        max_steps: args.max_steps,
        dropout: args.dropout,
        seed: args.seed,
        skip_bad: args.skip_bad,
        from_scratch: args.from_scratch,
        precision: gpt::nn::precision::Precision::parse_for("--precision", &args.precision)?,
        ..FinetuneConfig::default()
    };
    let stop = StopSignal::install(
        "interrupt: finishing this step and saving a checkpoint (Ctrl-C again to quit now)",
    );
    let opts = TrainOptions {
        json: args.json,
        resume: args.resume,
        overwrite: args.overwrite,
        quiet: false,
        stop_at: None,
        interrupt: Some(stop.flag()),
        // The memory estimate (`gpt::model::memory`) covers pretraining's batches, not the
        // fine-tuning task's; not checked here.
        check_memory: false,
    };
    let o = finetune(&cfg, &opts)?;
    stop.exit_if_stopped(o.train.stopped_early);
    let dir = o
        .train
        .checkpoint
        .clone()
        .unwrap_or_else(|| cfg.out.clone());
    if args.json {
        println!(
            "{}",
            json!({
                "step": o.train.step, "max_steps": o.max_steps, "warmup": o.warmup,
                "loss": o.train.losses.last(), "val_loss": o.train.val_loss,
                "val_accuracy": o.val_accuracy, "n_train": o.n_train, "n_valid": o.n_valid,
                "cut": [o.cut.0, o.cut.1], "skipped": [o.skipped.0, o.skipped.1],
                "labels": o.labels, "model": dir,
            })
        );
    } else {
        eprintln!(
            "fine-tuned {} steps{}; model in {}",
            o.train.step,
            o.val_accuracy
                .map(|a| format!(", validation accuracy {a:.4}"))
                .unwrap_or_default(),
            dir.display()
        );
    }
    Ok(())
}

/// Runs `gpt classify`.
pub fn run_classify(args: ClassifyArgs) -> CliResult {
    let (path, text) = match &args.file {
        Some(p) if p.as_os_str() != "-" => (
            p.clone(),
            std::fs::read_to_string(p).map_err(|e| gpt::Error::io(p, e))?,
        ),
        _ => {
            let mut s = String::new();
            let p = Path::new("standard input");
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| gpt::Error::io(p, e))?;
            (p.to_path_buf(), s)
        }
    };
    let mut c = Classifier::load(&args.model)?;
    let preds = c.predict_lines(&path, &text)?;
    let mut out = std::io::stdout().lock();
    for p in preds {
        if args.json {
            writeln!(
                out,
                "{}",
                json!({"label": p.label, "probs": p.probs, "ids": p.ids})
            )?;
        } else {
            let label = match &p.label {
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            writeln!(out, "{label}\t{:.4}", p.probs[p.index])?;
        }
    }
    Ok(())
}
