//! Dev probe: A/B of two ways to run the same generation, alternating runs in one process (on
//! the rayon pool, as the CLI runs) and printing the medians and their ratio, so that the
//! host's drift from minute to minute cancels.
//!
//! - `team`: the decode thread team ([`gpt::kernels::team`]) on against off, in f32, int8 and
//!   f16 (f32 only when a case filter is given).
//! - `panels`: f32 with every weight matrix packed in panels (what [`InferenceModel::load`]
//!   does, [`InferenceModel::pack_all_panels`]) against the LM head alone in panels (what
//!   `gpt serve` packed before).
//!
//! Cases: decoding at batch 1 (28-token prompt, 64 new tokens), 4 and 8 (32 new tokens), and
//! prefills of 64, 128 and 512 tokens.
//!
//! ```sh
//! cargo run --release --example decode_ab -- team|panels MODEL_DIR [REPS] [CASE]
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

/// One measured case: name, prompts, new tokens, the rate it reports.
type Case = (&'static str, Vec<Vec<u32>>, usize, fn(&Timing) -> f64);

/// The median rates of `a` and `b` over `reps` alternating runs of `case` (`a`, `b` prepare
/// the run and return the model to use).
fn ab<'m>(
    case: &Case,
    reps: usize,
    mut a: impl FnMut() -> &'m InferenceModel,
    mut b: impl FnMut() -> &'m InferenceModel,
) -> gpt::Result<(f64, f64)> {
    let (_, prompts, new, rate) = case;
    let cfg = GenerateConfig {
        max_new_tokens: *new,
        sampling: SamplingConfig::greedy(),
        seed: 0,
        eos: None,
    };
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        for (side, rates) in [(0, &mut ra), (1, &mut rb)] {
            let m = if side == 0 { a() } else { b() };
            let (_, t) = gpt::threads::on_pool(|| generate(m, prompts, &cfg, |_, _| Ok(false)))?;
            rates.push(rate(&t));
        }
    }
    Ok((median(ra), median(rb)))
}

fn main() -> gpt::Result<()> {
    let usage = "usage: decode_ab team|panels MODEL_DIR [REPS] [CASE]";
    let mut args = std::env::args().skip(1);
    let mode = args.next().expect(usage);
    let dir = PathBuf::from(args.next().expect(usage));
    let reps: usize = args
        .next()
        .map_or(7, |r| r.parse().expect("REPS is a number"));
    let only = args.next();
    let decode = Timing::decode_tokens_per_sec;
    let prefill = Timing::prefill_tokens_per_sec;
    let cases: Vec<Case> = vec![
        ("decode b1", vec![prompt(28, 0)], 64, decode),
        (
            "decode b4",
            (0..4).map(|s| prompt(28, s)).collect(),
            32,
            decode,
        ),
        (
            "decode b8",
            (0..8).map(|s| prompt(28, s)).collect(),
            32,
            decode,
        ),
        ("prefill 64", vec![prompt(64, 0)], 1, prefill),
        ("prefill 128", vec![prompt(128, 0)], 1, prefill),
        ("prefill 512", vec![prompt(512, 0)], 1, prefill),
    ];
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.0.contains(o)))
        .collect();
    match mode.as_str() {
        "team" => {
            let dtypes = match only {
                Some(_) => vec![WeightDtype::F32],
                None => vec![WeightDtype::F32, WeightDtype::Int8, WeightDtype::F16],
            };
            for dtype in dtypes {
                let model = InferenceModel::load_as(&dir, dtype)?;
                for case in &cases {
                    let on = || {
                        team::set_enabled(true);
                        &model
                    };
                    let off = || {
                        team::set_enabled(false);
                        &model
                    };
                    let (a, b) = ab(case, reps, on, off)?;
                    println!(
                        "{dtype:?} {}: team {a:.1} tokens/s, rayon {b:.1}, ratio {:.3}",
                        case.0,
                        a / b
                    );
                }
            }
            team::set_enabled(true);
        }
        "panels" => {
            // `load` packs every f32 matrix; the reference keeps only the head's panels.
            let mut head = InferenceModel::load(&dir)?;
            head.drop_panels();
            head.pack_head_panels();
            let all = InferenceModel::load(&dir)?;
            for case in &cases {
                let (a, b) = ab(case, reps, || &all, || &head)?;
                println!(
                    "{}: all panels {a:.1} tokens/s, head panels {b:.1}, ratio {:.3}",
                    case.0,
                    a / b
                );
            }
        }
        _ => panic!("{usage}"),
    }
    Ok(())
}
