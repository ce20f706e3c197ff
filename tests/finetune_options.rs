//! The options of `gpt finetune` beyond the paper's recipe:
//! - `from_scratch` keeps the base's architecture and tokenizer but none of its weights (GPT-1's
//!   "no pre-training" ablation): its trunk differs from the base everywhere, while a normal
//!   run at a negligible learning rate keeps the base's weights;
//! - `precision = bf16` (mixed precision) gives the f32 run's losses within bf16 rounding, and
//!   resumes exactly (the bf16 shadow is rebuilt from the restored master weights).

mod common;

use common::finetune_base::{base, quiet, tmp, write};
use gpt::finetune::{finetune, FinetuneConfig, TaskKind};
use gpt::nn::precision::Precision;
use gpt::train::TrainOptions;
use safetensors::SafeTensors;
use std::path::Path;

fn records() -> Vec<String> {
    (0..9)
        .map(|i| {
            let word = "abcdefghi"[i..i + 1].repeat(i % 4 + 1);
            format!(r#"{{"text": "the {word} is here", "label": {}}}"#, i % 2)
        })
        .collect()
}

fn config(root: &Path, name: &str) -> FinetuneConfig {
    let lines = records();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    FinetuneConfig {
        model: root.join("base"),
        task: TaskKind::Classify,
        train: write(root, "train.jsonl", &refs),
        out: root.join(name),
        max_steps: Some(4),
        batch_size: 3,
        ..FinetuneConfig::default()
    }
}

fn tensor(bytes: &[u8], names: &[&str]) -> Vec<f32> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let t = names
        .iter()
        .find_map(|n| st.tensor(n).ok())
        .unwrap_or_else(|| panic!("none of {names:?} stored"));
    t.data()
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn from_scratch_drops_the_base_weights_and_keeps_its_shape() {
    let root = tmp("ft-opt", "scratch");
    base(&root.join("base"), true);
    let base_w = std::fs::read(root.join("base/model.safetensors")).unwrap();
    for scratch in [false, true] {
        let mut c = config(&root, if scratch { "scratch" } else { "kept" });
        c.from_scratch = scratch;
        c.lr = 1e-9; // the weights move by about lr per step: negligible here
        c.dropout = 0.0;
        finetune(&c, &quiet()).unwrap();
        let ft_w = std::fs::read(c.out.join("checkpoint/model.safetensors")).unwrap();
        for name in [
            "wpe.weight",
            "h.0.attn.c_attn.weight",
            "h.0.mlp.c_fc.weight",
        ] {
            let names = [name.to_string(), format!("transformer.{name}")];
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let (b, f) = (tensor(&base_w, &names), tensor(&ft_w, &names));
            let d = max_diff(&b, &f);
            if scratch {
                assert!(d > 1e-3, "{name}: from scratch but equal to the base ({d})");
                // A fresh GPT-2 initialisation: N(0, 0.02) (c_proj layers scaled smaller).
                let n = f.len() as f32;
                let std = (f.iter().map(|x| x * x).sum::<f32>() / n).sqrt();
                assert!((0.01..0.03).contains(&std), "{name}: std {std}");
            } else {
                assert!(d < 1e-6, "{name}: the base's weights were not kept ({d})");
            }
        }
    }
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn bf16_follows_f32_and_resumes_exactly() {
    let root = tmp("ft-opt", "bf16");
    base(&root.join("base"), true);
    let mut f32_cfg = config(&root, "f32");
    f32_cfg.lr = 1e-3;
    let f32_run = finetune(&f32_cfg, &quiet()).unwrap();
    let bf16_cfg = FinetuneConfig {
        out: root.join("bf16"),
        precision: Precision::Bf16,
        ..f32_cfg.clone()
    };
    let bf16_run = finetune(&bf16_cfg, &quiet()).unwrap();
    let (a, b) = (&f32_run.train.losses, &bf16_run.train.losses);
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(b) {
        // bf16 keeps 8 mantissa bits: products differ by ~0.4% relative.
        assert!(
            (x - y).abs() < 0.02 * x.abs().max(1.0),
            "f32 {a:?} vs bf16 {b:?}"
        );
    }
    assert!(
        a != b,
        "bf16 gave f32's losses bit for bit: the precision was not applied"
    );
    // Exact resume in bf16.
    std::fs::remove_dir_all(&bf16_cfg.out).unwrap();
    let part = finetune(
        &bf16_cfg,
        &TrainOptions {
            stop_at: Some(2),
            ..quiet()
        },
    )
    .unwrap();
    let rest = finetune(
        &bf16_cfg,
        &TrainOptions {
            resume: true,
            ..quiet()
        },
    )
    .unwrap();
    let mut resumed = part.train.losses.clone();
    resumed.extend(&rest.train.losses);
    assert_eq!(&resumed, b);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn resume_reads_the_budget_over_the_saved_configuration() {
    let root = tmp("ft-opt", "resume-flags");
    base(&root.join("base"), true);
    let c = FinetuneConfig {
        max_steps: Some(2),
        ..config(&root, "run")
    };
    finetune(&c, &quiet()).unwrap();
    let resume = TrainOptions {
        resume: true,
        ..quiet()
    };
    // A longer budget applies; another λ is ignored (the saved configuration governs).
    let more = FinetuneConfig {
        max_steps: Some(4),
        aux_lm: 0.0,
        ..c.clone()
    };
    let o = finetune(&more, &resume).unwrap();
    assert_eq!((o.train.step, o.max_steps), (4, 4));
    let saved = FinetuneConfig::saved_in(&c.out).unwrap();
    assert_eq!((saved.max_steps, saved.aux_lm), (Some(4), 0.5));
    // Nothing left to do is an error naming the budget.
    let err = finetune(&more, &resume).unwrap_err().to_string();
    assert!(err.contains("max_steps"), "{err}");
    std::fs::remove_dir_all(&root).ok();
}
