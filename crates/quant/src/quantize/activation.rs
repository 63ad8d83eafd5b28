//! Activation quantizers: the f32 input row of a matrix multiplication → the int8 blocks
//! the block dot products consume (Q8_K for the k-quants and IQ4_XS, Q8_0 for Q4_0 / Q5_0 /
//! Q8_0 / IQ4_NL, Q8_1 for Q4_1 / Q5_1).
//!
//! These follow ggml's CPU backend **on x86** (the platform llama.cpp's reference logits
//! come from), which differs from the reference file quantizers in small ways:
//! - Q8_0 / Q8_1: d = max|x|/127, values x·(127/max|x|) rounded half-to-even
//!   (`_mm256_round_ps`), where the weight quantizer uses x·(1/d) rounded half-away;
//! - Q8_K: q = nearest_int(x·(−127/max)) where max is the signed value of largest
//!   magnitude (its first occurrence), d = 1/(−127/max) in f32, bsums = sums of 16.
//!
//! Each has a scalar definition (`*_scalar`) and an AVX2 version selected at run time
//! (`is_x86_feature_detected!`); the two are bit-identical for finite input (tested).

use super::{check_src, f32_to_half, nearest_int};
use crate::blocks::*;
use crate::error::QuantError;

// ---------------------------------------------------------------------------------------
// Scalar definitions.

/// One Q8_K block from 256 values (scalar definition).
pub fn quantize_block_q8_k_scalar(x: &[f32; QK_K]) -> BlockQ8K {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    let mut y = BlockQ8K {
        d: 0.0,
        qs: [0; QK_K],
        bsums: [0; QK_K / 16],
    };
    if amax == 0.0 {
        return y;
    }
    let iscale = -127.0 / max;
    for (q, &v) in y.qs.iter_mut().zip(x) {
        *q = nearest_int(iscale * v).min(127) as i8;
    }
    fill_bsums(&mut y);
    y.d = 1.0 / iscale;
    y
}

/// The sums of each group of 16 quants.
#[inline(always)]
fn fill_bsums(y: &mut BlockQ8K) {
    let (groups, _) = y.qs.as_chunks::<16>();
    for (s, g) in y.bsums.iter_mut().zip(groups) {
        *s = g.iter().map(|&q| q as i16).sum();
    }
}

/// max|x| of a block, and the matching d = max/127 and multiplier 127/max (0 for an
/// all-zero block), as ggml's x86 `quantize_row_q8_0` / `quantize_row_q8_1`.
#[inline(always)]
fn q8_scale(x: &[f32; QK]) -> (f32, f32) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    (d, id)
}

/// One Q8_0 activation block (scalar definition). |x·id| ≤ 127 (plus rounding), where
/// `nearest_int` equals round-half-even: the same rounding as `_mm256_round_ps`.
pub fn quantize_block_act_q8_0_scalar(x: &[f32; QK]) -> BlockQ8_0 {
    let (d, id) = q8_scale(x);
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(x) {
        *q = nearest_int(v * id).clamp(-128, 127) as i8;
    }
    BlockQ8_0 {
        d: f32_to_half(d),
        qs,
    }
}

/// One Q8_1 activation block (scalar definition): as Q8_0, plus s = f16(d·Σq).
pub fn quantize_block_act_q8_1_scalar(x: &[f32; QK]) -> BlockQ8_1 {
    let (d, id) = q8_scale(x);
    let mut qs = [0i8; QK];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        let r = nearest_int(v * id);
        sum += r;
        *q = r.clamp(-128, 127) as i8;
    }
    BlockQ8_1 {
        d: f32_to_half(d),
        s: f32_to_half(d * sum as f32),
        qs,
    }
}

// ---------------------------------------------------------------------------------------
// Row functions (dispatching).

