//! The hand-written pre-tokenizer against `fancy-regex` running GPT-2's original pattern,
//! on every code point class boundary and on random strings from a seeded generator, and
//! exact round-trips of random Unicode text through the GPT-2 tokenizer.

use gpt_tokenizer::pretokenize::{pieces, split_at_safe_boundaries, GPT2_PATTERN};
use gpt_tokenizer::unicode_class::{char_class, CharClass};
use gpt_tokenizer::Tokenizer;

/// xorshift64*: a tiny seeded generator so failures reproduce without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random string biased towards the characters where the regex's alternatives meet.
fn random_text(rng: &mut Rng, max_len: usize) -> String {
    const POOLS: &[&str] = &[
        "abcXYZéß中한",
        "0123½²Ⅻ٣",
        "      \t\n\r\u{b}\u{c}",
        "''''stmdrelvSLTVRE",
        "!?.,;:-_(){}[]<>|/\\\"#",
        "\u{a0}\u{85}\u{1680}\u{2000}\u{2028}\u{3000}\u{200b}\u{feff}",
        "\u{301}\u{308}\u{93f}\u{903}\u{200d}\u{fe0f}",
        "😀👍🏽🇫🇷",
    ];
    let len = rng.below(max_len + 1);
    let mut s = String::new();
    for _ in 0..len {
        if rng.below(10) == 0 {
            // Any scalar value, assigned or not.
            loop {
                let cp = rng.below(0x11_0000) as u32;
                if let Some(c) = char::from_u32(cp) {
                    s.push(c);
                    break;
                }
            }
        } else {
            let pool: Vec<char> = POOLS[rng.below(POOLS.len())].chars().collect();
            s.push(pool[rng.below(pool.len())]);
        }
    }
    s
}

fn reference_pieces<'a>(re: &fancy_regex::Regex, text: &'a str) -> Vec<&'a str> {
    re.find_iter(text).map(|m| m.unwrap().as_str()).collect()
}

#[test]
fn classes_match_regex_on_every_code_point() {
    let l = regex::Regex::new(r"^\p{L}$").unwrap();
    let n = regex::Regex::new(r"^\p{N}$").unwrap();
    let s = regex::Regex::new(r"^\s$").unwrap();
    let mut buf = [0u8; 4];
    for cp in 0..0x11_0000u32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        let t = c.encode_utf8(&mut buf);
        let want = if l.is_match(t) {
            CharClass::Letter
        } else if n.is_match(t) {
            CharClass::Number
        } else if s.is_match(t) {
            CharClass::Space
        } else {
            CharClass::Other
        };
        assert_eq!(char_class(c), want, "U+{cp:04X}");
    }
}

/// tiktoken's rewrite of the pattern (possessive quantifiers, `\s++$`, a final `\s`).
const TIKTOKEN_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

#[test]
fn scanner_equals_fancy_regex_on_random_strings() {
    let gpt2 = fancy_regex::Regex::new(GPT2_PATTERN).unwrap();
    let tiktoken = fancy_regex::Regex::new(TIKTOKEN_PATTERN).unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..20_000 {
        let text = random_text(&mut rng, 24);
        let want = reference_pieces(&gpt2, &text);
        let got: Vec<&str> = pieces(&text).collect();
        assert_eq!(got, want, "case {i}: {text:?}");
        assert_eq!(
            reference_pieces(&tiktoken, &text),
            want,
            "tiktoken's pattern, case {i}"
        );
    }
}

#[test]
fn safe_boundaries_do_not_change_pieces() {
    let mut rng = Rng(7);
    for _ in 0..200 {
        let mut text = String::new();
        for _ in 0..50 {
            text.push_str(&random_text(&mut rng, 12));
            text.push_str(["\n", "x\ny", "a\n\nb", " \n", "\nq"][rng.below(5)]);
        }
        let whole: Vec<&str> = pieces(&text).collect();
        let mut parts = Vec::new();
        for chunk in split_at_safe_boundaries(&text, 16) {
            parts.extend(pieces(chunk));
        }
        assert_eq!(parts, whole);
    }
}

#[test]
fn random_unicode_roundtrips() {
    let tok = Tokenizer::gpt2();
    let mut rng = Rng(42);
    for _ in 0..5_000 {
        let text = random_text(&mut rng, 64);
        let ids = tok.encode_ordinary(&text);
        assert_eq!(tok.decode(&ids).unwrap(), text);
        let ids = tok.encode_with_specials(&text);
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}
