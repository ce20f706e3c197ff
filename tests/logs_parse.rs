//! `gpt logs parse` and the `gpt::logs` parser on synthetic logs that the tests generate
//! themselves (a handful of templates with variable numbers, block ids, IPs, hex ids and
//! names, lines that do not match the format): exact templates, exact groupings, the unmatched
//! lines counted, the output files, a saved parser matching new lines, and errors that name
//! the file or the problem.
//!
//! The `#[ignore]`d test measures the grouping accuracy on the real loghub 2k samples in
//! `/work/shared/data/logs/loghub_2k` (research-licensed, not in the repository):
//! `cargo test --release --test logs_parse -- --ignored --nocapture`.

use gpt::logs::grouping::{grouping_score, read_truth, score_against_truth};
use gpt::logs::mask::Masking;
use gpt::logs::{preset, LogParser};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FORMAT: &str = "<Date> <Time> <Level> <Component>: <Content>";

/// The mined templates of the synthetic log (generic masks), by kind.
const TEMPLATES: [&str; 6] = [
    "Received block <*> of size <*> from /<*>",
    "Deleting block <*> file <*>",
    "User <*> logged in from <*>",
    "Connection closed by peer",
    "Job <*> finished in <*> ms",
    "Request \"GET /index.html\" from <*> took <*> ms",
];
/// The kind of a line that does not match the format.
const UNMATCHED: usize = 6;
/// Kinds of the first lines, so that EventIds are known: the unmatched template is E3.
const FIRST_KINDS: [usize; 7] = [0, 1, UNMATCHED, 2, 3, 4, 5];
/// EventId of each kind (index = kind).
const EVENT_IDS: [&str; 7] = ["E1", "E2", "E4", "E5", "E6", "E7", "E3"];

/// A small deterministic generator (64-bit LCG, upper bits).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A synthetic log: its text and the kind of every line.
struct Synthetic {
    text: String,
    kinds: Vec<usize>,
}

fn synthetic_log(lines: usize, seed: u64) -> Synthetic {
    let mut rng = Lcg(seed);
    let names = ["alice", "bob", "carol", "dave"];
    let mut text = String::new();
    let mut kinds = Vec::new();
    for i in 0..lines {
        let kind = FIRST_KINDS
            .get(i)
            .copied()
            .unwrap_or_else(|| rng.next(7) as usize);
        let ip = format!("10.{}.{}.{}", rng.next(256), rng.next(256), rng.next(256));
        let block = format!(
            "blk_{}{}",
            ["", "-"][rng.next(2) as usize],
            rng.next(1 << 62)
        );
        // User lines take the names in turn, so that the name is a parameter.
        let name = names[kinds.iter().filter(|&&k| k == 2).count() % names.len()];
        let content = match kind {
            0 => format!(
                "Received block {block} of size {} from /{ip}",
                rng.next(1 << 26)
            ),
            1 => format!(
                "Deleting block {block} file /data/current/subdir{}/{block}",
                rng.next(64)
            ),
            2 => format!("User {name} logged in from {ip}:{}", 1024 + rng.next(60000)),
            3 => "Connection closed by peer".to_string(),
            4 => format!(
                "Job {:016x} finished in {} ms",
                rng.next(u64::MAX),
                rng.next(5000)
            ),
            5 => format!(
                "Request \"GET /index.html\" from {}, took {} ms",
                names[rng.next(4) as usize],
                rng.next(900)
            ),
            _ => {
                // Lines that do not match the format: a stack trace line or a blank line.
                kinds.push(UNMATCHED);
                if rng.next(2) == 0 {
                    text.push_str(&format!(
                        "\tat com.example.Server.handle(Server.java:{i})\n"
                    ));
                } else {
                    text.push('\n');
                }
                continue;
            }
        };
        let level = ["INFO", "WARN"][rng.next(2) as usize];
        let component = ["dfs.DataNode", "auth.Server", "web.Front"][rng.next(3) as usize];
        text.push_str(&format!(
            "2024-03-{:02} 12:{:02}:{:02} {level} {component}: {content}\n",
            1 + rng.next(28),
            rng.next(60),
            rng.next(60)
        ));
        kinds.push(kind);
    }
    Synthetic { text, kinds }
}

