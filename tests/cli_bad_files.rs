//! Every command that reads a user file, given a broken one, through the binary: the exit code
//! is non-zero, nothing panics, and the message names the file — with the line, `file:line`,
//! for line-oriented formats (text, TSV, JSONL, merges.txt, TOML, JSON).
//!
//! The cases are tables of (command line, substrings the error must contain). The fixtures are
//! made once per test process in a temporary directory: text files, a prepared data directory,
//! a 2-step GPT run, a 2-step encoder-decoder run and a copy of the tiny Hugging Face GPT-2
//! fixture; a case that breaks a model or a run works on its own copy.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// A command line: `words` split at spaces, each `{}` replaced by the next of `paths`.
fn argv(words: &str, paths: &[&Path]) -> Vec<OsString> {
    let mut paths = paths.iter();
    let args: Vec<OsString> = words
        .split_whitespace()
        .map(|w| match w {
            "{}" => paths.next().expect("a path for each {}").into(),
            w => w.into(),
        })
        .collect();
    assert!(paths.next().is_none(), "more paths than {{}} in `{words}`");
    args
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

    /// `p(rel)` as text, as messages show it.
    fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }

    /// `file:line:`, the way messages name a line.
    fn at(&self, rel: &str, line: usize) -> String {
        format!("{}:{line}:", self.s(rel))
    }

    /// A fresh copy of the fixture directory `rel` as `to`, to break.
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

/// The latest checkpoint directory of a `gpt translate train` run (`latest` holds its path
/// relative to the run).
fn tr_ckpt(run: &Path) -> PathBuf {
    let name = std::fs::read_to_string(run.join("latest")).unwrap();
    run.join(name.trim())
}

/// Flags that keep a GPT training run to a few milliseconds.
const TINY_TRAIN: &str = "--n-layer 1 --batch-size 2 --block-size 16 --sample-tokens 0";
/// Flags that keep an encoder-decoder training run to a few milliseconds.
const TINY_TRANSLATE: &str =
    "--preset transformer-tiny --vocab-size 300 --max-len 20 --max-tokens 64 --json";

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
        let es = ["uno", "dos", "tres", "cuatro", "cinco", "seis"];
        let en = ["one", "two", "three", "four", "five", "six"];
        let pairs: String = (0..60)
            .map(|i| {
                let j = (i + 1) % 6;
                format!("{} {}\t{} {}\n", es[i % 6], es[j], en[i % 6], en[j])
            })
            .collect();
        write(&fx.p("train.tsv"), &pairs);
        write(
            &fx.p("notab.tsv"),
            "hola\thello\nsin tabulador\nadiós\tbye\n",
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
        // A prepared char-level data directory, a 2-step GPT run on it, a 2-step
        // encoder-decoder run.
        let (corpus, data, run) = (fx.p("corpus.txt"), fx.p("data"), fx.p("run"));
        gpt_ok(&argv(
            "prepare --tokenizer char {} --out {}",
            &[&corpus, &data],
        ));
        let train = format!("train --data {{}} --out {{}} --max-steps 2 {TINY_TRAIN}");
        gpt_ok(&argv(&train, &[&data, &run]));
        let (tsv, tr) = (fx.p("train.tsv"), fx.p("tr"));
        let words = format!(
            "translate train --train {{}} --valid {{}} --out {{}} --max-steps 2 {TINY_TRANSLATE}"
        );
        gpt_ok(&argv(&words, &[&tsv, &tsv, &tr]));
        fx
    })
}

/// Called at the end of each test: the last of the file's tests to pass removes the fixtures
/// (a failing test leaves them to look at).
fn finished() {
    const TESTS: usize = 4;
    static DONE: AtomicUsize = AtomicUsize::new(0);
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == TESTS {
        let _ = std::fs::remove_dir_all(&fx().dir);
    }
}

