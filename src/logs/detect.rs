//! The two detectors over one log-key model, and how their thresholds are chosen.
//!
//! - **Top-g** (DeepLog): a session is anomalous when some true next key (or the end of the
//!   session) is outside the model's `g` most likely predictions, i.e. its rank is ≥ g. Its score
//!   (for ROC/PR curves) is the session's largest rank.
//! - **Surprisal**: a session's score is the largest per-key negative log-likelihood; it is
//!   anomalous when the score is above a threshold chosen on normal validation sessions for a
//!   target false-positive rate, so that no test label is used to pick it.
//!
//! A key unseen in training is always flagged by both (rank and NLL infinite) and reported as
//! unseen.

use super::score::PositionScore;
use super::vocab::{KeyVocab, BOS, UNK};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File name of the detector settings in a model directory.
pub const DETECTOR_FILE: &str = "detector.json";

/// Which rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rule {
    /// DeepLog's top-g rule.
    TopG,
    /// Surprisal above a threshold.
    Surprisal,
}

impl Rule {
    /// `topg` or `surprisal`.
    pub fn name(self) -> &'static str {
        match self {
            Rule::TopG => "topg",
            Rule::Surprisal => "surprisal",
        }
    }

    /// Parses [`Rule::name`].
    pub fn parse(s: &str) -> Result<Rule> {
        match s {
            "topg" | "top-g" => Ok(Rule::TopG),
            "surprisal" => Ok(Rule::Surprisal),
            _ => Err(Error::field(
                "--detector",
                format!("`{s}` is not one of topg, surprisal"),
            )),
        }
    }
}

/// The settings saved with a model (`detector.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorSettings {
    /// DeepLog's g.
    pub top_g: usize,
    /// The surprisal threshold (nats), chosen on validation data; `None` when the model was
    /// trained without validation sessions.
    pub threshold: Option<f64>,
    /// The false-positive rate the threshold was chosen for.
    pub target_fpr: f64,
    /// Validation sessions the threshold was chosen on.
    pub valid_sessions: usize,
    /// Whether sessions end with `</s>` (session files) or not (one stream of lines).
    pub end_token: bool,
}

impl DetectorSettings {
    /// Writes `detector.json` into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::usage("DetectorSettings::save", e.to_string()))?;
        crate::io::atomic::write_atomic(&dir.join(DETECTOR_FILE), &text)
    }

    /// Reads `detector.json` from `dir`.
    pub fn load(dir: &Path) -> Result<DetectorSettings> {
        let path = dir.join(DETECTOR_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::file(
                &path,
                format!("{e}; a log-key model directory (made by `gpt logs train`) has one"),
            )
        })?;
        serde_json::from_str(&text).map_err(|e| Error::file(&path, e.to_string()))
    }
}

/// The threshold that flags at most a share `fpr` of the `normal` scores (flagged: score >
/// threshold): the `⌊fpr·n⌋`-th largest score counted from the top (the largest for a small
/// `fpr`). `None` without scores.
pub fn threshold_for_fpr(normal: &[f64], fpr: f64) -> Option<f64> {
    if normal.is_empty() {
        return None;
    }
    let mut sorted = normal.to_vec();
    sorted.sort_by(f64::total_cmp);
    let allowed = ((fpr * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    Some(sorted[sorted.len() - 1 - allowed])
}

/// One position a detector flagged, with what the model expected there.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Flag {
    /// Position in the session (1-based over its keys; one past the last key for `</s>`).
    pub position: usize,
    /// The key found there (`</s>`: the session ended).
    pub key: String,
    /// The model's most likely keys there, most likely first.
    pub expected: Vec<String>,
    /// Its negative log-likelihood (nats; `null` when unseen).
    pub nll: Option<f64>,
    /// Its rank among the predictions (0: the most likely; `null` when unseen).
    pub rank: Option<u32>,
}

/// A detector's verdict on one session.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// Whether the session is anomalous.
    pub anomalous: bool,
    /// The detector's score (largest rank, or largest NLL; `null` when infinite).
    pub score: Option<f64>,
    /// The flagged positions.
    pub flags: Vec<Flag>,
    /// Keys of the session that the model never saw in training.
    pub unseen: Vec<String>,
}

/// What `rule` scores at one position: its rank or its NLL (`+∞` for an unseen key).
fn position_value(rule: Rule, s: &PositionScore) -> f64 {
    match rule {
        Rule::TopG if s.rank == u32::MAX => f64::INFINITY,
        Rule::TopG => s.rank as f64,
        Rule::Surprisal => s.nll as f64,
    }
}

/// A session's score under `rule`: its largest rank or NLL (`+∞` with an unseen key).
pub fn session_score(rule: Rule, scores: &[PositionScore]) -> f64 {
    scores
        .iter()
        .map(|s| position_value(rule, s))
        .fold(0.0, f64::max)
}

