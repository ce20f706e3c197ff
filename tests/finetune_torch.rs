//! GPT-1 fine-tuning against an independent PyTorch implementation
//! (tools/fixtures_finetune.py): for a tiny pre-LN and post-LN GPT over a character vocabulary
//! with start / delim / extract appended, and each task (classify, entail, similar, choice):
//! the transform's padded token ids (truncation included), the head's scores, L2, L1, L3 and
//! every gradient for λ = 0.5 and λ = 0, all within 1e-4 (absolute; the measured worst is
//! printed, about 1e-6).

mod common;

use gpt::finetune::model::{Batch, FinetuneModel};
use gpt::finetune::records::{read_records, LabelSet};
use gpt::finetune::transform::{encode_records, Labels, Specials, Transform, SPECIAL_NAMES};
use gpt::finetune::TaskKind;
use gpt::model::{Gpt, GptConfig, Positions};
use gpt::nn::block::NormPlacement;
use gpt::nn::classifier::ClassifierHead;
use gpt::nn::mlp::Activation;
use gpt::rng::Rng;
use gpt::tokenizer::{AnyTokenizer, CharTokenizer};
use std::collections::HashMap;

const TOL: f32 = 1e-4;

fn tokenizer() -> (AnyTokenizer, Specials) {
    let text = std::fs::read_to_string(common::fixture_path("finetune/chars.json")).unwrap();
    let chars: Vec<String> = serde_json::from_str(&text).unwrap();
    let chars: Vec<char> = chars.iter().map(|s| s.chars().next().unwrap()).collect();
    let mut tok = AnyTokenizer::Char(CharTokenizer::from_chars(chars));
    let ids = tok.add_special_tokens(&SPECIAL_NAMES).unwrap();
    let sp = Specials {
        start: ids[0],
        delim: ids[1],
        extract: ids[2],
    };
    (tok, sp)
}

fn worst(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn check(what: &str, got: &[f32], want: &[f32], max_err: &mut f32) {
    let e = worst(got, want);
    assert!(e <= TOL, "{what}: worst abs error {e} > {TOL}");
    *max_err = max_err.max(e);
}

fn run_variant(file: &str, norm: NormPlacement) {
    let fx = common::load(file);
    let (tok, specials) = tokenizer();
    let v = tok.vocab_size();
    let mut max_err = 0.0f32;
    for task in TaskKind::ALL {
        let name = task.name();
        let path = common::fixture_path(&format!("finetune/{name}.jsonl"));
        let (recs, _) = read_records(&path, task, true, false).unwrap();
        let set = (task != TaskKind::Choice).then(|| LabelSet::from_records(&path, &recs).unwrap());
        let labels = Labels {
            set: set.as_ref(),
            n_choices: 3,
        };
        let tf = Transform::new(task, specials, 16).unwrap();
        let (examples, report) = encode_records(&path, &recs, &tok, &tf, &labels, false).unwrap();
        assert!(report.cut >= 1, "{name}: the fixture cuts one example");
        let refs: Vec<_> = examples.iter().collect();
        let batch = Batch::build(&refs, specials.start, 0).unwrap();
        let want_ids = common::get(&fx, &format!("{name}.ids"));
        assert_eq!(want_ids.shape, [batch.rows(), batch.t], "{name}: ids shape");
        let got_ids: Vec<f32> = batch.ids.iter().map(|&x| x as f32).collect();
        assert_eq!(got_ids, want_ids.data, "{name}: transform ids");
        let lens: Vec<f32> = batch.lens.iter().map(|&x| x as f32).collect();
        assert_eq!(lens, common::get(&fx, &format!("{name}.lens")).data);

        let k = common::get(&fx, &format!("{name}.score.weight")).shape[0];
        let cfg = GptConfig {
            vocab_size: v,
            n_ctx: 16,
            n_layer: 2,
            n_head: 3,
            n_embd: 12,
            dropout: 0.0,
            bias: true,
            norm,
            positions: Positions::Learned,
            activation: Activation::Gelu,
            ln_eps: 1e-5,
        };
        let (mut gpt, head) =
            Gpt::uninit_with(cfg, |l| ClassifierHead::new(l, 12, k, 0.0)).unwrap();
        for e in gpt.params.layout.entries().to_vec() {
            let key = if e.name.starts_with("score") {
                format!("{name}.{}", e.name)
            } else {
                format!("param.{}", e.name)
            };
            let t = common::get(&fx, &key);
            assert_eq!(t.shape, e.shape, "{key}");
            gpt.params.data[e.param.range()].copy_from_slice(&t.data);
        }
        let mut m = FinetuneModel::new(gpt, head, task);
        let mut rng = Rng::new(0);
        m.forward(&batch, false, &mut rng).unwrap();
        let scores = common::get(&fx, &format!("{name}.scores"));
        check(
            &format!("{name} scores"),
            m.scores(),
            &scores.data,
            &mut max_err,
        );
        let l2 = m.task_loss(&batch);
        check(
            &format!("{name} L2"),
            &[l2],
            &common::get(&fx, &format!("{name}.l2")).data,
            &mut max_err,
        );
        for (lam, tag) in [(0.5f32, "0.5"), (0.0, "0")] {
            m.gpt.params.zero_grad();
            let losses = m.forward_backward(&batch, lam, 1.0, &mut rng).unwrap();
            let l3 = common::get(&fx, &format!("{name}.l3.{tag}")).data[0];
            check(
                &format!("{name} L3 λ={tag}"),
                &[losses.total],
                &[l3],
                &mut max_err,
            );
            check(
                &format!("{name} L2 λ={tag}"),
                &[losses.task],
                &[l2],
                &mut max_err,
            );
            match losses.lm {
                Some(l1) => check(
                    &format!("{name} L1"),
                    &[l1],
                    &common::get(&fx, &format!("{name}.l1")).data,
                    &mut max_err,
                ),
                None => assert_eq!(lam, 0.0),
            }
            let grads: HashMap<_, _> = m
                .gpt
                .params
                .layout
                .entries()
                .iter()
                .map(|e| (e.name.clone(), e.param.of(&m.gpt.params.grad).to_vec()))
                .collect();
            for (pname, g) in &grads {
                let want = common::get(&fx, &format!("{name}.grad.{tag}.{pname}"));
                check(
                    &format!("{name} λ={tag} grad {pname}"),
                    g,
                    &want.data,
                    &mut max_err,
                );
            }
        }
    }
    eprintln!(
        "{file}: worst abs error over ids, scores, L1, L2, L3 and every gradient: {max_err:e}"
    );
}

#[test]
fn pre_ln_matches_pytorch() {
    run_variant("finetune/pre.safetensors", NormPlacement::Pre);
}

#[test]
fn post_ln_matches_pytorch() {
    run_variant("finetune/post.safetensors", NormPlacement::Post);
}
