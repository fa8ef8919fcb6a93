//! Builds the CTD gene-disease dataset (SPEC.md section 1).
//!
//! ```text
//! cargo run --release --example prepare_data -- --ctd FILE --out DIR \
//!     [--negatives uniform|degree-matched|corrupt-one-side] [--seed 42] \
//!     [--test-fraction 0.2] [--holdout-fraction 0.1] [--holdout-entities prep_metadata.json]
//! ```
//!
//! Writes `DIR/{train,test,train_entity_heldout,test_entity_heldout}.{parquet,csv}`,
//! `DIR/dataset_card.json`, `DIR/held_out_entities.json` and `DIR/plots/*.png`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use bioalign_ctd::{
    BadRowPolicy, EvidenceFilter, HoldoutEntities, PrepareConfig, SamplerKind, prepare,
    write_outputs,
};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(about = "Build leakage-aware gene-disease datasets from a CTD file")]
struct Args {
    /// CTD gene-disease file (CSV or TSV, plain or .gz; curated or full layout).
    #[arg(long)]
    ctd: PathBuf,
    /// Output folder.
    #[arg(long)]
    out: PathBuf,
    /// Negative sampler: uniform (the reference's), degree-matched or corrupt-one-side.
    #[arg(long, default_value = "uniform")]
    negatives: SamplerKind,
    /// Negatives per positive.
    #[arg(long, default_value_t = 1.0)]
    ratio: f64,
    /// Master seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Test fraction of the stratified pair split.
    #[arg(long, default_value_t = 0.2)]
    test_fraction: f64,
    /// Fraction of genes and of diseases held out in the entity split.
    #[arg(long, default_value_t = 0.1)]
    holdout_fraction: f64,
    /// JSON file with `holdout_genes` and `holdout_diseases` lists (e.g. the
    /// reference's prep_metadata.json) instead of a random hold-out.
    #[arg(long)]
    holdout_entities: Option<PathBuf>,
    /// DirectEvidence terms that make a positive (comma-separated, case-insensitive);
    /// "any" keeps every row.
    #[arg(long, default_value = "marker/mechanism,therapeutic")]
    evidence: String,
    /// Statement template with {gene} and {disease}.
    #[arg(long, default_value = bioalign_ctd::SENTENCE_TEMPLATE)]
    template: String,
    /// Skip and count malformed rows instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let holdout_entities = match &args.holdout_entities {
        Some(p) => Some(HoldoutEntities::from_json_file(p)?),
        None => None,
    };
    let evidence = if args.evidence.trim() == "any" {
        EvidenceFilter::new::<&str>([])
    } else {
        EvidenceFilter::new(args.evidence.split(','))
    };
    let cfg = PrepareConfig {
        negatives: args.negatives,
        ratio: args.ratio,
        seed: args.seed,
        test_fraction: args.test_fraction,
        holdout_fraction: args.holdout_fraction,
        holdout_entities,
        holdout_entities_source: args
            .holdout_entities
            .as_ref()
            .map(|p| p.display().to_string()),
        evidence,
        sentence_template: args.template.clone(),
        bad_rows: if args.skip_bad_rows {
            BadRowPolicy::Skip
        } else {
            BadRowPolicy::Fail
        },
    };
    let t0 = Instant::now();
    let built = prepare(&args.ctd, &cfg, |records, bytes| {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "read {:.1} M records, {:.0} MB in {:.1} s ({:.0} MB/s)",
            records as f64 / 1e6,
            bytes as f64 / 1e6,
            secs,
            bytes as f64 / 1e6 / secs.max(1e-9)
        );
    })
    .with_context(|| format!("building the dataset from {}", args.ctd.display()))?;
    let t_build = t0.elapsed();
    write_outputs(&built, &args.out)
        .with_context(|| format!("writing into {}", args.out.display()))?;
    let c = &built.card;
    println!(
        "{} positives, {} negatives; {} genes, {} diseases; sentence length mean {:.1} / median {}",
        c.rows.positives,
        c.rows.negatives,
        c.distinct_genes,
        c.distinct_diseases,
        c.sentence_length.mean,
        c.sentence_length.median
    );
    println!(
        "PubMed IDs per positive: mean {:.2}, max {}, {} with none, {} with several",
        c.pubmed_ids_per_positive.mean,
        c.pubmed_ids_per_positive.max,
        c.pubmed_ids_per_positive.none,
        c.pubmed_ids_per_positive.several
    );
    let auc = |v: Option<f64>| v.map_or("n/a".to_string(), |a| format!("{a:.3}"));
    for (name, s) in [
        ("pair split", &c.pair_split),
        ("entity-held-out split", &c.entity_heldout_split),
    ] {
        println!(
            "{name}: {} / {} rows; popularity-shortcut AUC train {} test {}; test rows with gene in train {}, disease in train {}, both {}, neither {}",
            s.train.rows,
            s.test.rows,
            auc(s.popularity_shortcut.train_auc),
            auc(s.popularity_shortcut.test_auc),
            s.leakage.gene_in_train,
            s.leakage.disease_in_train,
            s.leakage.both_in_train,
            s.leakage.neither_in_train
        );
    }
    println!(
        "held out {} genes, {} diseases; skipped {} bad rows; built in {:.2} s, total {:.2} s; wrote {}",
        c.held_out.genes,
        c.held_out.diseases,
        c.reading.skipped_rows,
        t_build.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
