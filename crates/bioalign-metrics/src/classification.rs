//! Classification metrics for zero-shot answers, defined exactly as
//! scikit-learn defines them (`sklearn.metrics`, 1.9).
//!
//! - Labels are the sorted union of the true and predicted labels, as in
//!   `precision_recall_fscore_support(labels=None)`.
//! - Precision `tp / (tp + fp)`, recall `tp / (tp + fn)`, F1
//!   `2 tp / (2 tp + fp + fn)` (scikit-learn >= 1.3 computes F from counts, not
//!   from precision and recall). A zero denominator gives the
//!   [`ZeroDivision`] value: 0 by default, as scikit-learn's `"warn"` does.
//! - Macro averages are unweighted means over labels, weighted averages weight
//!   by support (true count); with `ZeroDivision::Nan` the undefined entries are
//!   left out of the averages (scikit-learn's `_nanaverage`).
//! - ROC-AUC is the area under the ROC curve with tied scores forming one
//!   diagonal step, which equals the Mann-Whitney statistic with ties counted
//!   one half; it is computed from average ranks in f64.

use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result};

/// What a ratio with a zero denominator is set to (`zero_division` in scikit-learn).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ZeroDivision {
    /// 0.0, scikit-learn's default (`"warn"`, which warns and returns 0).
    #[default]
    Zero,
    /// 1.0.
    One,
    /// NaN, left out of macro and weighted averages.
    Nan,
}

impl ZeroDivision {
    fn value(self) -> f64 {
        match self {
            Self::Zero => 0.0,
            Self::One => 1.0,
            Self::Nan => f64::NAN,
        }
    }
}

/// Precision, recall and F1 of one class or one average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prf {
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1 score.
    pub f1: f64,
}

/// Scores of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// The class label.
    pub label: usize,
    /// Precision, recall and F1 of this class taken as positive.
    pub scores: Prf,
    /// Number of true rows of this class.
    pub support: usize,
}

/// Everything `sklearn.metrics.classification_report` reports, as numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    /// Fraction of rows predicted correctly.
    pub accuracy: f64,
    /// Per-class scores, in ascending label order.
    pub per_class: Vec<ClassScores>,
    /// Unweighted mean over classes.
    pub macro_avg: Prf,
    /// Mean weighted by support.
    pub weighted_avg: Prf,
    /// Micro average (global counts; equals accuracy when every label is listed).
    pub micro_avg: Prf,
    /// The confusion matrix.
    pub confusion: ConfusionMatrix,
    /// The zero-division setting used.
    pub zero_division: ZeroDivision,
}

impl ClassificationReport {
    /// The scores of class `label` (scikit-learn's `average="binary", pos_label=label`).
    pub fn class(&self, label: usize) -> Option<&ClassScores> {
        self.per_class.iter().find(|c| c.label == label)
    }
}

/// Confusion matrix: `counts[i][j]` rows with true label `labels[i]` predicted as `labels[j]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Sorted union of true and predicted labels.
    pub labels: Vec<usize>,
    /// Counts, true label by row, predicted label by column.
    pub counts: Vec<Vec<usize>>,
}

fn check_pair(y_true: &[usize], y_pred: &[usize]) -> Result<()> {
    if y_true.is_empty() {
        return Err(Error::Empty {
            what: "classification metrics",
        });
    }
    check::same_len(
        "classification metrics: y_true vs y_pred",
        y_true.len(),
        y_pred.len(),
    )
}

/// Fraction of rows where `y_pred == y_true` (`sklearn.metrics.accuracy_score`).
///
/// ```
/// let acc = bioalign_metrics::accuracy(&[1, 0, 1, 1], &[1, 1, 1, 0])?;
/// assert_eq!(acc, 0.5);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn accuracy(y_true: &[usize], y_pred: &[usize]) -> Result<f64> {
    check_pair(y_true, y_pred)?;
    let correct = y_true.iter().zip(y_pred).filter(|(a, b)| a == b).count();
    Ok(correct as f64 / y_true.len() as f64)
}

