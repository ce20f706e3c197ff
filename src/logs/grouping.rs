//! Grouping accuracy of a parse against a ground truth, as loghub's benchmark measures it
//! (logpai/logparser `evaluator.get_accuracy`): a line is parsed correctly iff the set of lines
//! in its parsed group is exactly the set of lines of its true group; the accuracy is the
//! fraction of such lines. Beside it, loghub's pairwise precision, recall and F-measure over
//! the pairs of lines that share a group.
//!
//! Only the partition counts: the template texts and ids of the two sides need not agree.

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::{Path, PathBuf};

/// How well a parse groups lines, against a ground truth.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupingScore {
    /// Lines compared.
    pub lines: usize,
    /// Lines whose parsed group equals their true group.
    pub correct: usize,
    /// `correct / lines` (loghub's grouping accuracy).
    pub accuracy: f64,
    /// Of the line pairs grouped together by the parse, the fraction the truth groups together.
    pub precision: f64,
    /// Of the line pairs grouped together by the truth, the fraction the parse groups together.
    pub recall: f64,
    /// Harmonic mean of precision and recall (loghub's F-measure).
    pub f1: f64,
}

/// Scores `parsed` group labels against `truth` labels of the same lines (same order).
pub fn grouping_score<P: Eq + Hash, T: Eq + Hash>(
    parsed: &[P],
    truth: &[T],
) -> Result<GroupingScore> {
    if parsed.len() != truth.len() {
        return Err(Error::usage(
            "grouping_score",
            format!(
                "{} parsed labels but {} true ones",
                parsed.len(),
                truth.len()
            ),
        ));
    }
    let mut parsed_size: HashMap<&P, usize> = HashMap::new();
    let mut truth_size: HashMap<&T, usize> = HashMap::new();
    // Lines of each (parsed group, true group) cell.
    let mut cell: HashMap<(&P, &T), usize> = HashMap::new();
    for (p, t) in parsed.iter().zip(truth) {
        *parsed_size.entry(p).or_default() += 1;
        *truth_size.entry(t).or_default() += 1;
        *cell.entry((p, t)).or_default() += 1;
    }
    // A parsed group is exact iff all its lines fall in one cell that is its whole true group.
    let correct: usize = cell
        .iter()
        .filter(|&(&(p, t), &n)| n == parsed_size[p] && n == truth_size[t])
        .map(|(_, &n)| n)
        .sum();
    let pairs = |n: usize| (n * n.saturating_sub(1) / 2) as f64;
    let together: f64 = cell.values().map(|&n| pairs(n)).sum();
    let parsed_pairs: f64 = parsed_size.values().map(|&n| pairs(n)).sum();
    let true_pairs: f64 = truth_size.values().map(|&n| pairs(n)).sum();
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 1.0 };
    let precision = ratio(together, parsed_pairs);
    let recall = ratio(together, true_pairs);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    let lines = parsed.len();
    Ok(GroupingScore {
        lines,
        correct,
        accuracy: ratio(correct as f64, lines as f64),
        precision,
        recall,
        f1,
    })
}

/// Reads a loghub `*_structured.csv` ground truth: `(LineId, EventId)` of every row, in file
/// order. The error names the file, the row and the missing column or bad value.
pub fn read_truth(path: &Path) -> Result<Vec<(usize, String)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = csv::Reader::from_reader(std::io::BufReader::new(file));
    let headers = reader
        .headers()
        .map_err(|e| Error::file(path, format!("cannot read the CSV header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                path,
                format!("no `{name}` column; a loghub `*_structured.csv` has LineId and EventId"),
            )
        })
    };
    let (line_col, event_col) = (column("LineId")?, column("EventId")?);
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Row 1 is the header.
        let at = PathBuf::from(format!("{}:{}", path.display(), i + 2));
        let record = record.map_err(|e| Error::file(&at, format!("bad CSV row: {e}")))?;
        let line_id = record.get(line_col).unwrap_or_default();
        let line_id: usize = line_id
            .trim()
            .parse()
            .map_err(|_| Error::file(&at, format!("LineId `{line_id}` is not a line number")))?;
        rows.push((
            line_id,
            record.get(event_col).unwrap_or_default().to_string(),
        ));
    }
    Ok(rows)
}

/// Scores parsed template ids, given per line number, against a ground truth read by
/// [`read_truth`]: both must cover the same line numbers. `truth_path` names the truth file in
/// errors.
pub fn score_against_truth(
    parsed: &[(usize, usize)],
    truth: &[(usize, String)],
    truth_path: &Path,
) -> Result<GroupingScore> {
    let by_line: HashMap<usize, usize> = parsed.iter().copied().collect();
    if truth.len() != parsed.len() {
        return Err(Error::file(
            truth_path,
            format!(
                "has {} rows but the input has {} lines; the truth must be of the same log",
                truth.len(),
                parsed.len()
            ),
        ));
    }
    let mut ours = Vec::with_capacity(truth.len());
    let mut theirs = Vec::with_capacity(truth.len());
    for (line_id, event) in truth {
        let template = by_line.get(line_id).ok_or_else(|| {
            Error::file(
                truth_path,
                format!("LineId {line_id} is not a line of the input (lines are numbered from 1)"),
            )
        })?;
        ours.push(*template);
        theirs.push(event.as_str());
    }
    grouping_score(&ours, &theirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_groups_count_split_and_merged_groups_do_not() {
        // Truth: {0,1,2} A, {3,4} B, {5} C. Parse: {0,1,2} exact; {3} and {4} split B; {5} exact.
        let truth = ["A", "A", "A", "B", "B", "C"];
        let parsed = [1, 1, 1, 2, 3, 4];
        let s = grouping_score(&parsed, &truth).unwrap();
        assert_eq!(s.correct, 4);
        assert!((s.accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(s.precision, 1.0);
        assert!((s.recall - 3.0 / 4.0).abs() < 1e-12);
        // Merging A and C: the merged group is wrong, B stays right.
        let parsed = [1, 1, 1, 2, 2, 1];
        let s = grouping_score(&parsed, &truth).unwrap();
        assert_eq!(s.correct, 2);
        assert!((s.precision - 4.0 / 7.0).abs() < 1e-12);
    }
}
