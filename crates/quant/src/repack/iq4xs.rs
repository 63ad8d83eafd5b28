//! IQ4_XSx8: IQ4_XS rows repacked in groups of 8.
//!
//! An IQ4_XS block holds 256 values `KVALUES_IQ4NL[q]` (q a nibble) in 8 sub-blocks of 32,
//! each with a 6-bit scale `ls` (signed scale `ls − 32`) spread over `scales_l` (low 4
//! bits) and `scales_h` (high 2 bits), and an f16 `d`. Sub-block j's values are the
//! nibbles of `qs[16j..16j + 16]`: low nibbles values `32j + k`, high nibbles `32j + 16 + k`.
//!
//! A packed block, [`IQ4XSX8_BLOCK_BYTES`] = 1104 bytes = 8 × 138 (the source is 136: the
//! 6 bytes of packed scales become 8 plain ones):
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0    | 16   | `d` of rows 0..8 (f16) |
//! | 16   | 64   | `sc[j][r]`: signed scale `ls − 32` of sub-block j of row r (i8) |
//! | 80   | 1024 | `qs[j][g][r][i]` = row r's `qs[16j + 4g + i]` (j, g, i: 0..8, 0..4, 0..4) |
//!
//! So the 32 bytes at `qs[j][g]` hold, for the 8 rows, the nibbles of values
//! `32j + 4g .. +4` (low) and `32j + 16 + 4g .. +4` (high): a mask / a shift and mask, a
//! table lookup (`vpshufb`) and one `vpdpbusd` per token with a broadcast 4-byte group of
//! activations advance all 8 rows. With VNNI the table holds `KVALUES + 128` (unsigned),
//! and each sub-block sum starts at `−128·Σ32` of its activations.
//!
//! Definition per row and block: `isum = Σ_j (ls_j − 32)·Σ_{k<32} KVALUES[q]·a` (ggml's
//! integers), `acc = fma(d·d_a, isum, acc)`.

use super::q4k::{kq_dot_scalar, kq_ints_scalar, q8k_quant};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::blocks::{BlockIQ4XS, KVALUES_IQ4NL};

/// Bytes of one packed block (8 rows × 256 values).
pub const IQ4XSX8_BLOCK_BYTES: usize = 1104;
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_SC: usize = 16;
pub(super) const OFF_QS: usize = 80;

const SRC: usize = 136; // size_of::<BlockIQ4XS>()

/// Offset of the qs vector (j, g) in a packed block.
#[inline(always)]
pub(super) const fn qs_at(j: usize, g: usize) -> usize {
    OFF_QS + (4 * j + g) * 32
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ4XSX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        let x: &BlockIQ4XS = bytemuck::from_bytes(b);
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
        let ls = crate::dot::layout::iq4xs_scales(x.scales_h, &x.scales_l);
        for j in 0..8 {
            pb[OFF_SC + 8 * j + r] = (ls[j] as i8 - 32) as u8;
        }
        for j in 0..8 {
            for g in 0..4 {
                let d = qs_at(j, g) + 4 * r;
                let s = 16 * j + 4 * g;
                pb[d..d + 4].copy_from_slice(&x.qs[s..s + 4]);
            }
        }
    });
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ4XSX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        let x: &mut BlockIQ4XS = bytemuck::from_bytes_mut(b);
        x.d.0 = [pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]];
        // The 6-bit `ls` back from `ls − 32` (repack wrote −32..=31; any byte keeps its
        // low 6 bits, so unpack ∘ repack is the identity on every source block).
        let mut h = 0u16;
        let mut l = [0u8; 4];
        for j in 0..8 {
            let ls = (pb[OFF_SC + 8 * j + r] as i8 as i32 + 32) as u8 & 63;
            l[j / 2] |= (ls & 0xf) << (4 * (j % 2));
            h |= ((ls >> 4) as u16) << (2 * j);
        }
        x.scales_h = h.to_le_bytes();
        x.scales_l = l;
        for j in 0..8 {
            for g in 0..4 {
                let s = qs_at(j, g) + 4 * r;
                let d = 16 * j + 4 * g;
                x.qs[d..d + 4].copy_from_slice(&pb[s..s + 4]);
            }
        }
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    std::array::from_fn(|r| {
        let mut isum = 0i32;
        for j in 0..8 {
            let mut sub = 0i32;
            for k in 0..32 {
                let (g, i) = ((k % 16) / 4, k % 4);
                let byte = pb[qs_at(j, g) + 4 * r + i];
                let q = if k < 16 { byte & 0xf } else { byte >> 4 };
                sub += KVALUES_IQ4NL[q as usize] as i32 * q8k_quant(y, 32 * j + k);
            }
            isum += pb[OFF_SC + 8 * j + r] as i8 as i32 * sub;
        }
        [isum, 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, IQ4XSX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(
        block_ints,
        IQ4XSX8_BLOCK_BYTES,
        (OFF_D, None),
        nb,
        group,
        act,
    )
}
