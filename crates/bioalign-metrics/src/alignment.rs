//! Alignment of embeddings with the knowledge graph itself, beyond the study.
//!
//! - [`link_prediction`]: ROC-AUC of `cos(gene_i, disease_i)` for true versus
//!   false pairs: does the geometry alone tell associated pairs apart?
//! - [`rsa_spearman`]: representational similarity analysis; the Spearman
//!   correlation, over all entity pairs, between the cosine similarity of
//!   their embeddings and the Jaccard similarity of their neighbour sets in the
//!   graph (for genes: their disease sets).
//! - [`linear_cka`]: linear centred kernel alignment between two embedding
//!   sets of the same rows (Kornblith et al. 2019), for instance base versus
//!   fine-tuned, or layer versus layer.
//! - [`per_layer`]: any measure over every layer of a `[L, n, d]` input.

use std::collections::HashMap;
use std::hash::Hash;

use ndarray::{Array2, ArrayView2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::check;
use crate::classification::{average_ranks, roc_auc};
use crate::error::{Error, Result};
use crate::separation::sum_squares;

/// Link-prediction quality of embedding cosines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkPrediction {
    /// ROC-AUC of the cosine for label 1 (associated) versus 0.
    pub roc_auc: f64,
    /// Mean cosine of the associated pairs.
    pub mean_cos_true: f64,
    /// Mean cosine of the other pairs.
    pub mean_cos_false: f64,
    /// Associated pairs.
    pub n_true: usize,
    /// Other pairs.
    pub n_false: usize,
}

/// Cosine similarity of row `i` of `a` with row `i` of `b`, in f64.
///
/// Errors: shape mismatch, non-finite values, zero-norm rows.
pub fn row_cosines(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> Result<Vec<f64>> {
    if a.dim() != b.dim() {
        return Err(Error::ShapeMismatch {
            what: "row cosines: second set",
            expected: a.shape().to_vec(),
            found: b.shape().to_vec(),
        });
    }
    check::finite_matrix("row cosines: first set", a)?;
    check::finite_matrix("row cosines: second set", b)?;
    a.outer_iter()
        .zip(b.outer_iter())
        .enumerate()
        .map(|(i, (x, y))| {
            let x = x.to_vec();
            let y = y.to_vec();
            let (nx, ny) = (sum_squares(&x), sum_squares(&y));
            if nx == 0.0 {
                return Err(Error::ZeroNorm {
                    what: "row cosines: first set",
                    row: i,
                });
            }
            if ny == 0.0 {
                return Err(Error::ZeroNorm {
                    what: "row cosines: second set",
                    row: i,
                });
            }
            let dot: f64 = x
                .iter()
                .zip(&y)
                .map(|(&p, &q)| f64::from(p) * f64::from(q))
                .sum();
            Ok(dot / (nx.sqrt() * ny.sqrt()))
        })
        .collect()
}

/// ROC-AUC of `cos(genes[i], diseases[i])` against `labels[i]` (1 = associated).
///
/// ```
/// use ndarray::array;
/// let genes = array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]];
/// let diseases = array![[1.0f32, 0.1], [0.1, 1.0], [-1.0, 1.0], [1.0, 1.0]];
/// let lp = bioalign_metrics::link_prediction(genes.view(), diseases.view(), &[1, 1, 0, 0])?;
/// assert_eq!(lp.roc_auc, 1.0);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn link_prediction(
    genes: ArrayView2<'_, f32>,
    diseases: ArrayView2<'_, f32>,
    labels: &[usize],
) -> Result<LinkPrediction> {
    check::same_len(
        "link prediction: pairs vs labels",
        genes.nrows(),
        labels.len(),
    )?;
    let [n_false, n_true] = check::both_classes("link prediction", labels, 1)?;
    let cos = row_cosines(genes, diseases)?;
    let mean = |c: usize| {
        cos.iter()
            .zip(labels)
            .filter(|(_, l)| **l == c)
            .map(|(v, _)| v)
            .sum::<f64>()
            / if c == 1 { n_true } else { n_false } as f64
    };
    Ok(LinkPrediction {
        roc_auc: roc_auc(labels, &cos)?,
        mean_cos_true: mean(1),
        mean_cos_false: mean(0),
        n_true,
        n_false,
    })
}

/// Spearman rank correlation of `a` and `b` (Pearson correlation of average
/// ranks, as `scipy.stats.spearmanr`).
///
/// ```
/// let r = bioalign_metrics::spearman(&[1.0, 2.0, 2.0, 4.0], &[10.0, 20.0, 20.0, 30.0])?;
/// assert!((r - 1.0).abs() < 1e-12);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    check::same_len("Spearman: a vs b", a.len(), b.len())?;
    if a.len() < 2 {
        return Err(Error::TooFewSamples {
            what: "Spearman correlation",
            needed: 2,
            found: a.len(),
        });
    }
    check::finite_slice("Spearman: a", a)?;
    check::finite_slice("Spearman: b", b)?;
    pearson(&average_ranks(a), &average_ranks(b))
}

