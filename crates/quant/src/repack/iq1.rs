//! IQ1_Sx8 and IQ1_Mx8: IQ1_S / IQ1_M rows repacked in groups of 8, for the AVX-512 tile
//! (`x86::iq1`) that assembles one vector per group position from the 8 rows' grid entries.
//!
//! Both types cut a 256-value block into 8 chunks c of 32 = 4 groups l of 8 values; group
//! (c, l) is grid entry `qs[4c + l] | hi << 8` with 3 high bits `hi` from a 16-bit word
//! `qh_c` (IQ1_S: bits 3l.., IQ1_M: bits 4l..; see [`crate::iq1`]). The packed blocks keep
//! every source byte (the same size) but put the same field of the 8 rows side by side:
//!
//! IQ1_Sx8, [`IQ1SX8_BLOCK_BYTES`] = 400 = 8 × 50:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0 | 16 | `d` of rows 0..8 (f16) |
//! | 16 + 32c + 8l + r | 1 | row r's `qs[4c + l]` |
//! | 272 + 16c + 2r | 2 | row r's `qh[c]` (high index bits, scale, delta sign) |
//!
//! IQ1_Mx8, [`IQ1MX8_BLOCK_BYTES`] = 448 = 8 × 56:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 16k + 2r | 2 | row r's scale word k (k = 0..4; `d` in the top nibbles) |
//! | 64 + 32c + 8l + r | 1 | row r's `qs[4c + l]` |
//! | 320 + 16c + 2r | 2 | row r's `qh[2c..2c + 2]` as a little-endian u16 |
//!
//! So the 32 low index bytes of a chunk (8 rows × 4 groups) are one 256-bit load and the
//! 8 rows' `qh_c` one 128-bit load, from which the tile computes the 32 indices at once.
//!
//! Definition per row and block (both types): `isum = 8·S + S_δ` (see `dot::iq1`: ggml's
//! integers S = Σ ls·Σ grid·a, S_δ = Σ ls·δ·Σ a), `acc = fma((d·0.125)·d_a, isum, acc)`
//! (ggml's `S + S_δ/8` in f32 is exact, and the factor a power of two).

use super::q4k::{kq_dot_scalar_scaled, kq_ints_scalar, Q8K_SIZE};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::dot::iq1::{sums_iq1_m, sums_iq1_s};
use crate::dot::layout::Q8KView;
use crate::iq1::{BlockIQ1M, BlockIQ1S};

/// Bytes of one packed IQ1_Sx8 block (8 rows × 256 values).
pub const IQ1SX8_BLOCK_BYTES: usize = 400;
/// Bytes of one packed IQ1_Mx8 block (8 rows × 256 values).
pub const IQ1MX8_BLOCK_BYTES: usize = 448;

/// ggml's final factor of both types (`S + S_δ/8` = `(8·S + S_δ)/8`).
pub(super) const FACTOR: f32 = 0.125;

/// IQ1_Sx8: the rows' f16 `d`, the low index bytes, the `qh` words.
pub(super) const S_OFF_D: usize = 0;
pub(super) const S_OFF_QS: usize = 16;
pub(super) const S_OFF_QH: usize = 272;
/// IQ1_Mx8: the rows' scale words, the low index bytes, the `qh` words.
pub(super) const M_OFF_SC: usize = 0;
pub(super) const M_OFF_QS: usize = 64;
pub(super) const M_OFF_QH: usize = 320;

const S_SRC: usize = 50; // size_of::<BlockIQ1S>()
const M_SRC: usize = 56; // size_of::<BlockIQ1M>()

/// Offset of row r's low index byte of group (c, l), after the layout's `off_qs`.
const fn qs_at(off_qs: usize, r: usize, c: usize, l: usize) -> usize {
    off_qs + 32 * c + 8 * l + r
}

/// Offset of row r's `qh` word of chunk c, after the layout's `off_qh`.
const fn qh_at(off_qh: usize, r: usize, c: usize) -> usize {
    off_qh + 16 * c + 2 * r
}

/// Visits the fields both types share, of row r: `f(packed offset, source offset, bytes)`
/// for the 32 low index bytes (source `src_qs..`) and the 8 `qh` words (`src_qh..`).
#[inline(always)]
fn shared_fields(
    (off_qs, off_qh): (usize, usize),
    r: usize,
    (src_qs, src_qh): (usize, usize),
    f: &mut impl FnMut(usize, usize, usize),
) {
    for c in 0..8 {
        for l in 0..4 {
            f(qs_at(off_qs, r, c, l), src_qs + 4 * c + l, 1);
        }
        f(qh_at(off_qh, r, c), src_qh + 2 * c, 2);
    }
}

