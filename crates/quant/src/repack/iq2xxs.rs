//! IQ2_XXSx8: IQ2_XXS rows repacked in groups of 8, for an in-register codebook decode.
//!
//! An IQ2_XXS block holds 256 values in 8 chunks c of 32; chunk c is two little-endian u32
//! of `qs`: `qs[8c..8c + 4]` = 4 grid indices (one per 8 values: group l covers values
//! `32c + 8l .. +8`) and `aux = qs[8c + 4..8c + 8]` = 4 seven-bit sign indices (bits 7l..)
//! and the chunk's scale `ls` (bits 28..32). See [`crate::iq_blocks::BlockIQ2XXS`].
//!
//! A packed block, [`IQ2XXSX8_BLOCK_BYTES`] = 528 bytes = 8 × 66 (the source's size):
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0        | 16 | `d` of rows 0..8 (f16) |
//! | 16 + 128p | 64 | chunk pair p (chunks 2p, 2p + 1): dword `2r + h` = row r's grid indices of chunk 2p + h |
//! | 80 + 128p | 64 | dword `2r + h` = row r's `aux` of chunk 2p + h |
//!
//! So one 512-bit vector holds the 64 grid indices of a chunk pair for all 8 rows, and one
//! the matching sign indices and scales, with lane (dword) `2r + h` = (row r, chunk
//! 2p + h) in both: the kernel (`x86::iq2xxs`) looks the indices up in register-held
//! tables (`vpermi2b`), the sign indices likewise, and sums each lane's 32 products with
//! one `vpdpbusd` per weight position j of the 8-value groups; the lane sums are the
//! chunks' sums, scaled per lane.
//!
//! Definition per row and block: `isum = Σ_c (2·ls_c + 1)·Σ_{32} grid·sign·a` (ggml's
//! integers), `acc = fma((d·0.125)·d_a, isum, acc)` (ggml's factor 0.125 folded into the
//! row scale: a power of two, so exact).

use super::q4k::{kq_dot_scalar_scaled, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::iq_blocks::BlockIQ2XXS;

/// Bytes of one packed block (8 rows × 256 values).
pub const IQ2XXSX8_BLOCK_BYTES: usize = 528;
pub(super) const OFF_D: usize = 0;
/// ggml's final factor of IQ2_XXS (the halved scale `0.5 + ls` made the odd integer
/// `2·ls + 1`, times the grid's 0.25).
pub(super) const FACTOR: f32 = 0.125;

const SRC: usize = 66; // size_of::<BlockIQ2XXS>()

/// Offset of chunk pair p's grid-index vector in a packed block (its `aux` vector follows
/// at +64).
#[inline(always)]
pub(super) const fn idx_at(p: usize) -> usize {
    16 + 128 * p
}

/// Offset of chunk pair p's `aux` vector.
#[inline(always)]
pub(super) const fn aux_at(p: usize) -> usize {
    idx_at(p) + 64
}

/// Offset in a packed block of row r's 4 index bytes (`aux` false) or its `aux` (true) of
/// chunk c.
const fn at(r: usize, c: usize, aux: bool) -> usize {
    let base = if aux { aux_at(c / 2) } else { idx_at(c / 2) };
    base + 4 * (2 * r + c % 2)
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ2XXSX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        let x: &BlockIQ2XXS = bytemuck::from_bytes(b);
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
        for c in 0..8 {
            for (aux, o) in [(false, 0), (true, 4)] {
                let d = at(r, c, aux);
                pb[d..d + 4].copy_from_slice(&x.qs[8 * c + o..8 * c + o + 4]);
            }
        }
    });
}

/// Row r's source block of packed block `pb` (a bijection: `unpack ∘ repack` is the
/// identity on any bytes).
fn row_block(pb: &[u8], r: usize, x: &mut BlockIQ2XXS) {
    x.d.0 = [pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]];
    for c in 0..8 {
        for (aux, o) in [(false, 0), (true, 4)] {
            let s = at(r, c, aux);
            x.qs[8 * c + o..8 * c + o + 4].copy_from_slice(&pb[s..s + 4]);
        }
    }
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ2XXSX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        row_block(pb, r, bytemuck::from_bytes_mut(b));
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar IQ2_XXS dot on each row's source block.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut x = BlockIQ2XXS {
            d: crate::blocks::Half([0, 0]),
            qs: [0; 64],
        };
        row_block(pb, r, &mut x);
        [crate::dot::scalar_iq::ints_iq2_xxs(&x, &y), 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, IQ2XXSX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma((d·0.125)·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar_scaled(
        block_ints,
        IQ2XXSX8_BLOCK_BYTES,
        (OFF_D, None),
        FACTOR,
        nb,
        group,
        act,
    )
}
