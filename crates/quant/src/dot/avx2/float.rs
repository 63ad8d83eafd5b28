//! AVX2 kernels of the float weights (F32/F16/BF16) × f32 activations.
#![allow(clippy::needless_range_loop)]

use super::*;

// ---------------------------------------------------------------------------------------
// Float weights × f32 activations: two 8-lane FMA accumulators per row over 16 values a
// step, then one 8-value step, then a scalar tail; the same order for every N.

trait FloatW {
    /// Bytes per weight value.
    const SIZE: usize;
    /// 8 weights at `p` as f32.
    unsafe fn load8(p: *const u8) -> __m256;
    /// One weight at `p` as f32.
    unsafe fn load1(p: *const u8) -> f32;
}

struct F32W;
impl FloatW for F32W {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f32_at(p)
    }
}

struct F16W;
impl FloatW for F16W {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(load128(p))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f16_at(p)
    }
}

struct BF16W;
impl FloatW for BF16W {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(p))))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        f32::from_bits((std::ptr::read_unaligned(p as *const u16) as u32) << 16)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows_float<W: FloatW, const N: usize>(
    n: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
) {
    let a: [*const f32; N] = std::array::from_fn(|r| *a.add(r) as *const f32);
    let z = _mm256_setzero_ps();
    let mut acc = [[z; 2]; N];
    let mut i = 0;
    while i + 16 <= n {
        let w0 = W::load8(w.add(i * W::SIZE));
        let w1 = W::load8(w.add((i + 8) * W::SIZE));
        for r in 0..N {
            acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a[r].add(i)), acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(a[r].add(i + 8)), acc[r][1]);
        }
        i += 16;
    }
    if i + 8 <= n {
        let w0 = W::load8(w.add(i * W::SIZE));
        for r in 0..N {
            acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(a[r].add(i)), acc[r][0]);
        }
        i += 8;
    }
    let mut tail = [0f32; N];
    while i < n {
        let wi = W::load1(w.add(i * W::SIZE));
        for r in 0..N {
            tail[r] += wi * std::ptr::read_unaligned(a[r].add(i));
        }
        i += 1;
    }
    for r in 0..N {
        *out.add(r) = hsum_ps(_mm256_add_ps(acc[r][0], acc[r][1])) + tail[r];
    }
}

pub(super) static F32_FNS: RowsFns = [
    rows_float::<F32W, 1>,
    rows_float::<F32W, 2>,
    rows_float::<F32W, 3>,
    rows_float::<F32W, 4>,
];
pub(super) static F16_FNS: RowsFns = [
    rows_float::<F16W, 1>,
    rows_float::<F16W, 2>,
    rows_float::<F16W, 3>,
    rows_float::<F16W, 4>,
];
pub(super) static BF16_FNS: RowsFns = [
    rows_float::<BF16W, 1>,
    rows_float::<BF16W, 2>,
    rows_float::<BF16W, 3>,
    rows_float::<BF16W, 4>,
];
