//! Weight quantizers: ports of ggml's reference quantizers (`quantize_row_*_ref` in
//! ggml-quants.c), which is what `llama-quantize` runs without an importance matrix.
//!
//! Everything is evaluated in f32 in ggml's operation order (no fused multiply-add), so the
//! output matches llama-quantize's bytes; the crate's tests check that on real tensors.

use super::search::{make_qkx2_lanes, make_qx_lanes};
use super::{check_src, f32_to_half, nearest_int};
use crate::blocks::*;
use crate::dequant::scale_min_k4;
use crate::error::QuantError;

/// ggml's threshold below which a group counts as all zeros.
const GROUP_MAX_EPS: f32 = 1e-15;

// ---------------------------------------------------------------------------------------
// Legacy 32-value blocks.

/// One Q8_0 block, ggml's `quantize_row_q8_0_ref`: d = max|x|/127, q = round(x/d) with
/// halves rounded away from zero.
pub fn quantize_block_q8_0(x: &[f32; QK]) -> BlockQ8_0 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = round_half_away(v * id) as i8;
    }
    BlockQ8_0 {
        d: f32_to_half(d),
        qs,
    }
}

/// One Q4_0 block, ggml's `quantize_row_q4_0_ref`: d = (the value of largest magnitude)/−8,
/// q = min(15, trunc(x/d + 8.5)).
pub fn quantize_block_q4_0(x: &[f32; QK]) -> BlockQ4_0 {
    let d = signed_absmax(x) / -8.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; QK / 2];
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = x[j] * id;
        let x1 = x[j + QK / 2] * id;
        // Two separate f32 roundings (product, then sum), as ggml-base is compiled.
        let q0 = ((x0 + 8.5) as i8).min(15) as u8;
        let q1 = ((x1 + 8.5) as i8).min(15) as u8;
        *q = q0 | (q1 << 4);
    }
    BlockQ4_0 {
        d: f32_to_half(d),
        qs,
    }
}

/// One Q5_0 block, ggml's `quantize_row_q5_0_ref`: d = (the value of largest
/// magnitude)/−16, q = min(31, trunc(x/d + 16.5)); the low 4 bits of q in `qs` (values j
/// and j + 16 share a byte), the 5th bits in `qh` (bit j for value j).
pub fn quantize_block_q5_0(x: &[f32; QK]) -> BlockQ5_0 {
    let d = signed_absmax(x) / -16.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0u8; QK / 2];
    let mut qh = 0u32;
    for (j, q) in qs.iter_mut().enumerate() {
        let x0 = x[j] * id;
        let x1 = x[j + QK / 2] * id;
        // Two separate f32 roundings (product, then sum), as ggml-base is compiled.
        let q0 = ((x0 + 16.5) as i8).min(31) as u8;
        let q1 = ((x1 + 16.5) as i8).min(31) as u8;
        *q = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
        qh |= u32::from(q0 >> 4) << j;
        qh |= u32::from(q1 >> 4) << (j + QK / 2);
    }
    BlockQ5_0 {
        d: f32_to_half(d),
        qh: qh.to_le_bytes(),
        qs,
    }
}

/// The value of largest magnitude, sign kept (the first one on ties), as ggml's legacy
/// quantizers pick it: the scale maps it to the lowest level.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// C's `roundf` (halves away from zero) for |x| < 2^31, inline: on baseline x86-64
/// `f32::round` is a libm call, which made Q8_0 quantization call-bound.
#[inline(always)]
fn round_half_away(x: f32) -> i32 {
    let t = x as i32; // truncates toward zero
    let frac = x - t as f32; // exact for |x| < 2^23, and 0 beyond
    if frac >= 0.5 {
        t + 1
    } else if frac <= -0.5 {
        t - 1
    } else {
        t
    }
}

// ---------------------------------------------------------------------------------------
// k-quants.

