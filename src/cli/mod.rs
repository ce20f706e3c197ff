//! Subcommands of the `gpt` binary. Each subcommand lives in its own file with a clap `Args`
//! struct and a `run` function that turns the flags into the settings of a library call, reads
//! the input it names, and prints the result; the work itself is in the library (`gpt::bench`,
//! `gpt::generate::text`, `gpt::translate::evaluate`, …). Errors are boxed and printed as
//! `error: {message}`.

use clap::{Parser, Subcommand};

pub mod bench;
pub mod bleu;
pub mod chat;
pub mod chat_train;
pub mod eval;
pub mod finetune;
pub mod generate;
pub mod honeypot;
pub mod interrupt;
pub mod logs;
pub mod logs_model;
pub mod prepare;
pub mod quantize;
pub mod score;
pub mod serve;
pub mod tokenize;
pub mod tokenizer_train;
pub mod train;
pub mod translate;

/// Errors surfaced to the user by the CLI: printed as `error: {message}`.
pub type CliResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Top-level command line.
#[derive(Parser)]
#[command(
    name = "gpt",
    version,
    about = "Train, load, generate and score GPT models on the CPU"
)]
pub struct Cli {
    /// Worker threads for kernels (default: RAYON_NUM_THREADS, else all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
pub enum Command {
    /// Train a GPT (no arguments: a small model on the bundled Shakespeare corpus).
    Train(Box<train::TrainArgs>),
    /// Turn text files, folders and JSONL into train/val token files.
    Prepare(prepare::PrepareArgs),
    /// `generate` with the defaults `sample` always had: a newline prompt, 300 tokens,
    /// temperature 0.8, top-k 200, no stop at `<|endoftext|>`.
    Sample(generate::SampleArgs),
    /// Continue a prompt with a GPT-2 or our checkpoint (KV cache, sampling controls, streaming).
    Generate(generate::Args),
    /// Per-token log-probabilities, NLL, perplexity and bits per byte of a text.
    Score(score::Args),
    /// Zero- and few-shot evaluation with lm-evaluation-harness 0.4's semantics.
    Eval(eval::Args),
    /// Write a model as a GGUF file (llama.cpp's format) in int8 (Q8_0), f16 or f32.
    Quantize(quantize::Args),
    /// Encode text with a tokenizer (ids, count, tokens or JSON).
    Tokenize(tokenize::TokenizeArgs),
    /// Tokenizer tools (train a byte-level BPE).
    #[command(subcommand)]
    Tokenizer(tokenizer_train::TokenizerCommand),
    /// Benchmarks (kernels; optionally side by side with PyTorch).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Encoder-decoder translation: train, translate lines, eval (BLEU, chrF), average.
    Translate(Box<translate::TranslateArgs>),
    /// GPT-1 fine-tuning: classify, entail, similar or choice records on a base model
    /// (`finetune eval`: accuracy and F1 of the result).
    Finetune(Box<finetune::FinetuneArgs>),
    /// One prediction per input line with a fine-tuned model.
    Classify(finetune::ClassifyArgs),
    /// Corpus BLEU (sacreBLEU default) and chrF of a hypothesis file against references.
    Bleu(bleu::BleuArgs),
    /// Supervised fine-tuning on demonstrations (chat messages or prompt/completion): the
    /// loss on the assistant's tokens only; the result is a chat model.
    Sft(Box<chat_train::SftArgs>),
    /// Train a reward model on preference pairs (`reward eval`: pairwise accuracy; `reward
    /// score`: rewards of answers).
    Reward(Box<chat_train::RewardArgs>),
    /// Direct preference optimisation of a chat model on preference pairs.
    Dpo(Box<chat_train::DpoArgs>),
    /// Talk to a chat model (interactive, streaming, multi-turn), or answer a file (--batch).
    Chat(Box<chat::ChatArgs>),
    /// Log anomaly detection: `logs parse` mines templates from a raw log (Drain); `logs
    /// train` teaches a GPT over log keys normal sessions; `logs detect` / `logs eval` flag
    /// what deviates (DeepLog's top-g rule, or surprisal).
    #[command(subcommand)]
    Logs(logs::LogsCommand),
    /// An OpenAI-compatible HTTP server (/v1/completions, /v1/chat/completions, streaming,
    /// continuous batching) with a chat page at `/`.
    Serve(Box<serve::ServeArgs>),
    /// A deceptive shell for attackers: an emulated session answers common commands, a model
    /// (ours or any OpenAI-compatible endpoint) the rest, through guard rails (`honeypot
    /// replay`: print logged sessions).
    Honeypot(Box<honeypot::HoneypotArgs>),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> CliResult {
    gpt::threads::init(
        cli.threads
            .or_else(gpt::dist::comm::default_threads_per_rank),
    )?;
    // The training commands run data-parallel when `mpirun` started several ranks (built with
    // `--features mpi`); any other command started that way would run N times over the same
    // files, and is refused.
    let data_parallel = match &cli.command {
        Command::Train(_) | Command::Dpo(_) => true,
        Command::Translate(t) => matches!(t.command, Some(translate::TranslateCommand::Train(_))),
        Command::Finetune(a) => a.command.is_none(),
        Command::Sft(a) => a.command.is_none(),
        Command::Reward(a) => a.command.is_none(),
        Command::Logs(logs::LogsCommand::Train(_)) => true,
        _ => false,
    };
    if data_parallel {
        let command = cli.command;
        return with_world(|world| {
            gpt::dist::World::set_current(world);
            gpt::threads::on_pool(|| run_command(command))
        });
    }
    if let Some(n) = gpt::dist::comm::launcher_world_size().filter(|&n| n > 1) {
        return Err(gpt::error::Error::usage(
            "mpirun",
            format!("this process is one of {n} ranks, but only the training commands (train, translate train, finetune, sft, reward, dpo, logs train) run data-parallel; start this command as one process"),
        )
        .into());
    }
    match cli.command {
        // Servers keep their own threads: the engine's loop runs on the pool (see
        // `gpt::serve`), the HTTP side on tokio.
        Command::Serve(args) => serve::run_serve(*args),
        Command::Honeypot(args) => honeypot::run(*args),
        command => gpt::threads::on_pool(|| run_command(command)),
    }
}

/// Runs a training command in the world this process was started in ([`gpt::dist::World::from_env`]):
/// alone, or as one rank of `mpirun`'s, where a rank that fails prints its error with its rank
/// and ends the whole job (the others may be waiting for it in a collective).
fn with_world(run: impl FnOnce(gpt::dist::World) -> CliResult) -> CliResult {
    let world = gpt::dist::World::from_env()?;
    if world.size() == 1 {
        return run(world);
    }
    let (rank, size) = (world.rank(), world.size());
    let result = run(world.clone());
    match &result {
        Ok(()) => world.finish(),
        Err(e) => {
            eprintln!("error: rank {rank} of {size}: {e}");
            world.abort(1);
        }
    }
    result
}

/// Runs one command (on a worker of the thread pool, see [`gpt::threads::on_pool`]).
fn run_command(command: Command) -> CliResult {
    match command {
        Command::Train(args) => train::run(*args),
        Command::Prepare(args) => prepare::run(args),
        Command::Sample(args) => generate::run(args.into()),
        Command::Generate(args) => generate::run(args),
        Command::Score(args) => score::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Quantize(args) => quantize::run(args),
        Command::Tokenize(args) => tokenize::run(args),
        Command::Tokenizer(cmd) => tokenizer_train::run(cmd),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Translate(args) => translate::run(*args),
        Command::Bleu(args) => bleu::run(args),
        Command::Sft(args) => chat_train::run_sft(*args),
        Command::Reward(args) => chat_train::run_reward(*args),
        Command::Dpo(args) => chat_train::run_dpo(*args),
        Command::Logs(cmd) => logs::run(cmd),
        Command::Serve(args) => serve::run_serve(*args),
        Command::Honeypot(args) => honeypot::run(*args),
        Command::Chat(args) => chat::run(*args),
        Command::Finetune(args) => finetune::run(*args),
        Command::Classify(args) => finetune::run_classify(args),
    }
}
