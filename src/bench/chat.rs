//! `gpt bench chat`: training steps/s of `gpt sft` and `gpt dpo` (the commands users run, each
//! in a fresh process of this binary) beside TRL's `SFTTrainer` and `DPOTrainer`
//! (`bench/chat_trl.py`) on the same chat model, the same batches, hyper-parameters and threads,
//! in one run.
//!
//! The same work on both sides:
//! - one model directory: a chat model (weights, tokenizer with the role tokens, template in
//!   `tokenizer_config.json`); a model without a template is first made one by a one-step
//!   `gpt sft`, as a user would;
//! - the same batches: this process reads the data file with our reader and keeps the first
//!   `(steps + 2) · batch` usable records, written in TRL's record schema (conversational
//!   `messages`, or `prompt`/`chosen`/`rejected` as message lists; `gpt sft` and `gpt dpo` read
//!   it too) twice: as they come for ours, which visits them in its seeded epoch order, and in
//!   that order for TRL, which reads them sequentially. The first step's loss, printed for both
//!   sides, checks it. Both compute DPO's reference log-probabilities on just these records;
//! - the same recipe: learning rate, warm-up steps, linear decay, AdamW (0.9, 0.999, 1e-8), no
//!   weight decay, clip 1.0, dropout off, context = the model's, f32; SFT trains the assistant
//!   tokens only, DPO is sigmoid with β 0.1 and reference log-probabilities computed once
//!   before the first step on both sides (ours always does; TRL's `precompute_ref_log_probs`).
//!
//! Each side prints one JSON line per optimizer step with the step's real tokens; this process
//! stamps each line as it arrives ([`stamp_steps`]), so both are timed the same way, and a
//! run's rates are over steps 3.. (the first two warm up). The sides alternate `runs` times and
//! the medians are compared, beside the f32 matmul peak measured in the same run.

use super::harness::{
    current_exe, find_python, matmul_peak_gflops, median, random_gpt2_base, rate_after_warmup,
    run_peer, script, stamp_steps, StampedStep, PYTHON_HINT,
};
use crate::chat::encode::{ChatEncoder, Cuts};
use crate::chat::records::{read_preferences, read_sft, PreferencePair, Prompt, SftRecord};
use crate::chat::sft::encode_sft_record;
use crate::chat::template::TOKENIZER_CONFIG_FILE;
use crate::chat::{ChatTemplate, ChatTrainConfig, Message, Method, Role};
use crate::error::{Error, Result};
use crate::optim::Schedule;
use crate::train::epoch_order::EpochOrder;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Which trainings `gpt bench chat` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// `gpt sft` against `SFTTrainer`.
    Sft,
    /// `gpt dpo` against `DPOTrainer`.
    Dpo,
    /// Both, SFT first.
    Both,
}

impl Which {
    /// `sft`, `dpo` or `both`.
    pub fn parse(s: &str) -> Result<Which> {
        match s {
            "sft" => Ok(Which::Sft),
            "dpo" => Ok(Which::Dpo),
            "both" => Ok(Which::Both),
            _ => Err(Error::field(
                "--which",
                format!("`{s}` is not one of sft, dpo, both"),
            )),
        }
    }

    fn methods(self) -> &'static [Method] {
        match self {
            Which::Sft => &[Method::Sft],
            Which::Dpo => &[Method::Dpo],
            Which::Both => &[Method::Sft, Method::Dpo],
        }
    }
}

/// Settings of `gpt bench chat`.
#[derive(Clone, Debug)]
pub struct ChatBench {
    /// A chat model, or a base model (made a chat model by a one-step `gpt sft`); `None`: a
    /// random GPT-2-style model ([`default_base`]) with the GPT-2 tokenizer.
    pub model: Option<PathBuf>,
    /// Which trainings.
    pub which: Which,
    /// SFT demonstrations (JSONL); `None`: the instruction suite of `gpt sft suite`.
    pub data: Option<PathBuf>,
    /// DPO preference pairs (JSONL).
    pub pairs: PathBuf,
    /// Timed optimizer steps per run (after two warm-up steps).
    pub steps: usize,
    /// Alternating runs per side (medians reported).
    pub runs: usize,
    /// Examples (SFT) or pairs (DPO) per step.
    pub batch_size: usize,
    /// SFT with packed rows (ours `--packing`, TRL `padding_free`).
    pub packing: bool,
    /// Also run TRL.
    pub vs_trl: bool,
    /// Python interpreter with TRL.
    pub python: Option<PathBuf>,
}

