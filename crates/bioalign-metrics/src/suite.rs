//! The whole metric suite in one call: what the reference measured (KG
//! separation, probe accuracy, silhouette on a 2-D t-SNE of the first 400
//! rows) plus what it lacked (ROC-AUC, cross-validation, off-diagonal and
//! signed separation, silhouette on the raw embeddings and on PCA, bootstrap
//! intervals).
//!
//! t-SNE, the slowest part, runs on its own thread beside the rest.

use ndarray::{Array2, ArrayView2, ArrayView3, s};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result, invalid};
use crate::probe::{CrossValidation, ProbeConfig, linear_probe, linear_probe_cv};
use crate::projection::{TsneConfig, pca, tsne};
use crate::separation::{KgSeparation, kg_separation};
use crate::silhouette::{Silhouette, euclidean_distances, silhouette_both, silhouette_of_rows};
use crate::stats::{BootstrapConfig, ConfidenceInterval, bootstrap_ci, bootstrap_ci_stratified};
use crate::{ConfusionMatrix, accuracy, confusion_matrix, roc_auc};

/// What [`evaluate`] computes and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteConfig {
    /// The probe protocol (default: the reference's).
    pub probe: ProbeConfig,
    /// Also run stratified k-fold cross-validation of the probe.
    pub cross_validate: bool,
    /// t-SNE settings. A perplexity too large for the projected rows is lowered to
    /// what they allow ([`TsneConfig::for_rows`]); the report says which was used.
    pub tsne: TsneConfig,
    /// Rows projected (the first ones; reference: 400). Capped at `n`.
    pub projection_rows: usize,
    /// Silhouette of the labels on the raw embeddings (cosine and Euclidean).
    pub raw_silhouette: bool,
    /// PCA projection and its silhouette.
    pub pca: bool,
    /// Bootstrap intervals (`None`: none).
    pub bootstrap: Option<BootstrapConfig>,
}

impl Default for SuiteConfig {
    fn default() -> Self {
        Self {
            probe: ProbeConfig::default(),
            cross_validate: true,
            tsne: TsneConfig::default(),
            projection_rows: 400,
            raw_silhouette: true,
            pca: true,
            bootstrap: Some(BootstrapConfig::default()),
        }
    }
}

