//! IQ3_XXSx8: IQ3_XXS rows repacked in groups of 8, for an in-register codebook decode.
//!
//! An IQ3_XXS block holds 256 values in 8 chunks c of 32: `qs[8c..8c + 8]` = 8 grid
//! indices (one per 4 values: index i covers values `32c + 4i .. +4`), and at
//! `qs[64 + 4c..]` a little-endian u32 `aux` = 4 seven-bit sign indices (one per 8 values,
//! bits 7l..) and the chunk's scale `ls` (bits 28..32). See
//! [`crate::iq_blocks::BlockIQ3XXS`].
//!
//! A packed block, [`IQ3XXSX8_BLOCK_BYTES`] = 784 bytes = 8 × 98 (the source's size), per
//! chunk pair p (chunks 2p, 2p + 1), lane (dword) `k = 2r + h` = (row r, half h of a chunk):
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0                 | 16 | `d` of rows 0..8 (f16) |
//! | 16 + 192p + 64h'  | 64 | chunk 2p + h': dword k = row r's grid indices `4h..4h + 4` of the chunk |
//! | 144 + 192p        | 64 | qword r = row r's `aux` of chunk 2p, then of chunk 2p + 1 |
//!
//! The kernel (`x86::iq3xxs`) looks a chunk's 64 indices up in register-held tables
//! (`vpermi2b`), pulls each lane's sign indices out of its row's `aux` qword
//! (`vpmultishiftqb`, then `KSIGNS` by `vpermi2b`), and sums the 4 weight positions of
//! the 4-value groups with one `vpdpbusd` each.
//!
//! Definition per row and block: `isum = Σ_c (2·ls_c + 1)·Σ_{32} grid·sign·a` (ggml's
//! integers), `acc = fma((d·0.25)·d_a, isum, acc)` (ggml's factor folded into the row
//! scale: a power of two, so exact).

use super::q4k::{kq_dot_scalar_scaled, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::iq_blocks::BlockIQ3XXS;

/// Bytes of one packed block (8 rows × 256 values).
pub const IQ3XXSX8_BLOCK_BYTES: usize = 784;
pub(super) const OFF_D: usize = 0;
/// ggml's final factor of IQ3_XXS (the halved scale `0.5 + ls` made the odd integer
/// `2·ls + 1`, times the grid's 0.5).
pub(super) const FACTOR: f32 = 0.25;

const SRC: usize = 98; // size_of::<BlockIQ3XXS>()
const PAIR_BYTES: usize = 192;

/// Offset of chunk c's grid-index vector in a packed block.
#[inline(always)]
pub(super) const fn idx_at(c: usize) -> usize {
    16 + PAIR_BYTES * (c / 2) + 64 * (c % 2)
}

/// Offset of chunk pair p's `aux` vector.
#[inline(always)]
pub(super) const fn aux_at(p: usize) -> usize {
    16 + PAIR_BYTES * p + 128
}

/// The packed offsets of row r's chunk c: its 8 indices (two runs of 4) and its `aux`.
const fn at(r: usize, c: usize) -> ([usize; 2], usize) {
    let i = idx_at(c) + 8 * r;
    ([i, i + 4], aux_at(c / 2) + 8 * r + 4 * (c % 2))
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ3XXSX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        let x: &BlockIQ3XXS = bytemuck::from_bytes(b);
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
        for c in 0..8 {
            let (idx, aux) = at(r, c);
            pb[idx[0]..idx[0] + 4].copy_from_slice(&x.qs[8 * c..8 * c + 4]);
            pb[idx[1]..idx[1] + 4].copy_from_slice(&x.qs[8 * c + 4..8 * c + 8]);
            pb[aux..aux + 4].copy_from_slice(&x.qs[64 + 4 * c..64 + 4 * c + 4]);
        }
    });
}

/// Row r's source block of packed block `pb` (a bijection: `unpack ∘ repack` is the
/// identity on any bytes).
fn row_block(pb: &[u8], r: usize, x: &mut BlockIQ3XXS) {
    x.d.0 = [pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]];
    for c in 0..8 {
        let (idx, aux) = at(r, c);
        x.qs[8 * c..8 * c + 4].copy_from_slice(&pb[idx[0]..idx[0] + 4]);
        x.qs[8 * c + 4..8 * c + 8].copy_from_slice(&pb[idx[1]..idx[1] + 4]);
        x.qs[64 + 4 * c..64 + 4 * c + 4].copy_from_slice(&pb[aux..aux + 4]);
    }
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ3XXSX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        row_block(pb, r, bytemuck::from_bytes_mut(b));
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar IQ3_XXS dot on each row's source block.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut x = BlockIQ3XXS {
            d: crate::blocks::Half([0, 0]),
            qs: [0; 96],
        };
        row_block(pb, r, &mut x);
        [crate::dot::scalar_iq::ints_iq3_xxs(&x, &y), 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, IQ3XXSX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma((d·0.25)·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar_scaled(
        block_ints,
        IQ3XXSX8_BLOCK_BYTES,
        (OFF_D, None),
        FACTOR,
        nb,
        group,
        act,
    )
}