#[test]
fn text_and_data_files() {
    let fx = fx();
    let (latin, latin2) = (fx.p("latin.txt"), fx.at("latin.txt", 2));
    let out = |n: &str| fx.p(&format!("out-{n}"));

    // A tokenizer directory whose tokenizer.json is cut short, one whose merges.txt has a
    // malformed line 3, one whose merges.txt has a Latin-1 byte on line 3.
    let badtok = fx.p("badtok");
    std::fs::create_dir_all(&badtok).unwrap();
    write(&badtok.join("tokenizer.json"), "{\"model\": ");
    let badmerges = fx.copy("hf", "badmerges");
    write(&badmerges.join("merges.txt"), "#version: 0.2\nĠ t\nfoo\n");
    let latinmerges = fx.copy("hf", "latinmerges");
    let merges = b"#version: 0.2\n\xc4\xa0 t\nh \xe9\n";
    write(&latinmerges.join("merges.txt"), merges);

    // Prepared data directories, each broken in one way.
    let short = fx.copy("data", "data-short");
    truncate(&short.join("train.bin"), 20);
    let magic = fx.copy("data", "data-magic");
    write(&magic.join("train.bin"), [b'X'; 40]);
    let body = fx.copy("data", "data-body");
    let len = std::fs::metadata(body.join("train.bin")).unwrap().len();
    truncate(&body.join("train.bin"), len as usize - 100);
    let ids = fx.copy("data", "data-ids");
    let mut b = std::fs::read(ids.join("train.bin")).unwrap();
    b[30] = 250; // a token id far beyond the 29-character vocabulary
    write(&ids.join("train.bin"), b);
    let chartok = fx.copy("data", "data-tok");
    write(&chartok.join("tokenizer_char.json"), "{\"chars\": ");

    let train = |data: &Path, o: &str| {
        let words = format!("train --data {{}} --out {{}} --max-steps 1 {TINY_TRAIN}");
        argv(&words, &[data, &out(o)])
    };
    let named = |d: &Path, f: &str| d.join(f).display().to_string();
    let corpus = fx.p("corpus.txt");
    let mut cases = vec![
        // prepare
        case(
            argv(
                "prepare --tokenizer char {} --out {}",
                &[&latin, &out("p1")],
            ),
            &[&latin2, "UTF-8"],
        ),
        case(
            argv(
                "prepare --tokenizer char {} --out {}",
                &[&fx.p("bad.jsonl"), &out("p2")],
            ),
            &[&fx.at("bad.jsonl", 2), "text"],
        ),
        case(
            argv("prepare {} --out {}", &[&fx.p("missing.txt"), &out("p3")]),
            &[&fx.s("missing.txt")],
        ),
        case(
            argv(
                "prepare --tokenizer {} {} --out {}",
                &[&badtok, &corpus, &out("p4")],
            ),
            &[&named(&badtok, "tokenizer.json"), "line 1"],
        ),
        // tokenizer train (which has no --lossy to suggest)
        case(
            argv(
                "tokenizer train --vocab-size 300 --out {} {}",
                &[&out("t1"), &latin],
            ),
            &[&latin2, "UTF-8"],
        ),
        case(
            argv("tokenizer train --char --out {} {}", &[&out("t2"), &latin]),
            &[&latin2, "UTF-8"],
        ),
        // tokenize
        case(argv("tokenize {}", &[&latin]), &[&latin2, "--lossy"]),
        case(
            argv("tokenize --tokenizer {} {}", &[&badmerges, &corpus]),
            &[&named(&badmerges, "merges.txt"), "line 3"],
        ),
        case(
            argv("tokenize --tokenizer {} {}", &[&latinmerges, &corpus]),
            &[
                &format!("{}:3:", named(&latinmerges, "merges.txt")),
                "UTF-8",
            ],
        ),
        // train: a text file, token files, a TOML configuration
        case(train(&latin, "r1"), &[&latin2, "UTF-8"]),
        case(
            train(&short, "r2"),
            &[&named(&short, "train.bin"), "header"],
        ),
        case(train(&magic, "r3"), &[&named(&magic, "train.bin"), "magic"]),
        case(train(&body, "r4"), &[&named(&body, "train.bin"), "tokens"]),
        case(train(&ids, "r5"), &[&named(&ids, "train.bin"), "token id"]),
        case(
            argv(
                "train --config {} --out {}",
                &[&fx.p("bad.toml"), &out("r6")],
            ),
            &[&fx.s("bad.toml"), "line 2"],
        ),
        // bleu
        case(
            argv("bleu --ref {} {}", &[&fx.p("ref3.txt"), &fx.p("hyp2.txt")]),
            &[&fx.s("hyp2.txt"), "2 lines", &fx.s("ref3.txt")],
        ),
        case(
            argv("bleu --ref {} {}", &[&latin, &fx.p("hyp2.txt")]),
            &[&latin2, "UTF-8"],
        ),
        case(
            argv("bleu --ref {} {}", &[&fx.p("ref3.txt"), &latin]),
            &[&latin2, "UTF-8"],
        ),
    ];
    // The char tokenizer of a data directory, named once.
    let mut c = case(train(&chartok, "r7"), &["line 1"]);
    c.once = Some(named(&chartok, "tokenizer_char.json"));
    cases.push(c);
    check(cases);
    finished();
}

