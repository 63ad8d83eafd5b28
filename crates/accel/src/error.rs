use thiserror::Error;

/// What can go wrong on the GPU tier. Each message says what to do about it: most name the
/// flag that helps (`--device cpu`, `--n-cpu-moe`, `-ot`).
#[derive(Debug, Error)]
pub enum AccelError {
    #[error("bad --device value {0:?}: expected auto, cpu, gpu, gpu:N (an index from `ferromoe devices`) or gpu:NAME (a part of the adapter's name)")]
    BadChoice(String),
    #[error("no GPU adapter matches --device {choice}: {found}. Run `ferromoe devices` to list them, or use --device cpu")]
    NoAdapter { choice: String, found: String },
    #[error("could not open GPU {adapter:?}: {reason}. Use --device cpu to run on the CPU")]
    RequestDevice { adapter: String, reason: String },
    #[error("{what} needs {bytes} bytes in one GPU buffer but {adapter:?} allows at most {limit}: keep it on the CPU (-ot or --n-cpu-moe)")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        adapter: String,
    },
    #[error("GPU out of memory while allocating {what} ({bytes} bytes) on {adapter:?}: put fewer tensors on the GPU (--n-cpu-moe N, -ot REGEX=cpu, a smaller --ctx) or use --device cpu")]
    OutOfMemory {
        what: String,
        bytes: u64,
        adapter: String,
    },
    #[error("GPU shader {label:?} failed to compile on {adapter:?}: {reason}. This is a bug in ferromoe: please report it; --device cpu runs without the GPU")]
    ShaderCompile {
        label: String,
        adapter: String,
        reason: String,
    },
    #[error("GPU error in {what} on {adapter:?}: {reason}. --device cpu runs without the GPU")]
    Validation {
        what: String,
        adapter: String,
        reason: String,
    },
    #[error("the GPU {adapter:?} was lost ({reason}); --device cpu runs without it")]
    DeviceLost { adapter: String, reason: String },
    #[error("{what}: no GPU kernel for {ty} weights (the GPU takes {supported}); keep it on the CPU (-ot)")]
    UnsupportedType {
        what: String,
        ty: String,
        supported: String,
    },
    #[error("{what}: {reason}")]
    BadShape { what: String, reason: String },
}