macro_rules! act_row {
    ($($(#[$doc:meta])* $name:ident, $scalar_name:ident: $b:ty, $n:expr, $scalar:ident, $avx2:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(src: &[f32], dst: &mut [$b]) -> Result<(), QuantError> {
            check_src::<$b>(src.len(), dst.len())?;
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { avx2::$avx2(src, dst) };
                return Ok(());
            }
            let (xs, _) = src.as_chunks::<{ $n }>();
            for (y, x) in dst.iter_mut().zip(xs) {
                *y = $scalar(x);
            }
            Ok(())
        }

        /// The scalar version of
        #[doc = concat!("[`", stringify!($name), "`]")]
        /// (the definition the SIMD path is tested against).
        pub fn $scalar_name(src: &[f32], dst: &mut [$b]) -> Result<(), QuantError> {
            check_src::<$b>(src.len(), dst.len())?;
            let (xs, _) = src.as_chunks::<{ $n }>();
            for (y, x) in dst.iter_mut().zip(xs) {
                *y = $scalar(x);
            }
            Ok(())
        }
    )*};
}

act_row! {
    /// f32 row → Q8_K activation blocks (`src.len()` = 256 · `dst.len()`); AVX2 when available.
    quantize_act_q8_k, quantize_act_q8_k_scalar: BlockQ8K, QK_K, quantize_block_q8_k_scalar, q8_k_row;
    /// f32 row → Q8_0 activation blocks (`src.len()` = 32 · `dst.len()`); AVX2 when available.
    quantize_act_q8_0, quantize_act_q8_0_scalar: BlockQ8_0, QK, quantize_block_act_q8_0_scalar, q8_0_row;
    /// f32 row → Q8_1 activation blocks (`src.len()` = 32 · `dst.len()`); AVX2 when available.
    quantize_act_q8_1, quantize_act_q8_1_scalar: BlockQ8_1, QK, quantize_block_act_q8_1_scalar, q8_1_row;
}

