//! Uncertainty: seeded percentile bootstrap and a paired permutation test.
//!
//! - [`bootstrap_ci`] resamples the `n` rows with replacement `n_resamples`
//!   times (ChaCha8 seeded with `seed`), recomputes the statistic and returns
//!   the percentile interval: the `(1 - confidence) / 2` and `(1 + confidence) / 2`
//!   quantiles of the resampled statistics, interpolated linearly as
//!   `numpy.percentile` does. A resample whose statistic is undefined (for
//!   instance a ROC-AUC on a resample holding one class) is skipped and counted
//!   in `n_failed`; more than half failing is an error.
//! - [`bootstrap_ci_stratified`] resamples within each class, so class sizes
//!   stay fixed (used for KG separation, which needs both classes).
//! - [`paired_permutation_test`] tests `metric(a) - metric(b)` for two models
//!   scored on the same rows (base versus fine-tuned): under the null the two
//!   models are exchangeable row by row, so each permutation swaps the pair
//!   `(a_i, b_i)` with probability 1/2 independently per row. The two-sided
//!   p-value is `(count + 1) / (n_permutations + 1)`, `count` being the
//!   permutations with `|diff| >= |observed|` (up to 1e-12 relative, so exact
//!   ties count); it is never 0 and is exact in the sense of Phipson & Smyth (2010).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result, invalid};

/// Settings of the percentile bootstrap.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Number of resamples (default 1000).
    pub n_resamples: usize,
    /// Coverage of the interval, in (0, 1) (default 0.95).
    pub confidence: f64,
    /// Seed of the resampling (default 42).
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            n_resamples: 1000,
            confidence: 0.95,
            seed: 42,
        }
    }
}

impl BootstrapConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.n_resamples < 2 {
            return Err(invalid("n_resamples", self.n_resamples, "at least 2"));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(invalid("confidence", self.confidence, "a number in (0, 1)"));
        }
        Ok(())
    }
}

/// A point estimate with its percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceInterval {
    /// The statistic on the original rows.
    pub estimate: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Coverage asked for.
    pub confidence: f64,
    /// Resamples drawn.
    pub n_resamples: usize,
    /// Resamples whose statistic was undefined and skipped.
    pub n_failed: usize,
}

/// The `q`-th percentile (0..=100) of `values`, linear interpolation
/// (`numpy.percentile(values, q)`, method `"linear"`). `values` is sorted in place.
///
/// ```
/// let mut v = vec![4.0, 1.0, 3.0, 2.0];
/// assert_eq!(bioalign_metrics::percentile(&mut v, 50.0), 2.5);
/// ```
pub fn percentile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let pos = q / 100.0 * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    // numpy's _lerp: a + (b - a) * t, switched to b - (b - a) * (1 - t) for t >= 0.5
    let (a, b) = (values[lo], values[hi.min(values.len() - 1)]);
    if frac >= 0.5 {
        b - (b - a) * (1.0 - frac)
    } else {
        a + (b - a) * frac
    }
}

fn interval(
    estimate: f64,
    mut stats: Vec<f64>,
    failed: usize,
    first: Option<Error>,
    cfg: &BootstrapConfig,
) -> Result<ConfidenceInterval> {
    if failed * 2 > cfg.n_resamples {
        return Err(Error::BootstrapFailed {
            failed,
            total: cfg.n_resamples,
            first: first.map(|e| e.to_string()).unwrap_or_default(),
        });
    }
    let alpha = (1.0 - cfg.confidence) / 2.0 * 100.0;
    let lower = percentile(&mut stats, alpha);
    let upper = percentile(&mut stats, 100.0 - alpha);
    Ok(ConfidenceInterval {
        estimate,
        lower,
        upper,
        confidence: cfg.confidence,
        n_resamples: cfg.n_resamples,
        n_failed: failed,
    })
}

