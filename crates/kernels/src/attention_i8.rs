//! Attention's two products in 8-bit integers with AVX-512 VNNI (`vpdpbusd`: 64 byte
//! products summed in fours into 16 i32 lanes per instruction — four times the
//! multiply-adds of an f32 FMA; ik_llama.cpp's `q8_KV` cache is built on the same idea).
//!
//! Used over a q8_KV key cache (int8 rows, one scale each) in the default
//! (quantized-activation) mode; `--exact` keeps f32 arithmetic. The cache's rows are used as
//! they are (a row width that is not whole 64-byte steps, or values of another type, are
//! quantized per block the same way, `d = max|x| / 127`, round to nearest even):
//! - scores: queries quantized the same way once per call; `q·k = d_q·d_k·Σ q_i·k_i` with
//!   the integer sum exact. `vpdpbusd` multiplies unsigned by signed bytes, so keys are
//!   stored offset by 128 and `128·Σ q_i` is subtracted;
//! - values: the softmax weight of position `j` times its row's scale, `w_j = p_j·d_j`,
//!   is quantized per (query row, block) to unsigned bytes (`w_j ≈ s·u_j`, `u ∈ 0..=255`), and
//!   `Σ_j u_j·v_j[c]` is summed exactly in i32 over position quads (rows interleaved four
//!   at a time, aligned to absolute block columns) before one `s·` per block.
//!
//! All integer sums are exact, so every score and every block's value sum is the same
//! number whatever the tiling, the split or the batch: batch invariance holds as on the
//! f32 path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether this CPU runs these kernels (AVX-512 F, BW, VL, VBMI and VNNI).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::has_avx512vl()
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vbmi")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Bytes per quantized row of `width` values: whole 64-byte steps (zero padded).
pub fn padded(width: usize) -> usize {
    width.next_multiple_of(64)
}

/// Quantizes `x` into `out` (`padded(x.len())` bytes, the padding zero — `128` with
/// `offset`): [`crate::kvdata::quantize_i8`]. Returns `(d, Σ values)`.
pub fn quantize_row(x: &[f32], out: &mut [u8], offset: bool) -> (f32, i32) {
    let n = x.len();
    assert!(out.len() >= padded(n), "attention: quantized row buffer");
    out[n..padded(n)].fill(if offset { 128 } else { 0 });
    crate::kvdata::quantize_i8(x, &mut out[..n], offset)
}

/// `scores[r·ld + j] = scale · dq[r]·dk[j] · (Σ_i ku_j[i]·q_r[i] − 128·qsum[r])` for query
/// rows `q` (signed bytes, `kw` each, a multiple of 64, zero past the row's width) and key
/// rows `ku_j = ku[j·kstride..][..kw]` (offset bytes), positions `0..n`.
#[allow(clippy::too_many_arguments)]
pub fn item_scores(
    q: &[&[u8]],
    dq: &[f32],
    qsum: &[i32],
    ku: &[u8],
    kstride: usize,
    dk: &[f32],
    kw: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    ld: usize,
) {
    let rows = q.len();
    assert!(available(), "attention: int8 dots need AVX-512 VNNI");
    assert!(
        kw % 64 == 0 && kstride >= kw && (n == 0 || ku.len() >= (n - 1) * kstride + kw),
        "attention: key rows"
    );
    assert!(dk.len() >= n, "attention: key scales");
    assert!(
        q.iter().all(|r| r.len() >= kw) && dq.len() >= rows && qsum.len() >= rows,
        "attention: query rows"
    );
    assert!(
        n <= ld && (rows == 0 || scores.len() >= (rows - 1) * ld + n),
        "attention: score rows"
    );
    if rows == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: features checked by `available`; sizes asserted above.
    unsafe {
        scores_512(q, dq, qsum, ku, kstride, dk, kw, n, scale, scores, ld)
    }
}

/// Position quads of a block's value rows: for quad `p` and column `c`,
/// `out[(p·dv + c)·4..][..4] = [v(4p)[c], …, v(4p+3)[c]]` as signed bytes, where `row(i)`
/// gives block row `i` as offset bytes (`ku`, keys' form) or None (a row outside the chunk:
/// zeros — its weight is 0 as well). `dv` is a multiple of 64.
pub fn quad_rows<'r>(
    n_quads: usize,
    dv: usize,
    row: impl Fn(usize) -> Option<&'r [u8]>,
    out: &mut [u8],
) {
    assert!(available(), "attention: int8 dots need AVX-512 VNNI");
    assert!(
        dv % 64 == 0 && out.len() >= n_quads * dv * 4,
        "attention: quad buffer"
    );
    const ZERO: [u8; 64] = [128; 64];
    for p in 0..n_quads {
        let r: [Option<&[u8]>; 4] = std::array::from_fn(|i| row(4 * p + i));
        assert!(
            r.iter().flatten().all(|x| x.len() >= dv),
            "attention: value rows"
        );
        let dst = &mut out[p * dv * 4..(p + 1) * dv * 4];
        for c in (0..dv).step_by(64) {
            let src: [&[u8]; 4] =
                std::array::from_fn(|i| r[i].map_or(&ZERO[..], |x| &x[c..c + 64]));
            #[cfg(target_arch = "x86_64")]
            // SAFETY: features checked by `available`; 64 bytes per source, 256 at dst[4c..].
            unsafe {
                interleave4(&src, &mut dst[4 * c..4 * c + 256])
            };
        }
    }
}

