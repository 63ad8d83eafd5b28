//! Q8_0x8, Q5_0x8, Q4_0x8, IQ4_NLx8 and MXFP4x8: the 32-value legacy blocks (and IQ4_NL,
//! the low-bit quants' fallback where rows are not whole 256-value blocks, and MXFP4,
//! gpt-oss's experts, which share their Q8_0 partner) repacked in groups of 8 rows.
//!
//! All store, per block of 8 rows (32 values each), the 8 scales and the quants arranged
//! so that 32 bytes hold the same 4 positions of the 8 rows (lane = row); all are the
//! size of their source blocks:
//!
//! Q8_0x8, 272 bytes = 8 × 34: `d[8]` f16 | `qs[g][r][i]` = row r's `qs[4g + i]` XOR 0x80
//! (g 0..8, i 0..4), i.e. the value + 128 as an unsigned byte.
//!
//! Q5_0x8, 176 bytes = 8 × 22: `d[8]` f16 | `plane[4r + i]` (32 bytes): bit g (0..8) is the
//! fifth bit of row r's value `4g + i`, so one shift brings the fifth bits of weight vector
//! g to bit 4 | `qs[g][r][i]` = row r's `qs[4g + i]` (g 0..4): low nibbles are values
//! `4g + i`, high nibbles values `16 + 4g + i`. The unsigned 5-bit value is `q`, the
//! weight `q − 16`.
//!
//! Q4_0x8, 144 bytes = 8 × 18: `d[8]` f16 | `qs[g][r][i]` = row r's `qs[4g + i]` (g 0..4),
//! nibbles as Q5_0x8's; the weight is `q − 8`.
//!
//! IQ4_NLx8, 144 bytes = 8 × 18: as Q4_0x8 (the source block is Q4_0's: f16 `d`, 16 bytes of
//! nibbles); the weight is `KVALUES_IQ4NL[q]` (−127..=113: the VNNI kernels look it up
//! +128, unsigned; AVX2 signed, with the activations' signs moved onto it).
//!
//! MXFP4x8, 136 bytes = 8 × 17: `e[8]` (E8M0 scale bytes, `d = 2^(e − 128)`) | nibbles as
//! Q4_0x8's; the weight is `KVALUES_MXFP4[q]` (the kernels look it up +12, unsigned).
//!
//! The kernels multiply the *unsigned* stored values `u = w + o` (o = 128 for Q8_0 and
//! IQ4_NL, 16 for Q5_0, 8 for Q4_0, 12 for MXFP4) by the signed activations (`vpdpbusd` as is) and start each block's sum at
//! `−o·Σa`, a per-(token, block) constant prepared once per call. Definition per row and
//! block: `isum = Σ_k w[k]·a[k]` (exact), `acc = fma(d·d_a, isum, acc)`.

use super::{each_row_block, each_row_block_back, ROWS};
use crate::blocks::{Half, KVALUES_IQ4NL};
use crate::mxfp4::{e8m0_to_f32_half, KVALUES_MXFP4};

/// Bytes of one packed Q8_0x8 block (8 rows × 32 values).
pub const Q8_0X8_BLOCK_BYTES: usize = 272;
/// Bytes of one packed Q5_0x8 block.
pub const Q5_0X8_BLOCK_BYTES: usize = 176;
/// Bytes of one packed Q4_0x8 block.
pub const Q4_0X8_BLOCK_BYTES: usize = 144;
/// Bytes of one packed MXFP4x8 block.
pub const MXFP4X8_BLOCK_BYTES: usize = 136;
pub(super) const OFF_D: usize = 0;
/// Q8_0x8 quants (+128).
pub(super) const Q8_OFF_QS: usize = 16;
/// Q5_0x8 fifth bits and nibbles.
pub(super) const Q5_OFF_QH: usize = 16;
pub(super) const Q5_OFF_QS: usize = 48;
/// Q4_0x8 nibbles.
pub(super) const Q4_OFF_QS: usize = 16;
/// MXFP4x8 nibbles (after the 8 scale bytes).
pub(super) const MX_OFF_QS: usize = 8;
/// A Q8_0 block: f16 d, 32 i8.
pub(super) const Q8_0_SIZE: usize = 34;
const Q5_0_SIZE: usize = 22;
const Q4_0_SIZE: usize = 18;
const MXFP4_SIZE: usize = 17;

