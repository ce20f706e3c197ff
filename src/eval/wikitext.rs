//! WikiText as lm-eval's `wikitext` task reads it: documents (one per article), the
//! detokenizer applied before scoring (`wikitext_detokenizer` of lm-eval's
//! `tasks/wikitext/preprocess_wikitext.py`, re-implemented rule for rule: the same literal
//! replacements in the same order, and its five bracket/quote regexes
//! `OPEN\s*([^CLOSE]*?)\s*CLOSE → OPEN\1CLOSE` as a scan), and its word count
//! (`len(re.split(r"\s+", page))` on the page *before* detokenizing).
//!
//! Documents: a new one starts at each level-1 heading line (` = Title = `, not ` = = `), as
//! EleutherAI's `wikitext_document_level` splits them ([`documents`]). Our file is the
//! tokenised release (`<unk>` for rare words) rather than lm-eval's `wikitext-2-raw-v1`, so the
//! figures are not comparable with published ones, only computed the same way.

use super::template::Doc;
use serde_json::{Map, Value};
use std::path::Path;

/// Python's `\s` / `str.isspace` (Rust's `is_whitespace` plus the ASCII separators
/// U+001C..U+001F).
pub fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The documents of a WikiText `.tokens` file, each `{"page": text}`, split as EleutherAI's
/// `wikitext_document_level` (the data set lm-eval's `wikitext` reads) builds its pages: the file
/// is split on `\n`; a line is a level-1 heading when, with `= = =` → `===` and `= =` → `==`
/// and surrounding whitespace stripped, it starts with `"= "` and ends with `" ="`; a heading
/// starts a new page; a page is its lines joined with `\n` (so it ends without the last
/// newline). Pages that are only whitespace are dropped. This gives the data set's counts: 62
/// pages in the WikiText-2 test file, 60 in the validation file (it also splits at two
/// equation lines of the test file that look like headings, as the data set does).
pub fn documents(path: &Path, text: &str) -> Vec<Doc> {
    let mut docs = Vec::new();
    let mut push = |lines: &[&str], line: usize| {
        let page = lines.join("\n");
        if !page.trim_matches(py_space).is_empty() {
            let mut fields = Map::new();
            fields.insert("page".into(), Value::String(page));
            docs.push(Doc {
                fields,
                file: path.to_path_buf(),
                line,
            });
        }
    };
    let mut page: Vec<&str> = Vec::new();
    let mut start_line = 1;
    for (i, line) in text.split('\n').enumerate() {
        let r = line.replace("= = =", "===").replace("= =", "==");
        let r = r.trim_matches(py_space);
        if r.starts_with("= ") && r.ends_with(" =") {
            push(&page, start_line);
            page.clear();
            start_line = i + 1;
        }
        page.push(line);
    }
    push(&page, start_line);
    docs
}

/// `len(re.split(r"\s+", page))`: runs of whitespace + 1 (a leading or trailing run counts,
/// as Python's split yields an empty string there).
pub fn count_words(page: &str) -> usize {
    let mut runs = 0;
    let mut in_run = false;
    for c in page.chars() {
        let s = py_space(c);
        if s && !in_run {
            runs += 1;
        }
        in_run = s;
    }
    runs + 1
}

/// `re.sub(OPEN\s*([^CLOSE]*?)\s*CLOSE, OPEN\1CLOSE)`: from each `open`, up to the next
/// `close`, the whitespace just inside both ends is removed; scanning resumes after `close`.
/// An `open` with no `close` after it is left alone.
fn tighten(s: &str, open: char, close: char) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len_utf8()..];
        match after.find(close) {
            Some(j) => {
                out.push_str(&rest[..i]);
                out.push(open);
                out.push_str(after[..j].trim_matches(py_space));
                out.push(close);
                rest = &after[j + close.len_utf8()..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// lm-eval's `wikitext_detokenizer`.
pub fn detokenize(page: &str) -> String {
    let mut s = page.replace("s '", "s'");
    // `re.sub(r"/' [0-9]/", r"/'[0-9]/")`: the replacement is the literal text "/'[0-9]/".
    s = replace_slash_digit(&s);
    for (a, b) in [
        (" @-@ ", "-"),
        (" @,@ ", ","),
        (" @.@ ", "."),
        (" : ", ": "),
        (" ; ", "; "),
        (" . ", ". "),
        (" ! ", "! "),
        (" ? ", "? "),
        (" , ", ", "),
    ] {
        s = s.replace(a, b);
    }
    for (o, c) in [('(', ')'), ('[', ']'), ('{', '}'), ('"', '"'), ('\'', '\'')] {
        s = tighten(&s, o, c);
    }
    for (a, b) in [
        ("= = = =", "===="),
        ("= = =", "==="),
        ("= =", "=="),
        (" \u{b0} ", "\u{b0}"),
        (" \n", "\n"),
        ("\n ", "\n"),
        (" N ", " 1 "),
        (" 's", "'s"),
    ] {
        s = s.replace(a, b);
    }
    s
}

fn replace_slash_digit(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i + 5 <= b.len() {
        if &b[i..i + 3] == b"/' " && b[i + 3].is_ascii_digit() && b[i + 4] == b'/' {
            out.push_str(&s[last..i]);
            out.push_str("/'[0-9]/");
            i += 5;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[last..]);
    out
}
