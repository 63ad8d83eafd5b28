//! Q6_Kx8: Q6_K rows repacked in groups of 8 (same size as the source: 210 bytes per
//! row-block).
//!
//! A Q6_K block holds 256 six-bit values q (stored value q − 32) as `ql` (low 4 bits) and
//! `qh` (high 2 bits), 16 signed 8-bit scales (one per 16 values) and an f16 `d`. In each
//! 128-value half n, for l in 0..32: `ql[64n + l]` holds values `128n + l` (low nibble) and
//! `128n + 64 + l` (high nibble), `ql[64n + 32 + l]` values `128n + 32 + l` and
//! `128n + 96 + l`, and `qh[32n + l]` the high bits of those four values (bits 0–1, 2–3,
//! 4–5, 6–7 for `+0`, `+32`, `+64`, `+96`).
//!
//! A packed block, [`Q6KX8_BLOCK_BYTES`] = 1680 bytes = 8 × 210:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0    | 16   | `d` of rows 0..8 (f16) |
//! | 16   | 128  | `sc[s][r]`: scale of sub-block s (0..16) of row r (i8) |
//! | 144  | 1536 | for n in 0..2, g in 0..8, 96 bytes: `qh[r][i]` = row r's `qh[32n + 4g + i]`, then for p in 0..2 `ql[r][i]` = row r's `ql[64n + 32p + 4g + i]` (r: 0..8, i: 0..4) |
//!
//! So one 32-byte `ql` vector (n, p, g) gives, for the 8 rows, the low 4 bits of values
//! `128n + 32p + 4g .. +4` (low nibbles) and `128n + 64 + 32p + 4g .. +4` (high nibbles),
//! and the `qh` vector (n, g) stored just before it their high bits: a few shifts and
//! masks make two vectors of 8 rows × 4 unsigned values (0..64), each multiplied by one
//! broadcast 4-byte group of activations. The −32 offset is taken out per sub-block with
//! the activations' `bsums`. The kernels read a block strictly in address order (one
//! 96-byte step per (n, g)), which keeps the hardware prefetchers streaming from DRAM:
//! a first layout with all `ql` before all `qh` ran GEMV from DRAM at 7 GB/s per thread.
//!
//! Definition per row and block: `isum = Σ_s sc_s · (Σ_{k<16} q[16s+k]·a[16s+k] −
//! 32·bsums[s])` (= ggml's Σ sc·Σ (q − 32)·a, exactly), `acc = fma(d·d_a, isum, acc)`.

use super::q4k::{kq_dot_scalar, kq_ints_scalar, q8k_bsum, q8k_quant};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::blocks::{BlockQ6K, Half};

/// Bytes of one packed block (8 rows × 256 values).
pub const Q6KX8_BLOCK_BYTES: usize = 1680;
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_SC: usize = 16;
const OFF_Q: usize = 144;

const SRC: usize = 210; // size_of::<BlockQ6K>()

/// Offset of `qh` vector (n, g) in a packed block.
#[inline(always)]
pub(super) const fn qh_at(n: usize, g: usize) -> usize {
    OFF_Q + (n * 8 + g) * 96
}

/// Offset of `ql` vector (n, p, g) in a packed block.
#[inline(always)]
pub(super) const fn ql_at(n: usize, p: usize, g: usize) -> usize {
    qh_at(n, g) + 32 + 32 * p
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q6KX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        let x: &BlockQ6K = bytemuck::from_bytes(b);
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
        for s in 0..16 {
            pb[OFF_SC + 8 * s + r] = x.scales[s] as u8;
        }
        for n in 0..2 {
            for g in 0..8 {
                for p in 0..2 {
                    let d = ql_at(n, p, g) + 4 * r;
                    let s = 64 * n + 32 * p + 4 * g;
                    pb[d..d + 4].copy_from_slice(&x.ql[s..s + 4]);
                }
                let d = qh_at(n, g) + 4 * r;
                let s = 32 * n + 4 * g;
                pb[d..d + 4].copy_from_slice(&x.qh[s..s + 4]);
            }
        }
    });
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q6KX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        let x: &mut BlockQ6K = bytemuck::from_bytes_mut(b);
        x.d = Half([pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]]);
        for s in 0..16 {
            x.scales[s] = pb[OFF_SC + 8 * s + r] as i8;
        }
        for n in 0..2 {
            for g in 0..8 {
                for p in 0..2 {
                    let s = ql_at(n, p, g) + 4 * r;
                    let d = 64 * n + 32 * p + 4 * g;
                    x.ql[d..d + 4].copy_from_slice(&pb[s..s + 4]);
                }
                let s = qh_at(n, g) + 4 * r;
                let d = 32 * n + 4 * g;
                x.qh[d..d + 4].copy_from_slice(&pb[s..s + 4]);
            }
        }
    });
}

/// Row r's unsigned value v (0..64) of a packed block, decoded from the layout above.
fn value(pb: &[u8], r: usize, v: usize) -> i32 {
    let (n, w) = (v / 128, v % 128);
    let (high, p, l) = (w >= 64, (w % 64) / 32, w % 32);
    let (g, i) = (l / 4, l % 4);
    let lq = pb[ql_at(n, p, g) + 4 * r + i];
    let nib = if high { lq >> 4 } else { lq & 0xf };
    let shift = 2 * p + if high { 4 } else { 0 };
    let hb = (pb[qh_at(n, g) + 4 * r + i] >> shift) & 3;
    (nib | (hb << 4)) as i32
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let a = |p: usize| q8k_quant(y, p);
    let bsum = |k: usize| q8k_bsum(y, k);
    std::array::from_fn(|r| {
        let mut isum = 0i32;
        for s in 0..16 {
            let sub: i32 = (0..16)
                .map(|k| value(pb, r, 16 * s + k) * a(16 * s + k))
                .sum();
            isum += pb[OFF_SC + 8 * s + r] as i8 as i32 * (sub - 32 * bsum(s));
        }
        [isum, 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, Q6KX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(block_ints, Q6KX8_BLOCK_BYTES, (OFF_D, None), nb, group, act)
}
