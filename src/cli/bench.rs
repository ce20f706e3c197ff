//! `gpt bench …`: the flags of each benchmark, turned into the settings of its harness in
//! [`gpt::bench`].

use super::CliResult;
use clap::{Args, Subcommand};
use gpt::bench;
use gpt::nn::precision::Precision;
use std::path::PathBuf;

/// Benchmark subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Every kernel forward+backward at GPT-2-small shapes, optionally beside PyTorch.
    Kernels(KernelArgs),
    /// Training tokens/s of presets (tiny B16 T128, char-baby B8 T256, gpt2 B4 T64), with MFU
    /// and peak memory, optionally beside PyTorch eager.
    Train(TrainBenchArgs),
    /// One preset's training steps in this process (used by `bench train` to measure memory).
    #[command(hide = true)]
    TrainOne(TrainOneArgs),
    /// GPT-2 124M decoding (batch 1 and batch 8, KV cache, greedy) against the memory-bandwidth
    /// bound, optionally beside transformers' generate.
    Generate(GenerateBenchArgs),
    /// Encoder-decoder training tokens/s (transformer-small, -base) and beam-4 sentences/s of a
    /// trained model, optionally beside PyTorch `nn.Transformer` on the same batches and weights.
    Translate(Box<TranslateBenchArgs>),
    /// GPT-1 fine-tuning examples/s of `gpt finetune` on a base model, optionally beside the
    /// PyTorch reference (`bench/finetune_torch.py`) on the same model, data, batch and threads.
    Finetune(FinetuneBenchArgs),
    /// SFT and DPO training steps/s of `gpt sft` and `gpt dpo`, optionally beside TRL's
    /// `SFTTrainer` and `DPOTrainer` (`bench/chat_trl.py`) on the same model, batches and threads.
    Chat(ChatBenchArgs),
    /// Log anomaly detection on HDFS (DeepLog's session files): `gpt logs train`/`eval` beside
    /// an n-gram baseline and, optionally, DeepLog's LSTM in PyTorch (quality and speed).
    Logs(LogsBenchArgs),
    /// `gpt eval`'s wall time per task, optionally beside lm-evaluation-harness 0.4 on the same
    /// requests, model and threads (metrics compared).
    Eval(EvalBenchArgs),
    /// A load generator for `gpt serve` (the binary, on a free loopback port): K clients
    /// streaming `/v1/completions` per level, aggregate tokens/s, TTFT and inter-token latency,
    /// optionally beside `transformers serve` on the same model, threads and load.
    Serve(ServeBenchArgs),
}

/// Options of `gpt bench serve`.
#[derive(Args)]
pub struct ServeBenchArgs {
    /// Model directory (Hugging Face GPT-2 layout with its tokenizer; transformers must load it
    /// for --vs-transformers). Default: a random GPT-2 124M with the GPT-2 tokenizer.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Comma-separated concurrency levels (clients).
    #[arg(long, default_value = "1,4,8,16,32")]
    pub clients: String,
    /// Seconds per level and server.
    #[arg(long, default_value_t = 60.0)]
    pub duration_secs: f64,
    /// Requests started per level at most, over all clients (default: no limit but the time).
    #[arg(long)]
    pub max_requests: Option<usize>,
    /// `max_tokens` of every request (the prompt is 32 tokens).
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// `temperature` of every request (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// `seed` of every request.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Runs per server, alternating (medians reported).
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Our server's --max-batch (default: the largest --clients, a row for every client).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Also run `transformers serve` on the same model, threads and load.
    #[arg(long)]
    pub vs_transformers: bool,
    /// Flags for `transformers serve` after the model, host, port and `--device cpu --dtype
    /// float32`, one string; repeat it to run several configurations as peers of their own
    /// (default: `--continuous-batching --cb-num-blocks N`, a KV cache of ours' size; `""`:
    /// no continuous batching, one `generate` at a time).
    #[arg(long, allow_hyphen_values = true)]
    pub transformers_args: Vec<String>,
    /// Python interpreter with transformers and its serving extras (default: $GPT_PYTHON,
    /// ~/.cache/gpt-refenv/bin/python, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Options of `gpt bench eval`.
#[derive(Args)]
pub struct EvalBenchArgs {
    /// Model directory with its tokenizer (transformers must load it for --vs-lm-eval).
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated built-in tasks.
    #[arg(
        long,
        default_value = "lambada_openai,arc_easy,arc_challenge,piqa,copa"
    )]
    pub tasks: String,
    /// Documents per task.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// Few-shot examples per document.
    #[arg(long, default_value_t = 0)]
    pub num_fewshot: usize,
    /// Contexts per forward pass on our side.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Bootstrap resamples of the perplexity stderr, both sides (lm-eval's default).
    #[arg(long, default_value_t = 100_000)]
    pub bootstrap_iters: usize,
    /// Folder holding the task data (as `gpt eval --data-dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Also run lm-eval (bench/eval_lm_eval.py) on the same work.
    #[arg(long)]
    pub vs_lm_eval: bool,
    /// Python interpreter with lm-eval and transformers (default: $GPT_PYTHON,
    /// ~/.cache/gpt-refenv/bin/python, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Options of `gpt bench kernels`.
