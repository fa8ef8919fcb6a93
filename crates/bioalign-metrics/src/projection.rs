//! 2-D projections of embeddings: PCA (linfa-reduction) and Barnes-Hut t-SNE
//! (linfa-tsne), both seeded so a run is reproducible.
//!
//! They do not reproduce scikit-learn's coordinates (different solvers and
//! random streams); what is compared with the reference is the silhouette of
//! the labels on the projection.

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict, Transformer};
use linfa_reduction::Pca;
use linfa_tsne::TSneParams;
use ndarray::{Array2, ArrayView2};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result, invalid};

/// Projects `x` (`[n, d]`) onto its first `n_components` principal components.
///
/// linfa's truncated SVD (LOBPCG, internally seeded with 42) on centred data;
/// the signs of the components are arbitrary, as with any PCA.
///
/// ```
/// use ndarray::array;
/// let x = array![[0.0f32, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 1.1], [3.0, 3.0, 0.9]];
/// let p = bioalign_metrics::pca(x.view(), 1)?;
/// assert_eq!(p.dim(), (4, 1));
/// // the first component is the diagonal direction: spacing sqrt(2)
/// assert!(((p[[1, 0]] - p[[0, 0]]).abs() - 2f64.sqrt()).abs() < 0.05);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn pca(x: ArrayView2<'_, f32>, n_components: usize) -> Result<Array2<f64>> {
    check::finite_matrix("PCA input", x)?;
    if n_components == 0 || n_components > x.ncols() || n_components >= x.nrows() {
        return Err(invalid(
            "n_components",
            n_components,
            "between 1 and min(d, n - 1)",
        ));
    }
    let x = x.mapv(f64::from);
    let ds = DatasetBase::from(x.clone());
    let model = Pca::params(n_components)
        .fit(&ds)
        .map_err(|e| Error::Algorithm {
            what: "PCA",
            message: e.to_string(),
        })?;
    Ok(model.predict(&x))
}

/// Hyper-parameters of t-SNE; the defaults follow scikit-learn's `TSNE`
/// (2 components, perplexity 30, 1000 iterations) with seed 42, but use the
/// exact gradient (`theta = 0`).
///
/// Why exact: linfa-tsne 0.8 delegates to `bhtsne` 0.4, whose Barnes-Hut path
/// picks vantage points with `rand::thread_rng()`, so two runs with the same
/// seed differ. The exact path is deterministic given the seed and costs
/// O(n^2) per iteration, which is cheap at the reference's 400 rows. Set
/// `theta > 0` (for instance 0.5, scikit-learn's angle) for thousands of
/// rows, accepting run-to-run variation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TsneConfig {
    /// Output dimensions (2 or 3).
    pub n_components: usize,
    /// Perplexity; needs `n - 1 >= 3 * perplexity`.
    pub perplexity: f64,
    /// Barnes-Hut angle (0 = exact t-SNE, the default; > 0 is not reproducible, see above).
    pub theta: f64,
    /// Gradient-descent iterations.
    pub max_iter: usize,
    /// Seed of the initial embedding.
    pub seed: u64,
}

impl Default for TsneConfig {
    fn default() -> Self {
        Self {
            n_components: 2,
            perplexity: 30.0,
            theta: 0.0,
            max_iter: 1000,
            seed: 42,
        }
    }
}

impl TsneConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if !(1..=3).contains(&self.n_components) {
            return Err(invalid("n_components", self.n_components, "1, 2 or 3"));
        }
        if !(self.perplexity.is_finite() && self.perplexity > 0.0) {
            return Err(invalid(
                "perplexity",
                self.perplexity,
                "a finite number > 0",
            ));
        }
        if !(self.theta.is_finite() && self.theta >= 0.0) {
            return Err(invalid("theta", self.theta, "a finite number >= 0"));
        }
        if self.max_iter < 2 {
            return Err(invalid("max_iter", self.max_iter, "at least 2"));
        }
        Ok(())
    }

    /// This configuration with the perplexity lowered, where needed, to the largest that
    /// `rows` rows allow (`rows - 1 >= 3 * perplexity`, at least 1): a small sample
    /// still gets a projection. `rows` under 4 allow none; the perplexity stays and
    /// [`tsne`] says so.
    ///
    /// ```
    /// use bioalign_metrics::TsneConfig;
    /// assert_eq!(TsneConfig::default().for_rows(400).perplexity, 30.0);
    /// assert_eq!(TsneConfig::default().for_rows(16).perplexity, 5.0);
    /// ```
    pub fn for_rows(&self, rows: usize) -> Self {
        let allowed = (rows.saturating_sub(1) / 3) as f64;
        let mut out = self.clone();
        if allowed >= 1.0 && out.perplexity > allowed {
            out.perplexity = allowed;
        }
        out
    }
}

/// Embeds `x` (`[n, d]`) in `cfg.n_components` dimensions with t-SNE.
///
/// Errors: invalid config, bad input, or too few rows for the perplexity
/// (`n - 1 < 3 * perplexity`).
///
/// ```
/// use ndarray::Array2;
/// use bioalign_metrics::{tsne, TsneConfig};
/// let x = Array2::from_shape_fn((30, 4), |(i, j)| (i % 2) as f32 * 5.0 + ((i + j) % 3) as f32);
/// let cfg = TsneConfig { perplexity: 5.0, max_iter: 300, ..TsneConfig::default() };
/// let y = tsne(x.view(), &cfg)?;
/// assert_eq!(y.dim(), (30, 2));
/// assert_eq!(y, tsne(x.view(), &cfg)?); // seeded: reproducible
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn tsne(x: ArrayView2<'_, f32>, cfg: &TsneConfig) -> Result<Array2<f64>> {
    cfg.validate()?;
    check::finite_matrix("t-SNE input", x)?;
    let n = x.nrows();
    if ((n - 1) as f64) < 3.0 * cfg.perplexity {
        return Err(Error::TooFewSamples {
            what: "t-SNE (needs n - 1 >= 3 * perplexity)",
            needed: (3.0 * cfg.perplexity).ceil() as usize + 1,
            found: n,
        });
    }
    if cfg.n_components > x.ncols() {
        return Err(invalid(
            "n_components",
            cfg.n_components,
            "at most the input dimension",
        ));
    }
    let data = x.mapv(f64::from);
    let rng = Xoshiro256Plus::seed_from_u64(cfg.seed);
    TSneParams::embedding_size_with_rng(cfg.n_components, rng)
        .perplexity(cfg.perplexity)
        .approx_threshold(cfg.theta)
        .max_iter(cfg.max_iter)
        .transform(data)
        .map_err(|e| Error::Algorithm {
            what: "t-SNE",
            message: e.to_string(),
        })
}
