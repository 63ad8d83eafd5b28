//! ggml quantization block types: their `#[repr(C)]` layouts, dequantization to f32,
//! reference quantizers, and (in `dot`) the block dot products the kernels are built on.

pub mod blocks;
pub use gguf::GgmlType;
pub mod dot;
