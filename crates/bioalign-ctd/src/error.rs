//! Errors of the CTD dataset builder.

use std::path::PathBuf;

/// Everything that can go wrong while reading CTD files or building datasets.
///
/// Row-level variants ([`Error::is_row_error`]) can be skipped and counted with
/// [`crate::BadRowPolicy::Skip`]; the others always stop the run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the input failed.
    #[error("{path}: line {line}: read error: {source}")]
    Io {
        /// Input file.
        path: PathBuf,
        /// Last line read successfully (0 before the first).
        line: u64,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The gzip stream ends early or is corrupt.
    #[error("{path}: line {line}: truncated or corrupt gzip stream: {source}")]
    Gzip {
        /// Input file.
        path: PathBuf,
        /// Last line decoded successfully.
        line: u64,
        /// Decoder error.
        #[source]
        source: std::io::Error,
    },
    /// No `# Fields:` comment naming the columns came before the first data row.
    #[error("{path}: line {line}: missing '# Fields:' header line before the first data row")]
    MissingFieldsHeader {
        /// Input file.
        path: PathBuf,
        /// Line of the first data row (or the last line for a file without data).
        line: u64,
    },
    /// A column the reader needs is not named in the header.
    #[error("{path}: line {line}: header has no '{column}' column (found: {found})")]
    MissingColumn {
        /// Input file.
        path: PathBuf,
        /// Line of the header.
        line: u64,
        /// The required column.
        column: &'static str,
        /// The header as read.
        found: String,
    },
    /// A quoted field is not closed before the end of the line.
    #[error("{path}: line {line}: unterminated quote in field '{field}'")]
    UnterminatedQuote {
        /// Input file.
        path: PathBuf,
        /// Line number (1-based).
        line: u64,
        /// Column name.
        field: String,
    },
    /// A row has another number of fields than the header.
    #[error("{path}: line {line}: expected {expected} fields, found {found}")]
    ColumnCount {
        /// Input file.
        path: PathBuf,
        /// Line number (1-based).
        line: u64,
        /// Number of columns in the header.
        expected: usize,
        /// Number of fields in the row.
        found: usize,
    },
    /// A field is not valid UTF-8.
    #[error("{path}: line {line}: field '{field}' is not valid UTF-8")]
    InvalidUtf8 {
        /// Input file.
        path: PathBuf,
        /// Line number (1-based).
        line: u64,
        /// Column name.
        field: String,
    },
    /// A field does not parse as the expected type.
    #[error("{path}: line {line}: field '{field}' = {value:?} is not {expected}")]
    BadValue {
        /// Input file.
        path: PathBuf,
        /// Line number (1-based).
        line: u64,
        /// Column name.
        field: String,
        /// The text found (shortened to 80 characters).
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A line is longer than the reader accepts (a sign of a binary or corrupt file).
    #[error("{path}: line {line}: longer than {limit} bytes")]
    LineTooLong {
        /// Input file.
        path: PathBuf,
        /// Line number.
        line: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// An invalid configuration value.
    #[error("invalid {field}: {reason}")]
    Config {
        /// Name of the parameter.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// A template uses an unknown placeholder, is malformed, or lacks a value.
    #[error("template {template:?}: {reason}")]
    Template {
        /// The template text.
        template: String,
        /// What is wrong.
        reason: String,
    },
    /// The sampler cannot produce the requested negatives without emitting a known association.
    #[error("{sampler} sampler: cannot draw {requested} negatives: {reason}")]
    Infeasible {
        /// Sampler name.
        sampler: &'static str,
        /// How many negatives were requested.
        requested: usize,
        /// Why it cannot.
        reason: String,
    },
    /// The input holds no row that passes the filters.
    #[error("{path}: no positive rows left after cleaning and the evidence filter")]
    NoPositives {
        /// Input file.
        path: PathBuf,
    },
    /// A dataset file (CSV / Parquet / JSON) could not be read back.
    #[error("{path}: {reason}")]
    Format {
        /// File concerned.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing an output file failed.
    #[error("writing output: {0}")]
    Write(#[from] bioalign_io::Error),
    /// Drawing a plot failed.
    #[error("plot: {0}")]
    Plot(#[from] bioalign_plot::Error),
}

impl Error {
    /// True for errors that concern one row and can be skipped under
    /// [`crate::BadRowPolicy::Skip`].
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            Error::UnterminatedQuote { .. }
                | Error::ColumnCount { .. }
                | Error::InvalidUtf8 { .. }
                | Error::BadValue { .. }
        )
    }

    /// A short machine-readable name of the variant, used to count skipped rows.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Gzip { .. } => "gzip",
            Error::MissingFieldsHeader { .. } => "missing_fields_header",
            Error::MissingColumn { .. } => "missing_column",
            Error::UnterminatedQuote { .. } => "unterminated_quote",
            Error::ColumnCount { .. } => "column_count",
            Error::InvalidUtf8 { .. } => "invalid_utf8",
            Error::BadValue { .. } => "bad_value",
            Error::LineTooLong { .. } => "line_too_long",
            Error::Config { .. } => "config",
            Error::Template { .. } => "template",
            Error::Infeasible { .. } => "infeasible",
            Error::NoPositives { .. } => "no_positives",
            Error::Format { .. } => "format",
            Error::Write(_) => "write",
            Error::Plot(_) => "plot",
        }
    }
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
