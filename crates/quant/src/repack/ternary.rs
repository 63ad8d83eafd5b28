//! TQ1_0x8 and TQ2_0x8: the ternary types' rows repacked in groups of 8, for the AVX-512
//! tiles (`x86::ternary`) that decode 64 bytes of 8 rows at once.
//!
//! Both keep every source byte (the same size) and put 8 bytes of each of the 8 rows side
//! by side, so chunk c is one 512-bit load whose qword r is row r's 8 bytes, and trit or
//! field l of those 8 bytes are 8 consecutive values ([`tq1_values`], [`tq2_values`]): one
//! broadcast qword of activations serves all 8 rows.
//!
//! TQ1_0x8, [`TQ1_0X8_BLOCK_BYTES`] = 432 = 8 × 54. A TQ1_0 block ([`BlockTQ1_0`]) holds
//! 48 `qs` bytes of 5 trits and 4 `qh` bytes of 4 (trit l of byte x is
//! `((x·3^l mod 256)·3) >> 8`); trit l of `qs[m]` is value `32l + m` (m < 32) or
//! `160 + 16l + (m − 32)`, trit l of `qh[j]` value `240 + 4l + j`.
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 2r | 2 | row r's `d` (f16) |
//! | 16 + 64c + 8r + k | 1 | row r's `qs[8c + k]` (chunk c = 0..6, k = 0..8) |
//! | 400 + 4r + j | 1 | row r's `qh[j]` (one 256-bit load: dword r = row r) |
//!
//! TQ2_0x8, [`TQ2_0X8_BLOCK_BYTES`] = 528 = 8 × 66. A TQ2_0 block ([`BlockTQ2_0`]) holds
//! 64 bytes of four 2-bit fields q: bits 2l..2l + 2 of `qs[32h + k]` are value
//! `128h + 32l + k`.
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 2r | 2 | row r's `d` (f16) |
//! | 16 + 64c + 8r + k | 1 | row r's `qs[8c + k]` (chunk c = 0..8, k = 0..8) |
//!
//! Definition per row and block (both): `isum = Σ (q − 1)·a` (ggml's integer,
//! `dot::ternary`), `acc = fma(d·d_a, isum, acc)`.

use super::q4k::{kq_dot_scalar, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::dot::ternary::{int_tq1_0, int_tq2_0};
use crate::ternary::{BlockTQ1_0, BlockTQ2_0};

/// Bytes of one packed TQ1_0x8 block (8 rows × 256 values).
pub const TQ1_0X8_BLOCK_BYTES: usize = 432;
/// Bytes of one packed TQ2_0x8 block (8 rows × 256 values).
pub const TQ2_0X8_BLOCK_BYTES: usize = 528;
/// Both: the rows' f16 `d`, then the chunks.
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_QS: usize = 16;
/// TQ1_0x8: 64-byte chunks of `qs`, then the `qh` bytes.
pub(super) const TQ1_CHUNKS: usize = 6;
pub(super) const TQ1_OFF_QH: usize = 400;
/// TQ2_0x8: 64-byte chunks.
pub(super) const TQ2_CHUNKS: usize = 8;

/// Which layout (a const parameter).
pub(super) const TQ1: u8 = 1;
pub(super) const TQ2: u8 = 2;

/// The first of the 8 consecutive values that trit l of TQ1_0x8 chunk c's bytes hold.
#[inline(always)]
pub(super) const fn tq1_values(c: usize, l: usize) -> usize {
    if c < 4 {
        32 * l + 8 * c
    } else {
        160 + 16 * l + 8 * (c - 4)
    }
}

/// The first of the 8 consecutive values that field l of TQ2_0x8 chunk c's bytes hold.
#[inline(always)]
pub(super) const fn tq2_values(c: usize, l: usize) -> usize {
    128 * (c / 4) + 32 * l + 8 * (c % 4)
}

/// (values, source bytes, packed bytes) per block of layout K (as [`each_row_block`] takes them).
const fn sizes<const K: u8>() -> (usize, usize, usize) {
    if K == TQ1 {
        (256, 54, TQ1_0X8_BLOCK_BYTES)
    } else {
        (256, 66, TQ2_0X8_BLOCK_BYTES)
    }
}

/// Visits row r's bytes of layout K: `f(packed offset, source offset, bytes)`.
#[inline(always)]
fn fields<const K: u8>(r: usize, mut f: impl FnMut(usize, usize, usize)) {
    let chunks = if K == TQ1 { TQ1_CHUNKS } else { TQ2_CHUNKS };
    for c in 0..chunks {
        f(OFF_QS + 64 * c + 8 * r, 8 * c, 8);
    }
    if K == TQ1 {
        f(TQ1_OFF_QH + 4 * r, 48, 4);
    }
    f(OFF_D + 2 * r, 8 * chunks + if K == TQ1 { 4 } else { 0 }, 2);
}

pub(super) fn repack<const K: u8>(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    each_row_block(n_in, n_out, sizes::<K>(), src, dst, |pb, r, b| {
        fields::<K>(r, |p, s, n| pb[p..p + n].copy_from_slice(&b[s..s + n]));
    });
}

pub(super) fn unpack<const K: u8>(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    each_row_block_back(n_in, n_out, sizes::<K>(), packed, dst, |pb, r, b| {
        fields::<K>(r, |p, s, n| b[s..s + n].copy_from_slice(&pb[p..p + n]));
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar dot on each row's source block.
fn block_ints<const K: u8>(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut src = [0u8; 66];
        fields::<K>(r, |p, s, n| src[s..s + n].copy_from_slice(&pb[p..p + n]));
        let isum = if K == TQ1 {
            int_tq1_0(bytemuck::from_bytes::<BlockTQ1_0>(&src[..54]), &y)
        } else {
            int_tq2_0(bytemuck::from_bytes::<BlockTQ2_0>(&src), &y)
        };
        [isum, 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar<const K: u8>(
    nb: usize,
    group: &[u8],
    act: &[u8],
) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints::<K>, sizes::<K>().2, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`.
pub(super) fn dot_scalar<const K: u8>(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(
        block_ints::<K>,
        sizes::<K>().2,
        (OFF_D, None),
        nb,
        group,
        act,
    )
}
