//! Errors that say which file, which key or tensor, and what was wrong.

use std::path::PathBuf;

/// Anything that can go wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened, mapped, read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid GGUF file (truncated, wrong magic, absurd counts, ...).
    #[error("{file}: not a valid GGUF file: {what}")]
    Malformed { file: String, what: String },
    /// A metadata key is missing or has the wrong type.
    #[error("{file}: {key}: {problem}")]
    Metadata {
        file: String,
        key: String,
        problem: String,
    },
    /// A tensor the caller asked for is not in the file.
    #[error("{file}: tensor '{name}' not found")]
    MissingTensor { file: String, name: String },
    /// A split set (`NAME-00001-of-00009.gguf` …) is incomplete or inconsistent: `file`
    /// names the part that is missing or wrong.
    #[error("{file}: {problem}")]
    Split { file: String, problem: String },
    /// The writer was used incorrectly (wrong order, wrong size, ...).
    #[error("GGUF writer: {0}")]
    Write(String),
}

impl GgufError {
    pub(crate) fn malformed(file: &str, what: impl Into<String>) -> GgufError {
        GgufError::Malformed {
            file: file.to_string(),
            what: what.into(),
        }
    }
}
