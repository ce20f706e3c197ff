//! Training against Hugging Face `tokenizers` (fixture written by
//! `tools/tokenizer_train_check.py --write-fixture`): on a 200 KB corpus our merges equal
//! HF's BpeTrainer rule for rule, HF encodes with our saved vocabulary exactly as we do, and
//! HF's own tokenizer.json loads and encodes as HF does.

use gpt_tokenizer::train::{count_words_in, count_words_in_file_blocks, WordCounts};
use gpt_tokenizer::{BpeTrainer, Tokenizer};
use serde_json::Value;
use std::path::Path;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/train_hf.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn merge_lines(tok: &Tokenizer) -> Vec<String> {
    tok.to_merges_txt()
        .lines()
        .skip(1)
        .map(str::to_string)
        .collect()
}

#[test]
fn merges_equal_hf_trainer_and_ids_equal_hf_with_our_vocab() {
    let f = fixture();
    let corpus = f["corpus"].as_str().unwrap();
    let vocab = f["vocab_size"].as_u64().unwrap() as usize;
    let (tok, stats) = BpeTrainer::new(vocab).train_texts(&[corpus]).unwrap();
    let hf: Vec<String> = f["hf_merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect();
    assert_eq!(merge_lines(&tok), hf);
    assert_eq!(stats.merges, hf.len());
    assert_eq!(tok.vocab_size(), vocab);
    let sample = f["sample"].as_str().unwrap();
    let ours = tok.encode_ordinary(sample);
    assert_eq!(ours, ids(&f["hf_ids_with_our_vocab"]));
    assert_eq!(tok.decode(&ours).unwrap(), sample);
}

#[test]
fn hf_tokenizer_json_loads_and_encodes_like_hf() {
    let f = fixture();
    let json = f["hf_tokenizer_json"].as_str().unwrap();
    let tok = Tokenizer::from_tokenizer_json_bytes(json.as_bytes(), Path::new("hf.json")).unwrap();
    let sample = f["sample"].as_str().unwrap();
    let got = tok.encode_ordinary(sample);
    assert_eq!(got, ids(&f["hf_ids_with_hf_vocab"]));
    assert_eq!(tok.decode(&got).unwrap(), sample);
    // HF puts specials first.
    assert_eq!(tok.special_id("<|endoftext|>"), Some(0));
}

#[test]
fn saved_files_reload_to_the_same_tokenizer() {
    let f = fixture();
    let corpus = f["corpus"].as_str().unwrap();
    let (tok, _) = BpeTrainer::new(600).train_texts(&[corpus]).unwrap();
    let sample = format!("{}<|endoftext|> naïve 👍🏽", &corpus[..5000]);
    let want = tok.encode_with_specials(&sample);
    let dir = std::env::temp_dir().join(format!("gpt-tok-save-{}", std::process::id()));
    tok.save(&dir).unwrap();
    let from_json = Tokenizer::from_tokenizer_json_file(&dir.join("tokenizer.json")).unwrap();
    let from_pair =
        Tokenizer::from_vocab_merges_files(&dir.join("vocab.json"), &dir.join("merges.txt"))
            .unwrap();
    let from_dir = Tokenizer::from_path(&dir).unwrap();
    for t in [&from_json, &from_pair, &from_dir] {
        assert_eq!(t.encode_with_specials(&sample), want);
        assert_eq!(t.vocab_size(), tok.vocab_size());
        assert_eq!(t.merges(), tok.merges());
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn file_blocks_count_the_same_words_as_one_pass() {
    let f = fixture();
    let corpus = f["corpus"].as_str().unwrap();
    let path = std::env::temp_dir().join(format!("gpt-tok-corpus-{}.txt", std::process::id()));
    std::fs::write(&path, corpus).unwrap();
    let mut whole = WordCounts::default();
    let n = count_words_in(corpus, &mut whole);
    for block in [100, 4096, 65536] {
        let mut blocks = WordCounts::default();
        let (bytes, words) =
            count_words_in_file_blocks(&path, &[], &mut blocks, block, &|_| {}).unwrap();
        assert_eq!((bytes as usize, words), (corpus.len(), n), "block {block}");
        assert!(blocks == whole, "block {block}");
    }
    let (from_file, _) = BpeTrainer::new(700)
        .train_files(std::slice::from_ref(&path))
        .unwrap();
    let (from_text, _) = BpeTrainer::new(700).train_texts(&[corpus]).unwrap();
    assert_eq!(from_file.merges(), from_text.merges());
    std::fs::remove_file(&path).ok();
}
