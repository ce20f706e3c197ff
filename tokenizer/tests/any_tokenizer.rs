//! `AnyTokenizer::load`, what `--tokenizer gpt2|DIR|FILE` resolves to: the bundled GPT-2,
//! a directory of saved BPE files or a char tokenizer, a tokenizer.json or char JSON file.

use gpt_tokenizer::{AnyTokenizer, BpeTrainer, CharTokenizer};

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("gpt-tok-any-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn loads_every_kind() {
    let gpt2 = AnyTokenizer::load("gpt2").unwrap();
    assert_eq!(gpt2.vocab_size(), 50257);
    assert_eq!(gpt2.encode("hi<|endoftext|>", true).unwrap(), [5303, 50256]);
    assert_eq!(gpt2.encode("hi<|endoftext|>", false).unwrap().len(), 8);
    assert_eq!(gpt2.token_bytes(995).unwrap(), b" world");

    let text = "to be or not to be, that is the question\n".repeat(30);
    let (bpe, _) = BpeTrainer::new(300).train_texts(&[text.as_str()]).unwrap();
    let dir = temp_dir("bpe");
    bpe.save(&dir).unwrap();
    let from_dir = AnyTokenizer::load(dir.to_str().unwrap()).unwrap();
    let from_file = AnyTokenizer::load(dir.join("tokenizer.json").to_str().unwrap()).unwrap();
    let want = bpe.encode_ordinary(&text);
    assert_eq!(from_dir.encode(&text, true).unwrap(), want);
    assert_eq!(from_file.encode(&text, true).unwrap(), want);

    let chars = CharTokenizer::from_text(&text);
    let cdir = temp_dir("char");
    chars.save(&cdir.join("tokenizer_char.json")).unwrap();
    for spec in [cdir.clone(), cdir.join("tokenizer_char.json")] {
        let t = AnyTokenizer::load(spec.to_str().unwrap()).unwrap();
        assert!(matches!(t, AnyTokenizer::Char(_)));
        assert_eq!(
            t.encode("to be", true).unwrap(),
            chars.encode("to be").unwrap()
        );
    }
    assert!(AnyTokenizer::load("/definitely/not/here").is_err());
    std::fs::remove_dir_all(dir).ok();
    std::fs::remove_dir_all(cdir).ok();
}
