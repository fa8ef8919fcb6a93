//! Paired comparisons of a base and a fine-tuned model scored on the same rows (issue 9).
//!
//! Every comparison returns a [`Change`]: both values, the difference
//! `tuned - base`, the relative change in %, a paired bootstrap interval of the
//! difference and a two-sided p-value of the null "the two models are exchangeable
//! row by row".
//!
//! - **Zero-shot accuracy** ([`accuracy_change`]): rows are resampled with replacement
//!   (the same rows for both models) for the interval. The p-value is the *exact*
//!   sign-flip (swap) permutation distribution: swapping a row's two answers changes
//!   the difference only on discordant rows, so with `b` rows right only after
//!   fine-tuning and `c` right only before, the null distribution of `b - c` is that of
//!   `2B - (b + c)` with `B ~ Binomial(b + c, 1/2)`, and
//!   `p = P(|2B - (b + c)| >= |b - c|)`: the exact McNemar test (equal to
//!   `scipy.stats.binomtest(b, b + c, 0.5).pvalue`), no Monte Carlo error.
//! - **ROC-AUC of the zero-shot score** ([`roc_auc_change`]): the same bootstrap, and
//!   bioalign-metrics' seeded [`paired_permutation_test`] swapping each row's
//!   `(label, score)` pair with probability 1/2.
//! - **Embedding measures** ([`kg_separation_change`], [`probe_accuracy_change`],
//!   [`silhouette_tsne_change`]): each permutation swaps row `i`'s base and tuned
//!   embedding with probability 1/2 (independently per row; ChaCha8 seeded) and
//!   recomputes the measure on both mixed matrices; the p-value is
//!   `(count + 1) / (n_permutations + 1)` with `count` the permutations whose
//!   `|difference| >= |observed|` (Phipson & Smyth, never 0). The measure is
//!   recomputed in full each time (the probe is refitted, the t-SNE rerun), so the
//!   number of permutations is stated per measure ([`CompareConfig`]): KG separation is
//!   O(n d) and gets 999, the probe (a logistic-regression fit per model) 199, the
//!   t-SNE silhouette (two exact t-SNEs of up to 400 rows per permutation) 19, whose
//!   smallest attainable p-value is therefore 0.05.
//!   Intervals of the difference: KG separation by a stratified paired bootstrap over
//!   rows (class sizes fixed, as in `metrics.json`); probe accuracy by a paired
//!   bootstrap over the probe's test rows (both probes share the split: same `n`, same
//!   seed); the t-SNE silhouette by a paired bootstrap over projected rows with both
//!   projections held fixed (as `metrics.json`'s own `silhouette_tsne_ci`).
//!
//! Nothing here depends on burn: inputs are `ndarray` views and plain slices.

use ndarray::{Array2, ArrayView2, Axis, concatenate, s};
use serde::{Deserialize, Serialize};

use bioalign_metrics::{
    BootstrapConfig, ConfidenceInterval, PermutationConfig, ProbeConfig, TsneConfig, accuracy,
    bootstrap_ci, bootstrap_ci_stratified, euclidean_distances, kg_separation, linear_probe,
    paired_permutation_test, roc_auc, silhouette_score_precomputed, tsne,
};

use crate::error::{Result, invalid};

/// How a p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TestMethod {
    /// Exact sign-flip distribution of paired 0/1 outcomes (exact McNemar).
    ExactSignFlip,
    /// Random row-wise swaps of the two models' items (`n_permutations` of them).
    PairedPermutation,
}

/// One measure before and after fine-tuning, on the same rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The base model's value.
    pub base: f64,
    /// The fine-tuned model's value.
    pub tuned: f64,
    /// `tuned - base`.
    pub diff: f64,
    /// `100 * (tuned - base) / |base|` (`None` when `base` is 0).
    pub diff_pct: Option<f64>,
    /// Paired bootstrap interval of `diff` (`estimate` = `diff`).
    pub diff_ci: Option<ConfidenceInterval>,
    /// Two-sided p-value of "no difference" (exchangeable models; `None`: not tested).
    pub p_value: Option<f64>,
    /// How `p_value` was computed.
    pub method: TestMethod,
    /// Random permutations drawn (`None` for the exact test).
    pub n_permutations: Option<usize>,
    /// Rows the measure ran on.
    pub n_rows: usize,
}