/// Packs 8 six-bit scales and mins into Q4_K/Q5_K's 12 bytes (inverse of [`scale_min_k4`]).
fn pack_scales_mins_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut s = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// The shared part of Q4_K and Q5_K: per sub-block of 32 an asymmetric scale search
/// (weights av|x| + |x|), then 6-bit quantization of the 8 scales and 8 mins against their
/// maxima, then the values re-quantized against the final (f16-rounded) scales.
/// Returns d, dmin, the packed scales and the levels (0..=nmax).
fn quantize_k_scaled(
    x: &[f32; QK_K],
    nmax: i32,
    rmin: f32,
    nstep: i32,
) -> (Half, Half, [u8; K_SCALE_SIZE], [u8; QK_K]) {
    let xs: &[[f32; 32]; 8] = bytemuck::cast_ref(x);
    let mut weights = [[0.0f32; 32]; 8];
    for (w, xb) in weights.iter_mut().zip(xs) {
        let sum_x2 = xb.iter().fold(0.0f32, |s, v| s + v * v);
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, v) in w.iter_mut().zip(xb) {
            *w = av_x + v.abs();
        }
    }
    let mut levels = [[0u8; 32]; 8];
    let (scales, mins) = make_qkx2_lanes(nmax, xs, &weights, &mut levels, rmin, 0.1, nstep);
    let mut l: [u8; QK_K] = bytemuck::cast(levels);
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int's int into a uint8_t (wrapping), then clamps to 63.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scales_mins_k4(&ls, &lm);
    let d = f32_to_half(max_scale / 63.0);
    let dmin = f32_to_half(max_min / 63.0);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &packed);
        let dj = d.to_f32() * sc as f32;
        if dj == 0.0 {
            continue; // keep the search's levels, as ggml does
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dj).clamp(0, nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

/// One Q4_K super-block, ggml's `quantize_row_q4_K_ref`.
pub fn quantize_block_q4_k(x: &[f32; QK_K]) -> BlockQ4K {
    let (d, dmin, scales, l) = quantize_k_scaled(x, 15, -1.0, 20);
    let mut qs = [0u8; QK_K / 2];
    for k in 0..4 {
        for i in 0..32 {
            qs[32 * k + i] = l[64 * k + i] | (l[64 * k + i + 32] << 4);
        }
    }
    BlockQ4K {
        d,
        dmin,
        scales,
        qs,
    }
}

/// One Q5_K super-block, ggml's `quantize_row_q5_K_ref`.
pub fn quantize_block_q5_k(x: &[f32; QK_K]) -> BlockQ5K {
    let (d, dmin, scales, l) = quantize_k_scaled(x, 31, -0.5, 15);
    let mut qs = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 8];
    for k in 0..4 {
        let (m1, m2) = (1u8 << (2 * k), 2u8 << (2 * k));
        for j in 0..32 {
            let mut l1 = l[64 * k + j];
            if l1 > 15 {
                l1 -= 16;
                qh[j] |= m1;
            }
            let mut l2 = l[64 * k + j + 32];
            if l2 > 15 {
                l2 -= 16;
                qh[j] |= m2;
            }
            qs[32 * k + j] = l1 | (l2 << 4);
        }
    }
    BlockQ5K {
        d,
        dmin,
        scales,
        qh,
        qs,
    }
}

