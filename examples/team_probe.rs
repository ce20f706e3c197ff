//! Dev probe of the decode thread team ([`gpt::kernels::team`]): greedy generation from a model
//! directory in f32, int8 and f16, at batch 1 (28-token prompt, 64 new tokens) and batch 8, and
//! a 128-token prefill, alternating runs with the team on and off in one process (on the rayon
//! pool, as the CLI runs), printing the medians and their ratio.
//!
//! ```sh
//! cargo run --release --example team_probe -- MODEL_DIR [REPS] [CASE]
//! ```

use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig, Timing};
use gpt::kernels::team;
use gpt::model::weight_dtype::WeightDtype;
use std::path::PathBuf;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 97 + seed * 31) % 50000)
        .collect()
}

fn main() -> gpt::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: team_probe MODEL_DIR [REPS] [CASE]"),
    );
    let reps: usize = args
        .next()
        .map_or(7, |r| r.parse().expect("REPS is a number"));
    // Optional: only the cases whose name contains this ("b1", "b8", "prefill"), in f32 only.
    let only = args.next();
    let cfg = |new| GenerateConfig {
        max_new_tokens: new,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    type Case = (&'static str, Vec<Vec<u32>>, usize, fn(&Timing) -> f64);
    let cases: Vec<Case> = vec![
        (
            "decode b1",
            vec![prompt(28, 0)],
            64,
            Timing::decode_tokens_per_sec,
        ),
        (
            "decode b8",
            (0..8).map(|s| prompt(28, s)).collect(),
            32,
            Timing::decode_tokens_per_sec,
        ),
        (
            "prefill 128",
            vec![prompt(128, 0)],
            1,
            Timing::prefill_tokens_per_sec,
        ),
    ];
    let dtypes = match only {
        Some(_) => vec![WeightDtype::F32],
        None => vec![WeightDtype::F32, WeightDtype::Int8, WeightDtype::F16],
    };
    let only = only.unwrap_or_default();
    for dtype in dtypes {
        let model = InferenceModel::load_as(&dir, dtype)?;
        for (name, prompts, new, rate) in cases.iter().filter(|c| c.0.contains(&only)) {
            let (mut on, mut off) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                for enabled in [true, false] {
                    team::set_enabled(enabled);
                    let (_, t) = gpt::threads::on_pool(|| {
                        generate(&model, prompts, &cfg(*new), |_, _| Ok(false))
                    })?;
                    if enabled { &mut on } else { &mut off }.push(rate(&t));
                }
            }
            let (a, b) = (median(on), median(off));
            println!(
                "{dtype:?} {name}: team {a:.1} tokens/s, rayon {b:.1} tokens/s, ratio {:.3}",
                a / b
            );
        }
    }
    Ok(())
}