/// The default model: GPT-2's architecture and tokenizer at 4 layers, 4 heads, width 256,
/// context 256 (about 16M parameters, 12.9M of them the token embedding).
pub fn default_base() -> crate::model::GptConfig {
    crate::model::GptConfig {
        n_ctx: 256,
        n_layer: 4,
        n_head: 4,
        n_embd: 256,
        dropout: 0.0,
        ..crate::model::GptConfig::gpt2()
    }
}

/// The preference pairs of the repository (`data/chat/...`), else the shared copy.
pub fn default_pairs() -> PathBuf {
    let repo = Path::new("data/chat/hh_rlhf_harmless/train.jsonl");
    let shared = Path::new("/work/shared/data/chat/hh_rlhf_harmless/train.jsonl");
    if !repo.exists() && shared.exists() {
        return shared.to_path_buf();
    }
    repo.to_path_buf()
}

/// One run of one side: rates over steps 3.. and the first step's loss.
#[derive(Clone, Copy, Debug)]
struct SideRun {
    steps: f64,
    tokens: f64,
    first_loss: f64,
}

/// Times `cmd`: a step line carries `step` and `tokens` (our summary line has neither
/// `tokens`, TRL's other lines no `step`).
fn side_run(cmd: &mut Command) -> Result<SideRun> {
    let steps: Vec<StampedStep> = stamp_steps(cmd, |v| {
        v.get("step").is_some() && v.get("tokens").is_some()
    })?;
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    Ok(SideRun {
        steps: rate_after_warmup(&steps, |_, _| 1.0),
        tokens: rate_after_warmup(&steps, |_, v| field(v, "tokens")),
        first_loss: field(&steps[0].line, "loss"),
    })
}

/// The records our side trains on in its first `n_steps` steps, in its order, in TRL's record
/// schema, one JSON line each (TRL reads them sequentially, `batch` lines a step). An error
/// when a step would get the short last batch of an epoch, which TRL would batch differently.
fn in_our_order(records: &[Value], seed: u64, batch: usize, n_steps: usize) -> Result<String> {
    let mut order = EpochOrder::new(records.len(), seed);
    let mut out = String::new();
    for step in 1..=n_steps {
        let picked = order.next(batch);
        if picked.len() < batch {
            return Err(Error::field(
                "--batch-size",
                format!(
                    "step {step} would get the last {} of the {} records of an epoch, not {batch}; choose --steps and --batch-size so that no step ends an epoch early",
                    picked.len(),
                    records.len()
                ),
            ));
        }
        for i in picked {
            out.push_str(&records[i].to_string());
            out.push('\n');
        }
    }
    Ok(out)
}

fn messages(turns: &[Message]) -> Value {
    json!(turns)
}

/// A demonstration in TRL's schema: `messages` (conversational) or `prompt`/`completion`.
fn trl_demonstration(r: &SftRecord) -> Value {
    match r {
        SftRecord::Chat(turns) => json!({ "messages": messages(turns) }),
        SftRecord::Text { prompt, completion } => {
            json!({ "prompt": prompt, "completion": completion })
        }
    }
}

/// A preference pair in TRL's schema: conversational (`prompt` turns, each answer one assistant
/// message) for a chat prompt, plain text otherwise.
fn trl_pair(p: &PreferencePair) -> Value {
    match &p.prompt {
        Prompt::Chat(turns) => {
            let answer = |a: &str| messages(&[Message::new(Role::Assistant, a)]);
            json!({
                "prompt": messages(turns),
                "chosen": answer(&p.chosen),
                "rejected": answer(&p.rejected),
            })
        }
        Prompt::Text(t) => json!({ "prompt": t, "chosen": p.chosen, "rejected": p.rejected }),
    }
}