/// One Q6_K super-block, ggml's `quantize_row_q6_K_ref`: a symmetric search per
/// sub-block of 16, 8-bit scales against the largest, values re-quantized.
pub fn quantize_block_q6_k(x: &[f32; QK_K]) -> BlockQ6K {
    let xs: &[[f32; 16]; 16] = bytemuck::cast_ref(x);
    let mut levels = [[0i8; 16]; 16];
    let scales = make_qx_lanes(32, xs, &mut levels);
    let mut l: [i8; QK_K] = bytemuck::cast(levels);
    let mut max_scale = 0.0f32;
    let mut max_abs_scale = 0.0f32;
    for &scale in &scales {
        if scale.abs() > max_abs_scale {
            max_abs_scale = scale.abs();
            max_scale = scale;
        }
    }
    if max_abs_scale < GROUP_MAX_EPS {
        return BlockQ6K::zeroed();
    }
    let iscale = -128.0 / max_scale;
    let d = f32_to_half(1.0 / iscale);
    let mut sc = [0i8; 16];
    for ib in 0..16 {
        sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
    }
    for j in 0..16 {
        let dj = d.to_f32() * sc[j] as f32;
        if dj == 0.0 {
            continue;
        }
        for ii in 0..16 {
            l[16 * j + ii] = (nearest_int(x[16 * j + ii] / dj).clamp(-32, 31) + 32) as i8;
        }
    }
    let mut ql = [0u8; QK_K / 2];
    let mut qh = [0u8; QK_K / 4];
    let l: [u8; QK_K] = bytemuck::cast(l);
    for half in 0..2 {
        let (j, ql, qh) = (
            128 * half,
            &mut ql[64 * half..64 * half + 64],
            &mut qh[32 * half..32 * half + 32],
        );
        for i in 0..32 {
            let q1 = l[j + i] & 0xF;
            let q2 = l[j + i + 32] & 0xF;
            let q3 = l[j + i + 64] & 0xF;
            let q4 = l[j + i + 96] & 0xF;
            ql[i] = q1 | (q3 << 4);
            ql[i + 32] = q2 | (q4 << 4);
            qh[i] = (l[j + i] >> 4)
                | ((l[j + i + 32] >> 4) << 2)
                | ((l[j + i + 64] >> 4) << 4)
                | ((l[j + i + 96] >> 4) << 6);
        }
    }
    BlockQ6K {
        ql,
        qh,
        scales: sc,
        d,
    }
}

use bytemuck::Zeroable;

// ---------------------------------------------------------------------------------------
// Slice quantizers.

macro_rules! slice_quantizer {
    ($($(#[$doc:meta])* $name:ident: $b:ty, $n:expr, $block_fn:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(src: &[f32], dst: &mut [$b]) -> Result<(), QuantError> {
            check_src::<$b>(src.len(), dst.len())?;
            let (xs, _) = src.as_chunks::<{ $n }>();
            for (y, x) in dst.iter_mut().zip(xs) {
                *y = $block_fn(x);
            }
            Ok(())
        }
    )*};
}

slice_quantizer! {
    /// f32 → Q8_0 weight blocks (ggml reference; `src.len()` = 32 · `dst.len()`).
    quantize_q8_0: BlockQ8_0, QK, quantize_block_q8_0;
    /// f32 → Q4_0 weight blocks (ggml reference; `src.len()` = 32 · `dst.len()`).
    quantize_q4_0: BlockQ4_0, QK, quantize_block_q4_0;
    /// f32 → Q5_0 weight blocks (ggml reference; `src.len()` = 32 · `dst.len()`).
    quantize_q5_0: BlockQ5_0, QK, quantize_block_q5_0;
    /// f32 → Q4_K weight blocks (ggml reference; `src.len()` = 256 · `dst.len()`).
    quantize_q4_k: BlockQ4K, QK_K, quantize_block_q4_k;
    /// f32 → Q5_K weight blocks (ggml reference; `src.len()` = 256 · `dst.len()`).
    quantize_q5_k: BlockQ5K, QK_K, quantize_block_q5_k;
    /// f32 → Q6_K weight blocks (ggml reference; `src.len()` = 256 · `dst.len()`).
    quantize_q6_k: BlockQ6K, QK_K, quantize_block_q6_k;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_half_away_is_roundf() {
        let mut x = -300.0f32;
        while x < 300.0 {
            for v in [
                x,
                x + 0.5,
                x - 0.5,
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits().wrapping_sub(1)),
            ] {
                assert_eq!(round_half_away(v), v.round() as i32, "{v}");
            }
            x += 0.125;
        }
        assert_eq!(round_half_away(0.49999997), 0);
        assert_eq!(round_half_away(-0.49999997), 0);
        assert_eq!(round_half_away(8388609.0), 8388609);
    }
}
