//! CPU compute kernels for ferromoe: the persistent thread pool every op is split across,
//! elementwise kernels (norms, activations, softmax, RoPE/YaRN), and matmul over
//! quantized weights.

pub mod pool;

pub use pool::{default_threads, ThreadPool};
