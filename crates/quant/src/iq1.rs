//! IQ1_S and IQ1_M (≈1.56 and 1.75 bits per weight): 256-value super-blocks whose groups of
//! 8 weights are entries of a 2048-point ternary codebook ([`IQ1S_GRID`]), shifted by ±1/8
//! and scaled per sub-block. The block structs (the file format), their decoders
//! (bit-identical to ggml's `dequantize_row_iq1_*` and gguf-py) and the unpacking helpers
//! the dot products share.

use crate::blocks::{Block, Half, QK_K};
use crate::GgmlType;
use bytemuck::{Pod, Zeroable};

pub use crate::iq1_grid::IQ1S_GRID;

/// The offset `delta` added to every grid value of IQ1_S and IQ1_M (ggml's `IQ1S_DELTA`,
/// `IQ1M_DELTA`), with the sign its block stores.
pub const IQ1_DELTA: f32 = 0.125;

/// A table of 2048 u64 made from [`IQ1S_GRID`] by mapping each byte v (−1, 0, 1) to
/// `mul·v + add`: the SIMD kernels' unsigned grid entries (AVX2 file order, AVX-512
/// repacked tiles).
#[repr(align(64))]
pub(crate) struct Grid(pub(crate) [u64; 2048]);

const fn grid_map(mul: i8, add: i8) -> Grid {
    let mut out = [0u64; 2048];
    let mut k = 0;
    while k < 2048 {
        let b = IQ1S_GRID[k].to_le_bytes();
        let mut o = [0u8; 8];
        let mut j = 0;
        while j < 8 {
            o[j] = (mul * (b[j] as i8) + add) as u8;
            j += 1;
        }
        out[k] = u64::from_le_bytes(o);
        k += 1;
    }
    Grid(out)
}

/// Grid values + 1 (IQ1_S, AVX2).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) static GRID_P1: Grid = grid_map(1, 1);
/// 8·grid + 8 (IQ1_M on AVX2; both types' repacked tiles).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) static GRID_X8: Grid = grid_map(8, 8);

/// IQ1_S: 8 sub-blocks of 32 = 4 groups of 8. Group l of sub-block ib is grid entry
/// `qs[4·ib + l] | ((qh[ib] >> 3·l) & 7) << 8`; `qh[ib]` (little-endian u16) also holds the
/// sub-block scale `ls = 2·((qh >> 12) & 7) + 1` and, in bit 15, the sign of delta:
/// value = d·ls·(grid + (bit15 ? −1/8 : +1/8)).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ1S {
    pub d: Half,
    pub qs: [u8; QK_K / 8],
    pub qh: [[u8; 2]; QK_K / 32],
}

/// IQ1_M: 8 sub-blocks of 32 = 4 groups of 8, with a 3-bit scale per 16 values and a delta
/// sign per 8. Group l of sub-block ib is grid entry `qs[4·ib + l] | (h & 7) << 8` where
/// h is nibble l of `qh[2·ib..2·ib + 2]` (low nibble first); bit 3 of h is the sign of delta.
/// `scales` are 4 little-endian u16: bits 0..12 of u16 k hold the six 3-bit scales
/// `s` of sub-blocks 2k, 2k+1 (two per sub-block: groups 0–1, then 2–3; ls = 2·s + 1), and
/// their top nibbles, concatenated (u16 0 lowest), are the f16 super-block scale d.
/// value = d·ls·(grid ± 1/8).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockIQ1M {
    pub qs: [u8; QK_K / 8],
    pub qh: [u8; QK_K / 16],
    pub scales: [u8; QK_K / 32],
}

const _: () = {
    assert!(std::mem::size_of::<BlockIQ1S>() == 50);
    assert!(std::mem::size_of::<BlockIQ1M>() == 56);
    assert!(std::mem::align_of::<BlockIQ1S>() == 1);
};

impl Block for BlockIQ1S {
    const TYPE: GgmlType = GgmlType::IQ1_S;
    const VALUES: usize = QK_K;
}

impl Block for BlockIQ1M {
    const TYPE: GgmlType = GgmlType::IQ1_M;
    const VALUES: usize = QK_K;
}