#[test]
fn gpt_model_directories_and_runs() {
    let fx = fx();
    let named = |d: &Path, f: &str| d.join(f).display().to_string();
    let corpus = fx.p("corpus.txt");

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
    write(
        &run_tok.join("checkpoint/tokenizer_char.json"),
        "{\"chars\": ",
    );

    let gen = |m: &Path| argv("generate --model {} --prompt hi --max-new-tokens 2", &[m]);
    let score = |m: &Path, text: &Path| argv("score --model {} {}", &[m, text]);
    let data = fx.p("data");
    let resume = |run: &Path| {
        let words = "train --resume --data {} --out {} --max-steps 3 --sample-tokens 0";
        argv(words, &[&data, run])
    };
    let mut cases = vec![
        case(gen(&cfg_cut), &[&named(&cfg_cut, "config.json"), "line 1"]),
        case(
            score(&cfg_cut, &corpus),
            &[&named(&cfg_cut, "config.json"), "line 1"],
        ),
        case(
            argv("sample --model {}", &[&cfg_cut]),
            &[&named(&cfg_cut, "config.json")],
        ),
        case(
            gen(&weights_cut),
            &[&named(&weights_cut, "model.safetensors"), "truncated"],
        ),
        case(
            score(&weights_cut, &corpus),
            &[&named(&weights_cut, "model.safetensors"), "truncated"],
        ),
        case(gen(&garbage), &[&named(&garbage, "model.safetensors")]),
        case(gen(&no_tok), &[&no_tok.display().to_string(), "tokenizer"]),
        case(
            gen(&shape),
            &[
                &named(&shape, "model.safetensors"),
                "transformer.wte.weight",
                "[50257, 32]",
            ],
        ),
        case(
            score(&heads, &corpus),
            &[&named(&heads, "config.json"), "n_head"],
        ),
        case(gen(&merges), &[&named(&merges, "merges.txt"), "line 3"]),
        case(
            score(&fx.p("hf"), &fx.p("latin.txt")),
            &[&fx.at("latin.txt", 2), "UTF-8"],
        ),
        case(
            score(&fx.p("hf"), &fx.p("missing.txt")),
            &[&fx.s("missing.txt")],
        ),
        case(
            resume(&run_model),
            &[
                &named(&run_model, "checkpoint/model.safetensors"),
                "truncated",
            ],
        ),
        case(
            resume(&run_opt),
            &[
                &named(&run_opt, "checkpoint/optimizer.safetensors"),
                "truncated",
            ],
        ),
        case(
            resume(&run_state),
            &[&named(&run_state, "checkpoint/trainer_state.json")],
        ),
    ];
    // The char tokenizer of a checkpoint, named once.
    let mut c = case(
        argv("sample --model {} --max-new-tokens 2", &[&run_tok]),
        &["line 1"],
    );
    c.once = Some(named(&run_tok, "checkpoint/tokenizer_char.json"));
    cases.push(c);
    check(cases);
    finished();
}

