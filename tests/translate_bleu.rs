//! BLEU and chrF equal sacreBLEU's (defaults) to two decimals on fixture files with empty
//! lines, punctuation, numbers, HTML entities and Unicode (`tools/fixtures_bleu.py`).

mod common;

use common::claims::BLEU_TOL;
use gpt::translate::bleu::{corpus_bleu, corpus_chrf, Smooth};
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bleu")
}

fn lines(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir().join(name)).unwrap();
    text.split('\n').map(str::to_string).collect()
}

#[test]
fn bleu_and_chrf_equal_sacrebleu() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("expected.json")).unwrap())
            .unwrap();
    let sets = expected.as_object().unwrap();
    assert!(sets.len() >= 3);
    for (name, e) in sets {
        let hyps = lines(&format!("{name}.hyp"));
        let refs = lines(&format!("{name}.ref"));
        assert_eq!(hyps.len(), refs.len(), "{name}");
        let b = corpus_bleu(&hyps, &refs, Smooth::Exp);
        let f = |k: &str| e[k].as_f64().unwrap();
        let round = |x: f64| (x * 100.0).round() / 100.0;
        assert_eq!(round(b.score), round(f("bleu")), "{name}: {b}");
        assert!((b.score - f("bleu")).abs() < BLEU_TOL, "{name}: {b}");
        assert!((b.bp - f("bp")).abs() < 1e-12, "{name}");
        assert_eq!(b.sys_len, e["sys_len"].as_u64().unwrap(), "{name}");
        assert_eq!(b.ref_len, e["ref_len"].as_u64().unwrap(), "{name}");
        for (ours, theirs) in b.precisions.iter().zip(e["precisions"].as_array().unwrap()) {
            assert!((ours - theirs.as_f64().unwrap()).abs() < BLEU_TOL, "{name}");
        }
        let none = corpus_bleu(&hyps, &refs, Smooth::None);
        assert!(
            (none.score - f("bleu_none")).abs() < BLEU_TOL,
            "{name}: {none}"
        );
        let chrf = corpus_chrf(&hyps, &refs);
        assert_eq!(round(chrf), round(f("chrf")), "{name}");
        assert!((chrf - f("chrf")).abs() < BLEU_TOL, "{name}: {chrf}");
    }
}
