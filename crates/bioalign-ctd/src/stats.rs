//! Dataset statistics: length summaries, PubMed-ID counts, top entities, and the
//! popularity-shortcut ROC-AUC (Mann-Whitney U with tie correction).

use std::collections::BTreeMap;

use crate::dataset::FxHashMap as HashMap;

use crate::output::Example;
use crate::split::Split;

/// Quantile of sorted data with linear interpolation (numpy's default `linear`).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// ROC-AUC of `scores` for binary `labels` (1 = positive), computed as the
/// Mann-Whitney U statistic with average ranks for ties; `None` if a class is absent.
///
/// Equals scikit-learn's `roc_auc_score` (ties count one half).
pub fn roc_auc(scores: &[f64], labels: &[u8]) -> Option<f64> {
    assert_eq!(
        scores.len(),
        labels.len(),
        "roc_auc: scores and labels differ in length"
    );
    let n1 = labels.iter().filter(|&&l| l == 1).count();
    let n0 = labels.len() - n1;
    if n1 == 0 || n0 == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let avg = (i + j + 2) as f64 / 2.0;
        for &k in &idx[i..=j] {
            if labels[k] == 1 {
                rank_sum_pos += avg;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n1 as f64) * (n1 as f64 + 1.0) / 2.0;
    Some(u / (n1 as f64 * n0 as f64))
}

/// Summary of sentence lengths in characters (Unicode scalar values, as Python's `len`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LengthStats {
    /// Mean.
    pub mean: f64,
    /// Median (mean of the two middle values for an even count, as numpy).
    pub median: f64,
    /// Shortest.
    pub min: f64,
    /// Longest.
    pub max: f64,
    /// 5th, 25th, 75th and 95th percentiles (numpy `linear`).
    pub quantiles: BTreeMap<String, f64>,
}

/// Length statistics of the texts of `rows`.
pub fn length_stats<'a>(rows: impl Iterator<Item = &'a Example>) -> LengthStats {
    let mut v: Vec<f64> = rows.map(|e| e.text.chars().count() as f64).collect();
    v.sort_by(f64::total_cmp);
    let mean = if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    };
    let quantiles = [("p05", 0.05), ("p25", 0.25), ("p75", 0.75), ("p95", 0.95)]
        .into_iter()
        .map(|(k, q)| (k.to_string(), quantile(&v, q)))
        .collect();
    LengthStats {
        mean,
        median: quantile(&v, 0.5),
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
        quantiles,
    }
}

/// PubMed IDs per positive.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PubmedStats {
    /// Positives counted.
    pub positives: usize,
    /// Mean number of IDs (positives citing none count as 0).
    pub mean: f64,
    /// Largest number of IDs on one positive.
    pub max: usize,
    /// Positives citing no ID.
    pub none: usize,
    /// Positives citing two or more.
    pub several: usize,
    /// Number of positives per ID count.
    pub histogram: BTreeMap<usize, usize>,
}

/// PubMed statistics of the positive rows among `rows`.
pub fn pubmed_stats<'a>(rows: impl Iterator<Item = &'a Example>) -> PubmedStats {
    let counts: Vec<usize> = rows
        .filter(|e| e.label == 1)
        .map(|e| e.pubmed_ids.len())
        .collect();
    let mut histogram = BTreeMap::new();
    counts
        .iter()
        .for_each(|&c| *histogram.entry(c).or_default() += 1);
    PubmedStats {
        positives: counts.len(),
        mean: if counts.is_empty() {
            0.0
        } else {
            counts.iter().sum::<usize>() as f64 / counts.len() as f64
        },
        max: counts.iter().copied().max().unwrap_or(0),
        none: counts.iter().filter(|&&c| c == 0).count(),
        several: counts.iter().filter(|&&c| c >= 2).count(),
        histogram,
    }
}

/// An entity and its number of positives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    /// Gene symbol or disease name.
    pub name: String,
    /// Number of positive rows.
    pub positives: usize,
}