/// What both sides are given for one training.
struct Work {
    method: Method,
    /// The data file the records came from.
    source: PathBuf,
    /// Usable records in it.
    n_source: usize,
    /// The records of the run, in TRL's schema, for our side (which shuffles them).
    ours: PathBuf,
    /// The same records in the order our side visits them, for TRL.
    trl: PathBuf,
    cfg: ChatTrainConfig,
    warmup: usize,
}

/// Reads the usable records of `method` in `data` (those our side trains on: a demonstration
/// with nothing to train within `n_ctx` is skipped, as `gpt sft` skips it) in TRL's schema.
fn trl_records(
    cfg: &ChatTrainConfig,
    data: &Path,
    enc: &ChatEncoder,
    n_ctx: usize,
) -> Result<Vec<Value>> {
    Ok(match cfg.method {
        Method::Sft => {
            let mut cuts = Cuts::default();
            let mut kept = Vec::new();
            for r in read_sft(data, false)?.0 {
                if encode_sft_record(&r, enc, n_ctx, cfg.truncation, &mut cuts)?.is_some() {
                    kept.push(trl_demonstration(&r));
                }
            }
            kept
        }
        _ => read_preferences(data, false)?
            .0
            .iter()
            .map(trl_pair)
            .collect(),
    })
}

/// Writes the first `n_steps · batch` usable records of `data` for both sides: as they come for
/// ours, and in our epoch order for TRL (one epoch, whole batches). Both sides then read the
/// same records, ours computes its DPO reference log-probabilities on just those, as TRL does.
fn write_work(
    data: &Path,
    enc: &ChatEncoder,
    n_ctx: usize,
    cfg: ChatTrainConfig,
    n_steps: usize,
    dir: &Path,
) -> Result<Work> {
    let method = cfg.method;
    let records = trl_records(&cfg, data, enc, n_ctx)?;
    let n = n_steps * cfg.batch_size;
    if records.len() < n {
        return Err(Error::field(
            "--steps",
            format!(
                "{n_steps} steps of {} need {n} records; {} has {} usable; use fewer --steps or a smaller --batch-size",
                cfg.batch_size,
                data.display(),
                records.len()
            ),
        ));
    }
    let used = &records[..n];
    let ours = dir.join(format!("ours_{}.jsonl", method.name()));
    let trl = dir.join(format!("trl_{}.jsonl", method.name()));
    let lines: String = used.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&ours, lines).map_err(|e| Error::io(&ours, e))?;
    let ordered = in_our_order(used, cfg.seed, cfg.batch_size, n_steps)?;
    std::fs::write(&trl, ordered).map_err(|e| Error::io(&trl, e))?;
    let warmup = match cfg.loop_config(n_steps, n_steps).schedule {
        Schedule::WarmupLinear { warmup, .. } => warmup,
        _ => 0,
    };
    Ok(Work {
        method,
        source: data.to_path_buf(),
        n_source: records.len(),
        ours,
        trl,
        cfg,
        warmup,
    })
}

