//! Embedding-geometry measures for BioAlign, exact, fast and importable.
//!
//! The reference study's claim rests on three measures of how a model's
//! embeddings of gene-disease statements reorganise after fine-tuning
//! (`SPEC.md` section 3). This crate computes them exactly as defined, fixes
//! their flaws and adds the statistics the study lacked:
//!
//! | measure | function | reference |
//! | --- | --- | --- |
//! | KG separation (reference, signed, off-diagonal) | [`kg_separation`] | O(n d) via unit-vector sums |
//! | linear probe, 70/30 split, seed 42 | [`linear_probe`], [`linear_probe_cv`] | scikit-learn `LogisticRegression(C=1, lbfgs)` |
//! | silhouette (cosine, Euclidean, precomputed) | [`silhouette_score`], [`silhouette_both`] | `sklearn.metrics.silhouette_score` |
//! | PCA, t-SNE projections | [`pca`], [`tsne`] | linfa-reduction, linfa-tsne |
//! | accuracy, precision / recall / F1, confusion, ROC-AUC | [`classification_report`], [`roc_auc`] | `sklearn.metrics` |
//! | bootstrap intervals, paired permutation test | [`bootstrap_ci`], [`classification_intervals`], [`kg_separation_ci`], [`paired_permutation_test`] | percentile bootstrap; Phipson & Smyth p-value |
//! | link prediction, RSA, linear CKA, per layer | [`link_prediction`], [`rsa_spearman`], [`linear_cka`], [`per_layer`] | beyond the study |
//! | everything at once | [`evaluate`], [`layer_profile`] | |
//!
//! Inputs are `ndarray` views of f32 embeddings (`[n, d]`, one row per
//! statement) and class labels as `usize` (binary measures: 1 = true
//! statement, 0 = false). Hyper-parameters are plain structs with a
//! `validate` method; results are serde structs. Bad input (NaN, zero-norm
//! rows where cosines are needed, length mismatches, one class only, too few
//! rows) is an [`Error`], never a panic.
//!
//! With the `plots` feature, [`plots`] draws the projections, metric bars and
//! confusion matrices as PNG (through `bioalign-plot`).
//!
//! The crate depends on ndarray and linfa only (no burn), so other projects
//! can import it cheaply.
//!
//! ```
//! use ndarray::array;
//! let x = array![[1.0f32, 0.2], [0.9, 0.1], [0.1, 1.0], [0.2, 0.8]];
//! let labels = [1, 1, 0, 0];
//! let sep = bioalign_metrics::kg_separation(x.view(), &labels)?;
//! assert!(sep.offdiag_mean_cos_true > 0.99);
//! # Ok::<(), bioalign_metrics::Error>(())
//! ```

pub mod alignment;
mod check;
pub mod classification;
pub mod error;
pub mod npy;
#[cfg(feature = "plots")]
pub mod plots;
pub mod probe;
pub mod projection;
pub mod separation;
pub mod silhouette;
pub mod split;
pub mod stats;
pub mod suite;

pub use alignment::{
    LinkPrediction, Rsa, entity_centroids, jaccard, linear_cka, link_prediction, per_layer,
    row_cosines, rsa_spearman, spearman,
};
pub use classification::{
    ClassScores, ClassificationReport, ConfusionMatrix, Prf, ZeroDivision, accuracy, average_ranks,
    classification_report, confusion_matrix, roc_auc,
};
pub use error::{Error, Result};
pub use npy::{NpyArray, NpyData};
pub use probe::{
    CrossValidation, ProbeConfig, ProbeResult, linear_probe, linear_probe_cv, linear_probe_on_split,
};
pub use projection::{TsneConfig, pca, tsne};
pub use separation::{KgSeparation, kg_separation};
pub use silhouette::{
    Distance, Silhouette, euclidean_distances, silhouette_both, silhouette_samples,
    silhouette_samples_f64, silhouette_score, silhouette_score_f64, silhouette_score_precomputed,
};
pub use split::{NumpyRandomState, Split, stratified_k_fold, train_test_split};
pub use stats::{
    BootstrapConfig, ClassificationIntervals, ConfidenceInterval, PermutationConfig,
    PermutationTest, bootstrap_ci, bootstrap_ci_stratified, classification_intervals,
    paired_permutation_test, percentile,
};
pub use suite::{
    LayerMeasures, ProbeSummary, SuiteConfig, SuiteReport, evaluate, kg_separation_ci,
    layer_profile,
};
