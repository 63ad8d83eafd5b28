//! Activations: SiLU and the gated SiLU-GLU of SwiGLU feed-forward blocks, and gpt-oss's
//! clamped variant ([`Glu::SwigluOai`]).

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

/// The gated activation of an FFN: how `gate` and `up` combine into the hidden values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Glu {
    /// `silu(gate) · up` (SwiGLU).
    Silu,
    /// gpt-oss: `g · σ(alpha · g) · (u + 1)` with `g = min(gate, limit)` and
    /// `u = clamp(up, −limit, limit)` (HF `GptOssExperts._apply_gate`, ggml `swiglu_oai`).
    SwigluOai { alpha: f32, limit: f32 },
}

impl Glu {
    /// gpt-oss's constants (alpha 1.702, limit 7; the GGUF files carry no key for them).
    pub const GPT_OSS: Glu = Glu::SwigluOai {
        alpha: 1.702,
        limit: 7.0,
    };
}

/// In place: `gate[i] = act(gate[i], up[i])`.
pub fn glu_inplace(act: Glu, gate: &mut [f32], up: &[f32]) {
    match act {
        Glu::Silu => silu_glu_inplace(gate, up),
        Glu::SwigluOai { alpha, limit } => swiglu_oai_inplace(gate, up, alpha, limit),
    }
}

/// One value of [`Glu::SwigluOai`].
#[inline]
pub fn swiglu_oai(gate: f32, up: f32, alpha: f32, limit: f32) -> f32 {
    let g = gate.min(limit);
    let u = up.clamp(-limit, limit);
    g / (1.0 + (-alpha * g).exp()) * (u + 1.0)
}

/// In place: `gate[i] = swiglu_oai(gate[i], up[i])`.
pub fn swiglu_oai_inplace(gate: &mut [f32], up: &[f32], alpha: f32, limit: f32) {
    assert_eq!(
        gate.len(),
        up.len(),
        "swiglu_oai: gate and up lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2+FMA presence checked at run time; the lengths are equal (asserted).
        unsafe { swiglu_oai_avx2(gate, up, alpha, limit) };
        return;
    }
    for (g, u) in gate.iter_mut().zip(up) {
        *g = swiglu_oai(*g, *u, alpha, limit);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn swiglu_oai_avx2(gate: &mut [f32], up: &[f32], alpha: f32, limit: f32) {
    use crate::simd::avx2::exp_ps;
    use std::arch::x86_64::*;
    let n = gate.len();
    let one = _mm256_set1_ps(1.0);
    let (va, hi, lo) = (
        _mm256_set1_ps(-alpha),
        _mm256_set1_ps(limit),
        _mm256_set1_ps(-limit),
    );
    let p = gate.as_mut_ptr();
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n = the length of both slices.
        let g = _mm256_min_ps(_mm256_loadu_ps(p.add(i)), hi);
        let u = _mm256_max_ps(_mm256_min_ps(_mm256_loadu_ps(up.as_ptr().add(i)), hi), lo);
        let e = exp_ps(_mm256_mul_ps(va, g));
        let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
        _mm256_storeu_ps(p.add(i), _mm256_mul_ps(s, _mm256_add_ps(u, one)));
        i += 8;
    }
    while i < n {
        gate[i] = swiglu_oai(gate[i], up[i], alpha, limit);
        i += 1;
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
    fn swiglu_oai_matches_f64() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let (alpha, limit) = (1.702f64, 7.0f64);
        for n in [1usize, 7, 8, 9, 128, 2881] {
            let g: Vec<f32> = (0..n).map(|_| rng.random_range(-30.0..30.0)).collect();
            let u: Vec<f32> = (0..n).map(|_| rng.random_range(-12.0..12.0)).collect();
            let mut got = g.clone();
            glu_inplace(Glu::GPT_OSS, &mut got, &u);
            for i in 0..n {
                let x = (g[i] as f64).min(limit);
                let y = (u[i] as f64).clamp(-limit, limit);
                let want = x / (1.0 + (-alpha * x).exp()) * (y + 1.0);
                assert!(
                    (got[i] as f64 - want).abs() <= 4e-6 * (1.0 + want.abs()),
                    "{i}: g {} u {}: {} vs {want}",
                    g[i],
                    u[i],
                    got[i]
                );
            }
        }
        // The clamps: a gate above the limit counts as the limit, an up beyond ±limit too.
        let mut g = [100.0f32, 7.0, -100.0];
        glu_inplace(Glu::GPT_OSS, &mut g, &[50.0, 7.0, 0.0]);
        let top = 7.0 / (1.0 + (-1.702f32 * 7.0).exp()) * 8.0;
        assert!(
            (g[0] - top).abs() < 1e-5 && (g[1] - top).abs() < 1e-5,
            "{g:?}"
        );
        assert!(g[2].abs() < 1e-30, "{g:?}");
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