/// The confusion matrix over the sorted union of labels (`sklearn.metrics.confusion_matrix`).
///
/// ```
/// let cm = bioalign_metrics::confusion_matrix(&[0, 1, 1, 2], &[0, 1, 2, 2])?;
/// assert_eq!(cm.labels, vec![0, 1, 2]);
/// assert_eq!(cm.counts, vec![vec![1, 0, 0], vec![0, 1, 1], vec![0, 0, 1]]);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn confusion_matrix(y_true: &[usize], y_pred: &[usize]) -> Result<ConfusionMatrix> {
    check_pair(y_true, y_pred)?;
    let mut all: Vec<usize> = y_true.iter().chain(y_pred).copied().collect();
    all.sort_unstable();
    all.dedup();
    let k = all.len();
    let mut counts = vec![vec![0usize; k]; k];
    for (t, p) in y_true.iter().zip(y_pred) {
        let i = all.binary_search(t).unwrap_or(0);
        let j = all.binary_search(p).unwrap_or(0);
        counts[i][j] += 1;
    }
    Ok(ConfusionMatrix {
        labels: all,
        counts,
    })
}

fn divide(num: f64, den: f64, zd: ZeroDivision) -> f64 {
    if den == 0.0 { zd.value() } else { num / den }
}

fn prf(tp: usize, pred: usize, truth: usize, zd: ZeroDivision) -> Prf {
    let (tp, pred, truth) = (tp as f64, pred as f64, truth as f64);
    Prf {
        precision: divide(tp, pred, zd),
        recall: divide(tp, truth, zd),
        f1: divide(2.0 * tp, truth + pred, zd),
    }
}

/// numpy's `average` leaving NaN entries out (scikit-learn's `_nanaverage`).
fn nan_average(values: &[f64], weights: Option<&[f64]>) -> f64 {
    let mut num = 0.0;
    let mut den = 0.0;
    let mut any = false;
    for (i, &v) in values.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        any = true;
        let w = weights.map_or(1.0, |w| w[i]);
        num += v * w;
        den += w;
    }
    if !any {
        return f64::NAN;
    }
    if weights.is_some() && den == 0.0 {
        // numpy raises; scikit-learn returns 0 for an all-zero weighted average
        return 0.0;
    }
    num / den
}

/// Accuracy, per-class precision / recall / F1, their macro, weighted and micro
/// averages and the confusion matrix, as scikit-learn computes them.
///
/// ```
/// use bioalign_metrics::{classification_report, ZeroDivision};
/// let r = classification_report(&[0, 0, 1, 1], &[0, 1, 1, 1], ZeroDivision::Zero)?;
/// let pos = r.class(1).unwrap();
/// assert!((pos.scores.precision - 2.0 / 3.0).abs() < 1e-15);
/// assert_eq!(pos.scores.recall, 1.0);
/// assert_eq!(r.accuracy, 0.75);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn classification_report(
    y_true: &[usize],
    y_pred: &[usize],
    zero_division: ZeroDivision,
) -> Result<ClassificationReport> {
    let confusion = confusion_matrix(y_true, y_pred)?;
    let k = confusion.labels.len();
    let mut per_class = Vec::with_capacity(k);
    let (mut tp_all, mut pred_all, mut true_all) = (0, 0, 0);
    for i in 0..k {
        let tp = confusion.counts[i][i];
        let truth: usize = confusion.counts[i].iter().sum();
        let pred: usize = confusion.counts.iter().map(|r| r[i]).sum();
        tp_all += tp;
        pred_all += pred;
        true_all += truth;
        per_class.push(ClassScores {
            label: confusion.labels[i],
            scores: prf(tp, pred, truth, zero_division),
            support: truth,
        });
    }
    let avg = |weights: Option<&[f64]>| {
        let get = |f: fn(&Prf) -> f64| {
            let v: Vec<f64> = per_class.iter().map(|c| f(&c.scores)).collect();
            nan_average(&v, weights)
        };
        Prf {
            precision: get(|p| p.precision),
            recall: get(|p| p.recall),
            f1: get(|p| p.f1),
        }
    };
    let support: Vec<f64> = per_class.iter().map(|c| c.support as f64).collect();
    Ok(ClassificationReport {
        accuracy: accuracy(y_true, y_pred)?,
        macro_avg: avg(None),
        weighted_avg: avg(Some(&support)),
        micro_avg: prf(tp_all, pred_all, true_all, zero_division),
        per_class,
        confusion,
        zero_division,
    })
}

