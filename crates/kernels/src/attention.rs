//! Causal attention over a KV cache, split across the pool by (token, head).
//!
//! One kernel covers both attention kinds we run:
//! - grouped-query attention: K and V rows of `n_kv_head` heads each;
//! - DeepSeek MLA in the absorbed form: one shared "head" whose key is the cached
//!   `[c_kv, k_pe]` row (the query is `[q·W_UK, q_pe]`) and whose value is the `c_kv`
//!   part of the same row — so `k` and `v` may be the same buffer.
//!
//! Each (token, head) item computes all its scores, a max-subtracted softmax and the
//! weighted sum of values in a fixed order, so a token's output never depends on which
//! thread ran it or what else was in the batch.

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

/// Per-thread score buffers.
#[derive(Default, Debug)]
pub struct AttnScratch {
    scores: Vec<f32>,
    per_thread: usize,
}

impl AttnScratch {
    /// An empty scratch.
    pub fn new() -> AttnScratch {
        AttnScratch::default()
    }
    fn reserve(&mut self, n_threads: usize, n_ctx: usize) {
        if self.per_thread < n_ctx || self.scores.len() < n_threads * n_ctx {
            self.per_thread = self.per_thread.max(n_ctx);
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
    assert!(s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0, "attention: heads");
    let n_ctx = pos0 + m;
    assert!(k.len() >= (n_ctx - 1) * s.k_stride + s.n_kv_head * s.dk, "attention: key cache too short");
    assert!(v.len() >= (n_ctx - 1) * s.v_stride + s.v_offset + s.n_kv_head * s.dv, "attention: value cache too short");
    scratch.reserve(pool.n_threads(), n_ctx);
    let per_thread = scratch.per_thread;
    let scores_ptr = SharedMut(scratch.scores.as_mut_ptr());
    let out_ptr = SharedMut(out.as_mut_ptr());
    let group = s.n_head / s.n_kv_head;
    let chunk = (m * s.n_head).div_ceil(4 * pool.n_threads()).max(1);
    pool.run_chunked(m * s.n_head, chunk, |items, tid| {
        // SAFETY: thread `tid` alone uses score row `tid` (per_thread floats, reserved above).
        let scores = unsafe { std::slice::from_raw_parts_mut(scores_ptr.get().add(tid * per_thread), per_thread) };
        for item in items {
            let (t, h) = (item / s.n_head, item % s.n_head);
            let g = h / group;
            let ctx = pos0 + t + 1;
            let qh = &q[(t * s.n_head + h) * s.dk..(t * s.n_head + h + 1) * s.dk];
            let mut max = f32::NEG_INFINITY;
            for (j, score) in scores[..ctx].iter_mut().enumerate() {
                let kr = &k[j * s.k_stride + g * s.dk..j * s.k_stride + (g + 1) * s.dk];
                *score = dot(qh, kr) * s.scale;
                max = max.max(*score);
            }
            let mut sum = 0.0f32;
            for score in scores[..ctx].iter_mut() {
                *score = (*score - max).exp();
                sum += *score;
            }
            // SAFETY: item (t, h) owns out[(t·n_head + h)·dv ..][..dv]; items are disjoint.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((t * s.n_head + h) * s.dv), s.dv) };
            o.fill(0.0);
            let inv = 1.0 / sum;
            for (j, &p) in scores[..ctx].iter().enumerate() {
                let base = j * s.v_stride + s.v_offset + g * s.dv;
                axpy(o, p * inv, &v[base..base + s.dv]);
            }
        }
    });
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
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i + 8)), _mm256_loadu_ps(b.as_ptr().add(i + 8)), s1);
                i += 16;
            }
            if i + 8 <= n {
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), _mm256_loadu_ps(b.as_ptr().add(i)), s0);
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
                _mm256_storeu_ps(p, _mm256_fmadd_ps(va, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(p)));
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
                        (0..s.dk).map(|i| q[(t * s.n_head + h) * s.dk + i] as f64 * k[j * s.k_stride + g * s.dk + i] as f64).sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for i in 0..s.dv {
                        out[(t * s.n_head + h) * s.dv + i] += p / z * v[j * s.v_stride + s.v_offset + g * s.dv + i] as f64;
                    }
                }
            }
        }
        out
    }

    fn check(s: AttnShape, m: usize, pos0: usize, shared_kv: bool, threads: usize) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let n_ctx = pos0 + m;
        let q: Vec<f32> = (0..m * s.n_head * s.dk).map(|_| rng.random_range(-1.0..1.0)).collect();
        let k: Vec<f32> = (0..n_ctx * s.k_stride).map(|_| rng.random_range(-1.0..1.0)).collect();
        let v: Vec<f32> = if shared_kv { k.clone() } else { (0..n_ctx * s.v_stride).map(|_| rng.random_range(-1.0..1.0)).collect() };
        let pool = ThreadPool::new(threads);
        let mut out = vec![0f32; m * s.n_head * s.dv];
        attention(&pool, &s, &q, pos0, &k, &v, &mut out, &mut AttnScratch::new());
        let want = reference(&s, &q, pos0, &k, &v);
        for (a, b) in out.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-4, "{a} vs {b}");
        }
        // Same bits with one thread, and for the last token computed alone.
        let pool1 = ThreadPool::new(1);
        let mut out1 = vec![0f32; out.len()];
        attention(&pool1, &s, &q, pos0, &k, &v, &mut out1, &mut AttnScratch::new());
        assert_eq!(out, out1);
        let last = m - 1;
        let mut solo = vec![0f32; s.n_head * s.dv];
        attention(&pool, &s, &q[last * s.n_head * s.dk..], pos0 + last, &k, &v, &mut solo, &mut AttnScratch::new());
        assert_eq!(&out[last * s.n_head * s.dv..], &solo[..]);
    }

    #[test]
    fn gqa_matches_f64_reference() {
        let s = AttnShape { n_head: 4, n_kv_head: 2, dk: 64, dv: 64, k_stride: 128, v_stride: 128, v_offset: 0, scale: 0.125 };
        check(s, 7, 0, false, 2);
        check(s, 1, 20, false, 2);
        check(s, 5, 3, false, 3);
    }

    #[test]
    fn mla_shared_row_matches_f64_reference() {
        // Key = the whole [c_kv, k_pe] row (288), value = its first 256 floats.
        let s = AttnShape { n_head: 4, n_kv_head: 1, dk: 288, dv: 256, k_stride: 288, v_stride: 288, v_offset: 0, scale: 0.1 };
        check(s, 6, 0, true, 2);
        check(s, 1, 40, true, 2);
    }
}
