//! Rotary position embeddings with YaRN scaling, computed exactly as llama.cpp's
//! `ggml_rope_ext` (CPU backend): the same f32 operations in the same order, so that
//! angles match bit-for-bit up to libm's `powf`/`sinf`/`cosf`.
//!
//! Two layouts:
//! - [`RopeMode::Norm`] rotates adjacent pairs `(x0,x1), (x2,x3), …` (GPT-J style; what
//!   llama.cpp calls NORM, used by Llama and DeepSeek2 GGUFs);
//! - [`RopeMode::Neox`] rotates pairs `(x_i, x_{i+d/2})` (GPT-NeoX style; Qwen).
//!
//! Pair `j` (`i0 = 2j`) at position `p` has `θ_extrap = p · base^(−2j/n_dims) / ff_j`
//! (accumulated as repeated f32 products of `base^(−2/n_dims)`, like ggml),
//! `θ_interp = freq_scale · θ_extrap`, and with `ext_factor ≠ 0` the YaRN mix
//! `θ = θ_interp·(1 − r) + θ_extrap·r`, `r = ramp(j)·ext_factor`,
//! `ramp(j) = 1 − clamp((j − lo)/max(0.001, hi − lo), 0, 1)` over the correction dims
//! `[lo, hi]` from `beta_fast`/`beta_slow`, and the magnitude
//! `mscale = attn_factor · (1 + 0.1·ln(1/freq_scale))` (just `attn_factor` when
//! `ext_factor = 0`). Output `x' = mscale · R(θ) x`.
//!
//! Only the first `n_dims` values of the slice handed to [`rope_apply`] are touched, so a
//! sub-range of a head (DeepSeek's `qk_rope` part) is rotated by passing that sub-slice.

/// Which elements form a rotation pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// Adjacent pairs `(2j, 2j+1)` (llama.cpp `LLAMA_ROPE_TYPE_NORM`).
    Norm,
    /// Half-split pairs `(j, j + n_dims/2)` (llama.cpp `LLAMA_ROPE_TYPE_NEOX`).
    Neox,
}

/// The parameters of `ggml_rope_ext`, by the same names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeParams {
    /// Rotated dimensions (even); the rest of a head is left as is.
    pub n_dims: usize,
    /// Pair layout.
    pub mode: RopeMode,
    /// `rope.freq_base` (θ base, e.g. 10000).
    pub freq_base: f32,
    /// `1 / rope.scaling.factor` for linear/YaRN scaling, else 1.
    pub freq_scale: f32,
    /// YaRN extrapolation mix (1 for YaRN models, 0 otherwise).
    pub ext_factor: f32,
    /// Magnitude multiplier (see the module docs; DeepSeek2 uses
    /// [`deepseek2_yarn_scales`]).
    pub attn_factor: f32,
    /// YaRN β_fast (llama.cpp default 32).
    pub beta_fast: f32,
    /// YaRN β_slow (llama.cpp default 1).
    pub beta_slow: f32,
    /// `rope.scaling.original_context_length` (only used when `ext_factor ≠ 0`).
    pub n_ctx_orig: u32,
    /// Round the YaRN correction range outwards to whole pairs (ggml always does; HF's
    /// `truncate`, false for gpt-oss, whose reference keeps the fractional range).
    pub truncate_corr: bool,
}

impl RopeParams {
    /// Plain RoPE (no scaling): `freq_scale = 1`, `ext_factor = 0`, `attn_factor = 1`,
    /// `beta_fast = 32`, `beta_slow = 1`, `n_ctx_orig = 0`, correction range truncated.
    pub fn new(n_dims: usize, mode: RopeMode, freq_base: f32) -> RopeParams {
        RopeParams {
            n_dims,
            mode,
            freq_base,
            freq_scale: 1.0,
            ext_factor: 0.0,
            attn_factor: 1.0,
            beta_fast: 32.0,
            beta_slow: 1.0,
            n_ctx_orig: 0,
            truncate_corr: true,
        }
    }

