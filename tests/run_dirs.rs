//! Run directories are never silently replaced or ignored (issue 12, section 3), checked on the
//! built binary with tiny data: an existing run needs `--resume` or `--overwrite`; a resume says
//! which flags it applies and which it ignores, and refuses a budget with nothing left to do;
//! SIGTERM saves like Ctrl-C and exits 143, and the resume from there is exact; a too-short
//! validation set is warned about once; output files are replaced whole (a hard link to the old
//! file keeps the old bytes) and identical runs write byte-identical checkpoints; commands that
//! would evaluate nothing fail instead of printing a score of 0.
#![cfg(unix)] // signals, `kill` and inode numbers

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-run-dirs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn corpus(dir: &Path) -> PathBuf {
    let p = dir.join("corpus.txt");
    let text: String = (0..400)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn gpt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gpt"));
    c.args(["--threads", "1"]);
    c
}

/// `gpt train` of a 1-layer, width-32 model on 2 × 16 tokens per step, on `data`, into `out`.
fn train_cmd(data: &Path, out: &Path) -> Command {
    let mut c = gpt();
    c.arg("train")
        .args(["--batch-size", "2", "--block-size", "16", "--n-layer", "1"])
        .args(["--n-head", "2", "--n-embd", "32", "--sample-tokens", "0"])
        .args(["--eval-iters", "1", "--warmup-steps", "1"])
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out);
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

