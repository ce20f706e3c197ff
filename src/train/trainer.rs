//! The pretraining loop: AdamW with warmup + cosine decay, gradient accumulation and clipping,
//! periodic validation, atomic checkpoints with exact resume, metrics JSONL and a loss plot.
//!
//! Resume is exact: a checkpoint holds the parameters, both AdamW moments, the step, the batch
//! sampler's RNG and the dropout RNG, so `N` steps, stop, resume to `2N` gives the losses and
//! weights of an uninterrupted `2N`-step run.

use super::config::TrainConfig;
use super::plot::plot_losses;
use crate::data::loader::{Batch, BatchSampler};
use crate::data::prepare::{
    load_tokenizer, prepare, read_documents, save_tokenizer, tokenizer_for,
};
use crate::data::tokens::TokenFile;
use crate::error::{Error, Result};
use crate::kernels::adamw::clip_grad_norm;
use crate::model::checkpoint::{self, write_atomic};
use crate::model::{Gpt, GptConfig};
use crate::optim::schedule::warmup_cosine;
use crate::optim::{AdamW, AdamWConfig};
use crate::rng::Rng;
use crate::tokenizer::AnyTokenizer;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The bundled default corpus (nine Shakespeare plays, public domain; see data/README.md).
pub const BUNDLED_CORPUS: &str = include_str!("../../data/shakespeare.txt");

/// Name of the checkpoint directory inside the output directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// How a run reports and whether it resumes.
#[derive(Clone, Debug, Default)]
pub struct TrainOptions {
    /// Print one JSON object per line instead of a progress bar.
    pub json: bool,
    /// Continue from `out/checkpoint`.
    pub resume: bool,
    /// No progress bar and no text output (tests).
    pub quiet: bool,
    /// Stop (saving a checkpoint, as Ctrl-C does) once this step is reached.
    pub stop_at: Option<usize>,
    /// Set to request a clean stop (Ctrl-C).
    pub interrupt: Option<Arc<AtomicBool>>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct TrainOutcome {
    /// Steps completed in total (including those before a resume).
    pub step: usize,
    /// Training loss of every step run in this invocation, in order.
    pub losses: Vec<f32>,
    /// Last validation loss.
    pub val_loss: Option<f32>,
    /// Whether the run stopped early (Ctrl-C or `stop_at`).
    pub stopped_early: bool,
    /// Median training throughput.
    pub tokens_per_sec: f64,
    /// The sample printed at the end, if any.
    pub sample: Option<String>,
}

/// Saved between runs for exact resume.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TrainerState {
    version: u32,
    step: usize,
    sampler: BatchSampler,
    dropout_rng: Rng,
    config: TrainConfig,
    model: GptConfig,
}

/// Training data: token files and the tokenizer that made them.
struct Data {
    train: TokenFile,
    val: TokenFile,
    tokenizer: AnyTokenizer,
}

