//! Errors of the plotting crate.

use std::path::PathBuf;

/// Errors raised while validating chart data, drawing or writing a PNG.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The chart has nothing to draw.
    #[error("chart '{chart}': no data to draw")]
    Empty {
        /// Title of the chart.
        chart: String,
    },
    /// Two inputs that must have the same length do not.
    #[error("chart '{chart}': {what} has {found} entries, expected {expected}")]
    LengthMismatch {
        /// Title of the chart.
        chart: String,
        /// Which input is wrong.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A value is NaN or infinite.
    #[error("chart '{chart}': {what}[{index}] is not finite ({value})")]
    NonFinite {
        /// Title of the chart.
        chart: String,
        /// Which input holds the value.
        what: &'static str,
        /// Position of the value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// An invalid parameter (size, bin count, an interval with lower above upper).
    #[error("chart '{chart}': invalid {field}: {reason}")]
    Invalid {
        /// Title of the chart.
        chart: String,
        /// Name of the parameter.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// plotters failed while drawing.
    #[error("chart '{chart}': drawing failed: {message}")]
    Draw {
        /// Title of the chart.
        chart: String,
        /// The backend's message.
        message: String,
    },
    /// The embedded font could not be registered.
    #[error("the embedded DejaVu Sans font could not be loaded")]
    Font,
    /// Writing the PNG failed.
    #[error("writing {path}: {source}")]
    Write {
        /// Target file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: bioalign_io::Error,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
