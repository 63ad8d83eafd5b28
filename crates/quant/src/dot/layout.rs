//! Bit-unpacking helpers shared by the scalar and SIMD kernels: the packed k-quant scale
//! formats and the byte layout of a Q8_K block (read from raw bytes, since activation rows
//! come as unaligned `&[u8]` and `BlockQ8K` needs alignment 4).

/// Byte offset of `qs` in a Q8_K block (after the f32 `d`).
pub(crate) const Q8K_QS: usize = 4;
/// Byte offset of `bsums` in a Q8_K block.
pub(crate) const Q8K_BSUMS: usize = 4 + 256;
/// Size of a Q8_K block.
pub(crate) const Q8K_SIZE: usize = 292;

/// Q4_K / Q5_K: the 12 packed bytes → 8 six-bit scales (bytes 0..8) and 8 six-bit mins
/// (bytes 8..16). Done with whole-u32 masks (4 sub-blocks per operation), which is both the
/// cheapest form and the one the SIMD kernels can load as a vector.
#[inline(always)]
pub(crate) fn k4_scales_mins(packed: &[u8; 12]) -> [u8; 16] {
    let [sc, m] = k4_scales_mins_u64(packed);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&sc.to_le_bytes());
    out[8..].copy_from_slice(&m.to_le_bytes());
    out
}

/// [`k4_scales_mins`] as two little-endian u64 (scales, mins), computed in registers so the
/// SIMD kernels move them into vectors with one `vmovq` each.
#[inline(always)]
pub(crate) fn k4_scales_mins_u64(packed: &[u8; 12]) -> [u64; 2] {
    const M6: u32 = 0x3f3f_3f3f;
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let u0 = u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]);
    let u1 = u32::from_le_bytes([packed[4], packed[5], packed[6], packed[7]]);
    let u2 = u32::from_le_bytes([packed[8], packed[9], packed[10], packed[11]]);
    // scales 0..4: low 6 bits of bytes 0..4; scales 4..8: low nibble of bytes 8..12 with
    // the top 2 bits of bytes 0..4 above it. mins likewise from bytes 4..8 / high nibbles.
    let sc_lo = u0 & M6;
    let sc_hi = (u2 & M4) | (((u0 >> 6) & M2) << 4);
    let m_lo = u1 & M6;
    let m_hi = ((u2 >> 4) & M4) | (((u1 >> 6) & M2) << 4);
    [
        sc_lo as u64 | (sc_hi as u64) << 32,
        m_lo as u64 | (m_hi as u64) << 32,
    ]
}

/// Q3_K: the 12 packed bytes → 16 six-bit scales as stored (0..64; the signed scale is
/// `s − 32`). Low 4 bits come from the nibbles of bytes 0..8, high 2 bits from bytes 8..12.
#[inline(always)]
pub(crate) fn q3k_scales(packed: &[u8; 12]) -> [u8; 16] {
    let [lo, hi] = q3k_scales_u64(packed);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&lo.to_le_bytes());
    out[8..].copy_from_slice(&hi.to_le_bytes());
    out
}

/// [`q3k_scales`] as two little-endian u64 (scales 0..8, 8..16), computed in registers.
#[inline(always)]
pub(crate) fn q3k_scales_u64(packed: &[u8; 12]) -> [u64; 2] {
    const M4: u32 = 0x0f0f_0f0f;
    const M2: u32 = 0x0303_0303;
    let a0 = u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]);
    let a1 = u32::from_le_bytes([packed[4], packed[5], packed[6], packed[7]]);
    let t = u32::from_le_bytes([packed[8], packed[9], packed[10], packed[11]]);
    let s0 = (a0 & M4) | ((t & M2) << 4);
    let s1 = (a1 & M4) | (((t >> 2) & M2) << 4);
    let s2 = ((a0 >> 4) & M4) | (((t >> 4) & M2) << 4);
    let s3 = ((a1 >> 4) & M4) | (((t >> 6) & M2) << 4);
    [s0 as u64 | (s1 as u64) << 32, s2 as u64 | (s3 as u64) << 32]
}

