//! `gpt logs train`, `gpt logs detect` and `gpt logs eval`: flags in, a [`gpt::logs`] call,
//! results out.

use super::interrupt::StopSignal;
use super::CliResult;
use gpt::error::Error;
use gpt::logs::detect::Rule;
use gpt::logs::metrics::{pr_auc, roc_auc, Confusion};
use gpt::logs::model::LogModel;
use gpt::logs::sessions::{read_sessions, Session};
use gpt::logs::train::{train_logs, LogTrainConfig};
use serde_json::json;
use std::path::PathBuf;

/// `gpt logs train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Normal sessions: one per line, log keys separated by spaces (DeepLog's format).
    #[arg(long, required_unless_present = "parsed", conflicts_with = "parsed")]
    pub sessions: Option<PathBuf>,
    /// A `gpt logs parse` directory of normal logs: its lines' templates become the keys
    /// (written to PARSED/sessions.txt), its parser is kept with the model for `detect --input`.
    #[arg(long)]
    pub parsed: Option<PathBuf>,
    /// With --parsed: a regex whose matches in a line name the sessions the line belongs to
    /// (e.g. 'blk_-?\d+' for HDFS blocks); without it the log is one stream.
    #[arg(long, requires = "parsed")]
    pub session_key: Option<String>,
    /// Normal validation sessions (default: the last --valid-fraction of --sessions).
    #[arg(long)]
    pub valid: Option<PathBuf>,
    /// Share of --sessions held out for validation (the surprisal threshold) without --valid.
    #[arg(long, default_value_t = 0.1)]
    pub valid_fraction: f64,
    /// Output directory; the model is OUT/checkpoint.
    #[arg(long)]
    pub out: PathBuf,
    /// The file is one stream of keys (e.g. a log's template ids in order), not sessions:
    /// no end-of-session token, and items are positions.
    #[arg(long)]
    pub stream: bool,
    /// Context of the model in keys (the history each prediction can see).
    #[arg(long, default_value_t = 10)]
    pub window: usize,
    /// Transformer blocks.
    #[arg(long, default_value_t = 1)]
    pub layers: usize,
    /// Width.
    #[arg(long, default_value_t = 32)]
    pub width: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    /// Dropout in training.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
    /// Weight decay (AdamW).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Passes over the training windows.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Windows per step.
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f32,
    /// DeepLog's g, saved with the model.
    #[arg(long, default_value_t = 9)]
    pub top_g: usize,
    /// False-positive rate on validation sessions that the surprisal threshold is chosen for.
    #[arg(long, default_value_t = 0.01)]
    pub target_fpr: f64,
    /// Seed of the initialisation and the data order.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// One JSON object per line instead of a progress bar.
    #[arg(long)]
    pub json: bool,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Replace a run already in --out.
    #[arg(long)]
    pub overwrite: bool,
}

/// Flags of the detectors.
#[derive(clap::Args, Debug)]
pub struct DetectorArgs {
    /// A model made by `gpt logs train` (its directory or OUT/checkpoint).
    #[arg(long)]
    pub model: PathBuf,
    /// topg (DeepLog's rule) or surprisal (NLL above the threshold chosen on validation).
    #[arg(long, default_value = "topg")]
    pub detector: String,
    /// DeepLog's g (default: the model's, 9 unless trained otherwise).
    #[arg(long)]
    pub top_g: Option<usize>,
    /// Surprisal threshold in nats (default: the one chosen in training).
    #[arg(long)]
    pub threshold: Option<f64>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `gpt logs detect`.
#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Sessions to check (one per line).
    #[arg(long, required_unless_present = "input", conflicts_with = "input")]
    pub sessions: Option<PathBuf>,
    /// A raw log, read with the parser and session rule of a model trained with --parsed
    /// (lines of templates the parser never saw get the key `unseen`, always flagged).
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Print only the anomalous sessions.
    #[arg(long)]
    pub anomalous_only: bool,
}

/// `gpt logs eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub detector: DetectorArgs,
    /// Normal test sessions.
    #[arg(long)]
    pub normal: PathBuf,
    /// Anomalous test sessions.
    #[arg(long)]
    pub abnormal: PathBuf,
}

