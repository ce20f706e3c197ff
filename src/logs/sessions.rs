//! Sessions of log keys: DeepLog's file format (one session per line, its log keys separated
//! by spaces, e.g. `5 5 22 11 9 26`), and the windows a session is cut into when it is longer
//! than the model's context.

use crate::error::{Error, Result};
use std::path::Path;

/// One session: its log keys as written, and the line it came from (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The keys, in order.
    pub keys: Vec<String>,
    /// Line number in its file (1-based), or the session's number in order of appearance.
    pub line: usize,
    /// The session's id when it was grouped from a log (e.g. an HDFS block id).
    pub id: Option<String>,
}

/// Reads a session file. Empty lines are skipped (counted in the second value): a session
/// with no key has nothing to predict. Errors name the file.
pub fn read_sessions(path: &Path) -> Result<(Vec<Session>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_sessions(&text))
}

/// [`read_sessions`] on text already in memory.
pub fn parse_sessions(text: &str) -> (Vec<Session>, usize) {
    let mut sessions = Vec::new();
    let mut empty = 0;
    for (i, line) in text.lines().enumerate() {
        let keys: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if keys.is_empty() {
            empty += 1;
        } else {
            sessions.push(Session {
                keys,
                line: i + 1,
                id: None,
            });
        }
    }
    (sessions, empty)
}

/// `sessions` in the session-file format (one per line, keys separated by spaces): what
/// [`parse_sessions`] reads back.
pub fn sessions_text(sessions: &[Session]) -> String {
    sessions
        .iter()
        .map(|s| format!("{}\n", s.keys.join(" ")))
        .collect()
}

/// One window of a token sequence: tokens `start..start + len` go through the model together,
/// and the targets at positions `scored_from..start + len` (absolute) are predicted there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First token of the window.
    pub start: usize,
    /// Tokens in the window.
    pub len: usize,
    /// First position whose token is predicted (scored) in this window.
    pub scored_from: usize,
}

/// Cuts a sequence of `len` tokens into windows of at most `n_ctx` tokens so that every
/// position `1..len` is predicted exactly once, each with at least `n_ctx / 2` tokens of
/// history once the sequence is longer than the context (windows overlap by half: the first
/// predicts positions `1..n_ctx`, each next one, `n_ctx / 2` further on, only the positions the
/// previous did not reach). A sequence that fits is one window.
pub fn windows(len: usize, n_ctx: usize) -> Vec<Window> {
    let n_ctx = n_ctx.max(2);
    if len <= n_ctx {
        return vec![Window {
            start: 0,
            len,
            scored_from: 1,
        }];
    }
    let stride = (n_ctx / 2).max(1);
    let mut out = vec![Window {
        start: 0,
        len: n_ctx,
        scored_from: 1,
    }];
    let mut reached = n_ctx;
    let mut start = 0;
    while reached < len {
        start += stride;
        let end = (start + n_ctx).min(len);
        out.push(Window {
            start,
            len: end - start,
            scored_from: reached,
        });
        reached = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_skip_empty_lines_and_keep_line_numbers() {
        let (s, empty) = parse_sessions("5 5 22\n\n  \n9 26 \n");
        assert_eq!(empty, 2);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].keys, ["5", "5", "22"]);
        assert_eq!(s[1].line, 4);
        assert_eq!(s[1].keys, ["9", "26"]);
    }

    #[test]
    fn windows_predict_every_position_once_with_half_a_context_of_history() {
        for n_ctx in [2, 3, 4, 7, 10, 16] {
            for len in 1..60 {
                let ws = windows(len, n_ctx);
                let mut seen = vec![0; len];
                for w in &ws {
                    assert!(w.len <= n_ctx && w.len >= 1);
                    assert!(w.scored_from > w.start || len == 1);
                    for (p, s) in seen
                        .iter_mut()
                        .enumerate()
                        .take(w.start + w.len)
                        .skip(w.scored_from)
                    {
                        *s += 1;
                        if w.start > 0 {
                            assert!(p - w.start >= n_ctx / 2, "len {len} ctx {n_ctx} p {p}");
                        }
                    }
                }
                assert!(
                    seen[1..].iter().all(|&c| c == 1),
                    "len {len} ctx {n_ctx}: {seen:?}"
                );
            }
        }
    }
}
