//! The GGUF container.
pub mod types;
pub use types::{GgmlType, ALL_TYPES};
