//! GPT pretraining as a [`Task`]: random windows of a token file, next-token cross-entropy,
//! dropout, optional bf16 matrix products; and [`train`], which sets it up (preparing the data on
//! the fly if needed) and hands it to the one loop ([`super::trainer::run`]).

use super::checkpoint::{state_field, CheckpointLayout};
use super::config::TrainConfig;
use super::run_dir;
use super::task::{FinalGrads, MicroStep, Task};
use super::trainer::{run, LoopConfig, TrainOptions, TrainOutcome};
use crate::data::loader::{Batch, BatchSampler};
use crate::data::prepare::{prepare, read_documents, tokenizer_for};
use crate::data::tokens::TokenFile;
use crate::error::{Error, Result};
use crate::io::load_tokenizer;
use crate::model::checkpoint::{self, WEIGHTS_FILE};
use crate::model::memory::MemoryEstimate;
use crate::model::{Gpt, GptConfig};
use crate::nn::params::Params;
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The bundled default corpus (nine Shakespeare plays, public domain; see data/README.md).
pub const BUNDLED_CORPUS: &str = include_str!("../../data/shakespeare.txt");

/// Training data: token files and the tokenizer that made them.
struct Data {
    train: TokenFile,
    val: TokenFile,
    tokenizer: AnyTokenizer,
}

/// Resolves `cfg.data`: a prepared directory is used as is; a text file or folder (or the
/// bundled corpus) is prepared into `out/data`.
fn load_data(cfg: &TrainConfig, root: bool) -> Result<Data> {
    let shared = cfg.out.join("data");
    let prepared = cfg
        .data
        .as_ref()
        .filter(|d| d.join("train.bin").exists())
        .cloned()
        .or_else(|| (!root && shared.join("train.bin").exists()).then_some(shared));
    let dir = match prepared {
        Some(dir) => dir,
        None => {
            let dir = cfg.out.join("data");
            let docs = match &cfg.data {
                Some(p) => read_documents(std::slice::from_ref(p))?,
                None => vec![BUNDLED_CORPUS.to_string()],
            };
            let tok = tokenizer_for(&cfg.tokenizer, &docs)?;
            prepare(&docs, &tok, &dir, cfg.val_fraction, cfg.seed)?;
            dir
        }
    };
    let train = TokenFile::open(&dir.join("train.bin"))?;
    let val = TokenFile::open(&dir.join("val.bin"))?;
    let tokenizer = load_tokenizer(&dir)?;
    for f in [&train, &val] {
        let max = f.max_id() as usize;
        if !f.is_empty() && max >= tokenizer.vocab_size() {
            return Err(Error::file(
                f.path(),
                format!(
                    "token id {max} is beyond the tokenizer's vocabulary of {}; prepare the data again with this tokenizer",
                    tokenizer.vocab_size()
                ),
            ));
        }
    }
    Ok(Data {
        train,
        val,
        tokenizer,
    })
}

/// The model configuration a run trains.
pub fn model_config(cfg: &TrainConfig, vocab_size: usize) -> Result<GptConfig> {
    let mut m = GptConfig::preset(&cfg.preset, vocab_size)?;
    if m.vocab_size != vocab_size {
        return Err(Error::field(
            "preset",
            format!(
                "preset `{}` has a vocabulary of {} but the tokenizer has {vocab_size}",
                cfg.preset, m.vocab_size
            ),
        ));
    }
    m.n_ctx = cfg.block_size;
    if let Some(d) = cfg.dropout {
        m.dropout = d;
    }
    if let Some(l) = cfg.n_layer {
        m.n_layer = l;
    }
    if let Some(h) = cfg.n_head {
        m.n_head = h;
    }
    if let Some(c) = cfg.n_embd {
        m.n_embd = c;
    }
    if let Some(norm) = cfg.norm {
        m.norm = norm;
    }
    if let Some(p) = cfg.positions {
        m.positions = p;
    }
    m.validate()?;
    Ok(m)
}

/// GPT pretraining: the model, its data and the state exact resume needs.
pub struct Pretrain {
    cfg: TrainConfig,
    model: Gpt,
    data: Data,
    sampler: BatchSampler,
    dropout_rng: Rng,
    batch: Batch,
    memory: MemoryEstimate,
    /// `(rank, ranks)` of data parallelism; `(0, 1)` alone.
    shard: (usize, usize),
}

/// The memory a run needs ([`crate::model::memory::gpt_training`]), named by `gpt train`'s
/// flags.
pub fn memory_estimate(cfg: &TrainConfig, m: &GptConfig) -> Result<MemoryEstimate> {
    crate::model::memory::gpt_training(
        m,
        cfg.batch_size,
        cfg.precision,
        cfg.sample_tokens,
        ["--batch-size", "--block-size", "--n-layer", "--n-embd"],
    )
}