/// The `k` entities with most positives (ties by name), using `key` to pick the entity.
pub fn top_entities<'a>(
    rows: impl Iterator<Item = &'a Example>,
    key: impl Fn(&Example) -> &str,
    k: usize,
) -> Vec<Count> {
    let mut m: HashMap<&str, usize> = HashMap::default();
    for e in rows.filter(|e| e.label == 1) {
        *m.entry(key(e)).or_default() += 1;
    }
    let mut v: Vec<Count> = m
        .into_iter()
        .map(|(name, positives)| Count {
            name: name.to_string(),
            positives,
        })
        .collect();
    v.sort_by(|a, b| {
        b.positives
            .cmp(&a.positives)
            .then_with(|| a.name.cmp(&b.name))
    });
    v.truncate(k);
    v
}

/// The popularity shortcut of a split: ROC-AUC of `degree(gene) + degree(disease)`,
/// degrees counted over the train positives, as a score for the label.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PopularityShortcut {
    /// AUC on the training rows (`None` if a class is absent).
    pub train_auc: Option<f64>,
    /// AUC on the test rows.
    pub test_auc: Option<f64>,
}

/// Computes the popularity shortcut of `split` over `rows`.
pub fn popularity_shortcut(rows: &[Example], split: &Split) -> PopularityShortcut {
    let mut gd: HashMap<&str, usize> = HashMap::default();
    let mut dd: HashMap<&str, usize> = HashMap::default();
    for &i in &split.train {
        let e = &rows[i];
        if e.label == 1 {
            *gd.entry(&e.gene_symbol).or_default() += 1;
            *dd.entry(&e.disease_name).or_default() += 1;
        }
    }
    let auc = |idx: &[usize]| {
        let scores: Vec<f64> = idx
            .iter()
            .map(|&i| {
                let e = &rows[i];
                (gd.get(e.gene_symbol.as_str()).copied().unwrap_or(0)
                    + dd.get(e.disease_name.as_str()).copied().unwrap_or(0)) as f64
            })
            .collect();
        let labels: Vec<u8> = idx.iter().map(|&i| rows[i].label).collect();
        roc_auc(&scores, &labels)
    };
    PopularityShortcut {
        train_auc: auc(&split.train),
        test_auc: auc(&split.test),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_sklearn_with_ties() {
        // sklearn.metrics.roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) == 0.75
        assert_eq!(roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]), Some(0.75));
        // roc_auc_score([0,1,0,1],[1,1,1,1]) == 0.5 (all tied)
        assert_eq!(roc_auc(&[1.0; 4], &[0, 1, 0, 1]), Some(0.5));
        // roc_auc_score([0,0,1,1,1],[1,2,2,3,0]) == 3.5 / 6 (one tied pair counts 1/2)
        assert_eq!(
            roc_auc(&[1.0, 2.0, 2.0, 3.0, 0.0], &[0, 0, 1, 1, 1]),
            Some(3.5 / 6.0)
        );
        assert_eq!(roc_auc(&[1.0, 2.0], &[1, 1]), None);
    }

    #[test]
    fn quantiles_follow_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.25), 1.75);
        assert_eq!(quantile(&v, 1.0), 4.0);
    }

    #[test]
    fn pubmed_and_top_counts() {
        let mk = |g: &str, n: usize, label: u8| Example {
            gene_symbol: g.into(),
            text: "é".repeat(n + 1),
            pubmed_ids: (0..n as u64).collect(),
            label,
            ..Default::default()
        };
        let rows = [mk("B", 0, 1), mk("A", 3, 1), mk("A", 1, 1), mk("C", 0, 0)];
        let s = pubmed_stats(rows.iter());
        assert_eq!((s.positives, s.max, s.none, s.several), (3, 3, 1, 1));
        assert!((s.mean - 4.0 / 3.0).abs() < 1e-12);
        let top = top_entities(rows.iter(), |e| &e.gene_symbol, 5);
        assert_eq!(
            top[0],
            Count {
                name: "A".into(),
                positives: 2
            }
        );
        assert_eq!(top.len(), 2);
        let l = length_stats(rows.iter());
        assert_eq!((l.min, l.max, l.median), (1.0, 4.0, 1.5));
    }
}
