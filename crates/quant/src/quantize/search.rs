//! The k-quant scale searches (ggml's `make_qkx2_quants` and `make_qx_quants`), run on
//! several sub-blocks at once.
//!
//! The searches are chains of dependent f32 additions (sums over the sub-block for each
//! candidate scale); to reproduce ggml's bytes they must be added in ggml's order, so
//! they cannot be reassociated. Running `L` independent sub-blocks side by side (lane
//! `k` = sub-block `k`, each lane in ggml's order) keeps every lane's arithmetic
//! identical to the scalar code while letting the compiler vectorise across lanes and
//! overlap the latency chains (about 2× faster on baseline x86-64). The scalar ports are
//! kept (under `cfg(test)`) as the oracle the lane versions are tested against.

use super::nearest_int;

/// `make_qkx2_quants` (with `use_mad = false`) on `L` sub-blocks of `N` values:
/// asymmetric fits x ≈ scale·q − min, q ∈ 0..=nmax, minimising Σ w·err² over the
/// candidate inverse scales (rmin + rdelta·is + nmax)/(max − min), is = 0..=nstep.
/// Returns per lane (scale, min ≥ 0) and the levels in `levels`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_lanes<const N: usize, const L: usize>(
    nmax: i32,
    x: &[[f32; N]; L],
    w: &[[f32; N]; L],
    levels: &mut [[u8; N]; L],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> ([f32; L], [f32; L]) {
    // Transpose so that the lane loop is innermost and contiguous.
    let mut xt = [[0.0f32; L]; N];
    let mut wt = [[0.0f32; L]; N];
    for k in 0..L {
        for i in 0..N {
            xt[i][k] = x[k][i];
            wt[i][k] = w[k][i];
        }
    }
    let mut min = xt[0];
    let mut max = xt[0];
    let mut sum_w = wt[0];
    let mut sum_x = [0.0f32; L];
    for k in 0..L {
        sum_x[k] = sum_w[k] * xt[0][k];
    }
    for i in 1..N {
        for k in 0..L {
            let v = xt[i][k];
            if v < min[k] {
                min[k] = v;
            }
            if v > max[k] {
                max[k] = v;
            }
            sum_w[k] += wt[i][k];
            sum_x[k] += wt[i][k] * v;
        }
    }
    let nmaxf = nmax as f32;
    let mut range = [0.0f32; L];
    let mut scale = [0.0f32; L];
    let mut iscale = [0.0f32; L];
    for k in 0..L {
        if min[k] > 0.0 {
            min[k] = 0.0;
        }
        range[k] = max[k] - min[k];
        iscale[k] = nmaxf / range[k];
        scale[k] = 1.0 / iscale[k];
    }
    // Degenerate lanes (max == min) return this min; their search results are ignored.
    let min_start = min;
    let mut lt = [[0u8; L]; N];
    let mut best_error = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let q = nearest_int(iscale[k] * (xt[i][k] - min[k])).clamp(0, nmax);
            lt[i][k] = q as u8;
            let diff = scale[k] * q as f32 + min[k] - xt[i][k];
            best_error[k] += wt[i][k] * (diff * diff);
        }
    }
    let mut laux = [[0u8; L]; N];
    for is in 0..=nstep {
        let numer = rmin + rdelta * is as f32 + nmaxf;
        for k in 0..L {
            // `min` moves with the best fit so far, as in ggml.
            iscale[k] = numer / (max[k] - min[k]);
        }
        let mut sum_l = [0.0f32; L];
        let mut sum_l2 = [0.0f32; L];
        let mut sum_xl = [0.0f32; L];
        for i in 0..N {
            for k in 0..L {
                let q = nearest_int(iscale[k] * (xt[i][k] - min[k])).clamp(0, nmax);
                laux[i][k] = q as u8;
                let wl = wt[i][k] * q as f32;
                sum_l[k] += wl;
                sum_l2[k] += wl * q as f32;
                sum_xl[k] += wl * xt[i][k];
            }
        }
        let mut this_scale = [0.0f32; L];
        let mut this_min = [0.0f32; L];
        let mut valid = [false; L];
        for k in 0..L {
            let det = sum_w[k] * sum_l2[k] - sum_l[k] * sum_l[k];
            valid[k] = det > 0.0;
            this_scale[k] = (sum_w[k] * sum_xl[k] - sum_x[k] * sum_l[k]) / det;
            this_min[k] = (sum_l2[k] * sum_x[k] - sum_l[k] * sum_xl[k]) / det;
            if this_min[k] > 0.0 {
                this_min[k] = 0.0;
                this_scale[k] = sum_xl[k] / sum_l2[k];
            }
        }
        if !valid.iter().any(|&v| v) {
            continue;
        }
        let mut cur_error = [0.0f32; L];
        for i in 0..N {
            for k in 0..L {
                let diff = this_scale[k] * laux[i][k] as f32 + this_min[k] - xt[i][k];
                cur_error[k] += wt[i][k] * (diff * diff);
            }
        }
        for k in 0..L {
            if valid[k] && cur_error[k] < best_error[k] {
                for i in 0..N {
                    lt[i][k] = laux[i][k];
                }
                best_error[k] = cur_error[k];
                scale[k] = this_scale[k];
                min[k] = this_min[k];
            }
        }
    }
    let mut the_min = [0.0f32; L];
    for k in 0..L {
        if range[k] == 0.0 {
            // max == min (after clamping min to ≤ 0): all levels 0, scale 0.
            levels[k] = [0; N];
            scale[k] = 0.0;
            the_min[k] = -min_start[k];
            continue;
        }
        for i in 0..N {
            levels[k][i] = lt[i][k];
        }
        the_min[k] = -min[k];
    }
    (scale, the_min)
}

