//! `gpt sft`, `gpt reward` (with `reward eval` and `reward score`) and `gpt dpo`: flags in, a
//! [`gpt::chat`] training call, a summary out.

use super::interrupt::StopSignal;
use super::CliResult;
use gpt::chat::config::{ChatTrainConfig, DpoLoss, Method};
use gpt::chat::encode::{pair_sequence, ChatEncoder, Cuts};
use gpt::chat::model::load_reward_model;
use gpt::chat::pairs::encode_pairs_file;
use gpt::chat::records::{Prompt, SftRecord};
use gpt::chat::reward::{evaluate_reward_model, score_sequences};
use gpt::chat::{dpo, reward, sft, Message, Role};
use gpt::train::TrainOptions;
use serde_json::json;
use std::path::PathBuf;

/// Flags every chat training shares.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// The model to start from: a base model (ours or a Hugging Face GPT-2 directory with its
    /// tokenizer) for `sft`, an SFT model for `reward` and `dpo`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training records (JSONL).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Validation records (JSONL), evaluated once per epoch (or every --eval-every steps).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Output directory; the model is OUT/checkpoint.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Peak learning rate (warm-up over --warmup-ratio of the steps, then linear decay to 0).
    /// Default 1e-4 (sft, reward), 5e-6 (dpo).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Examples (sft) or pairs per optimizer step. Default 8.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Passes over the data. Default 3 (sft, reward), 1 (dpo).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Warm-up as a fraction of the steps. Default 0.03.
    #[arg(long)]
    pub warmup_ratio: Option<f32>,
    /// AdamW weight decay on matrices. Default 0.
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Longest sequence in tokens (default and maximum: the model's context).
    #[arg(long)]
    pub max_len: Option<usize>,
    /// Validate (and checkpoint) every this many steps. Default: once per epoch.
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// Seed (new embedding rows, heads, data order). Default 1337.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip and count malformed records instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// Precision of the matrix products: f32 (default) or bf16.
    #[arg(long)]
    pub precision: Option<String>,
    /// Continue the run in --out from its checkpoint (the saved configuration governs; only
    /// --max-steps, --epochs, --valid and --eval-every may change).
    #[arg(long)]
    pub resume: bool,
    /// Replace a run already in --out.
    #[arg(long)]
    pub overwrite: bool,
    /// Print one JSON object per step, then a summary object.
    #[arg(long)]
    pub json: bool,
}

/// Options of `gpt sft`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SftArgs {
    /// `suite` (write the synthetic instruction suite) or `fewshot` (a base model's k-shot
    /// accuracy on it).
    #[command(subcommand)]
    pub command: Option<SftCommand>,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Pack several demonstrations into each row (positions restart, no attention across
    /// them): the same loss with fewer padded tokens.
    #[arg(long)]
    pub packing: bool,
    /// Which end of an over-long demonstration survives: keep_start (default, TRL's) or
    /// keep_end (the end of a long conversation, with its last answer).
    #[arg(long)]
    pub truncation: Option<String>,
}

/// Subcommands of `gpt sft`.
#[derive(clap::Subcommand, Debug)]
pub enum SftCommand {
    /// Write the synthetic instruction suite (12 task kinds with checkable answers) as
    /// OUT/train.jsonl and OUT/heldout.jsonl (no held-out instruction is in train).
    Suite(SuiteArgs),
    /// Exact-match accuracy of a base model (no chat template) on a held-out suite file,
    /// prompted with k solved examples of the same kind from a train file.
    Fewshot(FewshotArgs),
}

