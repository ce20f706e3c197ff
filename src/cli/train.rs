//! `gpt train`: pretrain a GPT (defaults: a CPU-sized preset on the bundled corpus).

use super::interrupt::StopSignal;
use super::CliResult;
use clap::Args;
use gpt::dist::World;
use gpt::model::Positions;
use gpt::nn::block::NormPlacement;
use gpt::train::config::read_toml_over;
use gpt::train::{train, OnNan, TrainConfig, TrainOptions};
use std::path::PathBuf;

/// Options of `gpt train`; each overrides the TOML file, which overrides the defaults.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML file with `TrainConfig` keys (unknown keys are errors).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model preset: tiny, char-baby, gpt1, gpt2, gpt2-medium, gpt2-large, gpt2-xl.
    #[arg(long)]
    pub preset: Option<String>,
    /// A `gpt prepare` output directory, or a text file / folder prepared on the fly.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Tokenizer for on-the-fly preparation: char, gpt2, or a tokenizer directory/file.
    #[arg(long)]
    pub tokenizer: Option<String>,
    /// Output directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Sequences per micro-batch.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Sequence length (the model's context).
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Micro-batches per optimizer step.
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Warmup steps.
    #[arg(long)]
    pub warmup_steps: Option<usize>,
    /// Dropout (default: the preset's).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Layers (overrides the preset).
    #[arg(long)]
    pub n_layer: Option<usize>,
    /// Heads (overrides the preset).
    #[arg(long)]
    pub n_head: Option<usize>,
    /// Width (overrides the preset).
    #[arg(long)]
    pub n_embd: Option<usize>,
    /// LayerNorm placement: pre (GPT-2) or post (GPT-1).
    #[arg(long, value_parser = ["pre", "post"])]
    pub norm: Option<String>,
    /// Position embeddings: learned or sinusoidal.
    #[arg(long, value_parser = ["learned", "sinusoidal"])]
    pub positions: Option<String>,
    /// Precision of the matrix products: f32 or bf16 (mixed precision, f32 master weights).
    #[arg(long)]
    pub precision: Option<String>,
    /// AdamW β2.
    #[arg(long)]
    pub beta2: Option<f32>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Validation every N steps.
    #[arg(long)]
    pub eval_interval: Option<usize>,
    /// Batches per validation estimate.
    #[arg(long)]
    pub eval_iters: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    pub ckpt_interval: Option<usize>,
    /// Tokens sampled at the end (0: none).
    #[arg(long)]
    pub sample_tokens: Option<usize>,
    /// Continue the run in --out from its checkpoint. The saved configuration governs, with
    /// --config and the flags read over it: only --max-steps, --lr (min_lr), --warmup-steps,
    /// --eval-interval, --eval-iters, --ckpt-interval and --sample-tokens may change (the
    /// learning-rate schedule is recomputed at the saved step); any other flag that differs is
    /// ignored with a warning. --max-steps at or below the saved step is an error.
    #[arg(long)]
    pub resume: bool,
    /// Replace the run already in --out (without this or --resume, an existing run is an
    /// error). The old run is moved into OUT/.previous-run and deleted once the new run has
    /// saved its first checkpoint.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Print one JSON object per step (step, loss, lr, grad_norm, tokens_per_sec, val_loss).
    #[arg(long)]
    pub json: bool,
    /// Save a checkpoint and stop after this step, as Ctrl-C does (for scripted resumes).
    #[arg(long)]
    pub stop_at_step: Option<usize>,
    /// Start even when the estimated memory (parameters, activations, optimizer state) is
    /// over what the machine has available.
    #[arg(long)]
    pub no_memory_check: bool,
    /// Data-parallel runs (`mpirun -np N`): shard AdamW's moments across the ranks (ZeRO stage
    /// 1), cutting the optimizer's memory by N; the same steps as without it.
    #[arg(long)]
    pub zero1: bool,
    /// A step whose loss or gradient norm is NaN/inf: skip it (no update) or stop. Default skip.
    #[arg(long, value_parser = OnNan::NAMES)]
    pub on_nan: Option<String>,
    /// With --on-nan skip: steps in a row that may be skipped before the run stops. Default 5.
    #[arg(long)]
    pub max_nan_skips: Option<usize>,
}

/// Resolves defaults, the TOML file and the flags into a `TrainConfig`; with `--resume`, the
/// TOML file and the flags are read over the run's saved configuration instead of the defaults.
pub fn resolve(args: &TrainArgs) -> Result<TrainConfig, gpt::Error> {
    let fresh = resolve_over(args, TrainConfig::default())?;
    if !args.resume {
        return Ok(fresh);
    }
    resolve_over(args, TrainConfig::saved_in(&fresh.out)?)
}

/// The TOML file and the flags over `base`.
fn resolve_over(args: &TrainArgs, base: TrainConfig) -> Result<TrainConfig, gpt::Error> {
    let mut c = match &args.config {
        Some(p) => read_toml_over(p, &base)?,
        None => base,
    };
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = args.$field.clone() { c.$field = v; } )* };
    }
    set!(
        preset,
        tokenizer,
        out,
        max_steps,
        batch_size,
        block_size,
        grad_accum,
        lr,
        warmup_steps,
        beta2,
        seed,
        eval_interval,
        eval_iters,
        ckpt_interval,
        sample_tokens,
        max_nan_skips
    );
    if let Some(o) = &args.on_nan {
        c.on_nan = o.parse()?;
    }
    if args.data.is_some() {
        c.data = args.data.clone();
    }
    if args.dropout.is_some() {
        c.dropout = args.dropout;
    }
    if args.n_layer.is_some() {
        c.n_layer = args.n_layer;
    }
    if args.n_head.is_some() {
        c.n_head = args.n_head;
    }
    if args.n_embd.is_some() {
        c.n_embd = args.n_embd;
    }
    if let Some(n) = &args.norm {
        c.norm = Some(if n == "post" {
            NormPlacement::Post
        } else {
            NormPlacement::Pre
        });
    }
    if let Some(p) = &args.precision {
        c.precision = p.parse()?;
    }
    if let Some(p) = &args.positions {
        c.positions = Some(if p == "sinusoidal" {
            Positions::Sinusoidal
        } else {
            Positions::Learned
        });
    }
    Ok(c)
}

/// Runs `gpt train`; a run stopped by SIGINT or SIGTERM exits with 130 or 143. Under `mpirun`
/// with several ranks (built with `--features mpi`) it trains data-parallel; a rank that fails
/// prints its error with its rank and ends the whole job (the others may be waiting for it).
pub fn run(args: TrainArgs) -> CliResult {
    let cfg = resolve(&args)?;
    if args.zero1 && World::current().size() == 1 && !args.json {
        eprintln!("warning: --zero1 shards the optimizer state across ranks; with one process it changes nothing");
    }
    let stop = StopSignal::for_training();
    let opts = TrainOptions {
        stop_at: args.stop_at_step,
        check_memory: !args.no_memory_check,
        zero1: args.zero1,
        ..stop.train_options(args.json, args.resume, args.overwrite)
    };
    let outcome = train(&cfg, &opts)?;
    stop.exit_if_stopped(outcome.stopped_early);
    Ok(())
}
