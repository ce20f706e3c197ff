//! Sessions from parsed logs: the output of `gpt logs parse` (`structured.csv`), or new raw
//! lines matched against a saved parser (`parser.json`), grouped into sessions by an id found in
//! each line (e.g. HDFS block ids, `blk_-?\d+`) or kept as one stream. A model trained from a
//! parse keeps the parser and the grouping rule beside its weights (`log_source.json`), so that
//! `gpt logs detect --input new.log` reads raw logs the same way.

use super::output::{PARSER_JSON, STRUCTURED_CSV};
use super::parser::{event_id, LogParser};
use super::sessions::Session;
use crate::error::{Error, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// The key of a line whose template the parser has never seen (never in a model's vocabulary,
/// so it is `<unk>` and always flagged).
pub const UNSEEN_KEY: &str = "unseen";
/// File name of the grouping rule in a model directory.
pub const LOG_SOURCE_FILE: &str = "log_source.json";

/// How a model's sessions were made from a log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSource {
    /// The regex whose matches in a line name the sessions it belongs to; `None`: one stream.
    pub session_key: Option<String>,
}

impl LogSource {
    /// The compiled session regex; an error names `--session-key`.
    pub fn regex(&self) -> Result<Option<Regex>> {
        self.session_key
            .as_deref()
            .map(|k| {
                Regex::new(k).map_err(|e| Error::field("--session-key", format!("`{k}`: {e}")))
            })
            .transpose()
    }

    /// Writes `log_source.json` and copies the parser state from the parse directory `parsed`
    /// into the model directory `dir`, atomically.
    pub fn save_with_parser(&self, parsed: &Path, dir: &Path) -> Result<()> {
        let state = parsed.join(PARSER_JSON);
        let bytes = std::fs::read(&state).map_err(|e| Error::io(&state, e))?;
        crate::io::atomic::write_atomic(&dir.join(PARSER_JSON), &bytes)?;
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::usage("LogSource::save", e.to_string()))?;
        crate::io::atomic::write_atomic(&dir.join(LOG_SOURCE_FILE), &text)
    }

    /// Reads the grouping rule and the parser of a model trained from a parse.
    pub fn load_with_parser(dir: &Path) -> Result<(LogSource, LogParser)> {
        let path = dir.join(LOG_SOURCE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::file(
                &path,
                format!("{e}; only a model trained with `gpt logs train --parsed` reads raw logs (use --sessions)"),
            )
        })?;
        let source: LogSource =
            serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))?;
        let parser = LogParser::load(&dir.join(PARSER_JSON))?;
        Ok((source, parser))
    }
}

/// Groups `(text, key)` lines into sessions: with `session_key`, a line joins the session of
/// each distinct id the regex finds in its text (sessions in order of first appearance, each
/// named by its id; lines without an id are counted in the second value); without, one stream
/// of every line.
pub fn group_sessions(
    lines: impl IntoIterator<Item = (String, String)>,
    session_key: Option<&Regex>,
) -> (Vec<Session>, usize) {
    let Some(re) = session_key else {
        let keys: Vec<String> = lines.into_iter().map(|(_, k)| k).collect();
        let stream = Session {
            keys,
            line: 1,
            id: None,
        };
        return (vec![stream], 0);
    };
    let mut sessions: Vec<Session> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut without = 0;
    for (text, key) in lines {
        let mut ids: Vec<&str> = re.find_iter(&text).map(|m| m.as_str()).collect();
        ids.dedup();
        if ids.is_empty() {
            without += 1;
        }
        for id in ids {
            let i = *index.entry(id.to_string()).or_insert_with(|| {
                sessions.push(Session {
                    keys: Vec::new(),
                    line: sessions.len() + 1,
                    id: Some(id.to_string()),
                });
                sessions.len() - 1
            });
            sessions[i].keys.push(key.clone());
        }
    }
    (sessions, without)
}

/// The sessions of a `gpt logs parse` directory (its `structured.csv`: `Content` and `EventId`).
pub fn sessions_from_parsed(
    dir: &Path,
    session_key: Option<&Regex>,
) -> Result<(Vec<Session>, usize)> {
    let path = dir.join(STRUCTURED_CSV);
    let mut rdr = csv::Reader::from_path(&path).map_err(|e| Error::file(&path, e.to_string()))?;
    let headers = rdr
        .headers()
        .map_err(|e| Error::file(&path, e.to_string()))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                &path,
                format!("no `{name}` column (a directory written by `gpt logs parse`?)"),
            )
        })
    };
    let (content, event) = (col("Content")?, col("EventId")?);
    let mut lines = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| Error::file(&path, format!("row {}: {e}", i + 2)))?;
        let field = |c: usize| rec.get(c).unwrap_or("").to_string();
        lines.push((field(content), field(event)));
    }
    Ok(group_sessions(lines, session_key))
}

/// The sessions of raw log `text` matched against `parser` (learning nothing: a line of a new
/// template gets [`UNSEEN_KEY`]).
pub fn sessions_from_log(
    parser: &LogParser,
    text: &str,
    session_key: Option<&Regex>,
) -> (Vec<Session>, usize) {
    let lines = text.lines().map(|l| {
        let key = parser
            .match_line(l)
            .map_or(UNSEEN_KEY.to_string(), event_id);
        (l.to_string(), key)
    });
    group_sessions(lines, session_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_join_the_sessions_of_the_ids_they_mention() {
        let re = Regex::new(r"blk_-?\d+").unwrap();
        let lines = [
            ("open blk_1", "E1"),
            ("open blk_-2", "E1"),
            ("no id here", "E9"),
            ("copy blk_1 to blk_-2", "E2"),
            ("close blk_1 blk_1", "E3"),
        ]
        .map(|(t, k)| (t.to_string(), k.to_string()));
        let (s, without) = group_sessions(lines.clone(), Some(&re));
        assert_eq!(without, 1);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].id.as_deref(), Some("blk_1"));
        assert_eq!(s[0].keys, ["E1", "E2", "E3"]);
        assert_eq!(s[1].keys, ["E1", "E2"]);
        let (stream, _) = group_sessions(lines, None);
        assert_eq!(stream[0].keys, ["E1", "E1", "E9", "E2", "E3"]);
    }
}