/// Percentile bootstrap of `statistic` over `n` rows. The statistic gets the
/// row indices of a resample (the identity `0..n` for the estimate).
///
/// ```
/// use bioalign_metrics::{bootstrap_ci, BootstrapConfig};
/// let x: Vec<f64> = (0..200).map(|i| (i % 10) as f64).collect();
/// let ci = bootstrap_ci(x.len(), &BootstrapConfig::default(), |rows| {
///     Ok(rows.iter().map(|&i| x[i]).sum::<f64>() / rows.len() as f64)
/// })?;
/// assert_eq!(ci.estimate, 4.5);
/// assert!(ci.lower < 4.5 && 4.5 < ci.upper && ci.upper - ci.lower < 1.5);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn bootstrap_ci<F>(
    n: usize,
    cfg: &BootstrapConfig,
    mut statistic: F,
) -> Result<ConfidenceInterval>
where
    F: FnMut(&[usize]) -> Result<f64>,
{
    cfg.validate()?;
    if n == 0 {
        return Err(Error::Empty { what: "bootstrap" });
    }
    let all: Vec<usize> = (0..n).collect();
    let estimate = statistic(&all)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut idx = vec![0usize; n];
    let mut stats = Vec::with_capacity(cfg.n_resamples);
    let (mut failed, mut first) = (0, None);
    for _ in 0..cfg.n_resamples {
        for v in idx.iter_mut() {
            *v = rng.random_range(0..n);
        }
        match statistic(&idx) {
            Ok(s) if s.is_finite() => stats.push(s),
            Ok(_) => failed += 1,
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    interval(estimate, stats, failed, first, cfg)
}

/// Percentile bootstrap that resamples within each class of `labels`, keeping
/// the class sizes fixed.
pub fn bootstrap_ci_stratified<F>(
    labels: &[usize],
    cfg: &BootstrapConfig,
    mut statistic: F,
) -> Result<ConfidenceInterval>
where
    F: FnMut(&[usize]) -> Result<f64>,
{
    cfg.validate()?;
    if labels.is_empty() {
        return Err(Error::Empty { what: "bootstrap" });
    }
    let (_, codes) = check::encode(labels);
    let k = codes.iter().max().map_or(0, |m| m + 1);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (i, &c) in codes.iter().enumerate() {
        members[c].push(i);
    }
    let all: Vec<usize> = (0..labels.len()).collect();
    let estimate = statistic(&all)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut idx = Vec::with_capacity(labels.len());
    let mut stats = Vec::with_capacity(cfg.n_resamples);
    let (mut failed, mut first) = (0, None);
    for _ in 0..cfg.n_resamples {
        idx.clear();
        for m in &members {
            for _ in 0..m.len() {
                idx.push(m[rng.random_range(0..m.len())]);
            }
        }
        match statistic(&idx) {
            Ok(s) if s.is_finite() => stats.push(s),
            Ok(_) => failed += 1,
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    interval(estimate, stats, failed, first, cfg)
}

/// Settings of the paired permutation test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PermutationConfig {
    /// Number of random permutations (default 9999).
    pub n_permutations: usize,
    /// Seed (default 42).
    pub seed: u64,
}

impl Default for PermutationConfig {
    fn default() -> Self {
        Self {
            n_permutations: 9999,
            seed: 42,
        }
    }
}

/// Result of a paired permutation test of `metric(a) - metric(b)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PermutationTest {
    /// `metric(a)`.
    pub metric_a: f64,
    /// `metric(b)`.
    pub metric_b: f64,
    /// `metric(a) - metric(b)`.
    pub observed: f64,
    /// Two-sided p-value `(count + 1) / (n_permutations + 1)`.
    pub p_value: f64,
    /// Permutations at least as extreme as the observed difference.
    pub count: usize,
    /// Permutations drawn.
    pub n_permutations: usize,
}

/// Paired permutation test of `metric(a) - metric(b)` where `a[i]` and `b[i]`
/// are the two models' items for row `i` (for instance `(label, prediction)`
/// or `(label, score)`); see the module docs for the null and the p-value.
///
/// ```
/// use bioalign_metrics::{paired_permutation_test, PermutationConfig};
/// // base model right on 50 of 100 rows, fine-tuned on 80 (rows: 1 = correct)
/// let base: Vec<u8> = (0..100).map(|i| u8::from(i % 2 == 0)).collect();
/// let tuned: Vec<u8> = (0..100).map(|i| u8::from(i % 5 != 0)).collect();
/// let acc = |v: &[u8]| Ok(v.iter().map(|&c| f64::from(c)).sum::<f64>() / v.len() as f64);
/// let t = paired_permutation_test(&tuned, &base, &PermutationConfig::default(), acc)?;
/// assert!((t.observed - 0.3).abs() < 1e-12);
/// assert!(t.p_value < 0.001);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn paired_permutation_test<T, F>(
    a: &[T],
    b: &[T],
    cfg: &PermutationConfig,
    mut metric: F,
) -> Result<PermutationTest>
where
    T: Clone,
    F: FnMut(&[T]) -> Result<f64>,
{
    if cfg.n_permutations == 0 {
        return Err(invalid("n_permutations", cfg.n_permutations, "at least 1"));
    }
    if a.is_empty() {
        return Err(Error::Empty {
            what: "permutation test",
        });
    }
    check::same_len(
        "permutation test: model a vs model b rows",
        a.len(),
        b.len(),
    )?;
    let metric_a = metric(a)?;
    let metric_b = metric(b)?;
    let observed = metric_a - metric_b;
    if !observed.is_finite() {
        return Err(Error::NonFinite {
            what: "permutation test: observed difference",
            row: 0,
            col: 0,
            value: observed,
        });
    }
    let threshold = observed.abs() * (1.0 - 1e-12);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut pa = a.to_vec();
    let mut pb = b.to_vec();
    let mut count = 0;
    for _ in 0..cfg.n_permutations {
        for i in 0..a.len() {
            if rng.random::<bool>() {
                pa[i] = b[i].clone();
                pb[i] = a[i].clone();
            } else {
                pa[i] = a[i].clone();
                pb[i] = b[i].clone();
            }
        }
        let d = metric(&pa)? - metric(&pb)?;
        if d.abs() >= threshold {
            count += 1;
        }
    }
    Ok(PermutationTest {
        metric_a,
        metric_b,
        observed,
        p_value: (count + 1) as f64 / (cfg.n_permutations + 1) as f64,
        count,
        n_permutations: cfg.n_permutations,
    })
}

/// Bootstrap intervals of the zero-shot classification metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassificationIntervals {
    /// Accuracy.
    pub accuracy: ConfidenceInterval,
    /// F1 of class 1 (scikit-learn's `average="binary"`).
    pub f1: ConfidenceInterval,
    /// Macro-averaged F1.
    pub macro_f1: ConfidenceInterval,
    /// ROC-AUC of the scores, when scores were given.
    pub roc_auc: Option<ConfidenceInterval>,
}

