//! `gpt bench logs`: log anomaly detection on HDFS (DeepLog's session files), our log-key GPT
//! (`gpt logs train` / `gpt logs eval`, each in a fresh process of this binary: the commands
//! users run) beside the n-gram baseline and, with `--vs-torch`, DeepLog's LSTM in PyTorch
//! (`bench/deeplog_torch.py`) on the same split and threads, in one run.
//!
//! The split (the issue's): the first 4,000 normal sessions train (our last 10% of them, the
//! LSTM's sessions 3601..4000, are the validation part that picks the surprisal threshold),
//! the remaining normal sessions (855) and all abnormal ones (16,838) test. Speeds: training
//! sessions·epochs per second of wall time (ours: the whole `gpt logs train` command; the
//! LSTM: windows and epochs, from its own clock) and test sessions scored per second (ours:
//! the whole `gpt logs eval` command; the LSTM: windows, batched inference and the decision).
//! Each side runs `runs` times, alternating; medians are reported beside the f32 matmul peak
//! measured in the same run.

use super::harness::{find_python, matmul_peak_gflops, median, run_json, script, PYTHON_HINT};
use crate::error::{Error, Result};
use crate::logs::metrics::Confusion;
use crate::logs::ngram::NgramModel;
use crate::logs::sessions::read_sessions;
use crate::logs::vocab::KeyVocab;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Settings of `gpt bench logs`.
#[derive(Clone, Debug)]
pub struct LogsBench {
    /// DeepLog's HDFS files (`hdfs_train`, `hdfs_test_abnormal`).
    pub data_dir: PathBuf,
    /// Epochs of our model.
    pub epochs: usize,
    /// Our model's context (keys).
    pub window: usize,
    /// Epochs of the PyTorch LSTM.
    pub torch_epochs: usize,
    /// Alternating runs per side.
    pub runs: usize,
    /// Also run DeepLog's LSTM in PyTorch.
    pub vs_torch: bool,
    /// Python with PyTorch.
    pub python: Option<PathBuf>,
}

/// Normal sessions that train (and validate).
const TRAIN_SESSIONS: usize = 4000;

/// One row of the table.
struct Row {
    name: String,
    c: Confusion,
    roc: Option<f64>,
    train_rate: Option<f64>,
    score_rate: Option<f64>,
}