/// Average ranks (1-based) of `v`, ties sharing the mean of their ranks
/// (`scipy.stats.rankdata(method="average")`). `v` must be free of NaN.
pub fn average_ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut ranks = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && v[order[j]] == v[order[i]] {
            j += 1;
        }
        // ranks i+1 ..= j share their mean
        let r = (i + 1 + j) as f64 / 2.0;
        for &o in &order[i..j] {
            ranks[o] = r;
        }
        i = j;
    }
    ranks
}

/// Binary ROC-AUC of `scores` against `y_true` (1 = positive), ties handled as
/// `sklearn.metrics.roc_auc_score` does (a tied group is one diagonal step).
///
/// Errors: empty or mismatched inputs, labels other than 0/1, only one class
/// present (scikit-learn raises too), non-finite scores.
///
/// ```
/// // one tie between a positive and a negative counts one half
/// let auc = bioalign_metrics::roc_auc(&[0, 0, 1, 1], &[0.1, 0.4, 0.35, 0.8])?;
/// assert_eq!(auc, 0.75);
/// let tied = bioalign_metrics::roc_auc(&[0, 1], &[0.5, 0.5])?;
/// assert_eq!(tied, 0.5);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn roc_auc(y_true: &[usize], scores: &[f64]) -> Result<f64> {
    const WHAT: &str = "ROC-AUC";
    if y_true.is_empty() {
        return Err(Error::Empty { what: WHAT });
    }
    check::same_len("ROC-AUC: labels vs scores", y_true.len(), scores.len())?;
    let [n_neg, n_pos] = check::both_classes(WHAT, y_true, 1)?;
    check::finite_slice("ROC-AUC scores", scores)?;
    let ranks = average_ranks(scores);
    let rank_sum: f64 = ranks
        .iter()
        .zip(y_true)
        .filter(|(_, y)| **y == 1)
        .map(|(r, _)| r)
        .sum();
    let (p, n) = (n_pos as f64, n_neg as f64);
    Ok((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_pairwise_counting() {
        let y = [0, 1, 1, 0, 1, 0, 0, 1, 1, 0];
        let s = [0.2, 0.2, 0.9, 0.5, 0.5, 0.1, 0.7, 0.7, 0.3, 0.3];
        let mut num = 0.0;
        let mut den = 0.0;
        for i in 0..y.len() {
            for j in 0..y.len() {
                if y[i] == 1 && y[j] == 0 {
                    den += 1.0;
                    num += if s[i] > s[j] {
                        1.0
                    } else if s[i] == s[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        assert!((roc_auc(&y, &s).unwrap() - num / den).abs() < 1e-15);
    }

    #[test]
    fn auc_rejects_one_class_and_nan() {
        assert!(matches!(
            roc_auc(&[1, 1], &[0.1, 0.2]),
            Err(Error::TooFewClasses { found: 1, .. })
        ));
        assert!(matches!(
            roc_auc(&[0, 1], &[0.1, f64::NAN]),
            Err(Error::NonFinite { row: 1, .. })
        ));
        assert!(matches!(
            roc_auc(&[0, 1], &[0.1]),
            Err(Error::LengthMismatch { .. })
        ));
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }
}
