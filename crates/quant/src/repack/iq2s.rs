//! IQ2_Sx8: IQ2_S rows repacked in groups of 8, for an in-register codebook decode.
//!
//! An IQ2_S block holds 256 values in 32 groups k of 8: a 10-bit grid index (`qs[k]` and
//! bits `2(k % 4)..` of `qh[k / 4]`), 8 plain sign bits (`signs[k]`), and a 4-bit scale
//! `ls` per 16 values (`scales[q / 2]` nibble `q % 2`, sub-block q = k / 2). See
//! [`crate::iq_blocks::BlockIQ2S`].
//!
//! A packed block, [`IQ2SX8_BLOCK_BYTES`] = 656 bytes = 8 × 82 (the source's size): the
//! 8 rows' f16 `d` (16 bytes), then per 64-value portion p (groups 8p..8p + 8 of every
//! row) 160 bytes:
//!
//! | offset (in the portion) | bytes | content |
//! |---|---|---|
//! | 0   | 64 | index bits 0..8, byte [`slot`]`(r, g)` = row r's group 8p + g |
//! | 64  | 64 | the sign bytes, same order |
//! | 128 | 8  | index bit 8 of slot b in bit b (a `kmovq` mask) |
//! | 136 | 8  | index bit 9, likewise |
//! | 144 | 16 | byte `2r + s % 2`: `ls` of row r's sub-block 4p + s, low nibble s < 2, high s ≥ 2 |
//!
//! The slots are ordered for the kernel (`x86::iq2s`): a lookup of the 64 indices in the
//! tables of grid values 0..4 and 4..8 gives two vectors X0, X1, and
//! `vpunpck{l,h}wd(X0, X1)` puts in each dword the two groups of one 16-value sub-block
//! (one scale) for values j and 4 + j: dword `2r + s % 2` of the low (s < 2) or high
//! (s ≥ 2) unpack is row r's sub-block s. So one `vpdpbusd` per value position sums one
//! sub-block per lane, and the lanes are scaled by the dword-expanded scale bytes.
//!
//! Definition per row and block: `isum = Σ_q (2·ls_q + 1)·Σ_{16} grid·sign·a` (ggml's
//! integers), `acc = fma((d·0.125)·d_a, isum, acc)` (ggml's factor 0.125 folded into the
//! row scale: a power of two, so exact).

use super::q4k::{kq_dot_scalar_scaled, kq_ints_scalar};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::layout::Q8KView;
use crate::iq_blocks::BlockIQ2S;

/// Bytes of one packed block (8 rows × 256 values).
pub const IQ2SX8_BLOCK_BYTES: usize = 656;
pub(super) const OFF_D: usize = 0;
/// ggml's final factor of the IQ2 types (the halved scale `0.5 + ls` made the odd
/// integer `2·ls + 1`, times the grid's 0.25).
pub(super) const FACTOR: f32 = 0.125;

const SRC: usize = 82; // size_of::<BlockIQ2S>()
const PORTION_BYTES: usize = 160;

/// Offset of portion p's index bytes (signs at +64, bit-8 mask at +128, bit-9 mask at
/// +136, scales at +144).
#[inline(always)]
pub(super) const fn idx_at(p: usize) -> usize {
    16 + PORTION_BYTES * p
}
pub(super) const SIGNS: usize = 64;
pub(super) const HI_BITS: usize = 128;
pub(super) const SCALES: usize = 144;

/// The byte slot (0..64) of row r's group g (0..8) of a 64-value portion: the order that
/// the kernel's word unpacks turn into one sub-block per dword (see the module docs).
pub(super) const fn slot(r: usize, g: usize) -> usize {
    let (s, e) = (g / 2, g % 2);
    16 * (r / 2) + 8 * (s / 2) + 2 * (2 * (r % 2) + s % 2) + e
}

/// Row r's scale nibble of sub-block s (0..4) of a portion: (byte offset in the scales,
/// bit shift).
const fn scale_at(r: usize, s: usize) -> (usize, u32) {
    (2 * r + s % 2, 4 * (s / 2) as u32)
}