impl SuiteConfig {
    /// Only what the reference study computed: KG separation, the 70/30 probe
    /// and the silhouette of a 2-D t-SNE of the first 400 rows.
    pub fn reference() -> Self {
        Self {
            cross_validate: false,
            raw_silhouette: false,
            pca: false,
            bootstrap: None,
            ..Self::default()
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        self.probe.validate()?;
        self.tsne.validate()?;
        if let Some(b) = &self.bootstrap {
            b.validate()?;
        }
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

/// Probe figures on the reference split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ProbeSummary {
    /// Test accuracy.
    pub accuracy: f64,
    /// Test ROC-AUC.
    pub roc_auc: f64,
    /// Rows fitted on.
    pub n_train: usize,
    /// Rows tested on.
    pub n_test: usize,
}

/// Everything [`evaluate`] measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteReport {
    /// Rows.
    pub n_rows: usize,
    /// Embedding width.
    pub dim: usize,
    /// Rows labelled 1.
    pub n_true: usize,
    /// Rows labelled 0.
    pub n_false: usize,
    /// KG separation, all variants.
    pub kg_separation: KgSeparation,
    /// Interval of the reference separation (stratified bootstrap).
    pub kg_separation_ci: Option<ConfidenceInterval>,
    /// Interval of the signed separation.
    pub kg_separation_signed_ci: Option<ConfidenceInterval>,
    /// The probe on the reference split.
    pub probe: ProbeSummary,
    /// Confusion matrix of the probe on the test rows.
    pub probe_confusion: ConfusionMatrix,
    /// Interval of the probe accuracy (bootstrap over test rows).
    pub probe_accuracy_ci: Option<ConfidenceInterval>,
    /// Interval of the probe ROC-AUC (bootstrap over test rows).
    pub probe_roc_auc_ci: Option<ConfidenceInterval>,
    /// Stratified cross-validation of the probe.
    pub probe_cv: Option<CrossValidation>,
    /// Silhouette on the raw embeddings.
    pub silhouette: Option<Silhouette>,
    /// Rows projected.
    pub projection_rows: usize,
    /// The t-SNE perplexity used: the configured one, lowered where the projected rows
    /// are too few for it (`rows - 1 >= 3 * perplexity`). `None` in reports written
    /// before this field.
    #[serde(default)]
    pub tsne_perplexity: Option<f64>,
    /// Silhouette (Euclidean) of the labels on the t-SNE projection, the reference's measure.
    pub silhouette_tsne: f64,
    /// Its interval (bootstrap over projected rows).
    pub silhouette_tsne_ci: Option<ConfidenceInterval>,
    /// Silhouette (Euclidean) on the PCA projection.
    pub silhouette_pca: Option<f64>,
    /// t-SNE coordinates of the projected rows.
    pub tsne: Vec<Vec<f64>>,
    /// PCA coordinates of the projected rows (2 components).
    pub pca: Option<Vec<Vec<f64>>>,
}

fn rows_of(a: &Array2<f64>) -> Vec<Vec<f64>> {
    a.outer_iter().map(|r| r.to_vec()).collect()
}

struct ProjectionPart {
    /// The perplexity the projection ran at ([`TsneConfig::for_rows`]).
    perplexity: f64,
    tsne: Array2<f64>,
    silhouette_tsne: f64,
    silhouette_tsne_ci: Option<ConfidenceInterval>,
    pca: Option<Array2<f64>>,
    silhouette_pca: Option<f64>,
}

fn projection_part(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &SuiteConfig,
) -> Result<ProjectionPart> {
    let tsne_cfg = cfg.tsne.for_rows(x.nrows());
    let t = tsne(x, &tsne_cfg)?;
    let dist = euclidean_distances(t.view());
    let all: Vec<usize> = (0..labels.len()).collect();
    let silhouette_tsne = silhouette_of_rows(dist.view(), labels, &all)?;
    let silhouette_tsne_ci = cfg
        .bootstrap
        .as_ref()
        .map(|b| {
            bootstrap_ci(labels.len(), b, |rows| {
                silhouette_of_rows(dist.view(), labels, rows)
            })
        })
        .transpose()?;
    let (pca, silhouette_pca) = if cfg.pca {
        let p = pca(x, 2)?;
        let d = euclidean_distances(p.view());
        let s = silhouette_of_rows(d.view(), labels, &all)?;
        (Some(p), Some(s))
    } else {
        (None, None)
    };
    Ok(ProjectionPart {
        perplexity: tsne_cfg.perplexity,
        tsne: t,
        silhouette_tsne,
        silhouette_tsne_ci,
        pca,
        silhouette_pca,
    })
}

/// KG separation with stratified-bootstrap intervals of the reference and the
/// signed value, `[separation, signed]`.
///
/// Each resample costs O(n_true^2 + n_false^2) through the Gram matrix of the
/// unit rows (computed once, O(n^2 d), so meant for n up to a few thousand).
pub fn kg_separation_ci(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &BootstrapConfig,
) -> Result<[ConfidenceInterval; 2]> {
    kg_separation(x, labels)?; // validates everything
    let mut unit = x.mapv(f64::from);
    for mut r in unit.outer_iter_mut() {
        let n = r.dot(&r).sqrt();
        r /= n;
    }
    let gram = unit.dot(&unit.t());
    let n = labels.len();
    let stat = |rows: &[usize]| -> (f64, f64) {
        let mut counts = vec![0u32; n];
        for &i in rows {
            counts[i] += 1;
        }
        // ||sum_i c_i u_i||^2 = sum_ab c_a c_b G_ab over the distinct rows of each class
        let mut members: [Vec<(usize, f64)>; 2] = [Vec::new(), Vec::new()];
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 {
                members[labels[i]].push((i, f64::from(c)));
            }
        }
        let mut norm2 = [0.0f64; 2];
        let mut size = [0usize; 2];
        for class in 0..2 {
            for &(a, ca) in &members[class] {
                let ga = gram.row(a);
                let inner: f64 = members[class].iter().map(|&(b, cb)| cb * ga[b]).sum();
                norm2[class] += ca * inner;
                size[class] += ca as usize;
            }
        }
        let s = KgSeparation::from_sums(norm2[0], size[0], norm2[1], size[1]);
        (s.separation, s.signed)
    };
    let sep = bootstrap_ci_stratified(labels, cfg, |rows| Ok(stat(rows).0))?;
    let signed = bootstrap_ci_stratified(labels, cfg, |rows| Ok(stat(rows).1))?;
    Ok([sep, signed])
}

