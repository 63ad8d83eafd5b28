//! ggml's quantization blocks as plain `#[repr(C)]` structs: the struct layout *is* the
//! file format, so a slice of tensor bytes is reinterpreted as a slice of blocks with no
//! copy (`bytemuck::cast_slice`, which checks size and alignment).
//!
//! Weight blocks store their f16 scales as [`Half`] (two little-endian bytes), which keeps
//! every weight block at alignment 1: mapped tensor data can be viewed in place whatever
//! its offset. Only the activation block [`BlockQ8K`] (which we create ourselves) holds
//! an `f32` and needs alignment 4.

use bytemuck::{Pod, Zeroable};
use gguf::GgmlType;

/// Values per block of the legacy quants (Q4_0 … Q8_1, IQ4_NL).
pub const QK: usize = 32;
/// Values per super-block of the k-quants and IQ4_XS.
pub const QK_K: usize = 256;
/// Length of the packed 6-bit scale array of Q4_K / Q5_K (and Q3_K's 12 bytes).
pub const K_SCALE_SIZE: usize = 12;

/// An IEEE half-precision value stored as its two little-endian bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
#[repr(transparent)]
pub struct Half(pub [u8; 2]);

impl Half {
    /// The value as f32 (exact: every f16 is representable).
    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        // Branch-light exact conversion (no table, no runtime CPU check): shifting the
        // exponent+mantissa into f32 position and multiplying by 2^112 rebiases the
        // exponent and normalises subnormals in one exact product; Inf/NaN keep an all-ones
        // exponent. Checked against the `half` crate for all 65536 bit patterns.
        let h = u16::from_le_bytes(self.0) as u32;
        let sign = (h & 0x8000) << 16;
        let em = h & 0x7fff;
        let magnitude = if em >= 0x7c00 {
            0x7f80_0000 | ((em & 0x3ff) << 13)
        } else {
            (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits()
        };
        f32::from_bits(magnitude | sign)
    }
    /// The nearest f16 to `x` (round to nearest even), as ggml's `GGML_FP32_TO_FP16`.
    #[inline(always)]
    pub fn from_f32(x: f32) -> Half {
        Half(half::f16::from_f32(x).to_bits().to_le_bytes())
    }
}

/// Q4_0: 32 values = d · (q − 8), q ∈ 0..16 in nibbles (low nibbles hold values 0..16,
/// high nibbles values 16..32).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: Half,
    pub qs: [u8; QK / 2],
}

/// Q4_1: 32 values = d · q + m, q ∈ 0..16.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: Half,
    pub m: Half,
    pub qs: [u8; QK / 2],
}

/// Q5_0: 32 values = d · (q − 16), q ∈ 0..32: low 4 bits in `qs` (as Q4_0), bit 4 of
/// value j in bit j of `qh` (little-endian u32).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: Half,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q5_1: 32 values = d · q + m, q ∈ 0..32 (bit layout as Q5_0).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5_1 {
    pub d: Half,
    pub m: Half,
    pub qh: [u8; 4],
    pub qs: [u8; QK / 2],
}

/// Q8_0: 32 values = d · q, q ∈ −127..=127. Also the activation partner of the legacy quants.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: Half,
    pub qs: [i8; QK],
}

/// Q8_1: as Q8_0, plus `s` = d · Σq (the activation partner of Q4_1/Q5_1, whose offset
/// `m` multiplies the sum of the activations).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8_1 {
    pub d: Half,
    pub s: Half,
    pub qs: [i8; QK],
}

/// Q2_K: 16 sub-blocks of 16; value = d·(sc & 15)·q − dmin·(sc >> 4), q ∈ 0..4.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ2K {
    pub scales: [u8; QK_K / 16],
    pub qs: [u8; QK_K / 4],
    pub d: Half,
    pub dmin: Half,
}

/// Q3_K: 16 sub-blocks of 16 with 6-bit signed scales packed in 12 bytes; q ∈ −4..4
/// (2 low bits in `qs`, the high bit in `hmask`, *set* meaning "no −4").
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ3K {
    pub hmask: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 4],
    pub scales: [u8; K_SCALE_SIZE],
    pub d: Half,
}

/// Q4_K: 8 sub-blocks of 32 with 6-bit scales and mins packed in 12 bytes;
/// value = d·sc·q − dmin·m, q ∈ 0..16.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ4K {
    pub d: Half,
    pub dmin: Half,
    pub scales: [u8; K_SCALE_SIZE],
    pub qs: [u8; QK_K / 2],
}

/// Q5_K: as Q4_K with a fifth bit per value in `qh`; q ∈ 0..32.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ5K {
    pub d: Half,
    pub dmin: Half,
    pub scales: [u8; K_SCALE_SIZE],
    pub qh: [u8; QK_K / 8],
    pub qs: [u8; QK_K / 2],
}