/// The 8 grid values (−1, 0, 1) of grid index `k` (11 bits).
#[inline(always)]
pub fn iq1_grid(k: usize) -> [i8; 8] {
    IQ1S_GRID[k & 2047].to_le_bytes().map(|b| b as i8)
}

impl BlockIQ1S {
    /// `qh[ib]` as a u16.
    #[inline(always)]
    pub fn qh(&self, ib: usize) -> u16 {
        u16::from_le_bytes(self.qh[ib])
    }

    /// Grid index of group l (0..4) of sub-block ib (0..8).
    #[inline(always)]
    pub fn grid_index(&self, ib: usize, l: usize) -> usize {
        self.qs[4 * ib + l] as usize | (((self.qh(ib) >> (3 * l)) & 7) as usize) << 8
    }

    /// Sub-block ib's scale `2·s + 1` (1..=15).
    #[inline(always)]
    pub fn scale(&self, ib: usize) -> i32 {
        2 * ((self.qh(ib) >> 12) & 7) as i32 + 1
    }

    /// Sub-block ib's delta sign: −1 if bit 15 of `qh[ib]` is set, else +1.
    #[inline(always)]
    pub fn delta_sign(&self, ib: usize) -> i32 {
        if self.qh(ib) & 0x8000 != 0 {
            -1
        } else {
            1
        }
    }

    /// y = d·ls·(grid + delta), in ggml's f32 order: `(d·ls)·(grid + delta)`.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for ib in 0..QK_K / 32 {
            let dl = d * self.scale(ib) as f32;
            let delta = IQ1_DELTA * self.delta_sign(ib) as f32;
            for l in 0..4 {
                let g = iq1_grid(self.grid_index(ib, l));
                let out = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for (o, &v) in out.iter_mut().zip(&g) {
                    *o = dl * (v as f32 + delta);
                }
            }
        }
    }
}

impl BlockIQ1M {
    /// The 4 scale words as u16.
    #[inline(always)]
    fn sc(&self) -> [u16; 4] {
        std::array::from_fn(|k| u16::from_le_bytes([self.scales[2 * k], self.scales[2 * k + 1]]))
    }

    /// The f16 super-block scale, assembled from the top nibbles of the 4 scale words.
    #[inline(always)]
    pub fn d(&self) -> Half {
        let sc = self.sc();
        let bits =
            (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000);
        Half(bits.to_le_bytes())
    }

    /// Scales `2·s + 1` of sub-block ib (0..8): for groups 0–1 and groups 2–3.
    #[inline(always)]
    pub fn scales(&self, ib: usize) -> [i32; 2] {
        let w = self.sc()[ib / 2] >> (6 * (ib % 2));
        [2 * (w & 7) as i32 + 1, 2 * ((w >> 3) & 7) as i32 + 1]
    }

    /// The nibble of `qh` for group l (0..4) of sub-block ib.
    #[inline(always)]
    fn h(&self, ib: usize, l: usize) -> u8 {
        (self.qh[2 * ib + l / 2] >> (4 * (l % 2))) & 0xf
    }

    /// Grid index of group l (0..4) of sub-block ib (0..8).
    #[inline(always)]
    pub fn grid_index(&self, ib: usize, l: usize) -> usize {
        self.qs[4 * ib + l] as usize | ((self.h(ib, l) & 7) as usize) << 8
    }

    /// Group l of sub-block ib: delta sign, −1 if bit 3 of its `qh` nibble is set, else +1.
    #[inline(always)]
    pub fn delta_sign(&self, ib: usize, l: usize) -> i32 {
        if self.h(ib, l) & 8 != 0 {
            -1
        } else {
            1
        }
    }

    /// y = d·ls·(grid + delta), in ggml's f32 order: `(d·ls)·(grid + delta)`.
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d().to_f32();
        for ib in 0..QK_K / 32 {
            let ls = self.scales(ib);
            for l in 0..4 {
                let dl = d * ls[l / 2] as f32;
                let delta = IQ1_DELTA * self.delta_sign(ib, l) as f32;
                let g = iq1_grid(self.grid_index(ib, l));
                let out = &mut y[32 * ib + 8 * l..32 * ib + 8 * l + 8];
                for (o, &v) in out.iter_mut().zip(&g) {
                    *o = dl * (v as f32 + delta);
                }
            }
        }
    }
}
