//! Causal attention over a KV cache, split across the pool by (token, head).
//!
//! One kernel covers both attention kinds we run:
//! - grouped-query attention: K and V rows of `n_kv_head` heads each;
//! - DeepSeek MLA in the absorbed form: one shared "head" whose key is the cached
//!   `[c_kv, k_pe]` row (the query is `[q·W_UK, q_pe]`) and whose value is the `c_kv`
//!   part of the same row — so `k` and `v` may be the same buffer.
//!
//! A work item is up to 4 query rows that read the same keys and values: 4 heads of one
//! token sharing a KV head (GQA groups, MLA's absorbed form), or, when fewer heads share
//! one, the same head of up to 4 consecutive tokens (multi-head attention, MLA's
//! decompressed form). Each cached row is loaded once per item. Every query row computes
//! its scores, a max-subtracted softmax over its own causal length and the weighted sum of
//! values in a fixed order (rows never mix; a shorter row's extra positions get weight
//! 0), so a token's output does not depend on which thread ran it or what else was in
//! the batch.

use crate::ThreadPool;

/// Shapes and strides of one attention call (all in f32 elements).
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Query/key width per head, and value width per head.
    pub dk: usize,
    pub dv: usize,
    /// Floats per cached position in the key and value buffers.
    pub k_stride: usize,
    pub v_stride: usize,
    /// Where value head 0 starts within a value row.
    pub v_offset: usize,
    /// Multiplier of q·k.
    pub scale: f32,
}

/// Per-thread score and output buffers.
#[derive(Default, Debug)]
pub struct AttnScratch {
    scores: Vec<f32>,
    per_thread: usize,
}

/// Query rows per work item (the register block of the score and value kernels).
const ROWS: usize = 4;

impl AttnScratch {
    /// An empty scratch.
    pub fn new() -> AttnScratch {
        AttnScratch::default()
    }
    /// Room for `floats` per thread.
    fn reserve(&mut self, n_threads: usize, floats: usize) {
        if self.per_thread < floats || self.scores.len() < n_threads * floats {
            self.per_thread = self.per_thread.max(floats);
            self.scores.resize(n_threads * self.per_thread, 0.0);
        }
    }
}

