//! Q4_Kx8: Q4_K rows repacked in groups of 8.
//!
//! A group is `nb` packed blocks (one per 256-value super-block), each
//! [`Q4KX8_BLOCK_BYTES`] = 1184 bytes = 8 × 148:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 0    | 16   | `d` of rows 0..8 (f16) |
//! | 16   | 16   | `dmin` of rows 0..8 (f16) |
//! | 32   | 64   | `sc[s][r]`: 6-bit scale of sub-block s (0..8) of row r, one byte each |
//! | 96   | 64   | `mn[h][r][i]`: 6-bit min of sub-block 4h + i (h: 0..2, i: 0..4) of row r |
//! | 160  | 1024 | `qs[j][g][r][i]` = row r's Q4_K `qs[32j + 4g + i]` (j, g, i: 0..4, 0..8, 0..4) |
//!
//! So the 32 bytes at `qs[j][g]` hold, for each of the 8 rows, the 4 bytes whose low
//! nibbles are values `64j + 4g .. +4` (sub-block 2j) and whose high nibbles are values
//! `64j + 32 + 4g .. +4` (sub-block 2j+1): one AND / one shift+AND gives two vectors of
//! 8 rows × 4 values, each multiplied by one broadcast 4-byte group of activations.
//!
//! The mins are stored as 4 consecutive sub-blocks per row (lane = row), so that `msum`
//! is 4 `vpdpbusd` per token against the activations' per-32 sums, split into a low
//! signed byte and a high one (`Σ32 = lo + 256·hi`, prepared once per tile call for all its
//! groups: see `x86`).

use super::{each_row_block, each_row_block_back, ROWS};
use crate::blocks::{BlockQ4K, Half};

/// Bytes of one packed block (8 rows × 256 values).
pub const Q4KX8_BLOCK_BYTES: usize = 1184;
pub(super) const OFF_D: usize = 0;
pub(super) const OFF_DMIN: usize = 16;
pub(super) const OFF_SC: usize = 32;
pub(super) const OFF_MN: usize = 96;

/// Offset of row r's min of sub-block s (0..8) in a packed block.
#[inline]
pub(super) fn mn_at(s: usize, r: usize) -> usize {
    OFF_MN + 32 * (s / 4) + 4 * r + s % 4
}
pub(super) const OFF_QS: usize = 160;

const SRC: usize = 144; // size_of::<BlockQ4K>()

/// Byte offsets in a Q8_K block (f32 `d`, 256 `qs`, 16 i16 `bsums`).
pub(super) const Q8K_QS: usize = 4;
pub(super) const Q8K_BSUMS: usize = 260;
pub(super) const Q8K_SIZE: usize = 292;

/// Quant `p` (0..256) of a Q8_K block.
pub(super) fn q8k_quant(y: &[u8], p: usize) -> i32 {
    y[Q8K_QS + p] as i8 as i32
}

/// `bsums[k]` (the sum of quants 16k..16k+16) of a Q8_K block.
pub(super) fn q8k_bsum(y: &[u8], k: usize) -> i32 {
    i16::from_le_bytes([y[Q8K_BSUMS + 2 * k], y[Q8K_BSUMS + 2 * k + 1]]) as i32
}

/// Q4_K's 12 packed bytes → 8 six-bit scales (bytes 0..8) and 8 mins (8..16), per ggml's
/// `get_scale_min_k4`.
fn k4_scales_mins(p: &[u8; 12]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for j in 0..8 {
        let (sc, m) = if j < 4 {
            (p[j] & 63, p[j + 4] & 63)
        } else {
            (
                (p[j + 4] & 0xf) | ((p[j - 4] >> 6) << 4),
                (p[j + 4] >> 4) | ((p[j] >> 6) << 4),
            )
        };
        out[j] = sc;
        out[8 + j] = m;
    }
    out
}

pub(super) fn repack(n_in: usize, n_out: usize, src: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q4KX8_BLOCK_BYTES);
    each_row_block(n_in, n_out, sizes, src, dst, |pb, r, b| {
        let x: &BlockQ4K = bytemuck::from_bytes(b);
        pb[OFF_D + 2 * r..OFF_D + 2 * r + 2].copy_from_slice(&x.d.0);
        pb[OFF_DMIN + 2 * r..OFF_DMIN + 2 * r + 2].copy_from_slice(&x.dmin.0);
        let sm = k4_scales_mins(&x.scales);
        for s in 0..8 {
            pb[OFF_SC + 8 * s + r] = sm[s];
            pb[mn_at(s, r)] = sm[8 + s];
        }
        for j in 0..4 {
            for gg in 0..8 {
                let d = OFF_QS + (j * 8 + gg) * 32 + 4 * r;
                let s = 32 * j + 4 * gg;
                pb[d..d + 4].copy_from_slice(&x.qs[s..s + 4]);
            }
        }
    });
}

