//! The data pipeline's contracts, each checked against an independent reading of the files:
//! the batch sampler's targets are its inputs shifted by one and reach the last token,
//! `prepare` separates documents with `<|endoftext|>` and its split is a function of the seed.

use gpt::data::loader::{Batch, BatchSampler};
use gpt::data::prepare::{prepare, MIN_DOCS_FOR_DOC_SPLIT};
use gpt::data::tokens::{write_token_file, TokenFile};
use gpt::tokenizer::{AnyTokenizer, ENDOFTEXT};
use std::path::{Path, PathBuf};

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every token of a token file (its round trip is checked in `data::tokens`).
fn tokens_of(path: &Path) -> Vec<u32> {
    let f = TokenFile::open(path).unwrap();
    (0..f.len()).map(|i| f.get(i)).collect()
}

#[test]
fn sampler_targets_are_the_inputs_shifted_by_one_and_reach_the_last_token() {
    let dir = tmpdir("sampler");
    // Token i has value (i * 7) % 97: distinct neighbours, so a shift error cannot hide.
    let n = 97usize;
    let stream: Vec<u32> = (0..n as u32).map(|i| (i * 7) % 97).collect();
    let path = dir.join("train.bin");
    write_token_file(&path, &stream, 97).unwrap();
    let data = TokenFile::open(&path).unwrap();
    let position = |v: u32| stream.iter().position(|&t| t == v).unwrap();
    let (b, t) = (4usize, 8usize);
    let mut sampler = BatchSampler::new(&data, b, t, 5).unwrap();
    let mut batch = Batch::default();
    let mut saw_last = false;
    let mut saw_first = false;
    for _ in 0..200 {
        sampler.next(&data, &mut batch);
        assert_eq!((batch.ids.len(), batch.targets.len()), (b * t, b * t));
        for r in 0..b {
            let x = &batch.ids[r * t..(r + 1) * t];
            let y = &batch.targets[r * t..(r + 1) * t];
            let s = position(x[0]);
            assert!(s + t < n, "window at {s} runs past the data");
            for j in 0..t {
                assert_eq!(x[j], stream[s + j], "row {r} input {j}");
                assert_eq!(y[j], stream[s + j + 1] as i32, "row {r} target {j}");
            }
            saw_first |= s == 0;
            saw_last |= s + t == n - 1;
        }
    }
    assert!(
        saw_first,
        "no window started at the first token in 800 draws"
    );
    assert!(saw_last, "no window ended at the last token in 800 draws");
    // Same seed, same windows; another seed, other windows.
    let draw = |seed| {
        let mut s = BatchSampler::new(&data, b, t, seed).unwrap();
        let mut out = Batch::default();
        s.next(&data, &mut out);
        out.ids
    };
    assert_eq!(draw(9), draw(9));
    assert_ne!(draw(9), draw(10));
    // One window plus its target is the minimum.
    let short = dir.join("short.bin");
    write_token_file(&short, &stream[..t], 97).unwrap();
    let err = BatchSampler::new(&TokenFile::open(&short).unwrap(), b, t, 1).unwrap_err();
    assert!(err.to_string().contains("short.bin"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The documents of a token stream separated by `sep`, decoded.
fn documents(tok: &AnyTokenizer, ids: &[u32], sep: u32) -> Vec<String> {
    let AnyTokenizer::Bpe(t) = tok else {
        panic!("expected BPE")
    };
    ids.split(|&i| i == sep)
        .map(|d| t.decode(d).unwrap())
        .collect()
}

#[test]
fn prepare_separates_documents_with_endoftext_and_splits_by_the_seed() {
    let tok = AnyTokenizer::load("gpt2").unwrap();
    let AnyTokenizer::Bpe(bpe) = &tok else {
        panic!("gpt2 is BPE")
    };
    let eot = bpe.special_id(ENDOFTEXT).unwrap();
    let docs: Vec<String> = (0..3 * MIN_DOCS_FOR_DOC_SPLIT)
        .map(|i| format!("Document number {i} says hello {}.", "world ".repeat(i % 5)))
        .collect();
    let split = |seed: u64, tag: &str| {
        let dir = tmpdir(tag);
        let stats = prepare(&docs, &tok, &dir, 0.3, seed).unwrap();
        let train = tokens_of(&dir.join("train.bin"));
        let val = tokens_of(&dir.join("val.bin"));
        assert_eq!(
            (stats.train_tokens, stats.val_tokens),
            (train.len(), val.len())
        );
        let _ = std::fs::remove_dir_all(&dir);
        (train, val)
    };
    let (train, val) = split(3, "prep-a");
    for part in [&train, &val] {
        // Every document ends with <|endoftext|>, so the last piece after splitting is empty.
        assert_eq!(part.last(), Some(&eot));
    }
    let mut train_docs = documents(&tok, &train, eot);
    let mut val_docs = documents(&tok, &val, eot);
    assert_eq!(train_docs.pop().as_deref(), Some(""));
    assert_eq!(val_docs.pop().as_deref(), Some(""));
    // Each document lands whole in exactly one side, in the original order.
    let (mut ti, mut vi) = (0, 0);
    for d in &docs {
        if train_docs.get(ti) == Some(d) {
            ti += 1;
        } else {
            assert_eq!(
                val_docs.get(vi),
                Some(d),
                "document {d:?} is in neither split"
            );
            vi += 1;
        }
    }
    assert_eq!((ti, vi), (train_docs.len(), val_docs.len()));
    assert!(
        vi > 0 && ti > vi,
        "30% validation gave {vi} of {}",
        docs.len()
    );
    // The split is the seed's: the same seed repeats it, another changes it.
    assert_eq!(split(3, "prep-b"), (train.clone(), val.clone()));
    assert_ne!(split(4, "prep-c").1, val);
}

#[test]
fn prepare_with_few_documents_holds_out_the_tail_of_the_stream() {
    let tok = AnyTokenizer::load("gpt2").unwrap();
    let AnyTokenizer::Bpe(bpe) = &tok else {
        panic!("gpt2 is BPE")
    };
    let eot = bpe.special_id(ENDOFTEXT).unwrap();
    let docs = vec!["first book".to_string(), "second book, longer".to_string()];
    let dir = tmpdir("prep-tail");
    prepare(&docs, &tok, &dir, 0.25, 1).unwrap();
    let mut all = tokens_of(&dir.join("train.bin"));
    let val = tokens_of(&dir.join("val.bin"));
    all.extend_from_slice(&val);
    let mut expected = bpe.encode_ordinary(&docs[0]);
    expected.push(eot);
    expected.extend(bpe.encode_ordinary(&docs[1]));
    assert_eq!(
        all, expected,
        "train + val is the stream with one separator"
    );
    let n_val = (expected.len() as f64 * 0.25).round() as usize;
    assert_eq!(val.len(), n_val);
    let _ = std::fs::remove_dir_all(&dir);
}