/// Runs `gpt logs train`.
pub fn run_train(a: TrainArgs) -> CliResult {
    let source = gpt::logs::parsed::LogSource {
        session_key: a.session_key.clone(),
    };
    let (sessions, end_token) = match (&a.sessions, &a.parsed) {
        (Some(s), _) => (s.clone(), !a.stream),
        (None, Some(dir)) => (
            sessions_file_of_parse(dir, &source)?,
            source.session_key.is_some() && !a.stream,
        ),
        (None, None) => {
            return Err(Error::field("--sessions", "give --sessions FILE or --parsed DIR").into())
        }
    };
    let cfg = LogTrainConfig {
        sessions,
        valid: a.valid,
        valid_fraction: a.valid_fraction,
        out: a.out,
        end_token,
        window: a.window,
        n_layer: a.layers,
        n_embd: a.width,
        n_head: a.heads,
        epochs: a.epochs,
        dropout: a.dropout,
        weight_decay: a.weight_decay,
        max_steps: a.max_steps,
        batch_size: a.batch_size,
        lr: a.lr,
        top_g: a.top_g,
        target_fpr: a.target_fpr,
        seed: a.seed,
        ..LogTrainConfig::default()
    };
    let stop = StopSignal::for_training();
    let opts = stop.train_options(a.json, a.resume, a.overwrite);
    let o = train_logs(&cfg, &opts)?;
    if !gpt::dist::World::current().is_root() {
        // Rank 0 reports and writes what follows the run.
        return Ok(());
    }
    let dir = o.train.checkpoint.clone().unwrap_or(cfg.out.clone());
    if let Some(parsed) = &a.parsed {
        source.save_with_parser(parsed, &dir)?;
    }
    stop.exit_if_stopped(o.train.stopped_early);
    if a.json {
        println!(
            "{}",
            json!({
                "step": o.train.step, "loss": o.train.losses.last(), "val_loss": o.train.val_loss,
                "sessions": o.sessions, "windows": o.windows, "valid_sessions": o.valid,
                "keys": o.keys, "threshold": o.detector.threshold, "top_g": o.detector.top_g,
                "target_fpr": o.detector.target_fpr, "train_seconds": o.train.train_seconds,
                "model": dir,
            })
        );
    } else {
        eprintln!(
            "trained on {} sessions ({} windows), {} keys; validation loss {}; surprisal threshold {} (target false-positive rate {} on {} validation {}); model in {}",
            o.sessions,
            o.windows,
            o.keys,
            o.train.val_loss.map_or("-".into(), |v| format!("{v:.4}")),
            o.detector.threshold.map_or("none (no validation data)".into(), |t| format!("{t:.3} nats")),
            o.detector.target_fpr,
            o.valid,
            if cfg.end_token { "sessions" } else { "streams" },
            dir.display()
        );
    }
    Ok(())
}