/// Options of `gpt sft suite`.
#[derive(clap::Args, Debug)]
pub struct SuiteArgs {
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Training items per task kind.
    #[arg(long, default_value_t = 500)]
    pub train_per_kind: usize,
    /// Held-out items per task kind.
    #[arg(long, default_value_t = 50)]
    pub heldout_per_kind: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Options of `gpt sft fewshot`.
#[derive(clap::Args, Debug)]
pub struct FewshotArgs {
    /// Base model directory (with its tokenizer).
    #[arg(long)]
    pub model: PathBuf,
    /// Suite file the examples come from.
    #[arg(long)]
    pub train: PathBuf,
    /// Suite file to answer.
    #[arg(long)]
    pub data: PathBuf,
    /// Solved examples per prompt.
    #[arg(long, default_value_t = 3)]
    pub shots: usize,
    /// Print the accuracies as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `gpt reward`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RewardArgs {
    /// `eval` or `score` with a trained reward model.
    #[command(subcommand)]
    pub command: Option<RewardCommand>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Subcommands of `gpt reward`.
#[derive(clap::Subcommand, Debug)]
pub enum RewardCommand {
    /// Pairwise accuracy on preference pairs, beside the length heuristic, and on pairs of
    /// similar length.
    Eval(RewardEvalArgs),
    /// The reward of each {"prompt", "completion"} or {"messages"} record (also `gpt chat
    /// --batch` output: {"messages", "completion"}), and their mean.
    Score(RewardEvalArgs),
}

/// Options of `gpt reward eval` and `gpt reward score`.
#[derive(clap::Args, Debug)]
pub struct RewardEvalArgs {
    /// Reward model directory (`gpt reward --out`, or its checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// Records (JSONL).
    #[arg(long)]
    pub data: PathBuf,
    /// Skip and count malformed records.
    #[arg(long)]
    pub skip_bad: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `gpt dpo`.
#[derive(clap::Args, Debug)]
pub struct DpoArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// β: how strongly the policy is held to the reference. Default 0.1.
    #[arg(long)]
    pub beta: Option<f32>,
    /// sigmoid (DPO), ipo or hinge. Default sigmoid.
    #[arg(long)]
    pub loss: Option<String>,
}

fn required<T: Clone>(v: &Option<T>, flag: &str, method: Method) -> Result<T, gpt::Error> {
    v.clone().ok_or_else(|| {
        gpt::Error::field(
            flag,
            format!(
                "is required (gpt {} --model M --data F --out DIR)",
                method.name()
            ),
        )
    })
}

/// The run's configuration: the defaults of `method`, or with `--resume` the saved one, with
/// the flags read over it.
fn config(a: &CommonArgs, method: Method) -> Result<ChatTrainConfig, gpt::Error> {
    let out = required(&a.out, "--out", method)?;
    let mut c = if a.resume {
        ChatTrainConfig::saved_in(&out)?
    } else {
        ChatTrainConfig {
            model: required(&a.model, "--model", method)?,
            data: required(&a.data, "--data", method)?,
            ..ChatTrainConfig::new(method)
        }
    };
    c.out = out;
    if let Some(m) = &a.model {
        c.model = m.clone();
    }
    if let Some(d) = &a.data {
        c.data = d.clone();
    }
    if let Some(v) = &a.valid {
        c.valid = Some(v.clone());
    }
    if let Some(p) = &a.precision {
        c.precision = gpt::nn::precision::Precision::parse_for("--precision", p)?;
    }
    c.lr = a.lr.unwrap_or(c.lr);
    c.batch_size = a.batch_size.unwrap_or(c.batch_size);
    c.epochs = a.epochs.unwrap_or(c.epochs);
    c.max_steps = a.max_steps.or(c.max_steps);
    c.warmup_ratio = a.warmup_ratio.unwrap_or(c.warmup_ratio);
    c.weight_decay = a.weight_decay.unwrap_or(c.weight_decay);
    c.max_len = a.max_len.or(c.max_len);
    c.eval_every = a.eval_every.or(c.eval_every);
    c.seed = a.seed.unwrap_or(c.seed);
    c.skip_bad |= a.skip_bad;
    Ok(c)
}

fn options(a: &CommonArgs, stop: &StopSignal) -> TrainOptions {
    stop.train_options(a.json, a.resume, a.overwrite)
}

/// Runs `gpt sft`, `gpt sft suite` or `gpt sft fewshot`.
pub fn run_sft(args: SftArgs) -> CliResult {
    match args.command {
        Some(SftCommand::Suite(a)) => {
            let c = gpt::chat::suite::write_suite(
                &a.out,
                a.train_per_kind,
                a.heldout_per_kind,
                a.seed,
            )?;
            eprintln!(
                "wrote {} train and {} held-out instructions to {} ({} held-out draws dropped as already in train{})",
                c.train,
                c.heldout,
                a.out.display(),
                c.dropped,
                if c.short.is_empty() { String::new() } else { format!("; short of held-out items: {}", c.short.join(", ")) }
            );
            return Ok(());
        }
        Some(SftCommand::Fewshot(a)) => return fewshot(a),
        None => {}
    }
    let mut cfg = config(&args.common, Method::Sft)?;
    cfg.packing |= args.packing;
    if let Some(t) = &args.truncation {
        cfg.truncation = gpt::chat::encode::Truncation::parse(t)?;
    }
    let stop = StopSignal::for_training();
    let o = sft::sft(&cfg, &options(&args.common, &stop))?;
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
    if args.common.json {
        println!(
            "{}",
            json!({
                "step": o.train.step, "max_steps": o.max_steps, "loss": o.train.losses.last(),
                "val_loss": o.train.val_loss, "n_train": o.data.examples.len(),
                "n_valid": o.n_valid, "no_assistant": o.data.read.no_assistant,
                "skipped_bad": o.data.read.bad, "cut": o.data.cuts.answer + o.data.cuts.prompt,
                "tokens_per_sec": o.train.tokens_per_sec, "model": dir,
            })
        );
    } else {
        eprintln!(
            "SFT {} steps{}; chat model in {} (try: gpt chat --model {})",
            o.train.step,
            o.train
                .val_loss
                .map(|v| format!(", validation loss {v:.4}"))
                .unwrap_or_default(),
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Runs `gpt reward` (training), `gpt reward eval` or `gpt reward score`.
pub fn run_reward(args: RewardArgs) -> CliResult {
    match args.command {
        Some(RewardCommand::Eval(e)) => return reward_eval(e),
        Some(RewardCommand::Score(e)) => return reward_score(e),
        None => {}
    }
    let cfg = config(&args.common, Method::Reward)?;
    let stop = StopSignal::for_training();
    let o = reward::train_reward(&cfg, &options(&args.common, &stop))?;
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
    if args.common.json {
        println!(
            "{}",
            json!({
                "step": o.train.step, "max_steps": o.max_steps, "loss": o.train.losses.last(),
                "train": o.train_report, "valid": o.valid_report, "n_train": o.data.pairs.len(),
                "identical": o.data.read.identical, "skipped_bad": o.data.read.bad,
                "cut_prompt": o.data.cuts.prompt, "cut_answer": o.data.cuts.answer,
                "model": dir,
            })
        );
    } else {
        let t = &o.train_report;
        eprintln!(
            "reward model: {} steps; train accuracy {:.4} (shorter answer wins: {:.4})",
            o.train.step, t.accuracy, t.shorter_wins
        );
        if let Some(v) = &o.valid_report {
            eprintln!(
                "validation: accuracy {:.4}, loss {:.4}; shorter answer wins {:.4}; {} pairs of similar length: accuracy {:.4}",
                v.accuracy, v.loss, v.shorter_wins, v.similar_length_pairs, v.similar_length_accuracy
            );
        }
        eprintln!("model in {}", dir.display());
    }
    Ok(())
}

fn reward_eval(e: RewardEvalArgs) -> CliResult {
    let mut rm = load_reward_model(&e.model)?;
    let origin = rm.dir.join(gpt::chat::template::TOKENIZER_CONFIG_FILE);
    let enc = ChatEncoder::new(&rm.tokenizer, &rm.template, &origin)?;
    let data = encode_pairs_file(&e.data, &enc, rm.meta.max_len, e.skip_bad)?;
    let r = evaluate_reward_model(&mut rm, &data.pairs)?;
    if e.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} pairs: accuracy {:.4} (loss {:.4}); the shorter answer wins {:.4}; {} pairs of similar length (within 20%): accuracy {:.4}; mean reward chosen {:.3}, rejected {:.3}",
            r.pairs,
            r.accuracy,
            r.loss,
            r.shorter_wins,
            r.similar_length_pairs,
            r.similar_length_accuracy,
            r.mean_chosen,
            r.mean_rejected
        );
    }
    Ok(())
}

/// A record to score: {"prompt": text or messages, "completion": text} or {"messages": [...]}
/// whose last turn is the assistant's answer.
fn scored_record(v: &serde_json::Value) -> Result<(Prompt, String), String> {
    if let Some(c) = v.get("completion").and_then(|c| c.as_str()) {
        return match v.get("prompt") {
            Some(serde_json::Value::String(p)) => match gpt::chat::records::parse_dialogue(p) {
                Some(turns) => Ok((Prompt::Chat(turns), c.trim().to_string())),
                None => Ok((Prompt::Text(p.clone()), c.to_string())),
            },
            Some(p @ serde_json::Value::Array(_)) => Ok((
                Prompt::Chat(gpt::chat::records::messages(p, "prompt")?),
                c.to_string(),
            )),
            Some(_) => Err("`prompt` must be text or a list of messages".into()),
            // `gpt chat --batch` output: the conversation answered and the answer.
            None => match v.get("messages") {
                Some(m) => Ok((
                    Prompt::Chat(gpt::chat::records::messages(m, "messages")?),
                    c.to_string(),
                )),
                None => Err("a record with `completion` needs a `prompt` or `messages`".into()),
            },
        };
    }
    let rec = gpt::chat::records::sft_record(v)?;
    match rec {
        Some(SftRecord::Chat(mut turns)) if turns.last().is_some_and(|m| m.role == Role::Assistant) => {
            let answer: Message = turns.pop().ok_or("empty conversation")?;
            Ok((Prompt::Chat(turns), answer.content))
        }
        _ => Err("expected {\"prompt\", \"completion\"} or {\"messages\"} ending with the assistant's answer".into()),
    }
}

fn reward_score(e: RewardEvalArgs) -> CliResult {
    let mut rm = load_reward_model(&e.model)?;
    let origin = rm.dir.join(gpt::chat::template::TOKENIZER_CONFIG_FILE);
    let text = std::fs::read_to_string(&e.data).map_err(|err| gpt::Error::io(&e.data, err))?;
    let mut seqs = Vec::new();
    let mut cuts = Cuts::default();
    let mut skipped = 0;
    {
        let enc = ChatEncoder::new(&rm.tokenizer, &rm.template, &origin)?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<serde_json::Value>(line)
                .map_err(|err| err.to_string())
                .and_then(|v| scored_record(&v));
            match parsed {
                Ok((prompt, answer)) => {
                    let (p, c) = enc.answer(&prompt, &answer)?;
                    seqs.push(pair_sequence(&p, &c, rm.meta.max_len, &mut cuts).0);
                }
                Err(_) if e.skip_bad => skipped += 1,
                Err(msg) => {
                    return Err(gpt::Error::file(&e.data, format!("line {}: {msg}", i + 1)).into())
                }
            }
        }
    }
    let scores = score_sequences(&mut rm.model, &seqs, rm.meta.pad_token_id, 8)?;
    let mean = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len().max(1) as f64;
    if e.json {
        println!(
            "{}",
            json!({"n": scores.len(), "mean": mean, "scores": scores, "skipped": skipped,
                   "cut_prompt": cuts.prompt, "cut_answer": cuts.answer})
        );
    } else {
        for s in &scores {
            println!("{s:.4}");
        }
        eprintln!("{} answers, mean reward {mean:.4}", scores.len());
    }
    Ok(())
}

/// Runs `gpt dpo`.
pub fn run_dpo(args: DpoArgs) -> CliResult {
    let mut cfg = config(&args.common, Method::Dpo)?;
    cfg.beta = args.beta.unwrap_or(cfg.beta);
    if let Some(l) = &args.loss {
        cfg.loss = DpoLoss::parse(l)?;
    }
    let stop = StopSignal::for_training();
    let o = dpo::dpo(&cfg, &options(&args.common, &stop))?;
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
    let show = |v: &Option<(dpo::DpoMetrics, f64)>| {
        v.map(|(m, kl)| {
            json!({"loss": m.loss, "rewards/chosen": m.chosen,
            "rewards/rejected": m.rejected, "rewards/accuracies": m.accuracies,
            "rewards/margins": m.margins, "kl": kl})
        })
    };
    if args.common.json {
        println!(
            "{}",
            json!({
                "step": o.train.step, "max_steps": o.max_steps, "loss": o.train.losses.last(),
                "valid_before": show(&o.valid_before), "valid_after": show(&o.valid_after),
                "n_train": o.data.pairs.len(), "identical": o.data.read.identical,
                "cut_prompt": o.data.cuts.prompt, "cut_answer": o.data.cuts.answer, "model": dir,
            })
        );
    } else {
        if let (Some((b, _)), Some((a, kl))) = (&o.valid_before, &o.valid_after) {
            eprintln!(
                "validation: rewards/accuracies {:.4} -> {:.4}, margins {:.4} -> {:.4}, loss {:.4} -> {:.4}; KL to the reference {kl:.4} nats per token",
                b.accuracies, a.accuracies, b.margins, a.margins, b.loss, a.loss
            );
        }
        eprintln!("DPO {} steps; model in {}", o.train.step, dir.display());
    }
    Ok(())
}

/// `gpt sft fewshot`: k solved examples of the query's kind (the first k of that kind in the
/// train file), greedy continuation up to the end of the line, exact match.
fn fewshot(a: FewshotArgs) -> CliResult {
    use gpt::chat::suite::{exact_match, few_shot_answer, few_shot_prompt, read_suite};
    use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig};
    let train = read_suite(&a.train)?;
    let data = read_suite(&a.data)?;
    let dir = gpt::model::inference::resolve_dir(&a.model);
    let model = InferenceModel::load(&dir)?;
    let tok = gpt::io::load_tokenizer(&dir)?;
    let n_ctx = model.config.n_ctx;
    let max_new = 16;
    let mut prompts = Vec::with_capacity(data.len());
    for q in &data {
        let shots: Vec<_> = train
            .iter()
            .filter(|t| t.kind == q.kind)
            .take(a.shots)
            .cloned()
            .collect();
        // Fewer shots when k of them do not fit the context.
        let mut k = shots.len();
        loop {
            let ids = tok.encode(&few_shot_prompt(&shots[..k], q), false)?;
            if ids.len() + max_new <= n_ctx || k == 0 {
                prompts.push(ids);
                break;
            }
            k -= 1;
        }
    }
    let cfg = GenerateConfig {
        max_new_tokens: max_new,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let mut tally: std::collections::BTreeMap<String, (usize, usize)> = Default::default();
    for (chunk, items) in prompts.chunks(32).zip(data.chunks(32)) {
        let (gens, _) = generate(&model, chunk, &cfg, |_, _| Ok(false))?;
        for (g, q) in gens.iter().zip(items) {
            let mut stream = gpt::generate::stream::TextStream::new(&tok, &[]);
            for &id in &g.ids {
                stream.push(id)?;
            }
            stream.finish();
            let text = stream.text();
            let right = exact_match(few_shot_answer(text), &q.answer) as usize;
            for k in ["all", q.kind] {
                let e = tally.entry(k.to_string()).or_default();
                e.0 += right;
                e.1 += 1;
            }
        }
    }
    report_tally(&tally, a.json);
    Ok(())
}

/// Prints exact-match accuracy per kind (`all` first).
pub fn report_tally(tally: &std::collections::BTreeMap<String, (usize, usize)>, as_json: bool) {
    let acc = |(r, n): &(usize, usize)| *r as f64 / (*n).max(1) as f64;
    if as_json {
        let m: std::collections::BTreeMap<&String, f64> =
            tally.iter().map(|(k, v)| (k, acc(v))).collect();
        println!(
            "{}",
            json!({"exact_match": m, "n": tally.get("all").map(|t| t.1)})
        );
    } else {
        for (k, v) in tally {
            println!("exact match {k}: {}/{} = {:.4}", v.0, v.1, acc(v));
        }
    }
}
