//! Train/test splits and the leakage report.
//!
//! - [`stratified_split`]: a random pair split stratified by label (as
//!   scikit-learn's `train_test_split(..., stratify=label)` sizes it: the test
//!   set has `ceil(fraction * n)` rows, divided between classes by largest
//!   remainder).
//! - [`entity_holdout_split`]: a fraction of the genes and of the diseases is held
//!   out (drawn with a seed, or given, e.g. the reference's `prep_metadata.json`);
//!   test rows are those touching any held-out entity.

use std::collections::BTreeMap;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::FxHashSet as HashSet;
use crate::error::{Error, Result};

/// Row indices of a train/test split, both in increasing order of the dataset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Training rows.
    pub train: Vec<usize>,
    /// Test rows.
    pub test: Vec<usize>,
}

fn check_fraction(field: &'static str, f: f64) -> Result<()> {
    if !(f.is_finite() && f > 0.0 && f < 1.0) {
        return Err(Error::Config {
            field,
            reason: format!("must be strictly between 0 and 1, got {f}"),
        });
    }
    Ok(())
}

/// Splits rows by label so each class keeps its share in the test set.
///
/// The test set has `ceil(test_fraction * n)` rows; each class gets the floor of
/// its proportional share, and the remaining rows go to the classes with the
/// largest remainders (ties: smaller label first). Within a class, test rows are
/// a seeded random subset.
pub fn stratified_split(labels: &[u8], test_fraction: f64, seed: u64) -> Result<Split> {
    check_fraction("test_fraction", test_fraction)?;
    let n = labels.len();
    let n_test = (test_fraction * n as f64).ceil() as usize;
    let mut by_class: BTreeMap<u8, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut alloc: Vec<(u8, usize, f64)> = by_class
        .iter()
        .map(|(&l, rows)| {
            let exact = n_test as f64 * rows.len() as f64 / n.max(1) as f64;
            (l, exact.floor() as usize, exact - exact.floor())
        })
        .collect();
    let mut left = n_test - alloc.iter().map(|a| a.1).sum::<usize>();
    let mut order: Vec<usize> = (0..alloc.len()).collect();
    order.sort_by(|&a, &b| {
        alloc[b]
            .2
            .total_cmp(&alloc[a].2)
            .then(alloc[a].0.cmp(&alloc[b].0))
    });
    for &k in order.iter().cycle().take(alloc.len() * 2) {
        if left == 0 {
            break;
        }
        if alloc[k].1 < by_class[&alloc[k].0].len() {
            alloc[k].1 += 1;
            left -= 1;
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut is_test = vec![false; n];
    for (l, take, _) in alloc {
        let mut rows = by_class[&l].clone();
        let (chosen, _) = rows.partial_shuffle(&mut rng, take);
        chosen.iter().for_each(|&i| is_test[i] = true);
    }
    Ok(partition(&is_test))
}

fn partition(is_test: &[bool]) -> Split {
    let mut s = Split::default();
    for (i, &t) in is_test.iter().enumerate() {
        if t { s.test.push(i) } else { s.train.push(i) }
    }
    s
}

/// Held-out entity names, e.g. read from the reference's `prep_metadata.json`
/// (`holdout_genes`, `holdout_diseases`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct HoldoutEntities {
    /// Held-out gene symbols.
    pub holdout_genes: Vec<String>,
    /// Held-out disease names.
    pub holdout_diseases: Vec<String>,
}

impl HoldoutEntities {
    /// Reads `holdout_genes` and `holdout_diseases` from a JSON file (other keys ignored).
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
        serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            reason: format!(
                "expected a JSON object with holdout_genes and holdout_diseases lists: {e}"
            ),
        })
    }
}

/// How to choose the held-out entities.
#[derive(Debug, Clone, PartialEq)]
pub enum Holdout {
    /// `floor(fraction * count)` genes and diseases drawn with a seed from the
    /// distinct entities of the positives.
    Random {
        /// Fraction of genes and of diseases held out.
        fraction: f64,
        /// Seed.
        seed: u64,
    },
    /// The given names.
    Given(HoldoutEntities),
}

