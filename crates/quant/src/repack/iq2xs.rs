//! IQ2_XSx8: IQ2_XS rows repacked in groups of 8, for an in-register codebook decode.
//!
//! An IQ2_XS block holds 256 values in 32 groups k of 8, each a little-endian u16 of `qs`:
//! a 9-bit grid index (bits 0..9) and a 7-bit `KSIGNS` index (bits 9..16); and a 4-bit
//! scale `ls` per 16 values, as IQ2_S. See [`crate::iq_blocks::BlockIQ2XS`].
//!
//! A packed block, [`IQ2XSX8_BLOCK_BYTES`] = 592 bytes = 8 × 74 (the source's size): the
//! 8 rows' f16 `d` (16 bytes), then per 64-value portion p 144 bytes, in `iq2s`'s slot
//! order ([`slot`]):
//!
//! | offset (in the portion) | bytes | content |
//! |---|---|---|
//! | 0   | 64 | index bits 0..8 of each slot |
//! | 64  | 64 | the sign index (bits 0..7) and index bit 8 (bit 7) of each slot |
//! | 128 | 16 | the scales, as `iq2s` |
//!
//! So the kernel (`x86::iq2xs`) takes index bit 8 as the top-bit mask of the second
//! vector, and maps that vector to `KSIGNS` bytes with one `vpermi2b` (which reads only
//! the low 7 bits of each index byte); the rest is `iq2s`'s portion code.
//!
//! Definition per row and block: `isum = Σ_q (2·ls_q + 1)·Σ_{16} grid·sign·a` (ggml's
//! integers), `acc = fma((d·0.125)·d_a, isum, acc)`.

use super::iq2s::{read_scales, slot, write_scales};
use super::q4k::{kq_dot_scalar_scaled, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::iq_blocks::BlockIQ2XS;

/// Bytes of one packed block (8 rows × 256 values).
pub const IQ2XSX8_BLOCK_BYTES: usize = 592;
pub(super) const OFF_D: usize = 0;
/// ggml's final factor of the IQ2 types.
pub(super) const FACTOR: f32 = super::iq2s::FACTOR;

const SRC: usize = 74; // size_of::<BlockIQ2XS>()
const PORTION_BYTES: usize = 144;

/// Offset of portion p's index bytes (sign indices at +64, scales at +128).
#[inline(always)]
pub(super) const fn idx_at(p: usize) -> usize {
    16 + PORTION_BYTES * p
}
pub(super) const SIGNS: usize = 64;
pub(super) const SCALES: usize = 128;

fn write_row(pb: &mut [u8], r: usize, x: &BlockIQ2XS) {
    pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
    for p in 0..4 {
        let o = idx_at(p);
        for g in 0..8 {
            let (k, b) = (8 * p + g, slot(r, g));
            let q = u16::from_le_bytes([x.qs[2 * k], x.qs[2 * k + 1]]);
            pb[o + b] = q as u8;
            pb[o + SIGNS + b] = (q >> 9) as u8 | ((q >> 8) as u8 & 1) << 7;
        }
        write_scales(&mut pb[o + SCALES..], r, p, &x.scales);
    }
}

/// Row r's source block of packed block `pb` (a bijection: `unpack ∘ repack` is the
/// identity on any bytes).
fn row_block(pb: &[u8], r: usize, x: &mut BlockIQ2XS) {
    x.d.0 = [pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]];
    x.scales = [0; 8];
    for p in 0..4 {
        let o = idx_at(p);
        for g in 0..8 {
            let (k, b) = (8 * p + g, slot(r, g));
            let (lo, s) = (pb[o + b] as u16, pb[o + SIGNS + b] as u16);
            let q = lo | (s >> 7) << 8 | (s & 127) << 9;
            x.qs[2 * k..2 * k + 2].copy_from_slice(&q.to_le_bytes());
        }
        read_scales(&pb[o + SCALES..], r, p, &mut x.scales);
    }
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ2XSX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        write_row(pb, r, bytemuck::from_bytes(b));
    });
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ2XSX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        row_block(pb, r, bytemuck::from_bytes_mut(b));
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar IQ2_XS dot on each row's source block.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut x: BlockIQ2XS = bytemuck::Zeroable::zeroed();
        row_block(pb, r, &mut x);
        [crate::dot::scalar_iq::ints_iq2_xs(&x, &y), 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, IQ2XSX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma((d·0.125)·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar_scaled(
        block_ints,
        IQ2XSX8_BLOCK_BYTES,
        (OFF_D, None),
        FACTOR,
        nb,
        group,
        act,
    )
}