/// Writes the sessions of a parse directory to `DIR/sessions.txt` (the run reads it, and reads
/// it again on --resume) and returns its path.
fn sessions_file_of_parse(
    dir: &std::path::Path,
    source: &gpt::logs::parsed::LogSource,
) -> Result<PathBuf, Error> {
    let (sessions, without) =
        gpt::logs::parsed::sessions_from_parsed(dir, source.regex()?.as_ref())?;
    if sessions.is_empty() {
        return Err(Error::file(
            &dir.join(gpt::logs::output::STRUCTURED_CSV),
            "no session: no line matches --session-key",
        ));
    }
    if without > 0 {
        eprintln!("{without} lines name no session (--session-key) and are left out");
    }
    let text = gpt::logs::sessions::sessions_text(&sessions);
    let path = dir.join("sessions.txt");
    gpt::io::write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

fn load(a: &DetectorArgs) -> Result<(LogModel, Rule, usize, f64), Error> {
    let model = LogModel::load(&a.model)?;
    let rule = Rule::parse(&a.detector)?;
    let top_g = a.top_g.unwrap_or(model.settings.top_g);
    if top_g == 0 {
        return Err(Error::field("--top-g", "must be at least 1"));
    }
    let threshold = match rule {
        Rule::Surprisal => model.threshold(a.threshold)?,
        Rule::TopG => f64::INFINITY,
    };
    Ok((model, rule, top_g, threshold))
}

fn sessions_of(path: &std::path::Path) -> Result<Vec<Session>, Error> {
    let (s, _) = read_sessions(path)?;
    if s.is_empty() {
        return Err(Error::file(path, "no session (every line is empty)"));
    }
    Ok(s)
}

/// Runs `gpt logs detect`.
pub fn run_detect(a: DetectArgs) -> CliResult {
    let (mut model, rule, top_g, threshold) = load(&a.detector)?;
    let sessions = match (&a.sessions, &a.input) {
        (Some(s), _) => sessions_of(s)?,
        (None, Some(log)) => {
            let (source, parser) = gpt::logs::parsed::LogSource::load_with_parser(&model.dir)?;
            let text = gpt::io::read_text(log)?;
            let (s, without) =
                gpt::logs::parsed::sessions_from_log(&parser, &text, source.regex()?.as_ref());
            if without > 0 {
                eprintln!("{without} lines name no session and are left out");
            }
            if s.is_empty() {
                return Err(Error::file(log, "no session in the log").into());
            }
            s
        }
        (None, None) => {
            return Err(Error::field("--sessions", "give --sessions FILE or --input LOG").into())
        }
    };
    let verdicts = model.detect(&sessions, rule, top_g, threshold)?;
    let mut out = String::new();
    let (mut anomalous, mut unseen) = (0, 0);
    for (s, v) in sessions.iter().zip(&verdicts) {
        anomalous += v.anomalous as usize;
        unseen += !v.unseen.is_empty() as usize;
        if a.anomalous_only && !v.anomalous {
            continue;
        }
        if a.detector.json {
            let mut o = serde_json::to_value(v)?;
            match &s.id {
                Some(id) => o["session"] = json!(id),
                None => o["line"] = json!(s.line),
            }
            o["detector"] = json!(rule.name());
            out.push_str(&o.to_string());
        } else {
            out.push_str(&format!(
                "{}: {}",
                s.id.as_ref()
                    .map_or(format!("line {}", s.line), |id| format!("session {id}")),
                if v.anomalous { "ANOMALOUS" } else { "normal" }
            ));
            for f in &v.flags {
                out.push_str(&format!(
                    "; at {} `{}`{} (expected {})",
                    f.position,
                    f.key,
                    if v.unseen.contains(&f.key) {
                        ", unseen in training"
                    } else {
                        ""
                    },
                    f.expected.join(" ")
                ));
            }
        }
        out.push('\n');
    }
    print!("{out}");
    // The summary goes to standard error after every verdict is out.
    std::io::Write::flush(&mut std::io::stdout())?;
    eprintln!(
        "{} of {} sessions anomalous ({}: {}), {} with keys unseen in training (always flagged)",
        anomalous,
        sessions.len(),
        rule.name(),
        match rule {
            Rule::TopG => format!("g = {top_g}"),
            Rule::Surprisal => format!("threshold {threshold:.3} nats"),
        },
        unseen
    );
    Ok(())
}

/// Runs `gpt logs eval`: precision, recall, F1, false-positive rate, ROC-AUC and PR-AUC.
pub fn run_eval(a: EvalArgs) -> CliResult {
    let (mut model, rule, top_g, threshold) = load(&a.detector)?;
    let normal = sessions_of(&a.normal)?;
    let abnormal = sessions_of(&a.abnormal)?;
    let mut all = normal.clone();
    all.extend(abnormal.iter().cloned());
    let labels: Vec<bool> = (0..all.len()).map(|i| i >= normal.len()).collect();
    let session_scores = model.session_scores(&all, rule)?;
    let flags: Vec<bool> = session_scores
        .iter()
        .map(|&s| gpt::logs::detect::flagged(rule, s, top_g, threshold))
        .collect();
    let c = Confusion::of(&flags, &labels);
    let (roc, pr) = (
        roc_auc(&session_scores, &labels),
        pr_auc(&session_scores, &labels),
    );
    let how = match rule {
        Rule::TopG => format!("top-g rule, g = {top_g}"),
        Rule::Surprisal if a.detector.threshold.is_some() => "given by --threshold".to_string(),
        Rule::Surprisal => format!(
            "chosen in training for a false-positive rate of {} on {} normal validation sessions",
            model.settings.target_fpr, model.settings.valid_sessions
        ),
    };
    if a.detector.json {
        println!(
            "{}",
            json!({
                "detector": rule.name(), "precision": c.precision(), "recall": c.recall(),
                "f1": c.f1(), "fpr": c.fpr(), "roc_auc": roc, "pr_auc": pr,
                "threshold": match rule { Rule::TopG => top_g as f64, Rule::Surprisal => threshold },
                "threshold_how": how, "tp": c.tp, "fp": c.fp, "fn": c.fn_, "tn": c.tn,
                "normal": normal.len(), "abnormal": abnormal.len(),
            })
        );
    } else {
        println!(
            "{}: precision {:.4}, recall {:.4}, F1 {:.4}, false-positive rate {:.4} (TP {}, FP {}, FN {}, TN {}); ROC-AUC {}, PR-AUC {}; threshold {} ({how})",
            rule.name(),
            c.precision(),
            c.recall(),
            c.f1(),
            c.fpr(),
            c.tp,
            c.fp,
            c.fn_,
            c.tn,
            roc.map_or("-".into(), |v| format!("{v:.4}")),
            pr.map_or("-".into(), |v| format!("{v:.4}")),
            match rule {
                Rule::TopG => top_g.to_string(),
                Rule::Surprisal => format!("{threshold:.3} nats"),
            },
        );
    }
    Ok(())
}
