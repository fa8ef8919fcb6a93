//! Cleaning, the evidence filter and de-duplication: CTD rows to positive pairs.
//!
//! Every `(gene, disease)` pair seen in the file, whatever its evidence (curated,
//! inferred through a chemical, filtered out), is kept in [`Positives::known`], so
//! that no sampler can emit a pair that CTD associates as a "false" statement.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{Error, Result};
use crate::reader::{CtdReader, CtdRecord, ReadStats};

/// A fast, non-cryptographic hasher for integer keys (multiply-rotate as FxHash,
/// with a MurmurHash3-style finaliser).
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    /// Mixes high bits into low ones: the table index uses the low bits, and
    /// after a multiplication those depend only on the key's low bits (here the
    /// disease index alone), which would pile pairs into few buckets.
    #[inline]
    fn finish(&self) -> u64 {
        let z = self.0 ^ (self.0 >> 33);
        let z = z.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        z ^ (z >> 33)
    }
}

/// Hash builder for [`FxHasher`].
pub type FxBuild = BuildHasherDefault<FxHasher>;

/// A hash set with [`FxHasher`].
pub type FxHashSet<T> = std::collections::HashSet<T, FxBuild>;

/// A hash map with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// A set of `(gene, disease)` pairs packed as `gene << 32 | disease`.
pub type PairSet = std::collections::HashSet<u64, FxBuild>;

/// Packs a pair of entity indices into one key.
#[inline]
pub fn pair_key(gene: u32, disease: u32) -> u64 {
    ((gene as u64) << 32) | disease as u64
}

/// Interned names with dense `u32` indices in first-seen order.
#[derive(Debug, Default, Clone)]
pub struct Interner {
    index: HashMap<String, u32, FxBuild>,
    last: Option<u32>,
    names: Vec<String>,
    ids: Vec<Option<String>>,
}

impl Interner {
    /// Index of `name`, adding it (with its external `id`) if new.
    pub fn intern(&mut self, name: &str, id: impl FnOnce() -> Option<String>) -> u32 {
        // CTD files are sorted by gene: the previous name is the common hit.
        if let Some(i) = self.last
            && self.names[i as usize] == name
        {
            return i;
        }
        if let Some(&i) = self.index.get(name) {
            self.last = Some(i);
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(name.to_string(), i);
        self.names.push(name.to_string());
        self.ids.push(id());
        self.last = Some(i);
        i
    }

    /// Index of `name`, if known.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    /// Name of index `i`.
    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    /// External ID (GeneID / DiseaseID) first seen with index `i`.
    pub fn id(&self, i: u32) -> Option<&str> {
        self.ids[i as usize].as_deref()
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Which rows count as positives: `DirectEvidence` contains any of `terms`
/// (case-insensitive). An empty list keeps every row, inferred ones included.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EvidenceFilter {
    /// Lower-case terms to look for.
    pub terms: Vec<String>,
}

impl Default for EvidenceFilter {
    /// The reference's filter: `marker/mechanism` or `therapeutic`.
    fn default() -> Self {
        Self {
            terms: vec!["marker/mechanism".into(), "therapeutic".into()],
        }
    }
}

impl EvidenceFilter {
    /// A filter over the given terms (lower-cased).
    pub fn new<S: AsRef<str>>(terms: impl IntoIterator<Item = S>) -> Self {
        Self {
            terms: terms
                .into_iter()
                .map(|t| t.as_ref().trim().to_lowercase())
                .collect(),
        }
    }

    /// True if the record passes.
    pub fn matches(&self, rec: &CtdRecord) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        rec.direct_evidence.iter().any(|e| {
            let e = e.to_ascii_lowercase();
            self.terms.iter().any(|t| e.contains(t.as_str()))
        })
    }
}

/// One positive association after de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Positive {
    /// Gene index in [`Positives::genes`].
    pub gene: u32,
    /// Disease index in [`Positives::diseases`].
    pub disease: u32,
    /// PubMed IDs merged over the duplicate rows, first-seen order, no repeats.
    pub pubmed_ids: Vec<u64>,
}

/// Counters of the cleaning steps.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CleanStats {
    /// Records read.
    pub rows: u64,
    /// Rows dropped because the gene symbol or disease name was empty after trimming.
    pub missing_name: u64,
    /// Rows dropped by the evidence filter.
    pub filtered_out: u64,
    /// Rows that passed the filter but repeated a pair already kept (PubMed IDs merged).
    pub duplicates_merged: u64,
    /// Distinct pairs associated through any evidence (the negatives' exclusion set).
    pub known_pairs: u64,
    /// Distinct genes / diseases over all rows.
    pub all_genes: u64,
    /// Distinct diseases over all rows.
    pub all_diseases: u64,
}

/// Positives with their vocabularies and the set of all known associations.
#[derive(Debug, Clone, Default)]
pub struct Positives {
    /// Genes seen in any row.
    pub genes: Interner,
    /// Diseases seen in any row.
    pub diseases: Interner,
    /// De-duplicated positives, in file order of first occurrence.
    pub pairs: Vec<Positive>,
    /// Every pair the file associates through any evidence.
    pub known: PairSet,
    /// Cleaning counters.
    pub clean: CleanStats,
    /// Reader counters.
    pub read: ReadStats,
    /// SHA-256 of the input, if the reader hashed it.
    pub sha256: Option<String>,
}

