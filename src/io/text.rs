//! Text files read whole as UTF-8: an invalid byte is an error naming the file, the line and
//! the byte offset, so that the user can find it in an editor (`file:line`, the compiler
//! convention, as the TSV reader names a bad line).

use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The 1-based line and column (in bytes) of byte `offset` of `bytes`.
pub fn line_and_column(bytes: &[u8], offset: usize) -> (usize, usize) {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, offset - line_start + 1)
}

/// The error for `bytes` read from `path` that are valid UTF-8 only up to `valid_up_to`:
/// `path:line: invalid UTF-8 at byte N (column C); ...`, ending with `hint`.
pub fn utf8_error(path: &Path, bytes: &[u8], valid_up_to: usize, hint: &str) -> Error {
    let (line, column) = line_and_column(bytes, valid_up_to);
    Error::file(
        &PathBuf::from(format!("{}:{line}", path.display())),
        format!("invalid UTF-8 at byte {valid_up_to} (column {column}); {hint}"),
    )
}

/// Checks that `bytes` read from `path` are UTF-8 and returns them as a string.
pub fn text_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        utf8_error(path, e.as_bytes(), valid, "convert the file to UTF-8")
    })
}

/// Reads the file at `path` as UTF-8, naming the file, line and byte if it is not.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    text_from_bytes(path, bytes)
}

/// Reads `path`, or standard input when it is absent or `-` (named `standard input` in errors).
pub fn read_text_or_stdin(path: Option<&Path>) -> Result<String> {
    match path.filter(|p| p.as_os_str() != "-") {
        Some(p) => read_text(p),
        None => {
            let stdin = Path::new("standard input");
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(stdin, e))?;
            text_from_bytes(stdin, bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_utf8_names_line_and_byte() {
        let bytes = b"ok\nstill ok\nca\xe9\n".to_vec();
        let e = text_from_bytes(Path::new("f.txt"), bytes).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f.txt:3: invalid UTF-8 at byte 14 (column 3); convert the file to UTF-8"
        );
        assert_eq!(line_and_column(b"abc", 0), (1, 1));
    }
}
