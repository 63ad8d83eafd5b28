//! Causal attention over a KV cache, split across the pool by (token, head).
//!
//! One kernel covers both attention kinds we run:
//! - grouped-query attention: K and V rows of `n_kv_head` heads each;
//! - DeepSeek MLA in the absorbed form: one shared "head" whose key is the cached
//!   `[c_kv, k_pe]` row (the query is `[q·W_UK, q_pe]`) and whose value is the `c_kv`
//!   part of the same row — so `k` and `v` may be the same buffer.
//!
//! A work item is up to 16 query rows that read the same keys and values: heads of one
//! token sharing a KV head (GQA groups, MLA's absorbed form: 16 heads per latent row), or,
//! when fewer heads share one, the same heads of consecutive tokens (multi-head attention,
//! MLA's decompressed form). Keys are scored in tiles of 4 query rows × 3 cached rows
//! (7 loads per 12 FMAs; × 6 where AVX-512 gives 32 registers: 10 loads per 24 FMAs, one
//! call per item) and values (register tiles of 4 rows × 16 floats, × 32 with AVX-512)
//! summed in blocks of 64 positions that stay in cache while every row tile of the item
//! passes over them, so each cached row comes from memory once per item, not once per
//! head.
//!
//! Every (query row, cached row) score is computed by the same code whatever the tiling,
//! each row's softmax runs over its own causal length, and its weighted sum adds the
//! positions in order (a shorter row's extra positions get weight 0): a token's output
//! does not depend on the item shapes, on which thread ran it, or on the rest of the
//! batch.

use crate::pool::SharedMut;
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
    /// Floats from one KV head's key (value) row to the next head's at the same position:
    /// `dk` (`dv`) when heads are interleaved per position; `n_ctx·dk` for a head-major
    /// buffer, whose per-head rows are then contiguous (`k_stride = dk`).
    pub k_head: usize,
    pub v_head: usize,
    /// Multiplier of q·k.
    pub scale: f32,
}

/// Per-thread score and output buffers.
#[derive(Default, Debug)]
pub struct AttnScratch {
    scores: Vec<f32>,
    per_thread: usize,
}

/// Most query rows per work item.
const MAX_ROWS: usize = 16;
/// Query rows and cached rows of one score tile.
const TILE_Q: usize = 4;
const TILE_K: usize = 3;
/// Positions per value block (64 rows of ≤ 2 KiB stay in L2 while all row tiles pass).
const VALUE_BLOCK: usize = 64;

impl AttnScratch {
    /// An empty scratch.
    pub fn new() -> AttnScratch {
        AttnScratch::default()
    }
    /// Room for attention over up to `n_ctx` positions with values `dv` wide on
    /// `n_threads` threads, so that [`attention`] never grows it (it would, once, for a
    /// longer context).
    pub fn reserve_for(&mut self, n_threads: usize, n_ctx: usize, dv: usize) {
        self.reserve(n_threads, MAX_ROWS * n_ctx + MAX_ROWS * dv);
    }
    /// Room for `floats` per thread: afterwards `per_thread ≥ floats` and the buffer holds
    /// `n_threads · per_thread` (a scratch may be reused with pools of other sizes).
    fn reserve(&mut self, n_threads: usize, floats: usize) {
        self.per_thread = self.per_thread.max(floats);
        let want = n_threads * self.per_thread;
        if self.scores.len() < want {
            self.scores.resize(want, 0.0);
        }
    }
}

/// Item shape: (heads per item, tokens per item). As many rows as fit (≤ 16) so cached
/// rows are reused, but at least one item per thread when there are enough rows.
fn item_shape(n_head: usize, group: usize, m: usize, n_threads: usize) -> (usize, usize) {
    let mut best = (1, 1);
    for hb in [16, 8, 4, 2, 1] {
        if group % hb != 0 {
            continue;
        }
        let tb = (MAX_ROWS / hb).clamp(1, m.max(1));
        best = (hb, tb);
        if (n_head / hb) * m.div_ceil(tb) >= n_threads {
            break;
        }
    }
    best
}

