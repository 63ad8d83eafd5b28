//! Q3_Kx8: Q3_K rows repacked in groups of 8.
//!
//! A Q3_K block holds 256 three-bit values q ∈ −4..4 in 16 sub-blocks of 16, each with a
//! 6-bit scale (signed scale `s − 32`, packed in 12 bytes), and an f16 `d`. In each
//! 128-value half n, for k in 0..4 and l in 0..32, value `128n + 32k + l` has its low 2 bits
//! at bits `2k..2k+2` of `qs[32n + l]` and its high bit at bit `4n + k` of `hmask[l]`; a
//! *clear* high bit means `q = low2 − 4`, a set one `q = low2`.
//!
//! A packed block, [`Q3KX8_BLOCK_BYTES`] = 912 bytes = 8 × 114 (the source is 110: the 12
//! bytes of packed scales become 16 plain ones):
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0    | 16   | `d` of rows 0..8 (f16) |
//! | 16   | 128  | `sc[p][r][j]`: signed scale `s − 32` of sub-block `2p + j` of row r (i8; p, j: 0..8, 0..2) |
//! | 144  | 256  | `hb[g][r][i]` = row r's `hmask[4g + i]` with its bits moved: source bit `4n + k` to bit [`HBIT`]`[n][k]` (g, i: 0..8, 0..4) |
//! | 400  | 512  | `qs[n][g][r][i]` = row r's `qs[32n + 4g + i]` (n, g, i: 0..2, 0..8, 0..4) |
//!
//! The kernels form `u = low2 + 4·hbit` (0..8) of each value `2^e` times in a byte (`e` per
//! (n, k), [`E`]): the `qs` vector (shifted right by one where `e ≠ 2k`) masked to the two
//! bits at `e`, or'ed with the `hb` vector (shifted left by 2 for n = 1) masked to bit
//! `e + 2`, which is where [`HBIT`] put that value's high bit. `2^e·u ≤ 224` is an unsigned
//! byte for `vpdpbusd`, and `Σ q·a = Σ u·a − 4·bsums[s]` per sub-block (q = u − 4), so
//! each sub-block's sum starts at `−4·2^e·bsums[s]` (prepared once per activation block).
//! The two sub-blocks of a (n, k), pair `p = 4n + k`, then share one `vpdpwssd` with their
//! 16 bytes of scales (as Q2_Kx8).
//!
//! Definition per row and block (ggml's integers): `isum = Σ_s (s_s − 32)·Σ_{k<16} q·a`,
//! `acc = fma(d·d_a, isum, acc)`.

use super::q4k::{kq_dot_scalar, kq_ints_scalar, q8k_quant};
use super::{each_row_block, each_row_block_back, ROWS};
use crate::blocks::BlockQ3K;

/// Bytes of one packed block (8 rows × 256 values).
pub const Q3KX8_BLOCK_BYTES: usize = 912;
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_SC: usize = 16;
const OFF_HB: usize = 144;
const OFF_QS: usize = 400;

const SRC: usize = 110; // size_of::<BlockQ3K>()

/// Offset of the high-bit vector g (0..8) in a packed block.
#[inline(always)]
pub(super) const fn hb_at(g: usize) -> usize {
    OFF_HB + 32 * g
}

/// Where the packed `hb` bytes keep the high bit of (half n, field k) (source bit
/// `4n + k`): for n = 0 bit `E[0][k] + 2`, for n = 1 bit `E[1][k]` (the kernels shift the
/// n = 1 vectors left by 2). A permutation of 0..8.
pub(super) const HBIT: [[u32; 4]; 2] = [[2, 4, 6, 7], [0, 1, 3, 5]];

/// The power of two `e` at which the kernels form (n, k)'s `2^e·u`: `2k` where the 2 low
/// bits can stay in place, else one less (the `qs` vector shifted right by one).
pub(super) const E: [[u32; 4]; 2] = [[0, 2, 4, 5], [0, 1, 3, 5]];

/// Offset of row r's scale of sub-block s (0..16) in a packed block.
#[inline(always)]
const fn sc_at(s: usize, r: usize) -> usize {
    OFF_SC + 16 * (s / 2) + 2 * r + s % 2
}

/// Moves source hmask bit `4n + k` to [`HBIT`]`[n][k]`.
fn permute_hbits(h: u8) -> u8 {
    let mut out = 0u8;
    for (n, bits) in HBIT.iter().enumerate() {
        for (k, &to) in bits.iter().enumerate() {
            out |= ((h >> (4 * n + k)) & 1) << to;
        }
    }
    out
}