impl Change {
    fn new(
        base: f64,
        tuned: f64,
        diff_ci: Option<ConfidenceInterval>,
        p_value: Option<f64>,
        method: TestMethod,
        n_permutations: Option<usize>,
        n_rows: usize,
    ) -> Self {
        let diff = tuned - base;
        Self {
            base,
            tuned,
            diff,
            diff_pct: (base != 0.0).then(|| 100.0 * diff / base.abs()),
            diff_ci,
            p_value,
            method,
            n_permutations,
            n_rows,
        }
    }
}

/// Settings of the comparisons (see the module docs for why the counts differ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareConfig {
    /// Paired bootstrap of each difference (`None`: no intervals).
    pub bootstrap: Option<BootstrapConfig>,
    /// Seed of every permutation stream.
    pub seed: u64,
    /// Permutations for the ROC-AUC of the zero-shot score (default 999).
    pub permutations_roc_auc: usize,
    /// Permutations for KG separation (default 999).
    pub permutations_kg: usize,
    /// Permutations for the probe accuracy (default 199).
    pub permutations_probe: usize,
    /// Permutations for the t-SNE silhouette (default 19; 0 skips the test).
    pub permutations_silhouette: usize,
    /// The probe protocol (must be the one `evaluate` used).
    pub probe: ProbeConfig,
    /// t-SNE settings (must be the ones `evaluate` used).
    pub tsne: TsneConfig,
    /// Rows projected (the first ones; reference 400).
    pub projection_rows: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        Self {
            bootstrap: Some(BootstrapConfig::default()),
            seed: 42,
            permutations_roc_auc: 999,
            permutations_kg: 999,
            permutations_probe: 199,
            permutations_silhouette: 19,
            probe: ProbeConfig::default(),
            tsne: TsneConfig::default(),
            projection_rows: 400,
        }
    }
}

impl CompareConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if let Some(b) = &self.bootstrap {
            b.validate()?;
        }
        for (field, v) in [
            ("permutations_roc_auc", self.permutations_roc_auc),
            ("permutations_kg", self.permutations_kg),
            ("permutations_probe", self.permutations_probe),
        ] {
            if v == 0 {
                return Err(invalid(field, v, "at least 1"));
            }
        }
        self.probe.validate()?;
        self.tsne.validate()?;
        if self.projection_rows < 4 {
            return Err(invalid(
                "projection_rows",
                self.projection_rows,
                "at least 4",
            ));
        }
        Ok(())
    }
}

fn check_rows(what: &'static str, n: usize, m: usize) -> Result<()> {
    if n != m {
        return Err(invalid(what, format!("{n} vs {m} rows"), "the same rows"));
    }
    if n == 0 {
        return Err(invalid(what, 0, "at least one row"));
    }
    Ok(())
}

/// The exact two-sided sign-flip p-value of paired 0/1 outcomes: `b` rows where only
/// the second model is right, `c` where only the first is (the exact McNemar test,
/// `scipy.stats.binomtest(b, b + c, 0.5).pvalue`). 1 when there is no discordant row.
///
/// ```
/// // 10 discordant rows, all in favour of one model: p = 2 / 2^10
/// let p = bioalign_study::stats::exact_sign_flip_p(10, 0);
/// assert!((p - 2.0 / 1024.0).abs() < 1e-15);
/// assert_eq!(bioalign_study::stats::exact_sign_flip_p(3, 3), 1.0);
/// ```
pub fn exact_sign_flip_p(b: usize, c: usize) -> f64 {
    let k = b + c;
    if k == 0 {
        return 1.0;
    }
    let observed = b.abs_diff(c);
    let ln2k = k as f64 * std::f64::consts::LN_2;
    let mut ln_choose = 0.0f64; // ln C(k, 0)
    let mut p = 0.0;
    for j in 0..=k {
        if (2 * j).abs_diff(k) >= observed {
            p += (ln_choose - ln2k).exp();
        }
        if j < k {
            ln_choose += ((k - j) as f64).ln() - ((j + 1) as f64).ln();
        }
    }
    p.min(1.0)
}

