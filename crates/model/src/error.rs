//! Errors while loading or running a model.

/// Anything that can go wrong binding a GGUF file to an architecture or running it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Missing/mistyped metadata, missing tensor, malformed file.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// A tensor type we cannot compute with.
    #[error(transparent)]
    Quant(#[from] quant::QuantError),
    /// The architecture named by `general.architecture` is not one we run.
    #[error("{file}: unsupported architecture '{arch}' (supported: {})", crate::SUPPORTED_ARCHS.join(", "))]
    UnsupportedArch { file: String, arch: String },
    /// A tensor is present but its shape or type does not fit the hyper-parameters.
    #[error("{file}: tensor '{name}': {problem}")]
    BadTensor {
        file: String,
        name: String,
        problem: String,
    },
    /// Hyper-parameters that contradict each other or are out of range.
    #[error("{file}: {problem}")]
    BadConfig { file: String, problem: String },
    /// A placement rule that cannot be used (`--override-tensor`, `--placement`).
    #[error(transparent)]
    Placement(#[from] crate::placement::PlacementError),
    /// A request the model cannot serve as asked, the caller's to fix: too long for the
    /// context, a token id outside the vocabulary, an option out of range.
    #[error("{0}")]
    Input(String),
    /// A kernel refused its operands or a weight could not be prepared (a shape the
    /// binding should have rejected, a failed repack or fused weight): a bug or a corrupt
    /// file, never the caller's input.
    #[error("{0}")]
    Kernel(String),
    /// The GPU tier failed: no such adapter, out of GPU memory, a lost device, a shader
    /// that did not compile (each message names the flag that helps).
    #[error(transparent)]
    Gpu(#[from] accel::AccelError),
}
