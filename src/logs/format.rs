//! Line formats: which part of a log line is the message to mine and which parts are header
//! fields (date, level, component, a label) that are split off and kept but never mined.
//!
//! A format is a loghub-style string such as `<Date> <Time> <Pid> <Level> <Component>: <Content>`:
//! each `<Name>` is a field, `<Content>` (exactly once) is the message. As in loghub's
//! `generate_logformat_regex`, the format becomes one anchored regular expression: every field
//! is a lazy group `(?P<Name>.*?)`, every run of spaces between fields matches any run of
//! whitespace, and the rest of the text between fields is itself a regular expression, so that
//! loghub's format strings can be pasted verbatim (`<Time>\|<Component>`, `(\[<PID>\])?`). A
//! line is matched after trimming surrounding whitespace (loghub's `line.strip()`).

use crate::error::{Error, Result};
use regex::Regex;

/// The name of the field that holds the message to mine.
pub const CONTENT: &str = "Content";

/// Column names of the parsed output that a header field may not take.
const RESERVED: [&str; 4] = ["LineId", "EventId", "EventTemplate", "ParameterList"];

/// A compiled line format. Serialized as its format string.
#[derive(Clone, Debug)]
pub struct LineFormat {
    /// The format string as given.
    source: String,
    /// Field names in the order they appear, `Content` included.
    fields: Vec<String>,
    /// Index of `Content` in `fields`.
    content: usize,
    /// `^...$` with one named group per field.
    regex: Regex,
}

/// A line split by its format: the header field values (in format order, without `Content`)
/// and the content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitLine {
    /// Values of the header fields, in the order of [`LineFormat::headers`]; an optional field
    /// that did not take part in the match (`(\[<PID>\])?`) is empty.
    pub headers: Vec<String>,
    /// The message.
    pub content: String,
}

impl LineFormat {
    /// The format in which the whole line is the message: `<Content>`.
    pub fn whole_line() -> Self {
        // The literal format has one valid field and no literal text, so it always compiles.
        Self::parse("<Content>").expect("`<Content>` is a valid format")
    }

    /// Compiles a format string; the error names what is wrong (a missing or repeated
    /// `<Content>`, a field name that is not an identifier, an unclosed `<`, literal text that
    /// is not a valid regular expression).
    pub fn parse(format: &str) -> Result<Self> {
        let bad = |reason: String| Error::field(format!("log format `{format}`"), reason);
        let mut fields: Vec<String> = Vec::new();
        let mut pattern = String::from("^");
        let mut rest = format;
        while let Some(open) = rest.find('<') {
            push_literal(&mut pattern, &rest[..open]);
            let after = &rest[open + 1..];
            let close = after.find('>').ok_or_else(|| {
                bad(format!(
                    "`<` at byte {} is never closed; fields are written `<Name>`",
                    format.len() - rest.len() + open
                ))
            })?;
            let name = &after[..close];
            if !is_identifier(name) {
                return Err(bad(format!(
                    "field name `<{name}>` is not an identifier (letters, digits, `_`, not \
                     starting with a digit)"
                )));
            }
            if fields.iter().any(|f| f == name) {
                return Err(bad(format!("field `<{name}>` appears twice")));
            }
            if RESERVED.contains(&name) {
                return Err(bad(format!(
                    "`<{name}>` is a column of the parsed output; rename the field"
                )));
            }
            pattern.push_str(&format!("(?P<{name}>.*?)"));
            fields.push(name.to_string());
            rest = &after[close + 1..];
        }
        push_literal(&mut pattern, rest);
        pattern.push('$');
        let content = fields.iter().position(|f| f == CONTENT).ok_or_else(|| {
            bad(
                "no `<Content>` field: the format must say which part of a line is the message"
                    .into(),
            )
        })?;
        let regex = Regex::new(&pattern).map_err(|e| {
            bad(format!(
                "the text between fields is a regular expression (as in loghub) and it does not \
                 compile: {e}; escape `[ ] ( ) | . * + ?` with a backslash to mean the character"
            ))
        })?;
        Ok(Self {
            source: format.to_string(),
            fields,
            content,
            regex,
        })
    }

    /// The format string as given.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The header field names (every field but `Content`), in format order.
    pub fn headers(&self) -> Vec<&str> {
        let content = self.content;
        let named = self.fields.iter().enumerate();
        named
            .filter(|&(i, _)| i != content)
            .map(|(_, f)| f.as_str())
            .collect()
    }

    /// Splits a line into its header fields and content, or `None` if it does not match.
    pub fn split(&self, line: &str) -> Option<SplitLine> {
        let caps = self.regex.captures(line.trim())?;
        let value = |name: &str| caps.name(name).map_or("", |m| m.as_str()).to_string();
        Some(SplitLine {
            headers: self.headers().into_iter().map(value).collect(),
            content: value(CONTENT),
        })
    }
}

/// Appends the literal text between two fields: runs of spaces match any whitespace run.
fn push_literal(pattern: &mut String, literal: &str) {
    let mut in_spaces = false;
    for c in literal.chars() {
        if c == ' ' {
            if !in_spaces {
                pattern.push_str(r"\s+");
            }
            in_spaces = true;
        } else {
            pattern.push(c);
            in_spaces = false;
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl PartialEq for LineFormat {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl serde::Serialize for LineFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> serde::Deserialize<'de> for LineFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let source = String::deserialize(d)?;
        Self::parse(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hdfs_line_splits_into_fields_and_content() {
        let f = LineFormat::parse("<Date> <Time> <Pid> <Level> <Component>: <Content>").unwrap();
        let s = f
            .split("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 done")
            .unwrap();
        assert_eq!(
            s.headers,
            [
                "081109",
                "203615",
                "148",
                "INFO",
                "dfs.DataNode$PacketResponder"
            ]
        );
        assert_eq!(s.content, "PacketResponder 1 done");
        assert_eq!(f.headers(), ["Date", "Time", "Pid", "Level", "Component"]);
        assert!(f.split("not a log line").is_none());
    }

    #[test]
    fn loghub_regex_literals_and_optional_fields() {
        let f = LineFormat::parse(r"<Component>(\[<PID>\])?: <Content>").unwrap();
        assert_eq!(
            f.split("sshd[42]: hello there").unwrap().headers,
            ["sshd", "42"]
        );
        assert_eq!(f.split("kernel: hello").unwrap().headers, ["kernel", ""]);
    }

    #[test]
    fn bad_formats_name_the_problem() {
        let msg = |f: &str| LineFormat::parse(f).unwrap_err().to_string();
        assert!(msg("<Date> <Time>").contains("no `<Content>`"));
        assert!(msg("<Date> <Content> <Date>").contains("appears twice"));
        assert!(msg("<Date> <Content").contains("never closed"));
        assert!(msg("<my field> <Content>").contains("not an identifier"));
        assert!(msg("[<Time> <Content>").contains("does not compile"));
        assert!(msg("<EventId> <Content>").contains("column of the parsed output"));
    }
}