/// Resolves `cfg.data`: a prepared directory is used as is; a text file or folder (or the
/// bundled corpus) is prepared into `out/data`.
fn load_data(cfg: &TrainConfig) -> Result<Data> {
    let prepared = cfg
        .data
        .as_ref()
        .filter(|d| d.join("train.bin").exists())
        .cloned();
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
            return Err(Error::Msg(format!(
                "{}: token id {max} is beyond the tokenizer's vocabulary of {}",
                f.path().display(),
                tokenizer.vocab_size()
            )));
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
        return Err(Error::Config {
            field: "preset".into(),
            reason: format!(
                "preset `{}` has a vocabulary of {} but the tokenizer has {vocab_size}",
                cfg.preset, m.vocab_size
            ),
        });
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

/// Mean loss over `iters` validation batches drawn with a fixed seed (the same every time).
fn estimate_loss(model: &mut Gpt, data: &TokenFile, cfg: &TrainConfig) -> Result<Option<f32>> {
    if data.len() < cfg.block_size + 1 {
        return Ok(None);
    }
    let mut sampler = BatchSampler::new(
        data,
        cfg.batch_size,
        cfg.block_size,
        cfg.seed ^ 0x005E_ED0F_7A10,
    )?;
    let mut batch = Batch::default();
    let mut rng = Rng::new(0);
    let mut total = 0.0f64;
    for _ in 0..cfg.eval_iters {
        sampler.next(data, &mut batch);
        model.forward(&batch.ids, cfg.batch_size, cfg.block_size, false, &mut rng)?;
        total += model.loss(&batch.targets)? as f64;
    }
    Ok(Some((total / cfg.eval_iters as f64) as f32))
}

fn save_optimizer(opt: &AdamW, path: &Path) -> Result<()> {
    let m: Vec<u8> = opt.m.iter().flat_map(|x| x.to_le_bytes()).collect();
    let v: Vec<u8> = opt.v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let err = |e: safetensors::SafeTensorError| Error::Msg(format!("{}: {e}", path.display()));
    let views = vec![
        (
            "m".to_string(),
            TensorView::new(Dtype::F32, vec![opt.m.len()], &m).map_err(err)?,
        ),
        (
            "v".to_string(),
            TensorView::new(Dtype::F32, vec![opt.v.len()], &v).map_err(err)?,
        ),
    ];
    let meta = [("step".to_string(), opt.step.to_string())]
        .into_iter()
        .collect();
    write_atomic(
        path,
        &safetensors::serialize(views, Some(meta)).map_err(err)?,
    )
}

fn load_optimizer(opt: &mut AdamW, path: &Path, step: usize) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    for (name, dst) in [("m", &mut opt.m), ("v", &mut opt.v)] {
        let t = st
            .tensor(name)
            .map_err(|e| Error::Msg(format!("{}: tensor `{name}`: {e}", path.display())))?;
        if t.dtype() != Dtype::F32 || t.shape() != [dst.len()] {
            return Err(Error::Msg(format!(
                "{}: tensor `{name}` is {:?} {:?}, expected F32 [{}] (a checkpoint of another model?)",
                path.display(),
                t.dtype(),
                t.shape(),
                dst.len()
            )));
        }
        for (d, b) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
            *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    opt.step = step as u64;
    Ok(())
}

/// Writes a complete checkpoint into `out/checkpoint` atomically: everything goes into a
/// temporary directory that replaces the previous checkpoint by renames.
fn save_checkpoint(
    out: &Path,
    model: &Gpt,
    opt: &AdamW,
    state: &TrainerState,
    tok: &AnyTokenizer,
) -> Result<()> {
    let tmp = out.join(format!("{CHECKPOINT_DIR}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    let meta = [
        (
            "precision".to_string(),
            model.precision().name().to_string(),
        ),
        ("step".to_string(), state.step.to_string()),
    ];
    checkpoint::save(model, &tmp, Some(meta.into_iter().collect()))?;
    save_optimizer(opt, &tmp.join(OPTIMIZER_FILE))?;
    save_tokenizer(tok, &tmp)?;
    let json = serde_json::to_vec_pretty(state).map_err(|e| Error::Msg(e.to_string()))?;
    write_atomic(&tmp.join(STATE_FILE), &json)?;
    let dst = out.join(CHECKPOINT_DIR);
    let old = out.join(format!("{CHECKPOINT_DIR}.old"));
    if dst.exists() {
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
        }
        std::fs::rename(&dst, &old).map_err(|e| Error::io(&dst, e))?;
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&tmp, e))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| Error::io(&old, e))?;
    }
    Ok(())
}

/// The checkpoint directory to resume from (`checkpoint`, or `checkpoint.old` if a crash
/// happened between the two renames).
fn resume_dir(out: &Path) -> Result<PathBuf> {
    for name in [CHECKPOINT_DIR.to_string(), format!("{CHECKPOINT_DIR}.old")] {
        let d = out.join(name);
        if d.join(STATE_FILE).exists() {
            return Ok(d);
        }
    }
    Err(Error::Msg(format!(
        "--resume: no checkpoint in {} (expected {}/{STATE_FILE})",
        out.display(),
        out.join(CHECKPOINT_DIR).display()
    )))
}

/// One line of metrics.jsonl (shared with the translation trainer).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Metric {
    pub(crate) step: usize,
    pub(crate) loss: f32,
    pub(crate) lr: f32,
    pub(crate) grad_norm: f32,
    pub(crate) tokens_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(crate) val_loss: Option<f32>,
}

/// Reads metrics up to and including `step` (to continue the file on resume).
pub(crate) fn read_metrics(path: &Path, up_to: usize) -> Vec<Metric> {
    std::fs::read_to_string(path)
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str::<Metric>(l).ok())
                .filter(|m| m.step <= up_to)
                .collect()
        })
        .unwrap_or_default()
}

