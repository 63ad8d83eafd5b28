//! Numerically stable softmax, optionally fused with the scale and additive mask of
//! attention scores (`softmax(x · scale + mask)`).

use crate::simd::has_avx2_fma;

/// In place: `x = softmax(x)`.
pub fn softmax_inplace(x: &mut [f32]) {
    softmax_scaled_masked_inplace(x, 1.0, None)
}

/// In place: `x = softmax(x · scale + mask)`. `mask` entries may be `−inf` (excluded
/// positions). A row in which every entry is `−inf` becomes all zeros (rather than NaN),
/// so a fully masked attention row contributes nothing. The exponentials are summed in
/// f64, in a fixed order.
///
/// # Panics
/// If `mask` is given and its length differs from `x`'s.
pub fn softmax_scaled_masked_inplace(x: &mut [f32], scale: f32, mask: Option<&[f32]>) {
    if let Some(m) = mask {
        assert_eq!(m.len(), x.len(), "softmax: mask and scores lengths differ");
    }
    if x.is_empty() {
        return;
    }
    // Pass 1: apply scale and mask, find the max.
    let mut max = f32::NEG_INFINITY;
    match mask {
        Some(m) => {
            for (v, mv) in x.iter_mut().zip(m) {
                *v = *v * scale + *mv;
                max = max.max(*v);
            }
        }
        None => {
            if scale != 1.0 {
                for v in x.iter_mut() {
                    *v *= scale;
                    max = max.max(*v);
                }
            } else {
                for v in x.iter() {
                    max = max.max(*v);
                }
            }
        }
    }
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    // Pass 2: exponentiate and sum.
    let sum = exp_sub_sum(x, max);
    // Pass 3: normalise.
    let inv = (1.0 / sum) as f32;
    crate::vector::scale_inplace(x, inv);
}

/// In place: `x = softmax([x, sink])` without the sink's own entry — an attention sink
/// (gpt-oss): a learned logit that joins the denominator, so the weights of `x` sum to
/// less than 1. Same order of operations as [`softmax_inplace`]; the sink's exponential is
/// added to the sum last. An empty `x` stays empty.
pub fn softmax_with_sink_inplace(x: &mut [f32], sink: f32) {
    if x.is_empty() {
        return;
    }
    let max = x.iter().fold(sink, |m, &v| m.max(v));
    if max == f32::NEG_INFINITY {
        x.fill(0.0);
        return;
    }
    let sum = exp_sub_sum(x, max) + ((sink - max).exp() as f64);
    let inv = (1.0 / sum) as f32;
    crate::vector::scale_inplace(x, inv);
}

/// `x[i] = exp(x[i] − max)` (`−inf` entries become 0), returning `Σ x[i]` in f32: the
/// attention kernel's block of scores. Each entry's exponential and the sum's order depend
/// only on the entry's index and `x.len()`, so a block gives the same bits in any call.
pub fn exp_sub_block(x: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && x.len() % 8 == 0 {
        // SAFETY: AVX2+FMA presence checked at run time.
        return unsafe { exp_sub_block_avx2(x, max) };
    }
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_block_avx2(x: &mut [f32], max: f32) -> f32 {
    use crate::simd::avx2::exp_ps;
    use std::arch::x86_64::*;
    let vmax = _mm256_set1_ps(max);
    let mut acc = _mm256_setzero_ps();
    let p = x.as_mut_ptr();
    for i in (0..x.len()).step_by(8) {
        // SAFETY: x.len() is a multiple of 8, so i + 8 ≤ x.len().
        unsafe {
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vmax));
            _mm256_storeu_ps(p.add(i), e);
            acc = _mm256_add_ps(acc, e);
        }
    }
    let mut lanes = [0f32; 8];
    // SAFETY: 8 floats into an array of 8.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
    ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
}

