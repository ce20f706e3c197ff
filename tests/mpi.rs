//! `mpirun -np 2 gpt train` (cargo feature `mpi`, Open MPI installed; `.ci/run` runs this with
//! `cargo test --release --features mpi --test mpi`): 2 ranks × batch B give the losses and
//! weights of 1 process × batch 2B within 1e-5, with and without `--zero1`; a resume on 2 ranks
//! equals the uninterrupted run; ranks that disagree on the configuration stop with an error;
//! a rank killed mid-run ends the job with a message naming it, and the checkpoint on disk is
//! whole.
#![cfg(feature = "mpi")]

mod common;

use common::runs::{max_diff, weights};
use gpt::model::checkpoint;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gpt");

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-test-mpi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let text: String = (0..400)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    std::fs::write(d.join("corpus.txt"), text).unwrap();
    d
}

/// `gpt train` arguments of a small run in `dir/out` with `--batch-size batch`.
fn args(dir: &Path, out: &str, batch: usize, extra: &[&str]) -> Vec<String> {
    let base = [
        ("--preset", "tiny"),
        ("--tokenizer", "char"),
        ("--n-layer", "2"),
        ("--n-head", "2"),
        ("--n-embd", "32"),
        ("--block-size", "16"),
        ("--max-steps", "20"),
        ("--dropout", "0"),
        ("--lr", "3e-3"),
        ("--sample-tokens", "0"),
    ];
    let mut a = vec!["train".to_string(), "--json".to_string()];
    // A flag in `extra` replaces the base's (clap takes each once).
    for (flag, value) in base {
        if !extra.contains(&flag) {
            a.extend([flag.to_string(), value.to_string()]);
        }
    }
    a.extend([
        "--data".into(),
        dir.join("corpus.txt").display().to_string(),
        "--out".into(),
        dir.join(out).display().to_string(),
        "--batch-size".into(),
        batch.to_string(),
    ]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn mpirun() -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", "2"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1");
    c
}

fn ok(out: Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn losses(json: &str) -> Vec<f32> {
    json.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["loss"].as_f64())
        .map(|x| x as f32)
        .collect()
}

#[test]
fn two_ranks_equal_one_process_with_twice_the_batch_and_resume_exactly() {
    let dir = tmpdir("equal");
    let one = ok(
        Command::new(BIN)
            .args(args(&dir, "one", 8, &[]))
            .output()
            .unwrap(),
        "one process",
    );
    let one = losses(&one);
    assert_eq!(one.len(), 20);
    for (out, extra) in [("two", &[][..]), ("two-zero1", &["--zero1"][..])] {
        let two = ok(
            mpirun()
                .arg(BIN)
                .args(args(&dir, out, 4, extra))
                .output()
                .unwrap(),
            out,
        );
        // Rank 0 alone prints the JSON lines.
        let two = losses(&two);
        assert!(max_diff(&two, &one) <= 1e-5, "{out}: {two:?} vs {one:?}");
        let d = max_diff(&weights(&dir.join(out)), &weights(&dir.join("one")));
        assert!(d <= 1e-5, "{out}: weights differ by {d}");
    }
    // Stop at step 10, resume on 2 ranks: the uninterrupted run's weights.
    ok(
        mpirun()
            .arg(BIN)
            .args(args(&dir, "cut", 4, &["--zero1", "--stop-at-step", "10"]))
            .output()
            .unwrap(),
        "first half",
    );
    ok(
        mpirun()
            .arg(BIN)
            .args(args(&dir, "cut", 4, &["--zero1", "--resume"]))
            .output()
            .unwrap(),
        "resume",
    );
    assert_eq!(weights(&dir.join("cut")), weights(&dir.join("two-zero1")));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ranks_that_disagree_stop_with_an_error() {
    let dir = tmpdir("disagree");
    // MPMD: one rank per command line, the second with another learning rate.
    let c = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "1", BIN])
        .args(args(&dir, "run", 4, &[]))
        .args([":", "-np", "1", BIN])
        .args(args(&dir, "run", 4, &["--lr", "1e-3"]))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&c.stderr);
    assert!(!c.status.success());
    assert!(
        text.contains("disagree on the configuration") && text.contains("rank(s) 1"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The PID of the `gpt` process of MPI rank `rank` whose command line mentions `tag`.
fn pid_of_rank(tag: &str, rank: usize) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        let env = String::from_utf8_lossy(&env);
        if cmd.starts_with(BIN)
            && cmd.contains(tag)
            && env
                .split('\0')
                .any(|v| v == format!("OMPI_COMM_WORLD_RANK={rank}"))
        {
            return Some(pid);
        }
    }
    None
}

#[test]
fn a_killed_rank_ends_the_job_naming_it_and_leaves_a_whole_checkpoint() {
    let dir = tmpdir("kill");
    let mut child = mpirun()
        .arg(BIN)
        .args(args(
            &dir,
            "killed",
            4,
            &["--max-steps", "100000", "--ckpt-interval", "3"],
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let state = dir.join("killed/checkpoint/trainer_state.json");
    let t0 = Instant::now();
    while !state.exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(state.exists(), "no checkpoint after 60 s");
    let pid = pid_of_rank("killed", 1).expect("rank 1's process");
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the job did not end within 60 s of rank 1's death"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("rank 1"),
        "mpirun's message should name rank 1:\n{err}"
    );
    // The checkpoint on disk is whole: its state, weights and optimizer state read back.
    let ckpt = dir.join("killed/checkpoint");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
            .unwrap();
    assert!(state["step"].as_u64().unwrap() >= 3);
    checkpoint::load(&ckpt).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn another_training_command_runs_on_two_ranks_and_rank_0_alone_reports() {
    // `gpt logs train` (an epoch-order task) through the same world and loop.
    let dir = tmpdir("logs");
    let sessions: String = (0..120)
        .map(|i| format!("1 2 {}5 6\n", "3 4 ".repeat(1 + i % 3)))
        .collect();
    std::fs::write(dir.join("normal.txt"), sessions).unwrap();
    let out = mpirun()
        .arg(BIN)
        .args([
            "logs", "train", "--window", "8", "--layers", "1", "--width", "32",
        ])
        .args([
            "--heads",
            "2",
            "--max-steps",
            "6",
            "--batch-size",
            "8",
            "--json",
        ])
        .arg("--sessions")
        .arg(dir.join("normal.txt"))
        .arg("--out")
        .arg(dir.join("logs"))
        .output()
        .unwrap();
    let text = ok(out, "logs train on 2 ranks");
    // One summary line: rank 0's.
    let summaries = text.lines().filter(|l| l.contains("\"model\"")).count();
    assert_eq!(summaries, 1, "{text}");
    assert!(dir.join("logs/checkpoint/model.safetensors").exists());
    std::fs::remove_dir_all(&dir).ok();
}
