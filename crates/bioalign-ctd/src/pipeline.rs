//! The end-to-end dataset builder: CTD file in, splits, card and plots out.
//!
//! Steps (SPEC.md section 1, with its flaws fixed): read and clean, evidence
//! filter, de-duplicate, sample negatives (excluding every pair the file
//! associates), concatenate and shuffle, stratified pair split, entity-held-out
//! split, statistics, popularity shortcut and leakage report.
//!
//! Each random stage has its own seed derived from the master seed (SplitMix64
//! of `seed` and a stage number), so changing the sampler does not move the
//! held-out entities and vice versa.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::dataset::{EvidenceFilter, Positives, collect_positives};
use crate::error::{Error, Result};
use crate::output::{Example, write_csv, write_parquet};
use crate::reader::{BadRowPolicy, CtdReader, ReadOptions, ReadStats};
use crate::sampler::SamplerKind;
use crate::split::{
    HeldOut, Holdout, HoldoutEntities, LeakageReport, Split, entity_holdout_split, leakage_report,
    stratified_split,
};
use crate::stats::{
    Count, LengthStats, PopularityShortcut, PubmedStats, length_stats, popularity_shortcut,
    pubmed_stats, top_entities,
};
use crate::template::{Fields, SENTENCE_TEMPLATE, Template};
use crate::{dataset::CleanStats, plots};

/// Parameters of a run (all recorded in the dataset card).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PrepareConfig {
    /// Negative sampler.
    pub negatives: SamplerKind,
    /// Negatives per positive.
    pub ratio: f64,
    /// Master seed.
    pub seed: u64,
    /// Test fraction of the stratified pair split.
    pub test_fraction: f64,
    /// Fraction of genes and of diseases held out (ignored with `holdout_entities`).
    pub holdout_fraction: f64,
    /// Given held-out entity lists (e.g. the reference's `prep_metadata.json`).
    #[serde(skip)]
    pub holdout_entities: Option<HoldoutEntities>,
    /// Where the given lists came from, for the card.
    pub holdout_entities_source: Option<String>,
    /// Evidence filter.
    pub evidence: EvidenceFilter,
    /// Statement template (`{gene}`, `{disease}`).
    pub sentence_template: String,
    /// Malformed-row policy.
    pub bad_rows: BadRowPolicy,
}

impl Default for PrepareConfig {
    /// The reference's settings: uniform negatives 1:1, seed 42, 20% test, 10% held out.
    fn default() -> Self {
        Self {
            negatives: SamplerKind::Uniform,
            ratio: 1.0,
            seed: 42,
            test_fraction: 0.2,
            holdout_fraction: 0.1,
            holdout_entities: None,
            holdout_entities_source: None,
            evidence: EvidenceFilter::default(),
            sentence_template: SENTENCE_TEMPLATE.to_string(),
            bad_rows: BadRowPolicy::Fail,
        }
    }
}

/// Random stages, each with its own derived seed.
#[derive(Debug, Clone, Copy)]
enum Stage {
    Sampler = 1,
    Shuffle = 2,
    PairSplit = 3,
    Holdout = 4,
}

/// SplitMix64 of `seed` and `stage`: independent, reproducible sub-seeds.
fn stage_seed(seed: u64, stage: Stage) -> u64 {
    let mut z = seed.wrapping_add((stage as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the input came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Provenance {
    /// Input path as given.
    pub input: PathBuf,
    /// SHA-256 of the input file's bytes (as stored, compressed or not).
    pub input_sha256: Option<String>,
    /// Size of the input file in bytes.
    pub input_bytes: u64,
    /// True if the input was gzip.
    pub gzip: bool,
    /// Column names from the `# Fields:` header.
    pub columns: Vec<String>,
    /// Producing library and version.
    pub library: String,
}

/// Rows of one split part by label.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartSize {
    /// All rows.
    pub rows: usize,
    /// Label 1.
    pub positives: usize,
    /// Label 0.
    pub negatives: usize,
}

/// One split's description in the card.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SplitCard {
    /// Training part.
    pub train: PartSize,
    /// Test part.
    pub test: PartSize,
    /// Leakage of entities from train into test.
    pub leakage: LeakageReport,
    /// The popularity shortcut AUC on each part.
    pub popularity_shortcut: PopularityShortcut,
}

/// The held-out entities in the card (counts, plus any given names not found).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeldOutCard {
    /// Held-out genes.
    pub genes: usize,
    /// Held-out diseases.
    pub diseases: usize,
    /// Given gene names absent from the data.
    pub unknown_genes: Vec<String>,
    /// Given disease names absent from the data.
    pub unknown_diseases: Vec<String>,
}