#[derive(Clone, Copy)]
struct SharedMut(*mut f32);
// SAFETY: each (token, head) item writes only its own `dv` outputs and its own thread's
// score row; items are disjoint.
unsafe impl Sync for SharedMut {}
// SAFETY: as above.
unsafe impl Send for SharedMut {}
impl SharedMut {
    #[inline(always)]
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// `out[t, h] = softmax(scale · q[t, h] · K[0..=pos0+t]) · V[0..=pos0+t]` for the `m`
/// tokens of one sequence at positions `pos0..pos0+m`, whose keys/values (including
/// these tokens') are already in `k` / `v`. `q` is `m × n_head × dk`, `out` is
/// `m × n_head × dv`.
pub fn attention(
    pool: &ThreadPool,
    s: &AttnShape,
    q: &[f32],
    pos0: usize,
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    let m = q.len() / (s.n_head * s.dk);
    assert_eq!(q.len(), m * s.n_head * s.dk, "attention: q length");
    assert_eq!(out.len(), m * s.n_head * s.dv, "attention: out length");
    assert!(
        s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0,
        "attention: heads"
    );
    let n_ctx = pos0 + m;
    assert!(
        k.len() >= (n_ctx - 1) * s.k_stride + s.n_kv_head * s.dk,
        "attention: key cache too short"
    );
    assert!(
        v.len() >= (n_ctx - 1) * s.v_stride + s.v_offset + s.n_kv_head * s.dv,
        "attention: value cache too short"
    );
    // Work items: `tb` consecutive tokens × `hb` heads sharing one KV head (tb·hb ≤ 4).
    let group = s.n_head / s.n_kv_head;
    let hb = [4, 2, 1].into_iter().find(|b| group % b == 0).unwrap_or(1);
    let tb = ROWS / hb;
    let (head_blocks, token_blocks) = (s.n_head / hb, m.div_ceil(tb));
    // Per thread: ROWS score rows of n_ctx, then ROWS output rows of dv.
    let per_item = ROWS * n_ctx + ROWS * s.dv;
    scratch.reserve(pool.n_threads(), per_item);
    let per_thread = scratch.per_thread;
    let scores_ptr = SharedMut(scratch.scores.as_mut_ptr());
    let out_ptr = SharedMut(out.as_mut_ptr());
    let n_items = token_blocks * head_blocks;
    let chunk = n_items.div_ceil(4 * pool.n_threads()).max(1);
    pool.run_chunked(n_items, chunk, |items, tid| {
        // SAFETY: thread `tid` alone uses scratch row `tid` (per_thread ≥ per_item floats).
        let scratch = unsafe {
            std::slice::from_raw_parts_mut(scores_ptr.get().add(tid * per_thread), per_thread)
        };
        for item in items {
            let (t0, h0) = ((item / head_blocks) * tb, (item % head_blocks) * hb);
            let nt = tb.min(m - t0);
            let rows = nt * hb;
            let g = h0 / group;
            // Row r = (token t0 + r / hb, head h0 + r % hb); padding rows repeat the last.
            let row_th = |r: usize| {
                let r = r.min(rows - 1);
                (t0 + r / hb, h0 + r % hb)
            };
            let ctx_max = pos0 + t0 + nt;
            let qs: [&[f32]; ROWS] = std::array::from_fn(|r| {
                let (t, h) = row_th(r);
                &q[(t * s.n_head + h) * s.dk..(t * s.n_head + h + 1) * s.dk]
            });
            let (sc, outs) = scratch.split_at_mut(ROWS * n_ctx);
            let sc = &mut sc[..rows * ctx_max];
            let k_row = |j: usize| &k[j * s.k_stride + g * s.dk..j * s.k_stride + (g + 1) * s.dk];
            block_scores(&qs, rows, ctx_max, &k_row, s.scale, sc);
            for (r, row) in sc.chunks_exact_mut(ctx_max).enumerate() {
                // Causal length of this row's token; later positions get weight 0.
                let ctx = pos0 + row_th(r).0 + 1;
                let (live, masked) = row.split_at_mut(ctx);
                let max = live.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0f32;
                for x in live.iter_mut() {
                    *x = (*x - max).exp();
                    sum += *x;
                }
                let inv = 1.0 / sum;
                live.iter_mut().for_each(|x| *x *= inv);
                masked.fill(0.0);
            }
            let v_row = |j: usize| {
                let base = j * s.v_stride + s.v_offset + g * s.dv;
                &v[base..base + s.dv]
            };
            let o = &mut outs[..rows * s.dv];
            block_values(sc, rows, ctx_max, &v_row, s.dv, o);
            for (r, res) in o.chunks_exact(s.dv).enumerate() {
                let (t, h) = row_th(r);
                // SAFETY: row (t, h) belongs to this item only: out[(t·n_head + h)·dv..]
                // is written by no other item.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        res.as_ptr(),
                        out_ptr.get().add((t * s.n_head + h) * s.dv),
                        s.dv,
                    );
                }
            }
        }
    });
}

/// `scores[i·ctx + j] = scale · q_i · k_j` for the item's first `rows` query rows `i`
/// and positions `j` (the 4 rows are always computed together, so a row's bits do not
/// depend on how many rows the item has).
fn block_scores<'a>(
    qs: &[&[f32]; ROWS],
    rows: usize,
    ctx: usize,
    k_row: &dyn Fn(usize) -> &'a [f32],
    scale: f32,
    scores: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        for j in 0..ctx {
            // SAFETY: AVX2+FMA checked at run time; all rows have the same length.
            let d = unsafe { avx2::dot4(qs, k_row(j)) };
            for (i, v) in d.iter().take(rows).enumerate() {
                scores[i * ctx + j] = v * scale;
            }
        }
        return;
    }
    for j in 0..ctx {
        let kr = k_row(j);
        for (i, qi) in qs.iter().take(rows).enumerate() {
            scores[i * ctx + j] = dot(qi, kr) * scale;
        }
    }
}

/// `out[i] = Σ_j p[i·ctx + j] · v_j` for the block's heads `i` (rows of `dv`).
fn block_values<'a>(
    p: &[f32],
    hb: usize,
    ctx: usize,
    v_row: &dyn Fn(usize) -> &'a [f32],
    dv: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() && dv % 8 == 0 {
        // SAFETY: AVX2+FMA checked at run time; out holds hb·dv, p holds hb·ctx.
        unsafe { avx2::weighted_rows(p, hb, ctx, v_row, dv, out) };
        return;
    }
    out.fill(0.0);
    for j in 0..ctx {
        let vr = v_row(j);
        for i in 0..hb {
            axpy(&mut out[i * dv..(i + 1) * dv], p[i * ctx + j], vr);
        }
    }
}

