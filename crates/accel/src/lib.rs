//! The GPU tier. One vendor-neutral path (wgpu: Vulkan, Metal, DX12; WGSL shaders) for what the
//! placement plan puts on a GPU: attention with its KV cache, the dense and shared parts, the
//! router, the output head. The routed experts stay on the CPU (`kernels`).
//!
//! - [`device`]: which adapters exist, `--device auto|cpu|gpu[:N|:NAME]`, opening one with its
//!   own maximum limits.
//! - [`buffer`]: storage buffers within the adapter's limits, uploads and read-backs.
//! - [`pipeline`]: WGSL compiled once (errors captured, never a panic), dispatches.
//! - [`matmul`]: quantized weights in file order, GEMV (decode) and tiled GEMM (prompts).
//! - [`ops`]: norms, RoPE, activations, softmax, GQA and MLA attention over a KV cache in GPU memory.
//! - [`testing`]: how tests get a device (lavapipe in CI) or say why they were skipped.
//!
//! Every shader has a CPU reference in `kernels`/`quant` and a test that it matches there.

pub mod buffer;
pub mod device;
mod error;
pub mod matmul;
pub mod ops;
pub mod pipeline;
pub mod testing;

pub use buffer::GpuBuffer;
pub use device::{list_adapters, AdapterSummary, DeviceChoice, Gpu, GpuFeatures};
pub use error::AccelError;
pub use matmul::{GpuMatrix, MatmulKernels, MatmulPath, Strided};
pub use pipeline::{Kernel, Recording, Workgroups};

/// Re-exported so that callers name wgpu types through one version.
pub use wgpu;