/// The weights of rows `0..rows` over block columns `4p..4p+4` (`p < n_quads`): `w = p_j ·
/// d_j` (weight times the value row's scale) quantized per row to unsigned bytes packed in
/// fours, `out[r·ld_quads + p]`, with the row's step in `step[r]` (0: no weight).
#[allow(clippy::too_many_arguments)]
pub fn quad_weights(
    p: &[f32],
    ld: usize,
    rows: usize,
    n_quads: usize,
    dv_scale: &[f32],
    out: &mut [u32],
    ld_quads: usize,
    step: &mut [f32],
) {
    let cols = 4 * n_quads;
    assert!(
        cols <= ld && n_quads <= ld_quads && dv_scale.len() >= cols,
        "attention: weight quads"
    );
    assert!(
        rows == 0
            || (p.len() >= (rows - 1) * ld + cols
                && out.len() >= (rows - 1) * ld_quads + n_quads
                && step.len() >= rows),
        "attention: weight rows"
    );
    for r in 0..rows {
        let pr = &p[r * ld..r * ld + cols];
        let wmax = pr
            .iter()
            .zip(dv_scale)
            .fold(0f32, |m, (&a, &d)| m.max(a * d));
        let s = wmax / 255.0;
        step[r] = s;
        let is = if s > 0.0 { 1.0 / s } else { 0.0 };
        let dst = &mut out[r * ld_quads..r * ld_quads + n_quads];
        #[cfg(target_arch = "x86_64")]
        if available() {
            // SAFETY: features checked; pr and dv_scale hold cols = 4·n_quads values, dst n_quads.
            unsafe { weight_bytes_512(pr, &dv_scale[..cols], is, dst) };
            continue;
        }
        weight_bytes_scalar(pr, &dv_scale[..cols], is, dst);
    }
}

/// [`weight_bytes_512`]'s definition (and the path without AVX-512): the same products in
/// the same order, rounded to nearest even and clamped to 0..=255.
fn weight_bytes_scalar(p: &[f32], d: &[f32], is: f32, dst: &mut [u32]) {
    for (o, (pq, dq)) in dst.iter_mut().zip(p.chunks_exact(4).zip(d.chunks_exact(4))) {
        let mut packed = 0u32;
        for i in 0..4 {
            let u = (pq[i] * dq[i] * is).round_ties_even().clamp(0.0, 255.0) as u32;
            packed |= u << (8 * i);
        }
        *o = packed;
    }
}

/// `dst[p]` = the bytes `round(p_i · d_i · is)` of columns `4p..4p+4`, packed (lowest first).
///
/// # Safety
/// AVX-512 F/BW/VL; `p` and `d` hold `4·dst.len()` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl")]
unsafe fn weight_bytes_512(p: &[f32], d: &[f32], is: f32, dst: &mut [u32]) {
    let n = 4 * dst.len();
    let vis = _mm512_set1_ps(is);
    // SAFETY: masked loads of lanes below n; masked 4-byte stores of the quads below dst.len().
    unsafe {
        for i in (0..n).step_by(16) {
            let left = n - i;
            let m: __mmask16 = if left >= 16 { !0 } else { (1u16 << left) - 1 };
            let w = _mm512_mul_ps(
                _mm512_mul_ps(
                    _mm512_maskz_loadu_ps(m, p.as_ptr().add(i)),
                    _mm512_maskz_loadu_ps(m, d.as_ptr().add(i)),
                ),
                vis,
            );
            let u = _mm512_cvtusepi32_epi8(_mm512_max_epi32(
                _mm512_cvtps_epi32(w),
                _mm512_setzero_si512(),
            ));
            let quads = (left.min(16) / 4) as u32;
            _mm_mask_storeu_epi32(
                dst.as_mut_ptr().add(i / 4).cast(),
                ((1u32 << quads) - 1) as __mmask8,
                u,
            );
        }
    }
}