/// Runs `gpt bench chat`, printing its report to standard output.
pub fn run(opts: &ChatBench) -> Result<()> {
    for (flag, v) in [
        ("--steps", opts.steps),
        ("--batch-size", opts.batch_size),
        ("--runs", opts.runs),
    ] {
        if v == 0 {
            return Err(Error::field(flag, "must be at least 1"));
        }
    }
    let tmp = std::env::temp_dir().join(format!("gpt-bench-chat-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = run_in(opts, &tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run_in(opts: &ChatBench, tmp: &Path) -> Result<()> {
    let threads = crate::threads::current();
    let exe = current_exe()?;
    let model = match &opts.model {
        Some(m) => crate::model::inference::resolve_dir(m),
        None => {
            let dir = tmp.join("base");
            eprintln!(
                "creating a random GPT-2-style base (4 layers, width 256, context 256, GPT-2 tokenizer) in {} ...",
                dir.display()
            );
            random_gpt2_base(default_base(), &dir)?;
            dir
        }
    };
    let sft_data = match &opts.data {
        Some(d) => d.clone(),
        None => {
            let dir = tmp.join("suite");
            crate::chat::suite::write_suite(&dir, 500, 50, 0)?;
            dir.join("train.jsonl")
        }
    };
    let chat = if ChatTemplate::load(&model)?.is_some() {
        model.clone()
    } else {
        eprintln!(
            "{} has no chat template: one `gpt sft` step on {} makes it a chat model ...",
            model.display(),
            sft_data.display()
        );
        let out = tmp.join("chat");
        let mut cmd = Command::new(&exe);
        cmd.arg("--threads")
            .arg(threads.to_string())
            .arg("sft")
            .arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&sft_data)
            .arg("--out")
            .arg(&out)
            .args(["--max-steps", "1", "--batch-size", "1", "--overwrite"]);
        run_peer(&mut cmd, "")?;
        out.join("checkpoint")
    };
    let config = crate::model::checkpoint::load_config(&chat)?;
    let tok = crate::io::load_tokenizer(&chat)?;
    let origin = chat.join(TOKENIZER_CONFIG_FILE);
    let template = ChatTemplate::load(&chat)?
        .ok_or_else(|| Error::file(&origin, "the chat model has no chat template"))?;
    let enc = ChatEncoder::new(&tok, &template, &origin)?;
    let n_steps = opts.steps + 2;
    let mut work = Vec::new();
    for &method in opts.which.methods() {
        let data = if method == Method::Sft {
            sft_data.clone()
        } else {
            opts.pairs.clone()
        };
        let cfg = ChatTrainConfig {
            batch_size: opts.batch_size,
            packing: opts.packing && method == Method::Sft,
            ..ChatTrainConfig::new(method)
        };
        work.push(write_work(&data, &enc, config.n_ctx, cfg, n_steps, tmp)?);
    }

    let peak = matmul_peak_gflops();
    println!(
        "gpt bench chat: {threads} threads, model {} ({} layers, {} heads, width {}, context {}, vocabulary {}), batch {}, {} timed steps after 2 warm-up, {} runs per side; f32 matmul peak {peak:.1} GFLOP/s (1024x768x3072)",
        chat.display(),
        config.n_layer,
        config.n_head,
        config.n_embd,
        config.n_ctx,
        config.vocab_size,
        opts.batch_size,
        opts.steps,
        opts.runs,
    );
    let python = find_python(opts.python.as_deref());
    let out_dir = tmp.join("run");
    for w in &work {
        let c = &w.cfg;
        println!(
            "{}: the first {} of the {} usable records of {}, lr {}, warm-up {} steps then linear to 0{}; TRL {}",
            w.method.name(),
            n_steps * c.batch_size,
            w.n_source,
            w.source.display(),
            c.lr,
            w.warmup,
            match w.method {
                Method::Sft if c.packing => ", packed rows (TRL padding_free)".to_string(),
                Method::Sft => ", padded rows, assistant tokens trained".to_string(),
                _ => format!(", sigmoid loss, β {}, reference log-probs precomputed", c.beta),
            },
            if w.method == Method::Sft {
                "SFTTrainer"
            } else {
                "DPOTrainer"
            },
        );
        let ours = || -> Result<SideRun> {
            let mut cmd = Command::new(&exe);
            cmd.arg("--threads")
                .arg(threads.to_string())
                .arg(w.method.name())
                .arg("--model")
                .arg(&chat)
                .arg("--data")
                .arg(&w.ours)
                .arg("--out")
                .arg(&out_dir)
                .args(["--max-steps", &n_steps.to_string()])
                .args(["--batch-size", &c.batch_size.to_string()])
                .args(["--lr", &c.lr.to_string()])
                .args(["--warmup-ratio", &c.warmup_ratio.to_string()])
                // One checkpoint, after the last timed step.
                .args(["--eval-every", &n_steps.to_string()])
                .args(["--json", "--overwrite"]);
            if w.method == Method::Dpo {
                cmd.args(["--beta", &c.beta.to_string(), "--loss", "sigmoid"]);
            }
            if c.packing {
                cmd.arg("--packing");
            }
            side_run(&mut cmd)
        };
        let trl = || -> Result<SideRun> {
            let mut cmd = Command::new(&python);
            cmd.arg(script("chat_trl.py"))
                .args(["--method", w.method.name()])
                .arg("--model")
                .arg(&chat)
                .arg("--data")
                .arg(&w.trl)
                .arg("--out")
                .arg(tmp.join("trl"))
                .args(["--max-steps", &n_steps.to_string()])
                .args(["--batch-size", &c.batch_size.to_string()])
                .args(["--lr", &c.lr.to_string()])
                .args(["--warmup-steps", &w.warmup.to_string()])
                .args(["--beta", &c.beta.to_string()])
                .args(["--seed", &c.seed.to_string()])
                .args(["--threads", &threads.to_string()]);
            if c.packing {
                cmd.arg("--padding-free");
            }
            side_run(&mut cmd).map_err(|e| match e {
                Error::File { path, reason } => Error::File {
                    path,
                    reason: format!("{reason} ({PYTHON_HINT}, transformers and trl)"),
                },
                other => other,
            })
        };
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for run in 1..=opts.runs {
            let o = ours()?;
            mine.push(o);
            let t = if opts.vs_trl { Some(trl()?) } else { None };
            theirs.extend(t);
            println!(
                "run {run}: ours {:.2} steps/s ({:.0} tokens/s, step-1 loss {:.4}){}",
                o.steps,
                o.tokens,
                o.first_loss,
                t.map_or(String::new(), |t| format!(
                    ", TRL {:.2} steps/s ({:.0} tokens/s, step-1 loss {:.4})",
                    t.steps, t.tokens, t.first_loss
                ))
            );
        }
        let med = |v: &[SideRun], f: fn(&SideRun) -> f64| -> f64 {
            median(&mut v.iter().map(f).collect::<Vec<_>>())
        };
        let b = c.batch_size as f64;
        let (s, k) = (med(&mine, |r| r.steps), med(&mine, |r| r.tokens));
        let what = if w.method == Method::Sft {
            "examples"
        } else {
            "pairs"
        };
        if theirs.is_empty() {
            println!(
                "{} median: ours {s:.2} steps/s, {:.1} {what}/s, {k:.0} tokens/s",
                w.method.name(),
                s * b
            );
        } else {
            let (ts, tk) = (med(&theirs, |r| r.steps), med(&theirs, |r| r.tokens));
            println!(
                "{} medians: ours {s:.2} steps/s, {:.1} {what}/s, {k:.0} tokens/s; TRL {ts:.2} steps/s, {:.1} {what}/s, {tk:.0} tokens/s; ratio {:.2}x steps/s, {:.2}x tokens/s",
                w.method.name(),
                s * b,
                ts * b,
                s / ts,
                k / tk
            );
        }
    }
    if opts.vs_trl {
        println!("ratio = ours / TRL (above 1: we are faster)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trl_gets_our_order_in_whole_batches() {
        let records: Vec<Value> = (0..10).map(|i| json!({ "i": i })).collect();
        let text = in_our_order(&records, 7, 3, 3).unwrap();
        let got: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["i"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        let mut order = EpochOrder::new(10, 7);
        let want: Vec<i64> = (0..3)
            .flat_map(|_| order.next(3))
            .map(|i| i as i64)
            .collect();
        assert_eq!(got, want);
        // The 4th step of 3 would get the epoch's last record only.
        let e = in_our_order(&records, 7, 3, 4).unwrap_err().to_string();
        assert!(e.contains("step 4 would get the last 1"), "{e}");
        // Batches of 5 divide the epoch: the next one continues in epoch 2.
        assert_eq!(in_our_order(&records, 7, 5, 3).unwrap().lines().count(), 15);
    }

    #[test]
    fn hh_pairs_become_trl_conversational_records() {
        let p = PreferencePair {
            prompt: Prompt::Chat(vec![Message::new(Role::User, "Hi")]),
            chosen: "Hello".into(),
            rejected: "Go away".into(),
            line: 1,
        };
        assert_eq!(
            trl_pair(&p),
            json!({
                "prompt": [{"role": "user", "content": "Hi"}],
                "chosen": [{"role": "assistant", "content": "Hello"}],
                "rejected": [{"role": "assistant", "content": "Go away"}],
            })
        );
    }
}