/// `make_qx_quants` with rmse_type 1 and no importance matrix, on `L` sub-blocks of `N`
/// values: symmetric fits x ≈ scale·(q − nmax), weights x², trying the inverse scales
/// −(nmax + 0.1·is)/max for is = −9..=9. Returns per-lane scales; levels (0..2·nmax) in
/// `levels`.
pub(crate) fn make_qx_lanes<const N: usize, const L: usize>(
    nmax: i32,
    x: &[[f32; N]; L],
    levels: &mut [[i8; N]; L],
) -> [f32; L] {
    const GROUP_MAX_EPS: f32 = 1e-15;
    let mut xt = [[0.0f32; L]; N];
    for k in 0..L {
        for i in 0..N {
            xt[i][k] = x[k][i];
        }
    }
    let mut max = [0.0f32; L];
    let mut amax = [0.0f32; L];
    for row in &xt {
        for k in 0..L {
            let ax = row[k].abs();
            if ax > amax[k] {
                amax[k] = ax;
                max[k] = row[k];
            }
        }
    }
    let nmaxf = nmax as f32;
    let mut lt = [[0i8; L]; N];
    let mut iscale = [0.0f32; L];
    for k in 0..L {
        iscale[k] = -nmaxf / max[k];
    }
    let mut sumlx = [0.0f32; L];
    let mut suml2 = [0.0f32; L];
    for i in 0..N {
        for k in 0..L {
            let v = xt[i][k];
            let q = nearest_int(iscale[k] * v).clamp(-nmax, nmax - 1);
            lt[i][k] = (q + nmax) as i8;
            let w = v * v;
            sumlx[k] += w * v * q as f32;
            suml2[k] += w * q as f32 * q as f32;
        }
    }
    let mut scale = [0.0f32; L];
    let mut best = [0.0f32; L];
    for k in 0..L {
        scale[k] = if suml2[k] != 0.0 {
            sumlx[k] / suml2[k]
        } else {
            0.0
        };
        best[k] = scale[k] * sumlx[k];
    }
    let mut lcand = [[0i8; L]; N];
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        let numer = nmaxf + 0.1f32 * is as f32;
        for k in 0..L {
            iscale[k] = -numer / max[k];
        }
        let mut sumlx = [0.0f32; L];
        let mut suml2 = [0.0f32; L];
        for i in 0..N {
            for k in 0..L {
                let v = xt[i][k];
                let q = nearest_int(iscale[k] * v).clamp(-nmax, nmax - 1);
                lcand[i][k] = (q + nmax) as i8;
                let w = v * v;
                sumlx[k] += w * v * q as f32;
                suml2[k] += w * q as f32 * q as f32;
            }
        }
        for k in 0..L {
            if suml2[k] > 0.0 && sumlx[k] * sumlx[k] > best[k] * suml2[k] {
                for i in 0..N {
                    lt[i][k] = lcand[i][k];
                }
                scale[k] = sumlx[k] / suml2[k];
                best[k] = scale[k] * sumlx[k];
            }
        }
    }
    for k in 0..L {
        if amax[k] < GROUP_MAX_EPS {
            levels[k] = [0; N];
            scale[k] = 0.0;
        } else {
            for i in 0..N {
                levels[k][i] = lt[i][k];
            }
        }
    }
    scale
}

