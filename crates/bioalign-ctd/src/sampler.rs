//! Negative samplers behind one trait, each seeded and reproducible.
//!
//! Every sampler emits distinct pairs that are not in the `known` set (all pairs
//! the input file associates through any evidence), drawn over the genes and
//! diseases of the positives. The number of negatives is
//! `round(ratio * positives)`; the positives each negative is "derived from" are
//! `floor(ratio)` copies of every positive plus a seeded random subset for the
//! fractional part.

use std::str::FromStr;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dataset::{PairSet, pair_key};
use crate::error::{Error, Result};

/// A `(gene, disease)` pair of entity indices.
pub type Pair = (u32, u32);

/// Draws negative pairs for a set of positives.
pub trait NegativeSampler {
    /// Short name used in the dataset card (`uniform`, ...).
    fn name(&self) -> &'static str;

    /// Draws `round(ratio * positives.len())` distinct negatives, none in `known`
    /// (which must contain every positive). Same inputs and seed, same output.
    fn sample(
        &self,
        positives: &[Pair],
        known: &PairSet,
        ratio: f64,
        seed: u64,
    ) -> Result<Vec<Pair>>;
}

/// The samplers this crate provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplerKind {
    /// [`Uniform`]: the reference's sampler.
    #[default]
    Uniform,
    /// [`DegreeMatched`].
    DegreeMatched,
    /// [`CorruptOneSide`].
    CorruptOneSide,
}

impl SamplerKind {
    /// The sampler itself.
    pub fn sampler(self) -> Box<dyn NegativeSampler + Send + Sync> {
        match self {
            SamplerKind::Uniform => Box::new(Uniform),
            SamplerKind::DegreeMatched => Box::new(DegreeMatched),
            SamplerKind::CorruptOneSide => Box::new(CorruptOneSide),
        }
    }

    /// The name as used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Uniform => "uniform",
            SamplerKind::DegreeMatched => "degree-matched",
            SamplerKind::CorruptOneSide => "corrupt-one-side",
        }
    }
}

impl FromStr for SamplerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "uniform" => Ok(SamplerKind::Uniform),
            "degree-matched" => Ok(SamplerKind::DegreeMatched),
            "corrupt-one-side" => Ok(SamplerKind::CorruptOneSide),
            _ => Err(Error::Config {
                field: "negatives",
                reason: format!(
                    "unknown sampler {s:?} (expected uniform, degree-matched or corrupt-one-side)"
                ),
            }),
        }
    }
}

impl std::fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of negatives for `n` positives at `ratio`, validating the ratio.
pub fn negative_count(n: usize, ratio: f64) -> Result<usize> {
    if !ratio.is_finite() || ratio <= 0.0 || ratio > 1000.0 {
        return Err(Error::Config {
            field: "ratio",
            reason: format!("negatives per positive must be in (0, 1000], got {ratio}"),
        });
    }
    Ok((ratio * n as f64).round() as usize)
}

/// Indices of the positives that negatives are derived from: `floor(ratio)` full
/// passes plus a random subset for the remainder.
fn source_rows(n_pos: usize, n_neg: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let mut rows = Vec::with_capacity(n_neg);
    if n_pos == 0 {
        return rows;
    }
    while rows.len() + n_pos <= n_neg {
        rows.extend(0..n_pos);
    }
    let rest = n_neg - rows.len();
    if rest > 0 {
        let mut idx: Vec<usize> = (0..n_pos).collect();
        let (chosen, _) = idx.partial_shuffle(rng, rest);
        let mut chosen = chosen.to_vec();
        chosen.sort_unstable();
        rows.extend(chosen);
    }
    rows
}

/// Distinct values in first-seen order.
fn distinct(values: impl Iterator<Item = u32>) -> Vec<u32> {
    let mut seen = std::collections::HashSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}

fn max_index(values: &[u32]) -> usize {
    values.iter().copied().max().map_or(0, |m| m as usize + 1)
}