fn pearson(a: &[f64], b: &[f64]) -> Result<f64> {
    let n = a.len() as f64;
    let ma = a.iter().sum::<f64>() / n;
    let mb = b.iter().sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return Err(Error::Constant {
            what: "correlation",
        });
    }
    Ok((sab / (saa.sqrt() * sbb.sqrt())).clamp(-1.0, 1.0))
}

/// Jaccard similarity `|a ∩ b| / |a ∪ b|` of two sorted, deduplicated id lists
/// (0 when both are empty).
pub fn jaccard(a: &[usize], b: &[usize]) -> f64 {
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let union = a.len() + b.len() - inter;
    if union == 0 {
        0.0
    } else {
        inter as f64 / union as f64
    }
}

/// Result of representational similarity analysis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rsa {
    /// Spearman correlation between embedding cosine and graph Jaccard over entity pairs.
    pub spearman: f64,
    /// Entities compared.
    pub n_entities: usize,
    /// Entity pairs (`n (n - 1) / 2`).
    pub n_pairs: usize,
}

/// RSA between entity embeddings (`[n, d]`, row `i` = entity `i`) and the
/// graph: `neighbours[i]` holds the ids of entity `i`'s neighbours (any order).
///
/// Cost O(n^2 d) for the cosines and O(n^2 log n) for the ranks.
/// Errors: fewer than 3 entities, length mismatch, bad rows, an entity without
/// neighbours, constant similarities.
///
/// ```
/// use ndarray::array;
/// // genes 0 and 1 share diseases and point the same way; gene 2 does not
/// let emb = array![[1.0f32, 0.0], [0.9, 0.1], [0.0, 1.0]];
/// let sets = vec![vec![10, 11], vec![10, 11, 12], vec![13]];
/// let r = bioalign_metrics::rsa_spearman(emb.view(), &sets)?;
/// assert!(r.spearman > 0.8);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn rsa_spearman(emb: ArrayView2<'_, f32>, neighbours: &[Vec<usize>]) -> Result<Rsa> {
    let n = emb.nrows();
    check::same_len("RSA: embedding rows vs neighbour sets", n, neighbours.len())?;
    if n < 3 {
        return Err(Error::TooFewSamples {
            what: "RSA",
            needed: 3,
            found: n,
        });
    }
    let sets: Vec<Vec<usize>> = neighbours
        .iter()
        .map(|s| {
            let mut s = s.clone();
            s.sort_unstable();
            s.dedup();
            s
        })
        .collect();
    if sets.iter().any(|s| s.is_empty()) {
        return Err(Error::Empty {
            what: "RSA: neighbour set of an entity",
        });
    }
    let unit = unit_rows("RSA embeddings", emb)?;
    let gram = unit.dot(&unit.t());
    let mut cos = Vec::with_capacity(n * (n - 1) / 2);
    let mut jac = Vec::with_capacity(n * (n - 1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            cos.push(gram[[i, j]]);
            jac.push(jaccard(&sets[i], &sets[j]));
        }
    }
    Ok(Rsa {
        spearman: spearman(&cos, &jac)?,
        n_entities: n,
        n_pairs: cos.len(),
    })
}

fn unit_rows(what: &'static str, x: ArrayView2<'_, f32>) -> Result<Array2<f64>> {
    check::finite_matrix(what, x)?;
    let mut out = x.mapv(f64::from);
    for (row, mut r) in out.outer_iter_mut().enumerate() {
        let norm = r.dot(&r).sqrt();
        if norm == 0.0 {
            return Err(Error::ZeroNorm { what, row });
        }
        r /= norm;
    }
    Ok(out)
}

/// Mean unit vector of the rows sharing each key, keys in order of first
/// appearance: an entity embedding built from the sentences that mention it.
///
/// ```
/// use ndarray::array;
/// let x = array![[2.0f32, 0.0], [0.0, 1.0], [0.0, 3.0]];
/// let (keys, c) = bioalign_metrics::entity_centroids(x.view(), &["BRCA1", "TP53", "BRCA1"])?;
/// assert_eq!(keys, vec!["BRCA1", "TP53"]);
/// assert_eq!(c.row(0).to_vec(), vec![0.5, 0.5]);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn entity_centroids<K: Clone + Eq + Hash>(
    x: ArrayView2<'_, f32>,
    keys: &[K],
) -> Result<(Vec<K>, Array2<f32>)> {
    check::same_len("entity centroids: rows vs keys", x.nrows(), keys.len())?;
    let unit = unit_rows("entity centroids", x)?;
    let mut index: HashMap<&K, usize> = HashMap::new();
    let mut order: Vec<K> = Vec::new();
    let mut sums: Vec<Vec<f64>> = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for (r, k) in unit.outer_iter().zip(keys) {
        let id = *index.entry(k).or_insert_with(|| {
            order.push(k.clone());
            sums.push(vec![0.0; x.ncols()]);
            counts.push(0);
            order.len() - 1
        });
        for (s, v) in sums[id].iter_mut().zip(r) {
            *s += v;
        }
        counts[id] += 1;
    }
    let mut out = Array2::<f32>::zeros((order.len(), x.ncols()));
    for (i, (s, c)) in sums.iter().zip(&counts).enumerate() {
        for (o, v) in out.row_mut(i).iter_mut().zip(s) {
            *o = (v / *c as f64) as f32;
        }
    }
    Ok((order, out))
}

