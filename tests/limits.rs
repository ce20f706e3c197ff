//! Every size has a limit, checked before allocating (issue 12, section 2), through the built
//! binary: sizes that overflow or do not fit in memory are errors naming the flag (never an
//! overflow panic or an allocator abort), `--threads` above the cores is capped with a
//! warning, and generation past the context says what happens and streams in `--json` mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-limits-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 20 kB of the bundled corpus (a char vocabulary of 62).
fn small_text(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("data/shakespeare.txt"))
            .unwrap();
    let p = dir.join("small.txt");
    std::fs::write(&p, &text[..20_000]).unwrap();
    p
}

/// Runs the binary with a time limit (a hang is a failure, not a stuck test).
fn gpt(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpt"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "gpt {args:?} ran over {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A failed run with exit status 1 (an error, not a panic's 101 or an abort's 134) whose
/// message contains every one of `wanted`.
fn assert_error(o: &Output, wanted: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        !e.contains("panicked") && !e.contains("memory allocation"),
        "{e}"
    );
    for w in wanted {
        assert!(e.contains(w), "`{w}` missing in: {e}");
    }
}

const MIN: Duration = Duration::from_secs(120);

/// On main: `--batch-size 2^64-1` panicked (multiply overflow in the batch sampler),
/// `--block-size 1e9` aborted in the allocator (exit 134), a huge `--n-embd` panicked in the
/// parameter count, and `--n-layer 1e8` swapped (timed out).
#[test]
fn train_sizes_that_overflow_or_do_not_fit_are_errors_naming_the_flag() {
    let dir = tmpdir("train");
    let data = small_text(&dir);
    let out = dir.join("run");
    let base = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-steps",
        "1",
        "--sample-tokens",
        "0",
        "--threads",
        "1",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        gpt(&args, MIN)
    };
    let o = run(&["--batch-size", "18446744073709551615"]);
    assert_error(&o, &["--batch-size 18446744073709551615", "overflows"]);
    let o = run(&["--grad-accum", "18446744073709551615"]);
    assert_error(&o, &["--grad-accum", "overflows"]);
    let o = run(&["--n-embd", "4611686018427387904", "--n-head", "1"]);
    assert_error(&o, &["n_embd", "overflows"]);
    let o = run(&["--block-size", "1000000000"]);
    assert_error(
        &o,
        &[
            "--block-size 1000000000",
            "of activations",
            "available",
            "--no-memory-check",
        ],
    );
    let o = run(&["--n-layer", "100000000"]);
    assert_error(&o, &["--n-layer 100000000", "available"]);
    let o = run(&["--n-embd", "100", "--n-head", "3"]);
    assert_error(&o, &["n_head", "divisible"]);
    let o = run(&["--batch-size", "0"]);
    assert_error(&o, &["batch_size", "at least 1"]);
    // A run that fits starts, prints its estimate, and the override flag is accepted.
    let o = run(&[
        "--n-layer",
        "1",
        "--n-embd",
        "16",
        "--n-head",
        "1",
        "--block-size",
        "16",
        "--batch-size",
        "2",
        "--eval-iters",
        "1",
        "--no-memory-check",
    ]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(e.contains("memory: ≈") && e.contains("activations"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// On main: a `config.json` asking for a context of 10¹² positions (sinusoidal, so no weights
/// to check it against) aborted `gpt generate` and `gpt score` in the allocator (exit 134).
#[test]
fn a_model_too_big_for_memory_is_refused_before_loading() {
    let dir = tmpdir("load");
    let data = small_text(&dir);
    let run = dir.join("run");
    let o = gpt(
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--max-steps",
            "1",
            "--n-layer",
            "1",
            "--n-embd",
            "16",
            "--n-head",
            "1",
            "--block-size",
            "16",
            "--batch-size",
            "2",
            "--positions",
            "sinusoidal",
            "--sample-tokens",
            "0",
            "--eval-iters",
            "1",
            "--threads",
            "1",
        ],
        MIN,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let model = run.to_str().unwrap();
    // The trained model loads.
    let o = gpt(
        &[
            "generate",
            "--model",
            model,
            "--prompt",
            "To",
            "--max-new-tokens",
            "3",
        ],
        MIN,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let config = run.join("checkpoint/config.json");
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    v["gpt"]["n_ctx"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = gpt(&["generate", "--model", model, "--prompt", "To"], MIN);
    assert_error(
        &o,
        &["n_ctx 1000000000000", "available", "--no-memory-check"],
    );
    let o = gpt(&["score", "--model", model, data.to_str().unwrap()], MIN);
    assert_error(
        &o,
        &["n_ctx 1000000000000", "available", "--no-memory-check"],
    );
    // Sizes that overflow are errors naming the field, with or without the check.
    v["gpt"]["n_ctx"] = serde_json::json!(u64::MAX / 2);
    std::fs::write(&config, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = gpt(
        &[
            "generate",
            "--model",
            model,
            "--prompt",
            "To",
            "--no-memory-check",
        ],
        MIN,
    );
    assert_error(&o, &["n_ctx", "overflows"]);
    std::fs::remove_dir_all(&dir).ok();
}

fn write_pairs(dir: &Path) -> (PathBuf, PathBuf) {
    let words = ["uno", "dos", "tres", "cuatro", "cinco", "seis"];
    let en = ["one", "two", "three", "four", "five", "six"];
    let mut lines = String::new();
    for i in 0..40 {
        let n = 1 + i % 4;
        let s: Vec<&str> = (0..n).map(|j| words[(i + j * 5) % 6]).collect();
        let t: Vec<&str> = (0..n).map(|j| en[(i + j * 5) % 6]).collect();
        lines.push_str(&format!("{}\t{}\n", s.join(" "), t.join(" ")));
    }
    let (tr, va) = (dir.join("train.tsv"), dir.join("valid.tsv"));
    std::fs::write(&tr, &lines).unwrap();
    std::fs::write(&va, lines.lines().take(8).collect::<Vec<_>>().join("\n")).unwrap();
    (tr, va)
}

/// On main: `--max-len 2^64-1` panicked (add overflow in the config check), a `--max-len` of
/// 10¹² aborted in the allocator (the position tables); `gpt translate --beam 2^64-1` and
/// `--max-extra 2^64-1` panicked (overflow) and `--beam 10⁸` ran out of time.
#[test]
fn translate_sizes_are_checked_before_allocating() {
    let dir = tmpdir("translate");
    let (tr, va) = write_pairs(&dir);
    let out = dir.join("run");
    let base = [
        "translate",
        "train",
        "--train",
        tr.to_str().unwrap(),
        "--valid",
        va.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--preset",
        "transformer-tiny",
        "--vocab-size",
        "300",
        "--max-steps",
        "1",
        "--threads",
        "1",
    ];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        gpt(&args, MIN)
    };
    let o = run(&["--max-len", "18446744073709551615"]);
    assert_error(&o, &["--max-len"]);
    let o = run(&[
        "--max-len",
        "1000000000000",
        "--max-tokens",
        "1000000000002",
    ]);
    assert_error(&o, &["max_len", "position tables", "--no-memory-check"]);
    let o = run(&["--max-tokens", "18446744073709551615", "--grad-accum", "2"]);
    assert_error(&o, &["--max-tokens", "--grad-accum", "overflows"]);
    // Decoding: beam × batch overflows are errors, a huge --batch is bounded by the input,
    // and --max-extra past the position table is the table's length.
    // The refused runs above left the trained tokenizer in the run directory.
    let o = run(&["--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = dir.join("src.txt");
    std::fs::write(&src, "uno dos\n").unwrap();
    let decode = |extra: &[&str]| {
        let mut args = vec!["translate", "--model", out.to_str().unwrap()];
        args.extend(extra);
        args.extend(["--threads", "1", src.to_str().unwrap()]);
        gpt(&args, MIN)
    };
    let o = decode(&["--beam", "18446744073709551615"]);
    assert_error(&o, &["--beam 18446744073709551615", "overflows"]);
    let o = decode(&["--beam", "100000000", "--batch", "1000"]);
    assert_error(&o, &["--batch 1 × --beam 100000000", "available"]);
    for extra in [
        ["--batch", "18446744073709551615"],
        ["--max-extra", "18446744073709551615"],
    ] {
        let o = decode(&extra);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// On main: `--threads 100000` spawned 100,000 threads and did not finish in minutes.
#[test]
fn threads_above_the_cores_are_capped_with_a_warning() {
    let dir = tmpdir("threads");
    let f = dir.join("hello.txt");
    std::fs::write(&f, "hello world").unwrap();
    let o = gpt(
        &[
            "--threads",
            "100000",
            "tokenize",
            "--tokenizer",
            "gpt2",
            f.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("warning: --threads 100000 is more than the") && e.contains("cores"),
        "{e}"
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "31373 995");
    let o = gpt(
        &["--threads", "0", "tokenize", f.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_error(&o, &["--threads", "at least 1"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// On main: `--vocab-size 2^64-1` panicked (capacity overflow).
#[test]
fn a_vocabulary_past_u32_ids_is_an_error() {
    let dir = tmpdir("vocab");
    let f = dir.join("text.txt");
    std::fs::write(&f, "the cat sat on the mat. ".repeat(20)).unwrap();
    let out = dir.join("tok");
    let o = gpt(
        &[
            "tokenizer",
            "train",
            "--vocab-size",
            "18446744073709551615",
            "--out",
            out.to_str().unwrap(),
            f.to_str().unwrap(),
        ],
        MIN,
    );
    assert_error(&o, &["vocab size 18446744073709551615", "u32"]);
    std::fs::remove_dir_all(&dir).ok();
}

/// The tiny GPT-2 fixture (n_ctx = 128) with the GPT-2 tokenizer.
fn gpt2_fixture(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    let fx = common::fixture_path("hf_gpt2");
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fx.join(f), m.join(f)).unwrap();
    }
    let tok = Path::new(env!("CARGO_MANIFEST_DIR")).join("tokenizer/data/gpt2");
    for f in ["vocab.json", "merges.txt"] {
        std::fs::copy(tok.join(f), m.join(f)).unwrap();
    }
    m
}

/// On main: a prompt + `--max-new-tokens` past the context slid the window without a word,
/// and `--json` printed nothing until the very end (no `delta` lines, no `context_slides`).
#[test]
fn generation_past_the_context_says_so_and_json_streams() {
    let dir = tmpdir("context");
    let model = gpt2_fixture(&dir);
    let m = model.to_str().unwrap();
    let o = gpt(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "Hello, my dog is cute",
            "--max-new-tokens",
            "200",
            "--temperature",
            "0",
            "--ignore-eos",
            "--json",
            "--threads",
            "1",
        ],
        MIN,
    );
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("note: prompt 0 (")
            && e.contains("--max-new-tokens 200 is more than the context n_ctx = 128")
            && e.contains("slides"),
        "{e}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (last, chunks) = lines.split_last().unwrap();
    assert!(chunks.len() > 1, "no streamed chunks: {stdout}");
    let streamed: String = chunks
        .iter()
        .map(|c| {
            assert_eq!(c["index"], 0, "{c}");
            c["delta"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(last["text"].as_str().unwrap(), streamed);
    assert_eq!(last["finish_reason"], "length");
    assert_eq!(last["ids"].as_array().unwrap().len(), 200);
    assert!(last["context_slides"].as_u64().unwrap() >= 1, "{last}");
    // Within the context: no note, no slide.
    let o = gpt(
        &[
            "generate",
            "--model",
            m,
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "5",
            "--json",
            "--threads",
            "1",
        ],
        MIN,
    );
    assert!(o.status.success() && !stderr(&o).contains("note:"));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let last: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["context_slides"], 0);
    std::fs::remove_dir_all(&dir).ok();
}
