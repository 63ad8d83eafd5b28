//! RMSNorm: `y = x / sqrt(mean(x²) + eps) · w`, as llama.cpp's `ggml_rms_norm` followed by
//! the weight multiply (the sum of squares is accumulated in f64, as ggml does).

use crate::simd::has_avx2_fma;

/// `out = x / sqrt(mean(x²) + eps) · weight`.
///
/// # Panics
/// If `x`, `weight` and `out` differ in length (a shape bug in the caller).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    assert_eq!(
        x.len(),
        weight.len(),
        "rms_norm: x and weight lengths differ"
    );
    assert_eq!(x.len(), out.len(), "rms_norm: x and out lengths differ");
    let scale = rms_scale(x, eps);
    mul_scaled(x, weight, scale, out);
}

/// In-place [`rms_norm`].
pub fn rms_norm_inplace(x: &mut [f32], weight: &[f32], eps: f32) {
    assert_eq!(
        x.len(),
        weight.len(),
        "rms_norm: x and weight lengths differ"
    );
    let scale = rms_scale(x, eps);
    dispatch_inplace(x, weight, scale);
}

/// RMSNorm without a weight (`w = 1`), in place; used e.g. on sub-vectors that are
/// normalised before a weight is applied elsewhere.
pub fn rms_norm_unweighted_inplace(x: &mut [f32], eps: f32) {
    let scale = rms_scale(x, eps);
    crate::vector::scale_inplace(x, scale);
}

/// `1 / sqrt(mean(x²) + eps)` (with the mean taken in f64, the reciprocal in f32 as ggml).
pub fn rms_scale(x: &[f32], eps: f32) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    let ss = sum_squares_f64(x);
    let mean = (ss / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

fn sum_squares_f64(x: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA presence checked at run time.
        return unsafe { sum_squares_avx2(x) };
    }
    sum_squares_body(x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_squares_avx2(x: &[f32]) -> f64 {
    sum_squares_body(x)
}

/// Eight independent f64 accumulators (vectorisable; fixed order, so deterministic).
#[inline(always)]
fn sum_squares_body(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for l in 0..8 {
            let v = c[l] as f64;
            acc[l] += v * v;
        }
    }
    let mut s = 0f64;
    for v in chunks.remainder() {
        s += (*v as f64) * (*v as f64);
    }
    let a = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    a + s
}

fn mul_scaled(x: &[f32], w: &[f32], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA presence checked at run time.
        return unsafe { mul_scaled_avx2(x, w, scale, out) };
    }
    mul_scaled_body(x, w, scale, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mul_scaled_avx2(x: &[f32], w: &[f32], scale: f32, out: &mut [f32]) {
    mul_scaled_body(x, w, scale, out)
}

#[inline(always)]
fn mul_scaled_body(x: &[f32], w: &[f32], scale: f32, out: &mut [f32]) {
    for ((o, a), b) in out.iter_mut().zip(x).zip(w) {
        *o = (*a * scale) * *b;
    }
}

fn dispatch_inplace(x: &mut [f32], w: &[f32], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA presence checked at run time.
        return unsafe { inplace_avx2(x, w, scale) };
    }
    inplace_body(x, w, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn inplace_avx2(x: &mut [f32], w: &[f32], scale: f32) {
    inplace_body(x, w, scale)
}

#[inline(always)]
fn inplace_body(x: &mut [f32], w: &[f32], scale: f32) {
    for (a, b) in x.iter_mut().zip(w) {
        *a = (*a * scale) * *b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn reference(x: &[f32], w: &[f32], eps: f64) -> Vec<f64> {
        let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        let s = 1.0 / (ms + eps).sqrt();
        x.iter()
            .zip(w)
            .map(|(a, b)| *a as f64 * s * *b as f64)
            .collect()
    }

    #[test]
    fn matches_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for n in [1usize, 7, 8, 64, 100, 2048, 7168] {
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0..2.0)).collect();
            for eps in [1e-6f32, 1e-5, 0.1] {
                let want = reference(&x, &w, eps as f64);
                let mut out = vec![0f32; n];
                rms_norm(&x, &w, eps, &mut out);
                let mut inplace = x.clone();
                rms_norm_inplace(&mut inplace, &w, eps);
                assert_eq!(out, inplace);
                for (i, (o, r)) in out.iter().zip(&want).enumerate() {
                    assert!(
                        (*o as f64 - r).abs() <= 1e-5 * (1.0 + r.abs()),
                        "n={n} i={i}: {o} vs {r}"
                    );
                }
                let mut unw = x.clone();
                rms_norm_unweighted_inplace(&mut unw, eps);
                let ones = vec![1f32; n];
                let want1 = reference(&x, &ones, eps as f64);
                for (o, r) in unw.iter().zip(&want1) {
                    assert!((*o as f64 - r).abs() <= 1e-5 * (1.0 + r.abs()));
                }
            }
        }
    }

    #[test]
    fn zero_input_gives_zero() {
        let x = vec![0f32; 16];
        let w = vec![1f32; 16];
        let mut out = vec![1f32; 16];
        rms_norm(&x, &w, 1e-6, &mut out);
        assert!(out.iter().all(|v| *v == 0.0));
    }
}
