//! The one error type of the crate. Every message names the tensor type and the sizes
//! involved, so a caller can pass it on unchanged.

use crate::GgmlType;
use std::fmt;

/// A type list printed as `F32, F16, Q4_0` inside error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeList(pub &'static [GgmlType]);

impl fmt::Display for TypeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(t.name())?;
        }
        Ok(())
    }
}

/// Why a (de)quantization request was refused. Nothing here panics on bad input: sizes
/// and types are checked up front and reported with these.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// The type cannot be decoded to f32 by this crate.
    #[error("unsupported tensor type {ty} (supported: {supported})")]
    Unsupported { ty: GgmlType, supported: TypeList },

    /// The type cannot be produced by [`crate::quantize()`].
    #[error("cannot quantize to tensor type {ty} (supported: {supported})")]
    UnsupportedQuantize { ty: GgmlType, supported: TypeList },

    /// The number of values is not a whole number of blocks.
    #[error("{ty}: {n_values} values is not a multiple of the block size {block_size}")]
    NotBlockMultiple {
        ty: GgmlType,
        n_values: usize,
        block_size: usize,
    },

    /// The encoded data has the wrong length for the number of values.
    #[error("{ty}: {n_values} values take {expected} bytes, but the data has {actual}")]
    DataSize {
        ty: GgmlType,
        n_values: usize,
        expected: usize,
        actual: usize,
    },

    /// A slice of typed blocks does not match the length of the f32 side.
    #[error("{ty}: {n_blocks} blocks hold {expected} values, but the f32 slice has {actual}")]
    BlockCount {
        ty: GgmlType,
        n_blocks: usize,
        expected: usize,
        actual: usize,
    },

    /// A row index past the end of the tensor data.
    #[error("{ty}: row {row} is out of range: the data holds {n_rows} rows of {n_per_row} values")]
    RowOutOfRange {
        ty: GgmlType,
        row: usize,
        n_rows: usize,
        n_per_row: usize,
    },

    /// Input to a weight quantizer that is NaN or infinite (the result would be garbage).
    #[error("cannot quantize to {ty}: value {index} is {value} (not finite)")]
    NonFinite {
        ty: GgmlType,
        index: usize,
        value: f32,
    },
}
