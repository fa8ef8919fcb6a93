//! The BioAlign study pipeline, above the model, data and metric crates.
//!
//! [`evaluate()`] measures one model on one split the way the reference study did
//! (SPEC.md section 3) and beyond it:
//!
//! - zero-shot answers to the reference's prompt, decided by the reference's rule
//!   (greedy 3-token continuation contains "true") and by the next-token
//!   log-probabilities of `" true"` and `" false"` (with a score for ROC-AUC), and their
//!   agreement ([`zero_shot`]);
//! - pooled sentence embeddings of the same rows ([`embed`]; burn tensors become
//!   `ndarray` 0.16 arrays here, at the edge) and bioalign-metrics' whole suite on them,
//!   per layer on request, plus KG alignment of entity centroids ([`kg`]);
//! - bootstrap 95% intervals on every accuracy;
//! - `metrics.json`, `predictions.parquet`, `embeddings.safetensors` and PNG plots, each
//!   written atomically ([`output`], `docs/formats.md`).
//!
//! Rows are sampled exactly as `pandas.DataFrame.sample(n, random_state=seed)`
//! ([`sample_rows`]), so `--sample 500 --seed 42` on the reference's `test_pairs.csv`
//! evaluates the reference's very rows.

pub mod embed;
pub mod error;
pub mod evaluate;
pub mod finetune;
pub mod kg;
pub mod output;
pub mod progress;
pub mod provenance;
pub mod report;
pub mod reproduce;
pub mod sample;
pub mod stats;
pub mod zero_shot;

pub use error::{Error, Result};
pub use evaluate::{
    EvaluateConfig, MetricsJson, RuleScores, Timings, ZeroShotScores, evaluate, evaluate_on,
    read_split,
};
pub use finetune::{FinetuneConfig, FinetuneSummary, finetune};
pub use progress::{NoProgress, Progress, Stage};
pub use sample::sample_rows;
pub use zero_shot::{
    Answer, AnswerOptions, AnswerTokens, answer_batch, contains_true, logprob_says_true,
};
