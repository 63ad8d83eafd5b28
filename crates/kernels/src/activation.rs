//! Activations: SiLU and the gated SiLU-GLU of SwiGLU feed-forward blocks.

use crate::simd::has_avx2_fma;

/// `silu(x) = x · σ(x) = x / (1 + e^(−x))`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `out[i] = silu(gate[i]) · up[i]` (SwiGLU).
///
/// # Panics
/// If the three slices differ in length.
pub fn silu_glu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    assert_eq!(gate.len(), up.len(), "silu_glu: gate and up lengths differ");
    assert_eq!(
        gate.len(),
        out.len(),
        "silu_glu: gate and out lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA presence checked at run time.
        unsafe { silu_glu_avx2(gate, up, out) };
        return;
    }
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(*g) * *u;
    }
}

/// In place: `gate[i] = silu(gate[i]) · up[i]`.
pub fn silu_glu_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_glu: gate and up lengths differ");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        let n = gate.len();
        let p = gate.as_mut_ptr();
        // SAFETY: AVX2+FMA checked; the kernel reads each gate element before writing the
        // same index, so aliasing `gate` as input and output is fine element-wise.
        unsafe {
            silu_glu_avx2(
                std::slice::from_raw_parts(p, n),
                up,
                std::slice::from_raw_parts_mut(p, n),
            )
        };
        return;
    }
    for (g, u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * *u;
    }
}

/// In place: `x[i] = silu(x[i])`.
pub fn silu_inplace(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = silu(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_glu_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    use crate::simd::avx2::exp_ps;
    use std::arch::x86_64::*;
    let n = gate.len();
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = len of all three slices.
        let g = _mm256_loadu_ps(gate.as_ptr().add(i));
        let u = _mm256_loadu_ps(up.as_ptr().add(i));
        let e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
        let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(s, u));
        i += 8;
    }
    while i < n {
        out[i] = silu(gate[i]) * up[i];
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn silu_glu_matches_f64() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        for n in [1usize, 5, 8, 9, 1408, 1411] {
            let g: Vec<f32> = (0..n).map(|_| rng.random_range(-20.0..20.0)).collect();
            let u: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
            let mut out = vec![0f32; n];
            silu_glu(&g, &u, &mut out);
            let mut inplace = g.clone();
            silu_glu_inplace(&mut inplace, &u);
            assert_eq!(out, inplace);
            for i in 0..n {
                let x = g[i] as f64;
                let want = x / (1.0 + (-x).exp()) * u[i] as f64;
                let got = out[i] as f64;
                assert!(
                    (got - want).abs() <= 2e-6 * (1.0 + want.abs()),
                    "{i}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn silu_extremes() {
        let g = [-1000f32, -100.0, 0.0, 100.0, 1000.0, -90.0, -88.0, 50.0];
        let u = [1f32; 8];
        let mut out = [0f32; 8];
        silu_glu(&g, &u, &mut out);
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1].abs(), 0.0);
        assert_eq!(out[2], 0.0);
        assert_eq!(out[3], 100.0);
        assert_eq!(out[4], 1000.0);
        assert!(out.iter().all(|v| v.is_finite()));
        let mut s = g;
        silu_inplace(&mut s);
        assert_eq!(s[3], 100.0);
    }
}