/// Runs the suite on embeddings `x` (`[n, d]`) with binary `labels` (1 = true statement).
///
/// ```
/// use ndarray::Array2;
/// use bioalign_metrics::{evaluate, SuiteConfig, TsneConfig, BootstrapConfig};
/// let x = Array2::from_shape_fn((60, 6), |(i, j)| (i % 2) as f32 * 2.0 + ((i * 5 + j * 3) % 7) as f32 * 0.3 + 0.5);
/// let labels: Vec<usize> = (0..60).map(|i| i % 2).collect();
/// let cfg = SuiteConfig {
///     tsne: TsneConfig { perplexity: 10.0, max_iter: 250, ..TsneConfig::default() },
///     bootstrap: Some(BootstrapConfig { n_resamples: 50, ..BootstrapConfig::default() }),
///     ..SuiteConfig::default()
/// };
/// let r = evaluate(x.view(), &labels, &cfg)?;
/// assert_eq!(r.probe.n_test, 18);
/// assert!(r.probe.accuracy > 0.9);
/// assert!(r.kg_separation_ci.unwrap().lower <= r.kg_separation.separation);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn evaluate(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &SuiteConfig,
) -> Result<SuiteReport> {
    cfg.validate()?;
    check::finite_matrix("suite embeddings", x)?;
    let sep = kg_separation(x, labels)?;
    let m = cfg.projection_rows.min(x.nrows());
    let xp = x.slice(s![..m, ..]);
    let lp = &labels[..m];
    if check::both_classes("suite: projected rows", lp, 1).is_err() {
        return Err(Error::TooFewClasses {
            what: "suite: the projected rows hold one class",
            needed: 2,
            found: 1,
        });
    }
    let (projection, rest) = std::thread::scope(|scope| {
        let proj = scope.spawn(|| projection_part(xp, lp, cfg));
        let rest = main_part(x, labels, cfg);
        (
            proj.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            rest,
        )
    });
    let projection = projection?;
    let (kg_ci, probe_part, silhouette) = rest?;
    let (probe, probe_confusion, probe_accuracy_ci, probe_roc_auc_ci, probe_cv) = probe_part;
    Ok(SuiteReport {
        n_rows: x.nrows(),
        dim: x.ncols(),
        n_true: sep.n_true,
        n_false: sep.n_false,
        kg_separation: sep,
        kg_separation_ci: kg_ci.map(|c| c[0]),
        kg_separation_signed_ci: kg_ci.map(|c| c[1]),
        probe,
        probe_confusion,
        probe_accuracy_ci,
        probe_roc_auc_ci,
        probe_cv,
        silhouette,
        projection_rows: m,
        tsne_perplexity: Some(projection.perplexity),
        silhouette_tsne: projection.silhouette_tsne,
        silhouette_tsne_ci: projection.silhouette_tsne_ci,
        silhouette_pca: projection.silhouette_pca,
        tsne: rows_of(&projection.tsne),
        pca: projection.pca.as_ref().map(rows_of),
    })
}

type ProbePart = (
    ProbeSummary,
    ConfusionMatrix,
    Option<ConfidenceInterval>,
    Option<ConfidenceInterval>,
    Option<CrossValidation>,
);

fn main_part(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    cfg: &SuiteConfig,
) -> Result<(
    Option<[ConfidenceInterval; 2]>,
    ProbePart,
    Option<Silhouette>,
)> {
    let kg_ci = cfg
        .bootstrap
        .as_ref()
        .map(|b| kg_separation_ci(x, labels, b))
        .transpose()?;
    let silhouette = if cfg.raw_silhouette {
        Some(silhouette_both(x, labels)?)
    } else {
        None
    };
    let p = linear_probe(x, labels, &cfg.probe)?;
    let y: Vec<usize> = p.test_indices.iter().map(|&i| labels[i]).collect();
    let (acc_ci, auc_ci) = match &cfg.bootstrap {
        Some(b) => {
            let acc = bootstrap_ci(y.len(), b, |rows| {
                let t: Vec<usize> = rows.iter().map(|&r| y[r]).collect();
                let q: Vec<usize> = rows.iter().map(|&r| p.predictions[r]).collect();
                accuracy(&t, &q)
            })?;
            let auc = bootstrap_ci(y.len(), b, |rows| {
                let t: Vec<usize> = rows.iter().map(|&r| y[r]).collect();
                let q: Vec<f64> = rows.iter().map(|&r| p.scores[r]).collect();
                roc_auc(&t, &q)
            })?;
            (Some(acc), Some(auc))
        }
        None => (None, None),
    };
    let cv = if cfg.cross_validate {
        Some(linear_probe_cv(x, labels, &cfg.probe)?)
    } else {
        None
    };
    let summary = ProbeSummary {
        accuracy: p.accuracy,
        roc_auc: p.roc_auc,
        n_train: p.n_train,
        n_test: p.test_indices.len(),
    };
    let confusion = confusion_matrix(&y, &p.predictions)?;
    Ok((kg_ci, (summary, confusion, acc_ci, auc_ci, cv), silhouette))
}

/// Measures of one layer (see [`layer_profile`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMeasures {
    /// Layer index (0 = first in the input).
    pub layer: usize,
    /// KG separation of this layer.
    pub kg_separation: KgSeparation,
    /// Probe on the reference split.
    pub probe: ProbeSummary,
    /// Silhouette of the labels on this layer's raw embeddings.
    pub silhouette: Silhouette,
}

/// KG separation, the probe and the raw silhouette for every layer of
/// `layers` (`[L, n, d]`).
pub fn layer_profile(
    layers: ArrayView3<'_, f32>,
    labels: &[usize],
    probe: &ProbeConfig,
) -> Result<Vec<LayerMeasures>> {
    crate::alignment::per_layer(layers, |layer, x| {
        let p = linear_probe(x, labels, probe)?;
        Ok(LayerMeasures {
            layer,
            kg_separation: kg_separation(x, labels)?,
            probe: ProbeSummary {
                accuracy: p.accuracy,
                roc_auc: p.roc_auc,
                n_train: p.n_train,
                n_test: p.test_indices.len(),
            },
            silhouette: silhouette_both(x, labels)?,
        })
    })
}