/// `dataset_card.json`: provenance, parameters and statistics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DatasetCard {
    /// Input and producer.
    pub provenance: Provenance,
    /// Every parameter.
    pub parameters: PrepareConfig,
    /// Reader counters.
    pub reading: ReadStats,
    /// Cleaning counters.
    pub cleaning: CleanStats,
    /// All rows.
    pub rows: PartSize,
    /// Distinct genes among the positives.
    pub distinct_genes: usize,
    /// Distinct diseases among the positives.
    pub distinct_diseases: usize,
    /// Sentence lengths over all rows.
    pub sentence_length: LengthStats,
    /// PubMed IDs per positive.
    pub pubmed_ids_per_positive: PubmedStats,
    /// The 15 genes with most positives.
    pub top_genes: Vec<Count>,
    /// The 15 diseases with most positives.
    pub top_diseases: Vec<Count>,
    /// Stratified pair split.
    pub pair_split: SplitCard,
    /// Entity-held-out split.
    pub entity_heldout_split: SplitCard,
    /// Entities held out.
    pub held_out: HeldOutCard,
}

/// A built dataset: shuffled rows, both splits and the card.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// All rows after shuffling.
    pub rows: Vec<Example>,
    /// Stratified pair split (indices into `rows`).
    pub pair_split: Split,
    /// Entity-held-out split.
    pub entity_split: Split,
    /// Entities held out.
    pub held_out: HeldOut,
    /// The dataset card.
    pub card: DatasetCard,
}

fn part(rows: &[Example], idx: &[usize]) -> PartSize {
    let positives = idx.iter().filter(|&&i| rows[i].label == 1).count();
    PartSize {
        rows: idx.len(),
        positives,
        negatives: idx.len() - positives,
    }
}

fn split_card(rows: &[Example], names: &[(&str, &str)], split: &Split) -> SplitCard {
    SplitCard {
        train: part(rows, &split.train),
        test: part(rows, &split.test),
        leakage: leakage_report(names, split),
        popularity_shortcut: popularity_shortcut(rows, split),
    }
}

/// Validates `cfg` before any work.
pub fn validate(cfg: &PrepareConfig) -> Result<Template> {
    for (field, f) in [
        ("test_fraction", cfg.test_fraction),
        ("holdout_fraction", cfg.holdout_fraction),
    ] {
        if !(f.is_finite() && f > 0.0 && f < 1.0) {
            return Err(Error::Config {
                field,
                reason: format!("must be strictly between 0 and 1, got {f}"),
            });
        }
    }
    crate::sampler::negative_count(1, cfg.ratio)?;
    Template::parse_sentence(&cfg.sentence_template)
}

/// Builds the dataset from the CTD file at `input`.
///
/// `progress(records, raw_bytes)` is called every million records while reading.
pub fn prepare(
    input: &Path,
    cfg: &PrepareConfig,
    progress: impl FnMut(u64, u64),
) -> Result<Prepared> {
    let template = validate(cfg)?;
    let mut reader = CtdReader::open(
        input,
        ReadOptions {
            bad_rows: cfg.bad_rows,
            delimiter: None,
            hash: true,
        },
    )?;
    let positives = collect_positives(&mut reader, &cfg.evidence, progress)?;
    let provenance = Provenance {
        input: input.to_path_buf(),
        input_sha256: positives.sha256.clone(),
        input_bytes: reader.raw_bytes(),
        gzip: reader.is_gzip(),
        columns: reader.columns().names.clone(),
        library: format!("bioalign-ctd {}", env!("CARGO_PKG_VERSION")),
    };
    build(positives, provenance, cfg, &template)
}

