//! Q2_Kx8: Q2_K rows repacked in groups of 8 (same size as the source: 84 bytes per
//! row-block).
//!
//! A Q2_K block holds 256 two-bit values q in 16 sub-blocks of 16, each with a 4-bit scale
//! (low nibble of `scales[s]`) and a 4-bit min (high nibble), and f16 `d`, `dmin`. In each
//! 128-value half n, for k in 0..4 and l in 0..32, value `128n + 32k + l` is bits
//! `2k..2k+2` of `qs[32n + l]`; it lies in sub-block `(128n + 32k + l) / 16`.
//!
//! A packed block, [`Q2KX8_BLOCK_BYTES`] = 672 bytes = 8 × 84:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0    | 16   | `d` of rows 0..8 (f16) |
//! | 16   | 16   | `dmin` of rows 0..8 (f16) |
//! | 32   | 128  | `sm[p][r][j]` = row r's `scales[2p + j]` (p, j: 0..8, 0..2): scale and min of sub-block `2p + j` |
//! | 160  | 512  | `qs[n][g][r][i]` = row r's `qs[32n + 4g + i]` (n, g, i: 0..2, 0..8, 0..4) |
//!
//! So one 32-byte `qs[n][g]` vector holds, for the 8 rows, the 2-bit fields of values
//! `128n + 32k + 4g .. +4` for the four k: with VNNI one AND with `3 << 2k` leaves them
//! multiplied by `4^k` (at most 192, an unsigned byte), and one `vpdpbusd` per token sums a
//! sub-block's 4 positions against a broadcast 4-byte group of activations. The two
//! sub-blocks of a (n, k) form pair `p = 4n + k`: their sums (|Σ16 q·a| < 2¹⁵ once the
//! `4^k` is shifted out, exactly) go into the two 16-bit halves of one i32 lane, and one
//! `vpdpwssd` against the pair's 16 bytes of `sm` (zero-extended to 16 bits, masked to the
//! scales) applies both scales. The same 16 bytes shifted right by 4 are the pair's mins,
//! one `vpdpwssd` against the broadcast `bsums[2p], bsums[2p + 1]`.
//!
//! Definition per row and block (ggml's integers): `isum = Σ_s sc_s·Σ_{k<16} q·a`,
//! `msum = Σ_s m_s·bsums[s]`, then `acc = fma(d·d_a, isum, acc)`,
//! `acc = fma(−(dmin·d_a), msum, acc)`.

use super::q4k::{kq_dot_scalar, kq_ints_scalar, q8k_bsum, q8k_quant};
use super::{each_row_block, each_row_block_back, ROWS};

/// Bytes of one packed block (8 rows × 256 values).
pub const Q2KX8_BLOCK_BYTES: usize = 672;
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_DMIN: usize = 16;
pub(super) const OFF_SM: usize = 32;
const OFF_QS: usize = 160;

/// Source block: `scales[16]`, `qs[64]`, `d`, `dmin`.
const SRC: usize = 84;
const SRC_QS: usize = 16;
const SRC_D: usize = 80;

/// Offset of row r's scale/min byte of sub-block s (0..16) in a packed block.
#[inline(always)]
const fn sm_at(s: usize, r: usize) -> usize {
    OFF_SM + 16 * (s / 2) + 2 * r + s % 2
}

/// Offset of the qs vector (n, g) in a packed block.
#[inline(always)]
pub(super) const fn qs_at(n: usize, g: usize) -> usize {
    OFF_QS + (8 * n + g) * 32
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q2KX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&b[SRC_D..SRC_D + 2]);
        pb[OFF_DMIN + 2 * r..OFF_DMIN + 2 * r + 2].copy_from_slice(&b[SRC_D + 2..SRC_D + 4]);
        for s in 0..16 {
            pb[sm_at(s, r)] = b[s];
        }
        for n in 0..2 {
            for g in 0..8 {
                let d = qs_at(n, g) + 4 * r;
                let s = SRC_QS + 32 * n + 4 * g;
                pb[d..d + 4].copy_from_slice(&b[s..s + 4]);
            }
        }
    });
}

/// The inverse of [`repack`] (exact for any bytes: every byte is moved, none changed).
pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q2KX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        b[SRC_D..SRC_D + 2].copy_from_slice(&pb[OFF_D + 2 * r..OFF_D + 2 * r + 2]);
        b[SRC_D + 2..SRC_D + 4].copy_from_slice(&pb[OFF_DMIN + 2 * r..OFF_DMIN + 2 * r + 2]);
        for s in 0..16 {
            b[s] = pb[sm_at(s, r)];
        }
        for n in 0..2 {
            for g in 0..8 {
                let s = qs_at(n, g) + 4 * r;
                let d = SRC_QS + 32 * n + 4 * g;
                b[d..d + 4].copy_from_slice(&pb[s..s + 4]);
            }
        }
    });
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, msum]`.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    std::array::from_fn(|r| {
        let mut sub = [0i32; 16];
        for v in 0..256 {
            let (n, k, l) = (v / 128, (v % 128) / 32, v % 32);
            let byte = pb[qs_at(n, l / 4) + 4 * r + l % 4];
            let q = ((byte >> (2 * k)) & 3) as i32;
            sub[v / 16] += q * q8k_quant(y, v);
        }
        let mut isum = 0i32;
        let mut msum = 0i32;
        for (s, &sum) in sub.iter().enumerate() {
            let sm = pb[sm_at(s, r)];
            isum += (sm & 0xf) as i32 * sum;
            msum += (sm >> 4) as i32 * q8k_bsum(y, s);
        }
        [isum, msum]
    })
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, Q2KX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`, then `acc = fma(−(dmin·d_a), msum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(
        block_ints,
        Q2KX8_BLOCK_BYTES,
        (OFF_D, Some(OFF_DMIN)),
        nb,
        group,
        act,
    )
}
