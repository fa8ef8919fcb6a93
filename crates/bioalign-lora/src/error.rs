//! Errors of the LoRA crate.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, loading, saving or training adapters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration field holds an invalid value.
    #[error("invalid config field `{field}`: {reason}")]
    Config {
        /// The field concerned.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Atomic write failed.
    #[error(transparent)]
    AtomicWrite(#[from] bioalign_io::Error),
    /// A JSON file does not parse.
    #[error("{path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The parser's message.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file does not parse or could not be written.
    #[error("{path}: {reason}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A tensor has another shape than the model expects.
    #[error("{path}: tensor `{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The file concerned.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A module the model adapts has no weights in the adapter file.
    #[error("{path}: no tensor `{name}` for adapted module `{module}`")]
    MissingTensor {
        /// The file concerned.
        path: PathBuf,
        /// The adapted module.
        module: String,
        /// The missing tensor name.
        name: String,
    },
    /// The adapter file holds tensors for modules the model does not adapt.
    #[error("{path}: tensor `{name}` matches no adapted module of this model")]
    UnexpectedTensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor name.
        name: String,
    },
    /// The adapter was trained on another base model.
    #[error("adapter was made for base `{found}`, this model is `{expected}`")]
    OtherBase {
        /// This model's name.
        expected: String,
        /// The adapter's `base_model_name_or_path`.
        found: String,
    },
    /// A tensor has another dtype than expected.
    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected}")]
    Dtype {
        /// The file concerned.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// Expected dtype.
        expected: &'static str,
        /// Found dtype.
        found: String,
    },
    /// The training loss became NaN or infinite.
    #[error("loss is {loss} at step {step}; stopped (last good checkpoint: {last_checkpoint:?})")]
    NonFiniteLoss {
        /// The optimizer step (1-based) whose micro-batch produced it.
        step: usize,
        /// The loss value.
        loss: f32,
        /// The last checkpoint written, if any.
        last_checkpoint: Option<PathBuf>,
    },
    /// The training data is unusable.
    #[error("training data: {0}")]
    Data(String),
    /// A plot failed.
    #[error(transparent)]
    Plot(#[from] bioalign_plot::Error),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
