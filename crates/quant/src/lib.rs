//! ggml quantization block types: their `#[repr(C)]` layouts, dequantization to f32,
//! reference quantizers, and (in `dot`) the block dot products the kernels are built on.
//!
//! - [`blocks`]: the block structs (the file format) and the [`Block`] trait;
//! - [`dequant`]: blocks → f32, bit-identical to ggml / gguf-py ([`dequantize`],
//!   [`dequantize_row`], per-type `dequantize_q4_k` etc., per-block `BlockQ4K::dequantize`);
//! - [`quantize`](mod@quantize): f32 → blocks, the weight quantizers of llama-quantize and the
//!   activation quantizers of ggml's x86 CPU backend ([`quantize()`], per-type functions);
//! - `dot`: block dot products.

pub mod blocks;
pub mod dequant;
pub mod dot;
pub mod error;
pub mod iq1;
mod iq1_grid;
pub mod iq_blocks;
pub mod iq_grids;
pub mod mxfp4;
pub mod quantize;
pub mod repack;
pub mod ternary;

pub use blocks::*;
pub use dequant::*;
pub use error::QuantError;
pub use gguf::GgmlType;
pub use iq1::{BlockIQ1M, BlockIQ1S};
pub use iq_blocks::*;
pub use mxfp4::{quantize_mxfp4, BlockMXFP4};
pub use quantize::*;
pub use ternary::{BlockTQ1_0, BlockTQ2_0};