/// Whether the activation quantizers run their AVX2 path on this CPU.
pub fn activation_simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The AVX2 paths, exposed so tests can compare them with the scalar ones directly.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Horizontal max of 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hmax(v: __m256) -> f32 {
        let m4 = _mm_max_ps(_mm256_extractf128_ps::<1>(v), _mm256_castps256_ps128(v));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        _mm_cvtss_f32(m4)
    }

    /// 32 values → (max|x|, the four f32 vectors).
    ///
    /// # Safety
    /// `x` must point to 32 readable f32.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load32(x: *const f32) -> (f32, [__m256; 4]) {
        // SAFETY: the caller guarantees 32 readable values; loads are unaligned.
        let v = unsafe {
            [
                _mm256_loadu_ps(x),
                _mm256_loadu_ps(x.add(8)),
                _mm256_loadu_ps(x.add(16)),
                _mm256_loadu_ps(x.add(24)),
            ]
        };
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, v[0]);
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[1]));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[2]));
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[3]));
        (hmax(m), v)
    }

    /// Rounds x·mul half-to-even into i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn round_mul(v: __m256, mul: __m256) -> __m256i {
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(v, mul),
        );
        _mm256_cvtps_epi32(r)
    }

    /// Packs 32 i32 (four vectors, in order) into 32 saturated i8, in order.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack32(i: [__m256i; 4]) -> __m256i {
        let a = _mm256_packs_epi32(i[0], i[1]);
        let b = _mm256_packs_epi32(i[2], i[3]);
        let p = _mm256_packs_epi16(a, b);
        // The packs work per 128-bit lane: restore the order.
        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
    }

    /// Sum of 8 i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum_i32(a: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        _mm_cvtsi128_si32(s)
    }

    /// One Q8_0 or Q8_1 block: (d, quants, Σq).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn q8_block(x: &[f32; QK], qs: &mut [i8; QK]) -> (f32, i32) {
        // SAFETY: `x` is 32 values.
        let (amax, v) = unsafe { load32(x.as_ptr()) };
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mul = _mm256_set1_ps(id);
        let i = [
            round_mul(v[0], mul),
            round_mul(v[1], mul),
            round_mul(v[2], mul),
            round_mul(v[3], mul),
        ];
        let sum = hsum_i32(_mm256_add_epi32(
            _mm256_add_epi32(i[0], i[1]),
            _mm256_add_epi32(i[2], i[3]),
        ));
        // SAFETY: `qs` is 32 writable bytes; the store is unaligned.
        unsafe { _mm256_storeu_si256(qs.as_mut_ptr() as *mut __m256i, pack32(i)) };
        (d, sum)
    }

    /// AVX2 body of [`quantize_act_q8_0`]; `dst.len()` blocks are written.
    ///
    /// # Safety
    /// The CPU must support AVX2, and `src.len() == 32 * dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn q8_0_row(src: &[f32], dst: &mut [BlockQ8_0]) {
        let (xs, _) = src.as_chunks::<QK>();
        for (y, x) in dst.iter_mut().zip(xs) {
            let (d, _) = q8_block(x, &mut y.qs);
            y.d = f32_to_half(d);
        }
    }

    /// AVX2 body of [`quantize_act_q8_1`].
    ///
    /// # Safety
    /// The CPU must support AVX2, and `src.len() == 32 * dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn q8_1_row(src: &[f32], dst: &mut [BlockQ8_1]) {
        let (xs, _) = src.as_chunks::<QK>();
        for (y, x) in dst.iter_mut().zip(xs) {
            let (d, sum) = q8_block(x, &mut y.qs);
            y.d = f32_to_half(d);
            y.s = f32_to_half(d * sum as f32);
        }
    }

    /// AVX2 body of [`quantize_act_q8_k`].
    ///
    /// # Safety
    /// The CPU must support AVX2, and `src.len() == 256 * dst.len()`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn q8_k_row(src: &[f32], dst: &mut [BlockQ8K]) {
        let (xs, _) = src.as_chunks::<QK_K>();
        for (y, x) in dst.iter_mut().zip(xs) {
            q8_k_block(x, y);
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn q8_k_block(x: &[f32; QK_K], y: &mut BlockQ8K) {
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_setzero_ps();
        for k in 0..QK_K / 8 {
            // SAFETY: k·8 + 8 ≤ 256.
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) };
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v));
        }
        let amax = hmax(m);
        if amax == 0.0 {
            y.d = 0.0;
            y.qs = [0; QK_K];
            y.bsums = [0; QK_K / 16];
            return;
        }
        // The scalar definition keeps the *first* value of largest magnitude (its sign
        // picks the sign of d): find it.
        let splat = _mm256_set1_ps(amax);
        let mut max = amax;
        for k in 0..QK_K / 8 {
            // SAFETY: k·8 + 8 ≤ 256.
            let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * k)) };
            let eq = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(
                _mm256_andnot_ps(sign, v),
                splat,
            ));
            if eq != 0 {
                max = x[8 * k + eq.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        let mul = _mm256_set1_ps(iscale);
        let cap = _mm256_set1_epi32(127);
        for g in 0..QK_K / 32 {
            let base = 32 * g;
            let mut i = [_mm256_setzero_si256(); 4];
            for (k, lane) in i.iter_mut().enumerate() {
                // SAFETY: base + 8k + 8 ≤ 256.
                let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(base + 8 * k)) };
                *lane = _mm256_min_epi32(round_mul(v, mul), cap);
            }
            // bsums: groups of 16 = two vectors each.
            y.bsums[2 * g] = hsum_i32(_mm256_add_epi32(i[0], i[1])) as i16;
            y.bsums[2 * g + 1] = hsum_i32(_mm256_add_epi32(i[2], i[3])) as i16;
            // SAFETY: 32 bytes at qs[base..base + 32]; unaligned store.
            unsafe { _mm256_storeu_si256(y.qs.as_mut_ptr().add(base) as *mut __m256i, pack32(i)) };
        }
        y.d = 1.0 / iscale;
    }
}