#[cfg(test)]
mod tests {
    //! The scalar ports of ggml's searches (one sub-block at a time, line by line as in
    //! ggml-quants.c) and checks that the lane versions agree bit for bit.
    use super::*;

    fn make_qkx2_scalar<const N: usize>(
        nmax: i32,
        x: &[f32; N],
        weights: &[f32; N],
        l: &mut [u8; N],
        rmin: f32,
        rdelta: f32,
        nstep: i32,
    ) -> (f32, f32) {
        let mut min = x[0];
        let mut max = x[0];
        let mut sum_w = weights[0];
        let mut sum_x = sum_w * x[0];
        for i in 1..N {
            if x[i] < min {
                min = x[i];
            }
            if x[i] > max {
                max = x[i];
            }
            let w = weights[i];
            sum_w += w;
            sum_x += w * x[i];
        }
        if min > 0.0 {
            min = 0.0;
        }
        if max == min {
            l.fill(0);
            return (0.0, -min);
        }
        let nmaxf = nmax as f32;
        let mut iscale = nmaxf / (max - min);
        let mut scale = 1.0 / iscale;
        let mut best_error = 0.0f32;
        for i in 0..N {
            let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            l[i] = li as u8;
            let diff = scale * li as f32 + min - x[i];
            best_error += weights[i] * (diff * diff);
        }
        let mut laux = [0u8; N];
        for is in 0..=nstep {
            iscale = (rmin + rdelta * is as f32 + nmaxf) / (max - min);
            let (mut sum_l, mut sum_l2, mut sum_xl) = (0.0f32, 0.0f32, 0.0f32);
            for i in 0..N {
                let li = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
                laux[i] = li as u8;
                let w = weights[i];
                let lf = li as f32;
                sum_l += w * lf;
                sum_l2 += w * lf * lf;
                sum_xl += w * lf * x[i];
            }
            let det = sum_w * sum_l2 - sum_l * sum_l;
            if det > 0.0 {
                let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
                let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
                if this_min > 0.0 {
                    this_min = 0.0;
                    this_scale = sum_xl / sum_l2;
                }
                let mut cur_error = 0.0f32;
                for i in 0..N {
                    let diff = this_scale * laux[i] as f32 + this_min - x[i];
                    cur_error += weights[i] * (diff * diff);
                }
                if cur_error < best_error {
                    l.copy_from_slice(&laux);
                    best_error = cur_error;
                    scale = this_scale;
                    min = this_min;
                }
            }
        }
        (scale, -min)
    }

