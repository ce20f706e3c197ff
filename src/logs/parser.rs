//! The log parser: a line format, masking and a Drain miner put together, with template ids
//! of its own, and its state saved as JSON so that later logs can be matched against the
//! templates already known.
//!
//! A line goes through: the format splits off the header fields (a line that does not match
//! the format is kept whole); the content is masked and split at whitespace; Drain puts it in a
//! group. Template ids count from 0 in order of first appearance and are shown as `E1`, `E2`,
//! ... (loghub's EventIds). All lines that do not match the format share one template of their
//! own, `<unmatched>`, with its own id; their whole text is their content. Nothing is dropped,
//! so a line number always has a template.
//!
//! Two modes: [`LogParser::parse_line`] learns (a line may start a template or generalise one);
//! [`LogParser::match_line`] only looks up (an anomaly detector's test logs: a line that would
//! start a new template is unseen, `None`).

use super::drain::{Drain, DrainSettings, WILDCARD};
use super::format::LineFormat;
use super::mask::Masking;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The template text of lines that do not match the format.
pub const UNMATCHED_TEMPLATE: &str = "<unmatched>";

/// What the parser state file is, and its version.
const STATE_KIND: &str = "gpt-log-parser";
const STATE_VERSION: u32 = 1;

/// Where a template comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    /// A Drain group.
    Mined {
        /// The group's index in the miner.
        group: usize,
    },
    /// The lines that do not match the line format.
    Unmatched,
}

/// One parsed line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedLine {
    /// 1-based line number in the input (loghub's `LineId`).
    pub line_no: usize,
    /// Header field values in the order of [`LineFormat::headers`] (empty if unmatched).
    pub headers: Vec<String>,
    /// The message: the `<Content>` field, or the whole line if it did not match the format.
    pub content: String,
    /// Whether the line matched the format.
    pub matched_format: bool,
    /// Template id (0-based; shown as `E{id + 1}`).
    pub template: usize,
}

/// A template as reported: id, text and how many lines it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TemplateInfo {
    /// Template id (0-based).
    pub id: usize,
    /// loghub's EventId, `E{id + 1}`.
    pub event_id: String,
    /// The template, tokens joined by spaces, `<*>` for parameters.
    pub text: String,
    /// Lines with this template.
    pub occurrences: usize,
    /// Whether this is the template of the lines that do not match the format.
    pub unmatched: bool,
}

/// loghub's EventId of template `id`: `E1` for 0.
pub fn event_id(id: usize) -> String {
    format!("E{}", id + 1)
}

/// The parser and, once lines went through it, its templates. Serialized as the state file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogParser {
    kind: String,
    version: u32,
    format: LineFormat,
    masking: Masking,
    drain: Drain,
    /// Template id -> source.
    templates: Vec<TemplateSource>,
    /// Drain group -> template id.
    group_template: Vec<usize>,
    /// Template id of the unmatched lines, once there was one.
    unmatched: Option<usize>,
    /// Lines that did not match the format.
    unmatched_lines: usize,
}

impl LogParser {
    /// A parser with no templates yet; the settings are validated.
    pub fn new(format: LineFormat, masking: Masking, settings: DrainSettings) -> Result<Self> {
        Ok(Self {
            kind: STATE_KIND.to_string(),
            version: STATE_VERSION,
            format,
            masking,
            drain: Drain::new(settings)?,
            templates: Vec::new(),
            group_template: Vec::new(),
            unmatched: None,
            unmatched_lines: 0,
        })
    }

    /// The line format.
    pub fn format(&self) -> &LineFormat {
        &self.format
    }

    /// The masking rules.
    pub fn masking(&self) -> &Masking {
        &self.masking
    }

    /// Drain's settings.
    pub fn settings(&self) -> &DrainSettings {
        self.drain.settings()
    }

    /// Number of templates.
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// Template id of the lines that do not match the format, if any did.
    pub fn unmatched_template(&self) -> Option<usize> {
        self.unmatched
    }

    /// Lines parsed so far that did not match the format.
    pub fn unmatched_lines(&self) -> usize {
        self.unmatched_lines
    }

    /// Parses a whole text, one line per line (`\n` or `\r\n`), numbered from 1.
    pub fn parse_text(&mut self, text: &str) -> Vec<ParsedLine> {
        let lines = text.lines().enumerate();
        lines
            .map(|(i, line)| self.parse_line(i + 1, line))
            .collect()
    }

    /// Parses one line (learning mode): its template may be new or generalised.
    pub fn parse_line(&mut self, line_no: usize, line: &str) -> ParsedLine {
        let Some(split) = self.format.split(line) else {
            self.unmatched_lines += 1;
            let template = *self.unmatched.get_or_insert_with(|| {
                self.templates.push(TemplateSource::Unmatched);
                self.templates.len() - 1
            });
            return ParsedLine {
                line_no,
                headers: vec![String::new(); self.format.headers().len()],
                content: line.trim().to_string(),
                matched_format: false,
                template,
            };
        };
        let masked = self.masking.apply(&split.content);
        let tokens: Vec<&str> = masked.split_whitespace().collect();
        let group = self.drain.add(&tokens);
        if group == self.group_template.len() {
            self.templates.push(TemplateSource::Mined { group });
            self.group_template.push(self.templates.len() - 1);
        }
        ParsedLine {
            line_no,
            headers: split.headers,
            content: split.content,
            matched_format: true,
            template: self.group_template[group],
        }
    }

