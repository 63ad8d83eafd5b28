//! Scalar reference dots of the 2- and 3-bit i-quants × Q8_K: ggml's generic C kernels
//! (`ggml_vec_dot_iq2_xxs_q8_K_generic` …). Per super-block an exact integer
//! `bsum = Σ ls·Σ grid·sign·a` with `ls = 2·s + 1` (odd scales 1..31), then
//! `sumf += (d_w·d_a)·bsum` in f32, and finally ggml's constant factor (the `0.5 + s` of the
//! dequantization doubled into an integer): ×0.125 for the IQ2 types, ×0.25 for IQ3_XXS,
//! ×1 for IQ3_S.

use super::layout::{Q8KView, Q8K_SIZE};
use super::ScalarFn;
use crate::iq_blocks::*;
use crate::iq_grids::*;
use crate::GgmlType;

/// The scalar kernel for one of this module's types.
pub(crate) fn kernel(weight: GgmlType) -> Option<ScalarFn> {
    use GgmlType::*;
    Some(match weight {
        IQ2_XXS => dot_iq2_xxs,
        IQ2_XS => dot_iq2_xs,
        IQ2_S => dot_iq2_s,
        IQ3_XXS => dot_iq3_xxs,
        IQ3_S => dot_iq3_s,
        _ => return None,
    })
}

