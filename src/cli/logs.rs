//! `gpt logs ...`: log anomaly detection. `train`, `detect` and `eval` are in
//! [`super::logs_model`]; `gpt logs parse`, Drain template mining, is here:
//!
//! ```text
//! gpt logs parse --input app.log [--format hdfs|bgl|'<Date> <Time> <Level> <Content>']
//!                [--depth 4] [--st 0.5] [--mask REGEX]... --out parsed/
//!                [--truth X_structured.csv] [--json]
//! ```
//! Writes `templates.csv`, `structured.csv`, `summary.json` and `parser.json` into `--out`
//! (see `gpt::logs::output`); with `--truth`, prints loghub's grouping accuracy.

use super::CliResult;
use clap::{Args, Subcommand};
use gpt::logs::grouping::{read_truth, score_against_truth};
use gpt::logs::mask::{MaskRule, Masking};
use gpt::logs::output::{write_parse, AccuracySummary, ParseSummary};
use gpt::logs::preset;
use gpt::logs::LogParser;
use std::path::PathBuf;

/// Log subcommands.
#[derive(Subcommand, Debug)]
pub enum LogsCommand {
    /// Mine templates from a log with Drain (structured CSV, templates, parser state).
    Parse(ParseArgs),
    /// Train a GPT over log keys on normal sessions (DeepLog's format) and choose the
    /// surprisal threshold on validation sessions.
    Train(Box<super::logs_model::TrainArgs>),
    /// Flag anomalous sessions (top-g or surprisal), with the keys the model expected.
    Detect(super::logs_model::DetectArgs),
    /// Precision, recall, F1, ROC-AUC and PR-AUC on normal and anomalous test sessions.
    Eval(super::logs_model::EvalArgs),
}

/// Options of `gpt logs parse`.
#[derive(Args, Debug)]
pub struct ParseArgs {
    /// The log file (UTF-8, one message per line).
    #[arg(long)]
    pub input: PathBuf,
    /// Line format: a preset (hdfs, bgl, hadoop, spark, zookeeper, hpc, thunderbird, windows,
    /// linux, android, healthapp, apache, proxifier, openssh, openstack, mac: loghub's format,
    /// masks, depth and st) or a format string like '<Date> <Time> <Level> <Content>' (generic
    /// masks). Default: the whole line is the content.
    #[arg(long)]
    pub format: Option<String>,
    /// Drain's tree depth (default: the preset's, else 4).
    #[arg(long)]
    pub depth: Option<usize>,
    /// Drain's similarity threshold in [0, 1] (default: the preset's, else 0.5).
    #[arg(long)]
    pub st: Option<f64>,
    /// An extra masking regex, applied after the format's masks (repeatable).
    #[arg(long = "mask")]
    pub masks: Vec<String>,
    /// Output directory (created if needed).
    #[arg(long)]
    pub out: PathBuf,
    /// A loghub `*_structured.csv` of the same log: print the grouping accuracy.
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs a logs subcommand.
pub fn run(cmd: LogsCommand) -> CliResult {
    match cmd {
        LogsCommand::Parse(args) => parse(args),
        LogsCommand::Train(a) => super::logs_model::run_train(*a),
        LogsCommand::Detect(a) => super::logs_model::run_detect(a),
        LogsCommand::Eval(a) => super::logs_model::run_eval(a),
    }
}

fn parse(a: ParseArgs) -> CliResult {
    let mut resolved = preset::resolve(a.format.as_deref())?;
    if let Some(depth) = a.depth {
        resolved.settings.depth = depth;
    }
    if let Some(st) = a.st {
        resolved.settings.st = st;
    }
    for (i, pattern) in a.masks.iter().enumerate() {
        let name = format!("mask_{}", i + 1);
        resolved.masks.push(MaskRule::new(&name, pattern));
    }
    let masking = Masking::new(resolved.masks)?;
    let mut parser = LogParser::new(resolved.format, masking, resolved.settings)?;
    // The truth is read before the parse so that a bad path fails fast.
    let truth = match &a.truth {
        Some(path) => Some((path, read_truth(path)?)),
        None => None,
    };
    let text = gpt::io::read_text(&a.input)?;
    let lines = parser.parse_text(&text);
    let preset_name = resolved.preset.map(|p| p.name);
    let mut summary = ParseSummary::new(&a.input, preset_name, &parser, lines.len());
    if let Some((path, rows)) = truth {
        let ids: Vec<(usize, usize)> = lines.iter().map(|l| (l.line_no, l.template)).collect();
        summary.accuracy = Some(AccuracySummary {
            truth: path.display().to_string(),
            score: score_against_truth(&ids, &rows, path)?,
        });
    }
    let files = write_parse(&a.out, &parser, &lines, &summary)?;
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let s = &summary.settings;
    println!(
        "{} lines -> {} templates (format {}, depth {}, st {}, {} masks)",
        summary.lines,
        summary.templates,
        preset_name.map_or_else(|| format!("'{}'", s.format), str::to_string),
        s.depth,
        s.st,
        s.masks.len()
    );
    println!(
        "lines not matching the format: {} ({})",
        summary.unmatched.lines, summary.unmatched.handling
    );
    if let Some(acc) = &summary.accuracy {
        let g = &acc.score;
        println!(
            "grouping accuracy {:.4} ({} of {} lines in exactly their true group); pairwise \
             precision {:.4} recall {:.4} F1 {:.4} against {}",
            g.accuracy, g.correct, g.lines, g.precision, g.recall, g.f1, acc.truth
        );
    }
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("wrote {}", names.join(", "));
    Ok(())
}
