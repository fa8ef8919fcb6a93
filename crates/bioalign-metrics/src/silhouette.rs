//! Silhouette score of the labels on embeddings, exactly as
//! `sklearn.metrics.silhouette_score` / `silhouette_samples` (1.9) define it.
//!
//! For row `i` with label `c`: `a` is the mean distance to the other rows of
//! `c`, `b` the smallest mean distance to the rows of another label, and
//! `s = (b - a) / max(a, b)`; a row alone in its label scores 0. The score is
//! the mean of `s`. Cosine distance is `1 - cos`, clipped to `[0, 2]`;
//! Euclidean distance is computed as scikit-learn does, from the Gram matrix
//! (`sqrt(max(0, |x|^2 + |y|^2 - 2 x.y))`), in f64, with a zero diagonal.
//!
//! Cost: O(n^2 d) for the Gram matrix, computed in row blocks so memory stays
//! O(block n).

use ndarray::{Array2, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, Result};

/// The distance the silhouette is computed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    /// `1 - cosine similarity` (scikit-learn's `metric="cosine"`); zero-norm rows are an error.
    Cosine,
    /// Euclidean distance (scikit-learn's default).
    Euclidean,
}

/// Silhouette scores of one labelling under both distances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Silhouette {
    /// Under cosine distance.
    pub cosine: f64,
    /// Under Euclidean distance.
    pub euclidean: f64,
}

const BLOCK: usize = 256;

/// Per-row silhouette values of `labels` on `x` (`[n, d]`, any precision).
///
/// Errors: empty input, length mismatch, non-finite values, fewer than 2 or
/// more than `n - 1` distinct labels (scikit-learn's condition), and for
/// cosine a zero-norm row.
pub fn silhouette_samples_f64(
    x: ArrayView2<'_, f64>,
    labels: &[usize],
    metric: Distance,
) -> Result<Vec<f64>> {
    let out = samples_many(x, labels, &[metric])?;
    Ok(out.into_iter().next().unwrap_or_default())
}

/// Per-row silhouette values (see [`silhouette_samples_f64`]) of f32 embeddings.
pub fn silhouette_samples(
    x: ArrayView2<'_, f32>,
    labels: &[usize],
    metric: Distance,
) -> Result<Vec<f64>> {
    silhouette_samples_f64(x.mapv(f64::from).view(), labels, metric)
}

/// Mean silhouette of `labels` on f32 embeddings `x` (`[n, d]`).
///
/// ```
/// use bioalign_metrics::{silhouette_score, Distance};
/// use ndarray::array;
/// let x = array![[0.0f32, 1.0], [0.0, 1.1], [5.0, 0.0], [5.2, 0.0]];
/// let s = silhouette_score(x.view(), &[0, 0, 1, 1], Distance::Euclidean)?;
/// assert!(s > 0.9);
/// let c = silhouette_score(x.view(), &[0, 0, 1, 1], Distance::Cosine)?;
/// assert!(c > 0.9);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn silhouette_score(x: ArrayView2<'_, f32>, labels: &[usize], metric: Distance) -> Result<f64> {
    let s = silhouette_samples(x, labels, metric)?;
    Ok(mean(&s))
}

/// Mean silhouette of `labels` on f64 points (for instance a 2-D projection).
pub fn silhouette_score_f64(
    x: ArrayView2<'_, f64>,
    labels: &[usize],
    metric: Distance,
) -> Result<f64> {
    let s = silhouette_samples_f64(x, labels, metric)?;
    Ok(mean(&s))
}

