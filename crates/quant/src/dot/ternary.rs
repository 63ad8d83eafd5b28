//! Scalar reference dots of TQ1_0 and TQ2_0 × Q8_K (ggml's `ggml_vec_dot_tq{1,2}_0_q8_K_generic`):
//! one exact integer Σ (q − 1)·a per block, then `sumf += Σ · (d·d8)`.

use super::layout::{Q8KView, Q8K_SIZE};
use crate::ternary::{BlockTQ1_0, BlockTQ2_0};

#[inline(always)]
fn q8k(bytes: &[u8]) -> impl Iterator<Item = Q8KView<'_>> {
    bytes.chunks_exact(Q8K_SIZE).map(Q8KView::new)
}

/// TQ1_0 block: Σ (trit − 1)·a.
#[inline(always)]
pub(crate) fn int_tq1_0(x: &BlockTQ1_0, y: &Q8KView) -> i32 {
    x.trits()
        .iter()
        .zip(y.qs)
        .map(|(&t, &q)| (t as i32 - 1) * q as i32)
        .sum()
}

/// TQ2_0 block: Σ (q − 1)·a.
#[inline(always)]
pub(crate) fn int_tq2_0(x: &BlockTQ2_0, y: &Q8KView) -> i32 {
    x.values()
        .iter()
        .zip(y.qs)
        .map(|(&v, &q)| v as i32 * q as i32)
        .sum()
}

/// TQ1_0 × Q8_K.
pub fn dot_tq1_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in bytemuck::cast_slice::<u8, BlockTQ1_0>(w).iter().zip(q8k(a)) {
        sumf += int_tq1_0(x, &y) as f32 * (x.d.to_f32() * y.d);
    }
    sumf
}

/// TQ2_0 × Q8_K.
pub fn dot_tq2_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in bytemuck::cast_slice::<u8, BlockTQ2_0>(w).iter().zip(q8k(a)) {
        sumf += int_tq2_0(x, &y) as f32 * (y.d * x.d.to_f32());
    }
    sumf
}

/// Per-block integers for the SIMD cross-check: `[Σ (q − 1)·a, 0]`.
pub(crate) fn ints_tq1_0(w: &[u8], a: &[u8]) -> Vec<[i32; 2]> {
    bytemuck::cast_slice::<u8, BlockTQ1_0>(w)
        .iter()
        .zip(q8k(a))
        .map(|(x, y)| [int_tq1_0(x, &y), 0])
        .collect()
}

/// Per-block integers for the SIMD cross-check: `[Σ (q − 1)·a, 0]`.
pub(crate) fn ints_tq2_0(w: &[u8], a: &[u8]) -> Vec<[i32; 2]> {
    bytemuck::cast_slice::<u8, BlockTQ2_0>(w)
        .iter()
        .zip(q8k(a))
        .map(|(x, y)| [int_tq2_0(x, &y), 0])
        .collect()
}
