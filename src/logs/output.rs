//! The files `gpt logs parse` writes into its output directory, each atomically:
//! - `templates.csv`: `EventId,EventTemplate,Occurrences` (loghub's layout), by EventId;
//! - `structured.csv`: `LineId`, the format's header fields, `Content`, `EventId`,
//!   `EventTemplate`, `ParameterList` (a JSON array), one row per input line;
//! - `summary.json`: counts, what was done with lines that do not match the format, the
//!   settings, and the grouping accuracy when a ground truth was given;
//! - `parser.json`: the parser state ([`LogParser::save`]), to match later logs against.

use super::grouping::GroupingScore;
use super::mask::MaskRule;
use super::parser::{event_id, LogParser, ParsedLine, UNMATCHED_TEMPLATE};
use crate::error::{Error, Result};
use crate::io::write_atomic;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// File names inside the output directory.
pub const TEMPLATES_CSV: &str = "templates.csv";
/// See the module documentation.
pub const STRUCTURED_CSV: &str = "structured.csv";
/// See the module documentation.
pub const SUMMARY_JSON: &str = "summary.json";
/// See the module documentation.
pub const PARSER_JSON: &str = "parser.json";

/// What `summary.json` holds (and `gpt logs parse --json` prints).
#[derive(Clone, Debug, Serialize)]
pub struct ParseSummary {
    /// The input file.
    pub input: String,
    /// Lines read.
    pub lines: usize,
    /// Templates found (the unmatched template included).
    pub templates: usize,
    /// Lines that did not match the format.
    pub unmatched: UnmatchedSummary,
    /// The settings the parse ran with.
    pub settings: SettingsSummary,
    /// Grouping accuracy against a ground truth, if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracySummary>,
}

/// Lines that did not match the format, and what was done with them.
#[derive(Clone, Debug, Serialize)]
pub struct UnmatchedSummary {
    /// How many.
    pub lines: usize,
    /// Their shared template's EventId (`None` if every line matched).
    pub event_id: Option<String>,
    /// In words.
    pub handling: String,
}

/// The settings of a parse.
#[derive(Clone, Debug, Serialize)]
pub struct SettingsSummary {
    /// The preset name, if the format was given by name.
    pub preset: Option<String>,
    /// The line format string.
    pub format: String,
    /// Drain's depth.
    pub depth: usize,
    /// Drain's similarity threshold.
    pub st: f64,
    /// Drain's most children per node.
    pub max_children: usize,
    /// The masking rules, in order.
    pub masks: Vec<MaskRule>,
}

/// A grouping score and the truth it was measured against.
#[derive(Clone, Debug, Serialize)]
pub struct AccuracySummary {
    /// The ground-truth file.
    pub truth: String,
    /// The score.
    #[serde(flatten)]
    pub score: GroupingScore,
}

impl ParseSummary {
    /// The summary of `lines` parsed from `input` by `parser`.
    pub fn new(input: &Path, preset: Option<&str>, parser: &LogParser, lines: usize) -> Self {
        let settings = parser.settings();
        let unmatched_lines = parser.unmatched_lines();
        let event = parser.unmatched_template().map(event_id);
        let handling = match &event {
            None => "none: every line matched the format".to_string(),
            Some(id) => format!(
                "kept, not mined: all {unmatched_lines} share template {id} \
                 (`{UNMATCHED_TEMPLATE}`), the whole line as Content, header fields empty"
            ),
        };
        Self {
            input: input.display().to_string(),
            lines,
            templates: parser.template_count(),
            unmatched: UnmatchedSummary {
                lines: unmatched_lines,
                event_id: event,
                handling,
            },
            settings: SettingsSummary {
                preset: preset.map(str::to_string),
                format: parser.format().as_str().to_string(),
                depth: settings.depth,
                st: settings.st,
                max_children: settings.max_children,
                masks: parser.masking().rules().to_vec(),
            },
            accuracy: None,
        }
    }
}

/// Writes the four files into `dir` (created if needed); returns their paths.
pub fn write_parse(
    dir: &Path,
    parser: &LogParser,
    lines: &[ParsedLine],
    summary: &ParseSummary,
) -> Result<Vec<PathBuf>> {
    let paths: Vec<PathBuf> = [TEMPLATES_CSV, STRUCTURED_CSV, SUMMARY_JSON, PARSER_JSON]
        .iter()
        .map(|name| dir.join(name))
        .collect();
    write_atomic(&paths[0], &templates_csv(parser, &paths[0])?)?;
    write_atomic(&paths[1], &structured_csv(parser, lines, &paths[1])?)?;
    let json = serde_json::to_vec_pretty(summary)
        .map_err(|e| Error::file(&paths[2], format!("cannot serialise the summary: {e}")))?;
    write_atomic(&paths[2], &json)?;
    parser.save(&paths[3])?;
    Ok(paths)
}

/// `EventId,EventTemplate,Occurrences`.
fn templates_csv(parser: &LogParser, path: &Path) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| Error::file(path, format!("cannot write CSV: {e}"));
    w.write_record(["EventId", "EventTemplate", "Occurrences"])
        .map_err(bad)?;
    for t in parser.templates() {
        w.write_record([t.event_id, t.text, t.occurrences.to_string()])
            .map_err(bad)?;
    }
    w.into_inner()
        .map_err(|e| Error::file(path, format!("cannot write CSV: {e}")))
}

/// `LineId, <headers>, Content, EventId, EventTemplate, ParameterList`.
fn structured_csv(parser: &LogParser, lines: &[ParsedLine], path: &Path) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let bad = |e: csv::Error| Error::file(path, format!("cannot write CSV: {e}"));
    let mut header = vec!["LineId"];
    header.extend(parser.format().headers());
    header.extend(["Content", "EventId", "EventTemplate", "ParameterList"]);
    w.write_record(&header).map_err(bad)?;
    // Final template texts, computed once.
    let texts: Vec<String> = parser.templates().into_iter().map(|t| t.text).collect();
    for line in lines {
        let params = serde_json::to_string(&parser.parameters(line))
            .map_err(|e| Error::file(path, format!("cannot write parameters: {e}")))?;
        let mut row = vec![line.line_no.to_string()];
        row.extend(line.headers.iter().cloned());
        row.push(line.content.clone());
        row.push(event_id(line.template));
        row.push(texts.get(line.template).cloned().unwrap_or_default());
        row.push(params);
        w.write_record(&row).map_err(bad)?;
    }
    w.into_inner()
        .map_err(|e| Error::file(path, format!("cannot write CSV: {e}")))
}
