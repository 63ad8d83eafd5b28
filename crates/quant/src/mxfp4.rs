//! MXFP4 (OCP microscaling FP4, gpt-oss's expert weights): 32 E2M1 values sharing one E8M0
//! power-of-two scale. The block struct (the file format), its decoder (bit-identical to
//! ggml's `dequantize_row_mxfp4` and gguf-py) and ggml's reference quantizer
//! (`quantize_row_mxfp4_ref`, what `llama-quantize` writes).

use crate::blocks::{Block, QK};
use crate::error::QuantError;
use crate::GgmlType;
use bytemuck::{Pod, Zeroable};

/// MXFP4: value j = `e8m0_half(e)`·`KVALUES_MXFP4[q_j]`, q_j the low nibble of `qs[j]` for
/// j < 16 and the high nibble of `qs[j − 16]` after (the Q4_0 nibble layout). The codebook
/// holds the E2M1 values doubled, so the scale is 2^(e − 128) (half the E8M0 value).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockMXFP4 {
    pub e: u8,
    pub qs: [u8; QK / 2],
}

const _: () = assert!(std::mem::size_of::<BlockMXFP4>() == 17);

impl Block for BlockMXFP4 {
    const TYPE: GgmlType = GgmlType::MXFP4;
    const VALUES: usize = QK;
}

/// The E2M1 values ×2: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives, doubled.
pub const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// Half the E8M0 scale `e`, i.e. 2^(e − 128), as ggml's `ggml_e8m0_to_fp32_half` (e = 0
/// and 1 are the f32 subnormals 2^−128, 2^−127; e = 255 is 2^127, not NaN).
#[inline(always)]
pub fn e8m0_to_f32_half(e: u8) -> f32 {
    let bits = if e < 2 {
        0x0020_0000u32 << e
    } else {
        (e as u32 - 1) << 23
    };
    f32::from_bits(bits)
}

impl BlockMXFP4 {
    /// y = 2^(e − 128)·KVALUES_MXFP4[q].
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK]) {
        let d = e8m0_to_f32_half(self.e);
        for j in 0..QK / 2 {
            y[j] = d * KVALUES_MXFP4[(self.qs[j] & 0xf) as usize] as f32;
            y[j + QK / 2] = d * KVALUES_MXFP4[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}

/// ggml's `best_index_mxfp4`: the first codebook index with the least |k·d − x|.
#[inline(always)]
fn best_index(x: f32, d: f32) -> u8 {
    let mut best = 0;
    let mut best_err = (KVALUES_MXFP4[0] as f32 * d - x).abs();
    for (i, &k) in KVALUES_MXFP4.iter().enumerate().skip(1) {
        let err = (k as f32 * d - x).abs();
        if err < best_err {
            best = i as u8;
            best_err = err;
        }
    }
    best
}

/// f32 → MXFP4, ggml's reference (`quantize_row_mxfp4_ref`, no importance matrix): the
/// shared exponent `e = ⌊log2 max|x|⌋ − 2 + 127` (so the largest value lands in the top
/// binade of the codebook, 4..6 × 2^(e−127)), then each value to its nearest codebook
/// entry (first on ties). `src.len()` must be `32 · blocks.len()`.
pub fn quantize_mxfp4(src: &[f32], blocks: &mut [BlockMXFP4]) -> Result<(), QuantError> {
    crate::quantize::check_src::<BlockMXFP4>(src.len(), blocks.len())?;
    let (xs, _) = src.as_chunks::<QK>();
    for (x, y) in xs.iter().zip(blocks.iter_mut()) {
        let mut amax = 0f32;
        for v in x {
            if amax < v.abs() {
                amax = v.abs();
            }
        }
        // ggml converts the float to uint8_t; on x86 that is a truncation to i32, then the
        // low byte (tiny maxima wrap, as in llama-quantize).
        y.e = if amax > 0.0 {
            (amax.log2().floor() - 2.0 + 127.0) as i32 as u8
        } else {
            0
        };
        let d = e8m0_to_f32_half(y.e);
        for j in 0..QK / 2 {
            y.qs[j] = best_index(x[j], d) | (best_index(x[j + QK / 2], d) << 4);
        }
    }
    Ok(())
}
