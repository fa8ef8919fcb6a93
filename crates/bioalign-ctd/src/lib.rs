//! Turning the Comparative Toxicogenomics Database (CTD) into clean,
//! leakage-aware gene-disease datasets (SPEC.md section 1), without burn.
//!
//! - [`reader`]: streaming reader of CTD gene-disease files (CSV/TSV, plain or
//!   gzip, curated or full layout) with errors naming file, line and field, and a
//!   skip-and-count policy for bad rows.
//! - [`dataset`]: cleaning, the evidence filter, de-duplication, and the set of
//!   every pair the file associates through any evidence.
//! - [`sampler`]: seeded negative samplers behind [`NegativeSampler`]: uniform (the
//!   reference's), degree-matched, corrupt-one-side.
//! - [`split`]: stratified pair split, entity-held-out split (random or given
//!   lists), leakage report.
//! - [`template`]: sentence, Alpaca training and zero-shot templates, user templates.
//! - [`output`]: Parquet and CSV files per split; readers for them and for the
//!   reference's split files.
//! - [`synth`]: deterministic synthetic files in the full CTD layout (benchmarks).
//! - [`stats`], [`pipeline`], [`plots`]: statistics with the popularity-shortcut
//!   ROC-AUC, the end-to-end builder and `dataset_card.json`, and the PNG plots.
//!
//! ```no_run
//! use bioalign_ctd::{PrepareConfig, SamplerKind, prepare, write_outputs};
//! let cfg = PrepareConfig { negatives: SamplerKind::DegreeMatched, ..Default::default() };
//! let built = prepare("CTD_curated_genes_diseases.csv".as_ref(), &cfg, |_, _| {})?;
//! write_outputs(&built, "out/ctd".as_ref())?;
//! # Ok::<(), bioalign_ctd::Error>(())
//! ```

mod csvline;
pub mod dataset;
mod error;
pub mod output;
pub mod pipeline;
pub mod plots;
mod prefetch;
pub mod reader;
pub mod sampler;
pub mod split;
pub mod stats;
pub mod synth;
pub mod template;

pub use dataset::{CleanStats, EvidenceFilter, Positives, collect_positives};
pub use error::{Error, Result};
pub use output::{
    Example, read_csv, read_parquet, write_csv, write_parquet, write_parquet_batches,
};
pub use pipeline::{DatasetCard, PrepareConfig, Prepared, prepare, write_outputs};
pub use reader::{BadRowPolicy, CtdReader, CtdRecord, ReadOptions, ReadStats};
pub use sampler::{CorruptOneSide, DegreeMatched, NegativeSampler, SamplerKind, Uniform};
pub use split::{
    HeldOut, Holdout, HoldoutEntities, LeakageReport, Split, entity_holdout_split, leakage_report,
    stratified_split,
};
pub use template::{ALPACA_TEMPLATE, Fields, SENTENCE_TEMPLATE, Template, ZERO_SHOT_TEMPLATE};