impl Pretrain {
    /// Loads (or prepares) the data and initialises the model from `cfg.seed`; with
    /// `check_memory`, first refuses a run whose memory estimate is over what is available.
    /// A rank other than 0 (`root` false) reuses the data rank 0 prepared in a shared output
    /// directory.
    fn new(cfg: TrainConfig, check_memory: bool, root: bool) -> Result<Self> {
        let data = load_data(&cfg, root)?;
        let mcfg = model_config(&cfg, data.tokenizer.vocab_size())?;
        let memory = memory_estimate(&cfg, &mcfg)?;
        if check_memory {
            memory.check(crate::model::memory::available(), "--no-memory-check")?;
        }
        let mut init_rng = Rng::new(cfg.seed);
        let mut model = Gpt::new(mcfg, &mut init_rng)?;
        let sampler = BatchSampler::new(
            &data.train,
            cfg.batch_size,
            cfg.block_size,
            cfg.seed.wrapping_add(1),
        )?;
        let dropout_rng = init_rng.fork();
        // After initialising (and again after a restore): the bf16 shadow is rounded from the
        // final master weights.
        model.set_precision(cfg.precision);
        Ok(Pretrain {
            cfg,
            model,
            data,
            sampler,
            dropout_rng,
            batch: Batch::default(),
            memory,
            shard: (0, 1),
        })
    }

    /// Mean loss over `eval_iters` validation batches drawn with a fixed seed (the same every
    /// time), or `None` if the validation split is shorter than one window.
    fn estimate_loss(&mut self) -> Result<Option<f32>> {
        let (data, cfg) = (&self.data.val, &self.cfg);
        if data.len() < cfg.block_size + 1 {
            return Ok(None);
        }
        // With several ranks, rank 0 evaluates alone on batches of the global size: the
        // validation loss of one process with the global batch.
        let batch_size = cfg.batch_size * self.shard.1;
        let mut sampler = BatchSampler::new(
            data,
            batch_size,
            cfg.block_size,
            cfg.seed ^ 0x005E_ED0F_7A10,
        )?;
        let mut batch = Batch::default();
        let mut rng = Rng::new(0);
        let mut total = 0.0f64;
        for _ in 0..cfg.eval_iters {
            sampler.next(data, &mut batch);
            self.model
                .forward(&batch.ids, batch_size, cfg.block_size, false, &mut rng)?;
            total += self.model.loss(&batch.targets)? as f64;
        }
        Ok(Some((total / cfg.eval_iters as f64) as f32))
    }
}

impl Task for Pretrain {
    fn params(&mut self) -> &mut Params {
        &mut self.model.params
    }

    fn forward_backward(&mut self, scale: f32) -> Result<MicroStep> {
        let (b, t) = (self.cfg.batch_size, self.cfg.block_size);
        self.sampler.next(&self.data.train, &mut self.batch);
        // Alone, the dropout stream is the saved generator itself. With several ranks each
        // micro-batch gets a generator seeded from the shared one (which every rank advances
        // alike, so rank 0's checkpoint restores every rank) and the rank.
        let (rank, ranks) = self.shard;
        let mut own = crate::dist::rank_stream(&mut self.dropout_rng, rank, ranks);
        let rng = own.as_mut().unwrap_or(&mut self.dropout_rng);
        let loss = self.model.forward_backward(
            &self.batch.ids,
            &self.batch.targets,
            b,
            t,
            0.0,
            scale,
            rng,
        )?;
        Ok(MicroStep {
            loss,
            tokens: b * t,
        })
    }

    fn after_update(&mut self) {
        self.model.refresh_bf16_weights();
    }

    fn evaluate(&mut self) -> Result<Option<f32>> {
        self.estimate_loss()
    }

    fn shard(&mut self, rank: usize, ranks: usize) -> Result<()> {
        self.shard = (rank, ranks);
        self.sampler.shard = Some(self.shard);
        Ok(())
    }

    fn report_final_grads(&mut self, ready: Option<FinalGrads>) -> bool {
        self.model.report_final_grads(ready)
    }

    fn fingerprint(&self) -> u64 {
        // The configuration without its paths (which may differ between nodes), the model,
        // and the training tokens: their count and a sample spread over the file.
        let mut h = crate::dist::config_fingerprint(&self.cfg, &["out", "data"]);
        h = crate::dist::fnv1a(h, format!("{:?}", self.model.config).as_bytes());
        let train = &self.data.train;
        h = crate::dist::fnv1a(h, &(train.len() as u64).to_le_bytes());
        let samples = train.len().min(4096);
        for k in 0..samples {
            let i = k * (train.len() / samples.max(1));
            h = crate::dist::fnv1a(h, &train.get(i).to_le_bytes());
        }
        h
    }