fn check_known(name: &'static str, positives: &[Pair], known: &PairSet) -> Result<()> {
    if let Some(p) = positives
        .iter()
        .find(|p| !known.contains(&pair_key(p.0, p.1)))
    {
        return Err(Error::Config {
            field: "known",
            reason: format!("{name} sampler: positive pair {p:?} is missing from the known set"),
        });
    }
    Ok(())
}

/// The reference's sampler: a gene drawn uniformly from the distinct positive
/// genes and a disease uniformly from the distinct positive diseases, rejected if
/// known or already drawn.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uniform;

impl NegativeSampler for Uniform {
    fn name(&self) -> &'static str {
        "uniform"
    }

    fn sample(
        &self,
        positives: &[Pair],
        known: &PairSet,
        ratio: f64,
        seed: u64,
    ) -> Result<Vec<Pair>> {
        let n = negative_count(positives.len(), ratio)?;
        check_known(self.name(), positives, known)?;
        let genes = distinct(positives.iter().map(|p| p.0));
        let diseases = distinct(positives.iter().map(|p| p.1));
        let mut is_gene = vec![false; max_index(&genes)];
        genes.iter().for_each(|&g| is_gene[g as usize] = true);
        let mut is_disease = vec![false; max_index(&diseases)];
        diseases.iter().for_each(|&d| is_disease[d as usize] = true);
        let blocked = known
            .iter()
            .filter(|&&k| {
                let (g, d) = ((k >> 32) as usize, (k & 0xFFFF_FFFF) as usize);
                g < is_gene.len() && is_gene[g] && d < is_disease.len() && is_disease[d]
            })
            .count();
        let available = genes.len() * diseases.len() - blocked;
        if n > available {
            return Err(Error::Infeasible {
                sampler: self.name(),
                requested: n,
                reason: format!(
                    "only {available} unassociated pairs among {} genes x {} diseases",
                    genes.len(),
                    diseases.len()
                ),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        if n * 2 > available {
            // Dense case: enumerate the candidates and take a random subset.
            let mut all: Vec<Pair> = Vec::with_capacity(available);
            for &g in &genes {
                for &d in &diseases {
                    if !known.contains(&pair_key(g, d)) {
                        all.push((g, d));
                    }
                }
            }
            let (chosen, _) = all.partial_shuffle(&mut rng, n);
            return Ok(chosen.to_vec());
        }
        let mut used = PairSet::default();
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let g = genes[rng.random_range(0..genes.len())];
            let d = diseases[rng.random_range(0..diseases.len())];
            let k = pair_key(g, d);
            if !known.contains(&k) && used.insert(k) {
                out.push((g, d));
            }
        }
        Ok(out)
    }
}

/// Degree-matched negatives: the multiset of genes (and of diseases) among the
/// negatives equals that among the (ratio-scaled) positives exactly, so entity
/// popularity no longer predicts the label.
///
/// The diseases of the source positives are shuffled against their genes; pairs
/// that are known or repeated are repaired by swapping diseases with random other
/// slots (which keeps both multisets), as in configuration-model rewiring.
#[derive(Debug, Clone, Copy, Default)]
pub struct DegreeMatched;

impl NegativeSampler for DegreeMatched {
    fn name(&self) -> &'static str {
        "degree-matched"
    }

    fn sample(
        &self,
        positives: &[Pair],
        known: &PairSet,
        ratio: f64,
        seed: u64,
    ) -> Result<Vec<Pair>> {
        let n = negative_count(positives.len(), ratio)?;
        check_known(self.name(), positives, known)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = source_rows(positives.len(), n, &mut rng);
        let genes: Vec<u32> = rows.iter().map(|&r| positives[r].0).collect();
        let mut dis: Vec<u32> = rows.iter().map(|&r| positives[r].1).collect();
        dis.shuffle(&mut rng);
        let mut used = PairSet::default();
        let mut bad = Vec::new();
        let mut is_bad = vec![false; n];
        for i in 0..n {
            let k = pair_key(genes[i], dis[i]);
            if known.contains(&k) || !used.insert(k) {
                bad.push(i);
                is_bad[i] = true;
            }
        }
        let budget = 2_000 * (bad.len() as u64) + 100_000;
        let mut attempts = 0u64;
        while let Some(&i) = bad.last() {
            attempts += 1;
            if attempts > budget {
                return Err(Error::Infeasible {
                    sampler: self.name(),
                    requested: n,
                    reason: format!(
                        "{} pairs still collide with known associations or each other after {budget} swap attempts",
                        bad.len()
                    ),
                });
            }
            let j = rng.random_range(0..n);
            if j == i || is_bad[j] {
                continue;
            }
            let (gi, di, gj, dj) = (genes[i], dis[i], genes[j], dis[j]);
            let a = pair_key(gi, dj);
            let b = pair_key(gj, di);
            if a == b || known.contains(&a) || known.contains(&b) {
                continue;
            }
            let kj = pair_key(gj, dj);
            used.remove(&kj);
            if used.contains(&a) || used.contains(&b) {
                used.insert(kj);
                continue;
            }
            used.insert(a);
            used.insert(b);
            dis.swap(i, j);
            is_bad[i] = false;
            bad.pop();
        }
        Ok(genes.into_iter().zip(dis).collect())
    }
}