/// Percentile-bootstrap intervals (resampling rows) of accuracy, F1 of class 1,
/// macro F1 and, with `scores`, ROC-AUC, for binary zero-shot answers.
/// Zero divisions count as 0 (scikit-learn's default).
///
/// ```
/// use bioalign_metrics::{classification_intervals, BootstrapConfig};
/// let y: Vec<usize> = (0..100).map(|i| i % 2).collect();
/// let p: Vec<usize> = (0..100).map(|i| if i % 5 == 0 { 1 - i % 2 } else { i % 2 }).collect();
/// let ci = classification_intervals(&y, &p, None, &BootstrapConfig::default())?;
/// assert_eq!(ci.accuracy.estimate, 0.8);
/// assert!(ci.accuracy.lower < 0.8 && ci.accuracy.upper > 0.8);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn classification_intervals(
    y_true: &[usize],
    y_pred: &[usize],
    scores: Option<&[f64]>,
    cfg: &BootstrapConfig,
) -> Result<ClassificationIntervals> {
    use crate::classification::{ZeroDivision, accuracy, classification_report, roc_auc};
    check::same_len(
        "classification intervals: y_true vs y_pred",
        y_true.len(),
        y_pred.len(),
    )?;
    check::binary_labels("classification intervals: y_true", y_true)?;
    check::binary_labels("classification intervals: y_pred", y_pred)?;
    if let Some(s) = scores {
        check::same_len(
            "classification intervals: y_true vs scores",
            y_true.len(),
            s.len(),
        )?;
    }
    let pick = |rows: &[usize], v: &[usize]| rows.iter().map(|&r| v[r]).collect::<Vec<_>>();
    let f1_of = |rows: &[usize], class: Option<usize>| -> Result<f64> {
        let r =
            classification_report(&pick(rows, y_true), &pick(rows, y_pred), ZeroDivision::Zero)?;
        Ok(match class {
            Some(c) => r.class(c).map_or(0.0, |c| c.scores.f1),
            None => r.macro_avg.f1,
        })
    };
    let n = y_true.len();
    Ok(ClassificationIntervals {
        accuracy: bootstrap_ci(n, cfg, |rows| {
            accuracy(&pick(rows, y_true), &pick(rows, y_pred))
        })?,
        f1: bootstrap_ci(n, cfg, |rows| f1_of(rows, Some(1)))?,
        macro_f1: bootstrap_ci(n, cfg, |rows| f1_of(rows, None))?,
        roc_auc: scores
            .map(|s| {
                bootstrap_ci(n, cfg, |rows| {
                    let sc: Vec<f64> = rows.iter().map(|&r| s[r]).collect();
                    roc_auc(&pick(rows, y_true), &sc)
                })
            })
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_models_are_not_significant() {
        let a: Vec<u8> = (0..50).map(|i| u8::from(i % 3 == 0)).collect();
        let acc = |v: &[u8]| Ok(v.iter().map(|&c| f64::from(c)).sum::<f64>());
        let t = paired_permutation_test(&a, &a, &PermutationConfig::default(), acc).unwrap();
        assert_eq!(t.observed, 0.0);
        assert_eq!(t.p_value, 1.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_counts_failures() {
        let cfg = BootstrapConfig::default();
        let stat = |rows: &[usize]| {
            if rows.iter().all(|&r| r != 0) {
                Err(Error::Empty {
                    what: "row 0 missing",
                })
            } else {
                Ok(rows.len() as f64)
            }
        };
        // P(row 0 missing) = (1 - 1/3)^3 ~ 0.30
        let a = bootstrap_ci(3, &cfg, stat).unwrap();
        let b = bootstrap_ci(3, &cfg, stat).unwrap();
        assert_eq!(a, b);
        assert!(a.n_failed > 200 && a.n_failed < 400, "{}", a.n_failed);
        // always failing
        let e = bootstrap_ci(3, &cfg, |r: &[usize]| {
            if r == [0, 1, 2] {
                Ok(1.0)
            } else {
                Err(Error::Empty { what: "x" })
            }
        });
        assert!(matches!(e, Err(Error::BootstrapFailed { .. })));
    }

    #[test]
    fn stratified_bootstrap_keeps_class_sizes() {
        let labels = [0, 0, 0, 1, 1, 2];
        let ci = bootstrap_ci_stratified(&labels, &BootstrapConfig::default(), |rows| {
            let ones = rows.iter().filter(|&&r| labels[r] == 1).count();
            let twos = rows.iter().filter(|&&r| labels[r] == 2).count();
            assert_eq!((rows.len(), ones, twos), (6, 2, 1));
            Ok(rows.iter().sum::<usize>() as f64)
        })
        .unwrap();
        assert_eq!(ci.n_failed, 0);
    }
}
