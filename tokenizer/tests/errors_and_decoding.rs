//! Bad input never panics and errors name what to fix: malformed vocab.json / merges.txt /
//! tokenizer.json (file and line or key), out-of-range ids (id and vocabulary size). Also
//! decoding: lossy vs strict, and the streaming decoder that holds back incomplete UTF-8.

use gpt_tokenizer::{Tokenizer, TokenizerError};
use std::path::Path;

const V: &str = "vocab.json";
const M: &str = "merges.txt";

/// A minimal valid vocabulary: the 256 byte tokens plus "ab".
fn byte_vocab() -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    for b in 0..=255u8 {
        let s = gpt_tokenizer::byte_level::bytes_to_token_string(&[b]);
        m.insert(s, (b as u64).into());
    }
    m.insert("ab".into(), 256u64.into());
    m
}

fn load(vocab: &str, merges: &str) -> Result<Tokenizer, TokenizerError> {
    Tokenizer::from_vocab_merges_bytes(vocab.as_bytes(), Path::new(V), merges, Path::new(M))
}

fn err_text(r: Result<Tokenizer, TokenizerError>) -> String {
    r.expect_err("should fail").to_string()
}

#[test]
fn tiny_valid_vocab_loads() {
    let v = serde_json::to_string(&byte_vocab()).unwrap();
    let t = load(&v, "#version: 0.2\na b\n").unwrap();
    assert_eq!(t.encode_ordinary("abab"), [256, 256]);
}

#[test]
fn malformed_vocab_json_names_file_and_position() {
    let e = err_text(load("{\"a\": 1,\n \"b\": }", "a b"));
    assert!(e.contains("vocab.json") && e.contains("line 2"), "{e}");
    let e = err_text(load("[1, 2]", ""));
    assert!(e.contains("vocab.json") && e.contains("top level"), "{e}");
    let mut v = byte_vocab();
    v.insert("xy".into(), "seven".into());
    let e = err_text(load(&serde_json::to_string(&v).unwrap(), ""));
    assert!(
        e.contains("vocab.json") && e.contains("\"xy\"") && e.contains("seven"),
        "{e}"
    );
    let mut v = byte_vocab();
    v.insert("xy".into(), 256u64.into());
    let e = err_text(load(&serde_json::to_string(&v).unwrap(), ""));
    assert!(e.contains("id 256 is also the id of"), "{e}");
    let mut v = byte_vocab();
    v.insert("a b€".into(), 300u64.into());
    let e = err_text(load(&serde_json::to_string(&v).unwrap(), ""));
    assert!(e.contains("\"a b€\"") && e.contains("byte-level"), "{e}");
    let mut v = byte_vocab();
    v.remove("a");
    let e = err_text(load(&serde_json::to_string(&v).unwrap(), ""));
    assert!(e.contains("byte 0x61"), "{e}");
}

#[test]
fn malformed_merges_name_file_and_line() {
    let v = serde_json::to_string(&byte_vocab()).unwrap();
    let e = err_text(load(&v, "#version: 0.2\na b\nab\n"));
    assert!(
        e.contains("merges.txt") && e.contains("line 3") && e.contains("\"ab\""),
        "{e}"
    );
    let e = err_text(load(&v, "a b\nq €\n"));
    assert!(
        e.contains("line 2") && e.contains("\"€\" is not in the vocabulary"),
        "{e}"
    );
    let e = err_text(load(&v, "a b\nb a\n"));
    assert!(
        e.contains("line 2") && e.contains("merged token \"ba\""),
        "{e}"
    );
    let e = err_text(load(&v, "a b c\n"));
    assert!(e.contains("line 1") && e.contains("two tokens"), "{e}");
}