/// Q6_K: 16 sub-blocks of 16 with 8-bit signed scales; value = d·sc·(q − 32), q ∈ 0..64
/// (4 low bits in `ql`, 2 high bits in `qh`).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ6K {
    pub ql: [u8; QK_K / 2],
    pub qh: [u8; QK_K / 4],
    pub scales: [i8; QK_K / 16],
    pub d: Half,
}

/// Q8_K: the activation partner of the k-quants and IQ4_XS. f32 scale, 256 int8 values
/// and the sums of each group of 16 (`bsums`), which the k-quant dots use for their mins.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; QK_K],
    pub bsums: [i16; QK_K / 16],
}

/// IQ4_NL: 32 values = d · `KVALUES_IQ4NL[q]`, q ∈ 0..16 (nibble layout as Q4_0).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4NL {
    pub d: Half,
    pub qs: [u8; QK / 2],
}

/// IQ4_XS: 8 sub-blocks of 32 with 6-bit scales (low 4 bits in `scales_l`, high 2 bits
/// in `scales_h`), value = d·(ls − 32)·`KVALUES_IQ4NL[q]`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ4XS {
    pub d: Half,
    pub scales_h: [u8; 2],
    pub scales_l: [u8; QK_K / 64],
    pub qs: [u8; QK_K / 2],
}

/// The non-linear 4-bit codebook of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

// The struct sizes are the file format: check them at compile time.
const _: () = {
    assert!(std::mem::size_of::<BlockQ4_0>() == 18);
    assert!(std::mem::size_of::<BlockQ4_1>() == 20);
    assert!(std::mem::size_of::<BlockQ5_0>() == 22);
    assert!(std::mem::size_of::<BlockQ5_1>() == 24);
    assert!(std::mem::size_of::<BlockQ8_0>() == 34);
    assert!(std::mem::size_of::<BlockQ8_1>() == 36);
    assert!(std::mem::size_of::<BlockQ2K>() == 84);
    assert!(std::mem::size_of::<BlockQ3K>() == 110);
    assert!(std::mem::size_of::<BlockQ4K>() == 144);
    assert!(std::mem::size_of::<BlockQ5K>() == 176);
    assert!(std::mem::size_of::<BlockQ6K>() == 210);
    assert!(std::mem::size_of::<BlockQ8K>() == 292);
    assert!(std::mem::size_of::<BlockIQ4NL>() == 18);
    assert!(std::mem::size_of::<BlockIQ4XS>() == 136);
    assert!(std::mem::align_of::<BlockQ4K>() == 1);
    assert!(std::mem::align_of::<BlockQ6K>() == 1);
};

/// Implemented by every block struct: the ggml type it encodes and how many values one
/// block holds. Lets generic code (casting, dequantizing, dot products) name a block type
/// by its Rust type.
pub trait Block: Pod {
    /// The ggml type whose block this is.
    const TYPE: GgmlType;
    /// Values per block (32 or 256).
    const VALUES: usize;
}

macro_rules! impl_block {
    ($($t:ty => $ty:ident, $n:expr;)*) => {$(
        impl Block for $t {
            const TYPE: GgmlType = GgmlType::$ty;
            const VALUES: usize = $n;
        }
    )*};
}

impl_block! {
    BlockQ4_0 => Q4_0, QK;
    BlockQ4_1 => Q4_1, QK;
    BlockQ5_0 => Q5_0, QK;
    BlockQ5_1 => Q5_1, QK;
    BlockQ8_0 => Q8_0, QK;
    BlockQ8_1 => Q8_1, QK;
    BlockQ2K => Q2_K, QK_K;
    BlockQ3K => Q3_K, QK_K;
    BlockQ4K => Q4_K, QK_K;
    BlockQ5K => Q5_K, QK_K;
    BlockQ6K => Q6_K, QK_K;
    BlockQ8K => Q8_K, QK_K;
    BlockIQ4NL => IQ4_NL, QK;
    BlockIQ4XS => IQ4_XS, QK_K;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<B: Block>() {
        assert_eq!(std::mem::size_of::<B>(), B::TYPE.type_size(), "{}", B::TYPE);
        assert_eq!(B::VALUES, B::TYPE.block_size(), "{}", B::TYPE);
    }

    #[test]
    fn half_to_f32_is_exact_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = Half(bits.to_le_bytes()).to_f32();
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
                assert_eq!(got.to_bits() & 0x8000_0000, want.to_bits() & 0x8000_0000);
            } else {
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
        }
    }

    /// The block structs must agree with the gguf crate's size table (which validates files).
    #[test]
    fn layouts_agree_with_the_type_table() {
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ2K>();
        check::<BlockQ3K>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockQ8K>();
        check::<BlockIQ4NL>();
        check::<BlockIQ4XS>();
    }
}