/// Accuracy of `pred_base` and `pred_tuned` against `labels` on the same rows: paired
/// bootstrap interval of the difference and the exact sign-flip p-value.
pub fn accuracy_change(
    labels: &[usize],
    pred_base: &[usize],
    pred_tuned: &[usize],
    boot: Option<&BootstrapConfig>,
) -> Result<Change> {
    check_rows(
        "accuracy change: base predictions",
        labels.len(),
        pred_base.len(),
    )?;
    check_rows(
        "accuracy change: tuned predictions",
        labels.len(),
        pred_tuned.len(),
    )?;
    let right_b: Vec<f64> = labels
        .iter()
        .zip(pred_base)
        .map(|(l, p)| f64::from(u8::from(l == p)))
        .collect();
    let right_t: Vec<f64> = labels
        .iter()
        .zip(pred_tuned)
        .map(|(l, p)| f64::from(u8::from(l == p)))
        .collect();
    let n = labels.len();
    let mean =
        |v: &[f64], rows: &[usize]| rows.iter().map(|&r| v[r]).sum::<f64>() / rows.len() as f64;
    let all: Vec<usize> = (0..n).collect();
    let (base, tuned) = (mean(&right_b, &all), mean(&right_t, &all));
    let ci = boot
        .map(|b| bootstrap_ci(n, b, |rows| Ok(mean(&right_t, rows) - mean(&right_b, rows))))
        .transpose()?;
    let only_tuned = right_t
        .iter()
        .zip(&right_b)
        .filter(|(t, b)| **t > **b)
        .count();
    let only_base = right_t
        .iter()
        .zip(&right_b)
        .filter(|(t, b)| **t < **b)
        .count();
    Ok(Change::new(
        base,
        tuned,
        ci,
        Some(exact_sign_flip_p(only_tuned, only_base)),
        TestMethod::ExactSignFlip,
        None,
        n,
    ))
}

/// ROC-AUC of `score_base` and `score_tuned` against `labels`: paired bootstrap interval
/// of the difference and a paired permutation test of `n_permutations` swaps.
pub fn roc_auc_change(
    labels: &[usize],
    score_base: &[f64],
    score_tuned: &[f64],
    boot: Option<&BootstrapConfig>,
    n_permutations: usize,
    seed: u64,
) -> Result<Change> {
    check_rows(
        "ROC-AUC change: base scores",
        labels.len(),
        score_base.len(),
    )?;
    check_rows(
        "ROC-AUC change: tuned scores",
        labels.len(),
        score_tuned.len(),
    )?;
    let n = labels.len();
    let auc_of = |scores: &[f64], rows: &[usize]| {
        let t: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
        let q: Vec<f64> = rows.iter().map(|&r| scores[r]).collect();
        roc_auc(&t, &q)
    };
    let ci = boot
        .map(|b| {
            bootstrap_ci(n, b, |rows| {
                Ok(auc_of(score_tuned, rows)? - auc_of(score_base, rows)?)
            })
        })
        .transpose()?;
    let a: Vec<(usize, f64)> = labels
        .iter()
        .copied()
        .zip(score_tuned.iter().copied())
        .collect();
    let b: Vec<(usize, f64)> = labels
        .iter()
        .copied()
        .zip(score_base.iter().copied())
        .collect();
    let perm = PermutationConfig {
        n_permutations,
        seed,
    };
    let test = paired_permutation_test(&a, &b, &perm, |items| {
        let t: Vec<usize> = items.iter().map(|x| x.0).collect();
        let q: Vec<f64> = items.iter().map(|x| x.1).collect();
        roc_auc(&t, &q)
    })?;
    Ok(Change::new(
        test.metric_b,
        test.metric_a,
        ci,
        Some(test.p_value),
        TestMethod::PairedPermutation,
        Some(n_permutations),
        n,
    ))
}

