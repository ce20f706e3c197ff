//! Special tokens (`<|endoftext|>`): strings that map to one id when specials are allowed.
//!
//! With specials allowed, the text is cut at each occurrence of a special token's string and
//! the ordinary text in between is encoded as usual (tiktoken's `allowed_special="all"`).
//! With specials disallowed (`encode_ordinary`) the same characters are just text:
//! `<|endoftext|>` becomes `<`, `|`, `endo`, … like any other string.
//!
//! There are only a handful of special tokens, so finding them is one `memmem` search per
//! token per occurrence rather than an Aho-Corasick automaton. Overlaps resolve to the
//! leftmost match, then the longest.

use memchr::memmem;

/// The special tokens of a tokenizer and a searcher for each.
#[derive(Clone, Debug, Default)]
pub struct SpecialTokens {
    tokens: Vec<(String, u32)>,
}

impl SpecialTokens {
    /// Builds the set from (string, id) pairs; empty strings are ignored.
    pub fn new(mut tokens: Vec<(String, u32)>) -> SpecialTokens {
        tokens.retain(|(s, _)| !s.is_empty());
        tokens.sort_by_key(|t| t.1);
        SpecialTokens { tokens }
    }

    /// The (string, id) pairs, by id.
    pub fn tokens(&self) -> &[(String, u32)] {
        &self.tokens
    }

    /// The id of special token `s`.
    pub fn id(&self, s: &str) -> Option<u32> {
        self.tokens.iter().find(|t| t.0 == s).map(|t| t.1)
    }

    /// The string of special token `id`.
    pub fn string(&self, id: u32) -> Option<&str> {
        self.tokens.iter().find(|t| t.1 == id).map(|t| t.0.as_str())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The next special token in `text` at or after byte `from`: (start, end, id).
    pub fn find(&self, text: &str, from: usize) -> Option<(usize, usize, u32)> {
        let hay = &text.as_bytes()[from..];
        let mut best: Option<(usize, usize, u32)> = None;
        for (s, id) in &self.tokens {
            if let Some(pos) = memmem::find(hay, s.as_bytes()) {
                let (start, end) = (from + pos, from + pos + s.len());
                let better = match best {
                    None => true,
                    Some((bs, be, _)) => start < bs || (start == bs && end > be),
                };
                if better {
                    best = Some((start, end, *id));
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftmost_longest() {
        let sp = SpecialTokens::new(vec![("<|a|>".into(), 1), ("<|a|>x".into(), 2)]);
        assert_eq!(sp.find("..<|a|>x", 0), Some((2, 8, 2)));
        assert_eq!(sp.find("..<|a|>", 3), None);
        assert_eq!(sp.id("<|a|>"), Some(1));
    }
}