/// IQ1_S: visits row r's fields (`d` at 0, `qs` at 2, `qh` at 34 of the source block).
#[inline(always)]
fn s_fields(r: usize, mut f: impl FnMut(usize, usize, usize)) {
    f(S_OFF_D + 2 * r, 0, 2);
    shared_fields((S_OFF_QS, S_OFF_QH), r, (2, 34), &mut f);
}

/// IQ1_M: visits row r's fields (`qs` at 0, `qh` at 32, the 4 scale words at 48).
#[inline(always)]
fn m_fields(r: usize, mut f: impl FnMut(usize, usize, usize)) {
    shared_fields((M_OFF_QS, M_OFF_QH), r, (0, 32), &mut f);
    for k in 0..4 {
        f(M_OFF_SC + 16 * k + 2 * r, 48 + 2 * k, 2);
    }
}

/// `dst[d..d + n] = src[s..s + n]` for the fields' sizes (1 or 2 bytes): fixed-size
/// copies (a `copy_from_slice` of a run-time length is a `memcpy` call per byte: 15× slower
/// repacking).
#[inline(always)]
fn copy_field(dst: &mut [u8], d: usize, src: &[u8], s: usize, n: usize) {
    if n == 1 {
        dst[d] = src[s];
    } else {
        dst[d..d + 2].copy_from_slice(&src[s..s + 2]);
    }
}

pub(super) fn repack_s(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, S_SRC, IQ1SX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        s_fields(r, |p, s, n| copy_field(pb, p, b, s, n))
    });
}

pub(super) fn unpack_s(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, S_SRC, IQ1SX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        s_fields(r, |p, s, n| copy_field(b, s, pb, p, n))
    });
}

pub(super) fn repack_m(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, M_SRC, IQ1MX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        m_fields(r, |p, s, n| copy_field(pb, p, b, s, n))
    });
}

pub(super) fn unpack_m(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, M_SRC, IQ1MX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        m_fields(r, |p, s, n| copy_field(b, s, pb, p, n))
    });
}

/// Row r's IQ1_S source block of a packed block.
fn row_block_s(pb: &[u8], r: usize) -> [u8; S_SRC] {
    let mut b = [0u8; S_SRC];
    s_fields(r, |p, s, n| copy_field(&mut b, s, pb, p, n));
    b
}

/// Row r's IQ1_M source block of a packed block.
fn row_block_m(pb: &[u8], r: usize) -> [u8; M_SRC] {
    let mut b = [0u8; M_SRC];
    m_fields(r, |p, s, n| copy_field(&mut b, s, pb, p, n));
    b
}

/// IQ1_Sx8: the exact integers of one packed block × one Q8_K block, per row:
/// `[8·S + S_δ, 0]`, by the scalar IQ1_S dot on each row's source block.
pub(super) fn block_ints_s(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let b = row_block_s(pb, r);
        let (s, sd) = sums_iq1_s(bytemuck::from_bytes::<BlockIQ1S>(&b), &y);
        [8 * s + sd, 0]
    })
}

/// IQ1_Mx8: as [`block_ints_s`].
pub(super) fn block_ints_m(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let y = Q8KView::new(y);
    std::array::from_fn(|r| {
        let b = row_block_m(pb, r);
        let (s, sd) = sums_iq1_m(bytemuck::from_bytes::<BlockIQ1M>(&b), &y);
        [8 * s + sd, 0]
    })
}

/// IQ1_Sx8: `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar_s(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints_s, IQ1SX8_BLOCK_BYTES, nb, group, act)
}

/// IQ1_Mx8: `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar_m(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints_m, IQ1MX8_BLOCK_BYTES, nb, group, act)
}

/// The IQ1_Sx8 definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma((d·0.125)·d_a, isum, acc)`.
pub fn dot_scalar_s(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar_scaled(
        block_ints_s,
        IQ1SX8_BLOCK_BYTES,
        (S_OFF_D, None),
        FACTOR,
        nb,
        group,
        act,
    )
}

/// Row r's f16 `d` of an IQ1_Mx8 block (the top nibbles of its 4 scale words).
pub(super) fn m_row_d(pb: &[u8], r: usize) -> f32 {
    let b = row_block_m(pb, r);
    bytemuck::from_bytes::<BlockIQ1M>(&b).d().to_f32()
}

/// The IQ1_Mx8 definition, as [`dot_scalar_s`] with `d` from each row's scale words.
pub fn dot_scalar_m(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    let pbb = IQ1MX8_BLOCK_BYTES;
    for ib in 0..nb {
        let pb = &group[ib * pbb..(ib + 1) * pbb];
        let y = &act[ib * Q8K_SIZE..(ib + 1) * Q8K_SIZE];
        let da = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let v = block_ints_m(pb, y);
        for r in 0..ROWS {
            let dd = (m_row_d(pb, r) * FACTOR) * da;
            acc[r] = dd.mul_add(v[r][0] as f32, acc[r]);
        }
    }
    acc
}