fn steps_and_losses(metrics: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(metrics)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn an_existing_run_needs_resume_or_overwrite() {
    let dir = tmpdir("exists");
    let (data, out) = (corpus(&dir), dir.join("run"));
    ok(run(train_cmd(&data, &out).args(["--max-steps", "3"])));
    let weights = out.join("checkpoint/model.safetensors");
    let before = std::fs::read(&weights).unwrap();

    let again = run(train_cmd(&data, &out).args(["--max-steps", "2"]));
    assert!(!again.status.success());
    let err = stderr(&again);
    assert!(
        err.contains(&out.display().to_string())
            && err.contains("--resume")
            && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        before,
        "refusal touched the run"
    );

    let both = run(train_cmd(&data, &out).args(["--resume", "--overwrite"]));
    assert!(!both.status.success());

    ok(run(train_cmd(&data, &out).args([
        "--max-steps",
        "2",
        "--overwrite",
    ])));
    let steps: Vec<u64> = steps_and_losses(&out.join("metrics.jsonl"))
        .iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(steps, [1, 2], "the old run's metrics are gone");
    assert!(!out.join(".previous-run").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_names_ignored_and_changed_flags_and_refuses_nothing_to_do() {
    let dir = tmpdir("resume-flags");
    let (data, out) = (corpus(&dir), dir.join("run"));
    ok(run(train_cmd(&data, &out).args([
        "--max-steps",
        "4",
        "--stop-at-step",
        "2",
        "--lr",
        "0.003",
    ])));
    // Without --lr the saved 0.003 stays (the flags are read over the saved configuration);
    // --batch-size cannot change and is reported; --max-steps can.
    let o = ok(run(gpt()
        .args(["train", "--resume", "--batch-size", "8", "--max-steps", "5"])
        .arg("--out")
        .arg(&out)));
    let err = stderr(&o);
    assert!(
        err.contains("ignored: batch_size 2 (given 8)") && err.contains("max_steps 4 → 5"),
        "{err}"
    );
    assert!(!err.contains("lr "), "lr was not given: {err}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("checkpoint/trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 5);
    assert_eq!(state["config"]["batch_size"], 2);
    assert!((state["config"]["lr"].as_f64().unwrap() - 0.003).abs() < 1e-9);
    // The learning rate may change on resume, and the change is named.
    let o = ok(run(gpt()
        .args(["train", "--resume", "--lr", "0.001", "--max-steps", "6"])
        .arg("--out")
        .arg(&out)));
    assert!(stderr(&o).contains("lr 0.003 → 0.001"), "{}", stderr(&o));

    for max in ["6", "3"] {
        let o = run(gpt()
            .args(["train", "--resume", "--max-steps", max])
            .arg("--out")
            .arg(&out));
        assert!(!o.status.success(), "--max-steps {max} at step 6 must fail");
        assert!(stderr(&o).contains("already at step 6"), "{}", stderr(&o));
    }
    // A finished run resumed without a new budget has nothing to do either.
    let o = run(gpt().args(["train", "--resume", "--out"]).arg(&out));
    assert!(!o.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigterm_saves_exits_143_and_the_resume_is_exact() {
    let dir = tmpdir("sigterm");
    let data = corpus(&dir);
    // A constant learning rate, so the schedule does not depend on max_steps.
    let toml = dir.join("run.toml");
    std::fs::write(&toml, "lr = 0.003\nmin_lr = 0.003\n").unwrap();
    let (a, b) = (dir.join("interrupted"), dir.join("straight"));
    let mut child = train_cmd(&data, &a)
        .args([
            "--json",
            "--max-steps",
            "1000000",
            "--ckpt-interval",
            "1000000",
        ])
        .args(["--eval-interval", "1000000", "--config"])
        .arg(&toml)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "run ended early");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["step"].as_u64().unwrap() >= 3 {
            break;
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // Keep reading so a full pipe cannot block the step that has to finish.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(143), "{err}");

    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("checkpoint/trainer_state.json")).unwrap())
            .unwrap();
    let k = state["step"].as_u64().unwrap();
    assert!(k >= 3);
    let total = (k + 2).to_string();
    ok(run(gpt()
        .args(["train", "--resume", "--max-steps", &total])
        .arg("--out")
        .arg(&a)));
    ok(run(train_cmd(&data, &b)
        .args(["--max-steps", &total, "--config"])
        .arg(&toml)));
    let (ma, mb) = (
        steps_and_losses(&a.join("metrics.jsonl")),
        steps_and_losses(&b.join("metrics.jsonl")),
    );
    assert_eq!(ma.len() as u64, k + 2);
    assert_eq!(
        ma, mb,
        "interrupted + resumed losses differ from a straight run"
    );
    assert!(
        std::fs::read(a.join("checkpoint/model.safetensors")).unwrap()
            == std::fs::read(b.join("checkpoint/model.safetensors")).unwrap(),
        "final weights differ after a SIGTERM and a resume"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sigint_saves_and_exits_130() {
    let dir = tmpdir("sigint");
    let (data, out) = (corpus(&dir), dir.join("run"));
    let mut child = train_cmd(&data, &out)
        .args([
            "--json",
            "--max-steps",
            "1000000",
            "--eval-interval",
            "1000000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    assert!(stdout.read_line(&mut line).unwrap() > 0, "run ended early");
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    assert!(out.join("checkpoint/trainer_state.json").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_too_short_validation_set_is_warned_about_once() {
    let dir = tmpdir("val");
    let data = corpus(&dir);
    let toml = dir.join("run.toml");
    std::fs::write(&toml, "val_fraction = 0.0\n").unwrap();
    let o = ok(run(train_cmd(&data, &dir.join("run"))
        .args([
            "--max-steps",
            "4",
            "--eval-interval",
            "2",
            "--json",
            "--config",
        ])
        .arg(&toml)));
    let err = stderr(&o);
    assert_eq!(
        err.matches("warning: the validation split").count(),
        1,
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("val_loss"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn identical_runs_write_byte_identical_checkpoints() {
    let dir = tmpdir("bytes");
    let data = corpus(&dir);
    for name in ["one", "two"] {
        ok(run(
            train_cmd(&data, &dir.join(name)).args(["--max-steps", "2"])
        ));
    }
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let read = |run: &str| std::fs::read(dir.join(run).join("checkpoint").join(f)).unwrap();
        assert!(
            read("one") == read("two"),
            "{f} differs between identical runs"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A hard link `keep` to `path`: a file written in place changes `keep` too, a file replaced by
/// a rename leaves it alone.
fn hard_link_to(path: &Path, keep: &Path, contents: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(keep, contents).unwrap();
    std::fs::hard_link(keep, path).unwrap();
}

fn assert_replaced(path: &Path, keep: &Path, contents: &str) {
    assert_eq!(
        std::fs::read_to_string(keep).unwrap(),
        contents,
        "{} was written in place, not replaced",
        path.display()
    );
    assert_ne!(
        std::fs::metadata(path).unwrap().ino(),
        std::fs::metadata(keep).unwrap().ino()
    );
}

#[test]
fn tokenizer_files_are_replaced_whole() {
    let dir = tmpdir("tok");
    let data = corpus(&dir);
    let out = dir.join("tok");
    let keep = dir.join("old-vocab.json");
    hard_link_to(&out.join("vocab.json"), &keep, "{\"old\": 0}");
    ok(run(gpt()
        .args(["tokenizer", "train", "--vocab-size", "300", "--no-progress"])
        .arg("--out")
        .arg(&out)
        .arg(&data)));
    assert_replaced(&out.join("vocab.json"), &keep, "{\"old\": 0}");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn write_pairs(dir: &Path) -> (PathBuf, PathBuf) {
    let words = ["uno", "dos", "tres", "cuatro", "cinco", "seis"];
    let en = ["one", "two", "three", "four", "five", "six"];
    let mut lines = String::new();
    for i in 0..40 {
        let n = 1 + i % 3;
        let s: Vec<&str> = (0..n).map(|j| words[(i + j * 5) % 6]).collect();
        let t: Vec<&str> = (0..n).map(|j| en[(i + j * 5) % 6]).collect();
        lines.push_str(&format!("{}\t{}\n", s.join(" "), t.join(" ")));
    }
    let (tr, va) = (dir.join("train.tsv"), dir.join("valid.tsv"));
    std::fs::write(&tr, &lines).unwrap();
    std::fs::write(&va, lines.lines().take(4).collect::<Vec<_>>().join("\n")).unwrap();
    (tr, va)
}

fn translate_train_cmd(train: &Path, valid: &Path, out: &Path) -> Command {
    let mut c = gpt();
    c.args(["translate", "train", "--preset", "transformer-tiny"])
        .args([
            "--vocab-size",
            "300",
            "--max-len",
            "20",
            "--max-tokens",
            "64",
        ])
        .args([
            "--max-steps",
            "2",
            "--warmup-steps",
            "1",
            "--eval-interval",
            "2",
        ])
        .args(["--ckpt-interval", "2"])
        .arg("--train")
        .arg(train)
        .arg("--valid")
        .arg(valid)
        .arg("--out")
        .arg(out);
    c
}

#[test]
fn translate_train_needs_resume_or_overwrite_and_warns_about_an_empty_validation_set() {
    let dir = tmpdir("translate");
    let (train, valid) = write_pairs(&dir);
    let out = dir.join("run");
    ok(run(&mut translate_train_cmd(&train, &valid, &out)));
    let again = run(&mut translate_train_cmd(&train, &valid, &out));
    assert!(!again.status.success());
    let err = stderr(&again);
    assert!(
        err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
    ok(run(
        translate_train_cmd(&train, &valid, &out).arg("--overwrite")
    ));
    let ckpts: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(ckpts.len(), 1);
    // A resume with nothing to do fails; one that changes what it cannot says so.
    let resume = |extra: &[&str]| {
        run(gpt()
            .args(["translate", "train", "--resume", "--out"])
            .arg(&out)
            .args(extra))
    };
    let o = resume(&[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already at step 2"), "{}", stderr(&o));
    let o = ok(resume(&["--max-steps", "3", "--vocab-size", "500"]));
    assert!(
        stderr(&o).contains("ignored: vocab_size 300 (given 500)")
            && stderr(&o).contains("max_steps 2 → 3"),
        "{}",
        stderr(&o)
    );

    // A validation set with no usable pair is warned about.
    let bad_valid = dir.join("bad-valid.tsv");
    std::fs::write(&bad_valid, "no tab here\n").unwrap();
    let o = ok(run(&mut translate_train_cmd(
        &train,
        &bad_valid,
        &dir.join("run2"),
    )));
    assert_eq!(
        stderr(&o).matches("warning: the validation set").count(),
        1,
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn evaluating_nothing_fails_and_eval_output_is_replaced_whole() {
    let dir = tmpdir("eval");
    let (train, valid) = write_pairs(&dir);
    let out = dir.join("run");
    ok(run(&mut translate_train_cmd(&train, &valid, &out)));
    let eval = |pairs: &Path, extra: &[&str]| {
        run(gpt()
            .args(["translate", "eval", "--beam", "1", "--model"])
            .arg(&out)
            .arg("--pairs")
            .arg(pairs)
            .args(extra))
    };
    let empty = dir.join("empty.tsv");
    std::fs::write(&empty, "").unwrap();
    let no_pairs = dir.join("no-pairs.tsv");
    std::fs::write(&no_pairs, "just text\nmore text\n").unwrap();
    for (pairs, extra, why) in [
        (&empty, &[][..], "no pairs"),
        (&no_pairs, &[][..], "none of its 2 lines"),
        (&valid, &["--limit", "0"][..], "--limit 0"),
    ] {
        let o = eval(pairs, extra);
        assert!(!o.status.success(), "{why}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("nothing to evaluate") && stderr(&o).contains(why),
            "{}",
            stderr(&o)
        );
    }
    let hyps = dir.join("hyps.txt");
    let keep = dir.join("old-hyps.txt");
    hard_link_to(&hyps, &keep, "old\n");
    ok(eval(&valid, &["--output", hyps.to_str().unwrap()]));
    assert_replaced(&hyps, &keep, "old\n");
    assert_eq!(std::fs::read_to_string(&hyps).unwrap().lines().count(), 4);

    // BLEU of nothing is an error too.
    let o = run(gpt().args(["bleu", "--ref"]).arg(&empty).arg(&empty));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("nothing to score"), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).ok();
}