    fn divergence_hints(&self) -> Vec<String> {
        self.cfg.divergence_hints()
    }

    fn save(&self, dir: &Path, mut meta: HashMap<String, String>) -> Result<()> {
        meta.insert("precision".into(), self.model.precision().name().into());
        checkpoint::save_with_tokenizer(&self.model, dir, Some(meta), &self.data.tokenizer)
    }

    fn state(&self) -> Result<Map<String, Value>> {
        let json = |v: serde_json::Result<Value>| {
            v.map_err(|e| Error::usage("Pretrain::state", e.to_string()))
        };
        let mut m = Map::new();
        m.insert("sampler".into(), json(serde_json::to_value(&self.sampler))?);
        m.insert(
            "dropout_rng".into(),
            json(serde_json::to_value(&self.dropout_rng))?,
        );
        m.insert("config".into(), json(serde_json::to_value(&self.cfg))?);
        m.insert(
            "model".into(),
            json(serde_json::to_value(&self.model.config))?,
        );
        Ok(m)
    }

    fn restore(&mut self, dir: &Path, state: &Map<String, Value>) -> Result<()> {
        let saved: GptConfig = state_field(dir, state, "model")?;
        if saved != self.model.config {
            return Err(Error::file(
                dir,
                format!(
                    "the checkpoint's model ({} layers, width {}) differs from this run's ({} layers, width {}); resume with the same settings",
                    saved.n_layer, saved.n_embd, self.model.config.n_layer, self.model.config.n_embd
                ),
            ));
        }
        checkpoint::load_weights(&mut self.model, &dir.join(WEIGHTS_FILE))?;
        self.sampler = state_field(dir, state, "sampler")?;
        self.sampler.shard = Some(self.shard);
        self.dropout_rng = state_field(dir, state, "dropout_rng")?;
        self.model.set_precision(self.cfg.precision);
        Ok(())
    }
}

/// The loop settings of a pretraining run.
pub fn loop_config(cfg: &TrainConfig) -> LoopConfig {
    LoopConfig {
        out: cfg.out.clone(),
        max_steps: cfg.max_steps,
        grad_accum: cfg.grad_accum,
        grad_clip: cfg.grad_clip,
        schedule: cfg.schedule(),
        adamw: cfg.adamw(),
        eval_interval: cfg.eval_interval,
        ckpt_interval: cfg.ckpt_interval,
        max_minutes: None,
        checkpoints: CheckpointLayout::Single,
        lr_field: "lr",
        on_nan: cfg.on_nan,
        max_nan_skips: cfg.max_nan_skips,
    }
}

/// Fields of [`TrainConfig`] that a resume may change: the step budget, the learning-rate
/// schedule (recomputed from the new values at the saved step) and what is reported when.
pub const RESUME_CHANGEABLE: &[&str] = &[
    "max_steps",
    "lr",
    "min_lr",
    "warmup_steps",
    "eval_interval",
    "eval_iters",
    "ckpt_interval",
    "sample_tokens",
    "on_nan",
    "max_nan_skips",
];

/// The resume rule, as printed with the fields a resume ignored.
pub const RESUME_RULE: &str = "A resume may change only max_steps, lr, min_lr, warmup_steps, \
    eval_interval, eval_iters, ckpt_interval, sample_tokens, on_nan and max_nan_skips; to change anything else, start a \
    new run (another --out, or --overwrite)";

