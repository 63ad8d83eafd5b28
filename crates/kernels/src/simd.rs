//! Run-time CPU feature detection and the few SIMD helpers the elementwise kernels share.
//!
//! Kernels are written once as plain Rust loops over fixed-width lane arrays (which the
//! compiler vectorises) and compiled twice: as-is, and inside a
//! `#[target_feature(enable = "avx2,fma")]` wrapper. The only hand-written intrinsics are
//! the vector `exp` (nothing vectorises `f32::exp`).

use std::sync::atomic::{AtomicU8, Ordering};

/// Cached result of the AVX2+FMA probe: 0 unknown, 1 absent, 2 present.
static AVX2_FMA: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU has AVX2 and FMA (checked once, at run time).
#[inline]
pub fn has_avx2_fma() -> bool {
    match AVX2_FMA.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let yes = detect();
            AVX2_FMA.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Whether this CPU also has AVX-512 F and VL (the upper 16 vector registers for 256-bit
/// code); false whenever [`has_avx2_fma`] is false.
#[inline]
pub fn has_avx512vl() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2_fma()
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Turns the SIMD paths of this crate's elementwise kernels off (`true`) or back to what
/// the CPU supports (`false`), for the whole process. For tests of the portable paths and
/// for benchmarks; not meant to be flipped while kernels run on other threads (a kernel
/// then may use either path, both correct).
pub fn force_scalar(yes: bool) {
    let v = if yes || !detect() { 1 } else { 2 };
    AVX2_FMA.store(v, Ordering::Relaxed);
}

#[cfg(target_arch = "x86_64")]
fn detect() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> bool {
    false
}

/// Vector `exp` for 8 lanes (AVX2+FMA): Cody–Waite range reduction to r ∈ [−ln2/2, ln2/2],
/// a degree-6 polynomial, and the exponent added to the bits. Relative error ≲ 2 ulp on
/// the normal range; inputs below −87.3 (where the result would be denormal) give 0,
/// above 88.7 give +inf, NaN gives NaN.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    /// `exp` of each lane.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_ps(x: __m256) -> __m256 {
        let log2e = _mm256_set1_ps(std::f32::consts::LOG2_E);
        let ln2_hi = _mm256_set1_ps(0.693_359_4);
        let ln2_lo = _mm256_set1_ps(-2.121_944_4e-4);
        let hi = _mm256_set1_ps(88.72283);
        let lo = _mm256_set1_ps(-87.33654);
        let too_small = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
        let too_big = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
        let xc = _mm256_max_ps(_mm256_min_ps(x, hi), lo);
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, log2e),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, ln2_hi, xc);
        let r = _mm256_fnmadd_ps(n, ln2_lo, r);
        // e^r ≈ 1 + r + r²/2 + … + r⁶/720 (Horner).
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 120.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 24.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0 / 6.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
        // Scale by 2^n. n ∈ [−126, 128]; 2^128 is split as 2^127·2 to stay finite.
        let ni = _mm256_cvtps_epi32(n);
        let half_n = _mm256_srai_epi32(ni, 1);
        let rest = _mm256_sub_epi32(ni, half_n);
        let bias = _mm256_set1_epi32(127);
        let s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half_n, bias), 23));
        let s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
        let y = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
        let y = _mm256_blendv_ps(y, _mm256_setzero_ps(), too_small);
        let y = _mm256_blendv_ps(y, _mm256_set1_ps(f32::INFINITY), too_big);
        // NaN in → NaN out (the clamps above would have turned it into a number).
        let is_nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
        _mm256_blendv_ps(y, x, is_nan)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn avx2_exp_matches_f64() {
        if !has_avx2_fma() {
            return;
        }
        let mut worst = 0f64;
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.0443).collect();
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 88.0, 88.7, -87.0, -87.3]);
        for chunk in xs.chunks(8) {
            let mut lane = [0f32; 8];
            lane[..chunk.len()].copy_from_slice(chunk);
            let mut out = [0f32; 8];
            // SAFETY: AVX2+FMA checked above; loads/stores are on 8-element arrays.
            unsafe {
                use std::arch::x86_64::*;
                let v = avx2::exp_ps(_mm256_loadu_ps(lane.as_ptr()));
                _mm256_storeu_ps(out.as_mut_ptr(), v);
            }
            for (x, y) in lane.iter().zip(out) {
                if *x < -87.33654 {
                    assert_eq!(y, 0.0, "denormal results flush to zero");
                    continue;
                }
                let want = (*x as f64).exp();
                let rel = ((y as f64) - want).abs() / want;
                worst = worst.max(rel);
            }
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        // Edges.
        let edge = [
            -100.0f32,
            -87.5,
            89.0,
            1000.0,
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            0.0,
        ];
        let mut out = [0f32; 8];
        // SAFETY: as above.
        unsafe {
            use std::arch::x86_64::*;
            _mm256_storeu_ps(
                out.as_mut_ptr(),
                avx2::exp_ps(_mm256_loadu_ps(edge.as_ptr())),
            );
        }
        assert_eq!(&out[..4], &[0.0, 0.0, f32::INFINITY, f32::INFINITY]);
        assert_eq!(out[4], 0.0);
        assert_eq!(out[5], f32::INFINITY);
        assert!(out[6].is_nan());
        assert_eq!(out[7], 1.0);
    }
}