/// How far above the threshold an NLL must be to count as above it, relative to the
/// threshold: the same key sequence scored in batches of other shapes (validation sessions
/// together, a few new ones at detection) differs in the last bits of its f32 products (gemm's
/// blocking follows the shape), and a normal session like the validation one that set the
/// threshold must not be flagged for that.
pub const SURPRISAL_TOLERANCE: f64 = 1e-5;

/// Whether a score of `rule` (a position's, or a session's [`session_score`]) is flagged: a
/// rank of `top_g` or more, or an NLL above `threshold` (by more than
/// [`SURPRISAL_TOLERANCE`] of it).
pub fn flagged(rule: Rule, score: f64, top_g: usize, threshold: f64) -> bool {
    match rule {
        Rule::TopG => score >= top_g as f64,
        Rule::Surprisal => score > threshold + SURPRISAL_TOLERANCE * threshold.abs(),
    }
}

/// Whether one position is flagged under `rule`.
pub fn position_flagged(rule: Rule, s: &PositionScore, top_g: usize, threshold: f64) -> bool {
    flagged(rule, position_value(rule, s), top_g, threshold)
}

/// The verdict on one session: `ids` its tokens (`<s>` first), `scores` its positions.
pub fn verdict(
    rule: Rule,
    vocab: &KeyVocab,
    keys: &[String],
    ids: &[u32],
    scores: &[PositionScore],
    top_g: usize,
    threshold: f64,
) -> Verdict {
    let mut flags = Vec::new();
    let mut unseen = Vec::new();
    for s in scores {
        let id = ids[s.pos];
        let key = match keys.get(s.pos - 1) {
            Some(k) => k.clone(),
            None => vocab.name(id).to_string(),
        };
        if id == UNK {
            unseen.push(key.clone());
        }
        if id == UNK || position_flagged(rule, s, top_g, threshold) {
            flags.push(Flag {
                position: s.pos,
                key,
                // `<s>` and `<unk>` are never a right answer: not listed as expected.
                expected: s
                    .top
                    .iter()
                    .filter(|&&t| t != BOS && t != UNK)
                    .map(|&t| vocab.name(t).to_string())
                    .collect(),
                nll: s.nll.is_finite().then_some(s.nll as f64),
                rank: (s.rank != u32::MAX).then_some(s.rank),
            });
        }
    }
    let score = session_score(rule, scores);
    Verdict {
        anomalous: !flags.is_empty(),
        score: score.is_finite().then_some(score),
        flags,
        unseen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pos: usize, nll: f32, rank: u32) -> PositionScore {
        PositionScore {
            pos,
            nll,
            rank,
            top: vec![3, 4],
        }
    }

    #[test]
    fn thresholds_flag_at_most_the_target_share_of_normal_scores() {
        let normal: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(threshold_for_fpr(&normal, 0.0), Some(100.0));
        assert_eq!(threshold_for_fpr(&normal, 0.01), Some(99.0));
        assert_eq!(threshold_for_fpr(&normal, 0.05), Some(95.0));
        let t = threshold_for_fpr(&normal, 0.05).unwrap();
        assert_eq!(normal.iter().filter(|&&s| s > t).count(), 5);
        assert_eq!(threshold_for_fpr(&[], 0.1), None);
        assert_eq!(threshold_for_fpr(&[2.0], 1.0), Some(2.0));
    }

    #[test]
    fn verdicts_flag_ranks_from_g_nlls_over_the_threshold_and_unseen_keys() {
        let vocab = KeyVocab::build(["a", "b"]);
        let keys: Vec<String> = ["a", "zz", "b"].iter().map(|s| s.to_string()).collect();
        let ids = vocab.encode(&keys, true);
        let scores = [
            at(1, 0.1, 0),
            at(2, f32::INFINITY, u32::MAX),
            at(3, 2.5, 1),
            at(4, 0.2, 0),
        ];
        let v = verdict(Rule::TopG, &vocab, &keys, &ids, &scores, 1, 0.0);
        assert!(v.anomalous);
        assert_eq!(v.unseen, ["zz"]);
        let flagged: Vec<usize> = v.flags.iter().map(|f| f.position).collect();
        assert_eq!(flagged, [2, 3]);
        assert_eq!(v.flags[1].expected, ["a", "b"]);
        assert_eq!(v.score, None);
        let clean = [at(1, 0.1, 0), at(2, 1.0, 0), at(3, 0.2, 0)];
        let keys2: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let ids2 = vocab.encode(&keys2, true);
        let s = verdict(Rule::Surprisal, &vocab, &keys2, &ids2, &clean, 9, 0.5);
        assert_eq!(s.flags.len(), 1);
        assert_eq!(s.flags[0].key, "b");
        assert_eq!(s.score, Some(1.0));
        let end = verdict(Rule::Surprisal, &vocab, &keys2, &ids2, &clean, 9, 0.05);
        assert_eq!(end.flags.last().unwrap().key, "</s>");
        assert!(!verdict(Rule::Surprisal, &vocab, &keys2, &ids2, &clean, 9, 1.0).anomalous);
    }
}
