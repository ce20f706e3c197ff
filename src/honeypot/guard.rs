//! Guard rails on every model answer before the attacker sees it. An answer is first cleaned
//! (control characters and ANSI escapes removed, everything from the first shell prompt on cut,
//! capped in lines and bytes), then refused if it breaks character: mentions of being an AI or a
//! model, refusals and apologies, chat formatting (code fences, markdown headings or bold, role
//! labels), or text of the persona prompt itself. A refused answer is replaced by the profile's
//! fallback (`bash: X: command not found`), so nothing off-script reaches the attacker.

use serde::Serialize;

/// Lines an answer may have at most.
pub const MAX_LINES: usize = 60;
/// Bytes an answer may have at most.
pub const MAX_BYTES: usize = 4096;

/// What the guard did with an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Shown as it was.
    Passed,
    /// Shown after cleaning (cut at a prompt, capped, control characters removed).
    Cleaned,
    /// Refused; the reason is said.
    Refused(String),
}

/// Phrases that no terminal prints (lower-case).
const OFF_CHARACTER: [&str; 26] = [
    "as an ai",
    "an ai language model",
    "language model",
    "i am an ai",
    "i'm an ai",
    "artificial intelligence",
    "openai",
    "chatgpt",
    "gpt-4",
    "gpt-3",
    "large language",
    "as a terminal",
    "i'm sorry",
    "i am sorry",
    "i apologize",
    "i cannot",
    "i can't",
    "i can not",
    "i'm not able",
    "i am not able",
    "i'm unable",
    "i am unable",
    "as an assistant",
    "simulat",
    "honeypot",
    "this is a fictional",
];

/// Removes ANSI escape sequences and control characters other than newline and tab.
fn strip_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params final-byte; other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        if c == '\n' || c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// Whether `line` looks like a shell prompt (`user@host:path$` or the profile's own).
fn is_prompt_line(line: &str, prompt: &str) -> bool {
    let t = line.trim_end();
    let p = prompt.trim_end();
    if !p.is_empty() && t.starts_with(p) {
        return true;
    }
    // user@host:...$ or root@host:...#
    match t.find('@') {
        Some(at)
            if at > 0
                && t[..at]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
        {
            let rest = &t[at + 1..];
            rest.contains(':') && (rest.contains('$') || rest.contains('#'))
        }
        _ => false,
    }
}

/// Checks and cleans a model answer to `command`. Returns the text to show (`None` when
/// refused) and the verdict. `prompt` is the session's prompt, `persona` the system prompt.
pub fn check(answer: &str, prompt: &str, persona: &str) -> (Option<String>, Verdict) {
    let mut cleaned = false;
    let stripped = strip_controls(answer);
    if stripped != answer {
        cleaned = true;
    }
    let mut lines: Vec<&str> = Vec::new();
    for line in stripped.lines() {
        if is_prompt_line(line, prompt) {
            cleaned = true;
            break;
        }
        lines.push(line);
    }
    if lines.len() > MAX_LINES {
        lines.truncate(MAX_LINES);
        cleaned = true;
    }
    let mut text = lines.join("\n");
    if text.len() > MAX_BYTES {
        let mut cut = MAX_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        cleaned = true;
    }
    // Trailing blank lines are the model's, not the command's.
    let trimmed_len = text.trim_end().len();
    text.truncate(trimmed_len);
    if let Some(why) = off_character(&text, persona) {
        return (None, Verdict::Refused(why));
    }
    let v = if cleaned {
        Verdict::Cleaned
    } else {
        Verdict::Passed
    };
    (Some(text), v)
}

/// Why `text` breaks character, if it does.
fn off_character(text: &str, persona: &str) -> Option<String> {
    let lower = text.to_lowercase();
    if let Some(p) = OFF_CHARACTER.iter().find(|p| lower.contains(*p)) {
        return Some(format!("says {p:?}"));
    }
    if text.contains("```") {
        return Some("code fence".into());
    }
    for line in text.lines() {
        let t = line.trim_start();
        // `#` alone starts shell and config comments; `##`+ is markdown.
        if t.starts_with("## ") || t.starts_with("### ") {
            return Some("markdown heading".into());
        }
        if t.contains("**") && t.matches("**").count() >= 2 {
            return Some("markdown bold".into());
        }
        let l = t.to_lowercase();
        if ["assistant:", "user:", "system:", "<|", "[inst]"]
            .iter()
            .any(|r| l.starts_with(r))
        {
            return Some("chat role marker".into());
        }
    }
    if leaks_persona(&lower, persona) {
        return Some("repeats the persona prompt".into());
    }
    None
}

/// Whether `lower` holds 8 consecutive words of the persona prompt.
fn leaks_persona(lower: &str, persona: &str) -> bool {
    let words: Vec<String> = persona
        .to_lowercase()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let text: String = lower.split_whitespace().collect::<Vec<_>>().join(" ");
    words.windows(8).any(|w| text.contains(&w.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROMPT: &str = "deploy@web:~$ ";
    const PERSONA: &str =
        "You are the bash shell of an Ubuntu server named web logged in as deploy";

    #[test]
    fn clean_answers_pass_and_off_character_ones_are_refused() {
        let ok = "total 4\n-rw-r--r-- 1 deploy deploy 12 Nov 28 09:14 notes.txt";
        assert_eq!(
            check(ok, PROMPT, PERSONA),
            (Some(ok.into()), Verdict::Passed)
        );
        let (t, v) = check(
            "eth0: flags=4163\ndeploy@web:~$ rm -rf /\nmore",
            PROMPT,
            PERSONA,
        );
        assert_eq!(
            (t.as_deref(), v),
            (Some("eth0: flags=4163"), Verdict::Cleaned)
        );
        let (t, _) = check("a\u{1b}[31mred\u{1b}[0m\u{7}", PROMPT, PERSONA);
        assert_eq!(t.as_deref(), Some("ared"));
        let long = "x\n".repeat(500);
        assert_eq!(
            check(&long, PROMPT, PERSONA).0.unwrap().lines().count(),
            MAX_LINES
        );
        for bad in [
            "As an AI language model, I cannot run commands.",
            "I'm sorry, but I can't help with that.",
            "```bash\nls\n```",
            "Sure! **Here** is the **output**",
            "Assistant: here you go",
            "You are the bash shell of an Ubuntu server named web logged in",
            "This is a honeypot.",
        ] {
            assert!(
                matches!(check(bad, PROMPT, PERSONA), (None, Verdict::Refused(_))),
                "{bad}"
            );
        }
    }
}