/// `x[i] = exp(x[i] − max)`, returning `Σ x[i]` (in f64).
fn exp_sub_sum(x: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA presence checked at run time.
        return unsafe { exp_sub_sum_avx2(x, max) };
    }
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_avx2(x: &mut [f32], max: f32) -> f64 {
    use crate::simd::avx2::exp_ps;
    use std::arch::x86_64::*;
    let n = x.len();
    let vmax = _mm256_set1_ps(max);
    let mut acc_lo = _mm256_setzero_pd();
    let mut acc_hi = _mm256_setzero_pd();
    let mut i = 0;
    let p = x.as_mut_ptr();
    while i + 8 <= n {
        // SAFETY: i + 8 <= n.
        let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vmax));
        _mm256_storeu_ps(p.add(i), e);
        acc_lo = _mm256_add_pd(acc_lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc_hi = _mm256_add_pd(acc_hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
        i += 8;
    }
    let mut lanes = [0f64; 4];
    _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(acc_lo, acc_hi));
    let mut sum = (lanes[0] + lanes[2]) + (lanes[1] + lanes[3]);
    while i < n {
        let e = (x[i] - max).exp();
        x[i] = e;
        sum += e as f64;
        i += 1;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn sink_joins_the_denominator() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        for n in [1usize, 3, 8, 17, 40] {
            for sink in [-3.0f32, 0.0, 2.5, 9.0] {
                let x: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0..4.0)).collect();
                let mut with = x.clone();
                with.push(sink);
                let want = reference(&with, 1.0, None);
                let mut got = x.clone();
                softmax_with_sink_inplace(&mut got, sink);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (*g as f64 - w).abs() < 1e-6,
                        "n {n} sink {sink}: {g} vs {w}"
                    );
                }
                let total: f32 = got.iter().sum();
                assert!(total < 1.0, "the sink takes a share");
            }
        }
        let mut big = vec![1.0f32; 4];
        softmax_with_sink_inplace(&mut big, f32::NEG_INFINITY);
        assert!(
            big.iter().all(|&p| (p - 0.25).abs() < 1e-7),
            "a -inf sink is no sink"
        );
    }

    fn reference(x: &[f32], scale: f64, mask: Option<&[f32]>) -> Vec<f64> {
        let y: Vec<f64> = x
            .iter()
            .enumerate()
            .map(|(i, v)| *v as f64 * scale + mask.map_or(0.0, |m| m[i] as f64))
            .collect();
        let max = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = y.iter().map(|v| (v - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn matches_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in [1usize, 3, 8, 17, 256, 1000] {
            for &(lo, hi) in &[(-5.0f32, 5.0f32), (-80.0, 80.0), (1000.0, 1010.0)] {
                let x: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
                let mut y = x.clone();
                softmax_inplace(&mut y);
                let want = reference(&x, 1.0, None);
                let total: f64 = y.iter().map(|v| *v as f64).sum();
                assert!((total - 1.0).abs() < 1e-5, "sum {total}");
                for (a, b) in y.iter().zip(&want) {
                    assert!((*a as f64 - b).abs() <= 1e-6 + 1e-5 * b, "{a} vs {b}");
                }
                // Scaled + masked (causal-style mask: last third excluded).
                let mask: Vec<f32> = (0..n)
                    .map(|i| {
                        if i >= n - n / 3 && i > 0 {
                            f32::NEG_INFINITY
                        } else {
                            rng.random_range(-1.0..0.0)
                        }
                    })
                    .collect();
                let mut y = x.clone();
                softmax_scaled_masked_inplace(&mut y, 0.125, Some(&mask));
                let want = reference(&x, 0.125, Some(&mask));
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    if mask[i] == f32::NEG_INFINITY {
                        assert_eq!(*a, 0.0);
                    }
                    assert!((*a as f64 - b).abs() <= 1e-6 + 1e-5 * b, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn fully_masked_row_is_zero() {
        let mut x = vec![1f32, 2.0, 3.0];
        softmax_scaled_masked_inplace(&mut x, 1.0, Some(&[f32::NEG_INFINITY; 3]));
        assert_eq!(x, vec![0.0; 3]);
        let mut e: Vec<f32> = vec![];
        softmax_inplace(&mut e);
    }
}
