//! SFT, DPO and the reward model against TRL 1.16 (fixtures by `tools/fixtures_chat.py`, on a
//! tiny random GPT-2; layout and tolerances in `tests/fixtures/chat/README.md`): losses,
//! log-probabilities, rewards and metrics within 1e-5·max(1, |want|), every gradient within
//! 1e-4 of its tensor's largest value (of 1e-3 of the largest gradient for a tensor whose
//! gradient vanishes), batch layouts exact. Also DPO's step-0 invariant (policy
//! = reference: sigmoid loss ln 2, rewards 0) and SFT packing (same loss and gradients as the
//! padded batch).

mod common;

use gpt::chat::dpo::{dpo_forward_backward, reference_logps, DpoMetrics, PairLogps};
use gpt::chat::pairs::{PairBatch, PairSeqs};
use gpt::chat::reward::pair_rewards;
use gpt::chat::sft::{sft_forward_backward, SftBatch};
use gpt::chat::DpoLoss;
use gpt::finetune::model::{Batch, FinetuneModel};
use gpt::finetune::transform::Example;
use gpt::finetune::TaskKind;
use gpt::model::checkpoint::{self, hf_family, hf_name};
use gpt::model::gpt::IGNORE_INDEX;
use gpt::model::Gpt;
use gpt::nn::classifier::ClassifierHead;
use gpt::rng::Rng;
use serde_json::Value;