/// Runs (or resumes) a pretraining run.
///
/// A fresh run refuses an `out` that already holds a run unless `opts.overwrite`
/// ([`run_dir::claim`]). On resume the saved configuration governs: `cfg` should be it with the
/// intended changes ([`TrainConfig::saved_in`] reads it); the fields in [`RESUME_CHANGEABLE`] are
/// taken from `cfg`, any other field that differs is ignored with a warning, and a `max_steps`
/// at or below the saved step is an error.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    let resume = run_dir::find_resume(
        &cfg.out,
        CheckpointLayout::Single,
        opts.resume,
        opts.overwrite,
    )?;
    let cfg = run_dir::resumed(
        resume.as_ref(),
        cfg,
        &cfg.out,
        &run_dir::ResumeRules {
            changeable: RESUME_CHANGEABLE,
            rule: RESUME_RULE,
            set_out: |c, out| c.out = out,
            max_steps: |c| c.max_steps,
        },
        opts.quiet,
    )?;
    cfg.validate()?;
    let world = &opts.world;
    // Several ranks may share one output directory: rank 0 claims it (and prepares the data
    // there) while the others wait, then finds what rank 0 made.
    if resume.is_none()
        && world.is_root()
        && run_dir::claim(&cfg.out, opts.overwrite)?
        && opts.talk()
    {
        eprintln!(
            "--overwrite: the previous run in {} is kept in {} until this run's first checkpoint",
            cfg.out.display(),
            cfg.out.join(run_dir::PREVIOUS_RUN_DIR).display()
        );
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let mut task =
        world.root_first(|| Pretrain::new(cfg.clone(), opts.check_memory, world.is_root()))?;
    if task.data.val.len() < cfg.block_size + 1 && !opts.quiet {
        eprintln!(
            "warning: the validation split {} has {} tokens, fewer than one window of block_size + 1 = {}: no validation loss will be reported (use more data or a larger val_fraction)",
            task.data.val.path().display(),
            task.data.val.len(),
            cfg.block_size + 1
        );
    }
    if let Some(w) = cfg.precision.warning() {
        if !opts.quiet {
            eprintln!("{w}");
        }
    }
    if opts.talk() {
        let m = &task.model.config;
        let layout = task.model.layout();
        let (n_decay, n_no_decay) = layout.decay_counts();
        eprintln!(
            "gpt train: preset {} ({} layers, {} heads, width {}, context {}), {:.2}M parameters ({:.2}M decayed, {:.2}M not), {} threads, precision {}",
            cfg.preset,
            m.n_layer,
            m.n_head,
            m.n_embd,
            m.n_ctx,
            layout.total() as f64 / 1e6,
            n_decay as f64 / 1e6,
            n_no_decay as f64 / 1e6,
            crate::threads::current(),
            cfg.precision.describe()
        );
        eprintln!(
            "data: {} train / {} val tokens, vocabulary {}; out: {}{}",
            task.data.train.len(),
            task.data.val.len(),
            task.data.tokenizer.vocab_size(),
            cfg.out.display(),
            resume
                .as_ref()
                .map(|r| format!("; resuming at step {}", r.state.step))
                .unwrap_or_default()
        );
        eprintln!(
            "memory: {}{}",
            task.memory.summary(),
            crate::model::memory::available()
                .map(|a| format!(" ({} available)", crate::model::memory::gib(a)))
                .unwrap_or_default()
        );
    }
    let mut outcome = run(&mut task, &loop_config(&cfg), opts, resume.as_ref())?;
    if world.size() > 1 && opts.talk() && outcome.step_seconds > 0.0 {
        eprintln!(
            "data parallel: {} ranks × batch {} = {} sequences per micro-batch; rank 0 waited {:.1}% of its step time for the gradient all-reduce (communication not hidden by backward)",
            world.size(),
            cfg.batch_size,
            world.size() * cfg.batch_size,
            100.0 * outcome.comm_wait_seconds / outcome.step_seconds
        );
    }
    if cfg.sample_tokens > 0 && !outcome.stopped_early && world.is_root() {
        let text = sample_text(
            &mut task.model,
            &task.data.tokenizer,
            "\n",
            cfg.sample_tokens,
            cfg.seed,
        )?;
        if opts.talk() {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "--- sample ---\n{text}\n--------------");
        }
        outcome.sample = Some(text);
    }
    Ok(outcome)
}

/// Samples `n` tokens after `prompt` (temperature 0.8, top-k 200, as nanoGPT's sample.py)
/// with the KV-cache generator of [`crate::generate`] on a copy of the current weights. A prompt
/// longer than the context keeps its last `n_ctx` tokens.
pub fn sample_text(
    model: &mut Gpt,
    tok: &AnyTokenizer,
    prompt: &str,
    n: usize,
    seed: u64,
) -> Result<String> {
    use crate::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
    let mut ids = tok
        .encode(prompt, true)
        .map_err(|e| Error::field("prompt", e.to_string()))?;
    let n_ctx = model.config.n_ctx;
    if ids.len() > n_ctx {
        ids.drain(..ids.len() - n_ctx);
    }
    let cfg = GenerateConfig {
        max_new_tokens: n,
        sampling: SamplingConfig {
            temperature: 0.8,
            top_k: 200,
            ..SamplingConfig::default()
        },
        seed,
        eos: None,
    };
    let infer = InferenceModel::from_gpt(model)?;
    let (out, _) = generate(&infer, std::slice::from_ref(&ids), &cfg, |_, _| Ok(false))?;
    let mut bytes = Vec::new();
    for id in ids.iter().chain(&out[0].ids) {
        bytes.extend(
            tok.token_bytes(*id)
                .map_err(|e| Error::usage("sample_text", e.to_string()))?,
        );
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