/// Σ_j grid byte j · a[j] · (−1 if bit j of `signs`), over the first `n` (4 or 8) values.
#[inline(always)]
fn signed_grid_dot(entry: u64, signs: u8, a: &[i8], n: usize) -> i32 {
    let mut s = 0i32;
    for (j, &q) in a[..n].iter().enumerate() {
        let g = (entry >> (8 * j)) as u8 as i32;
        let v = g * q as i32;
        s += if signs >> j & 1 != 0 { -v } else { v };
    }
    s
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// IQ2_XXS super-block: Σ ls·Σ grid·sign·a.
#[inline(always)]
pub(crate) fn ints_iq2_xxs(x: &BlockIQ2XXS, y: &Q8KView) -> i32 {
    let mut bsum = 0i32;
    for ib in 0..8 {
        let idx = u32_at(&x.qs, 8 * ib);
        let aux = u32_at(&x.qs, 8 * ib + 4);
        let ls = 2 * (aux >> 28) as i32 + 1;
        let mut sumi = 0i32;
        for l in 0..4 {
            let entry = IQ2XXS_GRID[(idx >> (8 * l)) as u8 as usize];
            let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
            sumi += signed_grid_dot(entry, signs, &y.qs[32 * ib + 8 * l..], 8);
        }
        bsum += sumi * ls;
    }
    bsum
}

/// IQ2_XS super-block: Σ ls·Σ grid·sign·a with a scale per 16 values.
#[inline(always)]
pub(crate) fn ints_iq2_xs(x: &BlockIQ2XS, y: &Q8KView) -> i32 {
    let mut bsum = 0i32;
    for ib in 0..8 {
        for half in 0..2 {
            let ls = 2 * ((x.scales[ib] >> (4 * half)) & 0xf) as i32 + 1;
            let mut sumi = 0i32;
            for l in 2 * half..2 * half + 2 {
                let k = 4 * ib + l;
                let q = u16::from_le_bytes([x.qs[2 * k], x.qs[2 * k + 1]]);
                let entry = IQ2XS_GRID[(q & 511) as usize];
                sumi += signed_grid_dot(entry, KSIGNS[(q >> 9) as usize], &y.qs[8 * k..], 8);
            }
            bsum += sumi * ls;
        }
    }
    bsum
}

/// IQ2_S super-block: as IQ2_XS with 10-bit indices and plain sign bytes.
#[inline(always)]
pub(crate) fn ints_iq2_s(x: &BlockIQ2S, y: &Q8KView) -> i32 {
    let mut bsum = 0i32;
    for ib in 0..8 {
        for half in 0..2 {
            let ls = 2 * ((x.scales[ib] >> (4 * half)) & 0xf) as i32 + 1;
            let mut sumi = 0i32;
            for l in 2 * half..2 * half + 2 {
                let k = 4 * ib + l;
                let idx = x.qs[k] as usize | (((x.qh[ib] >> (2 * l)) & 3) as usize) << 8;
                sumi += signed_grid_dot(IQ2S_GRID[idx], x.signs[k], &y.qs[8 * k..], 8);
            }
            bsum += sumi * ls;
        }
    }
    bsum
}

/// IQ3_XXS super-block: two 4-value entries per sign index.
#[inline(always)]
pub(crate) fn ints_iq3_xxs(x: &BlockIQ3XXS, y: &Q8KView) -> i32 {
    let mut bsum = 0i32;
    for ib in 0..8 {
        let aux = u32_at(&x.qs, 64 + 4 * ib);
        let ls = 2 * (aux >> 28) as i32 + 1;
        let mut sumi = 0i32;
        for l in 0..4 {
            let k = 8 * ib + 2 * l;
            let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
            let a = &y.qs[32 * ib + 8 * l..];
            sumi += signed_grid_dot(IQ3XXS_GRID[x.qs[k] as usize] as u64, signs, a, 4);
            sumi += signed_grid_dot(
                IQ3XXS_GRID[x.qs[k + 1] as usize] as u64,
                signs >> 4,
                &a[4..],
                4,
            );
        }
        bsum += sumi * ls;
    }
    bsum
}

/// IQ3_S super-block: 9-bit indices, plain sign bytes, a scale per 32 values.
#[inline(always)]
pub(crate) fn ints_iq3_s(x: &BlockIQ3S, y: &Q8KView) -> i32 {
    let mut bsum = 0i32;
    for ib in 0..8 {
        let ls = 2 * ((x.scales[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32 + 1;
        let mut sumi = 0i32;
        for l in 0..4 {
            let k = 8 * ib + 2 * l;
            let hi = |m: usize| (((x.qh[ib] >> (2 * l + m)) & 1) as usize) << 8;
            let signs = x.signs[4 * ib + l];
            let a = &y.qs[32 * ib + 8 * l..];
            sumi += signed_grid_dot(IQ3S_GRID[x.qs[k] as usize | hi(0)] as u64, signs, a, 4);
            let e1 = IQ3S_GRID[x.qs[k + 1] as usize | hi(1)] as u64;
            sumi += signed_grid_dot(e1, signs >> 4, &a[4..], 4);
        }
        bsum += sumi * ls;
    }
    bsum
}

/// The ggml-order f32 part shared by all five: Σ (d_w·d_a)·bsum, then × `factor`.
#[inline(always)]
fn dot_with<B: bytemuck::Pod + HasD>(
    w: &[u8],
    a: &[u8],
    factor: f32,
    ints: impl Fn(&B, &Q8KView) -> i32,
) -> f32 {
    let mut sumf = 0f32;
    let blocks: &[B] = bytemuck::cast_slice(w);
    for (x, yb) in blocks.iter().zip(a.chunks_exact(Q8K_SIZE)) {
        let y = Q8KView::new(yb);
        sumf += x.d() * y.d * ints(x, &y) as f32;
    }
    factor * sumf
}

/// The f16 super-block scale as f32 (every block here starts with it).
pub(crate) trait HasD {
    fn d(&self) -> f32;
}

macro_rules! has_d {
    ($($t:ty),*) => {$(
        impl HasD for $t {
            #[inline(always)]
            fn d(&self) -> f32 {
                self.d.to_f32()
            }
        }
    )*};
}
has_d!(BlockIQ2XXS, BlockIQ2XS, BlockIQ2S, BlockIQ3XXS, BlockIQ3S);

/// IQ2_XXS × Q8_K.
pub fn dot_iq2_xxs(w: &[u8], a: &[u8]) -> f32 {
    dot_with(w, a, 0.125, ints_iq2_xxs)
}

/// IQ2_XS × Q8_K.
pub fn dot_iq2_xs(w: &[u8], a: &[u8]) -> f32 {
    dot_with(w, a, 0.125, ints_iq2_xs)
}

/// IQ2_S × Q8_K.
pub fn dot_iq2_s(w: &[u8], a: &[u8]) -> f32 {
    dot_with(w, a, 0.125, ints_iq2_s)
}

/// IQ3_XXS × Q8_K.
pub fn dot_iq3_xxs(w: &[u8], a: &[u8]) -> f32 {
    dot_with(w, a, 0.25, ints_iq3_xxs)
}

/// IQ3_S × Q8_K.
pub fn dot_iq3_s(w: &[u8], a: &[u8]) -> f32 {
    dot_with(w, a, 1.0, ints_iq3_s)
}

/// Test hook: `[bsum, 0]` per super-block (see `scalar::block_ints`).
pub(crate) fn block_ints(weight: GgmlType, w: &[u8], a: &[u8]) -> Option<Vec<[i32; 2]>> {
    use GgmlType::*;
    fn each<B: bytemuck::Pod>(w: &[u8], a: &[u8], f: fn(&B, &Q8KView) -> i32) -> Vec<[i32; 2]> {
        let blocks: &[B] = bytemuck::cast_slice(w);
        blocks
            .iter()
            .zip(a.chunks_exact(Q8K_SIZE))
            .map(|(x, y)| [f(x, &Q8KView::new(y)), 0])
            .collect()
    }
    Some(match weight {
        IQ2_XXS => each(w, a, ints_iq2_xxs),
        IQ2_XS => each(w, a, ints_iq2_xs),
        IQ2_S => each(w, a, ints_iq2_s),
        IQ3_XXS => each(w, a, ints_iq3_xxs),
        IQ3_S => each(w, a, ints_iq3_s),
        _ => return None,
    })
}