/// The row-swap permutation test of `measure(tuned) - measure(base)` on embeddings:
/// each permutation swaps row `i` of the two matrices with probability 1/2. Returns
/// `(measure(base), measure(tuned), p_value)`.
pub fn embedding_permutation_test<F>(
    base: ArrayView2<'_, f32>,
    tuned: ArrayView2<'_, f32>,
    n_permutations: usize,
    seed: u64,
    mut measure: F,
) -> Result<(f64, f64, f64)>
where
    F: FnMut(ArrayView2<'_, f32>) -> bioalign_metrics::Result<f64>,
{
    if base.dim() != tuned.dim() {
        return Err(invalid(
            "embedding permutation test: tuned embeddings",
            format!("{:?} vs base {:?}", tuned.dim(), base.dim()),
            "the same shape as the base embeddings",
        ));
    }
    let n = base.nrows();
    // Row i of model a is row i of `stacked`, of model b row n + i; a permutation
    // hands the metric a list of stacked rows.
    let stacked: Array2<f32> = concatenate(Axis(0), &[tuned.view(), base.view()])
        .map_err(|e| invalid("embedding permutation test", e, "stackable matrices"))?;
    let a: Vec<usize> = (0..n).collect();
    let b: Vec<usize> = (n..2 * n).collect();
    let perm = PermutationConfig {
        n_permutations,
        seed,
    };
    let test = paired_permutation_test(&a, &b, &perm, |rows| {
        measure(stacked.select(Axis(0), rows).view())
    })?;
    Ok((test.metric_b, test.metric_a, test.p_value))
}

/// KG separation (the reference's value) before and after.
pub fn kg_separation_change(
    base: ArrayView2<'_, f32>,
    tuned: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &CompareConfig,
) -> Result<Change> {
    check_rows("KG separation change: labels", base.nrows(), labels.len())?;
    let sep = |x: ArrayView2<'_, f32>| -> bioalign_metrics::Result<f64> {
        Ok(kg_separation(x, labels)?.separation)
    };
    let (b, t, p) = embedding_permutation_test(base, tuned, cfg.permutations_kg, cfg.seed, sep)?;
    let ci = cfg
        .bootstrap
        .as_ref()
        .map(|boot| {
            bootstrap_ci_stratified(labels, boot, |rows| {
                let l: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
                let xt = tuned.select(Axis(0), rows);
                let xb = base.select(Axis(0), rows);
                Ok(kg_separation(xt.view(), &l)?.separation
                    - kg_separation(xb.view(), &l)?.separation)
            })
        })
        .transpose()?;
    Ok(Change::new(
        b,
        t,
        ci,
        Some(p),
        TestMethod::PairedPermutation,
        Some(cfg.permutations_kg),
        labels.len(),
    ))
}