/// Which legacy type a packed block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Q8_0,
    Q5_0,
    Q4_0,
    Iq4Nl,
    Mxfp4,
}

fn put_d(pb: &mut [u8], r: usize, d: [u8; 2]) {
    pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&d);
}

/// Values per block, source and packed block sizes.
fn sizes(kind: Kind) -> (usize, usize, usize) {
    match kind {
        Kind::Q8_0 => (32, Q8_0_SIZE, Q8_0X8_BLOCK_BYTES),
        Kind::Q5_0 => (32, Q5_0_SIZE, Q5_0X8_BLOCK_BYTES),
        Kind::Q4_0 | Kind::Iq4Nl => (32, Q4_0_SIZE, Q4_0X8_BLOCK_BYTES),
        Kind::Mxfp4 => (32, MXFP4_SIZE, MXFP4X8_BLOCK_BYTES),
    }
}

/// Repacks `n_out` rows (`n_out % 8 == 0`, checked by the caller) of `kind` blocks.
pub(super) fn repack(kind: Kind, n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    // One walk per type, so each closure is compiled without the others' branches.
    match kind {
        Kind::Q5_0 => each_row_block(n_in, n_out, sizes(kind), src, dst, |pb, r, b| {
            put_d(pb, r, [b[0], b[1]]);
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            for i in 0..4 {
                let mut bits = 0u8;
                for gq in 0..8 {
                    bits |= (((qh >> (4 * gq + i)) & 1) as u8) << gq;
                }
                pb[Q5_OFF_QH + 4 * r + i] = bits;
            }
            for gg in 0..4 {
                let d = Q5_OFF_QS + gg * 32 + 4 * r;
                pb[d..d + 4].copy_from_slice(&b[6 + 4 * gg..6 + 4 * gg + 4]);
            }
        }),
        Kind::Q4_0 | Kind::Iq4Nl => {
            each_row_block(n_in, n_out, sizes(kind), src, dst, |pb, r, b| {
                put_d(pb, r, [b[0], b[1]]);
                for gg in 0..4 {
                    let d = Q4_OFF_QS + gg * 32 + 4 * r;
                    pb[d..d + 4].copy_from_slice(&b[2 + 4 * gg..2 + 4 * gg + 4]);
                }
            })
        }
        Kind::Mxfp4 => each_row_block(n_in, n_out, sizes(kind), src, dst, |pb, r, b| {
            pb[r] = b[0];
            for gg in 0..4 {
                let d = MX_OFF_QS + gg * 32 + 4 * r;
                pb[d..d + 4].copy_from_slice(&b[1 + 4 * gg..1 + 4 * gg + 4]);
            }
        }),
        Kind::Q8_0 => each_row_block(n_in, n_out, sizes(kind), src, dst, |pb, r, b| {
            put_d(pb, r, [b[0], b[1]]);
            for gg in 0..8 {
                for i in 0..4 {
                    pb[Q8_OFF_QS + gg * 32 + 4 * r + i] = b[2 + 4 * gg + i] ^ 0x80;
                }
            }
        }),
    }
}

