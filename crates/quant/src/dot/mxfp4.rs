//! Scalar reference dot of MXFP4 × Q8_0 (ggml's `ggml_vec_dot_mxfp4_q8_0_generic`): per block
//! the exact Σ KVALUES_MXFP4[q]·a, then `sumf += (d8·2^(e−128))·Σ`.

use crate::blocks::BlockQ8_0;
use crate::mxfp4::{e8m0_to_f32_half, BlockMXFP4, KVALUES_MXFP4};

/// MXFP4 block: Σ KVALUES_MXFP4[q]·a.
#[inline(always)]
pub(crate) fn int_mxfp4(x: &BlockMXFP4, y: &BlockQ8_0) -> i32 {
    let (mut s1, mut s2) = (0i32, 0i32);
    for j in 0..16 {
        s1 += y.qs[j] as i32 * KVALUES_MXFP4[(x.qs[j] & 0xf) as usize] as i32;
        s2 += y.qs[j + 16] as i32 * KVALUES_MXFP4[(x.qs[j] >> 4) as usize] as i32;
    }
    s1 + s2
}

/// MXFP4 × Q8_0.
pub fn dot_mxfp4(w: &[u8], a: &[u8]) -> f32 {
    let xs: &[BlockMXFP4] = bytemuck::cast_slice(w);
    let ys: &[BlockQ8_0] = bytemuck::cast_slice(a);
    let mut sumf = 0f32;
    for (x, y) in xs.iter().zip(ys) {
        let d = y.d.to_f32() * e8m0_to_f32_half(x.e);
        sumf += d * int_mxfp4(x, y) as f32;
    }
    sumf
}

/// Per-block integers for the SIMD cross-check: `[Σ KVALUES[q]·a, 0]`.
pub(crate) fn ints_mxfp4(w: &[u8], a: &[u8]) -> Vec<[i32; 2]> {
    let xs: &[BlockMXFP4] = bytemuck::cast_slice(w);
    let ys: &[BlockQ8_0] = bytemuck::cast_slice(a);
    xs.iter()
        .zip(ys)
        .map(|(x, y)| [int_mxfp4(x, y), 0])
        .collect()
}