#[test]
fn malformed_tokenizer_json_names_the_key() {
    let p = Path::new("tokenizer.json");
    let check = |json: &str, key: &str| {
        let e = Tokenizer::from_tokenizer_json_bytes(json.as_bytes(), p)
            .expect_err("should fail")
            .to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains(key),
            "{key}: {e}"
        );
    };
    check("{", "line 1");
    check("{}", "`model`");
    check(r#"{"model": {"type": "WordPiece"}}"#, "model.type");
    check(
        r#"{"model": {"type": "BPE", "dropout": 0.1}}"#,
        "model.dropout",
    );
    check(
        r#"{"model": {"type": "BPE"}, "pre_tokenizer": {"type": "Whitespace"}}"#,
        "pre_tokenizer.type",
    );
    check(
        r#"{"model": {"type": "BPE"}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true}}"#,
        "pre_tokenizer.add_prefix_space",
    );
    check(
        r#"{"model": {"type": "BPE"}, "normalizer": {"type": "NFC"}, "pre_tokenizer": {"type": "ByteLevel"}}"#,
        "normalizer",
    );
    check(
        r#"{"model": {"type": "BPE", "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}"#,
        "model.vocab",
    );
    let vocab = serde_json::to_string(&byte_vocab()).unwrap();
    let json = format!(
        r#"{{"model": {{"type": "BPE", "vocab": {vocab}, "merges": ["a b", 5]}}, "pre_tokenizer": {{"type": "ByteLevel"}}}}"#
    );
    check(&json, "line 2");
    let json = format!(
        r#"{{"model": {{"type": "BPE", "vocab": {vocab}, "merges": [["a", "b"]]}}, "pre_tokenizer": {{"type": "ByteLevel"}}, "added_tokens": [{{"id": 257}}]}}"#
    );
    check(&json, "added_tokens[0]");
}

#[test]
fn missing_paths_are_reported() {
    let e = Tokenizer::from_path(Path::new("/nonexistent/tok")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/tok"));
    let e = Tokenizer::from_vocab_merges_files(Path::new("/nope/vocab.json"), Path::new("m"))
        .unwrap_err();
    assert!(matches!(e, TokenizerError::Io { .. }) && e.to_string().contains("/nope/vocab.json"));
}

#[test]
fn decoding_out_of_range_and_invalid_utf8() {
    let tok = Tokenizer::gpt2();
    let e = tok.decode(&[31373, 50257]).unwrap_err().to_string();
    assert!(e.contains("50257") && e.contains("50257)"), "{e}");
    assert!(e.contains("size 50257"), "{e}");
    // "👍" is two GPT-2 tokens; either alone is not valid UTF-8.
    let ids = tok.encode_ordinary("👍");
    assert!(ids.len() >= 2);
    assert!(matches!(
        tok.decode(&ids[..1]),
        Err(TokenizerError::DecodedNotUtf8 { offset: 0 })
    ));
    assert!(tok.decode_lossy(&ids[..1]).unwrap().contains('\u{FFFD}'));
    assert_eq!(tok.decode_bytes(&ids).unwrap(), "👍".as_bytes());
}

#[test]
fn stream_decoder_holds_back_incomplete_utf8() {
    let tok = Tokenizer::gpt2();
    let text = "Emoji 👨‍👩‍👧 and 中文 and é, then <|endoftext|>.";
    let ids = tok.encode_with_specials(text);
    let mut dec = tok.stream_decoder();
    let mut out = String::new();
    for &id in &ids {
        let piece = dec.push(id).unwrap();
        assert!(!piece.contains('\u{FFFD}'), "emitted a partial character");
        out.push_str(&piece);
    }
    assert!(!dec.has_pending());
    out.push_str(&dec.finish());
    assert_eq!(out, text);
    // A byte that can never start valid UTF-8 is replaced at once, not held forever.
    let lone = tok.token_id(&[0xff]).unwrap();
    let mut dec = tok.stream_decoder();
    assert_eq!(dec.push(lone).unwrap(), "\u{FFFD}");
    let half = tok.encode_ordinary("👍")[0];
    assert_eq!(dec.push(half).unwrap(), "");
    assert!(dec.has_pending());
    assert_eq!(dec.finish(), "\u{FFFD}");
    assert!(dec.push(60_000).is_err());
}
