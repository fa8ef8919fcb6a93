//! Errors of the study pipeline.

use std::path::PathBuf;

/// Everything that can go wrong while evaluating a model on a split.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading or running the model failed.
    #[error("model: {0}")]
    Models(#[from] bioalign_models::Error),
    /// Adapters or training failed.
    #[error("lora: {0}")]
    Lora(#[from] bioalign_lora::Error),
    /// Reading the split file failed.
    #[error("data: {0}")]
    Data(#[from] bioalign_ctd::Error),
    /// A measure failed.
    #[error("metrics: {0}")]
    Metrics(#[from] bioalign_metrics::Error),
    /// Writing a result file failed.
    #[error("write: {0}")]
    Io(#[from] bioalign_io::Error),
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file concerned.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A setting or an input is not usable.
    #[error("{field}: {found} (expected {expected})")]
    Invalid {
        /// The setting or input.
        field: &'static str,
        /// What was given.
        found: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A feature this crate cannot offer yet.
    #[error("{feature} is not supported yet: {reason}")]
    Unsupported {
        /// The feature asked for.
        feature: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An [`Error::Invalid`].
pub(crate) fn invalid(field: &'static str, found: impl ToString, expected: &'static str) -> Error {
    Error::Invalid {
        field,
        found: found.to_string(),
        expected,
    }
}

/// An [`Error::File`].
pub(crate) fn file_err(path: &std::path::Path, reason: impl ToString) -> Error {
    Error::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}
