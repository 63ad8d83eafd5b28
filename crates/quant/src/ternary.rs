//! TQ1_0 and TQ2_0: the ternary types (weights in {−1, 0, 1} times one f16 scale per 256
//! values, for BitNet-style models). The block structs (the file format) and their
//! decoders, bit-identical to ggml's `dequantize_row_tq*_0` and gguf-py.

use crate::blocks::{Block, Half, QK_K};
use crate::GgmlType;
use bytemuck::{Pod, Zeroable};

/// TQ1_0 (1.69 bits per weight): 5 trits per byte in `qs` and 4 per byte in `qh`, each byte
/// holding ⌈t·256/243⌉ for the base-3 number t whose most significant trit comes first.
/// Trit l of byte x is `((x·3^l mod 256)·3) >> 8`, and value = d·(trit − 1). Order: bytes
/// `qs[0..32]` give values 0..160 (trit-major: value 32·l + m from `qs[m]`), `qs[32..48]`
/// values 160..240 (160 + 16·l + m), `qh[0..4]` values 240..256 (240 + 4·l + j).
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTQ1_0 {
    pub qs: [u8; (QK_K - 4 * QK_K / 64) / 5],
    pub qh: [u8; QK_K / 64],
    pub d: Half,
}

/// TQ2_0 (2.06 bits per weight): value = d·(q − 1), q ∈ 0..3 in 2-bit fields: value
/// 128·h + 32·l + k is bits 2l..2l+2 of `qs[32·h + k]`.
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
#[repr(C)]
pub struct BlockTQ2_0 {
    pub qs: [u8; QK_K / 4],
    pub d: Half,
}

const _: () = {
    assert!(std::mem::size_of::<BlockTQ1_0>() == 54);
    assert!(std::mem::size_of::<BlockTQ2_0>() == 66);
};

impl Block for BlockTQ1_0 {
    const TYPE: GgmlType = GgmlType::TQ1_0;
    const VALUES: usize = QK_K;
}

impl Block for BlockTQ2_0 {
    const TYPE: GgmlType = GgmlType::TQ2_0;
    const VALUES: usize = QK_K;
}

/// Powers of 3 that select trit l of a TQ1_0 byte.
pub const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Trit l (0..5) of a TQ1_0 byte, 0..=2.
#[inline(always)]
pub const fn tq1_trit(x: u8, l: usize) -> u8 {
    let q = x.wrapping_mul(POW3[l]);
    ((q as u16 * 3) >> 8) as u8
}

impl BlockTQ1_0 {
    /// The 256 trits (0..=2) in value order.
    #[inline]
    pub fn trits(&self) -> [u8; QK_K] {
        let mut t = [0u8; QK_K];
        for l in 0..5 {
            for m in 0..32 {
                t[32 * l + m] = tq1_trit(self.qs[m], l);
            }
            for m in 0..16 {
                t[160 + 16 * l + m] = tq1_trit(self.qs[32 + m], l);
            }
        }
        for l in 0..4 {
            for j in 0..4 {
                t[240 + 4 * l + j] = tq1_trit(self.qh[j], l);
            }
        }
        t
    }

    /// y = d·(trit − 1).
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (o, t) in y.iter_mut().zip(self.trits()) {
            *o = d * (t as i32 - 1) as f32;
        }
    }
}

impl BlockTQ2_0 {
    /// The 256 values q − 1 ∈ −1..=2 in value order (2 only in blocks llama.cpp never writes).
    #[inline]
    pub fn values(&self) -> [i8; QK_K] {
        let mut v = [0i8; QK_K];
        for h in 0..2 {
            for l in 0..4 {
                for k in 0..32 {
                    v[128 * h + 32 * l + k] = ((self.qs[32 * h + k] >> (2 * l)) & 3) as i8 - 1;
                }
            }
        }
        v
    }

    /// y = d·(q − 1).
    #[inline]
    pub fn dequantize(&self, y: &mut [f32; QK_K]) {
        let d = self.d.to_f32();
        for (o, v) in y.iter_mut().zip(self.values()) {
            *o = d * v as f32;
        }
    }
}