/// The held-out entities actually used.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct HeldOut {
    /// Held-out genes present in the dataset.
    pub genes: Vec<String>,
    /// Held-out diseases present in the dataset.
    pub diseases: Vec<String>,
    /// Given names that do not occur in the dataset (ignored).
    pub unknown_genes: Vec<String>,
    /// Given disease names that do not occur in the dataset (ignored).
    pub unknown_diseases: Vec<String>,
}

/// Splits rows so that test rows are those touching a held-out gene or disease.
///
/// `rows` are `(gene, disease)` names per row; `pos_genes` / `pos_diseases` are the
/// distinct entities of the positives (the pool random hold-outs are drawn from),
/// in a fixed order.
pub fn entity_holdout_split(
    rows: &[(&str, &str)],
    pos_genes: &[&str],
    pos_diseases: &[&str],
    holdout: &Holdout,
) -> Result<(Split, HeldOut)> {
    let held = match holdout {
        Holdout::Random { fraction, seed } => {
            check_fraction("holdout_fraction", *fraction)?;
            let mut rng = ChaCha8Rng::seed_from_u64(*seed);
            let mut pick = |pool: &[&str]| {
                let k = (fraction * pool.len() as f64).floor() as usize;
                let mut v: Vec<&str> = pool.to_vec();
                let (chosen, _) = v.partial_shuffle(&mut rng, k);
                chosen.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            };
            let genes = pick(pos_genes);
            let diseases = pick(pos_diseases);
            HeldOut {
                genes,
                diseases,
                ..Default::default()
            }
        }
        Holdout::Given(h) => {
            let present_g: HashSet<&str> = rows.iter().map(|r| r.0).collect();
            let present_d: HashSet<&str> = rows.iter().map(|r| r.1).collect();
            let mut out = HeldOut::default();
            let mut seen = HashSet::default();
            for g in &h.holdout_genes {
                if !seen.insert(("g", g.as_str())) {
                    continue;
                }
                if present_g.contains(g.as_str()) {
                    out.genes.push(g.clone())
                } else {
                    out.unknown_genes.push(g.clone())
                }
            }
            for d in &h.holdout_diseases {
                if !seen.insert(("d", d.as_str())) {
                    continue;
                }
                if present_d.contains(d.as_str()) {
                    out.diseases.push(d.clone())
                } else {
                    out.unknown_diseases.push(d.clone())
                }
            }
            out
        }
    };
    let hg: HashSet<&str> = held.genes.iter().map(String::as_str).collect();
    let hd: HashSet<&str> = held.diseases.iter().map(String::as_str).collect();
    let is_test: Vec<bool> = rows
        .iter()
        .map(|(g, d)| hg.contains(g) || hd.contains(d))
        .collect();
    Ok((partition(&is_test), held))
}

/// How test rows relate to the training entities.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct LeakageReport {
    /// Test rows.
    pub test_rows: usize,
    /// Test rows whose gene and disease both occur in train.
    pub both_in_train: usize,
    /// Test rows whose gene occurs in train but not their disease.
    pub only_gene_in_train: usize,
    /// Test rows whose disease occurs in train but not their gene.
    pub only_disease_in_train: usize,
    /// Test rows with neither entity in train.
    pub neither_in_train: usize,
    /// Test rows whose gene occurs in train (`both + only_gene`).
    pub gene_in_train: usize,
    /// Test rows whose disease occurs in train (`both + only_disease`).
    pub disease_in_train: usize,
    /// Test rows whose exact (gene, disease) pair also occurs in train.
    pub pair_in_train: usize,
}

