//! `gpt eval` against lm-evaluation-harness 0.4.9.2 itself, without Python: the fixtures
//! `tests/fixtures/eval/lm_eval_{mc,lm}.json` were recorded by `tools/check_lm_eval.py` running
//! lm-eval (transformers backend, float32, CPU) on `tests/fixtures/hf_gpt2` for every built-in
//! task at K = 0, 1 and 5 (few-shot seed 1234, 20 documents; LAMBADA and WikiText on the
//! subsets in `tests/fixtures/eval/data`). For every request we must build lm-eval's exact
//! context and continuation strings (so the same few-shot examples, in the same order), score
//! it to 1e-4, and give every metric and stderr to 1e-4 (relative for perplexities).

use gpt::eval::evaluate::{finish, prepare};
use gpt::eval::scorer::score;
use gpt::eval::{task, EvalOptions};
use gpt::model::inference::InferenceModel;
use gpt::tokenizer::AnyTokenizer;
use serde_json::Value;
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn close(what: &str, got: f64, want: f64, rel: bool) {
    let tol = if rel {
        1e-4 * want.abs().max(1e-12)
    } else {
        1e-4
    };
    assert!(
        (got - want).abs() <= tol,
        "{what}: ours {got} vs lm-eval {want}"
    );
}

fn check_fixture(file: &str) {
    let text = std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let model = InferenceModel::load(&Path::new(ROOT).join("tests/fixtures/hf_gpt2")).unwrap();
    let tok = AnyTokenizer::load("gpt2").unwrap();
    let data_dir = fx["data_dir"].as_str().map(|d| Path::new(ROOT).join(d));
    for run in fx["runs"].as_array().unwrap() {
        let k = run["num_fewshot"].as_u64().unwrap() as usize;
        for (name, want) in run["tasks"].as_object().unwrap() {
            let opts = EvalOptions {
                num_fewshot: k,
                limit: fx["limit"].as_u64().map(|l| l as usize),
                bootstrap_iters: fx["bootstrap_iters"].as_u64().unwrap() as usize,
                data_dir: data_dir.clone(),
                ..EvalOptions::default()
            };
            let t = task::builtin(name).unwrap();
            let p = prepare(&t, &tok, model.config.n_ctx, 50256, &opts).unwrap();
            // The request strings, in document order.
            let mut want_args = Vec::new();
            let mut want_ll = Vec::new();
            for r in want["requests"].as_array().unwrap() {
                for a in r["arguments"].as_array().unwrap() {
                    let a: Vec<&str> = a
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_str().unwrap())
                        .collect();
                    want_args.push(a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
                }
                for l in r["ll"].as_array().unwrap() {
                    want_ll.push(l.as_f64().unwrap());
                }
            }
            let rolling = t.output_type == task::OutputType::LoglikelihoodRolling;
            let got_args: Vec<Vec<String>> = p
                .strings
                .iter()
                .map(|(c, x)| {
                    if rolling {
                        vec![x.clone()]
                    } else {
                        vec![c.clone(), x.clone()]
                    }
                })
                .collect();
            assert_eq!(
                got_args.len(),
                want_args.len(),
                "{name} K={k}: request count"
            );
            for (i, (g, w)) in got_args.iter().zip(&want_args).enumerate() {
                assert_eq!(g, w, "{name} K={k}: request {i}");
            }
            let lls = score(&model, &p.requests, 4, &mut |_| {}).unwrap();
            if rolling {
                let mut per_doc = vec![0.0; p.docs.len()];
                for (l, &d) in lls.iter().zip(&p.request_doc) {
                    per_doc[d] += l.ll;
                }
                for (i, (g, w)) in per_doc.iter().zip(&want_ll).enumerate() {
                    close(&format!("{name} doc {i} ll"), *g, *w, true);
                }
            } else {
                for (i, (g, w)) in lls.iter().zip(&want_ll).enumerate() {
                    close(&format!("{name} K={k} request {i} ll"), g.ll, *w, false);
                }
            }
            let res = finish(&p, &lls, &opts).unwrap();
            let wm = want["metrics"].as_object().unwrap();
            for m in &res.metrics {
                let rel = m.name.contains("perplexity");
                let key = format!("{},none", m.name);
                close(
                    &format!("{name} K={k} {key}"),
                    m.value,
                    wm[&key].as_f64().unwrap(),
                    rel,
                );
                let skey = format!("{}_stderr,none", m.name);
                match (m.stderr, &wm[&skey]) {
                    (None, Value::String(s)) => assert_eq!(s, "N/A"),
                    (Some(s), Value::Number(w)) => close(
                        &format!("{name} K={k} {skey}"),
                        s,
                        w.as_f64().unwrap(),
                        true,
                    ),
                    (g, w) => panic!("{name} K={k} {skey}: ours {g:?} vs lm-eval {w}"),
                }
            }
        }
    }
}

#[test]
fn multiple_choice_tasks_equal_lm_eval() {
    check_fixture("tests/fixtures/eval/lm_eval_mc.json");
}

#[test]
fn lambada_and_wikitext_equal_lm_eval() {
    check_fixture("tests/fixtures/eval/lm_eval_lm.json");
}
