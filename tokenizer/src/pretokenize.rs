//! GPT-2 pre-tokenization: splitting text into the pieces BPE runs on.
//!
//! GPT-2 splits text with the regex
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//! and runs BPE on each match separately. This file is a hand-written scanner with exactly
//! the regex's semantics, several times faster than a backtracking regex engine (the
//! lookahead `(?!\S)` keeps tiktoken on `fancy-regex`). The test suite checks it against
//! `fancy-regex` running the original pattern on random strings.
//!
//! How each alternative becomes a rule, at a piece start with character `c`:
//! - `'` followed by `s t m d` or `re ve ll` (lower case only; `'S` is not a contraction)
//!   is a contraction piece. Only at a piece start: in `x''s` the quote run swallows both `'`.
//! - A letter, number or "other" character starts a run of its class (`\p{L}+`, `\p{N}+`,
//!   `[^\s\p{L}\p{N}]+`). A U+0020 space directly before a non-space character joins that
//!   character's run (` ?`); no other whitespace character does.
//! - Otherwise `c` is whitespace. Let the whitespace run reach `j`. If the run ends the
//!   text, it is one piece (`\s+(?!\S)` matches it all). Else `\s+(?!\S)` backtracks one
//!   character so a non-space follows: the piece is the run less its last character, and the
//!   last character starts the next piece (joining the word if it is a space). A run of one
//!   character before a non-space fails `\s+(?!\S)` and is matched by the final `\s+` alone.

use crate::unicode_class::{CharClass, ClassTable};

/// Iterator over the pre-tokenized pieces of a text; the pieces concatenate to the text.
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    table: &'static ClassTable,
}

/// Splits `text` into GPT-2 pieces.
pub fn pieces(text: &str) -> Pieces<'_> {
    Pieces {
        text,
        pos: 0,
        table: ClassTable::get(),
    }
}

/// Decodes the character starting at byte `i` of a valid UTF-8 string: (char, byte length).
#[inline(always)]
fn char_at(b: &[u8], i: usize) -> (char, usize) {
    let b0 = b[i] as u32;
    // `b` comes from a `&str`, so a lead byte is always followed by its continuation bytes
    // and the indexing below stays in bounds.
    let (u, len) = if b0 < 0x80 {
        (b0, 1)
    } else if b0 < 0xE0 {
        (((b0 & 0x1F) << 6) | (b[i + 1] as u32 & 0x3F), 2)
    } else if b0 < 0xF0 {
        (
            ((b0 & 0x0F) << 12) | ((b[i + 1] as u32 & 0x3F) << 6) | (b[i + 2] as u32 & 0x3F),
            3,
        )
    } else {
        (
            ((b0 & 0x07) << 18)
                | ((b[i + 1] as u32 & 0x3F) << 12)
                | ((b[i + 2] as u32 & 0x3F) << 6)
                | (b[i + 3] as u32 & 0x3F),
            4,
        )
    };
    // Valid UTF-8 decodes to a valid scalar value; the fallback is never taken.
    (char::from_u32(u).unwrap_or('\u{FFFD}'), len)
}

impl<'a> Pieces<'a> {
    /// Class and byte length of the character at `i`.
    #[inline(always)]
    fn class_at(&self, i: usize) -> (CharClass, usize) {
        let b = self.text.as_bytes();
        if b[i] < 0x80 {
            (self.table.ascii(b[i]), 1)
        } else {
            let (c, len) = char_at(b, i);
            (self.table.of(c), len)
        }
    }

    /// End of the maximal run of `class` starting at byte `i`.
    #[inline(always)]
    fn run_end(&self, mut i: usize, class: CharClass) -> usize {
        let b = self.text.as_bytes();
        while i < b.len() {
            // ASCII fast path: most text is ASCII, and one table load decides.
            if b[i] < 0x80 {
                if self.table.ascii(b[i]) != class {
                    break;
                }
                i += 1;
            } else {
                let (c, len) = char_at(b, i);
                if self.table.of(c) != class {
                    break;
                }
                i += len;
            }
        }
        i
    }

    /// Length of a contraction (`'s`, `'ll`, …) at `i` (which holds `'`), or 0.
    #[inline(always)]
    fn contraction_len(&self, i: usize) -> usize {
        let b = self.text.as_bytes();
        match b.get(i + 1) {
            Some(b's' | b't' | b'm' | b'd') => 2,
            Some(b'r') if b.get(i + 2) == Some(&b'e') => 3,
            Some(b'v') if b.get(i + 2) == Some(&b'e') => 3,
            Some(b'l') if b.get(i + 2) == Some(&b'l') => 3,
            _ => 0,
        }
    }