/// The inverse of [`permute_hbits`].
fn unpermute_hbits(b: u8) -> u8 {
    let mut out = 0u8;
    for (n, bits) in HBIT.iter().enumerate() {
        for (k, &from) in bits.iter().enumerate() {
            out |= ((b >> from) & 1) << (4 * n + k);
        }
    }
    out
}

/// Offset of the qs vector (n, g) in a packed block.
#[inline(always)]
pub(super) const fn qs_at(n: usize, g: usize) -> usize {
    OFF_QS + (8 * n + g) * 32
}

/// The 16 six-bit scales back into Q3_K's 12-byte packing (the inverse of
/// `dot::layout::q3k_scales`: low nibbles of scales 0..8 / 8..16 in the low / high nibbles
/// of bytes 0..8, high 2 bits of scale j in bits `2(j/4)..` of byte `8 + j % 4`).
fn pack_scales(s: &[u8; 16]) -> [u8; 12] {
    let mut p = [0u8; 12];
    for (j, &v) in s.iter().enumerate() {
        let v = v & 63;
        let (half, b) = (j / 8, j % 8);
        p[b] |= (v & 0xf) << (4 * half);
        p[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
    }
    p
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q3KX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        let x: &BlockQ3K = bytemuck::from_bytes(b);
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
        let sc = crate::dot::layout::q3k_scales(&x.scales);
        for (s, &v) in sc.iter().enumerate() {
            pb[sc_at(s, r)] = (v as i8 - 32) as u8;
        }
        for g in 0..8 {
            for i in 0..4 {
                pb[hb_at(g) + 4 * r + i] = permute_hbits(x.hmask[4 * g + i]);
            }
        }
        for n in 0..2 {
            for g in 0..8 {
                let d = qs_at(n, g) + 4 * r;
                let s = 32 * n + 4 * g;
                pb[d..d + 4].copy_from_slice(&x.qs[s..s + 4]);
            }
        }
    });
}

/// The inverse of [`repack`] (exact for any bytes: the scale packing is a bijection of
/// 16 six-bit values and 12 bytes, the bit move a permutation).
pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q3KX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        let x: &mut BlockQ3K = bytemuck::from_bytes_mut(b);
        x.d.0 = [pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]];
        let sc: [u8; 16] = std::array::from_fn(|s| (pb[sc_at(s, r)] as i8 as i32 + 32) as u8 & 63);
        x.scales = pack_scales(&sc);
        for g in 0..8 {
            for i in 0..4 {
                x.hmask[4 * g + i] = unpermute_hbits(pb[hb_at(g) + 4 * r + i]);
            }
        }
        for n in 0..2 {
            for g in 0..8 {
                let s = qs_at(n, g) + 4 * r;
                let d = 32 * n + 4 * g;
                x.qs[d..d + 4].copy_from_slice(&pb[s..s + 4]);
            }
        }
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, 0]`.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    std::array::from_fn(|r| {
        let mut sub = [0i32; 16];
        for v in 0..256 {
            let (n, k, l) = (v / 128, (v % 128) / 32, v % 32);
            let low2 = (pb[qs_at(n, l / 4) + 4 * r + l % 4] >> (2 * k)) & 3;
            let hbit = (pb[hb_at(l / 4) + 4 * r + l % 4] >> HBIT[n][k]) & 1;
            let q = low2 as i32 + 4 * hbit as i32 - 4;
            sub[v / 16] += q * q8k_quant(y, v);
        }
        let isum = (0..16).map(|s| pb[sc_at(s, r)] as i8 as i32 * sub[s]).sum();
        [isum, 0]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, Q3KX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(block_ints, Q3KX8_BLOCK_BYTES, (OFF_D, None), nb, group, act)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pack_scales` inverts `q3k_scales` on every byte pattern tried.
    #[test]
    fn scale_packing_round_trips() {
        let mut x = 0x1234_5678u32;
        for _ in 0..2000 {
            let p: [u8; 12] = std::array::from_fn(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            });
            assert_eq!(pack_scales(&crate::dot::layout::q3k_scales(&p)), p);
        }
    }

    /// The high-bit move is a permutation, and puts each (n, k) bit where the kernels'
    /// masks look: bit `E + 2` for n = 0, `E` (then shifted left by 2) for n = 1, with `E`
    /// either `2k` or `2k − 1`.
    #[test]
    fn hbit_layout_is_consistent() {
        for b in 0..=255u8 {
            assert_eq!(unpermute_hbits(permute_hbits(b)), b);
        }
        for k in 0..4 {
            assert_eq!(HBIT[0][k], E[0][k] + 2);
            assert_eq!(HBIT[1][k], E[1][k]);
            for e in [E[0][k], E[1][k]] {
                assert!(e == 2 * k as u32 || e + 1 == 2 * k as u32);
                assert!(e <= 5, "2^e·7 must fit a byte");
            }
        }
    }
}