fn write_row(pb: &mut [u8], r: usize, x: &BlockIQ2S) {
    pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
    // Row r's 8 slots of a portion lie in mask bits 16·(r / 2)..+16, shared with row
    // r ^ 1: one 16-bit read-modify-write per mask (a write per bit stalls on store
    // forwarding); its scale bytes 2r, 2r + 1 are its own.
    let word = HI_BITS + 2 * (r / 2);
    for p in 0..4 {
        let o = idx_at(p);
        let (mut own, mut bits) = (0u16, [0u16; 2]);
        for g in 0..8 {
            let (k, b) = (8 * p + g, slot(r, g));
            pb[o + b] = x.qs[k];
            pb[o + SIGNS + b] = x.signs[k];
            let (hi, bit) = ((x.qh[k / 4] >> (2 * (k % 4))) & 3, b - 16 * (r / 2));
            own |= 1 << bit;
            for (m, v) in bits.iter_mut().enumerate() {
                *v |= u16::from((hi >> m) & 1) << bit;
            }
        }
        for (m, v) in bits.iter().enumerate() {
            let at = o + word + 8 * m;
            let old = u16::from_le_bytes([pb[at], pb[at + 1]]);
            pb[at..at + 2].copy_from_slice(&((old & !own) | v).to_le_bytes());
        }
        write_scales(&mut pb[o + SCALES..], r, p, &x.scales);
    }
}

/// Row r's scale bytes of portion p (at `sc`, the portion's 16 scale bytes) from the
/// source's `scales` (a nibble per 16 values; IQ2_S and IQ2_XS alike).
pub(super) fn write_scales(sc: &mut [u8], r: usize, p: usize, scales: &[u8; 8]) {
    let mut own = [0u8; 2];
    for s in 0..4 {
        let (at, sh) = scale_at(r, s);
        let q = 4 * p + s;
        own[at - 2 * r] |= ((scales[q / 2] >> (4 * (q % 2))) & 15) << sh;
    }
    sc[2 * r..2 * r + 2].copy_from_slice(&own);
}

/// The inverse of [`write_scales`]: row r's nibbles of portion p into `scales`.
pub(super) fn read_scales(sc: &[u8], r: usize, p: usize, scales: &mut [u8; 8]) {
    for s in 0..4 {
        let (at, sh) = scale_at(r, s);
        let q = 4 * p + s;
        scales[q / 2] |= ((sc[at] >> sh) & 15) << (4 * (q % 2));
    }
}

/// Row r's source block of packed block `pb` (a bijection: `unpack ∘ repack` is the
/// identity on any bytes).
fn row_block(pb: &[u8], r: usize, x: &mut BlockIQ2S) {
    x.d.0 = [pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]];
    x.qh = [0; 8];
    x.scales = [0; 8];
    for k in 0..32 {
        let (o, b) = (idx_at(k / 8), slot(r, k % 8));
        x.qs[k] = pb[o + b];
        x.signs[k] = pb[o + SIGNS + b];
        for m in 0..2 {
            let bit = (pb[o + HI_BITS + 8 * m + b / 8] >> (b % 8)) & 1;
            x.qh[k / 4] |= bit << (2 * (k % 4) + m);
        }
    }
    for p in 0..4 {
        read_scales(&pb[idx_at(p) + SCALES..], r, p, &mut x.scales);
    }
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ2SX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        write_row(pb, r, bytemuck::from_bytes(b));
    });
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, IQ2SX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        row_block(pb, r, bytemuck::from_bytes_mut(b));
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`, by
/// ggml's scalar IQ2_S dot on each row's source block.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let mut x: BlockIQ2S = bytemuck::Zeroable::zeroed();
        row_block(pb, r, &mut x);
        [crate::dot::scalar_iq::ints_iq2_s(&x, &y), 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, IQ2SX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma((d·0.125)·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar_scaled(
        block_ints,
        IQ2SX8_BLOCK_BYTES,
        (OFF_D, None),
        FACTOR,
        nb,
        group,
        act,
    )
}
