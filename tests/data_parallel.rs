//! Data-parallel training ([`gpt::dist`]) with the ranks as threads of one process
//! ([`World::local_group`], the same loop and collectives as under `mpirun`, without MPI): N ranks
//! × batch B take the steps of one process × batch N·B (losses and weights within 1e-5), with
//! and without `--zero1`; a resume on 2 ranks equals the uninterrupted 2-rank run; ranks that
//! disagree on the configuration stop with an error that says so. `tests/mpi.rs` runs the same
//! through `mpirun` (cargo feature `mpi`).

mod common;

use common::runs::{max_diff, weights};
use gpt::dist::World;
use gpt::train::{train, TrainConfig, TrainOptions, TrainOutcome};
use std::path::{Path, PathBuf};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-test-dp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path, out: &str, batch_size: usize) -> TrainConfig {
    let corpus = dir.join("corpus.txt");
    if !corpus.exists() {
        let text: String = (0..400)
            .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
            .collect();
        std::fs::write(&corpus, text).unwrap();
    }
    TrainConfig {
        preset: "tiny".into(),
        data: Some(corpus),
        tokenizer: "char".into(),
        out: dir.join(out),
        max_steps: 10,
        batch_size,
        block_size: 16,
        grad_accum: 2,
        lr: 3e-3,
        warmup_steps: 2,
        dropout: Some(0.0),
        n_layer: Some(2),
        n_head: Some(2),
        n_embd: Some(32),
        eval_interval: 5,
        eval_iters: 2,
        ckpt_interval: 100,
        sample_tokens: 0,
        ..TrainConfig::default()
    }
}

fn quiet() -> TrainOptions {
    TrainOptions {
        quiet: true,
        ..TrainOptions::default()
    }
}