/// Counts how many test rows have their gene, their disease, or both in train.
pub fn leakage_report(rows: &[(&str, &str)], split: &Split) -> LeakageReport {
    let tg: HashSet<&str> = split.train.iter().map(|&i| rows[i].0).collect();
    let td: HashSet<&str> = split.train.iter().map(|&i| rows[i].1).collect();
    let tp: HashSet<(&str, &str)> = split.train.iter().map(|&i| rows[i]).collect();
    let mut r = LeakageReport {
        test_rows: split.test.len(),
        ..Default::default()
    };
    for &i in &split.test {
        let (g, d) = rows[i];
        match (tg.contains(g), td.contains(d)) {
            (true, true) => r.both_in_train += 1,
            (true, false) => r.only_gene_in_train += 1,
            (false, true) => r.only_disease_in_train += 1,
            (false, false) => r.neither_in_train += 1,
        }
        if tp.contains(&(g, d)) {
            r.pair_in_train += 1;
        }
    }
    r.gene_in_train = r.both_in_train + r.only_gene_in_train;
    r.disease_in_train = r.both_in_train + r.only_disease_in_train;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_sizes_follow_sklearn() {
        // 34,222 + 34,222 rows at 0.2: test = ceil(13,688.8) = 13,689, split 6,845 / 6,844.
        let labels: Vec<u8> = (0..68_444).map(|i| (i % 2) as u8).collect();
        let s = stratified_split(&labels, 0.2, 42).unwrap();
        assert_eq!((s.train.len(), s.test.len()), (54_755, 13_689));
        let neg = s.test.iter().filter(|&&i| labels[i] == 0).count();
        assert_eq!(neg, 6_845);
        assert_eq!(s, stratified_split(&labels, 0.2, 42).unwrap());
        assert_ne!(s, stratified_split(&labels, 0.2, 43).unwrap());
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>());
        assert!(matches!(
            stratified_split(&labels, 1.0, 1),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn unbalanced_classes_keep_proportions() {
        let labels: Vec<u8> = (0..100).map(|i| u8::from(i < 10)).collect();
        let s = stratified_split(&labels, 0.3, 7).unwrap();
        assert_eq!(s.test.len(), 30);
        assert_eq!(s.test.iter().filter(|&&i| labels[i] == 1).count(), 3);
    }

    #[test]
    fn entity_holdout_touching_rows_go_to_test() {
        let rows = [("A", "x"), ("B", "y"), ("C", "x"), ("A", "z"), ("D", "w")];
        let h = Holdout::Given(HoldoutEntities {
            holdout_genes: vec!["A".into(), "Q".into()],
            holdout_diseases: vec!["w".into()],
        });
        let (s, held) = entity_holdout_split(&rows, &[], &[], &h).unwrap();
        assert_eq!(s.test, [0, 3, 4]);
        assert_eq!(s.train, [1, 2]);
        assert_eq!(held.unknown_genes, ["Q"]);
        let leak = leakage_report(&rows, &s);
        assert_eq!(leak.test_rows, 3);
        // (A,x): disease x in train; (A,z): neither; (D,w): neither.
        assert_eq!(
            (
                leak.only_disease_in_train,
                leak.neither_in_train,
                leak.gene_in_train
            ),
            (1, 2, 0)
        );
    }

    #[test]
    fn random_holdout_takes_floor_fraction() {
        let genes: Vec<String> = (0..9_111).map(|i| format!("g{i}")).collect();
        let dis: Vec<String> = (0..5_858).map(|i| format!("d{i}")).collect();
        let g: Vec<&str> = genes.iter().map(String::as_str).collect();
        let d: Vec<&str> = dis.iter().map(String::as_str).collect();
        let rows: Vec<(&str, &str)> = g
            .iter()
            .zip(d.iter().cycle())
            .map(|(a, b)| (*a, *b))
            .collect();
        let (_, held) = entity_holdout_split(
            &rows,
            &g,
            &d,
            &Holdout::Random {
                fraction: 0.1,
                seed: 42,
            },
        )
        .unwrap();
        assert_eq!((held.genes.len(), held.diseases.len()), (911, 585));
    }
}