/// The 12-byte Q4_K scale packing of 8 six-bit scales and mins (inverse of
/// `k4_scales_mins`; the packing is a bijection, so unpack ∘ repack is the identity).
fn pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut p = [0u8; 12];
    for j in 0..4 {
        p[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        p[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        p[j + 8] = (sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4);
    }
    p
}

pub(super) fn unpack(n_in: usize, n_out: usize, packed: &[u8], dst: &mut [u8]) {
    let sizes = (256, SRC, Q4KX8_BLOCK_BYTES);
    each_row_block_back(n_in, n_out, sizes, packed, dst, |pb, r, b| {
        let x: &mut BlockQ4K = bytemuck::from_bytes_mut(b);
        x.d = Half([pb[OFF_D + 2 * r], pb[OFF_D + 2 * r + 1]]);
        x.dmin = Half([pb[OFF_DMIN + 2 * r], pb[OFF_DMIN + 2 * r + 1]]);
        let sc: [u8; 8] = std::array::from_fn(|s| pb[OFF_SC + 8 * s + r]);
        let mn: [u8; 8] = std::array::from_fn(|s| pb[mn_at(s, r)]);
        x.scales = pack_scales(&sc, &mn);
        for j in 0..4 {
            for gg in 0..8 {
                let s = OFF_QS + (j * 8 + gg) * 32 + 4 * r;
                let d = 32 * j + 4 * gg;
                x.qs[d..d + 4].copy_from_slice(&pb[s..s + 4]);
            }
        }
    });
}

fn f16_at(b: &[u8], o: usize) -> f32 {
    Half([b[o], b[o + 1]]).to_f32()
}

/// The exact integers of one packed block × one Q8_K block, per row: `[isum, msum]` with
/// `isum = Σ_s sc_s·Σ_{k<32} q[32s+k]·a[32s+k]`, `msum = Σ_s m_s·(bsums[2s] + bsums[2s+1])`.
pub(super) fn block_ints(pb: &[u8], y: &[u8]) -> [[i32; 2]; ROWS] {
    let a = |p: usize| q8k_quant(y, p);
    let bsum = |k: usize| q8k_bsum(y, k);
    std::array::from_fn(|r| {
        let mut isum = 0i32;
        let mut msum = 0i32;
        for s in 0..8 {
            let (j, high) = (s / 2, s % 2 == 1);
            let mut sub = 0i32;
            for k in 0..32 {
                let (gg, i) = (k / 4, k % 4);
                let byte = pb[OFF_QS + (j * 8 + gg) * 32 + 4 * r + i];
                let q = if high { byte >> 4 } else { byte & 0xf } as i32;
                sub += q * a(32 * s + k);
            }
            isum += pb[OFF_SC + 8 * s + r] as i32 * sub;
            msum += pb[mn_at(s, r)] as i32 * (bsum(2 * s) + bsum(2 * s + 1));
        }
        [isum, msum]
    })
}

/// The integers of a k-quant packed layout's block × a Q8_K block (`[isum, msum]` per row).
pub(super) type BlockInts = fn(&[u8], &[u8]) -> [[i32; 2]; ROWS];

/// `[block][row]` integers of a whole group × one Q8_K row, blocks of `pbb` bytes.
pub(super) fn kq_ints_scalar(
    ints: BlockInts,
    pbb: usize,
    nb: usize,
    group: &[u8],
    act: &[u8],
) -> Vec<[[i32; 2]; ROWS]> {
    (0..nb)
        .map(|ib| {
            ints(
                &group[ib * pbb..(ib + 1) * pbb],
                &act[ib * Q8K_SIZE..(ib + 1) * Q8K_SIZE],
            )
        })
        .collect()
}

/// The definition shared by the k-quant layouts: per row, per block,
/// `acc = fma(d·d_a, isum, acc)`, then (layouts with mins, `off_dmin`)
/// `acc = fma(−(dmin·d_a), msum, acc)`.
pub(super) fn kq_dot_scalar(
    ints: BlockInts,
    pbb: usize,
    offs: (usize, Option<usize>),
    nb: usize,
    group: &[u8],
    act: &[u8],
) -> [f32; ROWS] {
    // `d·1.0` is `d` exactly: the same operations as without a factor.
    kq_dot_scalar_scaled(ints, pbb, offs, 1.0, nb, group, act)
}

/// [`kq_dot_scalar`] with the row scales multiplied by a power of two `factor` first
/// (exact): `acc = fma((d·factor)·d_a, isum, acc)` (the i-quants' constant factors).
pub(super) fn kq_dot_scalar_scaled(
    ints: BlockInts,
    pbb: usize,
    (off_d, off_dmin): (usize, Option<usize>),
    factor: f32,
    nb: usize,
    group: &[u8],
    act: &[u8],
) -> [f32; ROWS] {
    let mut acc = [0f32; ROWS];
    for ib in 0..nb {
        let pb = &group[ib * pbb..(ib + 1) * pbb];
        let y = &act[ib * Q8K_SIZE..(ib + 1) * Q8K_SIZE];
        let da = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        let v = ints(pb, y);
        for r in 0..ROWS {
            let dd = (f16_at(pb, off_d + 2 * r) * factor) * da;
            acc[r] = dd.mul_add(v[r][0] as f32, acc[r]);
            if let Some(off) = off_dmin {
                let dm = f16_at(pb, off + 2 * r) * da;
                acc[r] = (-dm).mul_add(v[r][1] as f32, acc[r]);
            }
        }
    }
    acc
}

/// `[block][row]` integers of a whole group × one activation row.
pub(super) fn ints_scalar(nb: usize, group: &[u8], act: &[u8]) -> Vec<[[i32; 2]; ROWS]> {
    kq_ints_scalar(block_ints, Q4KX8_BLOCK_BYTES, nb, group, act)
}

/// The definition: the 8 rows of a packed group (`nb` blocks) · one Q8_K row.
/// Per row, per block: `acc = fma(d·d_a, isum, acc)`, then `acc = fma(−(dmin·d_a), msum, acc)`.
pub fn dot_scalar(nb: usize, group: &[u8], act: &[u8]) -> [f32; ROWS] {
    kq_dot_scalar(
        block_ints,
        Q4KX8_BLOCK_BYTES,
        (OFF_D, Some(OFF_DMIN)),
        nb,
        group,
        act,
    )
}
