//! Linear probe: how well a logistic regression separates the true from the
//! false statements in the embedding space.
//!
//! The reference protocol is scikit-learn's `LogisticRegression(penalty="l2",
//! C=1, solver="lbfgs", max_iter=1000)` fitted on the 70% side of
//! `train_test_split(test_size=0.3, random_state=42)` and scored on the 30%
//! side. The split is reproduced exactly (see [`crate::split`]); the model is
//! linfa-logistic's L-BFGS fit of the same objective.
//!
//! Mapping of the penalty: scikit-learn minimises `C * sum(log-loss) +
//! ||w||^2 / 2`, linfa-logistic `sum(log-loss) + alpha * ||w||^2 / 2`; both
//! leave the intercept unpenalised, so `alpha = 1 / C`. scikit-learn's `tol`
//! bounds the gradient of the loss divided by the number of rows; linfa's
//! `gradient_tolerance` bounds the gradient of the summed loss, so it is set to
//! `tol * n_train`.

use linfa::Dataset;
use linfa::traits::Fit;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::classification::{accuracy, roc_auc};
use crate::error::{Error, Result, invalid};
use crate::split::{Split, stratified_k_fold, train_test_split};

/// Hyper-parameters of the probe; the defaults are the reference protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeConfig {
    /// Fraction of rows held out for testing (reference: 0.3).
    pub test_fraction: f64,
    /// Seed of the numpy-compatible split (reference: 42).
    pub seed: u32,
    /// Inverse regularisation strength, scikit-learn's `C` (reference: 1.0).
    pub c: f64,
    /// Maximum L-BFGS iterations (reference: 1000).
    pub max_iter: u64,
    /// scikit-learn's `tol` (default 1e-4), scaled as the module docs say.
    pub tol: f64,
    /// Folds of the stratified cross-validation (default 5).
    pub folds: usize,
    /// Seed to shuffle the folds with (`None`: scikit-learn's default, no shuffle).
    pub fold_seed: Option<u32>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            test_fraction: 0.3,
            seed: 42,
            c: 1.0,
            max_iter: 1000,
            tol: 1e-4,
            folds: 5,
            fold_seed: None,
        }
    }
}

impl ProbeConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(self.test_fraction > 0.0 && self.test_fraction < 1.0) {
            return Err(invalid(
                "test_fraction",
                self.test_fraction,
                "a number in (0, 1)",
            ));
        }
        if !(self.c.is_finite() && self.c > 0.0) {
            return Err(invalid("c", self.c, "a finite number > 0"));
        }
        if self.max_iter == 0 {
            return Err(invalid("max_iter", self.max_iter, "at least 1"));
        }
        if !(self.tol.is_finite() && self.tol > 0.0) {
            return Err(invalid("tol", self.tol, "a finite number > 0"));
        }
        if self.folds < 2 {
            return Err(invalid("folds", self.folds, "at least 2"));
        }
        Ok(())
    }
}

/// Result of one probe fit scored on held-out rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Accuracy on the test rows.
    pub accuracy: f64,
    /// ROC-AUC of the predicted probability of class 1 on the test rows.
    pub roc_auc: f64,
    /// Rows fitted on.
    pub n_train: usize,
    /// Test rows, in split order.
    pub test_indices: Vec<usize>,
    /// Predicted label per test row.
    pub predictions: Vec<usize>,
    /// Predicted probability of label 1 per test row.
    pub scores: Vec<f64>,
}

/// Per-fold and summary results of stratified k-fold cross-validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidation {
    /// Accuracy per fold.
    pub fold_accuracy: Vec<f64>,
    /// ROC-AUC per fold.
    pub fold_roc_auc: Vec<f64>,
    /// Mean accuracy over folds.
    pub mean_accuracy: f64,
    /// Population standard deviation of the fold accuracies (numpy's `std`).
    pub std_accuracy: f64,
    /// Mean ROC-AUC over folds.
    pub mean_roc_auc: f64,
    /// Population standard deviation of the fold ROC-AUCs.
    pub std_roc_auc: f64,
}

fn check_inputs(x: ArrayView2<'_, f32>, labels: &[usize]) -> Result<()> {
    check::finite_matrix("linear probe embeddings", x)?;
    check::same_len(
        "linear probe: embeddings rows vs labels",
        x.nrows(),
        labels.len(),
    )?;
    check::both_classes("linear probe", labels, 1)?;
    Ok(())
}

/// The reference probe: split with [`train_test_split`], fit, score.
///
/// ```
/// use ndarray::Array2;
/// use bioalign_metrics::{linear_probe, ProbeConfig};
/// // two well separated clouds
/// let x = Array2::from_shape_fn((40, 3), |(i, j)| (i % 2) as f32 * 4.0 + ((i * 7 + j) % 5) as f32 * 0.1);
/// let labels: Vec<usize> = (0..40).map(|i| i % 2).collect();
/// let r = linear_probe(x.view(), &labels, &ProbeConfig::default())?;
/// assert_eq!(r.test_indices.len(), 12);
/// assert_eq!(r.accuracy, 1.0);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn linear_probe(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &ProbeConfig,
) -> Result<ProbeResult> {
    cfg.validate()?;
    check_inputs(x, labels)?;
    let split = train_test_split(x.nrows(), cfg.test_fraction, cfg.seed)?;
    probe_on_split(x, labels, &split, cfg)
}