/// Cosine and Euclidean silhouette of `labels` on `x` from one Gram matrix.
pub fn silhouette_both(x: ArrayView2<'_, f32>, labels: &[usize]) -> Result<Silhouette> {
    let x = x.mapv(f64::from);
    let s = samples_many(x.view(), labels, &[Distance::Cosine, Distance::Euclidean])?;
    Ok(Silhouette {
        cosine: mean(&s[0]),
        euclidean: mean(&s[1]),
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn samples_many(
    x: ArrayView2<'_, f64>,
    labels: &[usize],
    metrics: &[Distance],
) -> Result<Vec<Vec<f64>>> {
    const WHAT: &str = "silhouette";
    let n = x.nrows();
    if n == 0 || x.ncols() == 0 {
        return Err(Error::Empty { what: WHAT });
    }
    check::same_len("silhouette: embeddings rows vs labels", n, labels.len())?;
    for (row, r) in x.outer_iter().enumerate() {
        if let Some((col, v)) = r.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: WHAT,
                row,
                col,
                value: *v,
            });
        }
    }
    let (classes, codes) = check::encode(labels);
    let k = classes.len();
    if k < 2 || k > n - 1 {
        return Err(Error::TooFewClasses {
            what: "silhouette (needs 2 <= labels <= n - 1)",
            needed: 2,
            found: k,
        });
    }
    let mut freq = vec![0usize; k];
    for &c in &codes {
        freq[c] += 1;
    }
    let sq: Vec<f64> = x.outer_iter().map(|r| r.dot(&r)).collect();
    if let Some(row) = sq.iter().position(|&v| v == 0.0)
        && metrics.contains(&Distance::Cosine)
    {
        return Err(Error::ZeroNorm { what: WHAT, row });
    }
    let norms: Vec<f64> = sq.iter().map(|v| v.sqrt()).collect();
    let mut out = vec![vec![0.0; n]; metrics.len()];
    let mut sums = Array2::<f64>::zeros((n, k));
    for (m, metric) in metrics.iter().enumerate() {
        sums.fill(0.0);
        for start in (0..n).step_by(BLOCK) {
            let end = (start + BLOCK).min(n);
            let g = x.slice(s![start..end, ..]).dot(&x.t());
            for (bi, grow) in g.axis_iter(Axis(0)).enumerate() {
                let i = start + bi;
                let mut srow = sums.row_mut(i);
                for (j, &gij) in grow.iter().enumerate() {
                    if i == j {
                        continue;
                    }
                    let dist = match metric {
                        Distance::Cosine => (1.0 - gij / (norms[i] * norms[j])).clamp(0.0, 2.0),
                        Distance::Euclidean => (sq[i] + sq[j] - 2.0 * gij).max(0.0).sqrt(),
                    };
                    srow[codes[j]] += dist;
                }
            }
        }
        for i in 0..n {
            let c = codes[i];
            if freq[c] < 2 {
                out[m][i] = 0.0;
                continue;
            }
            let a = sums[[i, c]] / (freq[c] - 1) as f64;
            let b = (0..k)
                .filter(|&o| o != c)
                .map(|o| sums[[i, o]] / freq[o] as f64)
                .fold(f64::INFINITY, f64::min);
            let s = (b - a) / a.max(b);
            out[m][i] = if s.is_finite() { s } else { 0.0 };
        }
    }
    Ok(out)
}

/// Mean silhouette from a precomputed distance matrix (`metric="precomputed"`
/// in scikit-learn); only the off-diagonal entries are read.
///
/// ```
/// use ndarray::array;
/// let d = array![[0.0, 1.0, 4.0], [1.0, 0.0, 5.0], [4.0, 5.0, 0.0]];
/// let s = bioalign_metrics::silhouette_score_precomputed(d.view(), &[0, 0, 1])?;
/// // row 0: a = 1, b = 4; row 1: a = 1, b = 5; row 2 is alone: 0
/// assert!((s - (0.75 + 0.8) / 3.0).abs() < 1e-15);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn silhouette_score_precomputed(dist: ArrayView2<'_, f64>, labels: &[usize]) -> Result<f64> {
    let n = dist.nrows();
    if dist.ncols() != n {
        return Err(Error::ShapeMismatch {
            what: "silhouette: precomputed distances",
            expected: vec![n, n],
            found: dist.shape().to_vec(),
        });
    }
    let rows: Vec<usize> = (0..n).collect();
    silhouette_of_rows(dist, labels, &rows)
}