/// Linear-probe test accuracy before and after (the probe refitted per permutation).
pub fn probe_accuracy_change(
    base: ArrayView2<'_, f32>,
    tuned: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &CompareConfig,
) -> Result<Change> {
    check_rows("probe change: labels", base.nrows(), labels.len())?;
    let acc = |x: ArrayView2<'_, f32>| -> bioalign_metrics::Result<f64> {
        Ok(linear_probe(x, labels, &cfg.probe)?.accuracy)
    };
    let (b, t, p) = embedding_permutation_test(base, tuned, cfg.permutations_probe, cfg.seed, acc)?;
    let ci = match &cfg.bootstrap {
        Some(boot) => {
            let pb = linear_probe(base, labels, &cfg.probe)?;
            let pt = linear_probe(tuned, labels, &cfg.probe)?;
            if pb.test_indices != pt.test_indices {
                return Err(invalid(
                    "probe change: test rows",
                    "different splits",
                    "one split for both models",
                ));
            }
            let y: Vec<usize> = pb.test_indices.iter().map(|&i| labels[i]).collect();
            Some(bootstrap_ci(y.len(), boot, |rows| {
                let t: Vec<usize> = rows.iter().map(|&r| y[r]).collect();
                let qt: Vec<usize> = rows.iter().map(|&r| pt.predictions[r]).collect();
                let qb: Vec<usize> = rows.iter().map(|&r| pb.predictions[r]).collect();
                Ok(accuracy(&t, &qt)? - accuracy(&t, &qb)?)
            })?)
        }
        None => None,
    };
    Ok(Change::new(
        b,
        t,
        ci,
        Some(p),
        TestMethod::PairedPermutation,
        Some(cfg.permutations_probe),
        labels.len(),
    ))
}

fn coords_matrix(what: &'static str, c: &[Vec<f64>]) -> Result<Array2<f64>> {
    let d = c.first().map_or(0, Vec::len);
    if c.iter().any(|r| r.len() != d) || d == 0 {
        return Err(invalid(what, "ragged or empty rows", "equal-length rows"));
    }
    Array2::from_shape_vec((c.len(), d), c.iter().flatten().copied().collect())
        .map_err(|e| invalid(what, e, "a matrix"))
}

/// Base and tuned 2-D coordinates of the projected rows (`metrics.json`'s `embeddings.tsne`).
pub type Projections<'a> = (&'a [Vec<f64>], &'a [Vec<f64>]);