/// Runs `gpt bench logs`, printing its table.
pub fn run(opts: &LogsBench) -> Result<()> {
    if opts.runs == 0 {
        return Err(Error::field("--runs", "must be at least 1"));
    }
    let normal_path = opts.data_dir.join("hdfs_train");
    let abnormal_path = opts.data_dir.join("hdfs_test_abnormal");
    let (normal, _) = read_sessions(&normal_path)?;
    if normal.len() <= TRAIN_SESSIONS {
        return Err(Error::file(
            &normal_path,
            format!(
                "{} sessions; the split needs more than {TRAIN_SESSIONS}",
                normal.len()
            ),
        ));
    }
    let (abnormal, _) = read_sessions(&abnormal_path)?;
    let tmp = std::env::temp_dir().join(format!("gpt-bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = run_in(opts, &tmp, &normal, &abnormal, &normal_path, &abnormal_path);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn write_lines(path: &Path, sessions: &[crate::logs::sessions::Session]) -> Result<()> {
    let text = crate::logs::sessions::sessions_text(sessions);
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn run_in(
    opts: &LogsBench,
    tmp: &Path,
    normal: &[crate::logs::sessions::Session],
    abnormal: &[crate::logs::sessions::Session],
    normal_path: &Path,
    abnormal_path: &Path,
) -> Result<()> {
    let threads = crate::threads::current();
    let exe = super::harness::current_exe()?;
    let train_file = tmp.join("train.txt");
    let test_normal = tmp.join("test_normal.txt");
    write_lines(&train_file, &normal[..TRAIN_SESSIONS])?;
    write_lines(&test_normal, &normal[TRAIN_SESSIONS..])?;
    let n_train = TRAIN_SESSIONS - TRAIN_SESSIONS / 10;
    let n_test = normal.len() - TRAIN_SESSIONS + abnormal.len();
    let peak = matmul_peak_gflops();
    println!(
        "gpt bench logs: HDFS (DeepLog's files in {}), train on normal sessions 1..{n_train}, validate on {}..{TRAIN_SESSIONS}, test {} normal + {} abnormal; {threads} threads; {} runs; f32 matmul peak {peak:.1} GFLOP/s",
        opts.data_dir.display(),
        n_train + 1,
        normal.len() - TRAIN_SESSIONS,
        abnormal.len(),
        opts.runs
    );

    // The n-gram baseline, in process (counting is instant).
    let vocab = KeyVocab::build(
        normal[..n_train]
            .iter()
            .flat_map(|s| s.keys.iter().map(String::as_str)),
    );
    let enc = |s: &crate::logs::sessions::Session| vocab.encode(&s.keys, true);
    let train_seqs: Vec<Vec<u32>> = normal[..n_train].iter().map(enc).collect();
    // A 3-key context: the baseline the issue quotes (recall 1.000, FPR 0.025).
    let ngram = NgramModel::train(4, &train_seqs);
    let tests: Vec<(Vec<u32>, bool)> = normal[TRAIN_SESSIONS..]
        .iter()
        .map(|s| (enc(s), false))
        .chain(abnormal.iter().map(|s| (enc(s), true)))
        .collect();
    let labels: Vec<bool> = tests.iter().map(|t| t.1).collect();
    let flags: Vec<bool> = tests.iter().map(|t| ngram.anomalous(&t.0, 9)).collect();
    let scores: Vec<f64> = tests.iter().map(|t| ngram.score(&t.0)).collect();
    let mut rows = vec![Row {
        name: "4-gram counts (3-key context) + </s>, top-9".into(),
        c: Confusion::of(&flags, &labels),
        roc: crate::logs::metrics::roc_auc(&scores, &labels),
        train_rate: None,
        score_rate: None,
    }];

    let model = tmp.join("model");
    let (mut ours_train, mut ours_score) = (Vec::new(), Vec::new());
    let (mut torch_train, mut torch_score) = (Vec::new(), Vec::new());
    let (mut ours_rows, mut torch_runs) = (Vec::new(), Vec::<Value>::new());
    let python = find_python(opts.python.as_deref());
    for run in 1..=opts.runs {
        let t0 = Instant::now();
        let mut cmd = Command::new(&exe);
        cmd.arg("--threads")
            .arg(threads.to_string())
            .args(["logs", "train", "--sessions"])
            .arg(&train_file)
            .arg("--out")
            .arg(&model)
            .args(["--epochs", &opts.epochs.to_string()])
            .args(["--window", &opts.window.to_string()])
            .args(["--json", "--overwrite"]);
        run_json(&mut cmd, "")?;
        ours_train.push((n_train * opts.epochs) as f64 / t0.elapsed().as_secs_f64());
        let mut this_run = Vec::new();
        for detector in ["topg", "surprisal"] {
            let t0 = Instant::now();
            let mut cmd = Command::new(&exe);
            cmd.arg("--threads")
                .arg(threads.to_string())
                .args(["logs", "eval", "--model"])
                .arg(&model)
                .arg("--normal")
                .arg(&test_normal)
                .arg("--abnormal")
                .arg(abnormal_path)
                .args(["--detector", detector, "--json"]);
            let v = run_json(&mut cmd, "")?;
            if detector == "surprisal" {
                ours_score.push(n_test as f64 / t0.elapsed().as_secs_f64());
            }
            this_run.push((detector, v));
        }
        ours_rows = this_run;
        let mut line = format!(
            "run {run}: ours train {:.0} sessions·epochs/s, score {:.0} sessions/s",
            ours_train[run - 1],
            ours_score[run - 1]
        );
        if opts.vs_torch {
            let mut cmd = Command::new(&python);
            cmd.arg(script("deeplog_torch.py"))
                .args(["--model", "deeplog", "--eos", "--input", "onehot"])
                .arg("--normal")
                .arg(normal_path)
                .arg("--abnormal")
                .arg(abnormal_path)
                .args(["--train-sessions", &n_train.to_string()])
                .args(["--valid-sessions", &(TRAIN_SESSIONS - n_train).to_string()])
                .args(["--epochs", &opts.torch_epochs.to_string()])
                .args(["--threads", &threads.to_string()])
                .args(["--seed", &run.to_string()]);
            let v = run_json(&mut cmd, PYTHON_HINT)?;
            let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
            torch_train.push(f("train_sessions_per_s"));
            torch_score.push(f("score_sessions_per_s"));
            line.push_str(&format!(
                "; PyTorch DeepLog (seed {run}) train {:.0} sessions·epochs/s, score {:.0} sessions/s, recall {:.4}, FPR {:.4}",
                f("train_sessions_per_s"),
                f("score_sessions_per_s"),
                f("recall"),
                f("fpr")
            ));
            torch_runs.push(v);
        }
        println!("{line}");
    }
    let med = |v: &mut Vec<f64>| (!v.is_empty()).then(|| median(v));
    let (ot, os) = (med(&mut ours_train), med(&mut ours_score));
    for (detector, v) in &ours_rows {
        rows.push(Row {
            name: format!(
                "ours: GPT (1 layer, width 32, context {}, {} epochs), {}",
                opts.window,
                opts.epochs,
                if *detector == "topg" {
                    "top-9"
                } else {
                    "surprisal"
                }
            ),
            c: confusion_of(v),
            roc: v.get("roc_auc").and_then(Value::as_f64),
            train_rate: ot,
            score_rate: os,
        });
    }
    // The LSTM's quality varies with its seed: the table shows the run of median F1.
    torch_runs.sort_by(|a, b| {
        let f1 = |v: &Value| v.get("f1").and_then(Value::as_f64).unwrap_or(0.0);
        f1(a).total_cmp(&f1(b))
    });
    if let Some(v) = torch_runs.get(torch_runs.len() / 2) {
        rows.push(Row {
            name: format!(
                "PyTorch DeepLog LSTM (2x64, h 10, one-hot keys, + </s>), top-9, {} epochs, run of median F1",
                opts.torch_epochs
            ),
            c: confusion_of(v),
            roc: None,
            train_rate: med(&mut torch_train),
            score_rate: med(&mut torch_score),
        });
    }
    println!("| detector | precision | recall | F1 | FPR | ROC-AUC | train sessions·epochs/s | score sessions/s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let cell = |v: Option<f64>, d: usize| v.map_or("-".to_string(), |x| format!("{x:.d$}"));
    for r in &rows {
        println!(
            "| {} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} | {} |",
            r.name,
            r.c.precision(),
            r.c.recall(),
            r.c.f1(),
            r.c.fpr(),
            cell(r.roc, 4),
            cell(r.train_rate, 0),
            cell(r.score_rate, 0)
        );
    }
    println!(
        "published DeepLog (Du et al. 2017, its own split): precision 0.95, recall 0.96, F1 0.96"
    );
    if let (Some(ot), Some(os), Some(tt), Some(ts)) =
        (ot, os, med(&mut torch_train), med(&mut torch_score))
    {
        println!(
            "speed ratios (ours / PyTorch DeepLog, medians): training {:.2}x sessions·epochs/s, scoring {:.2}x sessions/s",
            ot / tt,
            os / ts
        );
    }
    Ok(())
}

fn confusion_of(v: &Value) -> Confusion {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0) as usize;
    Confusion {
        tp: n("tp"),
        fp: n("fp"),
        fn_: n("fn"),
        tn: n("tn"),
    }
}

/// Settings of the BGL part of `gpt bench logs`.
#[derive(Clone, Debug)]
pub struct BglBench {
    /// Loghub's 2k samples (`BGL_2k.log`, `BGL_2k.labels.jsonl`).
    pub loghub_dir: PathBuf,
    /// Lines of the training period (the rest test).
    pub train_lines: usize,
    /// Share of the training period's end held out to choose the threshold.
    pub valid_fraction: f64,
    /// Epochs of our model.
    pub epochs: usize,
    /// Our model's context (lines).
    pub window: usize,
    /// False-positive rate the threshold is chosen for on the validation lines.
    pub target_fpr: f64,
}

/// BGL per-line detection: templates mined (Drain, loghub's BGL settings) on the training
/// period only, test lines matched against them (an unseen template is `<unk>`); a GPT over the
/// stream of template ids trained on the normal lines of the training period (its last
/// `valid_fraction` held out to choose the threshold); each test line scored by the NLL of its
/// template given the lines before it. Beside it the trivial detectors: level FATAL, and an
/// unseen template.
pub fn run_bgl(opts: &BglBench) -> Result<()> {
    use crate::logs::detect::threshold_for_fpr;
    use crate::logs::metrics::{pr_auc, roc_auc};
    let log_path = opts.loghub_dir.join("BGL_2k.log");
    let labels_path = opts.loghub_dir.join("BGL_2k.labels.jsonl");
    let text = std::fs::read_to_string(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let labels: Vec<bool> = std::fs::read_to_string(&labels_path)
        .map_err(|e| Error::io(&labels_path, e))?
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l)
                .map_err(|e| Error::file(&labels_path, format!("line {}: {e}", i + 1)))?;
            Ok(v.get("label").and_then(Value::as_u64) == Some(1))
        })
        .collect::<Result<_>>()?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != labels.len() || opts.train_lines >= lines.len() {
        return Err(Error::file(
            &labels_path,
            format!(
                "{} labels for {} lines (training period {})",
                labels.len(),
                lines.len(),
                opts.train_lines
            ),
        ));
    }
    let resolved = crate::logs::preset::resolve(Some("bgl"))?;
    let level = resolved
        .format
        .headers()
        .iter()
        .position(|h| *h == "Level")
        .ok_or_else(|| Error::field("--format", "the BGL format has no <Level>"))?;
    let masking = crate::logs::mask::Masking::new(resolved.masks)?;
    let mut parser =
        crate::logs::LogParser::new(resolved.format.clone(), masking, resolved.settings)?;
    let n = opts.train_lines;
    let train_parsed = parser.parse_text(&lines[..n].join("\n"));
    let mut keys: Vec<String> = train_parsed
        .iter()
        .map(|p| p.template.to_string())
        .collect();
    for l in &lines[n..] {
        keys.push(
            parser
                .match_line(l)
                .map_or("unseen".to_string(), |t| t.to_string()),
        );
    }
    let generic = crate::logs::mask::Masking::new(crate::logs::mask::generic_rules())?;
    let component = resolved
        .format
        .headers()
        .iter()
        .position(|h| *h == "Component");
    let texts: Vec<String> = lines
        .iter()
        .map(|l| match resolved.format.split(l) {
            Some(s) => format!(
                "{} {} {}",
                component
                    .and_then(|c| s.headers.get(c).cloned())
                    .unwrap_or_default(),
                s.headers.get(level).cloned().unwrap_or_default(),
                generic.apply(&s.content)
            ),
            None => generic.apply(l).into_owned(),
        })
        .collect();
    let levels: Vec<String> = lines
        .iter()
        .map(|l| {
            resolved
                .format
                .split(l)
                .and_then(|s| s.headers.get(level).cloned())
                .unwrap_or_default()
        })
        .collect();
    // The normal lines of the training period, in order: training, then validation.
    let normal_train: Vec<&str> = (0..n)
        .filter(|&i| !labels[i])
        .map(|i| keys[i].as_str())
        .collect();
    let n_valid = (normal_train.len() as f64 * opts.valid_fraction).round() as usize;
    let tmp = std::env::temp_dir().join(format!("gpt-bench-bgl-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let train_file = tmp.join("train.txt");
    let valid_file = tmp.join("valid.txt");
    let cut = normal_train.len() - n_valid;
    std::fs::write(&train_file, normal_train[..cut].join(" "))
        .map_err(|e| Error::io(&train_file, e))?;
    std::fs::write(&valid_file, normal_train[cut..].join(" "))
        .map_err(|e| Error::io(&valid_file, e))?;
    let cfg = crate::logs::train::LogTrainConfig {
        sessions: train_file,
        valid: Some(valid_file),
        out: tmp.join("model"),
        end_token: false,
        window: opts.window,
        epochs: opts.epochs,
        batch_size: 16,
        target_fpr: opts.target_fpr,
        ..Default::default()
    };
    let quiet = crate::train::TrainOptions {
        quiet: true,
        ..Default::default()
    };
    let result = (|| -> Result<()> {
        let o = crate::logs::train::train_logs(&cfg, &quiet)?;
        let mut model = crate::logs::model::LogModel::load(&cfg.out)?;
        let stream = crate::logs::sessions::Session {
            keys: keys.clone(),
            line: 1,
            id: None,
        };
        let scores = model.score(&[stream], 0)?.remove(0);
        // Position p (1-based over the keys) is line p.
        let test: Vec<usize> = (n..lines.len()).collect();
        let nll: Vec<f64> = test.iter().map(|&i| scores[i].nll as f64).collect();
        let truth: Vec<bool> = test.iter().map(|&i| labels[i]).collect();
        let threshold = o.detector.threshold.unwrap_or(f64::INFINITY);
        let seen: std::collections::HashSet<&str> = normal_train.iter().copied().collect();
        let detectors: Vec<(String, Vec<bool>, Vec<f64>)> = vec![
            (
                format!(
                    "ours: GPT over template ids (context {}), NLL > {threshold:.2} (FPR {} on validation lines)",
                    opts.window, opts.target_fpr
                ),
                nll.iter().map(|&s| s > threshold).collect(),
                nll.clone(),
            ),
            (
                "level FATAL".to_string(),
                test.iter().map(|&i| levels[i] == "FATAL").collect(),
                test.iter()
                    .map(|&i| f64::from(u8::from(levels[i] == "FATAL")))
                    .collect(),
            ),
            (
                "template unseen in normal training lines".to_string(),
                test.iter().map(|&i| !seen.contains(keys[i].as_str())).collect(),
                test.iter()
                    .map(|&i| f64::from(u8::from(!seen.contains(keys[i].as_str()))))
                    .collect(),
            ),
        ];
        println!(
            "BGL (loghub 2k): training period lines 1..{n} ({} normal lines: {} train, {} validation; {} templates mined there), test lines {}..{} ({} anomalous of {})",
            normal_train.len(),
            cut,
            n_valid,
            parser.template_count(),
            n + 1,
            lines.len(),
            truth.iter().filter(|&&t| t).count(),
            truth.len()
        );
        println!("| detector | precision | recall | F1 | FPR | ROC-AUC | PR-AUC |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for (name, flags, s) in &detectors {
            let c = Confusion::of(flags, &truth);
            let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
            println!(
                "| {name} | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} |",
                c.precision(),
                c.recall(),
                c.f1(),
                c.fpr(),
                cell(roc_auc(s, &truth)),
                cell(pr_auc(s, &truth))
            );
        }
        let chars = char_model_scores(
            &tmp,
            &texts,
            &labels,
            n,
            opts,
            &crate::train::TrainOptions {
                quiet: true,
                ..Default::default()
            },
        )?;
        let c_threshold = threshold_for_fpr(&chars.valid, opts.target_fpr).unwrap_or(f64::INFINITY);
        let c_flags: Vec<bool> = chars.test.iter().map(|&s| s > c_threshold).collect();
        let c = Confusion::of(&c_flags, &truth);
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
        println!(
            "| ours: char-level GPT over `component level message` (numbers masked), mean NLL per char > {c_threshold:.3} (FPR {} on validation lines) | {:.4} | {:.4} | {:.4} | {:.4} | {} | {} |",
            opts.target_fpr,
            c.precision(),
            c.recall(),
            c.f1(),
            c.fpr(),
            cell(roc_auc(&chars.test, &truth)),
            cell(pr_auc(&chars.test, &truth))
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Per-line mean NLL per character of a character-level model of the lines' text.
struct CharScores {
    /// Validation lines (normal, end of the training period).
    valid: Vec<f64>,
    /// Test lines (after the training period).
    test: Vec<f64>,
}

/// Trains a character-level log model (each line a session of its characters' code points,
/// `</s>` at the end) on the normal lines of the training period but its last
/// `valid_fraction`, and scores the validation and test lines by their mean NLL per character
/// (characters unseen in training: `<unk>`, infinite).
fn char_model_scores(
    tmp: &Path,
    texts: &[String],
    labels: &[bool],
    n: usize,
    opts: &BglBench,
    quiet: &crate::train::TrainOptions,
) -> Result<CharScores> {
    let as_keys = |t: &str| -> Vec<String> { t.chars().map(|c| (c as u32).to_string()).collect() };
    let normal: Vec<usize> = (0..n).filter(|&i| !labels[i]).collect();
    let cut = normal.len() - (normal.len() as f64 * opts.valid_fraction).round() as usize;
    let write = |name: &str, idx: &[usize]| -> Result<PathBuf> {
        let p = tmp.join(name);
        let text: String = idx
            .iter()
            .map(|&i| format!("{}\n", as_keys(&texts[i]).join(" ")))
            .collect();
        std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
        Ok(p)
    };
    let cfg = crate::logs::train::LogTrainConfig {
        sessions: write("chars_train.txt", &normal[..cut])?,
        valid: Some(write("chars_valid.txt", &normal[cut..])?),
        out: tmp.join("chars"),
        end_token: true,
        window: 64,
        n_layer: 2,
        n_embd: 64,
        epochs: opts.epochs,
        batch_size: 32,
        ..Default::default()
    };
    crate::logs::train::train_logs(&cfg, quiet)?;
    let mut model = crate::logs::model::LogModel::load(&cfg.out)?;
    let mut mean_nll = |idx: &[usize]| -> Result<Vec<f64>> {
        let sessions: Vec<crate::logs::sessions::Session> = idx
            .iter()
            .map(|&i| crate::logs::sessions::Session {
                keys: as_keys(&texts[i]),
                line: i + 1,
                id: None,
            })
            .collect();
        Ok(model
            .score(&sessions, 0)?
            .iter()
            .map(|s| s.iter().map(|p| p.nll as f64).sum::<f64>() / s.len().max(1) as f64)
            .collect())
    };
    let test: Vec<usize> = (n..texts.len()).collect();
    Ok(CharScores {
        valid: mean_nll(&normal[cut..])?,
        test: mean_nll(&test)?,
    })
}