/// Runs (or resumes) a training run.
pub fn train(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainOutcome> {
    let (cfg, state) = if opts.resume {
        let dir = resume_dir(&cfg.out)?;
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let mut state: TrainerState = serde_json::from_str(&text)
            .map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
        // The saved configuration governs the run; only the step budget may be extended.
        state.config.max_steps = cfg.max_steps.max(state.config.max_steps);
        state.config.out = cfg.out.clone();
        (state.config.clone(), Some((state, dir)))
    } else {
        (cfg.clone(), None)
    };
    cfg.validate()?;
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let data = load_data(&cfg)?;
    let mcfg = model_config(&cfg, data.tokenizer.vocab_size())?;
    let mut init_rng = Rng::new(cfg.seed);
    let mut model = Gpt::new(mcfg.clone(), &mut init_rng)?;
    let adam = AdamWConfig {
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: 1e-8,
        weight_decay: cfg.weight_decay,
    };
    let mut opt = AdamW::new(model.layout(), adam);
    let mut sampler = BatchSampler::new(
        &data.train,
        cfg.batch_size,
        cfg.block_size,
        cfg.seed.wrapping_add(1),
    )?;
    let mut dropout_rng = init_rng.fork();
    let mut step = 0;
    if let Some((state, dir)) = &state {
        if state.model != mcfg {
            return Err(Error::Msg(format!(
                "{}: the checkpoint's model ({} layers, width {}) differs from this run's; resume with the same settings",
                dir.display(),
                state.model.n_layer,
                state.model.n_embd
            )));
        }
        checkpoint::load_weights(&mut model, &dir.join(checkpoint::WEIGHTS_FILE))?;
        load_optimizer(&mut opt, &dir.join(OPTIMIZER_FILE), state.step)?;
        sampler = state.sampler.clone();
        dropout_rng = state.dropout_rng.clone();
        step = state.step;
    }
    // After initialising or loading: the bf16 shadow is rounded from the final master weights.
    model.set_precision(cfg.precision);
    if let Some(w) = cfg.precision.warning() {
        if !opts.quiet {
            eprintln!("{w}");
        }
    }
    let (n_decay, n_no_decay) = model.layout().decay_counts();
    let metrics_path = cfg.out.join("metrics.jsonl");
    let mut metrics = if opts.resume {
        read_metrics(&metrics_path, step)
    } else {
        Vec::new()
    };
    let mut metrics_text: String = metrics
        .iter()
        .filter_map(|m| serde_json::to_string(m).ok())
        .map(|l| l + "\n")
        .collect();
    if !opts.quiet && !opts.json {
        eprintln!(
            "gpt train: preset {} ({} layers, {} heads, width {}, context {}), {:.2}M parameters ({:.2}M decayed, {:.2}M not), {} threads, precision {}",
            cfg.preset,
            mcfg.n_layer,
            mcfg.n_head,
            mcfg.n_embd,
            mcfg.n_ctx,
            model.layout().total() as f64 / 1e6,
            n_decay as f64 / 1e6,
            n_no_decay as f64 / 1e6,
            crate::threads::current(),
            cfg.precision.describe()
        );
        eprintln!(
            "data: {} train / {} val tokens, vocabulary {}; out: {}{}",
            data.train.len(),
            data.val.len(),
            data.tokenizer.vocab_size(),
            cfg.out.display(),
            if opts.resume {
                format!("; resuming at step {step}")
            } else {
                String::new()
            }
        );
    }
    let bar = if opts.quiet || opts.json {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(cfg.max_steps as u64);
        let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_position(step as u64);
        bar
    };
    let mut outcome = TrainOutcome::default();
    let mut batch = Batch::default();
    let tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum;
    let mut rates = Vec::new();
    let mut val_loss = None;
    let save =
        |model: &Gpt, opt: &AdamW, sampler: &BatchSampler, rng: &Rng, step: usize| -> Result<()> {
            let state = TrainerState {
                version: 1,
                step,
                sampler: sampler.clone(),
                dropout_rng: rng.clone(),
                config: cfg.clone(),
                model: mcfg.clone(),
            };
            save_checkpoint(&cfg.out, model, opt, &state, &data.tokenizer)
        };
    while step < cfg.max_steps {
        let t0 = Instant::now();
        let lr = warmup_cosine(step, cfg.lr, cfg.min_lr(), cfg.warmup_steps, cfg.max_steps);
        model.params.zero_grad();
        let mut loss = 0.0f32;
        for _ in 0..cfg.grad_accum {
            sampler.next(&data.train, &mut batch);
            let scale = 1.0 / cfg.grad_accum as f32;
            loss += scale
                * model.forward_backward(
                    &batch.ids,
                    &batch.targets,
                    cfg.batch_size,
                    cfg.block_size,
                    0.0,
                    scale,
                    &mut dropout_rng,
                )?;
        }
        if !loss.is_finite() {
            bar.abandon();
            return Err(Error::Msg(format!(
                "loss is {loss} at step {}; stopped. The last good checkpoint is in {} (try a lower --lr)",
                step + 1,
                cfg.out.join(CHECKPOINT_DIR).display()
            )));
        }
        let grad_norm = if cfg.grad_clip > 0.0 {
            clip_grad_norm(&mut model.params.grad, cfg.grad_clip)
        } else {
            crate::kernels::adamw::global_grad_norm(&model.params.grad)
        };
        opt.update(&mut model.params, lr);
        model.refresh_bf16_weights();
        step += 1;
        let rate = tokens_per_step as f64 / t0.elapsed().as_secs_f64();
        rates.push(rate);
        outcome.losses.push(loss);
        let eval_now = step % cfg.eval_interval == 0 || step == cfg.max_steps;
        if eval_now {
            val_loss = estimate_loss(&mut model, &data.val, &cfg)?;
        }
        let m = Metric {
            step,
            loss,
            lr,
            grad_norm,
            tokens_per_sec: rate,
            val_loss: if eval_now { val_loss } else { None },
        };
        if opts.json {
            println!(
                "{}",
                serde_json::to_string(&m).map_err(|e| Error::Msg(e.to_string()))?
            );
        }
        if let Ok(line) = serde_json::to_string(&m) {
            metrics_text.push_str(&line);
            metrics_text.push('\n');
        }
        metrics.push(m);
        bar.set_position(step as u64);
        let vl = val_loss.map(|v| format!(" val {v:.4}")).unwrap_or_default();
        bar.set_message(format!("loss {loss:.4}{vl} {:.0} tok/s", rate));
        let interrupted = opts
            .interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst));
        let stop = interrupted || opts.stop_at == Some(step);
        if step % cfg.ckpt_interval == 0 || step == cfg.max_steps || stop {
            save(&model, &opt, &sampler, &dropout_rng, step)?;
            write_atomic(&metrics_path, metrics_text.as_bytes())?;
            plot_losses(
                &cfg.out.join("loss.png"),
                &metrics
                    .iter()
                    .map(|m| (m.step, m.loss, m.val_loss))
                    .collect::<Vec<_>>(),
            )?;
        }
        if stop && step < cfg.max_steps {
            outcome.stopped_early = true;
            if !opts.quiet {
                bar.abandon();
                eprintln!("stopped at step {step}; checkpoint saved. Continue with --resume");
            }
            break;
        }
    }
    bar.finish_and_clear();
    rates.sort_by(f64::total_cmp);
    outcome.step = step;
    outcome.val_loss = val_loss;
    outcome.tokens_per_sec = rates.get(rates.len() / 2).copied().unwrap_or(0.0);
    if !opts.quiet && !opts.json {
        eprintln!(
            "step {step}: loss {:.4}{}, median {:.0} tokens/s; checkpoint in {}",
            outcome.losses.last().copied().unwrap_or(f32::NAN),
            val_loss
                .map(|v| format!(", val loss {v:.4}"))
                .unwrap_or_default(),
            outcome.tokens_per_sec,
            cfg.out.join(CHECKPOINT_DIR).display()
        );
    }
    if cfg.sample_tokens > 0 && !outcome.stopped_early {
        let text = sample_text(
            &mut model,
            &data.tokenizer,
            "\n",
            cfg.sample_tokens,
            cfg.seed,
        )?;
        if !opts.quiet && !opts.json {
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
        .map_err(|e| Error::Msg(format!("prompt: {e}")))?;
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
                .map_err(|e| Error::Msg(e.to_string()))?,
        );
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
