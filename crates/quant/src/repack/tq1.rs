//! TQ1_0x8: TQ1_0 rows repacked in groups of 8, for the AVX-512 VBMI tile (`x86::tq1`)
//! that turns 64 bytes of 8 rows into their 5 trit vectors with two table lookups.
//!
//! A TQ1_0 block ([`BlockTQ1_0`]) holds 256 trits: 48 `qs` bytes of 5 and 4 `qh` bytes of
//! 4 (trit l of byte x is `((x·3^l mod 256)·3) >> 8`). Trit l of `qs[m]` is value
//! `32l + m` (m < 32) or `160 + 16l + (m − 32)` (m ≥ 32), trit l of `qh[j]` value
//! `240 + 4l + j`. The packed block keeps every byte (the same size) and puts 8 bytes of
//! each of the 8 rows side by side:
//!
//! [`TQ1_0X8_BLOCK_BYTES`] = 432 = 8 × 54:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 2r | 2 | row r's `d` (f16) |
//! | 16 + 64c + 8r + k | 1 | row r's `qs[8c + k]` (chunk c = 0..6, k = 0..8) |
//! | 400 + 4r + j | 1 | row r's `qh[j]` |
//!
//! So chunk c is one 512-bit load whose qword r is row r's 8 bytes, and trit l of those 8
//! bytes are the 8 consecutive values [`chunk_values`]`(c, l)..+8`: one broadcast qword of
//! activations serves all 8 rows. The `qh` bytes are one 256-bit load (dword r = row r,
//! trit l = values `240 + 4l..+4`).
//!
//! Definition per row and block: `isum = Σ (trit − 1)·a` (ggml's integer, `dot::ternary`),
//! `acc = fma(d·d_a, isum, acc)`.

use super::q4k::{kq_dot_scalar, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::ternary::BlockTQ1_0;

/// Bytes of one packed block (8 rows × 256 values).
pub const TQ1_0X8_BLOCK_BYTES: usize = 432;
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_QS: usize = 16;
pub(super) const OFF_QH: usize = 400;
/// 64-byte chunks of `qs` per block (8 bytes of each row).
pub(super) const CHUNKS: usize = 6;

const SRC: usize = 54; // size_of::<BlockTQ1_0>()

/// The first of the 8 consecutive values that trit l of chunk c's bytes hold.
#[inline(always)]
pub(super) const fn chunk_values(c: usize, l: usize) -> usize {
    if c < 4 {
        32 * l + 8 * c
    } else {
        160 + 16 * l + 8 * (c - 4)
    }
}

/// Visits row r's bytes: `f(packed offset, source offset, bytes)`.
#[inline(always)]
fn fields(r: usize, mut f: impl FnMut(usize, usize, usize)) {
    for c in 0..CHUNKS {
        f(OFF_QS + 64 * c + 8 * r, 8 * c, 8);
    }
    f(OFF_QH + 4 * r, 48, 4);
    f(OFF_D + 2 * r, 52, 2);
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, TQ1_0X8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        fields(r, |p, s, n| pb[p..p + n].copy_from_slice(&b[s..s + n]));
    });
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, TQ1_0X8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        fields(r, |p, s, n| b[s..s + n].copy_from_slice(&pb[p..p + n]));
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar TQ1_0 dot on each row's source block.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut x: BlockTQ1_0 = bytemuck::Zeroable::zeroed();
        let b: &mut [u8] = bytemuck::bytes_of_mut(&mut x);
        fields(r, |p, s, n| b[s..s + n].copy_from_slice(&pb[p..p + n]));
        [crate::dot::ternary::int_tq1_0(&x, &y), 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, TQ1_0X8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(
        block_ints,
        TQ1_0X8_BLOCK_BYTES,
        (OFF_D, None),
        nb,
        group,
        act,
    )
}