/// Fits on `split.train` and scores on `split.test`.
///
/// Errors besides bad input: a train side with one class only, a test side
/// with one class only (ROC-AUC undefined), indices out of range.
pub fn linear_probe_on_split(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    split: &Split,
    cfg: &ProbeConfig,
) -> Result<ProbeResult> {
    cfg.validate()?;
    check_inputs(x, labels)?;
    probe_on_split(x, labels, split, cfg)
}

fn gather(x: ArrayView2<'_, f32>, rows: &[usize]) -> Result<Array2<f64>> {
    let d = x.ncols();
    let mut out = Array2::<f64>::zeros((rows.len(), d));
    for (o, &i) in rows.iter().enumerate() {
        if i >= x.nrows() {
            return Err(Error::LengthMismatch {
                what: "linear probe: split index beyond the embeddings",
                expected: x.nrows(),
                found: i + 1,
            });
        }
        out.row_mut(o).assign(&x.row(i).mapv(f64::from));
    }
    Ok(out)
}

fn probe_on_split(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    split: &Split,
    cfg: &ProbeConfig,
) -> Result<ProbeResult> {
    let xtr = gather(x, &split.train)?;
    let xte = gather(x, &split.test)?;
    let ytr: Array1<usize> = split.train.iter().map(|&i| labels[i]).collect();
    let yte: Vec<usize> = split.test.iter().map(|&i| labels[i]).collect();
    check::both_classes(
        "linear probe (train side)",
        ytr.as_slice().unwrap_or(&[]),
        1,
    )?;
    check::both_classes("linear probe (test side)", &yte, 1)?;
    let n_train = split.train.len();
    let model = LogisticRegression::default()
        .alpha(1.0 / cfg.c)
        .max_iterations(cfg.max_iter)
        .gradient_tolerance(cfg.tol * n_train as f64)
        .fit(&Dataset::new(xtr, ytr))
        .map_err(|e| Error::Algorithm {
            what: "logistic regression",
            message: e.to_string(),
        })?;
    let p = model.predict_probabilities(&xte);
    // linfa's "positive" class is the larger one; turn it into P(label = 1)
    let flip = model.labels().pos.class != 1;
    let scores: Vec<f64> = p.iter().map(|&v| if flip { 1.0 - v } else { v }).collect();
    // scikit-learn predicts 1 when the decision function is > 0, i.e. P(1) > 0.5
    let predictions: Vec<usize> = scores.iter().map(|&s| usize::from(s > 0.5)).collect();
    Ok(ProbeResult {
        accuracy: accuracy(&yte, &predictions)?,
        roc_auc: roc_auc(&yte, &scores)?,
        n_train,
        test_indices: split.test.clone(),
        predictions,
        scores,
    })
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

/// Stratified k-fold cross-validation of the probe ([`stratified_k_fold`] with
/// `cfg.folds` and `cfg.fold_seed`).
pub fn linear_probe_cv(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &ProbeConfig,
) -> Result<CrossValidation> {
    cfg.validate()?;
    check_inputs(x, labels)?;
    let folds = stratified_k_fold(labels, cfg.folds, cfg.fold_seed)?;
    let mut acc = Vec::with_capacity(folds.len());
    let mut auc = Vec::with_capacity(folds.len());
    for split in &folds {
        let r = probe_on_split(x, labels, split, cfg)?;
        acc.push(r.accuracy);
        auc.push(r.roc_auc);
    }
    let (mean_accuracy, std_accuracy) = mean_std(&acc);
    let (mean_roc_auc, std_roc_auc) = mean_std(&auc);
    Ok(CrossValidation {
        fold_accuracy: acc,
        fold_roc_auc: auc,
        mean_accuracy,
        std_accuracy,
        mean_roc_auc,
        std_roc_auc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_name_the_field() {
        let bad = ProbeConfig {
            c: 0.0,
            ..ProbeConfig::default()
        };
        match bad.validate() {
            Err(Error::InvalidParam { field, .. }) => assert_eq!(field, "c"),
            other => panic!("{other:?}"),
        }
        let bad = ProbeConfig {
            folds: 1,
            ..ProbeConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidParam { field: "folds", .. })
        ));
    }

    #[test]
    fn too_few_rows_for_the_split_is_an_error() {
        let x = Array2::from_shape_fn((3, 2), |(i, j)| (i + j) as f32);
        let r = linear_probe(x.view(), &[0, 1, 0], &ProbeConfig::default());
        // 3 rows: the 1-row test side cannot hold both classes
        assert!(matches!(r, Err(Error::TooFewClasses { .. })), "{r:?}");
    }
}