/// A fresh temporary directory for one test.
fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gpt_logs_parse_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn gpt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

fn gpt_err(args: &[&str]) -> String {
    let out = gpt(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "gpt {args:?} should fail");
    assert!(!err.contains("panicked"), "gpt {args:?} panicked:\n{err}");
    err
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect()
}

fn new_parser(format: &str) -> LogParser {
    let r = preset::resolve(Some(format)).unwrap();
    LogParser::new(r.format, Masking::new(r.masks).unwrap(), r.settings).unwrap()
}

#[test]
fn synthetic_log_gets_exact_templates_and_groups() {
    let log = synthetic_log(300, 7);
    let mut parser = new_parser(FORMAT);
    let lines = parser.parse_text(&log.text);
    assert_eq!(lines.len(), log.kinds.len());
    let unmatched = log.kinds.iter().filter(|&&k| k == UNMATCHED).count();
    assert!(unmatched > 10);
    assert_eq!(parser.unmatched_lines(), unmatched);
    assert_eq!(parser.unmatched_template(), Some(2));
    let templates = parser.templates();
    assert_eq!(templates.len(), 7);
    for (kind, want) in TEMPLATES.iter().enumerate() {
        let t = templates
            .iter()
            .find(|t| t.event_id == EVENT_IDS[kind])
            .unwrap();
        assert_eq!(&t.text, want, "kind {kind}");
        let count = log.kinds.iter().filter(|&&k| k == kind).count();
        assert_eq!(t.occurrences, count, "kind {kind}");
    }
    assert_eq!(templates[2].text, "<unmatched>");
    assert!(templates[2].unmatched);
    // The grouping is exactly the generator's.
    let parsed: Vec<usize> = lines.iter().map(|l| l.template).collect();
    let score = grouping_score(&parsed, &log.kinds).unwrap();
    assert_eq!(score.correct, lines.len());
    assert_eq!(score.f1, 1.0);
    for l in &lines {
        assert_eq!(
            EVENT_IDS[log.kinds[l.line_no - 1]],
            format!("E{}", l.template + 1)
        );
        assert_eq!(l.matched_format, log.kinds[l.line_no - 1] != UNMATCHED);
    }
    // Parameters: what the wildcards stand for, from the original content.
    let first = &lines[0];
    let params = parser.parameters(first);
    assert_eq!(params.len(), 3);
    assert!(params[0].starts_with("blk_"), "{params:?}");
    assert!(first.content.ends_with(&format!("from /{}", params[2])));
}

