//! Special tokens appended to a tokenizer (GPT-1 fine-tuning's start / delimiter / extract):
//! they take the next ids, survive a save and load of every file format, decode to their
//! string, and are never produced by ordinary encoding.

use gpt_tokenizer::{AnyTokenizer, CharTokenizer, Tokenizer};

const NAMES: [&str; 3] = ["<|start|>", "<|delim|>", "<|extract|>"];

#[test]
fn bpe_specials_are_appended_and_saved() {
    let mut tok = Tokenizer::gpt2();
    let ids = tok.add_special_tokens(&NAMES).unwrap();
    assert_eq!(ids, [50257, 50258, 50259]);
    assert_eq!(tok.vocab_size(), 50260);
    // Adding again returns the same ids; text is unchanged.
    assert_eq!(tok.add_special_tokens(&NAMES).unwrap(), ids);
    assert_eq!(tok.encode_ordinary("hello world"), [31373, 995]);
    assert_eq!(tok.encode_with_specials("a<|extract|>"), [64, 50259]);
    assert_eq!(tok.decode(&[50257]).unwrap(), "<|start|>");
    assert!(tok.add_special_tokens(&[""]).is_err());
    assert!(tok.add_special_tokens(&["hello"]).is_err());

    let dir = std::env::temp_dir().join(format!("gpt-tok-added-{}", std::process::id()));
    tok.save(&dir).unwrap();
    for path in [dir.clone(), dir.join("tokenizer.json")] {
        let back = AnyTokenizer::load(&path.to_string_lossy()).unwrap();
        assert_eq!(back.vocab_size(), 50260, "{}", path.display());
        for (name, id) in NAMES.iter().zip(&ids) {
            assert_eq!(back.special_id(name), Some(*id), "{}", path.display());
        }
    }
    // vocab.json + merges.txt alone (specials recognised by their `<|…|>` spelling).
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let back = AnyTokenizer::load(&dir.to_string_lossy()).unwrap();
    assert_eq!(back.special_id("<|delim|>"), Some(50258));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn char_specials_follow_the_characters() {
    let mut tok = CharTokenizer::from_text("ab c");
    let ids = tok.add_special_tokens(&NAMES).unwrap();
    assert_eq!(ids, [4, 5, 6]);
    assert_eq!(tok.vocab_size(), 7);
    assert_eq!(tok.encode("ab").unwrap(), [1, 2]);
    assert_eq!(tok.decode(&[1, 6]).unwrap(), "a<|extract|>");
    assert!(tok.add_special_tokens(&["x"]).is_err());
    let path = std::path::Path::new("t.json");
    let back = CharTokenizer::from_json_bytes(tok.to_json().as_bytes(), path).unwrap();
    assert_eq!(back, tok);
    let plain = CharTokenizer::from_text("ab c");
    let back = CharTokenizer::from_json_bytes(plain.to_json().as_bytes(), path).unwrap();
    assert_eq!(back.vocab_size(), 4);
}
