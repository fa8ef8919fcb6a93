//! Errors of the metrics crate.

use std::path::PathBuf;

/// Everything that can go wrong while computing a measure.
///
/// Bad input is always reported here, never by a panic: each variant names
/// what was being checked and, where it helps, the row, the field and the
/// expected versus found values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An input has no rows (or no columns) where some are needed.
    #[error("{what}: empty input")]
    Empty {
        /// The input concerned.
        what: &'static str,
    },
    /// Two inputs that must have the same length do not.
    #[error("{what}: length mismatch, expected {expected}, found {found}")]
    LengthMismatch {
        /// The inputs concerned.
        what: &'static str,
        /// The length the first input implies.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// An input has the wrong shape.
    #[error("{what}: shape mismatch, expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The input concerned.
        what: &'static str,
        /// The expected shape (0 where any size is fine).
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A value is NaN or infinite.
    #[error("{what}: non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// The input concerned.
        what: &'static str,
        /// Row of the first offending value.
        row: usize,
        /// Column of the first offending value.
        col: usize,
        /// The value itself.
        value: f64,
    },
    /// A row has zero norm, so its cosine similarity is undefined.
    #[error("{what}: row {row} has zero norm (cosine undefined)")]
    ZeroNorm {
        /// The input concerned.
        what: &'static str,
        /// The offending row.
        row: usize,
    },
    /// A label that must be 0 or 1 is something else.
    #[error("{what}: label {label} at row {row} is not binary (expected 0 or 1)")]
    NotBinary {
        /// The input concerned.
        what: &'static str,
        /// The offending row.
        row: usize,
        /// The label found.
        label: usize,
    },
    /// Fewer distinct classes than the measure needs.
    #[error("{what}: needs at least {needed} classes, found {found}")]
    TooFewClasses {
        /// The measure concerned.
        what: &'static str,
        /// The number of distinct classes needed.
        needed: usize,
        /// The number found.
        found: usize,
    },
    /// A class has fewer members than the measure needs.
    #[error("{what}: class {class} has {count} rows, needs at least {needed}")]
    ClassTooSmall {
        /// The measure concerned.
        what: &'static str,
        /// The class label.
        class: usize,
        /// Its number of rows.
        count: usize,
        /// The minimum needed.
        needed: usize,
    },
    /// Too few rows for the measure (for instance for a train/test split).
    #[error("{what}: {found} rows, needs at least {needed}")]
    TooFewSamples {
        /// The measure concerned.
        what: &'static str,
        /// The minimum needed.
        needed: usize,
        /// The number found.
        found: usize,
    },
    /// A hyper-parameter is out of range.
    #[error("invalid parameter {field} = {value}: {expected}")]
    InvalidParam {
        /// The field name, as in the config struct.
        field: &'static str,
        /// The value given, formatted.
        value: String,
        /// What a valid value is.
        expected: &'static str,
    },
    /// An input is constant where variation is needed (a correlation is undefined).
    #[error("{what}: input is constant, the measure is undefined")]
    Constant {
        /// The input concerned.
        what: &'static str,
    },
    /// A linfa algorithm failed.
    #[error("{what} failed: {message}")]
    Algorithm {
        /// The algorithm (`logistic regression`, `t-SNE`, `PCA`).
        what: &'static str,
        /// linfa's message.
        message: String,
    },
    /// Too many bootstrap resamples had an undefined statistic.
    #[error("bootstrap: {failed} of {total} resamples gave an undefined statistic ({first})")]
    BootstrapFailed {
        /// Resamples whose statistic failed.
        failed: usize,
        /// Resamples drawn.
        total: usize,
        /// The first failure's message.
        first: String,
    },
    /// Drawing or writing a plot failed.
    #[cfg(feature = "plots")]
    #[error(transparent)]
    Plot(#[from] bioalign_plot::Error),
    /// A `.npy` file could not be read.
    #[error("{path}: {reason}")]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(
    field: &'static str,
    value: impl std::fmt::Display,
    expected: &'static str,
) -> Error {
    Error::InvalidParam {
        field,
        value: value.to_string(),
        expected,
    }
}
