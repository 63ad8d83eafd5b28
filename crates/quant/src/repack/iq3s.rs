//! IQ3_Sx8: IQ3_S rows repacked in groups of 8, for an in-register codebook decode.
//!
//! An IQ3_S block holds 256 values in 8 chunks c of 32, each 8 groups i of 4 values: a
//! 9-bit grid index (`qs[8c + i]`, bit 8 = bit i of `qh[c]`), plain sign bits (`signs[4c +
//! l]`: values `32c + 8l..+8`, so index i's 4 signs are bits `4·(i % 2)..` of byte
//! `4c + i / 2`), and a 4-bit scale `ls` per chunk (`scales[c / 2]`, nibble `c % 2`). See
//! [`crate::iq_blocks::BlockIQ3S`].
//!
//! A packed block, [`IQ3SX8_BLOCK_BYTES`] = 880 bytes = 8 × 110 (the source's size): the 8
//! rows' f16 `d` (16 bytes), then per chunk pair p (chunks 2p + h) 216 bytes:
//!
//! | offset (in the pair) | bytes | content |
//! |---|---|---|
//! | 64h       | 64 | chunk 2p + h's indices (bits 0..8): byte `8r + i` = row r's index i |
//! | 128 + 8h  | 8  | their bit 8: byte r = row r's `qh[2p + h]` (a `kmovq` mask in the same order) |
//! | 144 + 32h | 32 | their signs: byte `4r + l` = row r's `signs[4·(2p + h) + l]` |
//! | 208       | 8  | byte r = row r's `scales[p]` (chunk 2p low nibble, 2p + 1 high) |
//!
//! As IQ3_XXSx8's, a chunk's 64 indices fill one vector with dword `2r + h` = row r's
//! indices `4h..4h + 4` (the kernel, `x86::iq3s`, sums each 16-value half chunk in a lane).
//!
//! Definition per row and block: `isum = Σ_c (2·ls_c + 1)·Σ_{32} grid·sign·a` (ggml's
//! integers), `acc = fma(d·d_a, isum, acc)` (ggml's factor is 1).

use super::q4k::{kq_dot_scalar, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::iq_blocks::BlockIQ3S;

/// Bytes of one packed block (8 rows × 256 values).
pub const IQ3SX8_BLOCK_BYTES: usize = 880;
pub(super) const OFF_D: usize = 0;

const SRC: usize = 110; // size_of::<BlockIQ3S>()
const PAIR_BYTES: usize = 216;

/// Offset of chunk pair p in a packed block.
#[inline(always)]
pub(super) const fn pair_at(p: usize) -> usize {
    16 + PAIR_BYTES * p
}
/// Offsets within a pair: chunk h's indices, bit-8 masks, signs; the scale bytes.
pub(super) const fn idx(h: usize) -> usize {
    64 * h
}
pub(super) const fn hi_bits(h: usize) -> usize {
    128 + 8 * h
}
pub(super) const fn signs(h: usize) -> usize {
    144 + 32 * h
}
pub(super) const SCALES: usize = 208;

/// Row r's byte runs `f(packed offset, source offset, length)`: the layout is a
/// permutation of the source's bytes (source: `d` at 0, `qs` at 2, `qh` at 66, `signs`
/// at 74, `scales` at 106). Inlined, so that each copy has a constant length.
#[inline(always)]
fn each_run(r: usize, mut f: impl FnMut(usize, usize, usize)) {
    f(OFF_D + 2 * r, 0, 2);
    for c in 0..8 {
        let (o, h) = (pair_at(c / 2), c % 2);
        f(o + idx(h) + 8 * r, 2 + 8 * c, 8);
        f(o + hi_bits(h) + r, 66 + c, 1);
        f(o + signs(h) + 4 * r, 74 + 4 * c, 4);
    }
    for p in 0..4 {
        f(pair_at(p) + SCALES + r, 106 + p, 1);
    }
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ3SX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        each_run(r, |p, s, n| pb[p..p + n].copy_from_slice(&b[s..s + n]));
    });
}

/// Row r's source block of packed block `pb` (a bijection: `unpack ∘ repack` is the
/// identity on any bytes).
fn row_block(pb: &[u8], r: usize, b: &mut [u8]) {
    each_run(r, |p, s, n| b[s..s + n].copy_from_slice(&pb[p..p + n]));
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ3SX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        row_block(pb, r, b)
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar IQ3_S dot on each row's source block.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut x: BlockIQ3S = bytemuck::Zeroable::zeroed();
        row_block(pb, r, bytemuck::bytes_of_mut(&mut x));
        [crate::dot::scalar_iq::ints_iq3_s(&x, &y), 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, IQ3SX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(
        block_ints,
        IQ3SX8_BLOCK_BYTES,
        (OFF_D, None),
        nb,
        group,
        act,
    )
}