fn json(name: &str) -> Value {
    let p = common::fixture_path(&format!("chat/{name}"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids2(v: &Value) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(what: &str, got: f64, want: f64) {
    let tol = 1e-5 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: {got} vs {want}");
}

fn load(name: &str) -> Gpt {
    checkpoint::load(&common::fixture_path(&format!("chat/{name}"))).unwrap()
}

/// Every gradient of `gpt` against the fixture's (HF names), per tensor within 1e-4 of its
/// largest value; returns the worst relative error.
fn check_grads(gpt: &Gpt, file: &str) -> f32 {
    let fx = common::load(&format!("chat/{file}"));
    let family = hf_family(&gpt.config);
    let mut worst = 0.0f32;
    // A tensor whose gradient vanishes exactly (the reward model's `ln_f.bias`: the chosen
    // and rejected rewards' gradients cancel) is measured against 1e-3 of the largest
    // gradient instead, so rounding noise is not divided by zero.
    let floor = 1e-3
        * fx.values()
            .flat_map(|t| &t.data)
            .fold(0.0f32, |m, x| m.max(x.abs()));
    for e in gpt.params.layout.entries() {
        let key = if e.name.starts_with("score") {
            e.name.clone()
        } else {
            hf_name(&e.name, family)
        };
        let want = common::get(&fx, &key);
        let got = e.param.of(&gpt.params.grad);
        assert_eq!(want.data.len(), got.len(), "{key}");
        let scale = want
            .data
            .iter()
            .fold(0.0f32, |m, x| m.max(x.abs()))
            .max(floor);
        let err = got
            .iter()
            .zip(&want.data)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        assert!(err <= 1e-4, "{file} {key}: relative error {err}");
        worst = worst.max(err);
    }
    worst
}

/// The SFT batch of the fixture: its ids and the labels shifted to our next-token targets.
fn sft_batch(ids: &[Vec<i64>], labels: &[Vec<i64>], positions: Option<&[Vec<i64>]>) -> SftBatch {
    let t = ids[0].len();
    let mut b = SftBatch {
        b: ids.len(),
        t,
        ..SftBatch::default()
    };
    for (row, lab) in ids.iter().zip(labels) {
        b.ids.extend(row.iter().map(|&x| x as u32));
        b.targets.extend((0..t).map(|i| {
            if i + 1 < t && lab[i + 1] != -100 {
                lab[i + 1] as i32
            } else {
                IGNORE_INDEX
            }
        }));
        b.tokens += row.len();
    }
    b.positions = positions.map(|p| p.iter().flatten().map(|&x| x as u32).collect());
    b
}

#[test]
fn sft_loss_and_gradients_match_trl_with_the_assistant_only_mask() {
    let fx = json("sft.json");
    let mut gpt = load("policy");
    let batch = sft_batch(&ids2(&fx["input_ids"]), &ids2(&fx["labels"]), None);
    assert_eq!(
        batch.n_targets() as u64,
        fx["n_loss_tokens"].as_u64().unwrap()
    );
    gpt.params.zero_grad();
    let loss = sft_forward_backward(&mut gpt, &batch, 1.0, &mut Rng::new(0)).unwrap();
    close("sft loss", loss as f64, fx["loss"].as_f64().unwrap());
    let worst = check_grads(&gpt, "sft_grads.safetensors");
    eprintln!("sft: loss {loss}, worst gradient error {worst:.2e}");
}

#[test]
fn sft_packed_rows_match_trl_padding_free() {
    let fx = json("sft.json");
    let p = &fx["packed"];
    let mut gpt = load("policy");
    let pos = ids2(&p["position_ids"]);
    let batch = sft_batch(&ids2(&p["input_ids"]), &ids2(&p["labels"]), Some(&pos));
    gpt.params.zero_grad();
    let loss = sft_forward_backward(&mut gpt, &batch, 1.0, &mut Rng::new(0)).unwrap();
    close("packed sft loss", loss as f64, p["loss"].as_f64().unwrap());
    // The packed gradients equal the padded batch's (the script checks it in f64).
    let worst = check_grads(&gpt, "sft_grads.safetensors");
    eprintln!("packed sft: loss {loss}, worst gradient error {worst:.2e}");
}

/// The fixture's pairs as ours, and the batch they lay out (checked against the fixture's).
fn pairs_of(fx: &Value) -> (Vec<PairSeqs>, PairBatch) {
    let (p, c, r) = (
        ids2(&fx["prompt_ids"]),
        ids2(&fx["chosen_ids"]),
        ids2(&fx["rejected_ids"]),
    );
    let cat = |a: &[i64], b: &[i64]| a.iter().chain(b).map(|&x| x as u32).collect::<Vec<_>>();
    let pairs: Vec<PairSeqs> = (0..p.len())
        .map(|i| PairSeqs {
            chosen: cat(&p[i], &c[i]),
            chosen_start: p[i].len(),
            rejected: cat(&p[i], &r[i]),
            rejected_start: p[i].len(),
            line: i + 1,
            answer_lens: (c[i].len(), r[i].len()),
        })
        .collect();
    let refs: Vec<&PairSeqs> = pairs.iter().collect();
    let batch = PairBatch::build(&refs, fx["pad_token_id"].as_u64().unwrap() as u32);
    let want: Vec<u32> = ids2(&fx["input_ids"])
        .into_iter()
        .flatten()
        .map(|x| x as u32)
        .collect();
    assert_eq!(batch.ids, want, "pair batch layout");
    // Our targets are TRL's completion mask shifted by one (position i predicts token i + 1).
    let cm = ids2(&fx["completion_mask"]);
    for (r, row) in cm.iter().enumerate() {
        for i in 0..batch.t {
            let trained = i + 1 < batch.t && row[i + 1] == 1;
            assert_eq!(
                batch.targets[r * batch.t + i] != IGNORE_INDEX,
                trained,
                "row {r} position {i}"
            );
        }
    }
    (pairs, batch)
}

#[test]
fn dpo_losses_metrics_and_gradients_match_trl_for_all_three_losses() {
    for (kind, name) in [
        (DpoLoss::Sigmoid, "sigmoid"),
        (DpoLoss::Ipo, "ipo"),
        (DpoLoss::Hinge, "hinge"),
    ] {
        let fx = json(&format!("dpo_{name}.json"));
        let beta = fx["beta"].as_f64().unwrap();
        let (pairs, batch) = pairs_of(&fx);
        let mut reference = load("reference");
        let refs = reference_logps(&mut reference, &pairs, 66, 8).unwrap();
        for (i, r) in refs.iter().enumerate() {
            close(
                &format!("{name} ref chosen {i}"),
                r.chosen,
                f64s(&fx["ref_chosen_logps"])[i],
            );
            close(
                &format!("{name} ref rejected {i}"),
                r.rejected,
                f64s(&fx["ref_rejected_logps"])[i],
            );
        }
        let mut policy = load("policy");
        policy.params.zero_grad();
        let losses = dpo_forward_backward(
            &mut policy,
            &batch,
            &refs,
            kind,
            beta,
            1.0,
            &mut Rng::new(0),
        )
        .unwrap();
        let m = DpoMetrics::of(&losses);
        close(
            &format!("{name} loss"),
            m.loss,
            fx["loss"].as_f64().unwrap(),
        );
        let fm = &fx["metrics"];
        close(
            &format!("{name} rewards/chosen"),
            m.chosen,
            fm["rewards/chosen"].as_f64().unwrap(),
        );
        close(
            &format!("{name} rewards/rejected"),
            m.rejected,
            fm["rewards/rejected"].as_f64().unwrap(),
        );
        assert_eq!(
            m.accuracies,
            fm["rewards/accuracies"].as_f64().unwrap(),
            "{name} accuracies"
        );
        close(
            &format!("{name} rewards/margins"),
            m.margins,
            fm["rewards/margins"].as_f64().unwrap(),
        );
        let worst = check_grads(&policy, &format!("dpo_{name}_grads.safetensors"));
        eprintln!(
            "dpo {name}: loss {:.6}, worst gradient error {worst:.2e}",
            m.loss
        );

        // Step 0: the reference is the policy.
        let mut same = load("policy");
        let refs0 = reference_logps(&mut same, &pairs, 66, 8).unwrap();
        let l0 = dpo_forward_backward(&mut same, &batch, &refs0, kind, beta, 1.0, &mut Rng::new(0))
            .unwrap();
        let m0 = DpoMetrics::of(&l0);
        let s0 = &fx["step0"];
        close(
            &format!("{name} step-0 loss"),
            m0.loss,
            s0["loss"].as_f64().unwrap(),
        );
        assert_eq!(
            (m0.chosen, m0.rejected, m0.margins, m0.accuracies),
            (0.0, 0.0, 0.0, 0.0)
        );
        if kind == DpoLoss::Sigmoid {
            close("step-0 loss is ln 2", m0.loss, std::f64::consts::LN_2);
        }
    }
}

#[test]
fn dpo_reference_counts_are_answer_lengths() {
    let fx = json("dpo_ipo.json");
    let (pairs, _) = pairs_of(&fx);
    let mut reference = load("reference");
    let refs: Vec<PairLogps> = reference_logps(&mut reference, &pairs, 66, 2).unwrap();
    for (r, c) in refs.iter().zip(ids2(&fx["chosen_ids"])) {
        assert_eq!(r.n_chosen, c.len());
    }
}

#[test]
fn reward_model_loss_rewards_and_gradients_match_trl() {
    let fx = json("reward.json");
    let gpt0 = load("policy");
    let c = gpt0.config.n_embd;
    let (mut gpt, head) =
        Gpt::uninit_with(gpt0.config.clone(), |l| ClassifierHead::new(l, c, 1, 0.0)).unwrap();
    let n = gpt0.params.data.len();
    gpt.params.data[..n].copy_from_slice(&gpt0.params.data);
    let score = common::load("chat/reward_score.safetensors");
    let w = &common::get(&score, "score.weight").data;
    gpt.params
        .tensor_mut("score.weight")
        .unwrap()
        .copy_from_slice(w);
    let mut model = FinetuneModel::new(gpt, head, TaskKind::Choice);
    let pad = fx["pad_token_id"].as_u64().unwrap() as u32;
    let to_u32 = |v: &[i64]| v.iter().map(|&x| x as u32).collect::<Vec<_>>();
    let pairs: Vec<PairSeqs> = ids2(&fx["chosen_ids"])
        .iter()
        .zip(ids2(&fx["rejected_ids"]))
        .enumerate()
        .map(|(i, (ch, rj))| PairSeqs {
            chosen: to_u32(ch),
            chosen_start: 0,
            rejected: to_u32(&rj),
            rejected_start: 0,
            line: i + 1,
            answer_lens: (0, 0),
        })
        .collect();
    let rewards = pair_rewards(&mut model, &pairs, pad, 2).unwrap();
    for (i, &(rc, rr)) in rewards.iter().enumerate() {
        close("reward chosen", rc as f64, f64s(&fx["rewards_chosen"])[i]);
        close(
            "reward rejected",
            rr as f64,
            f64s(&fx["rewards_rejected"])[i],
        );
    }
    let examples: Vec<Example> = pairs
        .iter()
        .map(|p| Example {
            seqs: vec![p.chosen.clone(), p.rejected.clone()],
            label: Some(0),
            line: p.line,
        })
        .collect();
    let refs: Vec<&Example> = examples.iter().collect();
    let b = Batch::build(&refs, pad, 0).unwrap();
    // TRL stacks the chosen rows then the rejected ones; ours alternate per pair.
    let rows = ids2(&fx["input_ids"]);
    let want_ids: Vec<u32> = (0..3)
        .flat_map(|i| [rows[i].clone(), rows[3 + i].clone()])
        .flatten()
        .map(|x| x as u32)
        .collect();
    assert_eq!(b.ids, want_ids, "reward batch layout");
    model.gpt.params.zero_grad();
    let losses = model
        .forward_backward(&b, 0.0, 1.0, &mut Rng::new(0))
        .unwrap();
    close(
        "reward loss",
        losses.total as f64,
        fx["loss"].as_f64().unwrap(),
    );
    let acc = model
        .example_losses()
        .iter()
        .filter(|&&l| l < std::f32::consts::LN_2)
        .count() as f64
        / 3.0;
    assert_eq!(acc, fx["accuracy"].as_f64().unwrap());
    let worst = check_grads(&model.gpt, "reward_grads.safetensors");
    eprintln!(
        "reward: loss {}, worst gradient error {worst:.2e}",
        losses.total
    );
}