fn centred(what: &'static str, x: ArrayView2<'_, f32>) -> Result<Array2<f64>> {
    check::finite_matrix(what, x)?;
    let mut x = x.mapv(f64::from);
    if let Some(m) = x.mean_axis(Axis(0)) {
        x -= &m;
    }
    Ok(x)
}

/// Linear CKA between `x` (`[n, d1]`) and `y` (`[n, d2]`), rows paired:
/// `||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)` with column-centred
/// inputs, computed through `n x n` Gram matrices when `n` is smaller than the
/// widths. 1 means the same geometry up to rotation and isotropic scaling.
///
/// ```
/// use ndarray::Array2;
/// let x = Array2::from_shape_fn((20, 3), |(i, j)| ((i * 3 + j * 7) % 11) as f32);
/// let y = x.mapv(|v| 2.0 * v + 1.0); // scaled and shifted: same geometry
/// assert!((bioalign_metrics::linear_cka(x.view(), y.view())? - 1.0).abs() < 1e-12);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn linear_cka(x: ArrayView2<'_, f32>, y: ArrayView2<'_, f32>) -> Result<f64> {
    check::same_len("linear CKA: rows of x vs y", x.nrows(), y.nrows())?;
    if x.nrows() < 2 {
        return Err(Error::TooFewSamples {
            what: "linear CKA",
            needed: 2,
            found: x.nrows(),
        });
    }
    let xc = centred("linear CKA: x", x)?;
    let yc = centred("linear CKA: y", y)?;
    let fro2 = |m: &Array2<f64>| m.iter().map(|v| v * v).sum::<f64>();
    let n = x.nrows();
    let (cross, xx, yy) = if n < x.ncols().max(y.ncols()) {
        let k = xc.dot(&xc.t());
        let l = yc.dot(&yc.t());
        let cross: f64 = k.iter().zip(l.iter()).map(|(a, b)| a * b).sum();
        (cross, fro2(&k), fro2(&l))
    } else {
        (
            fro2(&yc.t().dot(&xc)),
            fro2(&xc.t().dot(&xc)),
            fro2(&yc.t().dot(&yc)),
        )
    };
    if xx == 0.0 || yy == 0.0 {
        return Err(Error::Constant { what: "linear CKA" });
    }
    Ok(cross / (xx.sqrt() * yy.sqrt()))
}

/// Applies `measure` to every layer of `layers` (`[L, n, d]`), returning one result per layer.
///
/// ```
/// use ndarray::Array3;
/// let layers = Array3::from_shape_fn((3, 6, 2), |(l, i, j)| (l + 1) as f32 * ((i + j) % 3 + 1) as f32);
/// let norms = bioalign_metrics::per_layer(layers.view(), |_, x| Ok(x.sum()))?;
/// assert_eq!(norms.len(), 3);
/// # Ok::<(), bioalign_metrics::Error>(())
/// ```
pub fn per_layer<T, F>(layers: ArrayView3<'_, f32>, mut measure: F) -> Result<Vec<T>>
where
    F: FnMut(usize, ArrayView2<'_, f32>) -> Result<T>,
{
    if layers.len_of(Axis(0)) == 0 {
        return Err(Error::Empty {
            what: "per-layer input",
        });
    }
    layers
        .axis_iter(Axis(0))
        .enumerate()
        .map(|(l, x)| measure(l, x))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaccard_counts_overlap() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[], &[]), 0.0);
        assert_eq!(jaccard(&[1], &[2]), 0.0);
    }

    #[test]
    fn cka_of_unrelated_inputs_is_small_and_symmetric() {
        let x = Array2::from_shape_fn((50, 4), |(i, j)| ((i * 13 + j * 7) % 17) as f32);
        let y = Array2::from_shape_fn((50, 60), |(i, j)| ((i * 29 + j * 3) % 23) as f32);
        let a = linear_cka(x.view(), y.view()).unwrap();
        let b = linear_cka(y.view(), x.view()).unwrap();
        assert!((a - b).abs() < 1e-12);
        assert!((0.0..1.0).contains(&a));
    }

    #[test]
    fn rsa_rejects_entities_without_neighbours() {
        let emb = Array2::from_shape_fn((3, 2), |(i, j)| (i + j + 1) as f32);
        let r = rsa_spearman(emb.view(), &[vec![1], vec![], vec![2]]);
        assert!(matches!(r, Err(Error::Empty { .. })));
    }
}
