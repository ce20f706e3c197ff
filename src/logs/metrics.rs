//! Detection metrics: precision, recall, F1 and false-positive rate of flags against labels,
//! and the threshold-free ROC-AUC and PR-AUC of scores (scikit-learn's definitions:
//! `roc_auc_score` = the probability that a random anomaly scores above a random normal item,
//! ties counting one half; `average_precision_score` = Σ (R_k − R_{k−1}) P_k over the distinct
//! score thresholds, highest first). Positives are anomalies.

use serde::Serialize;

/// Counts and rates of flags against labels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Confusion {
    /// Anomalies flagged.
    pub tp: usize,
    /// Normal items flagged.
    pub fp: usize,
    /// Anomalies missed.
    pub fn_: usize,
    /// Normal items passed.
    pub tn: usize,
}

impl Confusion {
    /// Counts `flags` against `labels` (true: anomalous).
    pub fn of(flags: &[bool], labels: &[bool]) -> Confusion {
        let mut c = Confusion::default();
        for (&f, &l) in flags.iter().zip(labels) {
            match (f, l) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => c.tn += 1,
            }
        }
        c
    }

    /// TP / (TP + FP), 0 with nothing flagged.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// TP / (TP + FN).
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// The harmonic mean of precision and recall.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// FP / (FP + TN): the share of normal items flagged.
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// ROC-AUC of `scores` (higher: more anomalous) against `labels`; `None` without both classes.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Mann-Whitney U with average ranks for ties.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Average precision (PR-AUC) of `scores` against `labels`; `None` without a positive.
pub fn pr_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp, mut ap, mut last_recall) = (0usize, 0usize, 0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        // All items tied at this score are flagged together.
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            if labels[order[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        let recall = tp as f64 / n_pos as f64;
        ap += (recall - last_recall) * tp as f64 / (tp + fp) as f64;
        last_recall = recall;
        i = j;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_rates() {
        let c = Confusion::of(
            &[true, true, false, false, true],
            &[true, false, true, false, true],
        );
        assert_eq!((c.tp, c.fp, c.fn_, c.tn), (2, 1, 1, 1));
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.f1() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.fpr() - 0.5).abs() < 1e-12);
        assert_eq!(Confusion::default().f1(), 0.0);
    }

    /// Values from scikit-learn 1.x: `roc_auc_score([0,0,1,1,0,1], [0.1,0.4,0.35,0.8,0.4,0.4])`
    /// = 0.6667, `average_precision_score(...)` = 0.7 (scikit-learn 1.x, run here).
    #[test]
    fn aucs_match_scikit_learn_with_ties() {
        let labels = [false, false, true, true, false, true];
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.4];
        let roc = roc_auc(&scores, &labels).unwrap();
        assert!((roc - 2.0 / 3.0).abs() < 1e-12, "{roc}");
        let ap = pr_auc(&scores, &labels).unwrap();
        // Thresholds: 0.8 → P 1, R 1/3; 0.4 → P 2/4, R 2/3; 0.35 → P 3/5, R 1.
        let expected = 1.0 / 3.0 + (1.0 / 3.0) * 0.5 + (1.0 / 3.0) * 0.6;
        assert!((ap - expected).abs() < 1e-12, "{ap}");
        assert_eq!(roc_auc(&[1.0], &[true]), None);
        assert_eq!(roc_auc(&[1.0, 2.0], &[false, true]), Some(1.0));
    }
}
