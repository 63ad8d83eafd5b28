//! CPU compute kernels for ferromoe: the persistent thread pool every op is split across,
//! elementwise kernels (norms, activations, softmax, RoPE/YaRN, vector helpers),
//! matmul over quantized weights, and the routed experts of a MoE FFN ([`moe`]).
//!
//! SIMD paths are chosen at run time ([`simd::has_avx2_fma`]); every kernel also has a
//! portable scalar path and is tested against an f64 reference.

// `is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
#![allow(clippy::manual_is_multiple_of)]

pub mod activation;
pub mod attention;
pub mod indexer;
pub mod kvdata;
pub mod matmul;
pub mod moe;
pub mod norm;
pub mod pool;
pub mod rope;
pub mod simd;
pub mod softmax;
pub mod vector;

pub use pool::{default_threads, ThreadPool};
