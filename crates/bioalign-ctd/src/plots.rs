//! The dataset's PNG plots: class balance, sentence length histogram, evidence
//! (PubMed IDs per positive) histogram, top genes and top diseases.

use std::path::{Path, PathBuf};

use bioalign_plot::{BarChart, ChartStyle, Histogram};

use crate::error::Result;
use crate::pipeline::{Prepared, SPLIT_FILES};

/// Largest PubMed-ID count with its own bin; larger counts share the last bin.
const EVIDENCE_BINS: usize = 20;

/// Writes the five plots into `dir`, returning their paths.
pub fn write_plots(p: &Prepared, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut save = |name: &str, png: Vec<u8>| -> Result<()> {
        let path = dir.join(name);
        bioalign_io::atomic_write_bytes(&path, &png)?;
        out.push(path);
        Ok(())
    };

    let mut labels = Vec::new();
    let mut values = Vec::new();
    for (name, rows) in SPLIT_FILES.iter().zip(p.parts()) {
        let pos = rows.iter().filter(|e| e.label == 1).count();
        labels.push(format!("{name} / true"));
        values.push(pos as f64);
        labels.push(format!("{name} / false"));
        values.push((rows.len() - pos) as f64);
    }
    let balance = BarChart {
        style: ChartStyle::new("Class balance per split", "rows", ""),
        labels,
        values,
    };
    save("class_balance.png", balance.to_png()?)?;

    let lengths: Vec<f64> = p
        .rows
        .iter()
        .map(|e| e.text.chars().count() as f64)
        .collect();
    let lo = lengths.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = lengths.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bins = ((hi - lo) as usize / 2).clamp(1, 80);
    let hist = Histogram::from_values(
        ChartStyle::new("Sentence length (all rows)", "characters", "rows"),
        &lengths,
        bins,
    )?;
    save("sentence_length.png", hist.to_png()?)?;

    let counts: Vec<usize> = p
        .rows
        .iter()
        .filter(|e| e.label == 1)
        .map(|e| e.pubmed_ids.len())
        .collect();
    let mut per = vec![0.0; EVIDENCE_BINS + 1];
    for c in counts {
        per[c.min(EVIDENCE_BINS)] += 1.0;
    }
    let edges: Vec<f64> = (0..=EVIDENCE_BINS + 1).map(|i| i as f64 - 0.5).collect();
    let evidence = Histogram {
        style: ChartStyle::new(
            format!("PubMed IDs per positive (last bin: {EVIDENCE_BINS} or more)"),
            "PubMed IDs",
            "positives",
        ),
        edges,
        counts: per,
    };
    save("evidence_count.png", evidence.to_png()?)?;

    for (file, title, top) in [
        (
            "top_genes.png",
            "Top 15 genes by positives",
            &p.card.top_genes,
        ),
        (
            "top_diseases.png",
            "Top 15 diseases by positives",
            &p.card.top_diseases,
        ),
    ] {
        let chart = BarChart {
            style: ChartStyle::new(title, "positives", ""),
            labels: top.iter().map(|c| c.name.clone()).collect(),
            values: top.iter().map(|c| c.positives as f64).collect(),
        };
        save(file, chart.to_png()?)?;
    }
    Ok(out)
}
