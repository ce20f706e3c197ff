//! Every command that reads a user file, given a broken one, through the binary: the exit code
//! is non-zero, nothing panics, and the message names the file — with the line, `file:line`,
//! for line-oriented formats (text, TSV, JSONL, merges.txt, TOML, JSON).
//!
//! The cases are tables of (arguments, substrings the error must contain). The fixtures are made
//! once per test process in a temporary directory: text files, a prepared data directory, a
//! 2-step GPT run, a 2-step encoder-decoder run and a copy of the tiny Hugging Face GPT-2
//! fixture; a case that breaks a model or run works on its own copy.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs the binary with one worker thread.
fn gpt(args: &[OsString]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(["--threads", "1"])
        .args(args)
        .output()
        .unwrap()
}

/// `gpt ARGS` succeeds; its standard error.
fn gpt_ok(args: &[OsString]) -> String {
    let out = gpt(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "gpt {args:?} failed:\n{err}");
    err
}

/// Arguments from strings and paths.
macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(OsString::from($a)),*] };
}

/// One bad input: the command line and what its error message must contain.
struct Case {
    args: Vec<OsString>,
    expect: Vec<String>,
    /// A substring that must appear exactly once (a path named twice reads as a bug).
    once: Option<String>,
}

fn case(args: Vec<OsString>, expect: &[&str]) -> Case {
    Case {
        args,
        expect: expect.iter().map(|s| s.to_string()).collect(),
        once: None,
    }
}