    /// End of the whitespace piece that starts at `i`.
    #[inline]
    fn whitespace_end(&self, i: usize) -> usize {
        let b = self.text.as_bytes();
        let (_, first_len) = self.class_at(i);
        let mut j = i + first_len;
        let mut last_len = first_len;
        while j < b.len() {
            let (class, len) = self.class_at(j);
            if class != CharClass::Space {
                break;
            }
            last_len = len;
            j += len;
        }
        if j == b.len() || j == i + first_len {
            // `\s+(?!\S)` takes a run that ends the text; a single whitespace character
            // before a non-space is taken by the final `\s+`.
            j
        } else {
            // Leave the last whitespace character for the next piece.
            j - last_len
        }
    }

    /// End of the piece starting at `i` (< text length).
    #[inline]
    fn piece_end(&self, i: usize) -> usize {
        let b = self.text.as_bytes();
        let c = b[i];
        if c == b'\'' {
            let n = self.contraction_len(i);
            if n > 0 {
                return i + n;
            }
            return self.run_end(i + 1, CharClass::Other);
        }
        if c == b' ' && i + 1 < b.len() {
            let (class, len) = self.class_at(i + 1);
            if class != CharClass::Space {
                return self.run_end(i + 1 + len, class);
            }
            return self.whitespace_end(i);
        }
        let (class, len) = self.class_at(i);
        match class {
            CharClass::Space => self.whitespace_end(i),
            _ => self.run_end(i + len, class),
        }
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let start = self.pos;
        if start >= self.text.len() {
            return None;
        }
        let end = self.piece_end(start);
        self.pos = end;
        // Every rule above stops on a character boundary of the `&str`.
        Some(&self.text[start..end])
    }
}

/// GPT-2's pre-tokenization pattern, as in OpenAI's `encoder.py` (for reference engines).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Splits `text` into chunks of about `target` bytes at boundaries that pre-tokenization
/// never crosses, so that pre-tokenizing (and BPE-encoding) the chunks one by one gives
/// exactly the pieces of the whole text. Used to spread one long text over threads.
///
/// A cut goes after a newline that has an ASCII graphic character on both sides
/// (`x\ny`). Why that is safe: the `\n` is a whitespace run of one character before a
/// non-space, so in the whole text it is a piece of its own, and at the end of a chunk it is
/// also a piece of its own (a run that ends the text); no other piece can contain a newline,
/// and a piece never looks behind its start. Cutting just anywhere in whitespace is *not*
/// safe: `a  \nb` gives `"  "`, `"\n"` in the whole text but `"  \n"` at a chunk end.
pub fn split_at_safe_boundaries(text: &str, target: usize) -> Vec<&str> {
    let b = text.as_bytes();
    let mut chunks = Vec::new();
    let mut start = 0;
    let target = target.max(1);
    while b.len() - start > target {
        let mut cut = None;
        let mut from = start + target;
        while let Some(off) = memchr::memchr(b'\n', &b[from..]) {
            let nl = from + off;
            if nl > start
                && nl + 1 < b.len()
                && b[nl - 1].is_ascii_graphic()
                && b[nl + 1].is_ascii_graphic()
            {
                cut = Some(nl + 1);
                break;
            }
            from = nl + 1;
        }
        match cut {
            // Both sides of the cut are ASCII, so it is a char boundary.
            Some(c) => {
                chunks.push(&text[start..c]);
                start = c;
            }
            None => break,
        }
    }
    if start < b.len() || chunks.is_empty() {
        chunks.push(&text[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        pieces(s).collect()
    }

    #[test]
    fn examples() {
        assert_eq!(split("hello world"), ["hello", " world"]);
        assert_eq!(split("I'll've 'S"), ["I", "'ll", "'ve", " '", "S"]);
        assert_eq!(split("a   b"), ["a", "  ", " b"]);
        assert_eq!(split("a \n\tb  "), ["a", " \n", "\t", "b", "  "]);
        assert_eq!(split("x''s 12ab!!?"), ["x", "''", "s", " 12", "ab", "!!?"]);
        assert_eq!(split(""), Vec::<&str>::new());
        assert_eq!(split(" "), [" "]);
        assert_eq!(split("\u{a0}a"), ["\u{a0}", "a"]);
    }
}