#[derive(Args)]
pub struct KernelArgs {
    /// Also run the same operations in PyTorch and print time ratios.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch (default: $GPT_PYTHON, ~/.cache/gpt-refenv/bin/python,
    /// then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Timed repetitions per operation (the median is reported).
    #[arg(long, default_value_t = 10)]
    pub reps: usize,
}

/// Options of `gpt bench train`.
#[derive(Args)]
pub struct TrainBenchArgs {
    /// Comma-separated presets.
    #[arg(long, default_value = "tiny,char-baby,gpt2")]
    pub presets: String,
    /// Timed steps per preset (median reported; two warm-up steps first).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Also run PyTorch eager on the same work.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Precision of our matrix products: f32 or bf16. With bf16 and `--vs-torch`, PyTorch also
    /// runs under `torch.autocast("cpu", dtype=torch.bfloat16)` beside its eager f32.
    #[arg(long, default_value = "f32")]
    pub precision: String,
}

/// Options of the hidden `gpt bench train-one`.
#[derive(Args)]
pub struct TrainOneArgs {
    /// The preset.
    #[arg(long)]
    preset: String,
    /// Sequences per step.
    #[arg(long)]
    batch_size: usize,
    /// Sequence length.
    #[arg(long)]
    block_size: usize,
    /// Timed steps.
    #[arg(long)]
    steps: usize,
    /// Precision of the matrix products.
    #[arg(long, default_value = "f32")]
    precision: String,
}

/// Options of `gpt bench generate`.
#[derive(Args)]
pub struct GenerateBenchArgs {
    /// Also run `transformers` `generate` on the same checkpoint and threads.
    #[arg(long)]
    pub vs_transformers: bool,
    /// Python interpreter with torch + transformers.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Prompt tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// New tokens (greedy).
    #[arg(long, default_value_t = 128)]
    pub new_tokens: usize,
    /// Batch size of the throughput run.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed runs (the best is reported).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Model directory to use instead of a fresh random GPT-2 124M.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Also decode with the weight matrices in this dtype (`bf16` or `f16`: half the bytes per
    /// token, `int8`: about a quarter); `f32` runs only the f32 rows.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Instead: f32, 16-bit and int8 decoding and prefill beside llama.cpp (through
    /// llama-cpp-python, on GGUF files made by llama.cpp's converter; int8 runs the same Q8_0
    /// file, f16 the same F16 file), alternating, medians of --runs.
    #[arg(long)]
    pub vs_llamacpp: bool,
    /// With --vs-llamacpp: comma-separated presets (gpt2, gpt2-medium).
    #[arg(long, default_value = "gpt2")]
    pub sizes: String,
    /// With --vs-llamacpp: alternating repetitions.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// With --vs-llamacpp: tokens of the prefill prompt.
    #[arg(long, default_value_t = 128)]
    pub prefill_len: usize,
    /// With --vs-llamacpp: llama.cpp's convert_hf_to_gguf.py (default: where
    /// bench/setup_llamacpp.sh puts it).
    #[arg(long)]
    pub llamacpp_convert: Option<PathBuf>,
    /// With --vs-llamacpp: where checkpoints and GGUF files are kept between runs.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Internal: load `--model` in `--dtype`, generate once at batch 1 and print one JSON line
    /// with the decode speed and this process's peak RSS.
    #[arg(long, hide = true, requires = "model")]
    pub peak_rss_child: bool,
}