/// Runs every case and panics with the list of those that failed (all of them, not the first).
fn check(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in &cases {
        let out = gpt(&c.args);
        let err = String::from_utf8_lossy(&out.stderr);
        let mut why = Vec::new();
        if out.status.success() {
            why.push("exit code 0".to_string());
        }
        if err.contains("panicked") {
            why.push("a panic".to_string());
        }
        for e in &c.expect {
            if !err.contains(e.as_str()) {
                why.push(format!("no `{e}` in the message"));
            }
        }
        if let Some(once) = &c.once {
            let n = err.matches(once.as_str()).count();
            if n != 1 {
                why.push(format!("`{once}` named {n} times"));
            }
        }
        if !why.is_empty() {
            failures.push(format!(
                "gpt {:?}: {}\n  stderr: {}",
                c.args,
                why.join(", "),
                err.trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The shared fixtures (made once per test process).
struct Fx {
    dir: PathBuf,
}

impl Fx {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// A copy of the fixture directory `rel` under a new name, to break.
    fn copy(&self, rel: &str, to: &str) -> PathBuf {
        let dst = self.p(to);
        let _ = std::fs::remove_dir_all(&dst);
        copy_dir(&self.p(rel), &dst);
        dst
    }
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::write(path, bytes).unwrap();
}

/// Keeps the first `n` bytes of a file.
fn truncate(path: &Path, n: usize) {
    let b = std::fs::read(path).unwrap();
    write(path, &b[..n.min(b.len())]);
}

fn edit(path: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(path).unwrap();
    assert!(s.contains(from), "{}: no `{from}`", path.display());
    write(path, s.replacen(from, to, 1));
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gpt-cli-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let fx = Fx { dir };
        // Text: line 2 holds a Latin-1 byte.
        write(&fx.p("latin.txt"), b"line one\nline two caf\xe9\n");
        let corpus: String = (0..300)
            .map(|i| format!("line {i} of the little corpus, with words.\n"))
            .collect();
        write(&fx.p("corpus.txt"), &corpus);
        write(&fx.p("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": 5}\n");
        write(&fx.p("bad.toml"), "max_steps = 3\nlr = [\n");
        // TSV: good pairs, and pairs broken at a known line.
        let words = ["uno", "dos", "tres", "cuatro", "cinco", "seis"];
        let en = ["one", "two", "three", "four", "five", "six"];
        let pairs: String = (0..60)
            .map(|i| {
                format!(
                    "{} {}\t{} {}\n",
                    words[i % 6],
                    words[(i + 1) % 6],
                    en[i % 6],
                    en[(i + 1) % 6]
                )
            })
            .collect();
        write(&fx.p("train.tsv"), &pairs);
        write(
            &fx.p("notab.tsv"),
            "hola\thello\nsin tabulador\nadiós\tgoodbye\n",
        );
        write(
            &fx.p("empty.tsv"),
            "hola\thello\ngracias\tthanks\nadiós\t \n",
        );
        write(&fx.p("latin.tsv"), b"hola\thello\ncaf\xe9\tcoffee\n");
        write(&fx.p("ref3.txt"), "a\nb\nc\n");
        write(&fx.p("hyp2.txt"), "a\nb\n");
        // The tiny HF GPT-2 with the GPT-2 tokenizer.
        let hf = fx.p("hf");
        std::fs::create_dir_all(&hf).unwrap();
        let src = common::fixture_path("hf_gpt2");
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(src.join(f), hf.join(f)).unwrap();
        }
        let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenizer/data/gpt2");
        for f in ["vocab.json", "merges.txt"] {
            std::fs::copy(tok.join(f), hf.join(f)).unwrap();
        }
        // A prepared char-level data directory and a 2-step GPT run on it.
        gpt_ok(&args![
            "prepare",
            "--tokenizer",
            "char",
            fx.p("corpus.txt"),
            "--out",
            fx.p("data")
        ]);
        gpt_ok(&args![
            "train",
            "--data",
            fx.p("data"),
            "--out",
            fx.p("run"),
            "--max-steps",
            "2",
            "--n-layer",
            "1",
            "--batch-size",
            "2",
            "--block-size",
            "16",
            "--sample-tokens",
            "0",
            "--eval-iters",
            "1",
            "--eval-interval",
            "2",
            "--json",
        ]);
        // A 2-step encoder-decoder run.
        gpt_ok(&args![
            "translate",
            "train",
            "--preset",
            "transformer-tiny",
            "--train",
            fx.p("train.tsv"),
            "--valid",
            fx.p("train.tsv"),
            "--out",
            fx.p("tr"),
            "--vocab-size",
            "300",
            "--max-steps",
            "2",
            "--max-len",
            "20",
            "--max-tokens",
            "64",
            "--ckpt-interval",
            "2",
            "--json",
        ]);
        fx
    })
}

/// The latest checkpoint directory of a `gpt translate train` run (`latest` holds its path
/// relative to the run).
fn tr_ckpt(run: &Path) -> PathBuf {
    let name = std::fs::read_to_string(run.join("latest")).unwrap();
    run.join(name.trim())
}

/// `file:2:` — the file and line of the Latin-1 byte in the text fixtures.
fn at_line(fx: &Fx, rel: &str, line: usize) -> String {
    format!("{}:{line}:", fx.p(rel).display())
}

#[test]
fn text_and_data_files() {
    let fx = fx();
    let latin = fx.p("latin.txt");
    let latin2 = at_line(fx, "latin.txt", 2);
    let out = |n: &str| fx.p(&format!("out-{n}"));

    // A tokenizer directory whose tokenizer.json is cut short, one whose merges.txt has a
    // malformed line 3, one whose merges.txt has a Latin-1 byte on line 3.
    let badtok = fx.p("badtok");
    std::fs::create_dir_all(&badtok).unwrap();
    write(&badtok.join("tokenizer.json"), "{\"model\": ");
    let badmerges = fx.copy("hf", "badmerges");
    write(&badmerges.join("merges.txt"), "#version: 0.2\nĠ t\nfoo\n");
    let latinmerges = fx.copy("hf", "latinmerges");
    write(
        &latinmerges.join("merges.txt"),
        b"#version: 0.2\n\xc4\xa0 t\nh \xe9\n",
    );

    // Prepared data directories, each broken in one way.
    let short = fx.copy("data", "data-short");
    truncate(&short.join("train.bin"), 20);
    let magic = fx.copy("data", "data-magic");
    write(&magic.join("train.bin"), [b'X'; 40]);
    let body = fx.copy("data", "data-body");
    let b = std::fs::read(body.join("train.bin")).unwrap();
    truncate(&body.join("train.bin"), b.len() - 100);
    let ids = fx.copy("data", "data-ids");
    let mut b = std::fs::read(ids.join("train.bin")).unwrap();
    b[30] = 250; // a token id far beyond the 29-character vocabulary
    write(&ids.join("train.bin"), b);
    let chartok = fx.copy("data", "data-tok");
    let chartok_file = chartok.join("tokenizer_char.json");
    write(&chartok_file, "{\"chars\": ");

    let train = |data: &Path, o: &str| -> Vec<OsString> {
        args![
            "train",
            "--data",
            data,
            "--out",
            out(o),
            "--max-steps",
            "1",
            "--n-layer",
            "1",
            "--batch-size",
            "2",
            "--block-size",
            "16",
            "--sample-tokens",
            "0",
        ]
    };
    let mut cases = vec![
        // prepare
        case(
            args!["prepare", "--tokenizer", "char", &latin, "--out", out("p1")],
            &[&latin2, "UTF-8"],
        ),
        case(
            args![
                "prepare",
                "--tokenizer",
                "char",
                fx.p("bad.jsonl"),
                "--out",
                out("p2")
            ],
            &[&at_line(fx, "bad.jsonl", 2), "text"],
        ),
        case(
            args!["prepare", fx.p("missing.txt"), "--out", out("p3")],
            &[&fx.p("missing.txt").display().to_string()],
        ),
        case(
            args![
                "prepare",
                "--tokenizer",
                &badtok,
                fx.p("corpus.txt"),
                "--out",
                out("p4")
            ],
            &[
                &badtok.join("tokenizer.json").display().to_string(),
                "line 1",
            ],
        ),
        // tokenizer train: no --lossy to suggest there
        case(
            args![
                "tokenizer",
                "train",
                "--vocab-size",
                "300",
                "--out",
                out("t1"),
                &latin
            ],
            &[&latin2, "UTF-8"],
        ),
        case(
            args!["tokenizer", "train", "--char", "--out", out("t2"), &latin],
            &[&latin2, "UTF-8"],
        ),
        // tokenize
        case(args!["tokenize", &latin], &[&latin2, "--lossy"]),
        case(
            args!["tokenize", "--tokenizer", &badmerges, fx.p("corpus.txt")],
            &[
                &badmerges.join("merges.txt").display().to_string(),
                "line 3",
            ],
        ),
        case(
            args!["tokenize", "--tokenizer", &latinmerges, fx.p("corpus.txt")],
            &[
                &format!("{}:3:", latinmerges.join("merges.txt").display()),
                "UTF-8",
            ],
        ),
        // train: text, token files, tokenizer, TOML
        case(train(&latin, "r1"), &[&latin2, "UTF-8"]),
        case(
            train(&short, "r2"),
            &[&short.join("train.bin").display().to_string(), "header"],
        ),
        case(
            train(&magic, "r3"),
            &[&magic.join("train.bin").display().to_string(), "magic"],
        ),
        case(
            train(&body, "r4"),
            &[&body.join("train.bin").display().to_string(), "tokens"],
        ),
        case(
            train(&ids, "r5"),
            &[&ids.join("train.bin").display().to_string(), "token id"],
        ),
        case(
            args!["train", "--config", fx.p("bad.toml"), "--out", out("r6")],
            &[&fx.p("bad.toml").display().to_string(), "line 2"],
        ),
    ];
    let mut c = case(train(&chartok, "r7"), &["line 1"]);
    c.once = Some(chartok_file.display().to_string());
    cases.push(c);
    // bleu
    cases.push(case(
        args!["bleu", "--ref", fx.p("ref3.txt"), fx.p("hyp2.txt")],
        &[
            &fx.p("hyp2.txt").display().to_string(),
            "2 lines",
            &fx.p("ref3.txt").display().to_string(),
        ],
    ));
    cases.push(case(
        args!["bleu", "--ref", &latin, fx.p("hyp2.txt")],
        &[&latin2, "UTF-8"],
    ));
    cases.push(case(
        args!["bleu", "--ref", fx.p("ref3.txt"), &latin],
        &[&latin2, "UTF-8"],
    ));
    check(cases);
}

#[test]
fn gpt_model_directories_and_runs() {
    let fx = fx();
    let latin2 = at_line(fx, "latin.txt", 2);
    let name = |d: &Path, f: &str| d.join(f).display().to_string();

    let cfg_cut = fx.copy("hf", "m-config-cut");
    write(&cfg_cut.join("config.json"), "{\"n_embd\": ");
    let weights_cut = fx.copy("hf", "m-weights-cut");
    truncate(&weights_cut.join("model.safetensors"), 5000);
    let garbage = fx.copy("hf", "m-garbage");
    write(&garbage.join("model.safetensors"), "not safetensors at all");
    let no_tok = fx.copy("hf", "m-no-tok");
    std::fs::remove_file(no_tok.join("vocab.json")).unwrap();
    std::fs::remove_file(no_tok.join("merges.txt")).unwrap();
    let shape = fx.copy("hf", "m-shape");
    edit(
        &shape.join("config.json"),
        "\"n_embd\": 32",
        "\"n_embd\": 64",
    );
    let heads = fx.copy("hf", "m-heads");
    edit(&heads.join("config.json"), "\"n_head\": 4", "\"n_head\": 3");
    let merges = fx.copy("hf", "m-merges");
    write(&merges.join("merges.txt"), "#version: 0.2\nĠ t\nfoo\n");

    // Runs to resume, each with one checkpoint file broken.
    let run_model = fx.copy("run", "run-model");
    truncate(&run_model.join("checkpoint/model.safetensors"), 100);
    let run_opt = fx.copy("run", "run-opt");
    truncate(&run_opt.join("checkpoint/optimizer.safetensors"), 100);
    let run_state = fx.copy("run", "run-state");
    write(
        &run_state.join("checkpoint/trainer_state.json"),
        "{\"step\": ",
    );
    let run_tok = fx.copy("run", "run-tok");
    let run_tok_file = run_tok.join("checkpoint/tokenizer_char.json");
    write(&run_tok_file, "{\"chars\": ");

    let gen = |m: &Path| {
        args![
            "generate",
            "--model",
            m,
            "--prompt",
            "hi",
            "--max-new-tokens",
            "2"
        ]
    };
    let resume = |run: &Path| {
        args![
            "train",
            "--resume",
            "--data",
            fx.p("data"),
            "--out",
            run,
            "--max-steps",
            "3",
            "--sample-tokens",
            "0",
        ]
    };
    let mut cases = vec![
        case(gen(&cfg_cut), &[&name(&cfg_cut, "config.json"), "line 1"]),
        case(
            args!["score", "--model", &cfg_cut, fx.p("corpus.txt")],
            &[&name(&cfg_cut, "config.json"), "line 1"],
        ),
        case(
            args!["sample", "--model", &cfg_cut],
            &[&name(&cfg_cut, "config.json")],
        ),
        case(
            gen(&weights_cut),
            &[&name(&weights_cut, "model.safetensors"), "truncated"],
        ),
        case(
            args!["score", "--model", &weights_cut, fx.p("corpus.txt")],
            &[&name(&weights_cut, "model.safetensors"), "truncated"],
        ),
        case(gen(&garbage), &[&name(&garbage, "model.safetensors")]),
        case(gen(&no_tok), &[&no_tok.display().to_string(), "tokenizer"]),
        case(
            gen(&shape),
            &[
                &name(&shape, "model.safetensors"),
                "transformer.wte.weight",
                "[50257, 32]",
            ],
        ),
        case(
            args!["score", "--model", &heads, fx.p("corpus.txt")],
            &[&name(&heads, "config.json"), "n_head"],
        ),
        case(gen(&merges), &[&name(&merges, "merges.txt"), "line 3"]),
        case(
            args!["score", "--model", fx.p("hf"), fx.p("latin.txt")],
            &[&latin2, "UTF-8"],
        ),
        case(
            args!["score", "--model", fx.p("hf"), fx.p("missing.txt")],
            &[&fx.p("missing.txt").display().to_string()],
        ),
        case(
            resume(&run_model),
            &[
                &name(&run_model, "checkpoint/model.safetensors"),
                "truncated",
            ],
        ),
        case(
            resume(&run_opt),
            &[
                &name(&run_opt, "checkpoint/optimizer.safetensors"),
                "truncated",
            ],
        ),
        case(
            resume(&run_state),
            &[&name(&run_state, "checkpoint/trainer_state.json")],
        ),
    ];
    let mut c = case(
        args!["sample", "--model", &run_tok, "--max-new-tokens", "2"],
        &["line 1"],
    );
    c.once = Some(run_tok_file.display().to_string());
    cases.push(c);
    check(cases);
}

#[test]
fn translation_files_and_runs() {
    let fx = fx();
    let name = |d: &Path, f: &str| d.join(f).display().to_string();
    let out = |n: &str| fx.p(&format!("out-{n}"));
    let notab2 = at_line(fx, "notab.tsv", 2);
    let latin_tsv2 = at_line(fx, "latin.tsv", 2);

    let cfg_cut = fx.copy("tr", "tr-config-cut");
    let cfg_cut_file = tr_ckpt(&cfg_cut).join("config.json");
    write(&cfg_cut_file, "{\"transformer\": ");
    let weights_cut = fx.copy("tr", "tr-weights-cut");
    let weights_cut_file = tr_ckpt(&weights_cut).join("model.safetensors");
    truncate(&weights_cut_file, 300);
    let heads = fx.copy("tr", "tr-heads");
    let heads_file = tr_ckpt(&heads).join("config.json");
    edit(&heads_file, "\"n_head\": 4", "\"n_head\": 3");

    let tr_train = |train: &Path, valid: &Path, o: &str| -> Vec<OsString> {
        args![
            "translate",
            "train",
            "--preset",
            "transformer-tiny",
            "--train",
            train,
            "--valid",
            valid,
            "--out",
            out(o),
            "--vocab-size",
            "300",
            "--max-steps",
            "1",
            "--max-len",
            "20",
            "--max-tokens",
            "64",
            "--json",
            "--strict",
        ]
    };
    let (train, notab, empty, latin_tsv) = (
        fx.p("train.tsv"),
        fx.p("notab.tsv"),
        fx.p("empty.tsv"),
        fx.p("latin.tsv"),
    );
    let eval = |model: &Path, pairs: &Path| {
        args![
            "translate",
            "eval",
            "--model",
            model,
            "--pairs",
            pairs,
            "--beam",
            "1",
            "--strict"
        ]
    };
    let cases = vec![
        case(tr_train(&notab, &train, "a1"), &[&notab2, "no tab"]),
        case(
            tr_train(&empty, &train, "a2"),
            &[&at_line(fx, "empty.tsv", 3), "empty side"],
        ),
        case(tr_train(&train, &notab, "a3"), &[&notab2, "no tab"]),
        case(tr_train(&latin_tsv, &train, "a4"), &[&latin_tsv2, "UTF-8"]),
        case(
            tr_train(&fx.p("missing.tsv"), &train, "a5"),
            &[&fx.p("missing.tsv").display().to_string()],
        ),
        case(
            args![
                "translate",
                "train",
                "--train",
                &train,
                "--valid",
                &train,
                "--out",
                &weights_cut,
                "--resume",
                "--max-steps",
                "3",
            ],
            &[&weights_cut_file.display().to_string(), "truncated"],
        ),
        case(eval(&fx.p("tr"), &notab), &[&notab2, "no tab"]),
        case(eval(&fx.p("tr"), &latin_tsv), &[&latin_tsv2, "UTF-8"]),
        case(
            eval(&cfg_cut, &train),
            &[&cfg_cut_file.display().to_string()],
        ),
        case(
            eval(&heads, &train),
            &[&heads_file.display().to_string(), "n_head"],
        ),
        case(
            args!["translate", "--model", fx.p("tr"), fx.p("latin.txt")],
            &[&at_line(fx, "latin.txt", 2), "UTF-8"],
        ),
        case(
            args!["translate", "--model", &weights_cut, &train],
            &[&weights_cut_file.display().to_string(), "truncated"],
        ),
        case(
            args![
                "translate",
                "average",
                "--model",
                &cfg_cut,
                "--last",
                "1",
                "--out",
                out("v1")
            ],
            &[&cfg_cut_file.display().to_string()],
        ),
        case(
            args![
                "translate",
                "average",
                "--model",
                &weights_cut,
                "--last",
                "1",
                "--out",
                out("v2"),
            ],
            &[&weights_cut_file.display().to_string(), "truncated"],
        ),
        case(
            args![
                "translate",
                "average",
                "--model",
                fx.p("nothing"),
                "--last",
                "1",
                "--out",
                out("v3"),
            ],
            &[&name(&fx.dir, "nothing")],
        ),
        // bench translate reads a model and two TSV files before it times anything.
        case(
            args![
                "bench",
                "translate",
                "--model",
                fx.p("tr"),
                "--train",
                &latin_tsv,
                "--presets",
                "transformer-tiny",
                "--steps",
                "1",
                "--limit",
                "2",
            ],
            &[&latin_tsv2, "UTF-8"],
        ),
        case(
            args![
                "bench",
                "translate",
                "--model",
                &weights_cut,
                "--train",
                &train,
                "--test",
                &train,
                "--presets",
                "transformer-tiny",
                "--steps",
                "1",
                "--limit",
                "2",
            ],
            &[&weights_cut_file.display().to_string()],
        ),
    ];
    check(cases);
}

/// Without `--strict`, bad TSV lines are skipped, and the report names the first one.
#[test]
fn skipped_tsv_lines_are_reported_with_the_first_line() {
    let fx = fx();
    let notab = fx.p("notab.tsv");
    let first = format!("first: {}:2", notab.display());
    let out = gpt(&args![
        "translate",
        "eval",
        "--model",
        fx.p("tr"),
        "--pairs",
        &notab,
        "--beam",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 bad lines skipped") && stdout.contains(&first),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --json keeps standard output to JSON and warns on standard error.
    let err = gpt_ok(&args![
        "translate",
        "train",
        "--preset",
        "transformer-tiny",
        "--train",
        &notab,
        "--valid",
        fx.p("train.tsv"),
        "--out",
        fx.p("out-skip"),
        "--vocab-size",
        "300",
        "--max-steps",
        "1",
        "--max-len",
        "20",
        "--max-tokens",
        "64",
        "--json",
    ]);
    assert!(err.contains("warning") && err.contains(&first), "{err}");
}