/// The inverse of [`repack`] (exact for any bytes: every stored bit is kept).
pub(super) fn unpack(kind: Kind, n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    each_row_block_back(n_in, n_out, sizes(kind), packed, dst, |pb, r, b| {
        if kind == Kind::Mxfp4 {
            b[0] = pb[r];
            for gg in 0..4 {
                let s = MX_OFF_QS + gg * 32 + 4 * r;
                b[1 + 4 * gg..1 + 4 * gg + 4].copy_from_slice(&pb[s..s + 4]);
            }
            return;
        }
        b[0] = pb[OFF_D + 2 * r];
        b[1] = pb[OFF_D + 2 * r + 1];
        if kind == Kind::Q4_0 || kind == Kind::Iq4Nl {
            for gg in 0..4 {
                let s = Q4_OFF_QS + gg * 32 + 4 * r;
                b[2 + 4 * gg..2 + 4 * gg + 4].copy_from_slice(&pb[s..s + 4]);
            }
        } else if kind == Kind::Q5_0 {
            let mut qh = 0u32;
            for i in 0..4 {
                let bits = pb[Q5_OFF_QH + 4 * r + i];
                for gq in 0..8 {
                    qh |= (((bits >> gq) & 1) as u32) << (4 * gq + i);
                }
            }
            b[2..6].copy_from_slice(&qh.to_le_bytes());
            for gg in 0..4 {
                let s = Q5_OFF_QS + gg * 32 + 4 * r;
                b[6 + 4 * gg..6 + 4 * gg + 4].copy_from_slice(&pb[s..s + 4]);
            }
        } else {
            for gg in 0..8 {
                for i in 0..4 {
                    b[2 + 4 * gg + i] = pb[Q8_OFF_QS + gg * 32 + 4 * r + i] ^ 0x80;
                }
            }
        }
    });
}

/// Row r's 32 signed weight values of a packed block (read from the packed layout).
fn values(kind: Kind, pb: &[u8], r: usize) -> [i8; 32] {
    std::array::from_fn(|k| {
        let (g, i) = (k / 4, k % 4);
        let nib = |off: usize| {
            let byte = pb[off + (g % 4) * 32 + 4 * r + i];
            if g < 4 {
                byte & 0xf
            } else {
                byte >> 4
            }
        };
        match kind {
            Kind::Q5_0 => {
                let hbit = (pb[Q5_OFF_QH + 4 * r + i] >> g) & 1;
                (nib(Q5_OFF_QS) | (hbit << 4)) as i8 - 16
            }
            Kind::Q4_0 => nib(Q4_OFF_QS) as i8 - 8,
            Kind::Iq4Nl => KVALUES_IQ4NL[nib(Q4_OFF_QS) as usize],
            Kind::Mxfp4 => KVALUES_MXFP4[nib(MX_OFF_QS) as usize],
            Kind::Q8_0 => (pb[Q8_OFF_QS + g * 32 + 4 * r + i] ^ 0x80) as i8,
        }
    })
}

/// The exact integers of one packed block × one Q8_0 block, per row: `[Σ w·a, 0]`.
pub(super) fn block_ints(kind: Kind, pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    std::array::from_fn(|r| {
        let w = values(kind, pb, r);
        [
            (0..32).map(|k| w[k] as i32 * y[2 + k] as i8 as i32).sum(),
            0,
        ]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(
    kind: Kind,
    nb: usize,
    group: &[u8],
    act: &[u8],
) -> Vec<[[i32; 2]; ROWS]> {
    let (_, _, pbb) = sizes(kind);
    (0..nb)
        .map(|ib| {
            block_ints(
                kind,
                &group[ib * pbb..(ib + 1) * pbb],
                &act[ib * Q8_0_SIZE..(ib + 1) * Q8_0_SIZE],
            )
        })
        .collect()
}

/// Row r's scale in packed block `pb` as f32.
fn row_d(kind: Kind, pb: &[u8], r: usize) -> f32 {
    match kind {
        Kind::Mxfp4 => e8m0_to_f32_half(pb[r]),
        _ => Half([pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]]).to_f32(),
    }
}

/// The definition: 8 packed rows (`nb` blocks) · one Q8_0 row. Per row, per block:
/// `acc = fma(d·d_a, Σ w·a, acc)`.
pub(super) fn dot_scalar(kind: Kind, nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    let (_, _, pbb) = sizes(kind);
    let mut acc = [0f32; ROWS];
    for ib in 0..nb {
        let pb = &group[ib * pbb..(ib + 1) * pbb];
        let y = &act[ib * Q8_0_SIZE..(ib + 1) * Q8_0_SIZE];
        let da = Half([y[0], y[1]]).to_f32();
        let ints = block_ints(kind, pb, y);
        for r in 0..ROWS {
            let dd = row_d(kind, pb, r) * da;
            acc[r] = dd.mul_add(ints[r][0] as f32, acc[r]);
        }
    }
    acc
}
