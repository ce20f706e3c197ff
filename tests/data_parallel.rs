//! Data-parallel training ([`gpt::dist`]) with the ranks as threads of one process
//! ([`World::local_group`], the same loop and collectives as under `mpirun`, without MPI): N ranks
//! × batch B take the steps of one process × batch N·B (losses and weights within 1e-5), with
//! and without `--zero1`; a resume on 2 ranks equals the uninterrupted 2-rank run; ranks that
//! disagree on the configuration stop with an error that says so. `tests/mpi.rs` runs the same
//! through `mpirun` (cargo feature `mpi`).

use gpt::dist::World;
use gpt::model::checkpoint;
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

/// Runs `train` on `n` ranks (threads), rank `r` with `cfg(r)` and `opts(world)`.
fn on_ranks(
    n: usize,
    cfg: impl Fn(usize) -> TrainConfig + Sync,
    opts: impl Fn(World) -> TrainOptions + Sync,
) -> Vec<gpt::error::Result<TrainOutcome>> {
    let worlds = World::local_group(n).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = worlds
            .into_iter()
            .map(|w| {
                let (cfg, opts) = (&cfg, &opts);
                s.spawn(move || train(&cfg(w.rank()), &opts(w)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn weights(dir: &Path) -> Vec<f32> {
    checkpoint::load(&dir.join("checkpoint"))
        .unwrap()
        .params
        .data
}

#[test]
fn two_ranks_of_batch_b_take_the_steps_of_one_process_of_batch_2b() {
    let dir = tmpdir("equal");
    let one = train(&config(&dir, "one", 8), &quiet()).unwrap();
    for zero1 in [false, true] {
        let out = if zero1 { "two-zero1" } else { "two" };
        let ranks = on_ranks(
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
        let full = on_ranks(
            2,
            |_| cfg(straight),
            |world| TrainOptions {
                world,
                zero1,
                ..quiet()
            },
        );
        let first = on_ranks(
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
        let second = on_ranks(
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
    let results = on_ranks(
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
