//! Masking, Drain's preprocessing: before a message reaches the parse tree, every substring
//! that a rule's regular expression matches (a block id, an IP address with its port, a hex
//! number, a path, a number) is replaced by the wildcard `<*>`. Variables that the rules catch
//! can no longer split one event into several groups, and the tree's similarity sees fewer
//! differing tokens. Rules apply in order to the whole message (as Drain's `re.sub` loop
//! does), so an earlier rule sees the original text and a later one the masked text. Adjacent
//! wildcards left by two rules (`/var/<*>` after the block id rule, then the path rule:
//! `<*><*>`) are merged into one.

use super::drain::WILDCARD;
use crate::error::{Error, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// One masking rule: a name (for the summary and error messages) and a regular expression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaskRule {
    /// What the rule masks (`ip_port`, `number`, ...).
    pub name: String,
    /// The regular expression (Rust `regex` syntax; no look-around).
    pub pattern: String,
}

impl MaskRule {
    /// A rule from a name and a pattern.
    pub fn new(name: &str, pattern: &str) -> Self {
        Self {
            name: name.to_string(),
            pattern: pattern.to_string(),
        }
    }
}

/// The generic rules used when no preset says otherwise, in the order they apply: the
/// specific shapes first, so that a plain number rule does not cut an IP or a block id apart.
pub fn generic_rules() -> Vec<MaskRule> {
    [
        ("block_id", r"blk_-?\d+"),
        (
            "uuid",
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",
        ),
        ("ip_port", r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"),
        ("hex", r"\b0[xX][0-9a-fA-F]+\b"),
        ("hex_id", r"\b[0-9a-fA-F]{8,}\b"),
        ("path", r"(?:/[\w.\-]+){2,}/?"),
        ("number", r"\b\d+(?:\.\d+)*\b"),
    ]
    .into_iter()
    .map(|(name, pattern)| MaskRule::new(name, pattern))
    .collect()
}

/// Compiled masking rules. Serialized as the list of rules.
#[derive(Clone, Debug)]
pub struct Masking {
    rules: Vec<MaskRule>,
    compiled: Vec<Regex>,
}

impl Masking {
    /// Compiles `rules`; a pattern that does not compile is an error naming the rule.
    pub fn new(rules: Vec<MaskRule>) -> Result<Self> {
        let compiled = rules
            .iter()
            .map(|r| {
                Regex::new(&r.pattern).map_err(|e| {
                    Error::field(
                        format!("mask `{}`", r.name),
                        format!("`{}` is not a valid regular expression: {e}", r.pattern),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { rules, compiled })
    }

    /// The rules, in the order they apply.
    pub fn rules(&self) -> &[MaskRule] {
        &self.rules
    }

    /// `message` with every match of every rule replaced by `<*>` (adjacent ones merged).
    pub fn apply<'a>(&self, message: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(message);
        for re in &self.compiled {
            if let Cow::Owned(masked) = re.replace_all(&out, WILDCARD) {
                out = Cow::Owned(masked);
            }
        }
        let twice = "<*><*>";
        if out.contains(twice) {
            let mut merged = out.into_owned();
            while merged.contains(twice) {
                merged = merged.replace(twice, WILDCARD);
            }
            out = Cow::Owned(merged);
        }
        out
    }
}

impl PartialEq for Masking {
    fn eq(&self, other: &Self) -> bool {
        self.rules == other.rules
    }
}

impl Serialize for Masking {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.rules.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Masking {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let rules = Vec::<MaskRule>::deserialize(d)?;
        Self::new(rules).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_rules_mask_variables_and_keep_words() {
        let m = Masking::new(generic_rules()).unwrap();
        let cases = [
            (
                "Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106",
                "Receiving block <*> src: /<*>",
            ),
            (
                "CE sym 2, at 0x0b85eee0, mask 0x05",
                "CE sym <*>, at <*>, mask <*>",
            ),
            (
                "open /var/log/app.log failed after 3.5 s",
                "open <*> failed after <*> s",
            ),
            ("job 9f8e7d6c5b4a3f2e done", "job <*> done"),
            ("node R02-M1-N0 ok", "node R02-M1-N0 ok"),
            ("generating core.2275", "generating core.<*>"),
            (
                "Deleting block blk_7 file /a/b/blk_7",
                "Deleting block <*> file <*>",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(m.apply(line), want, "{line}");
        }
    }

    #[test]
    fn bad_rule_is_named() {
        let err = Masking::new(vec![MaskRule::new("mine", "(")]).unwrap_err();
        assert!(err.to_string().contains("mask `mine`"), "{err}");
    }
}