/// Runs `f(world)` on `n` ranks (threads) and returns every rank's result in rank order.
fn on_ranks<T: Send>(n: usize, f: impl Fn(World) -> T + Sync) -> Vec<T> {
    let worlds = World::local_group(n).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = worlds
            .into_iter()
            .map(|w| {
                let f = &f;
                s.spawn(move || f(w))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// `train` on `n` ranks, rank `r` with `cfg(r)` and `opts(world)`.
fn train_on_ranks(
    n: usize,
    cfg: impl Fn(usize) -> TrainConfig + Sync,
    opts: impl Fn(World) -> TrainOptions + Sync,
) -> Vec<gpt::error::Result<TrainOutcome>> {
    on_ranks(n, |w| train(&cfg(w.rank()), &opts(w)))
}

#[test]
fn two_ranks_of_batch_b_take_the_steps_of_one_process_of_batch_2b() {
    let dir = tmpdir("equal");
    let one = train(&config(&dir, "one", 8), &quiet()).unwrap();
    for zero1 in [false, true] {
        let out = if zero1 { "two-zero1" } else { "two" };
        let ranks = train_on_ranks(
            2,
            |_| config(&dir, out, 4),
            |world| TrainOptions {
                world,
                zero1,
                ..quiet()
            },
        );
        for r in &ranks {
            let r = r.as_ref().unwrap();
            assert_eq!(r.step, 10);
            assert!(
                max_diff(&r.losses, &one.losses) <= 1e-5,
                "zero1 {zero1}: losses {:?} vs one process {:?}",
                r.losses,
                one.losses
            );
        }
        // Rank 0 evaluates on the global batch: the one process's validation loss.
        let val = ranks[0].as_ref().unwrap().val_loss.unwrap();
        assert!((val - one.val_loss.unwrap()).abs() <= 1e-5);
        let d = max_diff(&weights(&dir.join(out)), &weights(&dir.join("one")));
        assert!(d <= 1e-5, "zero1 {zero1}: weights differ by {d}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_resume_on_two_ranks_equals_the_uninterrupted_two_rank_run() {
    let dir = tmpdir("resume");
    for zero1 in [false, true] {
        // Dropout on: every rank's stream must come back from rank 0's checkpoint.
        let cfg = |out: &str| TrainConfig {
            dropout: Some(0.1),
            ..config(&dir, out, 4)
        };
        let (straight, cut) = if zero1 {
            ("straight-z", "cut-z")
        } else {
            ("straight", "cut")
        };
        let full = train_on_ranks(
            2,
            |_| cfg(straight),
            |world| TrainOptions {
                world,
                zero1,
                ..quiet()
            },
        );
        let first = train_on_ranks(
            2,
            |_| cfg(cut),
            |world| TrainOptions {
                world,
                zero1,
                stop_at: Some(4),
                ..quiet()
            },
        );
        assert!(first.iter().all(|r| r.as_ref().unwrap().stopped_early));
        let second = train_on_ranks(
            2,
            |_| cfg(cut),
            |world| TrainOptions {
                world,
                zero1,
                resume: true,
                ..quiet()
            },
        );
        let full_losses = &full[0].as_ref().unwrap().losses;
        for r in &second {
            assert_eq!(
                r.as_ref().unwrap().losses,
                full_losses[4..],
                "zero1 {zero1}: resumed losses differ"
            );
        }
        assert_eq!(
            weights(&dir.join(straight)),
            weights(&dir.join(cut)),
            "zero1 {zero1}: weights after resume differ"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn ranks_that_disagree_on_the_configuration_stop_with_a_clear_error() {
    let dir = tmpdir("disagree");
    let results = train_on_ranks(
        2,
        |r| TrainConfig {
            lr: if r == 0 { 3e-3 } else { 1e-3 },
            ..config(&dir, "run", 4)
        },
        |world| TrainOptions { world, ..quiet() },
    );
    for r in results {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("disagree") && e.contains("rank(s) 1"),
            "got: {e}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn translation_on_two_ranks_equals_one_process_accumulating_both_ranks_batches() {
    use gpt::translate::checkpoint::load_model;
    use gpt::translate::trainer::{train as train_translation, TranslateConfig};
    let dir = tmpdir("translate");
    let (tr, va) = common::translation_pairs::write_pairs(&dir);
    let cfg = |out: &str, grad_accum: usize| TranslateConfig {
        preset: "transformer-tiny".into(),
        train: tr.clone(),
        valid: va.clone(),
        out: dir.join(out),
        vocab_size: 300,
        max_len: 20,
        max_tokens: 64,
        grad_accum,
        max_steps: 6,
        warmup_steps: 3,
        dropout: Some(0.0),
        eval_interval: 3,
        ckpt_interval: 6,
        keep_checkpoints: 1,
        // The key biases' gradients are zero in exact arithmetic: only rounding noise (≈ 1e-10)
        // is left, which Adam with the paper's eps 1e-9 turns into full-size steps whose sign
        // the summation order decides. A larger eps keeps the comparison to what is computed.
        eps: 1e-6,
        ..TranslateConfig::default()
    };
    // One process accumulating 4 batches per step = 2 ranks accumulating 2 each.
    let one = train_translation(&cfg("one", 4), &quiet()).unwrap();
    for zero1 in [false, true] {
        let out = if zero1 { "two-zero1" } else { "two" };
        let ranks = on_ranks(2, |world| {
            let opts = TrainOptions {
                world,
                zero1,
                ..quiet()
            };
            train_translation(&cfg(out, 2), &opts).unwrap()
        });
        for r in &ranks {
            assert!(
                max_diff(&r.losses, &one.losses) <= 1e-5,
                "zero1 {zero1}: {:?} vs {:?}",
                r.losses,
                one.losses
            );
        }
        let (a, _) = load_model(&dir.join(out)).unwrap();
        let (b, _) = load_model(&dir.join("one")).unwrap();
        // The losses agree to 1e-5 at every step; the weights to 1e-3: Adam divides each
        // moment by its square root, so parameters whose gradients are nearly zero (attention
        // key biases and the like) move by steps whose size the last bits of their gradients
        // decide, and the two runs sum those in different orders.
        let d = max_diff(&a.params.data, &b.params.data);
        assert!(d <= 1e-3, "zero1 {zero1}: weights differ by {d}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_epoch_task_on_two_ranks_agrees_and_resumes_exactly() {
    use gpt::logs::train::{train_logs, LogTrainConfig};
    use gpt::rng::Rng;
    // `gpt logs train`: the epoch-order tasks (fine-tuning, SFT, reward, DPO, logs) share out
    // each global batch the same way (`EpochOrder::set_shard`).
    let dir = tmpdir("epoch");
    let mut rng = Rng::new(7);
    let lines: Vec<String> = (0..200)
        .map(|_| {
            let mut keys = vec!["1", "2"];
            for _ in 0..1 + rng.next_u64() % 3 {
                keys.extend(["3", "4"]);
            }
            keys.extend(["5", "6"]);
            keys.join(" ")
        })
        .collect();
    let sessions = dir.join("normal.txt");
    std::fs::write(&sessions, lines.join("\n")).unwrap();
    let cfg = |out: &str| LogTrainConfig {
        sessions: sessions.clone(),
        out: dir.join(out),
        window: 8,
        n_layer: 1,
        n_embd: 32,
        n_head: 2,
        max_steps: Some(12),
        batch_size: 8,
        lr: 1e-2,
        ..LogTrainConfig::default()
    };
    let opts = |world: World, stop_at: Option<usize>, resume: bool| TrainOptions {
        world,
        stop_at,
        resume,
        ..quiet()
    };
    let full = on_ranks(2, |w| {
        train_logs(&cfg("full"), &opts(w, None, false)).unwrap()
    });
    assert_eq!(
        full[0].train.losses, full[1].train.losses,
        "ranks agree on the loss"
    );
    assert!(full[0].train.losses.iter().all(|l| l.is_finite()));
    on_ranks(2, |w| {
        train_logs(&cfg("cut"), &opts(w, Some(5), false)).unwrap()
    });
    let second = on_ranks(2, |w| {
        train_logs(&cfg("cut"), &opts(w, None, true)).unwrap()
    });
    assert_eq!(second[0].train.losses, full[0].train.losses[5..]);
    assert_eq!(weights(&dir.join("full")), weights(&dir.join("cut")));
    std::fs::remove_dir_all(&dir).ok();
}

/// Without the `mpi` feature a process that a launcher started as one of several ranks stops
/// with an error that says how to build; any command but training does so in every build.
#[test]
fn a_rank_of_several_without_mpi_support_is_refused_with_the_fix() {
    let bin = env!("CARGO_BIN_EXE_gpt");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("OMPI_COMM_WORLD_SIZE", "2")
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["bleu", "--ref", "/nonexistent"]);
    assert!(err.contains("only the training commands"), "{err}");
    if !cfg!(feature = "mpi") {
        let err = run(&["train", "--max-steps", "1"]);
        assert!(err.contains("--features mpi"), "{err}");
    }
}
