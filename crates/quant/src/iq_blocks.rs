//! The 2- and 3-bit i-quant blocks (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): 256 values per
//! super-block, each group of 8 (IQ2) or 4 (IQ3) values one entry of a fixed codebook
//! ([`crate::iq_grids`]) with its signs stored apart. As in [`crate::blocks`], the struct
//! layout *is* the file format (alignment 1, sizes checked at compile time).
//!
//! Shared notation: `d` is the f16 super-block scale, `ls` a 4-bit sub-block scale, `grid[k]`
//! the codebook entry k (unsigned bytes), `signs` 8 sign bits (bit j set: value j negative);
//! `ksigns[s]` expands a 7-bit sign index to 8 bits with even parity
//! ([`crate::iq_grids::KSIGNS`]).

use crate::blocks::{Block, Half, QK_K};
use bytemuck::{Pod, Zeroable};
use gguf::GgmlType;

/// IQ2_XXS (2.06 bpw): 8 groups of 32 values, each stored as two little-endian u32 in `qs`:
/// the first holds 4 grid indices (one byte per 8 values), the second 4 × 7-bit sign
/// indices (bits 7l..7l+7) and the scale `ls` (bits 28..32).
/// value = d·(0.5 + ls)·0.25 · `IQ2XXS_GRID[idx][j]` · (−1 if bit j of ksigns[s]).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2XXS {
    pub d: Half,
    pub qs: [u8; QK_K / 4],
}

/// IQ2_XS (2.31 bpw): 32 little-endian u16 in `qs`, one per 8 values: grid index in bits
/// 0..9, sign index in bits 9..16; `scales[g]` holds `ls` of values 32g..32g+16 (low nibble)
/// and 32g+16..32g+32 (high nibble).
/// value = d·(0.5 + ls)·0.25 · `IQ2XS_GRID[idx][j]` · (−1 if bit j of ksigns[s]).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2XS {
    pub d: Half,
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; QK_K / 32],
}

/// IQ2_S (2.56 bpw): one grid index per 8 values, low 8 bits in `qs[k]` and bits 8..10 in
/// `qh[k / 4]` (bits 2(k%4)..2(k%4)+2); the 8 sign bits of group k in `signs[k]` (no parity
/// trick); scales as IQ2_XS.
/// value = d·(0.5 + ls)·0.25 · `IQ2S_GRID[idx][j]` · (−1 if bit j of signs[k]).
/// (ggml declares `qs[64]` with the signs as its second half: the same bytes.)
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ2S {
    pub d: Half,
    pub qs: [u8; QK_K / 8],
    pub signs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 32],
    pub scales: [u8; QK_K / 32],
}

/// IQ3_XXS (3.06 bpw): one grid index (byte) per 4 values in `qs[0..64]`; then per group
/// g of 32 values a little-endian u32 at `qs[64 + 4g..]` with 4 × 7-bit sign indices (one
/// per 8 values) and `ls` in bits 28..32.
/// value = d·(0.5 + ls)·0.5 · `IQ3XXS_GRID[idx][j]` · (−1 if bit j of ksigns[s]).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ3XXS {
    pub d: Half,
    pub qs: [u8; 3 * QK_K / 8],
}

/// IQ3_S (3.44 bpw): one 9-bit grid index per 4 values, low 8 bits in `qs[k]`, bit 8 in
/// bit k%8 of `qh[k / 8]`; 8 sign bits per 8 values in `signs` (no parity trick);
/// `scales[g]` holds `ls` of values 64g..64g+32 (low nibble) and 64g+32..64g+64 (high).
/// value = d·(1 + 2·ls) · `IQ3S_GRID[idx][j]` · (−1 if the value's sign bit is set).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ3S {
    pub d: Half,
    pub qs: [u8; QK_K / 4],
    pub qh: [u8; QK_K / 32],
    pub signs: [u8; QK_K / 8],
    pub scales: [u8; QK_K / 64],
}

const _: () = {
    assert!(std::mem::size_of::<BlockIQ2XXS>() == 66);
    assert!(std::mem::size_of::<BlockIQ2XS>() == 74);
    assert!(std::mem::size_of::<BlockIQ2S>() == 82);
    assert!(std::mem::size_of::<BlockIQ3XXS>() == 98);
    assert!(std::mem::size_of::<BlockIQ3S>() == 110);
    assert!(std::mem::align_of::<BlockIQ3S>() == 1);
};

macro_rules! impl_block {
    ($($t:ty => $ty:ident;)*) => {$(
        impl Block for $t {
            const TYPE: GgmlType = GgmlType::$ty;
            const VALUES: usize = QK_K;
        }
    )*};
}

impl_block! {
    BlockIQ2XXS => IQ2_XXS;
    BlockIQ2XS => IQ2_XS;
    BlockIQ2S => IQ2_S;
    BlockIQ3XXS => IQ3_XXS;
    BlockIQ3S => IQ3_S;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<B: Block>() {
        assert_eq!(std::mem::size_of::<B>(), B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::VALUES, B::TYPE.block_size(), "{}", B::TYPE);
    }

    #[test]
    fn layouts_agree_with_the_type_table() {
        check::<BlockIQ2XXS>();
        check::<BlockIQ2XS>();
        check::<BlockIQ2S>();
        check::<BlockIQ3XXS>();
        check::<BlockIQ3S>();
    }
}
