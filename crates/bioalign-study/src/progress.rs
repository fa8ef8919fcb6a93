//! Progress reporting from the pipeline to whoever shows it (a progress bar in the
//! `evaluate` and `finetune` examples); the library itself prints nothing.

/// A stage of [`crate::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Reading and sampling the split.
    Data,
    /// Loading the model.
    Load,
    /// Zero-shot answers (total = rows).
    ZeroShot,
    /// Sentence embeddings (total = rows).
    Embed,
    /// Metric suite and KG alignment.
    Metrics,
    /// Writing the files.
    Write,
    /// Fine-tuning (total = optimizer steps).
    Train,
}

impl Stage {
    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Data => "data",
            Stage::Load => "load model",
            Stage::ZeroShot => "zero-shot",
            Stage::Embed => "embeddings",
            Stage::Metrics => "metrics",
            Stage::Write => "write",
            Stage::Train => "train",
        }
    }
}

/// Receives progress events.
pub trait Progress {
    /// `stage` starts with `total` units of work.
    fn start(&self, stage: Stage, total: u64);
    /// `n` more units are done.
    fn advance(&self, n: u64);
    /// `stage` is over.
    fn finish(&self, stage: Stage);
    /// A status line for the current stage (fine-tuning: loss, learning rate, tokens/s).
    fn message(&self, _msg: &str) {}
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: Stage, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self, _: Stage) {}
}