#[test]
fn translation_files_and_runs() {
    let fx = fx();
    let out = |n: &str| fx.p(&format!("out-{n}"));
    let (notab2, latin_tsv2) = (fx.at("notab.tsv", 2), fx.at("latin.tsv", 2));

    let cfg_cut = fx.copy("tr", "tr-config-cut");
    let cfg_cut_file = tr_ckpt(&cfg_cut).join("config.json");
    write(&cfg_cut_file, "{\"transformer\": ");
    let cfg_cut_file = cfg_cut_file.display().to_string();
    let weights_cut = fx.copy("tr", "tr-weights-cut");
    let weights_cut_file = tr_ckpt(&weights_cut).join("model.safetensors");
    truncate(&weights_cut_file, 300);
    let weights_cut_file = weights_cut_file.display().to_string();
    let heads = fx.copy("tr", "tr-heads");
    let heads_file = tr_ckpt(&heads).join("config.json");
    edit(&heads_file, "\"n_head\": 4", "\"n_head\": 3");
    let heads_file = heads_file.display().to_string();

    let (train, notab, empty, latin_tsv) = (
        fx.p("train.tsv"),
        fx.p("notab.tsv"),
        fx.p("empty.tsv"),
        fx.p("latin.tsv"),
    );
    let tr_train = |train: &Path, valid: &Path, o: &str| {
        let words = format!(
            "translate train --train {{}} --valid {{}} --out {{}} --max-steps 1 --strict \
             {TINY_TRANSLATE}"
        );
        argv(&words, &[train, valid, &out(o)])
    };
    let eval = |model: &Path, pairs: &Path| {
        let words = "translate eval --model {} --pairs {} --beam 1 --strict";
        argv(words, &[model, pairs])
    };
    let average = |model: &Path, o: &str| {
        argv(
            "translate average --model {} --last 1 --out {}",
            &[model, &out(o)],
        )
    };
    let bench = |model: &Path, train: &Path| {
        let words = "bench translate --model {} --train {} --test {} \
                     --presets transformer-tiny --steps 1 --limit 2";
        argv(words, &[model, train, &fx.p("train.tsv")])
    };
    let resume = argv(
        "translate train --train {} --valid {} --out {} --resume --max-steps 3",
        &[&train, &train, &weights_cut],
    );
    let tr = fx.p("tr");
    let cases = vec![
        case(tr_train(&notab, &train, "a1"), &[&notab2, "no tab"]),
        case(
            tr_train(&empty, &train, "a2"),
            &[&fx.at("empty.tsv", 3), "empty side"],
        ),
        case(tr_train(&train, &notab, "a3"), &[&notab2, "no tab"]),
        case(tr_train(&latin_tsv, &train, "a4"), &[&latin_tsv2, "UTF-8"]),
        case(
            tr_train(&fx.p("missing.tsv"), &train, "a5"),
            &[&fx.s("missing.tsv")],
        ),
        case(resume, &[&weights_cut_file, "truncated"]),
        case(eval(&tr, &notab), &[&notab2, "no tab"]),
        case(eval(&tr, &latin_tsv), &[&latin_tsv2, "UTF-8"]),
        case(eval(&cfg_cut, &train), &[&cfg_cut_file]),
        case(eval(&heads, &train), &[&heads_file, "n_head"]),
        case(
            argv("translate --model {} {}", &[&tr, &fx.p("latin.txt")]),
            &[&fx.at("latin.txt", 2), "UTF-8"],
        ),
        case(
            argv("translate --model {} {}", &[&weights_cut, &train]),
            &[&weights_cut_file, "truncated"],
        ),
        case(average(&cfg_cut, "v1"), &[&cfg_cut_file]),
        case(
            average(&weights_cut, "v2"),
            &[&weights_cut_file, "truncated"],
        ),
        case(average(&fx.p("nothing"), "v3"), &[&fx.s("nothing")]),
        // bench translate reads the model and the TSV files before it times anything.
        case(bench(&tr, &latin_tsv), &[&latin_tsv2, "UTF-8"]),
        case(bench(&weights_cut, &train), &[&weights_cut_file]),
    ];
    check(cases);
    finished();
}

/// Without `--strict`, bad TSV lines are skipped, and the report names the first one.
#[test]
fn skipped_tsv_lines_are_reported_with_the_first_line() {
    let fx = fx();
    let notab = fx.p("notab.tsv");
    let first = format!("first: {}:2", notab.display());
    let words = "translate eval --model {} --pairs {} --beam 1";
    let out = gpt(&argv(words, &[&fx.p("tr"), &notab]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 bad lines skipped") && stdout.contains(&first),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --json keeps standard output to JSON and warns on standard error.
    let words = format!(
        "translate train --train {{}} --valid {{}} --out {{}} --max-steps 1 {TINY_TRANSLATE}"
    );
    let err = gpt_ok(&argv(
        &words,
        &[&notab, &fx.p("train.tsv"), &fx.p("out-skip")],
    ));
    assert!(err.contains("warning") && err.contains(&first), "{err}");
    finished();
}
