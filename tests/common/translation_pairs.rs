//! A tiny Spanish → English number-word corpus for translation training tests.

use std::path::{Path, PathBuf};

/// Writes `dir/train.tsv` (60 pairs of 1–4 number words) and `dir/valid.tsv` (its first 8) and
/// returns their paths.
pub fn write_pairs(dir: &Path) -> (PathBuf, PathBuf) {
    let words = ["uno", "dos", "tres", "cuatro", "cinco", "seis"];
    let en = ["one", "two", "three", "four", "five", "six"];
    let mut lines = String::new();
    for i in 0..60 {
        let n = 1 + i % 4;
        let s: Vec<&str> = (0..n).map(|j| words[(i + j * 5) % 6]).collect();
        let t: Vec<&str> = (0..n).map(|j| en[(i + j * 5) % 6]).collect();
        lines.push_str(&format!("{}\t{}\n", s.join(" "), t.join(" ")));
    }
    let (tr, va) = (dir.join("train.tsv"), dir.join("valid.tsv"));
    std::fs::write(&tr, &lines).unwrap();
    std::fs::write(&va, lines.lines().take(8).collect::<Vec<_>>().join("\n")).unwrap();
    (tr, va)
}