#[test]
fn cli_writes_loghub_files_and_scores_against_a_truth() {
    let dir = tmp_dir("cli");
    let log = synthetic_log(200, 11);
    let input = dir.join("app.log");
    std::fs::write(&input, &log.text).unwrap();
    // A loghub-style truth: LineId, EventId (any labels; only the grouping counts).
    let mut truth = String::from("LineId,Content,EventId\n");
    for (i, k) in log.kinds.iter().enumerate() {
        truth.push_str(&format!("{},\"x, y\",T{k}\n", i + 1));
    }
    let truth_path = dir.join("truth.csv");
    std::fs::write(&truth_path, truth).unwrap();
    let out_dir = dir.join("parsed");
    let out = gpt(&[
        "logs",
        "parse",
        "--input",
        input.to_str().unwrap(),
        "--format",
        FORMAT,
        "--out",
        out_dir.to_str().unwrap(),
        "--truth",
        truth_path.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let unmatched = log.kinds.iter().filter(|&&k| k == UNMATCHED).count();
    assert_eq!(summary["lines"], log.kinds.len());
    assert_eq!(summary["templates"], 7);
    assert_eq!(summary["unmatched"]["lines"], unmatched);
    assert_eq!(summary["unmatched"]["event_id"], "E3");
    assert!(summary["unmatched"]["handling"]
        .as_str()
        .unwrap()
        .contains("E3"));
    assert_eq!(summary["accuracy"]["accuracy"], 1.0);
    assert_eq!(summary["settings"]["depth"], 4);
    assert_eq!(summary["settings"]["st"], 0.5);
    assert_eq!(summary["settings"]["format"], FORMAT);
    let on_disk: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(on_disk, summary);

    let templates = read_csv(&out_dir.join("templates.csv"));
    assert_eq!(templates[0], ["EventId", "EventTemplate", "Occurrences"]);
    assert_eq!(templates.len(), 8);
    for (kind, event) in EVENT_IDS.iter().enumerate() {
        let row = templates.iter().find(|r| r[0] == *event).unwrap();
        let want = TEMPLATES.get(kind).copied().unwrap_or("<unmatched>");
        assert_eq!(row[1], want);
        let count = log.kinds.iter().filter(|&&k| k == kind).count();
        assert_eq!(row[2], count.to_string());
    }
    let rows = read_csv(&out_dir.join("structured.csv"));
    let header = [
        "LineId",
        "Date",
        "Time",
        "Level",
        "Component",
        "Content",
        "EventId",
        "EventTemplate",
        "ParameterList",
    ];
    assert_eq!(rows[0], header);
    assert_eq!(rows.len(), log.kinds.len() + 1);
    let text_lines: Vec<&str> = log.text.lines().collect();
    for (i, row) in rows[1..].iter().enumerate() {
        assert_eq!(row[0], (i + 1).to_string());
        assert_eq!(row[6], EVENT_IDS[log.kinds[i]]);
        if log.kinds[i] == UNMATCHED {
            assert_eq!(row[5], text_lines[i].trim(), "whole line kept as content");
            assert!(row[1..5].iter().all(String::is_empty));
        } else {
            // Header fields and content put back together give the line (quoting is right).
            let line = format!("{} {} {} {}: {}", row[1], row[2], row[3], row[4], row[5]);
            assert_eq!(line, text_lines[i]);
            let params: Vec<String> = serde_json::from_str(&row[8]).unwrap();
            assert_eq!(params.len(), row[7].matches("<*>").count(), "{row:?}");
        }
    }

    // The saved parser is the library's parser of the same text, and it matches new lines
    // against the known templates, learning nothing.
    let parser = LogParser::load(&out_dir.join("parser.json")).unwrap();
    let mut same = new_parser(FORMAT);
    same.parse_text(&log.text);
    assert!(
        parser == same,
        "saved state differs from a library parse of the same log"
    );
    let seen =
        "2024-04-01 09:00:00 INFO dfs.DataNode: Received block blk_42 of size 7 from /1.2.3.4";
    assert_eq!(parser.match_line(seen), Some(0));
    let user = "2024-04-01 09:00:00 INFO auth.Server: User zoe logged in from 5.6.7.8:99";
    assert_eq!(parser.match_line(user), Some(3));
    let unseen = "2024-04-01 09:00:00 ERROR dfs.DataNode: Disk failure on volume 3";
    assert_eq!(parser.match_line(unseen), None);
    assert_eq!(parser.match_line("garbage without a header"), Some(2));
    assert_eq!(parser.template_count(), 7);

    // Without --json: a readable summary naming the unmatched lines and the accuracy.
    let out = gpt(&[
        "logs",
        "parse",
        "--input",
        input.to_str().unwrap(),
        "--format",
        FORMAT,
        "--out",
        out_dir.to_str().unwrap(),
        "--truth",
        truth_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("lines not matching the format: {unmatched}")),
        "{stdout}"
    );
    assert!(stdout.contains("grouping accuracy 1.0000"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bgl_preset_keeps_the_label_out_of_the_content() {
    let dir = tmp_dir("bgl");
    let input = dir.join("bgl.log");
    let lines = [
        "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO instruction cache parity error corrected",
        "KERNDTLB 1117838573 2005.06.03 R02-M1-N1-C:J12-U11 2005-06-03-15.42.53.276129 R02-M1-N1-C:J12-U11 RAS KERNEL FATAL instruction cache parity error corrected",
        "- 1117838600 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.43.20.000001 R02-M1-N0-C:J12-U11 RAS KERNEL INFO generating core.2275",
        "APPSEV 1117838601 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.43.21.000001 R02-M1-N0-C:J12-U11 RAS KERNEL INFO generating core.1043",
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out_dir = dir.join("out");
    let out = gpt(&[
        "logs",
        "parse",
        "--input",
        input.to_str().unwrap(),
        "--format",
        "bgl",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_csv(&out_dir.join("structured.csv"));
    assert_eq!(rows[0][1], "Label");
    let labels: Vec<&str> = rows[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(labels, ["-", "KERNDTLB", "-", "APPSEV"]);
    let content = rows[0].iter().position(|c| c == "Content").unwrap();
    assert_eq!(rows[2][content], "instruction cache parity error corrected");
    let events: Vec<&str> = rows[1..].iter().map(|r| r[content + 1].as_str()).collect();
    assert_eq!(events, ["E1", "E1", "E2", "E2"]);
    assert_eq!(
        rows[3][content + 2],
        "generating <*>",
        "the preset masks `core.N`"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["settings"]["preset"], "bgl");
    assert_eq!(summary["unmatched"]["lines"], 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn whole_line_is_the_content_by_default() {
    let mut parser = new_parser("<Content>");
    let lines = parser.parse_text("disk 3 full\ndisk 4 full\n\nfan ok\r\n");
    let ids: Vec<usize> = lines.iter().map(|l| l.template).collect();
    assert_eq!(ids, [0, 0, 1, 2]);
    assert_eq!(parser.template_text(0).unwrap(), "disk <*> full");
    assert_eq!(
        parser.template_text(1).unwrap(),
        "",
        "a blank line is an empty message"
    );
    assert_eq!(lines[3].content, "fan ok");
    assert_eq!(parser.unmatched_lines(), 0);
}

#[test]
fn bad_input_errors_name_the_file_or_the_problem() {
    let dir = tmp_dir("errors");
    let input = dir.join("app.log");
    std::fs::write(&input, "2024-01-01 00:00:00 INFO x: hello\n").unwrap();
    let input = input.to_str().unwrap();
    let out_dir = dir.join("out");
    let out = out_dir.to_str().unwrap();
    let missing = dir.join("missing.log");
    let missing = missing.to_str().unwrap();

    let err = gpt_err(&["logs", "parse", "--input", missing, "--out", out]);
    assert!(err.contains(missing), "{err}");
    assert!(!out_dir.exists(), "nothing written on error");

    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["--format", "<Date> <Content"],
            &["log format", "never closed"],
        ),
        (&["--format", "<Date> <Time>"], &["no `<Content>`"]),
        (&["--format", "<Date> <Date> <Content>"], &["appears twice"]),
        (&["--format", "[<Date> <Content>"], &["does not compile"]),
        (&["--format", "hdfs2"], &["`hdfs2`", "hdfs, bgl"]),
        (&["--st", "1.5"], &["st", "1.5"]),
        (&["--mask", "("], &["mask `mask_1`"]),
    ];
    for (extra, wants) in cases {
        let mut args = vec!["logs", "parse", "--input", input, "--out", out];
        args.extend_from_slice(extra);
        let err = gpt_err(&args);
        for want in wants {
            assert!(err.contains(want), "{extra:?}: {err}");
        }
    }

    let truth = dir.join("truth.csv");
    let truth_s = truth.to_str().unwrap();
    let with_truth = [
        "logs", "parse", "--input", input, "--out", out, "--truth", truth_s,
    ];
    let err = gpt_err(&with_truth);
    assert!(err.contains(truth_s), "missing truth: {err}");
    std::fs::write(&truth, "LineId,Content\n1,hello\n").unwrap();
    let err = gpt_err(&with_truth);
    assert!(err.contains("no `EventId` column"), "{err}");
    std::fs::write(&truth, "LineId,EventId\n1,E1\nx,E1\n").unwrap();
    let err = gpt_err(&with_truth);
    assert!(
        err.contains(&format!("{truth_s}:3")) && err.contains("`x`"),
        "{err}"
    );
    std::fs::write(&truth, "LineId,EventId\n1,E1\n2,E1\n").unwrap();
    let err = gpt_err(&with_truth);
    assert!(err.contains("2 rows but the input has 1 lines"), "{err}");

    let state = dir.join("state.json");
    std::fs::write(&state, "{\"kind\": \"other\"}").unwrap();
    let err = LogParser::load(&state).unwrap_err().to_string();
    assert!(
        err.contains("state.json") && err.contains("not a log parser state"),
        "{err}"
    );
    // A state whose tree points outside itself is refused, not a panic later.
    let mut parser = new_parser(FORMAT);
    parser.parse_text("2024-01-01 00:00:00 INFO x: hello 1\n");
    parser.save(&state).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    v["drain"]["by_length"]["2"] = 999.into();
    std::fs::write(&state, v.to_string()).unwrap();
    let err = LogParser::load(&state).unwrap_err().to_string();
    assert!(err.contains("inconsistent Drain tree"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// loghub 2k samples: grouping accuracy against loghub's ground truth (Drain's published
/// numbers: HDFS 0.998, BGL 0.963), and every preset's format matching every line of its
/// sample.
#[test]
#[ignore = "reads the research-licensed loghub samples from /work/shared/data/logs"]
fn loghub_grouping_accuracy() {
    let dir = Path::new("/work/shared/data/logs/loghub_2k");
    if !dir.join("HDFS_2k.log").exists() {
        eprintln!("skipped: {} is absent", dir.display());
        return;
    }
    let run = |data: &str, format: &str| {
        let text = std::fs::read_to_string(dir.join(format!("{data}_2k.log"))).unwrap();
        let mut parser = new_parser(format);
        let lines = parser.parse_text(&text);
        (parser, lines)
    };
    for (data, preset_name, format, floor) in [
        ("HDFS", "hdfs", "<Date> <Time> <Pid> <Level> <Component>: <Content>", 0.978),
        (
            "BGL",
            "bgl",
            "<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
            0.943,
        ),
    ] {
        let truth_path = dir.join(format!("{data}_2k.log_structured.csv"));
        let truth = read_truth(&truth_path).unwrap();
        // The preset (Drain's benchmark masks), then the same format with the generic masks.
        for (how, f) in [("preset (benchmark masks)", preset_name), ("generic masks", format)] {
            let (parser, lines) = run(data, f);
            let ids: Vec<(usize, usize)> = lines.iter().map(|l| (l.line_no, l.template)).collect();
            let s = score_against_truth(&ids, &truth, &truth_path).unwrap();
            println!(
                "{data} {how}: grouping accuracy {:.4} ({}/{}), pairwise F1 {:.4}, {} templates",
                s.accuracy,
                s.correct,
                s.lines,
                s.f1,
                parser.template_count()
            );
            assert!(s.accuracy >= floor, "{data} {how}: {} < {floor}", s.accuracy);
        }
    }
    for p in preset::PRESETS {
        let file = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|path| {
                let name = path.file_name().unwrap().to_string_lossy().to_lowercase();
                name == format!("{}_2k.log", p.name)
            });
        let Some(file) = file else { continue };
        let mut parser = new_parser(p.name);
        let lines = parser.parse_text(&std::fs::read_to_string(&file).unwrap());
        println!(
            "{}: {} lines, {} templates, {} unmatched",
            p.name,
            lines.len(),
            parser.template_count(),
            parser.unmatched_lines()
        );
        assert_eq!(parser.unmatched_lines(), 0, "{}", p.name);
    }
}
