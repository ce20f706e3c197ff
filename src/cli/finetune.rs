//! `gpt finetune` (GPT-1 fine-tuning of a base model on a task file), `gpt finetune eval`
//! (accuracy and F1 of a fine-tuned model on a labelled file) and `gpt classify` (one
//! prediction per input line). Flags in, a [`gpt::finetune`] call, results printed.

use super::interrupt::StopSignal;
use super::CliResult;
use gpt::finetune::{evaluate_file, finetune, Classifier, FinetuneConfig, TaskKind};
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
    /// λ, the weight of the auxiliary language-model loss (0: off). Default 0.5.
    #[arg(long)]
    pub aux_lm: Option<f32>,
    /// Passes over the training set. Default 3.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Peak learning rate (linear warm-up over 0.2% of the steps, linear decay to 0). Default
    /// 6.25e-5.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Examples per optimizer step. Default 32.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Dropout of the trunk and the head. Default 0.1.
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Seed (new embedding rows, head, data order, dropout). Default 1337.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip and count bad records instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Keep only the base's architecture and tokenizer and start every weight from a fresh
    /// initialisation (GPT-1's "no pre-training" ablation).
    #[arg(long)]
    pub from_scratch: bool,
    /// Precision of the matrix products: f32 (default), or bf16 (mixed precision, f32 master
    /// weights).
    #[arg(long)]
    pub precision: Option<String>,
    /// Continue the run in --out from its checkpoint. The saved configuration governs, with the
    /// flags read over it: only --max-steps, --epochs and --valid may change (the schedule is
    /// recomputed at the saved step); any other flag that differs is ignored with a warning.
    /// --model, --task and --train may be left out.
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

/// The run's configuration: the defaults (the paper's recipe) or, with `--resume`, the saved
/// configuration, with the flags given read over it.
fn config(args: &FinetuneArgs) -> Result<FinetuneConfig, gpt::Error> {
    let out = required(&args.out, "--out")?;
    let mut c = if args.resume {
        FinetuneConfig::saved_in(&out)?
    } else {
        FinetuneConfig {
            model: required(&args.model, "--model")?,
            task: TaskKind::parse(&required(&args.task, "--task")?)?,
            train: required(&args.train, "--train")?,
            ..FinetuneConfig::default()
        }
    };
    c.out = out;
    if let Some(m) = &args.model {
        c.model = m.clone();
    }
    if let Some(t) = &args.task {
        c.task = TaskKind::parse(t)?;
    }
    if let Some(t) = &args.train {
        c.train = t.clone();
    }
    if let Some(v) = &args.valid {
        c.valid = Some(v.clone());
    }
    if let Some(p) = &args.precision {
        c.precision = gpt::nn::precision::Precision::parse_for("--precision", p)?;
    }
    c.aux_lm = args.aux_lm.unwrap_or(c.aux_lm);
    c.epochs = args.epochs.unwrap_or(c.epochs);
    c.lr = args.lr.unwrap_or(c.lr);
    c.batch_size = args.batch_size.unwrap_or(c.batch_size);
    c.max_steps = args.max_steps.or(c.max_steps);
    c.dropout = args.dropout.unwrap_or(c.dropout);
    c.seed = args.seed.unwrap_or(c.seed);
    c.skip_bad |= args.skip_bad;
    c.from_scratch |= args.from_scratch;
    Ok(c)
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
    let cfg = config(&args)?;
    // The memory estimate (`gpt::model::memory`) covers pretraining's batches, not the
    // fine-tuning task's; not checked here (`train_options` checks none).
    let stop = StopSignal::for_training();
    let opts = stop.train_options(args.json, args.resume, args.overwrite);
    let o = finetune(&cfg, &opts)?;
    stop.exit_if_stopped(o.train.stopped_early);
    if !gpt::dist::World::current().is_root() {
        // Rank 0 reports and writes what follows the run.
        return Ok(());
    }
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