    /// The template a new line has among the known ones, learning nothing; `None` if the line
    /// would start a new template (an unseen event), or does not match the format when no
    /// parsed line did either.
    pub fn match_line(&self, line: &str) -> Option<usize> {
        let Some(split) = self.format.split(line) else {
            return self.unmatched;
        };
        let masked = self.masking.apply(&split.content);
        let tokens: Vec<&str> = masked.split_whitespace().collect();
        self.drain.find(&tokens).map(|g| self.group_template[g])
    }

    /// The text of template `id` (`<*>` for parameters); `None` for an unknown id.
    pub fn template_text(&self, id: usize) -> Option<String> {
        Some(match self.templates.get(id)? {
            TemplateSource::Mined { group } => self.drain.groups()[*group].template.join(" "),
            TemplateSource::Unmatched => UNMATCHED_TEMPLATE.to_string(),
        })
    }

    /// All templates, by id.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        let info = |(id, source): (usize, &TemplateSource)| {
            let (occurrences, unmatched) = match *source {
                TemplateSource::Mined { group } => (self.drain.groups()[group].size, false),
                TemplateSource::Unmatched => (self.unmatched_lines, true),
            };
            TemplateInfo {
                id,
                event_id: event_id(id),
                // `id` comes from enumerating `templates`, so it is known.
                text: self.template_text(id).unwrap_or_default(),
                occurrences,
                unmatched,
            }
        };
        self.templates.iter().enumerate().map(info).collect()
    }

    /// The parameters of a parsed line: the parts of its content that the `<*>` of its
    /// (final) template stand for, in order. Empty for an unmatched line, or if the content
    /// does not fit the template (a mask that ate whitespace).
    pub fn parameters(&self, line: &ParsedLine) -> Vec<String> {
        match self.templates.get(line.template) {
            Some(TemplateSource::Mined { group }) => {
                let template = &self.drain.groups()[*group].template;
                let content: Vec<&str> = line.content.split_whitespace().collect();
                wildcard_captures(&template.join(" "), &content.join(" ")).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Writes the state (format, masks, settings, tree and templates) as JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::file(path, format!("cannot serialise the parser: {e}")))?;
        crate::io::write_atomic(path, &json)
    }

    /// Reads a state written by [`LogParser::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::io::read_text(path)?;
        let parser: Self = serde_json::from_str(&text).map_err(|e| {
            Error::file(
                path,
                format!("not a log parser state ({e}); write one with `gpt logs parse --out DIR`"),
            )
        })?;
        if parser.kind != STATE_KIND || parser.version != STATE_VERSION {
            return Err(Error::file(
                path,
                format!(
                    "is a `{}` version {} file; this build reads `{STATE_KIND}` version \
                     {STATE_VERSION}",
                    parser.kind, parser.version
                ),
            ));
        }
        parser.check_consistent(path)?;
        Ok(parser)
    }

    /// The template tables of a loaded state agree with each other and with the miner.
    fn check_consistent(&self, path: &Path) -> Result<()> {
        self.drain
            .check()
            .map_err(|e| Error::file(path, format!("inconsistent Drain tree: {e}")))?;
        let groups = self.drain.groups().len();
        let mut seen = 0;
        for (id, source) in self.templates.iter().enumerate() {
            let ok = match *source {
                TemplateSource::Mined { group } => {
                    seen += 1;
                    self.group_template.get(group) == Some(&id)
                }
                TemplateSource::Unmatched => self.unmatched == Some(id),
            };
            if !ok {
                return Err(Error::file(
                    path,
                    format!("template {} is inconsistent", event_id(id)),
                ));
            }
        }
        if seen != groups || self.group_template.len() != groups {
            return Err(Error::file(
                path,
                format!("{groups} Drain groups but {seen} mined templates"),
            ));
        }
        Ok(())
    }
}

/// Matches `text` against `pattern`, in which each `<*>` stands for any (possibly empty)
/// string; returns what each `<*>` matched, shortest first, or `None` if it does not match.
///
/// The classic two-pointer wildcard match (backtrack only to the last `<*>`, which is enough
/// for a match to be found when there is one), on bytes: the pattern's literal pieces are
/// UTF-8, so a piece can only match at character boundaries of `text`.
fn wildcard_captures(pattern: &str, text: &str) -> Option<Vec<String>> {
    let pieces: Vec<&str> = pattern.split(WILDCARD).collect();
    let (first, rest) = pieces.split_first()?;
    let mut pos = first.len();
    if !text.starts_with(first) {
        return None;
    }
    let mut captures = Vec::with_capacity(rest.len());
    // Each wildcard is followed by a piece; the last piece must end the text.
    for (i, piece) in rest.iter().enumerate() {
        let last = i + 1 == rest.len();
        let found = if last {
            let start = text.len().checked_sub(piece.len())?;
            (start >= pos && text.ends_with(piece)).then_some(start)
        } else {
            text[pos..].find(piece).map(|off| pos + off)
        }?;
        captures.push(text[pos..found].to_string());
        pos = found + piece.len();
    }
    (pos == text.len()).then_some(captures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_capture_parameters() {
        let caps = wildcard_captures(
            "<*> Served block <*> to /<*>",
            "10.1.2.3:50010 Served block blk_-12 to /10.1.2.4",
        );
        assert_eq!(caps.unwrap(), ["10.1.2.3:50010", "blk_-12", "10.1.2.4"]);
        assert_eq!(wildcard_captures("a <*> c", "a b b c").unwrap(), ["b b"]);
        assert_eq!(
            wildcard_captures("no wildcard", "no wildcard").unwrap(),
            Vec::<String>::new()
        );
        assert!(wildcard_captures("no wildcard", "other").is_none());
        assert!(wildcard_captures("x <*> y", "x y").is_none());
        assert_eq!(wildcard_captures("<*>", "").unwrap(), [""]);
    }
}