/// Silhouette (Euclidean) of the labels on a t-SNE of the first `projection_rows` rows,
/// before and after. `projections` are the `(base, tuned)` t-SNE coordinates already
/// computed by `evaluate` (`metrics.json`'s `embeddings.tsne`), else they are computed
/// here with `cfg.tsne`. `permutations_silhouette == 0` skips the test (`p_value` `None`).
pub fn silhouette_tsne_change(
    base: ArrayView2<'_, f32>,
    tuned: ArrayView2<'_, f32>,
    labels: &[usize],
    projections: Option<Projections<'_>>,
    cfg: &CompareConfig,
) -> Result<Change> {
    check_rows("silhouette change: labels", base.nrows(), labels.len())?;
    let m = cfg.projection_rows.min(labels.len());
    let (xb, xt, lp) = (
        base.slice(s![..m, ..]),
        tuned.slice(s![..m, ..]),
        &labels[..m],
    );
    let sil = |coords: &Array2<f64>| -> bioalign_metrics::Result<f64> {
        silhouette_score_precomputed(euclidean_distances(coords.view()).view(), lp)
    };
    let (pb, pt) = match projections {
        Some((b, t)) => {
            let (b, t) = (
                coords_matrix("silhouette change: base t-SNE", b)?,
                coords_matrix("silhouette change: tuned t-SNE", t)?,
            );
            if b.nrows() != m || t.nrows() != m {
                return Err(invalid(
                    "silhouette change: t-SNE rows",
                    format!("{} and {}", b.nrows(), t.nrows()),
                    "projection_rows rows (the first rows of the split)",
                ));
            }
            (b, t)
        }
        None => (tsne(xb, &cfg.tsne)?, tsne(xt, &cfg.tsne)?),
    };
    let (base_v, tuned_v) = (sil(&pb)?, sil(&pt)?);
    let (p, n_perm) = if cfg.permutations_silhouette > 0 {
        let measure =
            |x: ArrayView2<'_, f32>| -> bioalign_metrics::Result<f64> { sil(&tsne(x, &cfg.tsne)?) };
        // The permutation test recomputes both t-SNEs; its observed difference uses
        // the same settings, so it equals (tuned_v - base_v) when `projections` came
        // from `evaluate` with `cfg.tsne`.
        let (_, _, p) =
            embedding_permutation_test(xb, xt, cfg.permutations_silhouette, cfg.seed, measure)?;
        (Some(p), Some(cfg.permutations_silhouette))
    } else {
        (None, None)
    };
    let ci = cfg
        .bootstrap
        .as_ref()
        .map(|boot| {
            let db = euclidean_distances(pb.view());
            let dt = euclidean_distances(pt.view());
            bootstrap_ci(m, boot, |rows| {
                let l: Vec<usize> = rows.iter().map(|&r| lp[r]).collect();
                let sub = |d: &Array2<f64>| d.select(Axis(0), rows).select(Axis(1), rows);
                Ok(silhouette_score_precomputed(sub(&dt).view(), &l)?
                    - silhouette_score_precomputed(sub(&db).view(), &l)?)
            })
        })
        .transpose()?;
    Ok(Change::new(
        base_v,
        tuned_v,
        ci,
        p,
        TestMethod::PairedPermutation,
        n_perm,
        m,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn small_cfg() -> CompareConfig {
        CompareConfig {
            bootstrap: Some(BootstrapConfig {
                n_resamples: 200,
                ..BootstrapConfig::default()
            }),
            permutations_kg: 199,
            permutations_probe: 39,
            permutations_silhouette: 9,
            tsne: TsneConfig {
                perplexity: 5.0,
                max_iter: 250,
                ..TsneConfig::default()
            },
            projection_rows: 40,
            ..CompareConfig::default()
        }
    }

    /// Noisy rows around `(1, ..., 1)`; class 1 is moved by `shift` along
    /// `(1, -1, 1, -1, ...)` (a new direction, which unit normalisation keeps).
    fn embeddings(n: usize, d: usize, shift: f32, seed: u64) -> (Array2<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let noise: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
            labels[i] as f32 * shift * sign + noise * 0.5 + 1.0
        });
        (x, labels)
    }

    #[test]
    fn sign_flip_p_is_symmetric_and_bounded() {
        for (b, c) in [(0, 0), (1, 0), (5, 2), (40, 60), (0, 25)] {
            let p = exact_sign_flip_p(b, c);
            assert_eq!(p, exact_sign_flip_p(c, b));
            assert!(p > 0.0 && p <= 1.0);
        }
        assert_eq!(exact_sign_flip_p(1, 0), 1.0);
        assert!(exact_sign_flip_p(0, 25) < 1e-6);
    }

    #[test]
    fn identical_predictions_give_p_one_and_zero_interval() {
        let labels: Vec<usize> = (0..100).map(|i| i % 2).collect();
        let pred: Vec<usize> = (0..100).map(|i| (i / 3) % 2).collect();
        let c = accuracy_change(&labels, &pred, &pred, Some(&BootstrapConfig::default())).unwrap();
        assert_eq!(c.diff, 0.0);
        assert_eq!(c.p_value, Some(1.0));
        let ci = c.diff_ci.unwrap();
        assert_eq!((ci.lower, ci.upper), (0.0, 0.0));
    }

    #[test]
    fn accuracy_gain_is_significant_and_covered() {
        // base right on every other row, tuned right on 90 of 100
        let labels = vec![1usize; 100];
        let base: Vec<usize> = (0..100).map(|i| i % 2).collect();
        let tuned: Vec<usize> = (0..100).map(|i| usize::from(i % 10 != 0)).collect();
        let c = accuracy_change(&labels, &base, &tuned, Some(&BootstrapConfig::default())).unwrap();
        assert!((c.base - 0.5).abs() < 1e-12 && (c.tuned - 0.9).abs() < 1e-12);
        assert!((c.diff - 0.4).abs() < 1e-12);
        assert!((c.diff_pct.unwrap() - 80.0).abs() < 1e-9);
        assert!(c.p_value.unwrap() < 1e-8, "p = {:?}", c.p_value);
        let ci = c.diff_ci.unwrap();
        assert!(ci.lower > 0.25 && ci.upper < 0.55 && ci.lower < 0.4 && 0.4 < ci.upper);
    }

    #[test]
    fn bootstrap_interval_covers_the_true_difference_most_of_the_time() {
        // Two models with true accuracies 0.6 and 0.7 (independent errors): the 95%
        // interval of the observed difference should cover 0.1 in about 95% of trials.
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 300;
        let labels = vec![1usize; n];
        let boot = BootstrapConfig {
            n_resamples: 300,
            ..BootstrapConfig::default()
        };
        let trials = 60;
        let mut covered = 0;
        for t in 0..trials {
            let base: Vec<usize> = (0..n)
                .map(|_| usize::from(rng.random::<f64>() < 0.6))
                .collect();
            let tuned: Vec<usize> = (0..n)
                .map(|_| usize::from(rng.random::<f64>() < 0.7))
                .collect();
            let b = BootstrapConfig {
                seed: t,
                ..boot.clone()
            };
            let ci = accuracy_change(&labels, &base, &tuned, Some(&b))
                .unwrap()
                .diff_ci
                .unwrap();
            if ci.lower <= 0.1 && 0.1 <= ci.upper {
                covered += 1;
            }
        }
        // Binomial(60, 0.95): fewer than 50 covered has probability < 0.2%.
        assert!(covered >= 50, "covered {covered} of {trials}");
    }

    #[test]
    fn null_accuracy_p_values_are_roughly_uniform() {
        // Both models are coin flips: p < 0.05 should happen in about 5% of trials.
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let labels = vec![1usize; 200];
        let mut small = 0;
        for _ in 0..200 {
            let a: Vec<usize> = (0..200)
                .map(|_| usize::from(rng.random::<bool>()))
                .collect();
            let b: Vec<usize> = (0..200)
                .map(|_| usize::from(rng.random::<bool>()))
                .collect();
            if accuracy_change(&labels, &a, &b, None)
                .unwrap()
                .p_value
                .unwrap()
                < 0.05
            {
                small += 1;
            }
        }
        assert!(small <= 20, "{small} of 200 null trials had p < 0.05");
    }

    #[test]
    fn roc_auc_change_detects_a_better_score() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let labels: Vec<usize> = (0..200).map(|i| i % 2).collect();
        let base: Vec<f64> = (0..200).map(|_| rng.random::<f64>()).collect();
        let tuned: Vec<f64> = labels
            .iter()
            .map(|&l| l as f64 + rng.random::<f64>() * 0.8)
            .collect();
        let c = roc_auc_change(
            &labels,
            &base,
            &tuned,
            Some(&BootstrapConfig::default()),
            199,
            42,
        )
        .unwrap();
        assert!(c.tuned > 0.95 && c.base < 0.65);
        assert!((c.p_value.unwrap() - 1.0 / 200.0).abs() < 1e-12);
        assert!(c.diff_ci.unwrap().lower > 0.2);
        let same = roc_auc_change(&labels, &base, &base, None, 99, 42).unwrap();
        assert_eq!(same.p_value, Some(1.0));
    }

    #[test]
    fn embedding_measures_identical_inputs_give_p_one() {
        let (x, labels) = embeddings(40, 6, 0.8, 1);
        let cfg = small_cfg();
        let kg = kg_separation_change(x.view(), x.view(), &labels, &cfg).unwrap();
        assert_eq!(kg.diff, 0.0);
        assert_eq!(kg.p_value, Some(1.0));
        let ci = kg.diff_ci.unwrap();
        assert_eq!((ci.lower, ci.upper), (0.0, 0.0));
        let probe = probe_accuracy_change(x.view(), x.view(), &labels, &cfg).unwrap();
        assert_eq!(probe.p_value, Some(1.0));
        let sil = silhouette_tsne_change(x.view(), x.view(), &labels, None, &cfg).unwrap();
        assert_eq!(sil.diff, 0.0);
        assert_eq!(sil.p_value, Some(1.0));
    }

    /// Centred noise; with `tight`, class 1 rows sit close to `(3, 0, ..., 0)` instead
    /// (mean cosine among them near 1, among class 0 rows near 0).
    fn kg_embeddings(n: usize, d: usize, tight: bool, seed: u64) -> (Array2<f32>, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let x = Array2::from_shape_fn((n, d), |(i, j)| {
            let noise: f32 = (0..4).map(|_| rng.random::<f32>() - 0.5).sum();
            if tight && labels[i] == 1 {
                let axis = if j == 0 { 3.0 } else { 0.0 };
                axis + 0.2 * noise
            } else {
                noise
            }
        });
        (x, labels)
    }

    #[test]
    fn embedding_measures_large_shift_gives_small_p() {
        let cfg = small_cfg();
        // KG separation: the true rows become tight after tuning.
        let (kb, kl) = kg_embeddings(40, 6, false, 8);
        let (kt, _) = kg_embeddings(40, 6, true, 9);
        let kg = kg_separation_change(kb.view(), kt.view(), &kl, &cfg).unwrap();
        assert!(kg.tuned > 0.5 && kg.base < 0.2, "{kg:?}");
        // Probe and silhouette: classes overlap (shift 0) before, far apart (shift 4) after.
        let (xb, labels) = embeddings(40, 6, 0.0, 2);
        let (xt, _) = embeddings(40, 6, 4.0, 3);
        assert!(kg.diff > 0.0);
        assert!(kg.p_value.unwrap() <= 0.01, "KG p = {:?}", kg.p_value);
        assert!(kg.diff_ci.unwrap().lower > 0.0);
        let probe = probe_accuracy_change(xb.view(), xt.view(), &labels, &cfg).unwrap();
        assert!(probe.tuned > 0.9 && probe.diff > 0.2);
        assert!(
            (probe.p_value.unwrap() - 1.0 / 40.0).abs() < 1e-12,
            "probe p = {:?}",
            probe.p_value
        );
        let sil = silhouette_tsne_change(xb.view(), xt.view(), &labels, None, &cfg).unwrap();
        assert!(sil.tuned > sil.base + 0.2, "{sil:?}");
        assert!(
            (sil.p_value.unwrap() - 0.1).abs() < 1e-12,
            "silhouette p = {:?}",
            sil.p_value
        );
    }

    #[test]
    fn given_projections_are_used_and_checked() {
        let (xb, labels) = embeddings(40, 6, 0.5, 4);
        let (xt, _) = embeddings(40, 6, 2.0, 5);
        let cfg = CompareConfig {
            permutations_silhouette: 0,
            ..small_cfg()
        };
        let pb = tsne(xb.view(), &cfg.tsne).unwrap();
        let pt = tsne(xt.view(), &cfg.tsne).unwrap();
        let rows = |a: &Array2<f64>| a.outer_iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        let (rb, rt) = (rows(&pb), rows(&pt));
        let given =
            silhouette_tsne_change(xb.view(), xt.view(), &labels, Some((&rb, &rt)), &cfg).unwrap();
        let computed = silhouette_tsne_change(xb.view(), xt.view(), &labels, None, &cfg).unwrap();
        assert_eq!(given.diff, computed.diff);
        assert!(given.p_value.is_none() && given.n_permutations.is_none());
        let short = &rb[..10];
        assert!(
            silhouette_tsne_change(xb.view(), xt.view(), &labels, Some((short, &rt)), &cfg)
                .is_err()
        );
    }

    #[test]
    fn mismatched_rows_are_errors() {
        let labels = vec![0usize, 1, 0];
        assert!(accuracy_change(&labels, &[0, 1], &[0, 1, 0], None).is_err());
        let (x, l) = embeddings(10, 3, 1.0, 6);
        let (y, _) = embeddings(12, 3, 1.0, 7);
        assert!(kg_separation_change(x.view(), y.view(), &l, &small_cfg()).is_err());
    }
}
