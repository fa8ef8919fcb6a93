//! Synthetic CTD files in the full `CTD_genes_diseases` layout, for benchmarks
//! and tests at sizes the curated file cannot reach.
//!
//! Rows look like the real file: a fixed vocabulary of genes, diseases (some
//! with commas, hence quoted) and chemicals; about 5% of rows carry direct
//! evidence (`marker/mechanism`, `therapeutic` or both), the rest are inferred
//! through a chemical with a score; PubMed ID lists of 1-6 eight-digit IDs.
//! Generation is seeded and deterministic.

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The `# Fields:` columns of the full layout.
pub const FULL_FIELDS: &str = "GeneSymbol,GeneID,DiseaseName,DiseaseID,DirectEvidence,InferenceChemicalName,InferenceScore,OmimIDs,PubMedIDs";

/// Vocabulary sizes of the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthConfig {
    /// Distinct genes.
    pub genes: usize,
    /// Distinct diseases.
    pub diseases: usize,
    /// Distinct chemicals.
    pub chemicals: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            genes: 20_000,
            diseases: 6_000,
            chemicals: 5_000,
            seed: 7,
        }
    }
}

const SYLLABLES: [&str; 16] = [
    "car", "neo", "path", "myo", "hepat", "nephr", "derm", "oste", "lymph", "gli", "angi", "cardi",
    "fibr", "leuk", "arthr", "enceph",
];
const SUFFIXES: [&str; 8] = [
    "itis", "oma", "opathy", "osis", "emia", "algia", "plasia", "ectasis",
];

fn disease_name(i: usize, rng: &mut ChaCha8Rng) -> String {
    let mut s = String::new();
    for k in 0..rng.random_range(1..4) {
        if k > 0 {
            s.push(' ');
        }
        let w = SYLLABLES[rng.random_range(0..SYLLABLES.len())];
        let mut c = w.chars();
        if let Some(f) = c.next() {
            s.extend(f.to_uppercase());
            s.push_str(c.as_str());
        }
        s.push_str(SUFFIXES[rng.random_range(0..SUFFIXES.len())]);
    }
    if i.is_multiple_of(5) {
        s.push_str(", Type ");
        s.push_str(&(i % 7 + 1).to_string());
    }
    s.push_str(&format!(" {i}"));
    s
}

/// Writes a header and `rows` data rows to `w`. Returns the number of bytes written.
pub fn write_full_layout<W: Write>(w: &mut W, rows: u64, cfg: &SynthConfig) -> io::Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let genes: Vec<(String, u64)> = (0..cfg.genes)
        .map(|i| {
            let len = rng.random_range(2..6);
            let mut s: String = (0..len)
                .map(|_| (b'A' + rng.random_range(0..26u8)) as char)
                .collect();
            s.push_str(&(i % 97).to_string());
            (s, 1000 + i as u64 * 7)
        })
        .collect();
    let diseases: Vec<(String, String)> = (0..cfg.diseases)
        .map(|i| {
            let name = disease_name(i, &mut rng);
            let quoted = if name.contains(',') {
                format!("\"{name}\"")
            } else {
                name
            };
            (quoted, format!("MESH:D{:06}", 1000 + i * 3))
        })
        .collect();
    let chemicals: Vec<String> = (0..cfg.chemicals)
        .map(|i| format!("{}-{}", SYLLABLES[i % SYLLABLES.len()], i))
        .collect();
    let header = format!(
        "# The Comparative Toxicogenomics Database (CTD) - synthetic file for benchmarks\n#\n# Fields:\n# {FULL_FIELDS}\n#\n"
    );
    w.write_all(header.as_bytes())?;
    let mut written = header.len() as u64;
    let mut line = String::with_capacity(256);
    for _ in 0..rows {
        line.clear();
        // Zipf-like popularity: square of a uniform draw favours low indices.
        let u: f64 = rng.random();
        let g = &genes[((u * u) * genes.len() as f64) as usize % genes.len()];
        let d = &diseases[rng.random_range(0..diseases.len())];
        line.push_str(&g.0);
        line.push(',');
        line.push_str(&g.1.to_string());
        line.push(',');
        line.push_str(&d.0);
        line.push(',');
        line.push_str(&d.1);
        line.push(',');
        let direct = rng.random_range(0..100) < 5;
        if direct {
            line.push_str(match rng.random_range(0..10) {
                0..=6 => "marker/mechanism",
                7..=8 => "therapeutic",
                _ => "marker/mechanism|therapeutic",
            });
            line.push_str(",,,");
        } else {
            line.push(',');
            line.push_str(&chemicals[rng.random_range(0..chemicals.len())]);
            line.push(',');
            line.push_str(&format!("{:.2}", rng.random_range(1.0..200.0)));
            line.push(',');
        }
        if rng.random_range(0..50) == 0 {
            line.push_str(&rng.random_range(100_000..700_000u32).to_string());
        }
        line.push(',');
        for k in 0..rng.random_range(1..7) {
            if k > 0 {
                line.push('|');
            }
            line.push_str(&rng.random_range(10_000_000..40_000_000u32).to_string());
        }
        line.push('\n');
        w.write_all(line.as_bytes())?;
        written += line.len() as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CtdReader, ReadOptions};

    #[test]
    fn synthetic_file_reads_back_in_full_layout() {
        let mut buf = Vec::new();
        let cfg = SynthConfig {
            genes: 50,
            diseases: 40,
            chemicals: 10,
            seed: 1,
        };
        let n = write_full_layout(&mut buf, 2_000, &cfg).unwrap();
        assert_eq!(n as usize, buf.len());
        let r = CtdReader::from_reader(
            "synth.csv",
            std::io::Cursor::new(buf),
            ReadOptions::default(),
        )
        .unwrap();
        assert!(r.columns().is_full_layout());
        let recs: Vec<_> = r.collect::<crate::Result<_>>().unwrap();
        assert_eq!(recs.len(), 2_000);
        assert!(recs.iter().any(|r| r.disease_name.contains(", Type ")));
        assert!(recs.iter().any(|r| r.inference_score.is_some()));
        assert!(recs.iter().any(|r| !r.direct_evidence.is_empty()));
        assert!(recs.iter().all(|r| !r.pubmed_ids.is_empty()));
    }
}