/// Silhouette of the points `rows` (indices into `dist` / `labels`, repeats
/// allowed: a repeated point is a distinct point at distance 0).
pub(crate) fn silhouette_of_rows(
    dist: ArrayView2<'_, f64>,
    labels: &[usize],
    rows: &[usize],
) -> Result<f64> {
    const WHAT: &str = "silhouette";
    check::same_len(
        "silhouette: distances vs labels",
        dist.nrows(),
        labels.len(),
    )?;
    let m = rows.len();
    if m == 0 {
        return Err(Error::Empty { what: WHAT });
    }
    let sub: Vec<usize> = rows.iter().map(|&r| labels[r]).collect();
    let (classes, codes) = check::encode(&sub);
    let k = classes.len();
    if k < 2 || k > m - 1 {
        return Err(Error::TooFewClasses {
            what: "silhouette (needs 2 <= labels <= n - 1)",
            needed: 2,
            found: k,
        });
    }
    let mut freq = vec![0usize; k];
    for &c in &codes {
        freq[c] += 1;
    }
    let mut sums = vec![0.0f64; k];
    let mut total = 0.0;
    for a in 0..m {
        sums.fill(0.0);
        let drow = dist.row(rows[a]);
        for b in 0..m {
            if a != b && rows[a] != rows[b] {
                sums[codes[b]] += drow[rows[b]];
            }
        }
        let c = codes[a];
        if freq[c] < 2 {
            continue;
        }
        let ai = sums[c] / (freq[c] - 1) as f64;
        let bi = (0..k)
            .filter(|&o| o != c)
            .map(|o| sums[o] / freq[o] as f64)
            .fold(f64::INFINITY, f64::min);
        let s = (bi - ai) / ai.max(bi);
        if s.is_finite() {
            total += s;
        }
    }
    Ok(total / m as f64)
}

/// Euclidean distance matrix of the rows of `x` (direct differences, f64).
pub fn euclidean_distances(x: ArrayView2<'_, f64>) -> Array2<f64> {
    let n = x.nrows();
    let mut d = Array2::<f64>::zeros((n, n));
    for i in 0..n {
        for j in i + 1..n {
            let v = x
                .row(i)
                .iter()
                .zip(x.row(j))
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            d[[i, j]] = v;
            d[[j, i]] = v;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn singleton_cluster_scores_zero_and_bad_label_counts_fail() {
        let x = array![[0.0, 1.0], [0.0, 1.1], [5.0, 0.0], [5.2, 0.1]];
        let s = silhouette_samples_f64(x.view(), &[0, 0, 1, 2], Distance::Euclidean).unwrap();
        assert_eq!(s[2], 0.0);
        assert_eq!(s[3], 0.0);
        assert!(s[0] > 0.9);
        assert!(matches!(
            silhouette_samples_f64(x.view(), &[0, 0, 0, 0], Distance::Euclidean),
            Err(Error::TooFewClasses { found: 1, .. })
        ));
        assert!(matches!(
            silhouette_samples_f64(x.view(), &[0, 1, 2, 3], Distance::Euclidean),
            Err(Error::TooFewClasses { found: 4, .. })
        ));
        let z = array![[0.0, 0.0], [0.0, 1.1], [5.0, 0.0]];
        assert!(matches!(
            silhouette_samples_f64(z.view(), &[0, 0, 1], Distance::Cosine),
            Err(Error::ZeroNorm { row: 0, .. })
        ));
    }

    #[test]
    fn blocks_do_not_change_the_result() {
        // n > BLOCK so the block loop runs more than once
        let n = BLOCK + 37;
        let x = Array2::from_shape_fn((n, 5), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f64 + (i % 2) as f64 * 3.0
        });
        let labels: Vec<usize> = (0..n).map(|i| i % 2).collect();
        let s = silhouette_samples_f64(x.view(), &labels, Distance::Euclidean).unwrap();
        // direct definition for a few rows
        for i in [0, 1, BLOCK, n - 1] {
            let d = |j: usize| {
                x.row(i)
                    .iter()
                    .zip(x.row(j))
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>()
                    .sqrt()
            };
            let own: Vec<usize> = (0..n)
                .filter(|&j| j != i && labels[j] == labels[i])
                .collect();
            let other: Vec<usize> = (0..n).filter(|&j| labels[j] != labels[i]).collect();
            let a = own.iter().map(|&j| d(j)).sum::<f64>() / own.len() as f64;
            let b = other.iter().map(|&j| d(j)).sum::<f64>() / other.len() as f64;
            let want = (b - a) / a.max(b);
            assert!((s[i] - want).abs() < 1e-9, "row {i}: {} vs {want}", s[i]);
        }
    }
}
