//! GPT-2 ids against tiktoken: every case of `fixtures/gpt2_tiktoken.json` (written by
//! `tools/tokenizer_fixtures.py` from the bundled vocab.json + merges.txt) must encode to
//! exactly tiktoken's ids, with and without special tokens, and decode back exactly.

use gpt_tokenizer::Tokenizer;
use serde_json::Value;
use std::sync::OnceLock;

fn fixture() -> &'static Value {
    static F: OnceLock<Value> = OnceLock::new();
    F.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gpt2_tiktoken.json"
        );
        let bytes = std::fs::read(path).expect("fixture present");
        serde_json::from_slice(&bytes).expect("fixture is JSON")
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn gpt2() -> &'static Tokenizer {
    Tokenizer::gpt2_shared()
}

#[test]
fn tiktoken_pinned_cases() {
    let tok = gpt2();
    assert_eq!(tok.encode_ordinary("hello world"), [31373, 995]);
    assert_eq!(
        tok.encode_with_specials("hello <|endoftext|>"),
        [31373, 220, 50256]
    );
    assert_eq!(tok.special_id("<|endoftext|>"), Some(50256));
    assert_eq!(tok.vocab_size(), 50257);
}

#[test]
fn named_cases_match_tiktoken() {
    let tok = gpt2();
    let cases = fixture()["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let ordinary = tok.encode_ordinary(text);
        assert_eq!(ordinary, ids(&case["ordinary"]), "encode_ordinary: {name}");
        let specials = tok.encode_with_specials(text);
        assert_eq!(
            specials,
            ids(&case["with_specials"]),
            "encode_with_specials: {name}"
        );
        assert_eq!(tok.decode(&ordinary).unwrap(), text, "roundtrip: {name}");
        assert_eq!(
            tok.decode(&specials).unwrap(),
            text,
            "roundtrip with specials: {name}"
        );
    }
}

#[test]
fn random_strings_match_tiktoken() {
    let tok = gpt2();
    let cases = fixture()["random"].as_array().unwrap();
    for case in cases {
        let text = case[0].as_str().unwrap();
        let got = tok.encode_ordinary(text);
        assert_eq!(got, ids(&case[1]), "{text:?}");
        assert_eq!(tok.decode(&got).unwrap(), text);
    }
}

#[test]
fn megabyte_runs_match_tiktoken_and_stay_linear() {
    let tok = gpt2();
    for run in fixture()["long_runs"].as_array().unwrap() {
        let ch = run["char"].as_str().unwrap();
        let count = run["count"].as_u64().unwrap() as usize;
        let text = format!("{}{}", run["prefix"].as_str().unwrap(), ch.repeat(count));
        let mut expected = Vec::new();
        for pair in run["ids_rle"].as_array().unwrap() {
            let (id, n) = (
                pair[0].as_u64().unwrap() as u32,
                pair[1].as_u64().unwrap() as usize,
            );
            expected.extend(std::iter::repeat_n(id, n));
        }
        let start = std::time::Instant::now();
        let got = tok.encode_ordinary(&text);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(got.len(), expected.len(), "{ch:?} x {count}");
        assert!(got == expected, "{ch:?} x {count}: ids differ");
        assert_eq!(tok.decode_bytes(&got).unwrap(), text.as_bytes());
        // A quadratic merge would take minutes on a megabyte; the heap takes milliseconds.
        assert!(secs < 5.0, "{ch:?} x {count} took {secs:.2}s");
    }
}

#[test]
fn batch_and_parallel_equal_sequential() {
    let tok = gpt2();
    let texts: Vec<&str> = fixture()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    let batch = tok.encode_batch(&texts);
    for (t, ids) in texts.iter().zip(&batch) {
        assert_eq!(&tok.encode_ordinary(t), ids);
    }
    let specials = tok.encode_batch_with_specials(&texts);
    for (t, ids) in texts.iter().zip(&specials) {
        assert_eq!(&tok.encode_with_specials(t), ids);
    }
    let joined = texts.join("\n").repeat(40);
    assert_eq!(
        tok.encode_ordinary_parallel(&joined),
        tok.encode_ordinary(&joined)
    );
}

#[test]
fn every_gpt2_token_is_its_own_encoding() {
    // BPE on a token's own bytes gives back that token, for all 50256 ordinary tokens (the
    // premise of the whole-piece fast path; tiktoken's ranks assume it too).
    let tok = gpt2();
    for id in 0..50256u32 {
        let bytes = tok.token_bytes(id).unwrap();
        assert_eq!(tok.token_id(bytes), Some(id), "token {id} {bytes:?}");
    }
    assert!(tok.is_special(50256) && !tok.is_special(50255));
    assert_eq!(tok.token_bytes(50256).unwrap(), b"<|endoftext|>");
}