/// How often [`collect_positives`] calls its progress callback, in records.
pub const PROGRESS_EVERY: u64 = 1_000_000;

/// Reads every record, trims names, drops rows without a gene or disease, keeps
/// rows passing `filter` as positives (merging duplicate pairs' PubMed IDs) and
/// records every pair seen in [`Positives::known`].
///
/// `progress(records, raw_bytes)` is called every [`PROGRESS_EVERY`] records.
pub fn collect_positives(
    reader: &mut CtdReader,
    filter: &EvidenceFilter,
    mut progress: impl FnMut(u64, u64),
) -> Result<Positives> {
    let mut out = Positives::default();
    let mut slot: HashMap<u64, usize, FxBuild> = HashMap::default();
    let mut rec = CtdRecord::default();
    while reader.read_record(&mut rec)? {
        out.clean.rows += 1;
        if out.clean.rows % PROGRESS_EVERY == 0 {
            progress(out.clean.rows, reader.raw_bytes());
        }
        let gene = rec.gene_symbol.trim();
        let disease = rec.disease_name.trim();
        if gene.is_empty() || disease.is_empty() {
            out.clean.missing_name += 1;
            continue;
        }
        let g = out
            .genes
            .intern(gene, || rec.gene_id.map(|i| i.to_string()));
        let d = out.diseases.intern(disease, || {
            let id = rec.disease_id.trim();
            (!id.is_empty()).then(|| id.to_string())
        });
        let key = pair_key(g, d);
        out.known.insert(key);
        if !filter.matches(&rec) {
            out.clean.filtered_out += 1;
            continue;
        }
        match slot.get(&key) {
            Some(&i) => {
                out.clean.duplicates_merged += 1;
                let p = &mut out.pairs[i];
                for id in &rec.pubmed_ids {
                    if !p.pubmed_ids.contains(id) {
                        p.pubmed_ids.push(*id);
                    }
                }
            }
            None => {
                slot.insert(key, out.pairs.len());
                let mut ids = Vec::with_capacity(rec.pubmed_ids.len());
                for id in &rec.pubmed_ids {
                    if !ids.contains(id) {
                        ids.push(*id);
                    }
                }
                out.pairs.push(Positive {
                    gene: g,
                    disease: d,
                    pubmed_ids: ids,
                });
            }
        }
    }
    out.clean.known_pairs = out.known.len() as u64;
    out.clean.all_genes = out.genes.len() as u64;
    out.clean.all_diseases = out.diseases.len() as u64;
    out.read = reader.stats().clone();
    out.sha256 = reader.sha256_hex();
    if out.pairs.is_empty() {
        return Err(Error::NoPositives {
            path: reader.path().to_path_buf(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::ReadOptions;

    const HEADER: &str =
        "# Fields:\n# GeneSymbol,GeneID,DiseaseName,DiseaseID,DirectEvidence,OmimIDs,PubMedIDs\n";

    fn positives(body: &str, filter: &EvidenceFilter) -> Result<Positives> {
        let mut r = CtdReader::from_reader(
            "t.csv",
            std::io::Cursor::new(format!("{HEADER}{body}").into_bytes()),
            ReadOptions::default(),
        )?;
        collect_positives(&mut r, filter, |_, _| {})
    }

    #[test]
    fn trims_filters_and_merges_duplicates() {
        let body = " A ,1, Flu ,MESH:D1,Marker/Mechanism,,10|11\n\
                    A,1,Flu,MESH:D1,therapeutic,,11|12\n\
                    B,2,Flu,MESH:D1,,,\n\
                    ,3,Flu,MESH:D1,therapeutic,,\n\
                    C,4,Cold,MESH:D2,therapeutic,,\n";
        let p = positives(body, &EvidenceFilter::default()).unwrap();
        assert_eq!(p.pairs.len(), 2);
        assert_eq!(p.genes.name(p.pairs[0].gene), "A");
        assert_eq!(p.diseases.name(p.pairs[0].disease), "Flu");
        assert_eq!(p.pairs[0].pubmed_ids, [10, 11, 12]);
        assert_eq!(p.clean.duplicates_merged, 1);
        assert_eq!(p.clean.filtered_out, 1);
        assert_eq!(p.clean.missing_name, 1);
        // B-Flu has no direct evidence but is still a known association.
        let b = p.genes.get("B").unwrap();
        let flu = p.diseases.get("Flu").unwrap();
        assert!(p.known.contains(&pair_key(b, flu)));
        assert_eq!(p.known.len(), 3);
        assert_eq!(p.genes.id(b), Some("2"));
    }

    #[test]
    fn empty_filter_keeps_inferred_rows_and_no_positive_is_an_error() {
        let body = "B,2,Flu,MESH:D1,,,\n";
        assert_eq!(
            positives(body, &EvidenceFilter::new::<&str>([]))
                .unwrap()
                .pairs
                .len(),
            1
        );
        assert!(matches!(
            positives(body, &EvidenceFilter::default()),
            Err(Error::NoPositives { .. })
        ));
    }
}
