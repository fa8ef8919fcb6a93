//! Errors of `bioalign-quant`.

use std::path::PathBuf;

/// Everything that can go wrong while quantizing, dequantizing, or reading and
/// writing bnb-4bit checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A block size that bitsandbytes does not support (powers of two 32..=4096).
    #[error("invalid block size {found}: expected a power of two from 32 to 4096{context}")]
    BlockSize {
        /// The block size that was given.
        found: usize,
        /// Where it came from (a tensor name, a field), or empty.
        context: String,
    },
    /// The input holds an infinity or NaN; the absmax of its block would be
    /// non-finite and every code of the block meaningless (see the crate docs).
    #[error("non-finite value {value} at element {index} (block {block}){context}")]
    NonFinite {
        /// Flat index of the first non-finite element.
        index: usize,
        /// Its block.
        block: usize,
        /// The value (inf, -inf or NaN).
        value: f32,
        /// Where it came from (a tensor name), or empty.
        context: String,
    },
    /// A buffer or tensor has the wrong length or shape.
    #[error("{what}: expected {expected}, found {found}")]
    Shape {
        /// Which buffer or tensor.
        what: String,
        /// The expected length or shape.
        expected: String,
        /// The length or shape found.
        found: String,
    },
    /// A stored quantization state is missing a piece, or its pieces disagree.
    #[error("quant state of {tensor}: {reason}")]
    QuantState {
        /// The tensor (checkpoint key prefix).
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint or config file is malformed.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An atomic write of a result file failed.
    #[error(transparent)]
    Write(#[from] bioalign_io::Error),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl ToString,
        found: impl ToString,
    ) -> Self {
        Error::Shape {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }

    pub(crate) fn quant_state(tensor: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::QuantState {
            tensor: tensor.into(),
            reason: reason.into(),
        }
    }
}
