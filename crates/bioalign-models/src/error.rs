//! Errors of the model crate: every variant names the file and, where there is one, the
//! tensor, metadata key or config field concerned.

use std::path::PathBuf;

/// Errors of `bioalign-models`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `map`, `read`).
        op: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file ended before a structure it announces.
    #[error("{path}: truncated: {what} needs bytes {offset}..{end} but the file has {len}")]
    Truncated {
        /// The file concerned.
        path: PathBuf,
        /// What was being read (a header field, a key, a tensor's data).
        what: String,
        /// Where the read started.
        offset: u64,
        /// Where it would have ended.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// The file is not a well-formed GGUF file.
    #[error("{path}: bad GGUF at byte {offset}: {message}")]
    GgufFormat {
        /// The file concerned.
        path: PathBuf,
        /// Where the problem was found.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A tensor has a GGML type this crate does not dequantize.
    #[error("{path}: tensor {tensor}: unsupported GGML type {type_name} (id {type_id})")]
    UnsupportedTensorType {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The numeric GGML type.
        type_id: u32,
        /// Its name, or `unknown`.
        type_name: &'static str,
    },
    /// A tensor's data lies outside the file or its shape does not fit its type.
    #[error("{path}: tensor {tensor}: {message}")]
    BadTensor {
        /// The file concerned.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor the model needs is not in the checkpoint.
    #[error("{path}: missing tensor {tensor}")]
    MissingTensor {
        /// The checkpoint file or folder.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
    },
    /// A tensor has a different shape than the config implies.
    #[error("{path}: tensor {tensor}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has a dtype the loader cannot convert.
    #[error("{path}: tensor {tensor}: unsupported dtype {dtype}")]
    Dtype {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
    /// A metadata key is absent.
    #[error("{path}: missing metadata key {key}")]
    MissingMetadata {
        /// The file concerned.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A metadata value has another type than expected.
    #[error("{path}: metadata key {key}: expected {expected}, found {found}")]
    MetadataType {
        /// The file concerned.
        path: PathBuf,
        /// The key.
        key: String,
        /// The expected type.
        expected: &'static str,
        /// The type found.
        found: String,
    },
    /// A model config is invalid.
    #[error("{source_name}: config field {field}: {message}")]
    Config {
        /// Where the config came from (a file path or `GGUF metadata of <file>`).
        source_name: String,
        /// The offending field (Hugging Face name).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: {source}")]
    Json {
        /// The file concerned.
        path: PathBuf,
        /// The parser's error (with line and column).
        #[source]
        source: serde_json::Error,
    },
    /// The architecture is not one this crate runs.
    #[error("{source_name}: unknown architecture {architecture} (supported: llama, mistral, phi3)")]
    UnknownArchitecture {
        /// Where the config came from.
        source_name: String,
        /// The architecture found.
        architecture: String,
    },
    /// A tokenizer could not be built or run.
    #[error("tokenizer from {source_name}: {message}")]
    Tokenizer {
        /// Where it came from.
        source_name: String,
        /// What went wrong.
        message: String,
    },
    /// A safetensors file could not be parsed.
    #[error("{path}: safetensors: {message}")]
    Safetensors {
        /// The file concerned.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A 4-bit weight could not be read, checked or made (bioalign-quant).
    #[error("{path}: 4-bit weight {tensor}: {source}")]
    Quant {
        /// The checkpoint.
        path: PathBuf,
        /// The weight.
        tensor: String,
        /// bioalign-quant's error.
        #[source]
        source: bioalign_quant::Error,
    },
    /// A LoRA adapter could not be read, checked or applied (bioalign-lora's error
    /// names the file, tensor or config field).
    #[error("LoRA adapter: {0}")]
    Lora(#[source] bioalign_lora::Error),
    /// LoRA cannot be applied to this model as asked.
    #[error("LoRA: {message}")]
    Adapter {
        /// What is wrong.
        message: String,
    },
    /// An atomic write failed (the error names the file).
    #[error(transparent)]
    AtomicWrite(#[from] bioalign_io::Error),
    /// Bad input to a forward pass (ids outside the vocabulary, mismatched lengths).
    #[error("model input: {message}")]
    Input {
        /// What is wrong.
        message: String,
    },
    /// An unknown device name, or a device whose backend this build lacks.
    #[error("{message}")]
    Device {
        /// What is wrong.
        message: String,
    },
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
