//! `gpt::eval::pyrandom` against CPython's `random.Random` (fixture made by
//! `tools/fixtures_pyrandom.py` with plain python3): raw words, `random()`, `getrandbits`,
//! `randrange`, `sample` in both of its regimes, `shuffle`, `choices`, and lm-eval's few-shot
//! draw sequence for seed 1234.

use gpt::eval::pyrandom::PyRandom;
use serde_json::Value;

fn fixture() -> Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/eval/pyrandom.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    u64s(v).into_iter().map(|x| x as usize).collect()
}

#[test]
fn matches_cpython_for_every_seed() {
    let fx = fixture();
    for case in fx["cases"].as_array().unwrap() {
        let seed = case["seed"].as_i64().unwrap();
        let mut r = PyRandom::new(seed);
        let words: Vec<u64> = (0..8).map(|_| u64::from(r.next_u32())).collect();
        assert_eq!(words, u64s(&case["u32"]), "seed {seed}: getrandbits(32)");
        for want in u64s(&case["random53"]) {
            let got = r.random() * 9_007_199_254_740_992.0;
            assert_eq!(got as u64, want, "seed {seed}: random()");
            assert_eq!(got.fract(), 0.0, "seed {seed}: random() has 53 bits");
        }
        let bits: Vec<u64> = [1, 5, 31, 33, 64]
            .iter()
            .map(|&k| r.getrandbits(k))
            .collect();
        assert_eq!(bits, u64s(&case["bits"]), "seed {seed}: getrandbits(k)");
        let below: Vec<usize> = [1usize, 2, 3, 7, 100, 1000, (1 << 20) + 3]
            .iter()
            .map(|&n| r.randbelow(n))
            .collect();
        assert_eq!(below, usizes(&case["randbelow"]), "seed {seed}: randrange");
        for s in case["sample"].as_array().unwrap() {
            let (n, k) = (
                s["n"].as_u64().unwrap() as usize,
                s["k"].as_u64().unwrap() as usize,
            );
            let got = r.sample_indices(n, k).unwrap();
            assert_eq!(
                got,
                usizes(&s["got"]),
                "seed {seed}: sample(range({n}), {k})"
            );
        }
        let mut x: Vec<usize> = (0..20).collect();
        r.shuffle(&mut x);
        assert_eq!(x, usizes(&case["shuffle20"]), "seed {seed}: shuffle");
        let ch = &case["choices"];
        let got = r.choices_indices(37, 10);
        assert_eq!(got, usizes(&ch["got"]), "seed {seed}: choices");
    }
}

#[test]
fn lm_eval_fewshot_sequence_for_seed_1234() {
    let fx = fixture();
    let want = fx["fewshot_1234"].as_array().unwrap();
    let mut r = PyRandom::new(1234);
    for (i, w) in want.iter().enumerate() {
        let w = usizes(w);
        let n = if i < 4 { 1668 } else { 100 };
        assert_eq!(r.sample_indices(n, w.len()).unwrap(), w, "draw {i}");
    }
}

#[test]
fn sample_larger_than_population_is_refused() {
    assert!(PyRandom::new(1).sample_indices(3, 4).is_none());
}
