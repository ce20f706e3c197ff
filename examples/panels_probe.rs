//! Dev probe: f32 generation with every weight matrix packed in panels (what
//! [`InferenceModel::load`] does, [`InferenceModel::pack_all_panels`]) against the head alone
//! in panels (what `gpt serve` packed before), alternating runs in one process; prints medians
//! and their ratio. Products of
//! up to `F32_STREAM_ROWS` rows run from the panels, more rows through `gemm` on the original
//! matrices.
//!
//! ```sh
//! cargo run --release --example panels_probe -- MODEL_DIR [REPS]
//! ```
use gpt::generate::{generate, GenerateConfig, InferenceModel, SamplingConfig, Timing};
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
    let dir = PathBuf::from(args.next().expect("usage: panels_probe MODEL_DIR [REPS]"));
    let reps: usize = args
        .next()
        .map_or(7, |r| r.parse().expect("REPS is a number"));
    let cfg = |new| GenerateConfig {
        max_new_tokens: new,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    // `load` packs every f32 matrix; the reference keeps only the head's panels.
    let mut head = InferenceModel::load(&dir)?;
    head.drop_panels();
    head.pack_head_panels();
    let all = InferenceModel::load(&dir)?;
    type Case = (&'static str, Vec<Vec<u32>>, usize, fn(&Timing) -> f64);
    let cases: Vec<Case> = vec![
        (
            "decode b1",
            vec![prompt(28, 0)],
            64,
            Timing::decode_tokens_per_sec,
        ),
        (
            "decode b4",
            (0..4).map(|s| prompt(28, s)).collect(),
            32,
            Timing::decode_tokens_per_sec,
        ),
        (
            "decode b8",
            (0..8).map(|s| prompt(28, s)).collect(),
            32,
            Timing::decode_tokens_per_sec,
        ),
        (
            "prefill 64",
            vec![prompt(64, 0)],
            1,
            Timing::prefill_tokens_per_sec,
        ),
        (
            "prefill 512",
            vec![prompt(512, 0)],
            1,
            Timing::prefill_tokens_per_sec,
        ),
        (
            "prefill 4x256",
            (0..4).map(|s| prompt(256, s)).collect(),
            1,
            Timing::prefill_tokens_per_sec,
        ),
    ];
    for (name, prompts, new, rate) in &cases {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            for (m, v) in [(&all, &mut a), (&head, &mut b)] {
                let (_, t) =
                    gpt::threads::on_pool(|| generate(m, prompts, &cfg(*new), |_, _| Ok(false)))?;
                v.push(rate(&t));
            }
        }
        let (x, y) = (median(a), median(b));
        println!(
            "{name}: all panels {x:.1}, head panels {y:.1}, ratio {:.3}",
            x / y
        );
    }
    Ok(())
}