/// Builds the dataset from already collected positives (see [`prepare`]).
pub fn build(
    positives: Positives,
    provenance: Provenance,
    cfg: &PrepareConfig,
    template: &Template,
) -> Result<Prepared> {
    let pairs: Vec<(u32, u32)> = positives
        .pairs
        .iter()
        .map(|p| (p.gene, p.disease))
        .collect();
    let negatives = cfg.negatives.sampler().sample(
        &pairs,
        &positives.known,
        cfg.ratio,
        stage_seed(cfg.seed, Stage::Sampler),
    )?;

    let g = &positives.genes;
    let d = &positives.diseases;
    let make = |gene: u32, disease: u32, pubmed_ids: Vec<u64>, label: u8| -> Result<Example> {
        let (gs, ds) = (g.name(gene), d.name(disease));
        Ok(Example {
            gene_symbol: gs.to_string(),
            gene_id: g.id(gene).and_then(|s| s.parse().ok()),
            disease_name: ds.to_string(),
            disease_id: d.id(disease).map(str::to_string),
            text: template.render(&Fields {
                gene: Some(gs),
                disease: Some(ds),
                ..Default::default()
            })?,
            pubmed_ids,
            label,
        })
    };
    let mut rows = Vec::with_capacity(pairs.len() + negatives.len());
    for p in &positives.pairs {
        rows.push(make(p.gene, p.disease, p.pubmed_ids.clone(), 1)?);
    }
    for &(gene, disease) in &negatives {
        rows.push(make(gene, disease, Vec::new(), 0)?);
    }
    rows.shuffle(&mut ChaCha8Rng::seed_from_u64(stage_seed(
        cfg.seed,
        Stage::Shuffle,
    )));

    let labels: Vec<u8> = rows.iter().map(|e| e.label).collect();
    let pair_split = stratified_split(
        &labels,
        cfg.test_fraction,
        stage_seed(cfg.seed, Stage::PairSplit),
    )?;

    let names: Vec<(&str, &str)> = rows
        .iter()
        .map(|e| (e.gene_symbol.as_str(), e.disease_name.as_str()))
        .collect();
    let mut seen_g = crate::dataset::FxHashSet::default();
    let mut seen_d = crate::dataset::FxHashSet::default();
    let pos_genes: Vec<&str> = positives
        .pairs
        .iter()
        .map(|p| g.name(p.gene))
        .filter(|n| seen_g.insert(*n))
        .collect();
    let pos_diseases: Vec<&str> = positives
        .pairs
        .iter()
        .map(|p| d.name(p.disease))
        .filter(|n| seen_d.insert(*n))
        .collect();
    let holdout = match &cfg.holdout_entities {
        Some(h) => Holdout::Given(h.clone()),
        None => Holdout::Random {
            fraction: cfg.holdout_fraction,
            seed: stage_seed(cfg.seed, Stage::Holdout),
        },
    };
    let (entity_split, held_out) =
        entity_holdout_split(&names, &pos_genes, &pos_diseases, &holdout)?;

    let card = DatasetCard {
        provenance,
        parameters: cfg.clone(),
        reading: positives.read.clone(),
        cleaning: positives.clean.clone(),
        rows: part(&rows, &(0..rows.len()).collect::<Vec<_>>()),
        distinct_genes: pos_genes.len(),
        distinct_diseases: pos_diseases.len(),
        sentence_length: length_stats(rows.iter()),
        pubmed_ids_per_positive: pubmed_stats(rows.iter()),
        top_genes: top_entities(rows.iter(), |e| &e.gene_symbol, 15),
        top_diseases: top_entities(rows.iter(), |e| &e.disease_name, 15),
        pair_split: split_card(&rows, &names, &pair_split),
        entity_heldout_split: split_card(&rows, &names, &entity_split),
        held_out: HeldOutCard {
            genes: held_out.genes.len(),
            diseases: held_out.diseases.len(),
            unknown_genes: held_out.unknown_genes.clone(),
            unknown_diseases: held_out.unknown_diseases.clone(),
        },
    };
    drop(names);
    Ok(Prepared {
        rows,
        pair_split,
        entity_split,
        held_out,
        card,
    })
}

/// The split files written by [`write_outputs`], without extension.
pub const SPLIT_FILES: [&str; 4] = [
    "train",
    "test",
    "train_entity_heldout",
    "test_entity_heldout",
];

impl Prepared {
    /// Rows of one part, in dataset order.
    pub fn part(&self, idx: &[usize]) -> Vec<&Example> {
        idx.iter().map(|&i| &self.rows[i]).collect()
    }

    /// The four parts in the order of [`SPLIT_FILES`].
    pub fn parts(&self) -> [Vec<&Example>; 4] {
        [
            self.part(&self.pair_split.train),
            self.part(&self.pair_split.test),
            self.part(&self.entity_split.train),
            self.part(&self.entity_split.test),
        ]
    }
}