/// Corrupt one side of each (source) positive: keep the gene and draw another
/// disease, or keep the disease and draw another gene (side chosen by a fair
/// coin). The replacement is drawn in proportion to its number of positives, so
/// the kept side matches the positives exactly and the drawn side in expectation.
#[derive(Debug, Clone, Copy, Default)]
pub struct CorruptOneSide;

/// Random draws tried per side before an exhaustive scan.
const CORRUPT_TRIES: usize = 64;

impl NegativeSampler for CorruptOneSide {
    fn name(&self) -> &'static str {
        "corrupt-one-side"
    }

    fn sample(
        &self,
        positives: &[Pair],
        known: &PairSet,
        ratio: f64,
        seed: u64,
    ) -> Result<Vec<Pair>> {
        let n = negative_count(positives.len(), ratio)?;
        check_known(self.name(), positives, known)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let rows = source_rows(positives.len(), n, &mut rng);
        let gene_occ: Vec<u32> = positives.iter().map(|p| p.0).collect();
        let dis_occ: Vec<u32> = positives.iter().map(|p| p.1).collect();
        let genes = distinct(gene_occ.iter().copied());
        let diseases = distinct(dis_occ.iter().copied());
        let mut used = PairSet::default();
        let mut out = Vec::with_capacity(n);
        for r in rows {
            let (g, d) = positives[r];
            let keep_gene_first = rng.random_bool(0.5);
            let mut found = None;
            'sides: for keep_gene in [keep_gene_first, !keep_gene_first] {
                for _ in 0..CORRUPT_TRIES {
                    let cand = if keep_gene {
                        (g, dis_occ[rng.random_range(0..dis_occ.len())])
                    } else {
                        (gene_occ[rng.random_range(0..gene_occ.len())], d)
                    };
                    let k = pair_key(cand.0, cand.1);
                    if !known.contains(&k) && !used.contains(&k) {
                        found = Some(cand);
                        break 'sides;
                    }
                }
            }
            if found.is_none() {
                // Exhaustive scan from a random offset, both sides.
                'scan: for keep_gene in [keep_gene_first, !keep_gene_first] {
                    let pool = if keep_gene { &diseases } else { &genes };
                    let start = rng.random_range(0..pool.len());
                    for s in 0..pool.len() {
                        let e = pool[(start + s) % pool.len()];
                        let cand = if keep_gene { (g, e) } else { (e, d) };
                        let k = pair_key(cand.0, cand.1);
                        if !known.contains(&k) && !used.contains(&k) {
                            found = Some(cand);
                            break 'scan;
                        }
                    }
                }
            }
            let Some(cand) = found else {
                return Err(Error::Infeasible {
                    sampler: self.name(),
                    requested: n,
                    reason: format!(
                        "gene {g} / disease {d}: every corruption of either side is a known association or already drawn"
                    ),
                });
            };
            used.insert(pair_key(cand.0, cand.1));
            out.push(cand);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn known_of(pos: &[Pair], extra: &[Pair]) -> PairSet {
        pos.iter()
            .chain(extra)
            .map(|p| pair_key(p.0, p.1))
            .collect()
    }

    fn counts(v: impl Iterator<Item = u32>) -> HashMap<u32, usize> {
        let mut m = HashMap::new();
        v.for_each(|x| *m.entry(x).or_default() += 1);
        m
    }

    /// Sparse random bipartite graphs: genes x diseases with density at most ~0.25,
    /// plus extra known (non-positive) associations.
    fn graph() -> impl Strategy<Value = (Vec<Pair>, Vec<Pair>)> {
        (6u32..40, 6u32..40).prop_flat_map(|(ng, nd)| {
            let cells = (ng * nd) as usize;
            (
                proptest::collection::hash_set((0..ng, 0..nd), 1..=cells / 4),
                proptest::collection::vec((0..ng, 0..nd), 0..cells / 10),
            )
                .prop_map(|(pos, extra)| {
                    let mut pos: Vec<Pair> = pos.into_iter().collect();
                    pos.sort_unstable();
                    (pos, extra)
                })
        })
    }

    fn check_common(pos: &[Pair], known: &PairSet, neg: &[Pair], ratio: f64) {
        assert_eq!(
            neg.len(),
            (ratio * pos.len() as f64).round() as usize,
            "exact count"
        );
        let genes: std::collections::HashSet<u32> = pos.iter().map(|p| p.0).collect();
        let diseases: std::collections::HashSet<u32> = pos.iter().map(|p| p.1).collect();
        let mut seen = PairSet::default();
        for p in neg {
            let k = pair_key(p.0, p.1);
            assert!(!known.contains(&k), "negative {p:?} is a known association");
            assert!(seen.insert(k), "negative {p:?} emitted twice");
            assert!(
                genes.contains(&p.0) && diseases.contains(&p.1),
                "entity outside the positives"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn uniform_never_emits_known_pairs_and_is_deterministic((pos, extra) in graph(), seed in any::<u64>(), ratio in prop_oneof![Just(1.0), Just(0.5), Just(2.0)]) {
            let known = known_of(&pos, &extra);
            match Uniform.sample(&pos, &known, ratio, seed) {
                Ok(neg) => {
                    check_common(&pos, &known, &neg, ratio);
                    prop_assert_eq!(neg, Uniform.sample(&pos, &known, ratio, seed).unwrap());
                }
                Err(Error::Infeasible { .. }) => {
                    // Only when there really are too few unassociated pairs.
                    let g: std::collections::HashSet<u32> = pos.iter().map(|p| p.0).collect();
                    let d: std::collections::HashSet<u32> = pos.iter().map(|p| p.1).collect();
                    let free = g.iter().flat_map(|&a| d.iter().map(move |&b| (a, b)))
                        .filter(|p| !known.contains(&pair_key(p.0, p.1))).count();
                    prop_assert!(free < (ratio * pos.len() as f64).round() as usize);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn degree_matched_matches_degrees_exactly((pos, extra) in graph(), seed in any::<u64>(), ratio in prop_oneof![Just(1.0), Just(2.0)]) {
            let known = known_of(&pos, &extra);
            match DegreeMatched.sample(&pos, &known, ratio, seed) {
                Ok(neg) => {
                    check_common(&pos, &known, &neg, ratio);
                    let k = ratio as usize;
                    let scale = |m: HashMap<u32, usize>| m.into_iter().map(|(e, c)| (e, c * k)).collect::<HashMap<_, _>>();
                    prop_assert_eq!(counts(neg.iter().map(|p| p.0)), scale(counts(pos.iter().map(|p| p.0))));
                    prop_assert_eq!(counts(neg.iter().map(|p| p.1)), scale(counts(pos.iter().map(|p| p.1))));
                    prop_assert_eq!(neg, DegreeMatched.sample(&pos, &known, ratio, seed).unwrap());
                }
                // Some tiny graphs admit no exact degree-matched arrangement; the
                // sampler must then say so rather than emit a bad pair.
                Err(Error::Infeasible { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn corrupt_one_side_keeps_one_side((pos, extra) in graph(), seed in any::<u64>(), ratio in prop_oneof![Just(1.0), Just(1.5)]) {
            let known = known_of(&pos, &extra);
            match CorruptOneSide.sample(&pos, &known, ratio, seed) {
                Ok(neg) => {
                    check_common(&pos, &known, &neg, ratio);
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let rows = source_rows(pos.len(), neg.len(), &mut rng);
                    for (r, nw) in rows.iter().zip(&neg) {
                        let p = pos[*r];
                        prop_assert!(p.0 == nw.0 || p.1 == nw.1, "{:?} vs {:?}", p, nw);
                    }
                    prop_assert_eq!(neg, CorruptOneSide.sample(&pos, &known, ratio, seed).unwrap());
                }
                Err(Error::Infeasible { .. }) => {}
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    #[test]
    fn degree_matched_succeeds_on_sparse_graph() {
        // 200 genes x 100 diseases, each gene linked to 3 diseases: always feasible.
        let pos: Vec<Pair> = (0..200u32)
            .flat_map(|g| (0..3).map(move |k| (g, (g * 7 + k * 13) % 100)))
            .collect();
        let pos: Vec<Pair> = {
            let mut s = std::collections::HashSet::new();
            pos.into_iter().filter(|p| s.insert(*p)).collect()
        };
        let known = known_of(&pos, &[]);
        for seed in 0..5 {
            let neg = DegreeMatched.sample(&pos, &known, 1.0, seed).unwrap();
            check_common(&pos, &known, &neg, 1.0);
        }
        let neg = CorruptOneSide.sample(&pos, &known, 1.0, 1).unwrap();
        check_common(&pos, &known, &neg, 1.0);
    }

    #[test]
    fn different_seeds_differ_and_bad_ratio_is_rejected() {
        let pos: Vec<Pair> = (0..50u32).map(|g| (g, g % 10)).collect();
        let known = known_of(&pos, &[]);
        assert_ne!(
            Uniform.sample(&pos, &known, 1.0, 1).unwrap(),
            Uniform.sample(&pos, &known, 1.0, 2).unwrap()
        );
        for r in [0.0, -1.0, f64::NAN] {
            assert!(matches!(
                Uniform.sample(&pos, &known, r, 1),
                Err(Error::Config { .. })
            ));
        }
    }

    #[test]
    fn impossible_requests_are_errors() {
        // One gene associated with both diseases: no negative exists.
        let pos: Vec<Pair> = vec![(0, 0), (0, 1)];
        let known = known_of(&pos, &[]);
        for k in [
            SamplerKind::Uniform,
            SamplerKind::DegreeMatched,
            SamplerKind::CorruptOneSide,
        ] {
            assert!(
                matches!(
                    k.sampler().sample(&pos, &known, 1.0, 0),
                    Err(Error::Infeasible { .. })
                ),
                "{k}"
            );
        }
        // Unknown positives are refused.
        assert!(matches!(
            Uniform.sample(&pos, &PairSet::default(), 1.0, 0),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn names_parse() {
        for k in [
            SamplerKind::Uniform,
            SamplerKind::DegreeMatched,
            SamplerKind::CorruptOneSide,
        ] {
            assert_eq!(k.as_str().parse::<SamplerKind>().unwrap(), k);
            assert_eq!(k.sampler().name(), k.as_str());
        }
        assert!("popular".parse::<SamplerKind>().is_err());
    }
}