    /// The YaRN correction range `[start, end]` in pair indices (`ggml_rope_yarn_corr_dims`;
    /// not rounded when `truncate_corr` is off).
    pub fn corr_dims(&self) -> [f32; 2] {
        let n_dims = self.n_dims as f32;
        let corr_dim = |n_rot: f32| -> f32 {
            n_dims * (self.n_ctx_orig as f32 / (n_rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.freq_base.ln())
        };
        let (mut start, mut end) = (corr_dim(self.beta_fast), corr_dim(self.beta_slow));
        if self.truncate_corr {
            (start, end) = (start.floor(), end.ceil());
        }
        [start.max(0.0), end.min(n_dims - 1.0)]
    }

    /// The factor the rotated values are scaled by: `attn_factor · (1 + 0.1·ln(1/freq_scale))`
    /// when `ext_factor ≠ 0`, else `attn_factor`.
    pub fn mscale(&self) -> f32 {
        if self.ext_factor != 0.0 {
            self.attn_factor * (1.0 + 0.1 * (1.0 / self.freq_scale).ln())
        } else {
            self.attn_factor
        }
    }

    /// Fills `cache` (length `n_dims`) with `[cos θ_0, sin θ_0, cos θ_1, sin θ_1, …]`
    /// (already multiplied by [`mscale`](Self::mscale)) for position `pos`.
    /// `freq_factors` (llama.cpp's optional `rope_freqs` tensor, length ≥ `n_dims/2`)
    /// divides each pair's base angle.
    ///
    /// # Panics
    /// If `cache.len() != n_dims`, `n_dims` is odd, or `freq_factors` is too short.
    pub fn cache(&self, pos: i32, freq_factors: Option<&[f32]>, cache: &mut [f32]) {
        assert!(self.n_dims % 2 == 0, "rope: n_dims {} is odd", self.n_dims);
        assert_eq!(
            cache.len(),
            self.n_dims,
            "rope: cache length must be n_dims"
        );
        if let Some(ff) = freq_factors {
            assert!(
                ff.len() >= self.n_dims / 2,
                "rope: freq_factors shorter than n_dims/2"
            );
        }
        let theta_scale = self.freq_base.powf(-2.0 / self.n_dims as f32);
        let corr = self.corr_dims();
        let mut theta = pos as f32;
        for (j, cs) in cache.chunks_exact_mut(2).enumerate() {
            let ff = freq_factors.map_or(1.0, |f| f[j]);
            let (c, s) = self.yarn(theta / ff, corr, 2 * j);
            cs[0] = c;
            cs[1] = s;
            theta *= theta_scale;
        }
    }

    /// ggml's `rope_yarn`: (cos θ · mscale, sin θ · mscale) for pair `i0 / 2`.
    fn yarn(&self, theta_extrap: f32, corr: [f32; 2], i0: usize) -> (f32, f32) {
        let theta_interp = self.freq_scale * theta_extrap;
        let mut theta = theta_interp;
        let mut mscale = self.attn_factor;
        if self.ext_factor != 0.0 {
            let ramp_mix = ramp(corr[0], corr[1], i0) * self.ext_factor;
            theta = theta_interp * (1.0 - ramp_mix) + theta_extrap * ramp_mix;
            mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
        }
        (theta.cos() * mscale, theta.sin() * mscale)
    }
}

/// ggml's `rope_yarn_ramp` (note the integer `i0 / 2`).
fn ramp(low: f32, high: f32, i0: usize) -> f32 {
    let y = ((i0 / 2) as f32 - low) / (high - low).max(0.001);
    1.0 - y.clamp(0.0, 1.0)
}

/// Rotates `x[..cache.len()]` in place by the angles in `cache` (from
/// [`RopeParams::cache`]); values past `cache.len()` are untouched.
///
/// # Panics
/// If `x` is shorter than the cache.
#[inline]
pub fn rope_apply(x: &mut [f32], cache: &[f32], mode: RopeMode) {
    let n_dims = cache.len();
    assert!(x.len() >= n_dims, "rope: vector shorter than n_dims");
    match mode {
        RopeMode::Norm => {
            for (p, cs) in x[..n_dims].chunks_exact_mut(2).zip(cache.chunks_exact(2)) {
                let (x0, x1) = (p[0], p[1]);
                p[0] = x0 * cs[0] - x1 * cs[1];
                p[1] = x0 * cs[1] + x1 * cs[0];
            }
        }
        RopeMode::Neox => {
            let half = n_dims / 2;
            let (a, b) = x[..n_dims].split_at_mut(half);
            for ((x0, x1), cs) in a.iter_mut().zip(b.iter_mut()).zip(cache.chunks_exact(2)) {
                let (v0, v1) = (*x0, *x1);
                *x0 = v0 * cs[0] - v1 * cs[1];
                *x1 = v0 * cs[1] + v1 * cs[0];
            }
        }
    }
}

/// Rotates every head of a token: `x` holds heads of `head_dim` values back to back, and
/// in each head the `cache.len()` values starting at `offset` are rotated (offset 0 and
/// `cache.len() == head_dim` for ordinary models; DeepSeek's `q_pe` part of a query head
/// is `offset = qk_nope_head_dim`).
///
/// # Panics
/// If `x.len()` is not a multiple of `head_dim` or `offset + cache.len() > head_dim`.
pub fn rope_heads(x: &mut [f32], head_dim: usize, offset: usize, cache: &[f32], mode: RopeMode) {
    assert!(
        head_dim > 0 && x.len() % head_dim == 0,
        "rope: length not a multiple of head_dim"
    );
    assert!(
        offset + cache.len() <= head_dim,
        "rope: rotated range exceeds the head"
    );
    for head in x.chunks_exact_mut(head_dim) {
        rope_apply(&mut head[offset..], cache, mode);
    }
}

/// DeepSeek2's YaRN convention, as llama.cpp's `deepseek2` graph: returns
/// `(rope_attn_factor, kq_mscale)`.
///
/// * `rope_attn_factor` is the `attn_factor` to put in [`RopeParams`] so the rotation has
///   magnitude `attn_factor_org` (llama.cpp divides by `1 + 0.1·ln(1/freq_scale)` up front
///   because `rope_yarn` multiplies it back; HF's DeepSeek rotary embedding has magnitude
///   `yarn_get_mscale(f, mscale) / yarn_get_mscale(f, mscale_all_dim)` = 1 for V2/V3).
/// * `kq_mscale` = `attn_factor_org · (1 + yarn_log_multiplier · ln(1/freq_scale))`, where
///   `yarn_log_multiplier` is the GGUF key `rope.scaling.yarn_log_multiplier` as written
///   by the converters (`0.1 · mscale_all_dim`). The attention score scale is then
///   `kq_mscale² / sqrt(head_dim_k)` (HF's `softmax_scale · mscale²`).
///
/// With `ext_factor = 0` (no YaRN) `rope_attn_factor = attn_factor_org`.
pub fn deepseek2_yarn_scales(
    attn_factor_org: f32,
    freq_scale: f32,
    ext_factor: f32,
    yarn_log_multiplier: f32,
) -> (f32, f32) {
    let l = (1.0 / freq_scale).ln();
    let rope_attn = if ext_factor != 0.0 {
        attn_factor_org / (1.0 + 0.1 * l)
    } else {
        attn_factor_org
    };
    let kq_mscale = attn_factor_org * (1.0 + yarn_log_multiplier * l);
    (rope_attn, kq_mscale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Independent f64 implementation of the formulas in the module docs.
    fn reference(x: &[f32], pos: i32, p: &RopeParams, ff: Option<&[f32]>) -> Vec<f64> {
        let d = p.n_dims as f64;
        let base = p.freq_base as f64;
        let corr_dim = |n_rot: f64| {
            d * (p.n_ctx_orig as f64 / (n_rot * 2.0 * std::f64::consts::PI)).ln()
                / (2.0 * base.ln())
        };
        let lo = corr_dim(p.beta_fast as f64).floor().max(0.0);
        let hi = corr_dim(p.beta_slow as f64).ceil().min(d - 1.0);
        let fs = p.freq_scale as f64;
        let mut out: Vec<f64> = x.iter().map(|v| *v as f64).collect();
        for j in 0..p.n_dims / 2 {
            let ext = pos as f64 * base.powf(-2.0 * j as f64 / d) / ff.map_or(1.0, |f| f[j] as f64);
            let interp = fs * ext;
            let (theta, m) = if p.ext_factor != 0.0 {
                let y = (j as f64 - lo) / (hi - lo).max(0.001);
                let r = (1.0 - y.clamp(0.0, 1.0)) * p.ext_factor as f64;
                (
                    interp * (1.0 - r) + ext * r,
                    p.attn_factor as f64 * (1.0 + 0.1 * (1.0 / fs).ln()),
                )
            } else {
                (interp, p.attn_factor as f64)
            };
            let (i, k) = match p.mode {
                RopeMode::Norm => (2 * j, 2 * j + 1),
                RopeMode::Neox => (j, j + p.n_dims / 2),
            };
            let (a, b) = (x[i] as f64, x[k] as f64);
            out[i] = m * (a * theta.cos() - b * theta.sin());
            out[k] = m * (a * theta.sin() + b * theta.cos());
        }
        out
    }

    fn check(p: RopeParams, head_dim: usize, offset: usize, positions: &[i32], ff: Option<&[f32]>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let n_heads = 3;
        let mut cache = vec![0f32; p.n_dims];
        for &pos in positions {
            let x: Vec<f32> = (0..n_heads * head_dim)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let mut y = x.clone();
            p.cache(pos, ff, &mut cache);
            rope_heads(&mut y, head_dim, offset, &cache, p.mode);
            let tol = 2e-5 + 4e-7 * pos.unsigned_abs() as f64;
            for h in 0..n_heads {
                let base = h * head_dim;
                let want = reference(&x[base + offset..base + offset + p.n_dims], pos, &p, ff);
                for i in 0..head_dim {
                    let got = y[base + i] as f64;
                    if i < offset || i >= offset + p.n_dims {
                        assert_eq!(y[base + i], x[base + i], "untouched element changed");
                    } else {
                        let w = want[i - offset];
                        assert!(
                            (got - w).abs() <= tol,
                            "{p:?} pos {pos} head {h} dim {i}: {got} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn plain_rope_both_modes() {
        for mode in [RopeMode::Norm, RopeMode::Neox] {
            check(
                RopeParams::new(128, mode, 10000.0),
                128,
                0,
                &[0, 1, 7, 100, 1000],
                None,
            );
            check(
                RopeParams::new(64, mode, 1_000_000.0),
                64,
                0,
                &[3, 4095],
                None,
            );
        }
    }

    #[test]
    fn partial_and_offset_rotation() {
        // DeepSeek-style: 192-wide query head, the last 64 rotated (NORM).
        check(
            RopeParams::new(64, RopeMode::Norm, 10000.0),
            192,
            128,
            &[0, 5, 300],
            None,
        );
        // Partial rotary at the front (n_dims < head_dim, offset 0), NEOX.
        check(
            RopeParams::new(32, RopeMode::Neox, 10000.0),
            128,
            0,
            &[9, 77],
            None,
        );
    }

    #[test]
    fn yarn_scaling_matches_reference() {
        for mode in [RopeMode::Norm, RopeMode::Neox] {
            let p = RopeParams {
                freq_scale: 1.0 / 40.0,
                ext_factor: 1.0,
                attn_factor: 1.0,
                n_ctx_orig: 4096,
                ..RopeParams::new(64, mode, 10000.0)
            };
            check(p, 64, 0, &[0, 1, 17, 2000, 60000], None);
            let (ra, _) = deepseek2_yarn_scales(1.0, p.freq_scale, 1.0, 0.0707);
            let p2 = RopeParams {
                attn_factor: ra,
                ..p
            };
            assert!((p2.mscale() - 1.0).abs() < 1e-6);
            check(p2, 192, 128, &[5, 4096], None);
            // Linear interpolation only (ext_factor 0): magnitude is attn_factor.
            let p3 = RopeParams {
                freq_scale: 0.25,
                attn_factor: 0.9,
                ..RopeParams::new(64, mode, 10000.0)
            };
            check(p3, 64, 0, &[33, 999], None);
        }
    }

    #[test]
    fn freq_factors_divide_the_angle() {
        let ff: Vec<f32> = (0..32).map(|j| 1.0 + j as f32 * 0.25).collect();
        check(
            RopeParams::new(64, RopeMode::Neox, 500000.0),
            64,
            0,
            &[1, 250],
            Some(&ff),
        );
    }

    #[test]
    fn corr_dims_known_values() {
        // DeepSeek-V2-Lite: n_dims 64, base 10000, n_ctx_orig 4096, β 32 / 1.
        let p = RopeParams {
            n_ctx_orig: 4096,
            ext_factor: 1.0,
            freq_scale: 1.0 / 40.0,
            ..RopeParams::new(64, RopeMode::Norm, 10000.0)
        };
        let c = p.corr_dims();
        // corr_dim(32) = 64·ln(4096/(64π))/(2 ln 1e4) = 10.52… → floor 10;
        // corr_dim(1) = 64·ln(4096/(2π))/(2 ln 1e4) = 22.5… → ceil 23.
        assert_eq!(c, [10.0, 23.0]);
        let m = p.mscale();
        assert!((m - (1.0 + 0.1 * 40f32.ln())).abs() < 1e-6);
        let (_, kq) = deepseek2_yarn_scales(1.0, 1.0 / 40.0, 1.0, 0.0707);
        assert!((kq - (1.0 + 0.0707 * 40f32.ln())).abs() < 1e-6);
    }

    #[test]
    fn corr_dims_untruncated_for_gpt_oss() {
        // gpt-oss: n_dims 64, base 150000, n_ctx_orig 4096, β 32 / 1, HF's truncate false:
        // corr_dim(32) = 64·ln(4096/(64π))/(2 ln 150000) = 8.093…, corr_dim(1) = 17.398….
        let p = RopeParams {
            n_ctx_orig: 4096,
            ext_factor: 1.0,
            freq_scale: 1.0 / 32.0,
            truncate_corr: false,
            ..RopeParams::new(64, RopeMode::Neox, 150000.0)
        };
        let [lo, hi] = p.corr_dims();
        assert!((lo - 8.0929).abs() < 1e-3, "{lo}");
        assert!((hi - 17.398).abs() < 1e-3, "{hi}");
        let t = RopeParams {
            truncate_corr: true,
            ..p
        };
        assert_eq!(t.corr_dims(), [8.0, 18.0]);
    }

    #[test]
    fn position_zero_is_identity_and_norm_preserved() {
        let p = RopeParams::new(16, RopeMode::Norm, 10000.0);
        let mut cache = vec![0f32; 16];
        p.cache(0, None, &mut cache);
        let x: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        let mut y = x.clone();
        rope_apply(&mut y, &cache, RopeMode::Norm);
        assert_eq!(x, y);
        p.cache(12345, None, &mut cache);
        rope_apply(&mut y, &cache, RopeMode::Norm);
        let n0: f32 = x.iter().map(|v| v * v).sum();
        let n1: f32 = y.iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-3 * n0);
    }
}