/// Writes `DIR/{train,test,train_entity_heldout,test_entity_heldout}.{parquet,csv}`,
/// `DIR/dataset_card.json`, `DIR/held_out_entities.json` and `DIR/plots/*.png`.
pub fn write_outputs(p: &Prepared, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for (name, rows) in SPLIT_FILES.iter().zip(p.parts()) {
        let pq = dir.join(format!("{name}.parquet"));
        write_parquet(&pq, &rows)?;
        let csv = dir.join(format!("{name}.csv"));
        write_csv(&csv, &rows)?;
        written.extend([pq, csv]);
    }
    let card = dir.join("dataset_card.json");
    let json = serde_json::to_vec_pretty(&p.card).map_err(|e| Error::Format {
        path: card.clone(),
        reason: format!("cannot serialise the card: {e}"),
    })?;
    bioalign_io::atomic_write_bytes(&card, &json)?;
    written.push(card);
    let held = dir.join("held_out_entities.json");
    let lists = HoldoutEntities {
        holdout_genes: p.held_out.genes.clone(),
        holdout_diseases: p.held_out.diseases.clone(),
    };
    let json = serde_json::to_vec_pretty(&lists).map_err(|e| Error::Format {
        path: held.clone(),
        reason: format!("cannot serialise the held-out lists: {e}"),
    })?;
    bioalign_io::atomic_write_bytes(&held, &json)?;
    written.push(held);
    written.extend(plots::write_plots(p, &dir.join("plots"))?);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_seeds_differ_and_are_stable() {
        let s: Vec<u64> = [
            Stage::Sampler,
            Stage::Shuffle,
            Stage::PairSplit,
            Stage::Holdout,
        ]
        .into_iter()
        .map(|st| stage_seed(42, st))
        .collect();
        let uniq: std::collections::HashSet<_> = s.iter().collect();
        assert_eq!(uniq.len(), 4);
        assert_eq!(stage_seed(42, Stage::Sampler), s[0]);
    }

    #[test]
    fn pairs_known_only_through_inference_never_become_negatives() {
        // Positives A-X and B-Y; A-Y is associated only through a chemical
        // (no direct evidence, filtered out). The one unassociated pair is B-X.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.csv");
        std::fs::write(
            &path,
            "# Fields:\n# GeneSymbol,GeneID,DiseaseName,DiseaseID,DirectEvidence,InferenceChemicalName,InferenceScore,OmimIDs,PubMedIDs\n\
             A,1,X,MESH:D1,marker/mechanism,,,,11\n\
             B,2,Y,MESH:D2,therapeutic,,,,\n\
             A,1,Y,MESH:D2,,Arsenic,3.2,,12|13\n",
        )
        .unwrap();
        for negatives in [
            SamplerKind::Uniform,
            SamplerKind::DegreeMatched,
            SamplerKind::CorruptOneSide,
        ] {
            let cfg = PrepareConfig {
                negatives,
                ratio: 0.5,
                test_fraction: 0.5,
                holdout_fraction: 0.5,
                ..Default::default()
            };
            match prepare(&path, &cfg, |_, _| {}) {
                Ok(p) => {
                    let neg: Vec<_> = p.rows.iter().filter(|e| e.label == 0).collect();
                    assert_eq!(neg.len(), 1, "{negatives}");
                    assert_eq!(neg[0].text, "B is associated with X", "{negatives}");
                    assert_eq!(p.card.cleaning.filtered_out, 1);
                    assert_eq!(p.card.cleaning.known_pairs, 3);
                }
                // Degree-matched may find no exact arrangement; it must not cheat.
                Err(Error::Infeasible { .. }) if negatives == SamplerKind::DegreeMatched => {}
                Err(e) => panic!("{negatives}: {e}"),
            }
        }
    }

    #[test]
    fn bad_config_is_rejected_up_front() {
        let c = PrepareConfig {
            test_fraction: 1.5,
            ..Default::default()
        };
        assert!(matches!(
            validate(&c),
            Err(Error::Config {
                field: "test_fraction",
                ..
            })
        ));
        let c = PrepareConfig {
            sentence_template: "{gene} {answer}".into(),
            ..Default::default()
        };
        assert!(matches!(validate(&c), Err(Error::Template { .. })));
        let c = PrepareConfig {
            ratio: 0.0,
            ..Default::default()
        };
        assert!(matches!(
            validate(&c),
            Err(Error::Config { field: "ratio", .. })
        ));
    }
}