/// `out[r·dv + c] += step[r] · Σ_p Σ_i u_{r,4p+i} · v_{4p+i}[c]` for rows `0..rows`, the
/// integer sum exact, `dv` a multiple of 64.
#[allow(clippy::too_many_arguments)]
pub fn item_values(
    wq: &[u32],
    ld_quads: usize,
    step: &[f32],
    rows: usize,
    n_quads: usize,
    vq: &[u8],
    dv: usize,
    out: &mut [f32],
) {
    assert!(available(), "attention: int8 dots need AVX-512 VNNI");
    assert!(
        dv % 64 == 0 && vq.len() >= n_quads * dv * 4,
        "attention: value quads"
    );
    assert!(
        rows == 0 || (wq.len() >= (rows - 1) * ld_quads + n_quads && step.len() >= rows),
        "attention: weight quads"
    );
    assert!(
        n_quads <= ld_quads && out.len() >= rows * dv,
        "attention: value sums"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: features checked by `available`; sizes asserted above.
    unsafe {
        values_512(wq, ld_quads, step, rows, n_quads, vq, dv, out)
    }
}

/// Query and key rows per score tile.
const TQ: usize = 4;
const TK: usize = 6;

/// # Safety
/// AVX-512 F/BW/VL/VNNI; as [`item_scores`]'s asserts, `rows, n ≥ 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn scores_512(
    q: &[&[u8]],
    dq: &[f32],
    qsum: &[i32],
    ku: &[u8],
    kstride: usize,
    dk: &[f32],
    kw: usize,
    n: usize,
    scale: f32,
    scores: &mut [f32],
    ld: usize,
) {
    let rows = q.len();
    for j0 in (0..n).step_by(TK) {
        let kt: [usize; TK] = std::array::from_fn(|i| (j0 + i).min(n - 1));
        for r0 in (0..rows).step_by(TQ) {
            let qt: [usize; TQ] = std::array::from_fn(|i| (r0 + i).min(rows - 1));
            let mut acc = [[_mm512_setzero_si512(); TK]; TQ];
            for i in (0..kw).step_by(64) {
                // SAFETY: rows hold kw bytes (asserted by the caller), i + 64 ≤ kw.
                unsafe {
                    let qv: [__m512i; TQ] = std::array::from_fn(|r| {
                        _mm512_loadu_si512(q[qt[r]].as_ptr().add(i).cast())
                    });
                    for j in 0..TK {
                        let kv = _mm512_loadu_si512(ku.as_ptr().add(kt[j] * kstride + i).cast());
                        for r in 0..TQ {
                            acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], kv, qv[r]);
                        }
                    }
                }
            }
            for j in 0..TK.min(n - j0) {
                let s = hsum4_epi32(std::array::from_fn(|r| acc[r][j]));
                for (r, &isum) in s.iter().enumerate().take(rows - r0) {
                    let exact = isum - 128 * qsum[r0 + r];
                    scores[(r0 + r) * ld + j0 + j] = scale * dq[r0 + r] * dk[j0 + j] * exact as f32;
                }
            }
        }
    }
}

/// The lane sums of 4 vectors (exact: integer adds).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn hsum4_epi32(v: [__m512i; 4]) -> [i32; 4] {
    // SAFETY: only called from AVX-512-enabled functions.
    unsafe {
        let h: [__m256i; 4] = std::array::from_fn(|i| {
            _mm256_add_epi32(
                _mm512_castsi512_si256(v[i]),
                _mm512_extracti64x4_epi64(v[i], 1),
            )
        });
        let a = _mm256_hadd_epi32(h[0], h[1]);
        let b = _mm256_hadd_epi32(h[2], h[3]);
        let c = _mm256_hadd_epi32(a, b);
        let s = _mm_add_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
        let mut out = [0i32; 4];
        _mm_storeu_si128(out.as_mut_ptr().cast(), s);
        out
    }
}