/// IQ4_XS: the 8 six-bit sub-block scales as stored (0..64; the signed scale is `s − 32`),
/// packed one per byte in a little-endian u64. Pure register arithmetic (no byte stores),
/// so the SIMD kernel can move it straight into a vector without a store-forwarding stall.
#[inline(always)]
pub(crate) fn iq4xs_scales_u64(scales_h: [u8; 2], scales_l: &[u8; 4]) -> u64 {
    // Low 4 bits: nibble j of scales_l → byte j.
    let mut lo = u32::from_le_bytes(*scales_l) as u64;
    lo = (lo | (lo << 16)) & 0x0000_FFFF_0000_FFFF;
    lo = (lo | (lo << 8)) & 0x00FF_00FF_00FF_00FF;
    lo = (lo | (lo << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    // High 2 bits: 2-bit field j of scales_h → byte j.
    let mut hi = u16::from_le_bytes(scales_h) as u64;
    hi = (hi | (hi << 24)) & 0x0000_00FF_0000_00FF;
    hi = (hi | (hi << 12)) & 0x000F_000F_000F_000F;
    hi = (hi | (hi << 6)) & 0x0303_0303_0303_0303;
    lo | (hi << 4)
}

/// [`iq4xs_scales_u64`] as bytes.
#[inline(always)]
pub(crate) fn iq4xs_scales(scales_h: [u8; 2], scales_l: &[u8; 4]) -> [u8; 8] {
    iq4xs_scales_u64(scales_h, scales_l).to_le_bytes()
}

/// A Q8_K block viewed in place in a byte row.
pub(crate) struct Q8KView<'a> {
    pub d: f32,
    pub qs: &'a [i8; 256],
    pub bsums: [i16; 16],
}

impl<'a> Q8KView<'a> {
    /// `b` must be exactly one block ([`Q8K_SIZE`] bytes).
    #[inline(always)]
    pub(crate) fn new(b: &'a [u8]) -> Q8KView<'a> {
        let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let qs: &[i8] = bytemuck::cast_slice(&b[Q8K_QS..Q8K_BSUMS]);
        let qs: &[i8; 256] = qs.try_into().expect("Q8_K qs is 256 bytes");
        let mut bsums = [0i16; 16];
        for (j, s) in bsums.iter_mut().enumerate() {
            let o = Q8K_BSUMS + 2 * j;
            *s = i16::from_le_bytes([b[o], b[o + 1]]);
        }
        Q8KView { d, qs, bsums }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The u32-mask decode against the per-byte definition (ggml's `get_scale_min_k4`).
    #[test]
    fn k4_scales_match_bytewise_definition() {
        let mut x = 0x1234_5678u32;
        for _ in 0..1000 {
            let mut p = [0u8; 12];
            for b in p.iter_mut() {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (x >> 24) as u8;
            }
            let got = k4_scales_mins(&p);
            for j in 0..8 {
                let (sc, m) = if j < 4 {
                    (p[j] & 63, p[j + 4] & 63)
                } else {
                    (
                        (p[j + 4] & 0xF) | ((p[j - 4] >> 6) << 4),
                        (p[j + 4] >> 4) | ((p[j] >> 6) << 4),
                    )
                };
                assert_eq!((got[j], got[8 + j]), (sc, m), "sub-block {j} of {p:?}");
            }
        }
    }

    /// The IQ4_XS bit spreading against the per-sub-block definition (ggml's
    /// `dequantize_row_iq4_xs`).
    #[test]
    fn iq4xs_scales_match_definition() {
        let mut x = 0x2468_ace0u32;
        for _ in 0..1000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let l = x.to_le_bytes();
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let h = [(x >> 8) as u8, (x >> 24) as u8];
            let got = iq4xs_scales(h, &l);
            let hh = u16::from_le_bytes(h);
            for ib in 0..8 {
                let want =
                    ((l[ib / 2] >> (4 * (ib % 2))) & 0xf) | ((((hh >> (2 * ib)) & 3) as u8) << 4);
                assert_eq!(got[ib], want, "sub-block {ib} of {l:?} {h:?}");
            }
        }
    }

    /// The Q3_K decode against the per-value definition (ggml's dequantize_row_q3_K layout).
    #[test]
    fn q3k_scales_match_per_value_definition() {
        let mut x = 0x9876_5432u32;
        for _ in 0..1000 {
            let mut p = [0u8; 12];
            for b in p.iter_mut() {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                *b = (x >> 24) as u8;
            }
            let got = q3k_scales(&p);
            for j in 0..16 {
                let lo = if j < 8 { p[j] & 0xf } else { p[j - 8] >> 4 };
                let hi = (p[8 + j % 4] >> (2 * (j / 4))) & 3;
                assert_eq!(got[j], lo | (hi << 4), "scale {j} of {p:?}");
            }
        }
    }
}
