//! Per-block decoders of the 2- and 3-bit i-quants ([`crate::iq_blocks`]). Each evaluates
//! gguf-py's expression in its order, in f32: `db = d·(0.5 + ls)·0.25` (IQ2), `·0.5`
//! (IQ3_XXS) or `d·(1 + 2·ls)` (IQ3_S), then `(db · grid value) · ±1`, so the results are
//! bit-identical to gguf-py and ggml's `dequantize_row_iq*`.

use super::*;
use crate::iq_blocks::*;
use crate::iq_grids::*;

/// Writes the 8 values of one grid entry (`entry` bytes, little-endian) times `db`, negated
/// where bit j of `signs` is set.
#[inline(always)]
fn put8(y: &mut [f32], db: f32, entry: u64, signs: u8) {
    for (j, v) in y[..8].iter_mut().enumerate() {
        let g = (entry >> (8 * j)) as u8 as f32;
        *v = db * g * if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
    }
}

/// As [`put8`] for a 4-value IQ3 entry, with sign bits `signs >> shift`.
#[inline(always)]
fn put4(y: &mut [f32], db: f32, entry: u32, signs: u8) {
    for (j, v) in y[..4].iter_mut().enumerate() {
        let g = (entry >> (8 * j)) as u8 as f32;
        *v = db * g * if signs >> j & 1 != 0 { -1.0 } else { 1.0 };
    }
}

#[inline(always)]
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl BlockIQ2XXS {
    /// See the struct: 8 groups of 32, grid index bytes + packed signs and scale.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (g, yg) in y.chunks_exact_mut(32).enumerate() {
            let idx = u32_at(&self.qs, 8 * g);
            let aux = u32_at(&self.qs, 8 * g + 4);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
            for (l, y8) in yg.chunks_exact_mut(8).enumerate() {
                let entry = IQ2XXS_GRID[(idx >> (8 * l)) as u8 as usize];
                let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
                put8(y8, db, entry, signs);
            }
        }
    }
}

impl BlockIQ2XS {
    /// See the struct: one u16 (9-bit index, 7-bit sign index) per 8 values, a 4-bit scale
    /// per 16.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (k, y8) in y.chunks_exact_mut(8).enumerate() {
            let q = u16::from_le_bytes([self.qs[2 * k], self.qs[2 * k + 1]]);
            let ls = (self.scales[k / 4] >> (4 * (k / 2 % 2))) & 0xf;
            let db = d * (0.5 + ls as f32) * 0.25;
            put8(
                y8,
                db,
                IQ2XS_GRID[(q & 511) as usize],
                KSIGNS[(q >> 9) as usize],
            );
        }
    }
}

impl BlockIQ2S {
    /// See the struct: 10-bit index (`qs` + 2 bits of `qh`) and 8 plain sign bits per 8
    /// values, a 4-bit scale per 16.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (k, y8) in y.chunks_exact_mut(8).enumerate() {
            let hi = (self.qh[k / 4] >> (2 * (k % 4))) & 3;
            let idx = self.qs[k] as usize | (hi as usize) << 8;
            let ls = (self.scales[k / 4] >> (4 * (k / 2 % 2))) & 0xf;
            let db = d * (0.5 + ls as f32) * 0.25;
            put8(y8, db, IQ2S_GRID[idx], self.signs[k]);
        }
    }
}

impl BlockIQ3XXS {
    /// See the struct: one index byte per 4 values, a u32 of sign indices + scale per 32.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (g, yg) in y.chunks_exact_mut(32).enumerate() {
            let aux = u32_at(&self.qs, QK_K / 4 + 4 * g);
            let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
            for (l, y8) in yg.chunks_exact_mut(8).enumerate() {
                let signs = KSIGNS[((aux >> (7 * l)) & 127) as usize];
                let k = 8 * g + 2 * l;
                put4(&mut y8[..4], db, IQ3XXS_GRID[self.qs[k] as usize], signs);
                put4(
                    &mut y8[4..],
                    db,
                    IQ3XXS_GRID[self.qs[k + 1] as usize],
                    signs >> 4,
                );
            }
        }
    }
}

impl BlockIQ3S {
    /// See the struct: 9-bit index per 4 values, plain sign bits, a 4-bit scale per 32.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (k, y4) in y.chunks_exact_mut(4).enumerate() {
            let idx = self.qs[k] as usize | (((self.qh[k / 8] >> (k % 8)) & 1) as usize) << 8;
            let ls = (self.scales[k / 16] >> (4 * (k / 8 % 2))) & 0xf;
            let db = d * (1 + 2 * ls) as f32;
            let signs = self.signs[k / 2] >> (4 * (k % 2));
            put4(y4, db, IQ3S_GRID[idx], signs);
        }
    }
}

slice_decoder! {
    /// IQ2_XXS blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq2_xxs: BlockIQ2XXS, QK_K;
    /// IQ2_XS blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq2_xs: BlockIQ2XS, QK_K;
    /// IQ2_S blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq2_s: BlockIQ2S, QK_K;
    /// IQ3_XXS blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq3_xxs: BlockIQ3XXS, QK_K;
    /// IQ3_S blocks → f32 (`out.len()` = 256 · blocks).
    dequantize_iq3_s: BlockIQ3S, QK_K;
}

/// [`dequantize`] for the types of this module (`ty` and the lengths already checked).
pub(super) fn dequantize_iq(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    match ty {
        IQ2_XXS => dequantize_iq2_xxs(cast_blocks(data)?, out),
        IQ2_XS => dequantize_iq2_xs(cast_blocks(data)?, out),
        IQ2_S => dequantize_iq2_s(cast_blocks(data)?, out),
        IQ3_XXS => dequantize_iq3_xxs(cast_blocks(data)?, out),
        IQ3_S => dequantize_iq3_s(cast_blocks(data)?, out),
        _ => Err(unsupported(ty)),
    }
}