/// Options of `gpt bench translate`.
#[derive(Args)]
pub struct TranslateBenchArgs {
    /// A trained `gpt translate` model or run directory: its tokenizer builds the batches and
    /// its weights do the beam search.
    #[arg(long)]
    pub model: PathBuf,
    /// Comma-separated presets timed for training (random weights, the model's vocabulary).
    #[arg(long, default_value = "transformer-small,transformer-base")]
    pub presets: String,
    /// Training pairs (TSV).
    #[arg(long, default_value = "data/bible_es_en/train.tsv")]
    pub train: PathBuf,
    /// Test pairs (TSV) whose sources are translated.
    #[arg(long, default_value = "data/bible_es_en/test.tsv")]
    pub test: PathBuf,
    /// Training pairs the batches are drawn from.
    #[arg(long, default_value_t = 5000)]
    pub pairs: usize,
    /// Token budget per training batch.
    #[arg(long, default_value_t = 3000)]
    pub max_tokens: usize,
    /// Timed training steps per preset (after two warm-up steps).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Test sentences translated.
    #[arg(long, default_value_t = 200)]
    pub limit: usize,
    /// Beam size.
    #[arg(long, default_value_t = 4)]
    pub beam: usize,
    /// Also run PyTorch on the same work.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch and safetensors.
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Options of `gpt bench finetune`.
#[derive(Args)]
pub struct FinetuneBenchArgs {
    /// Base model directory (one of our checkpoints or a Hugging Face GPT-2 directory, with its
    /// tokenizer). Default: a random GPT-2 124M with the GPT-2 tokenizer (no download).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// classify, entail, similar or choice.
    #[arg(long, default_value = "classify")]
    pub task: String,
    /// Training records (JSONL) of the task.
    #[arg(long, default_value = "data/tasks/sentiment_uci/train.jsonl")]
    pub train: PathBuf,
    /// Timed optimizer steps per run (after two warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// λ of the auxiliary LM loss.
    #[arg(long, default_value_t = 0.5)]
    pub aux_lm: f32,
    /// f32, or bf16 (also times ours in f32, and PyTorch under autocast beside its eager f32).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Alternating runs per side (medians reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also run the PyTorch reference on the same work.
    #[arg(long)]
    pub vs_torch: bool,
    /// Python interpreter with PyTorch, transformers and tokenizers.
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Flags of `gpt bench logs`.
#[derive(clap::Args, Debug)]
pub struct LogsBenchArgs {
    /// Folder with DeepLog's `hdfs_train` and `hdfs_test_abnormal` (research licence; read in
    /// place).
    #[arg(long, default_value = "../shared/data/logs/hdfs_deeplog")]
    pub data_dir: PathBuf,
    /// hdfs (sessions, beside the n-gram and DeepLog), bgl (per-line, beside the trivial
    /// detectors) or both.
    #[arg(long, default_value = "both")]
    pub which: String,
    /// Loghub's 2k samples (`BGL_2k.log`, `BGL_2k.labels.jsonl`; research licence, read in
    /// place).
    #[arg(long, default_value = "../shared/data/logs/loghub_2k")]
    pub loghub_dir: PathBuf,
    /// BGL: lines of the training period (the rest test).
    #[arg(long, default_value_t = 1200)]
    pub bgl_train_lines: usize,
    /// Epochs of our model.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Our model's context in keys.
    #[arg(long, default_value_t = 10)]
    pub window: usize,
    /// Epochs of the PyTorch LSTM.
    #[arg(long, default_value_t = 12)]
    pub torch_epochs: usize,
    /// Alternating runs per side (medians reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also run DeepLog's LSTM in PyTorch (bench/deeplog_torch.py).
    #[arg(long)]
    pub vs_torch: bool,
    /// Python with PyTorch (default: $GPT_PYTHON, ~/.cache/gpt-refenv/bin/python, python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Options of `gpt bench chat`.
#[derive(Args)]
pub struct ChatBenchArgs {
    /// A chat model, or a base model (one `gpt sft` step makes it a chat model first; ours or
    /// a Hugging Face GPT-2 directory with its tokenizer). Default: a random GPT-2-style model,
    /// 4 layers, width 256, context 256, with the GPT-2 tokenizer (no download).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// sft, dpo or both.
    #[arg(long, default_value = "both")]
    pub which: String,
    /// SFT demonstrations (JSONL). Default: the instruction suite of `gpt sft suite`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// DPO preference pairs (JSONL). Default: data/chat/hh_rlhf_harmless/train.jsonl.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// Timed optimizer steps per run (after two warm-up steps).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Alternating runs per side (medians reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Examples (SFT) or pairs (DPO) per step.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// SFT with packed rows (ours `--packing`, TRL `padding_free`).
    #[arg(long)]
    pub packing: bool,
    /// Also run TRL (bench/chat_trl.py) on the same work.
    #[arg(long)]
    pub vs_trl: bool,
    /// Python interpreter with torch, transformers and trl (default: $GPT_PYTHON,
    /// ~/.cache/gpt-refenv/bin/python, then python3).
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// A comma-separated list, trimmed, empty items dropped.
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

/// Runs a benchmark subcommand.
pub fn run(cmd: BenchCommand) -> CliResult {
    match cmd {
        BenchCommand::Kernels(a) => bench::kernels::run(&bench::kernels::KernelsBench {
            vs_torch: a.vs_torch,
            python: a.python,
            reps: a.reps,
        })?,
        BenchCommand::Train(a) => bench::train::run(&bench::train::TrainBench {
            presets: list(&a.presets),
            steps: a.steps,
            vs_torch: a.vs_torch,
            python: a.python,
            precision: Precision::parse_for("precision", &a.precision)?,
        })?,
        BenchCommand::TrainOne(a) => bench::train::run_one(&bench::train::TrainOne {
            preset: a.preset,
            batch_size: a.batch_size,
            block_size: a.block_size,
            steps: a.steps,
            precision: Precision::parse_for("precision", &a.precision)?,
        })?,
        BenchCommand::Generate(a) => {
            let opts = bench::generate::GenerateBench {
                vs_transformers: a.vs_transformers,
                python: a.python,
                prompt_len: a.prompt_len,
                new_tokens: a.new_tokens,
                batch: a.batch,
                reps: a.reps,
                model: a.model,
                dtype: gpt::model::weight_dtype::WeightDtype::parse_for("dtype", &a.dtype)?,
            };
            if a.peak_rss_child {
                bench::generate::run_peak_rss_child(&opts)?
            } else if a.vs_llamacpp {
                bench::llamacpp::run(&bench::llamacpp::LlamaCppBench {
                    python: opts.python,
                    converter: a.llamacpp_convert,
                    sizes: list(&a.sizes),
                    runs: a.runs,
                    prompt_len: a.prompt_len,
                    new_tokens: a.new_tokens,
                    prefill_len: a.prefill_len,
                    work_dir: a.work_dir,
                })?
            } else {
                bench::generate::run(&opts)?
            }
        }
        BenchCommand::Translate(a) => bench::translate::run(&bench::translate::TranslateBench {
            model: a.model,
            presets: list(&a.presets),
            train: a.train,
            test: a.test,
            pairs: a.pairs,
            max_tokens: a.max_tokens,
            steps: a.steps,
            limit: a.limit,
            beam: a.beam,
            vs_torch: a.vs_torch,
            python: a.python,
        })?,
        BenchCommand::Eval(a) => bench::eval::run(&bench::eval::EvalBench {
            model: a.model,
            tasks: list(&a.tasks),
            limit: a.limit,
            num_fewshot: a.num_fewshot,
            batch_size: a.batch_size,
            bootstrap_iters: a.bootstrap_iters,
            data_dir: a.data_dir,
            vs_lm_eval: a.vs_lm_eval,
            python: a.python,
        })?,
        BenchCommand::Finetune(a) => bench::finetune::run(&bench::finetune::FinetuneBench {
            model: a.model,
            task: a.task,
            train: a.train,
            steps: a.steps,
            batch_size: a.batch_size,
            aux_lm: a.aux_lm,
            precision: Precision::parse_for("precision", &a.precision)?,
            runs: a.runs,
            vs_torch: a.vs_torch,
            python: a.python,
        })?,
        BenchCommand::Logs(a) => {
            if !["hdfs", "bgl", "both"].contains(&a.which.as_str()) {
                return Err(gpt::error::Error::field(
                    "--which",
                    format!("`{}` is not one of hdfs, bgl, both", a.which),
                )
                .into());
            }
            if a.which != "bgl" {
                bench::logs::run(&bench::logs::LogsBench {
                    data_dir: a.data_dir,
                    epochs: a.epochs,
                    window: a.window,
                    torch_epochs: a.torch_epochs,
                    runs: a.runs,
                    vs_torch: a.vs_torch,
                    python: a.python,
                })?;
            }
            if a.which != "hdfs" {
                bench::logs::run_bgl(&bench::logs::BglBench {
                    loghub_dir: a.loghub_dir,
                    train_lines: a.bgl_train_lines,
                    valid_fraction: 0.2,
                    epochs: a.epochs,
                    window: 16,
                    target_fpr: 0.01,
                })?;
            }
        }
        BenchCommand::Serve(a) => {
            let clients = list(&a.clients)
                .iter()
                .map(|c| {
                    c.parse::<usize>().map_err(|_| {
                        gpt::error::Error::field("--clients", format!("`{c}` is not a count"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            bench::serve::run(&bench::serve::ServeBench {
                model: a.model,
                clients,
                duration_secs: a.duration_secs,
                max_requests: a.max_requests,
                max_tokens: a.max_tokens,
                temperature: a.temperature,
                seed: a.seed,
                runs: a.runs,
                max_batch: a.max_batch,
                vs_transformers: a.vs_transformers,
                transformers_args: a
                    .transformers_args
                    .iter()
                    .map(|s| s.split_whitespace().map(String::from).collect())
                    .collect(),
                python: a.python,
            })?
        }
        BenchCommand::Chat(a) => bench::chat::run(&bench::chat::ChatBench {
            model: a.model,
            which: bench::chat::Which::parse(&a.which)?,
            data: a.data,
            pairs: a.pairs.unwrap_or_else(bench::chat::default_pairs),
            steps: a.steps,
            runs: a.runs,
            batch_size: a.batch_size,
            packing: a.packing,
            vs_trl: a.vs_trl,
            python: a.python,
        })?,
    }
    Ok(())
}