    fn make_qx_scalar<const N: usize>(nmax: i32, x: &[f32; N], l: &mut [i8; N]) -> f32 {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax < 1e-15 {
            l.fill(0);
            return 0.0;
        }
        let nmaxf = nmax as f32;
        let mut iscale = -nmaxf / max;
        let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
        for i in 0..N {
            let li = nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1);
            l[i] = (li + nmax) as i8;
            let w = x[i] * x[i];
            sumlx += w * x[i] * li as f32;
            suml2 += w * li as f32 * li as f32;
        }
        let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
        let mut best = scale * sumlx;
        for is in -9..=9 {
            if is == 0 {
                continue;
            }
            iscale = -(nmaxf + 0.1f32 * is as f32) / max;
            let (mut sumlx, mut suml2) = (0.0f32, 0.0f32);
            for &v in x {
                let lf = nearest_int(iscale * v).clamp(-nmax, nmax - 1) as f32;
                sumlx += v * v * v * lf;
                suml2 += v * v * lf * lf;
            }
            if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
                for i in 0..N {
                    l[i] = (nearest_int(iscale * x[i]).clamp(-nmax, nmax - 1) + nmax) as i8;
                }
                scale = sumlx / suml2;
                best = scale * sumlx;
            }
        }
        scale
    }

    /// Deterministic pseudo-random sub-blocks with the awkward cases mixed in: constant,
    /// all-zero, all-positive, all-negative, one outlier, tiny values.
    fn cases<const N: usize>(seed: u64, lanes: usize) -> Vec<[f32; N]> {
        let mut s = seed;
        let mut rnd = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        (0..lanes)
            .map(|k| {
                let mut b = [0.0f32; N];
                for v in b.iter_mut() {
                    *v = rnd();
                }
                match k % 9 {
                    0 => b = [0.3; N],
                    1 => b = [0.0; N],
                    2 => b.iter_mut().for_each(|v| *v = v.abs() + 0.01),
                    3 => b.iter_mut().for_each(|v| *v = -v.abs()),
                    4 => b[N / 3] = 40.0,
                    5 => b.iter_mut().for_each(|v| *v *= 1e-12),
                    6 => b = [-0.7; N],
                    _ => {}
                }
                b
            })
            .collect()
    }

    #[test]
    fn qkx2_lanes_equal_scalar() {
        for seed in 0..40 {
            let xs: [[f32; 32]; 8] = cases::<32>(seed, 8).try_into().unwrap();
            let mut ws = [[0.0f32; 32]; 8];
            for k in 0..8 {
                let av = (xs[k].iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
                for i in 0..32 {
                    ws[k][i] = av + xs[k][i].abs();
                }
            }
            for (nmax, rmin, nstep) in [(15, -1.0, 20), (31, -0.5, 15)] {
                let mut lv = [[0u8; 32]; 8];
                let (sc, mn) = make_qkx2_lanes(nmax, &xs, &ws, &mut lv, rmin, 0.1, nstep);
                for k in 0..8 {
                    let mut l = [0u8; 32];
                    let (s, m) = make_qkx2_scalar(nmax, &xs[k], &ws[k], &mut l, rmin, 0.1, nstep);
                    assert_eq!(
                        (sc[k].to_bits(), mn[k].to_bits()),
                        (s.to_bits(), m.to_bits()),
                        "seed {seed} lane {k}"
                    );
                    assert_eq!(lv[k], l, "seed {seed} lane {k}");
                }
            }
        }
    }

    #[test]
    fn qx_lanes_equal_scalar() {
        for seed in 0..40 {
            let xs: [[f32; 16]; 16] = cases::<16>(seed, 16).try_into().unwrap();
            let mut lv = [[0i8; 16]; 16];
            let sc = make_qx_lanes(32, &xs, &mut lv);
            for k in 0..16 {
                let mut l = [0i8; 16];
                let s = make_qx_scalar(32, &xs[k], &mut l);
                assert_eq!(sc[k].to_bits(), s.to_bits(), "seed {seed} lane {k}");
                assert_eq!(lv[k], l, "seed {seed} lane {k}");
            }
        }
    }
}