/// Interleaves 64 columns of 4 offset-byte rows into 4 vectors of column quads (signed).
///
/// # Safety
/// AVX-512 F/BW/VBMI; each source holds 64 bytes, `dst` 256.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn interleave4(src: &[&[u8]; 4], dst: &mut [u8]) {
    // Bytes: pairs (a, b) of columns 0..32 and 32..64; then 16-bit pairs of pairs.
    let pair_lo: [u8; 64] =
        std::array::from_fn(|i| (i / 2 + if i % 2 == 1 { 64 } else { 0 }) as u8);
    let pair_hi: [u8; 64] =
        std::array::from_fn(|i| (32 + i / 2 + if i % 2 == 1 { 64 } else { 0 }) as u8);
    let quad_lo: [u16; 32] =
        std::array::from_fn(|i| (i / 2 + if i % 2 == 1 { 32 } else { 0 }) as u16);
    let quad_hi: [u16; 32] =
        std::array::from_fn(|i| (16 + i / 2 + if i % 2 == 1 { 32 } else { 0 }) as u16);
    // SAFETY: 64-byte loads of the sources and of the index tables; 4 stores of 64 bytes
    // within dst's 256.
    unsafe {
        let flip = _mm512_set1_epi8(-128);
        let l: [__m512i; 4] = std::array::from_fn(|i| {
            _mm512_xor_si512(_mm512_loadu_si512(src[i].as_ptr().cast()), flip)
        });
        let (plo, phi) = (
            _mm512_loadu_si512(pair_lo.as_ptr().cast()),
            _mm512_loadu_si512(pair_hi.as_ptr().cast()),
        );
        let (qlo, qhi) = (
            _mm512_loadu_si512(quad_lo.as_ptr().cast()),
            _mm512_loadu_si512(quad_hi.as_ptr().cast()),
        );
        // ab[k]: (a, b) byte pairs of columns 32k..32k+32.
        let ab = [
            _mm512_permutex2var_epi8(l[0], plo, l[1]),
            _mm512_permutex2var_epi8(l[0], phi, l[1]),
        ];
        let cd = [
            _mm512_permutex2var_epi8(l[2], plo, l[3]),
            _mm512_permutex2var_epi8(l[2], phi, l[3]),
        ];
        for k in 0..2 {
            let lo = _mm512_permutex2var_epi16(ab[k], qlo, cd[k]);
            let hi = _mm512_permutex2var_epi16(ab[k], qhi, cd[k]);
            _mm512_storeu_si512(dst.as_mut_ptr().add(128 * k).cast(), lo);
            _mm512_storeu_si512(dst.as_mut_ptr().add(128 * k + 64).cast(), hi);
        }
    }
}

/// # Safety
/// AVX-512 F/BW/VL/VNNI; as [`item_values`]'s asserts.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn values_512(
    wq: &[u32],
    ld_quads: usize,
    step: &[f32],
    rows: usize,
    n_quads: usize,
    vq: &[u8],
    dv: usize,
    out: &mut [f32],
) {
    for r0 in (0..rows).step_by(TQ) {
        let nr = TQ.min(rows - r0);
        for c in (0..dv).step_by(64) {
            let mut acc = [[_mm512_setzero_si512(); 4]; TQ];
            // SAFETY (loads, stores): quad p < n_quads holds 4·dv bytes, read at 4c + 64k + 64
            // ≤ 4·dv; weights and out rows in range per the caller's asserts.
            unsafe {
                for p in 0..n_quads {
                    let base = vq.as_ptr().add((p * dv + c) * 4);
                    let v: [__m512i; 4] =
                        std::array::from_fn(|k| _mm512_loadu_si512(base.add(64 * k).cast()));
                    for (r, a) in acc.iter_mut().enumerate().take(nr) {
                        let w =
                            _mm512_set1_epi32(*wq.get_unchecked((r0 + r) * ld_quads + p) as i32);
                        for k in 0..4 {
                            a[k] = _mm512_dpbusd_epi32(a[k], w, v[k]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate().take(nr) {
                    let s = _mm512_set1_ps(step[r0 + r]);
                    for (k, x) in a.iter().enumerate() {
                        let o = out.as_mut_ptr().add((r0 + r) * dv + c + 16 * k);
                        _mm512_storeu_ps(
                            o,
                            _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(*x), _mm512_loadu_ps(o)),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX-512 weight bytes equal their scalar definition: random weights at every
    /// length up to 3 vectors and a tail, halves (ties go to even) and values just past
    /// 255 (clamped).
    #[test]
    fn weight_bytes_simd_equal_scalar() {
        #[cfg(target_arch = "x86_64")]
        {
            if !available() {
                return;
            }
            let mut seed = 7u64;
            let mut next = move || {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 40) as f32 / (1u64 << 24) as f32
            };
            for quads in 1..=13 {
                let n = 4 * quads;
                let mut p: Vec<f32> = (0..n).map(|_| next()).collect();
                let d: Vec<f32> = (0..n).map(|_| 0.5 + next()).collect();
                // Exact halves, and a weight at 255.4 (255 at is = 1; clamped at 255 when
                // is = 37.25 scales it far past).
                p[0] = 2.5;
                p[n - 1] = 3.5;
                let mut d = d;
                d[0] = 1.0;
                d[n - 1] = 1.0;
                if n > 2 {
                    p[1] = 255.4;
                    d[1] = 1.0;
                }
                for is in [1.0f32, 37.25, 0.0] {
                    let mut simd = vec![0u32; quads];
                    let mut scalar = vec![0u32; quads];
                    // SAFETY: `available` checked; p and d hold 4·quads values.
                    unsafe { weight_bytes_512(&p, &d, is, &mut simd) };
                    weight_bytes_scalar(&p, &d, is, &mut scalar);
                    assert_eq!(simd, scalar, "{quads} quads, is = {is}");
                }
            }
        }
    }
}
