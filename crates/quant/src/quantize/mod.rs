//! Quantization: f32 → ggml blocks.
//!
//! Two families with different goals:
//! - **weights** ([`weights`]: Q8_0, Q4_0, Q4_K, Q5_K, Q6_K; MXFP4 in [`crate::mxfp4`]): ports of ggml's reference
//!   quantizers (`quantize_row_*_ref`, what `llama-quantize` runs when given no importance
//!   matrix), including the k-quants' scale searches, evaluated in f32 in ggml's order so
//!   that our files match llama-quantize's bit for bit;
//! - **activations** ([`activation`]: Q8_K, Q8_0, Q8_1): what ggml's CPU backend does to
//!   the f32 input row of a matrix multiplication on x86 (the partner of each weight type
//!   in the block dot products), scalar and AVX2, bit-identical to each other.
//!
//! [`quantize`] dispatches on the type id and writes raw bytes.

pub mod activation;
mod search;
pub mod weights;

use crate::blocks::*;
use crate::dequant::check_data_size;
use crate::error::{QuantError, TypeList};
use crate::GgmlType;

pub use activation::*;
pub use weights::*;

/// The types [`quantize`] produces. Q8_0 is the weight quantizer (ggml's reference, as
/// llama-quantize); Q8_1 and Q8_K are the activation quantizers.
pub const QUANTIZE_TYPES: [GgmlType; 12] = {
    use GgmlType::*;
    [
        F32, F16, Q4_0, Q5_0, Q8_0, Q8_1, Q4_K, Q5_K, Q6_K, Q8_K, BF16, MXFP4,
    ]
};

/// Whether [`quantize`] can produce this type.
pub fn can_quantize(ty: GgmlType) -> bool {
    QUANTIZE_TYPES.contains(&ty)
}

/// ggml's `nearest_int`: round to nearest, ties to even, through the f32 adder (adding
/// 1.5·2^23 leaves the integer in the low mantissa bits). Exact for |x| ≤ 4194303; for
/// larger or non-finite inputs it returns garbage but never panics, like ggml.
#[inline(always)]
pub fn nearest_int(x: f32) -> i32 {
    let v = x + 12582912.0;
    (v.to_bits() & 0x007f_ffff) as i32 - 0x0040_0000
}

/// f32 → IEEE half, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline(always)]
pub fn f32_to_half(x: f32) -> Half {
    Half::from_f32(x)
}

/// f32 → bfloat16 bits, round to nearest even, NaN forced quiet (ggml's
/// `ggml_compute_fp32_to_bf16`).
#[inline(always)]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

/// Quantizes `src` to type `ty`, writing exactly `ty.row_bytes(src.len())` bytes to `dst`.
///
/// Errors: a type outside [`QUANTIZE_TYPES`], `src.len()` not a multiple of the block
/// size, `dst` of the wrong length, or a NaN/infinite input value (which ggml would turn
/// into a silently broken block).
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    if !can_quantize(ty) {
        return Err(QuantError::UnsupportedQuantize {
            ty,
            supported: TypeList(&QUANTIZE_TYPES),
        });
    }
    check_data_size(ty, dst.len(), src.len())?;
    if let Some(index) = src.iter().position(|v| !v.is_finite()) {
        return Err(QuantError::NonFinite {
            ty,
            index,
            value: src[index],
        });
    }
    match ty {
        F32 => {
            for (d, s) in dst.chunks_exact_mut(4).zip(src) {
                d.copy_from_slice(&s.to_le_bytes());
            }
        }
        F16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_half(*s).0);
            }
        }
        BF16 => {
            for (d, s) in dst.chunks_exact_mut(2).zip(src) {
                d.copy_from_slice(&f32_to_bf16_bits(*s).to_le_bytes());
            }
        }
        Q4_0 => quantize_q4_0(src, bytemuck::cast_slice_mut(dst))?,
        Q5_0 => quantize_q5_0(src, bytemuck::cast_slice_mut(dst))?,
        Q8_0 => quantize_q8_0(src, bytemuck::cast_slice_mut(dst))?,
        Q8_1 => quantize_act_q8_1(src, bytemuck::cast_slice_mut(dst))?,
        Q4_K => quantize_q4_k(src, bytemuck::cast_slice_mut(dst))?,
        Q5_K => quantize_q5_k(src, bytemuck::cast_slice_mut(dst))?,
        Q6_K => quantize_q6_k(src, bytemuck::cast_slice_mut(dst))?,
        MXFP4 => crate::mxfp4::quantize_mxfp4(src, bytemuck::cast_slice_mut(dst))?,
        Q8_K => {
            // BlockQ8K holds an f32 (alignment 4) and `dst` may be unaligned: go through
            // one block on the stack.
            let size = std::mem::size_of::<BlockQ8K>();
            let (xs, _) = src.as_chunks::<QK_K>();
            for (d, x) in dst.chunks_exact_mut(size).zip(xs) {
                let mut b = [BlockQ8K::zeroed()];
                quantize_act_q8_k(x, &mut b)?;
                d.copy_from_slice(bytemuck::bytes_of(&b[0]));
            }
        }
        _ => unreachable!("checked by can_quantize"),
    }
    Ok(())
}

use bytemuck::Zeroable;

/// Checks that `src` fills exactly `n_blocks` blocks of `B`.
pub(crate) fn check_src<B: Block>(src_len: usize, n_blocks: usize) -> Result<(), QuantError> {
    let expected = n_blocks * B::VALUES;
    if src_len != expected {
        return Err(QuantError::BlockCount {
            ty: B::TYPE,
            n_blocks,
            expected,
            actual: src_len,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        for (x, want) in [
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (3.49, 3),
            (-127.0, -127),
            (126.6, 127),
        ] {
            assert_eq!(nearest_int(x), want, "{x}");
            assert_eq!(nearest_int(x), x.round_ties_even() as i32);
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between two bf16 values: ties to even (down).
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::NAN) & 0x7fc0, 0x7fc0);
    }
}