/// What some models add to plain causal attention (gpt-oss has both).
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnOpts<'a> {
    /// Sliding window: the query at position `p` sees positions `p − window + 1 ..= p`
    /// only (llama.cpp's standard SWA, HF's `sliding_window`).
    pub window: Option<usize>,
    /// Attention sinks, one logit per query head: it joins each row's softmax denominator
    /// (not scaled by `scale`) and has no value.
    pub sinks: Option<&'a [f32]>,
}

/// `out[t, h] = softmax(scale · q[t, h] · K[0..=pos0+t]) · V[0..=pos0+t]` for the `m`
/// tokens of one sequence at positions `pos0..pos0+m`, whose keys/values (including
/// these tokens') are already in `k` / `v`. `q` is `m × n_head × dk`, `out` is
/// `m × n_head × dv`.
#[allow(clippy::too_many_arguments)]
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
    attention_with(pool, s, AttnOpts::default(), q, pos0, k, v, out, scratch)
}

/// [`attention`] with a sliding window and/or attention sinks ([`AttnOpts`]). Positions
/// are relative to `k`/`v`: a caller whose cache holds only a window passes the slice
/// that starts at its first kept position and `pos0` counted from there.
#[allow(clippy::too_many_arguments)]
pub fn attention_with(
    pool: &ThreadPool,
    s: &AttnShape,
    opts: AttnOpts<'_>,
    q: &[f32],
    pos0: usize,
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    if let Some(sinks) = opts.sinks {
        assert_eq!(sinks.len(), s.n_head, "attention: one sink per head");
    }
    assert!(opts.window != Some(0), "attention: a window of 0 positions");
    let m = q.len() / (s.n_head * s.dk);
    assert_eq!(q.len(), m * s.n_head * s.dk, "attention: q length");
    assert_eq!(out.len(), m * s.n_head * s.dv, "attention: out length");
    assert!(
        s.n_kv_head > 0 && s.n_head % s.n_kv_head == 0,
        "attention: heads"
    );
    if m == 0 {
        return;
    }
    let n_ctx = pos0 + m;
    assert!(
        k.len() >= (n_ctx - 1) * s.k_stride + (s.n_kv_head - 1) * s.k_head + s.dk,
        "attention: key cache too short"
    );
    assert!(
        v.len() >= (n_ctx - 1) * s.v_stride + s.v_offset + (s.n_kv_head - 1) * s.v_head + s.dv,
        "attention: value cache too short"
    );
    let group = s.n_head / s.n_kv_head;
    let (hb, tb) = item_shape(s.n_head, group, m, pool.n_threads());
    let (head_blocks, token_blocks) = (s.n_head / hb, m.div_ceil(tb));
    // Per thread: 16 score rows of n_ctx, then 16 output rows of dv.
    scratch.reserve_for(pool.n_threads(), n_ctx, s.dv);
    let per_thread = scratch.per_thread;
    let scores_ptr = SharedMut(scratch.scores.as_mut_ptr());
    let out_ptr = SharedMut(out.as_mut_ptr());
    let n_items = token_blocks * head_blocks;
    let chunk = n_items.div_ceil(4 * pool.n_threads()).max(1);
    pool.run_chunked(n_items, chunk, |items, tid| {
        // SAFETY: thread `tid` alone uses scratch row `tid` (per_thread ≥ the 16·(n_ctx + dv) floats reserved).
        let scratch = unsafe {
            std::slice::from_raw_parts_mut(scores_ptr.get().add(tid * per_thread), per_thread)
        };
        for item in items {
            let (t0, h0) = ((item / head_blocks) * tb, (item % head_blocks) * hb);
            let nt = tb.min(m - t0);
            let rows = nt * hb;
            let g = h0 / group;
            // Row r = (token t0 + r / hb, head h0 + r % hb).
            let row_th = |r: usize| (t0 + r / hb, h0 + r % hb);
            let ctx_max = pos0 + t0 + nt;
            let q_row = |r: usize| {
                let (t, h) = row_th(r);
                &q[(t * s.n_head + h) * s.dk..(t * s.n_head + h + 1) * s.dk]
            };
            let (sc, outs) = scratch.split_at_mut(MAX_ROWS * n_ctx);
            let sc = &mut sc[..rows * ctx_max];
            let mut qs: [&[f32]; MAX_ROWS] = [&[]; MAX_ROWS];
            for (r, slot) in qs.iter_mut().take(rows).enumerate() {
                *slot = q_row(r);
            }
            let ks = Rows {
                data: &k[g * s.k_head..],
                stride: s.k_stride,
                width: s.dk,
            };
            item_scores(&qs[..rows], ctx_max, &ks, s.scale, sc);
            for (r, row) in sc.chunks_exact_mut(ctx_max).enumerate() {
                // Causal length of this row's token; later positions (and, with a window,
                // earlier ones) get weight 0.
                let (t, h) = row_th(r);
                let ctx = pos0 + t + 1;
                let start = opts.window.map_or(0, |w| ctx.saturating_sub(w));
                let (seen, later) = row.split_at_mut(ctx);
                let (earlier, live) = seen.split_at_mut(start);
                match opts.sinks {
                    Some(sinks) => crate::softmax::softmax_with_sink_inplace(live, sinks[h]),
                    None => crate::softmax::softmax_inplace(live),
                }
                earlier.fill(0.0);
                later.fill(0.0);
            }
            let vs = Rows {
                data: &v[s.v_offset + g * s.v_head..],
                stride: s.v_stride,
                width: s.dv,
            };
            let o = &mut outs[..rows * s.dv];
            item_values(sc, rows, ctx_max, &vs, o);
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

/// `scores[r·ctx + j] = scale · q_r · k_j` for the item's query rows `qs` and positions
/// `0..ctx`, in tiles of 4 rows × 3 positions (AVX2) or × 6 (AVX-512's 32 registers);
/// short tiles repeat their last row / position and drop the extra results. Every pair is
/// summed the same way whatever the tile.
fn item_scores(qs: &[&[f32]], ctx: usize, ks: &Rows<'_>, scale: f32, scores: &mut [f32]) {
    let rows = qs.len();
    assert!(
        ctx == 0 || ks.data.len() >= (ctx - 1) * ks.stride + ks.width,
        "attention: key rows out of range"
    );
    assert!(scores.len() >= rows * ctx, "attention: score rows");
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() {
        // SAFETY: AVX2+FMA (and AVX-512 VL for the wide tiles) checked at run time; key
        // rows 0..ctx are in range (asserted above), scores hold rows·ctx.
        unsafe {
            if crate::simd::has_avx512vl() {
                avx2::item_scores_wide(qs, ctx, ks, scale, scores)
            } else {
                avx2::item_scores(qs, ctx, ks, scale, scores)
            }
        };
        return;
    }
    for j in 0..ctx {
        for (r, q) in qs.iter().enumerate() {
            scores[r * ctx + j] = dot(q, ks.row(j)) * scale;
        }
    }
}

/// Cached rows: row `j` is `data[j·stride..j·stride + width]`.
struct Rows<'a> {
    data: &'a [f32],
    stride: usize,
    width: usize,
}

impl Rows<'_> {
    #[inline(always)]
    fn row(&self, j: usize) -> &[f32] {
        &self.data[j * self.stride..j * self.stride + self.width]
    }
}

/// `out[r] = Σ_j p[r·ctx + j] · v_j` (rows of `dv`), positions added in order. Blocks of
/// 64 positions: every tile of 4 rows passes over a block while it is in cache.
fn item_values(p: &[f32], rows: usize, ctx: usize, vs: &Rows<'_>, out: &mut [f32]) {
    let dv = vs.width;
    assert!(
        ctx == 0 || vs.data.len() >= (ctx - 1) * vs.stride + dv,
        "attention: value rows out of range"
    );
    out.fill(0.0);
    #[cfg(target_arch = "x86_64")]
    if crate::simd::has_avx2_fma() && dv % 8 == 0 {
        // SAFETY: AVX2+FMA (and AVX-512 VL for the wide chunks) checked at run time; out
        // holds rows·dv, p holds rows·ctx, rows j < ctx of `vs` are in range (asserted
        // above).
        unsafe {
            if crate::simd::has_avx512vl() {
                avx2::item_values_wide(p, rows, ctx, vs, out)
            } else {
                avx2::item_values(p, rows, ctx, vs, out)
            }
        };
        return;
    }
    for j0 in (0..ctx).step_by(VALUE_BLOCK) {
        let j1 = (j0 + VALUE_BLOCK).min(ctx);
        for r0 in (0..rows).step_by(TILE_Q) {
            let nr = TILE_Q.min(rows - r0);
            let o = &mut out[r0 * dv..(r0 + nr) * dv];
            for j in j0..j1 {
                let vr = vs.row(j);
                for i in 0..nr {
                    axpy(&mut o[i * dv..(i + 1) * dv], p[(r0 + i) * ctx + j], vr);
                }
            }
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
    use super::{Rows, TILE_K, TILE_Q, VALUE_BLOCK};
    use std::arch::x86_64::*;
    use std::ops::Range;

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
        let mut sum = hsum(_mm256_add_ps(s0, s1));
        while i < n {
            sum += a[i] * b[i];
            i += 1;
        }
        sum
    }

    /// 4 query rows × TK key rows: per pair, one 8-lane FMA accumulator over the full
    /// 8-float chunks, a horizontal sum, then the scalar tail. TK = 3: 12 accumulators +
    /// the 4 query vectors fill AVX2's 16 registers; TK = 6 takes 28 of AVX-512's 32.
    #[inline(always)]
    unsafe fn dot_tile<const TK: usize>(
        qs: &[&[f32]; TILE_Q],
        ks: &[&[f32]; TK],
    ) -> [[f32; TK]; TILE_Q] {
        let n = qs
            .iter()
            .chain(ks.iter())
            .map(|r| r.len())
            .min()
            .unwrap_or(0);
        let mut acc = [[_mm256_setzero_ps(); TK]; TILE_Q];
        let mut i = 0;
        // SAFETY: loads of 8 floats at i ≤ n − 8 of rows at least n long.
        unsafe {
            while i + 8 <= n {
                let q: [__m256; TILE_Q] =
                    std::array::from_fn(|r| _mm256_loadu_ps(qs[r].as_ptr().add(i)));
                for j in 0..TK {
                    let kv = _mm256_loadu_ps(ks[j].as_ptr().add(i));
                    for r in 0..TILE_Q {
                        acc[r][j] = _mm256_fmadd_ps(q[r], kv, acc[r][j]);
                    }
                }
                i += 8;
            }
        }
        let mut out = [[0f32; TK]; TILE_Q];
        for j in 0..TK {
            // The 4 rows' sums of key j at once (the same tree for every slot).
            let s = hsum4([acc[0][j], acc[1][j], acc[2][j], acc[3][j]]);
            for r in 0..TILE_Q {
                let mut x = s[r];
                for t in i..n {
                    x += qs[r][t] * ks[j][t];
                }
                out[r][j] = x;
            }
        }
        out
    }

    /// [`super::item_scores`] with tiles of 4 rows × TK positions: positions outer, row
    /// tiles inner, so each cached row is read from memory once per item (the item's ≤ 16
    /// query rows stay in L1).
    ///
    /// # Safety
    /// Needs AVX2 and FMA (enabled by the caller); `ks` holds rows `0..ctx` and `scores`
    /// `qs.len()·ctx` floats.
    #[inline(always)]
    unsafe fn scores<const TK: usize>(
        qs: &[&[f32]],
        ctx: usize,
        ks: &Rows<'_>,
        scale: f32,
        scores: &mut [f32],
    ) {
        let rows = qs.len();
        for j0 in (0..ctx).step_by(TK) {
            let kt: [&[f32]; TK] = std::array::from_fn(|i| ks.row((j0 + i).min(ctx - 1)));
            for r0 in (0..rows).step_by(TILE_Q) {
                let qt: [&[f32]; TILE_Q] = std::array::from_fn(|i| qs[(r0 + i).min(rows - 1)]);
                // SAFETY: forwarded (AVX2+FMA enabled by the callers).
                let d = unsafe { dot_tile::<TK>(&qt, &kt) };
                for (i, row) in d.iter().enumerate().take(rows - r0) {
                    for (jj, &x) in row.iter().enumerate().take(ctx - j0) {
                        scores[(r0 + i) * ctx + j0 + jj] = x * scale;
                    }
                }
            }
        }
    }

    /// # Safety
    /// Needs AVX2 and FMA; `ks` holds rows `0..ctx`, `out` `qs.len()·ctx` floats.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn item_scores(
        qs: &[&[f32]],
        ctx: usize,
        ks: &Rows<'_>,
        scale: f32,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { scores::<TILE_K>(qs, ctx, ks, scale, out) }
    }

    /// [`item_scores`] in 4 × 6 tiles (the upper 16 vector registers of AVX-512 VL).
    ///
    /// # Safety
    /// As [`item_scores`], and needs AVX-512 F + VL.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub unsafe fn item_scores_wide(
        qs: &[&[f32]],
        ctx: usize,
        ks: &Rows<'_>,
        scale: f32,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { scores::<{ 2 * TILE_K }>(qs, ctx, ks, scale, out) }
    }

    /// The horizontal sums of 4 vectors, each as ((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)):
    /// 3 `hadd`s and one add instead of 4 separate reductions.
    #[inline(always)]
    fn hsum4(v: [__m256; 4]) -> [f32; 4] {
        // SAFETY: only called from AVX2-enabled functions.
        unsafe {
            let h01 = _mm256_hadd_ps(v[0], v[1]);
            let h23 = _mm256_hadd_ps(v[2], v[3]);
            let h = _mm256_hadd_ps(h01, h23);
            let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
            let mut out = [0f32; 4];
            _mm_storeu_ps(out.as_mut_ptr(), s);
            out
        }
    }

    /// [`super::item_values`]: per block of [`VALUE_BLOCK`] positions, each tile of ≤ 4
    /// rows accumulates column chunks of `8·NV` floats in registers over the block's
    /// positions, in order (every output element is one FMA chain over j whatever NV).
    ///
    /// # Safety
    /// Needs AVX2 and FMA (enabled by the caller); `vs.width` (`dv`) is a multiple of 8,
    /// `out` holds `rows·dv`, `p` holds `rows·ctx`, and `vs` holds rows `0..ctx`.
    #[inline(always)]
    unsafe fn values<const NV: usize>(
        p: &[f32],
        rows: usize,
        ctx: usize,
        vs: &Rows<'_>,
        out: &mut [f32],
    ) {
        let dv = vs.width;
        for j0 in (0..ctx).step_by(VALUE_BLOCK) {
            let j1 = (j0 + VALUE_BLOCK).min(ctx);
            for r0 in (0..rows).step_by(TILE_Q) {
                let nr = TILE_Q.min(rows - r0);
                let (pr, o) = (&p[r0 * ctx..], &mut out[r0 * dv..(r0 + nr) * dv]);
                let mut c = 0;
                // SAFETY (both loops): forwarded; each chunk lies within dv.
                while c + 8 * NV <= dv {
                    unsafe { weighted_chunk::<NV>(pr, nr, ctx, j0..j1, vs, o, c) };
                    c += 8 * NV;
                }
                while c + 8 <= dv {
                    unsafe { weighted_chunk::<1>(pr, nr, ctx, j0..j1, vs, o, c) };
                    c += 8;
                }
            }
        }
    }

    /// `o[r·dv + c .. + 8·N] += Σ_{j ∈ js} p[r·ctx + j] · v_row(j)[c .. c + 8·N]` for `nr`
    /// ≤ 4 rows, the sums in registers, positions in order.
    ///
    /// # Safety
    /// AVX2 and FMA enabled; `c + 8·N ≤ dv = vs.width`, `o` holds `nr·dv`, `p` holds
    /// `nr·ctx`, `js ⊆ 0..ctx`, and `vs` holds rows `0..ctx`.
    #[inline(always)]
    unsafe fn weighted_chunk<const N: usize>(
        p: &[f32],
        nr: usize,
        ctx: usize,
        js: Range<usize>,
        vs: &Rows<'_>,
        o: &mut [f32],
        c: usize,
    ) {
        let dv = vs.width;
        let mut acc = [[_mm256_setzero_ps(); N]; TILE_Q];
        // SAFETY (all loads/stores below): c + 8·N ≤ dv = the row width, r·dv + c + 8·N ≤
        // nr·dv, row j < ctx starts at j·stride (in range per the contract), and
        // p[r·ctx + j] with r < nr, j < ctx likewise.
        unsafe {
            for (r, a) in acc.iter_mut().enumerate().take(nr) {
                for (k, x) in a.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(o.as_ptr().add(r * dv + c + 8 * k));
                }
            }
            for j in js {
                let vr = vs.data.as_ptr().add(j * vs.stride + c);
                let v: [__m256; N] = std::array::from_fn(|k| _mm256_loadu_ps(vr.add(8 * k)));
                for (r, a) in acc.iter_mut().enumerate().take(nr) {
                    let w = _mm256_set1_ps(*p.get_unchecked(r * ctx + j));
                    for k in 0..N {
                        a[k] = _mm256_fmadd_ps(w, v[k], a[k]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate().take(nr) {
                for (k, x) in a.iter().enumerate() {
                    _mm256_storeu_ps(o.as_mut_ptr().add(r * dv + c + 8 * k), *x);
                }
            }
        }
    }

    /// # Safety
    /// As [`values`]; needs AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn item_values(p: &[f32], rows: usize, ctx: usize, vs: &Rows<'_>, out: &mut [f32]) {
        // SAFETY: forwarded.
        unsafe { values::<2>(p, rows, ctx, vs, out) }
    }

    /// [`item_values`] in 32-float column chunks (16 accumulators: AVX-512 VL's upper
    /// registers).
    ///
    /// # Safety
    /// As [`values`]; needs AVX2, FMA and AVX-512 F + VL.
    #[target_feature(enable = "avx2,fma,avx512f,avx512vl")]
    pub unsafe fn item_values_wide(
        p: &[f32],
        rows: usize,
        ctx: usize,
        vs: &Rows<'_>,
        out: &mut [f32],
    ) {
        // SAFETY: forwarded.
        unsafe { values::<4>(p, rows, ctx, vs, out) }
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
        reference_with(s, AttnOpts::default(), q, pos0, k, v)
    }

    /// Straightforward f64 attention with a window and sinks.
    fn reference_with(
        s: &AttnShape,
        opts: AttnOpts<'_>,
        q: &[f32],
        pos0: usize,
        k: &[f32],
        v: &[f32],
    ) -> Vec<f64> {
        let m = q.len() / (s.n_head * s.dk);
        let mut out = vec![0f64; m * s.n_head * s.dv];
        for t in 0..m {
            for h in 0..s.n_head {
                let g = h / (s.n_head / s.n_kv_head);
                let ctx = pos0 + t + 1;
                let start = opts.window.map_or(0, |w| ctx.saturating_sub(w));
                let sc: Vec<f64> = (start..ctx)
                    .map(|j| {
                        (0..s.dk)
                            .map(|i| {
                                q[(t * s.n_head + h) * s.dk + i] as f64
                                    * k[j * s.k_stride + g * s.k_head + i] as f64
                            })
                            .sum::<f64>()
                            * s.scale as f64
                    })
                    .collect();
                let sink = opts.sinks.map(|sk| sk[h] as f64);
                let mx = sc.iter().cloned().fold(sink.unwrap_or(f64::MIN), f64::max);
                let e: Vec<f64> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f64 = e.iter().sum::<f64>() + sink.map_or(0.0, |sk| (sk - mx).exp());
                for (jw, p) in e.iter().enumerate() {
                    let j = start + jw;
                    for i in 0..s.dv {
                        out[(t * s.n_head + h) * s.dv + i] +=
                            p / z * v[j * s.v_stride + s.v_offset + g * s.v_head + i] as f64;
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
        let k_len = (n_ctx - 1) * s.k_stride + (s.n_kv_head - 1) * s.k_head + s.dk;
        let k: Vec<f32> = (0..k_len.max(n_ctx * s.k_stride))
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let v_len = (n_ctx - 1) * s.v_stride + s.v_offset + (s.n_kv_head - 1) * s.v_head + s.dv;
        let v: Vec<f32> = if shared_kv {
            k.clone()
        } else {
            (0..v_len.max(n_ctx * s.v_stride))
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

    /// The AVX2 (4 × 3) and AVX-512 (4 × 6) score tiles give the same bits for every pair,
    /// whatever the row and position counts (short tiles included).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn score_tiles_agree() {
        if !crate::simd::has_avx512vl() {
            return; // nothing to compare on this CPU (the AVX2 path is the only one)
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for (rows, ctx, dk) in [(16, 37, 192), (5, 1, 64), (3, 8, 20), (16, 64, 576)] {
            let q: Vec<Vec<f32>> = (0..rows)
                .map(|_| (0..dk).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            // Rows `stride` apart from an offset, as one head of an interleaved cache.
            let stride = 2 * dk + 4;
            let k: Vec<f32> = (0..ctx * stride + dk)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let qs: Vec<&[f32]> = q.iter().map(|r| r.as_slice()).collect();
            let ks = Rows {
                data: &k[dk..],
                stride,
                width: dk,
            };
            let (mut a, mut b) = (vec![0f32; rows * ctx], vec![1f32; rows * ctx]);
            // SAFETY: AVX2+FMA and AVX-512 VL checked above; `ks` holds ctx rows of dk.
            unsafe {
                avx2::item_scores(&qs, ctx, &ks, 0.5, &mut a);
                avx2::item_scores_wide(&qs, ctx, &ks, 0.5, &mut b);
            }
            assert_eq!(a, b, "rows {rows} ctx {ctx} dk {dk}");
        }
    }

    /// The AVX2 (16-float) and AVX-512 (32-float) value chunks give the same bits, for
    /// widths with and without a tail chunk and contexts across value blocks.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn value_chunks_agree() {
        if !crate::simd::has_avx512vl() {
            return; // nothing to compare on this CPU (the AVX2 path is the only one)
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for (rows, ctx, dv) in [(16, 130, 128), (7, 64, 40), (3, 1, 8), (5, 200, 512)] {
            let p: Vec<f32> = (0..rows * ctx)
                .map(|_| rng.random_range(0.0..1.0))
                .collect();
            let stride = dv + 24;
            let v: Vec<f32> = (0..ctx * stride)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let vs = Rows {
                data: &v[8..],
                stride,
                width: dv,
            };
            let (mut a, mut b) = (vec![0f32; rows * dv], vec![0f32; rows * dv]);
            // SAFETY: AVX2+FMA and AVX-512 VL checked above; dv is a multiple of 8, `vs`
            // holds ctx rows of dv, p rows·ctx, the outputs rows·dv.
            unsafe {
                avx2::item_values(&p, rows, ctx, &vs, &mut a);
                avx2::item_values_wide(&p, rows, ctx, &vs, &mut b);
            }
            assert_eq!(a, b, "rows {rows} ctx {ctx} dv {dv}");
        }
    }

    /// Head-major buffers (each head's rows contiguous, as the MLA decompressed form
    /// stores them): multi-head attention with `k_stride = dk` and `k_head = n_ctx·dk`.
    #[test]
    fn head_major_matches_f64_reference() {
        for (m, pos0, threads) in [(7, 0, 2), (1, 20, 2), (19, 5, 3)] {
            let n_ctx = pos0 + m;
            let (dk, dv) = (24, 16);
            let s = AttnShape {
                n_head: 3,
                n_kv_head: 3,
                dk,
                dv,
                k_stride: dk,
                v_stride: dv,
                v_offset: 0,
                k_head: n_ctx * dk,
                v_head: n_ctx * dv,
                scale: 0.2,
            };
            check(s, m, pos0, false, threads);
        }
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
            k_head: 64,
            v_head: 64,
            scale: 0.125,
        };
        check(s, 7, 0, false, 2);
        check(s, 1, 20, false, 2);
        check(s, 5, 3, false, 3);
    }

    #[test]
    fn scratch_reused_across_pool_sizes_covers_every_thread() {
        // Big rows for 1 thread, then smaller rows for 3 threads: every thread's slice
        // (per_thread floats each) must lie inside the buffer.
        let mut sc = AttnScratch::new();
        sc.reserve(1, 1000);
        sc.reserve(3, 500);
        assert!(sc.per_thread >= 500 && sc.scores.len() >= 3 * sc.per_thread);
        sc.reserve(2, 2000);
        assert!(sc.per_thread >= 2000 && sc.scores.len() >= 2 * sc.per_thread);
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
            k_head: 48,
            v_head: 32,
            scale: 0.2,
        };
        check(s, 9, 0, false, 2);
        check(s, 6, 5, false, 2);
        check(s, 1, 11, false, 1);
        check(s, 3, 2, false, 3);
    }

    #[test]
    fn sixteen_heads_long_context_match_f64_reference() {
        // 16 query heads per KV row (items of up to 16 rows, several score tiles) over
        // contexts longer than one 64-position value block; and 8 heads per KV head.
        let mla = AttnShape {
            n_head: 16,
            n_kv_head: 1,
            dk: 40,
            dv: 32,
            k_stride: 40,
            v_stride: 40,
            v_offset: 0,
            k_head: 40,
            v_head: 32,
            scale: 0.15,
        };
        check(mla, 7, 100, true, 2);
        check(mla, 1, 150, true, 2);
        check(mla, 20, 3, true, 3);
        let gqa = AttnShape {
            n_head: 16,
            n_kv_head: 2,
            dk: 24,
            dv: 16,
            k_stride: 48,
            v_stride: 32,
            v_offset: 0,
            k_head: 24,
            v_head: 16,
            scale: 0.2,
        };
        check(gqa, 5, 70, false, 2);
        check(gqa, 1, 0, false, 1);
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
            k_head: 288,
            v_head: 256,
            scale: 0.1,
        };
        check(s, 6, 0, true, 2);
        check(s, 1, 40, true, 2);
    }

    /// Sliding window and sinks against the f64 reference, on one and two threads, and a
    /// token's row alone equal to its row in the batch.
    #[test]
    fn window_and_sinks_match_f64_reference() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(19);
        let s = AttnShape {
            n_head: 4,
            n_kv_head: 2,
            dk: 64,
            dv: 64,
            k_stride: 128,
            v_stride: 128,
            v_offset: 0,
            k_head: 64,
            v_head: 64,
            scale: 0.125,
        };
        let sinks: Vec<f32> = (0..4).map(|_| rng.random_range(-2.0..3.0)).collect();
        for (window, pos0, m) in [
            (Some(8), 0, 20),
            (Some(8), 13, 5),
            (Some(1), 3, 4),
            (None, 5, 9),
        ] {
            let n_ctx = pos0 + m;
            let q: Vec<f32> = (0..m * 4 * 64)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let k: Vec<f32> = (0..n_ctx * 128)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let v: Vec<f32> = (0..n_ctx * 128)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let opts = AttnOpts {
                window,
                sinks: Some(&sinks),
            };
            let want = reference_with(&s, opts, &q, pos0, &k, &v);
            let mut outs = Vec::new();
            for threads in [1, 2] {
                let pool = ThreadPool::new(threads);
                let mut out = vec![0f32; m * 4 * 64];
                let mut scratch = AttnScratch::new();
                attention_with(&pool, &s, opts, &q, pos0, &k, &v, &mut out, &mut scratch);
                for (a, b) in out.iter().zip(&want) {
                    assert!(
                        (*a as f64 - b).abs() < 1e-4,
                        "{window:?} {pos0} {m}: {a} vs {b}"
                    );
                }
                outs.push(out);
            }
            assert_eq!(outs[0], outs[1]);
            let pool = ThreadPool::new(2);
            let mut solo = vec![0f32; 4 * 64];
            let last = m - 1;
            attention_with(
                &pool,
                &s,
                opts,
                &q[last * 4 * 64..],
                pos0 + last,
                &k,
                &v,
                &mut solo,
                &mut AttnScratch::new(),
            );
            assert_eq!(&outs[0][last * 4 * 64..], &solo[..]);
        }
    }
}
