//! Scalar reference dots of IQ1_S and IQ1_M × Q8_K (ggml's `ggml_vec_dot_iq1_{s,m}_q8_K_generic`).
//!
//! Both types store value = d·ls·(grid + δ/8) with δ = ±1, so a block's dot is
//! `d·d8·(S + S_δ/8)` with S = Σ ls·Σ grid·a and S_δ = Σ ls·δ·Σ a. ggml evaluates
//! `S + 0.125·S_δ` in f32, which is exact here (|S|, |S_δ| ≤ 15·256·128 < 2²⁰, so the sum
//! needs at most 24 significant bits), hence equal to `(8·S + S_δ)/8`: the per-block integer
//! the SIMD kernels compute (in one pass, weights `8·grid + δ`) is `8·S + S_δ`.

use super::layout::{Q8KView, Q8K_SIZE};
use crate::blocks::Half;
use crate::iq1::{iq1_grid, BlockIQ1M, BlockIQ1S, IQ1_DELTA};

#[inline(always)]
fn blocks<B: bytemuck::Pod>(bytes: &[u8]) -> &[B] {
    bytemuck::cast_slice(bytes)
}

#[inline(always)]
fn q8k(bytes: &[u8]) -> impl Iterator<Item = Q8KView<'_>> {
    bytes.chunks_exact(Q8K_SIZE).map(Q8KView::new)
}

/// Σ grid·a over one group of 8.
#[inline(always)]
fn grid_dot(k: usize, a: &[i8]) -> i32 {
    iq1_grid(k)
        .iter()
        .zip(a)
        .map(|(&g, &q)| g as i32 * q as i32)
        .sum()
}

/// IQ1_S super-block: (S, S_δ), S_δ from the Q8_K `bsums` as ggml takes it.
#[inline(always)]
pub(crate) fn sums_iq1_s(x: &BlockIQ1S, y: &Q8KView) -> (i32, i32) {
    let (mut sumi, mut sumi1) = (0i32, 0i32);
    for ib in 0..8 {
        let ls = x.scale(ib);
        let mut lsum = 0;
        for l in 0..4 {
            let o = 32 * ib + 8 * l;
            lsum += grid_dot(x.grid_index(ib, l), &y.qs[o..o + 8]);
        }
        sumi += ls * lsum;
        sumi1 += ls * x.delta_sign(ib) * (y.bsums[2 * ib] as i32 + y.bsums[2 * ib + 1] as i32);
    }
    (sumi, sumi1)
}

/// IQ1_S × Q8_K.
pub fn dot_iq1_s(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockIQ1S>(w).iter().zip(q8k(a)) {
        let (sumi, sumi1) = sums_iq1_s(x, &y);
        sumf += x.d.to_f32() * y.d * (sumi as f32 + IQ1_DELTA * sumi1 as f32);
    }
    sumf
}

/// IQ1_M super-block: (S, S_δ), δ per group of 8 (so from the activations, not `bsums`).
#[inline(always)]
pub(crate) fn sums_iq1_m(x: &BlockIQ1M, y: &Q8KView) -> (i32, i32) {
    let (mut sumi1, mut sumi2) = (0i32, 0i32);
    for ib in 0..8 {
        let ls = x.scales(ib);
        let (mut sum1, mut sum2) = ([0i32; 2], [0i32; 2]);
        for l in 0..4 {
            let o = 32 * ib + 8 * l;
            let q8 = &y.qs[o..o + 8];
            sum1[l / 2] += grid_dot(x.grid_index(ib, l), q8);
            sum2[l / 2] += x.delta_sign(ib, l) * q8.iter().map(|&q| q as i32).sum::<i32>();
        }
        sumi1 += sum1[0] * ls[0] + sum1[1] * ls[1];
        sumi2 += sum2[0] * ls[0] + sum2[1] * ls[1];
    }
    (sumi1, sumi2)
}

/// IQ1_M × Q8_K.
pub fn dot_iq1_m(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockIQ1M>(w).iter().zip(q8k(a)) {
        let (sumi1, sumi2) = sums_iq1_m(x, &y);
        let d: Half = x.d();
        sumf += d.to_f32() * y.d * (sumi1 as f32 + IQ1_DELTA * sumi2 as f32);
    }
    sumf
}

/// Per-block integers for the SIMD cross-check: `[8·S + S_δ, 0]`.
pub(crate) fn ints_iq1_s(w: &[u8], a: &[u8]) -> Vec<[i32; 2]> {
    blocks::<BlockIQ1S>(w)
        .iter()
        .zip(q8k(a))
        .map(|(x, y)| {
            let (s, sd) = sums_iq1_s(x, &y);
            [8 * s + sd, 0]
        })
        .collect()
}

/// Per-block integers for the SIMD cross-check: `[8·S + S_δ, 0]`.
pub(crate) fn ints_iq1_m(w: &[u8], a: &[u8]) -> Vec<[i32; 2]> {
    blocks::<BlockIQ1M>(w)
        .iter()
        .zip(q8k(a))
        .map(|(x, y)| {
            let (s, sd) = sums_iq1_m(x, &y);
            [8 * s + sd, 0]
        })
        .collect()
}