/// f32 dot product (8-wide FMA lanes on AVX2, same order on every call).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2+FMA checked at run time.
        return unsafe { avx2::dot(a, b) };
    }
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `acc += alpha · x`.
#[inline]
fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2+FMA checked at run time.
        return unsafe { avx2::axpy(acc, alpha, x) };
    }
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += alpha * b;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY: every load reads 8 floats at i < n - 15 / n - 7 of both slices.
        unsafe {
            while i + 16 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                s1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i + 8)),
                    _mm256_loadu_ps(b.as_ptr().add(i + 8)),
                    s1,
                );
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(a.as_ptr().add(i)),
                    _mm256_loadu_ps(b.as_ptr().add(i)),
                    s0,
                );
                i += 8;
            }
        }
        let s = _mm256_add_ps(s0, s1);
        let hi = _mm256_extractf128_ps(s, 1);
        let lo = _mm256_castps256_ps128(s);
        let q = _mm_add_ps(hi, lo);
        let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
        let mut sum = _mm_cvtss_f32(q);
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    /// Four dot products of `qs[i]` with the same `k` (each `k` chunk loaded once).
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `qs` has 4 rows of at least `k.len()` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(qs: &[&[f32]], k: &[f32]) -> [f32; 4] {
        let n = k.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        // SAFETY: loads of 8 floats at i ≤ n − 8 from k and from each q (same length).
        unsafe {
            while i + 8 <= n {
                let kv = _mm256_loadu_ps(k.as_ptr().add(i));
                for (a, q) in acc.iter_mut().zip(qs) {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(i)), kv, *a);
                }
                i += 8;
            }
        }
        let mut out = [0f32; 4];
        for (o, a) in out.iter_mut().zip(acc) {
            *o = hsum(a);
        }
        for (o, q) in out.iter_mut().zip(qs) {
            for j in i..n {
                *o += q[j] * k[j];
            }
        }
        out
    }

    /// `out[h·dv..] = Σ_j p[h·ctx + j] · v_row(j)` for `hb` ≤ 4 heads, each 8-float
    /// column chunk accumulated in registers over all positions.
    ///
    /// # Safety
    /// Needs AVX2 and FMA; `dv` is a multiple of 8, `out` holds `hb·dv`, `p` holds
    /// `hb·ctx`, every `v_row(j)` holds `dv` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_rows<'a>(
        p: &[f32],
        hb: usize,
        ctx: usize,
        v_row: &dyn Fn(usize) -> &'a [f32],
        dv: usize,
        out: &mut [f32],
    ) {
        // Two column chunks per pass: 2·hb accumulators, the v loads shared by all heads.
        let mut c = 0;
        while c < dv {
            let two = c + 16 <= dv;
            let mut acc = [[_mm256_setzero_ps(); 2]; 4];
            for j in 0..ctx {
                let vr = v_row(j);
                // SAFETY: c + 8 (or c + 16) ≤ dv = vr.len().
                let v0 = unsafe { _mm256_loadu_ps(vr.as_ptr().add(c)) };
                let v1 = if two {
                    unsafe { _mm256_loadu_ps(vr.as_ptr().add(c + 8)) }
                } else {
                    _mm256_setzero_ps()
                };
                for h in 0..hb {
                    let w = _mm256_set1_ps(p[h * ctx + j]);
                    acc[h][0] = _mm256_fmadd_ps(w, v0, acc[h][0]);
                    acc[h][1] = _mm256_fmadd_ps(w, v1, acc[h][1]);
                }
            }
            for h in 0..hb {
                // SAFETY: h·dv + c + 16 ≤ hb·dv (or + 8 when only one chunk is left).
                unsafe {
                    _mm256_storeu_ps(out.as_mut_ptr().add(h * dv + c), acc[h][0]);
                    if two {
                        _mm256_storeu_ps(out.as_mut_ptr().add(h * dv + c + 8), acc[h][1]);
                    }
                }
            }
            c += if two { 16 } else { 8 };
        }
    }

    #[inline(always)]
    fn hsum(s: __m256) -> f32 {
        // SAFETY: only called from AVX2-enabled functions.
        unsafe {
            let q = _mm_add_ps(_mm256_extractf128_ps(s, 1), _mm256_castps256_ps128(s));
            let q = _mm_add_ps(q, _mm_movehl_ps(q, q));
            let q = _mm_add_ss(q, _mm_shuffle_ps(q, q, 1));
            _mm_cvtss_f32(q)
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(acc: &mut [f32], alpha: f32, x: &[f32]) {
        let n = acc.len().min(x.len());
        let va = _mm256_set1_ps(alpha);
        let mut i = 0;
        // SAFETY: loads/stores of 8 floats at i ≤ n − 8 of both slices.
        unsafe {
            while i + 8 <= n {
                let p = acc.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    p,
                    _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)),
                );
                i += 8;
            }
        }
        while i < n {
            acc[i] += alpha * x[i];
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Straightforward f64 attention.
    fn reference(s: &AttnShape, q: &[f32], pos0: usize, k: &[f32], v: &[f32]) -> Vec<f64> {
        let m = q.len() / (s.n_head * s.dk);
        let mut out = vec![0f64; m * s.n_head * s.dv];
        for t in 0..m {
            for h in 0..s.n_head {
                let g = h / (s.n_head / s.n_kv_head);
                let ctx = pos0 + t + 1;
                let sc: Vec<f64> = (0..ctx)
                    .map(|j| {
                        (0..s.dk)
                            .map(|i| {
                                q[(t * s.n_head + h) * s.dk + i] as f64
                                    * k[j * s.k_stride + g * s.dk + i] as f64
                            })
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for i in 0..s.dv {
                        out[(t * s.n_head + h) * s.dv + i] +=
                            p / z * v[j * s.v_stride + s.v_offset + g * s.dv + i] as f64;
                    }
                }
            }
        }
        out
    }

    fn check(s: AttnShape, m: usize, pos0: usize, shared_kv: bool, threads: usize) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let n_ctx = pos0 + m;
        let q: Vec<f32> = (0..m * s.n_head * s.dk)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let k: Vec<f32> = (0..n_ctx * s.k_stride)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let v: Vec<f32> = if shared_kv {
            k.clone()
        } else {
            (0..n_ctx * s.v_stride)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect()
        };
        let pool = ThreadPool::new(threads);
        let mut out = vec![0f32; m * s.n_head * s.dv];
        attention(
            &pool,
            &s,
            &q,
            pos0,
            &k,
            &v,
            &mut out,
            &mut AttnScratch::new(),
        );
        let want = reference(&s, &q, pos0, &k, &v);
        for (a, b) in out.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
        }
        // Same bits with one thread, and for the last token computed alone.
        let pool1 = ThreadPool::new(1);
        let mut out1 = vec![0f32; out.len()];
        attention(
            &pool1,
            &s,
            &q,
            pos0,
            &k,
            &v,
            &mut out1,
            &mut AttnScratch::new(),
        );
        assert_eq!(out, out1);
        let last = m - 1;
        let mut solo = vec![0f32; s.n_head * s.dv];
        attention(
            &pool,
            &s,
            &q[last * s.n_head * s.dk..],
            pos0 + last,
            &k,
            &v,
            &mut solo,
            &mut AttnScratch::new(),
        );
        assert_eq!(&out[last * s.n_head * s.dv..], &solo[..]);
    }

    #[test]
    fn gqa_matches_f64_reference() {
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            dk: 64,
            dv: 64,
            k_stride: 128,
            v_stride: 128,
            v_offset: 0,
            scale: 0.125,
        };
        check(s, 7, 0, false, 2);
        check(s, 1, 20, false, 2);
        check(s, 5, 3, false, 3);
    }

    #[test]
    fn multi_head_matches_f64_reference() {
        // One KV head per query head (MLA's decompressed form: dk 192, dv 128): items are
        // blocks of 4 tokens, whose causal lengths differ.
        let s = AttnShape {
            n_head: 3,
            n_kv_head: 3,
            dk: 48,
            dv: 32,
            k_stride: 3 * 48,
            v_stride: 3 * 32,
            v_offset: 0,
            scale: 0.2,
        };
        check(s, 9, 0, false, 2);
        check(s, 6, 5, false, 2);
        check(s, 1, 11, false, 1);
        check(s, 3, 2, false, 3);
    }

    #[test]
    fn mla_shared_row_matches_f64_reference() {
        // Key = the whole [c_kv, k_pe] row (288), value = its first 256 floats.
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 1,
            dk: 288,
            dv: 256,
            k_stride: 288,
            v_stride: 288,
            v_offset: 0,
            scale: 0.1,
        };
        check(s, 6, 0, true, 2);
        check(s, 1, 40, true, 2);
    }
}
