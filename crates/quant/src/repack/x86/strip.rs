//! Prompt GEMMs on AVX-512 VNNI over *decoded strips*: the weights of a pair of packed
//! groups (16 rows) decoded once per strip of blocks into plain bytes, then a `vpdpbusd`
//! GEMM over them for every token of the call.
//!
//! A layout's tile decodes each block for every tile of its tokens (4 for Q6_Kx8 and the
//! codebook and IQ1 layouts): Q6_K's 6-bit values cost 16 shifts, masks and ORs per 64
//! values, an IQ1 group of 8 values a grid load and its share of the vector assembly, and
//! at 4 tokens that decode costs as much as the `vpdpbusd` themselves or more (in-cache
//! GEMM per thread on Zen 4: Q6_Kx8 ~118 G MAC/s, IQ1_Sx8 ~65, against ~180 for Q4_Kx8).
//! For a prompt (≥ [`Strip::MIN_TOKENS`] tokens per call), each thread instead decodes a
//! strip of [`STRIP_BLOCKS`] blocks of a *pair* of groups once into a stack buffer that
//! stays in L2 (the layout's [`Strip::expand_pair`]) and runs every 4-token tile of the
//! call over it ([`strip_tile`]): per 4 positions one 512-bit weight load serves 16 rows ×
//! 4 tokens, and each activation broadcast feeds 16 rows. ik_llama.cpp's
//! `iqk_convert_repack` does the same for its prompt GEMMs, but re-quantizes; here the
//! decode is exact, so nothing about the result changes.
//!
//! The decoded block of a pair ([`EXP_BYTES`]), whatever the layout:
//!
//! | offset | bytes | content |
//! |---|---|---|
//! | 64v | 64 | positions 4v..4v + 4 of the 16 rows (dword lane i = row i: rows 0..8 of the first group, 8..16 of the second), as `u = w + OFFSET` (unsigned bytes) |
//! | [`EXP_SC`] + 64s | 64 | the 16 rows' scale of sub-block s (values 16s..16s + 16), i32 |
//! | [`EXP_D`] | 64 | the 16 rows' `d` (times the type's constant factor), f32 |
//!
//! where `w` is the integer weight of the layout's definition: a row's block sum is
//! `isum = Σ_s scale_s · Σ_{i in s} w_i·a_i` and the block's step `acc = fma(d·d_a, isum,
//! acc)`.
//!
//! Batch invariance: each lane computes exactly the definition's integers for its (row,
//! token) — each 16-value sub-block sum starts at the prepared `−OFFSET·bsums[s]`, gains
//! `Σ u·a` through `vpdpbusd` (so ends at `Σ w·a`), and is multiplied by its scale — then
//! the same f32 step per block in block order, with the accumulators stored and reloaded
//! unchanged between strips. So results are bit-identical to the layout's tile and to its
//! scalar definition whatever the token count or the strip a block falls in.

use super::zmm::{join, join_ps};
use super::*;

/// Blocks per strip: 32 × [`EXP_BYTES`] = 162 KiB of decoded weights on the stack, L2-
/// resident while the call's tokens stream past (V3's `ffn_down`, 72 blocks per row, is
/// 3 strips; rows of up to 32 blocks one).
const STRIP_BLOCKS: usize = 32;

/// Tokens per strip-tile call: 4 × (2 sub-block accumulators + `isum` + `acc`) 512-bit
/// vectors, with the weights and scales, stay within the 32 registers (8 tokens measured
/// slower: 168 vs 179 G MAC/s in cache, spills).
const TILE: usize = 4;

/// Offset of the scale vectors in a decoded pair block (after 64 weight vectors).
pub(super) const EXP_SC: usize = 4096;
/// Offset of the `d` vector (after 16 scale vectors).
pub(super) const EXP_D: usize = EXP_SC + 16 * 64;
/// Bytes of one decoded pair block (16 rows × 256 values).
pub(super) const EXP_BYTES: usize = EXP_D + 64;

/// Prepared bytes per (token, block): the 16 sub-blocks' `−OFFSET·bsums[s]` as i32.
const OFF_BYTES: usize = 64;

/// A packed layout of 256-value blocks × Q8_K that decodes into a strip.
pub(super) trait Strip {
    /// Bytes of one packed block (8 rows).
    const BLOCK_BYTES: usize;
    /// What the decoded bytes add to the weights (`u = w + OFFSET` is 0..=255).
    const OFFSET: i32;
    /// Fewest tokens of a call that take the strip (fewer: the layout's tile, which needs
    /// no decode pass): where the strip measured faster, 1 thread, 2048 × 1408 in cache.
    const MIN_TOKENS: usize;
    /// The layout's tile for 1..=[`TILE`] tokens (an odd last group).
    fn tiles() -> &'static [TileFn];
    /// Decodes packed blocks `pa` (rows 0..8) and `pb` (rows 8..16) into `dst` (the layout
    /// of [`EXP_BYTES`]).
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8);
}

/// Stores decoded vector v (positions 4v..4v + 4 of the pair's 16 rows, lane = row).
#[inline(always)]
pub(super) unsafe fn store_vector(dst: *mut u8, v: usize, x: __m512i) {
    _mm512_storeu_si512(dst.add(64 * v) as *mut __m512i, x);
}

/// Stores two groups' 8 × 4 values at positions 4v.. as decoded vector v.
#[inline(always)]
pub(super) unsafe fn store_values(dst: *mut u8, v: usize, a: __m256i, b: __m256i) {
    store_vector(dst, v, join(a, b));
}

/// Stores two groups' 8 × 8 values at positions 8j.. (qword r = row r's 8 values, as the
/// IQ1 and codebook tiles assemble them) as decoded vectors 2j and 2j + 1.
#[inline(always)]
pub(super) unsafe fn store_octets(dst: *mut u8, j: usize, a: __m512i, b: __m512i) {
    // (No closures here: a closure is compiled without its caller's target features, and
    // the intrinsics in it would become calls.)
    store_values(
        dst,
        2 * j,
        _mm512_cvtepi64_epi32(a),
        _mm512_cvtepi64_epi32(b),
    );
    let (ha, hb) = (_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(b));
    store_values(
        dst,
        2 * j + 1,
        _mm512_cvtepi64_epi32(ha),
        _mm512_cvtepi64_epi32(hb),
    );
}

/// Stores the pair's 16 rows' scales of sub-block s (i32, lane = row).
#[inline(always)]
pub(super) unsafe fn store_scale_vector(dst: *mut u8, s: usize, x: __m512i) {
    _mm512_storeu_si512(dst.add(EXP_SC + 64 * s) as *mut __m512i, x);
}

/// Stores two groups' scale of sub-block s (8 i32 lanes each).
#[inline(always)]
pub(super) unsafe fn store_scales(dst: *mut u8, s: usize, a: __m256i, b: __m256i) {
    store_scale_vector(dst, s, join(a, b));
}

/// Stores two groups' `d` (8 f32 each).
#[inline(always)]
pub(super) unsafe fn store_d(dst: *mut u8, a: __m256, b: __m256) {
    _mm512_storeu_ps(dst.add(EXP_D) as *mut f32, join_ps(a, b));
}

/// Asks for both streams' bytes of one block `PREFETCH_AHEAD` ahead (the first strip of a
/// matrix comes from DRAM).
#[inline(always)]
pub(super) unsafe fn prefetch_pair<S: Strip>(pa: *const u8, pb: *const u8) {
    for line in (0..S::BLOCK_BYTES).step_by(64) {
        // SAFETY: a prefetch is a hint and never faults, whatever the address
        // (`wrapping_add` keeps the pointer arithmetic itself defined).
        _mm_prefetch::<_MM_HINT_T0>(pa.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
    }
}

/// The 16 sub-blocks' `−OFFSET·bsums[s]` of the Q8_K block at `blk`, as i32, to `dst`.
#[inline(always)]
unsafe fn prepare_offsets<S: Strip>(blk: *const u8, dst: *mut u8) {
    let b = _mm512_cvtepi16_epi32(load(blk.add(Q8K_BSUMS)));
    let off = _mm512_mullo_epi32(b, _mm512_set1_epi32(-S::OFFSET));
    _mm512_storeu_si512(dst as *mut __m512i, off);
}

/// T tokens × the `n` decoded pair blocks at `e`: `a[t]` points to token t's first Q8_K
/// block of the strip, `ex` to the prepared offsets (`(t·STRIP_BLOCKS + k)·OFF_BYTES`),
/// `out` to the pair's 16 outputs of token 0 (row stride `ld`), holding the previous
/// strips' sums unless `first`.
#[inline(always)]
unsafe fn strip_tile<const T: usize>(
    n: usize,
    e: *const u8,
    a: &[*const u8; TILE],
    ex: *const u8,
    out: *mut f32,
    ld: usize,
    first: bool,
) {
    let bcast = |p: *const u8| _mm512_set1_epi32(std::ptr::read_unaligned(p as *const i32));
    let mut acc: [__m512; T] = std::array::from_fn(|t| {
        if first {
            _mm512_setzero_ps()
        } else {
            _mm512_loadu_ps(out.add(t * ld))
        }
    });
    for k in 0..n {
        let pe = e.add(k * EXP_BYTES);
        let at: [*const u8; T] = std::array::from_fn(|t| a[t].add(k * Q8K_SIZE));
        let et: [*const u8; T] =
            std::array::from_fn(|t| ex.add((t * STRIP_BLOCKS + k) * OFF_BYTES));
        let mut isum = [_mm512_setzero_si512(); T];
        // Sub-blocks s and s + 4 side by side (two independent sums per token).
        for s in [0, 1, 2, 3, 8, 9, 10, 11] {
            let mut sub: [[__m512i; 2]; T] =
                std::array::from_fn(|t| [bcast(et[t].add(4 * s)), bcast(et[t].add(4 * s + 16))]);
            for q in 0..4 {
                let v = 4 * s + q;
                let wl = _mm512_loadu_si512(pe.add(64 * v) as *const __m512i);
                let wh = _mm512_loadu_si512(pe.add(64 * (v + 16)) as *const __m512i);
                for t in 0..T {
                    let y = at[t].add(Q8K_QS + 4 * v);
                    sub[t][0] = _mm512_dpbusd_epi32(sub[t][0], wl, bcast(y));
                    sub[t][1] = _mm512_dpbusd_epi32(sub[t][1], wh, bcast(y.add(64)));
                }
            }
            let sl = _mm512_loadu_si512(pe.add(EXP_SC + 64 * s) as *const __m512i);
            let sh = _mm512_loadu_si512(pe.add(EXP_SC + 64 * (s + 4)) as *const __m512i);
            for t in 0..T {
                // The layouts' bounds: < 2³¹ over the 16 sub-blocks.
                let v = _mm512_add_epi32(
                    _mm512_mullo_epi32(sub[t][0], sl),
                    _mm512_mullo_epi32(sub[t][1], sh),
                );
                isum[t] = _mm512_add_epi32(isum[t], v);
            }
        }
        let d = _mm512_loadu_ps(pe.add(EXP_D) as *const f32);
        for t in 0..T {
            let da = _mm512_set1_ps(std::ptr::read_unaligned(at[t] as *const f32));
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum[t]), acc[t]);
        }
    }
    for t in 0..T {
        _mm512_storeu_ps(out.add(t * ld), acc[t]);
    }
}

/// `ng` groups of `nb` packed blocks of layout `S` at `w` × every activation row of `acts`
/// → `out[t·ld + g·ROWS + r]`: pairs of groups strip by strip as described above, an odd
/// last group through the layout's tile.
///
/// # Safety
/// As [`TileFn`] for every token of `acts` (each row `nb` Q8_K blocks as the activation
/// quantizer writes them, `ld ≥ ng·ROWS`), and the CPU has what `S`'s decode and tile need
/// (AVX-512 F/BW/VL/VNNI at least: the callers' `target_feature` wrappers).
#[inline(always)]
pub(super) unsafe fn gemm<S: Strip>(
    nb: usize,
    ng: usize,
    w: *const u8,
    acts: &[&[u8]],
    out: *mut f32,
    ld: usize,
) {
    let gbytes = nb * S::BLOCK_BYTES;
    // Written before being read: a strip's blocks are decoded, and a tile's offsets
    // prepared, before the strip tile reads them.
    let mut strip = std::mem::MaybeUninit::<[u8; STRIP_BLOCKS * EXP_BYTES]>::uninit();
    let strip = strip.as_mut_ptr() as *mut u8;
    let mut ex = std::mem::MaybeUninit::<[u8; TILE * STRIP_BLOCKS * OFF_BYTES]>::uninit();
    let ex = ex.as_mut_ptr() as *mut u8;
    for pair in 0..ng / 2 {
        let wa = w.add(2 * pair * gbytes);
        let wb = wa.add(gbytes);
        let mut ib0 = 0;
        while ib0 < nb {
            let n = (nb - ib0).min(STRIP_BLOCKS);
            for k in 0..n {
                let off = (ib0 + k) * S::BLOCK_BYTES;
                prefetch_pair::<S>(wa.add(off), wb.add(off));
                S::expand_pair(wa.add(off), wb.add(off), strip.add(k * EXP_BYTES));
            }
            for (c, chunk) in acts.chunks(TILE).enumerate() {
                let mut a = [std::ptr::null::<u8>(); TILE];
                for (t, row) in chunk.iter().enumerate() {
                    a[t] = row.as_ptr().add(ib0 * Q8K_SIZE);
                    for k in 0..n {
                        let dst = ex.add((t * STRIP_BLOCKS + k) * OFF_BYTES);
                        prepare_offsets::<S>(a[t].add(k * Q8K_SIZE), dst);
                    }
                }
                let o = out.add(c * TILE * ld + 2 * pair * ROWS);
                let first = ib0 == 0;
                match chunk.len() {
                    1 => strip_tile::<1>(n, strip, &a, ex, o, ld, first),
                    2 => strip_tile::<2>(n, strip, &a, ex, o, ld, first),
                    3 => strip_tile::<3>(n, strip, &a, ex, o, ld, first),
                    _ => strip_tile::<4>(n, strip, &a, ex, o, ld, first),
                }
            }
            ib0 += n;
        }
    }
    if ng % 2 == 1 {
        let g = ng - 1;
        for (c, chunk) in acts.chunks(TILE).enumerate() {
            let mut a = [std::ptr::null::<u8>(); TILE];
            for (p, row) in a.iter_mut().zip(chunk) {
                *p = row.as_ptr();
            }
            S::tiles()[chunk.len() - 1](
                nb,
                1,
                w.add(g * gbytes),
                a.as_ptr(),
                out.add(c * TILE * ld + g * ROWS),
                ld,
            );
        }
    }
}

/// [`gemm`] of layout `S` where the CPU has AVX-512 F/BW/VL/VNNI.
///
/// # Safety
/// As [`gemm`]; the CPU has those features.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw")]
pub(super) unsafe fn gemm_vnni<S: Strip>(
    nb: usize,
    ng: usize,
    w: *const u8,
    acts: &[&[u8]],
    out: *mut f32,
    ld: usize,
) {
    gemm::<S>(nb, ng, w, acts, out, ld)
}

/// [`gemm`] of layout `S` where the CPU also has AVX-512 VBMI, BITALG and GFNI (the codebook
/// layouts' decodes).
///
/// # Safety
/// As [`gemm`]; the CPU has those features.
#[target_feature(
    enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw,avx512vbmi,avx512bitalg,gfni"
)]
pub(super) unsafe fn gemm_vbmi<S: Strip>(
    nb: usize,
    ng: usize,
    w: *const u8,
    acts: &[&[u8]],
    out: *mut f32,
    ld: usize,
) {
    gemm::<S>(nb, ng, w, acts, out, ld)
}

/// Q6_Kx8: the unsigned 6-bit values (`w + 32`), the signed 8-bit scales, `d`.
pub(super) struct Q6KStrip;
impl Strip for Q6KStrip {
    const BLOCK_BYTES: usize = Q6KX8_BLOCK_BYTES;
    const OFFSET: i32 = 32;
    /// 8 tokens 201–204 vs the tile's 210 GFLOP/s, 12: 227–230 vs 209–211.
    const MIN_TOKENS: usize = 12;
    fn tiles() -> &'static [TileFn] {
        &Q6K_VNNI
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        for n in 0..2 {
            for g in 0..8 {
                // Step (n, g) holds positions 128n + 32p + 4g (low nibbles) and 64 further.
                let (qa, qb) = (q6k_values(pa, n, g), q6k_values(pb, n, g));
                for p in 0..2 {
                    let v = 32 * n + 8 * p + g;
                    store_values(dst, v, qa[p][0], qb[p][0]);
                    store_values(dst, v + 16, qa[p][1], qb[p][1]);
                }
            }
        }
        for s in 0..16 {
            let (a, b) = (
                i8x8(pa.add(q6k::OFF_SC + 8 * s)),
                i8x8(pb.add(q6k::OFF_SC + 8 * s)),
            );
            store_scales(dst, s, a, b);
        }
        store_d(dst, f16x8(pa.add(q6k::OFF_D)), f16x8(pb.add(q6k::OFF_D)));
    }
}

/// The 8 rows' signed scales of sub-block s of packed Q3_Kx8 block `p`, as i32: the even
/// (s even) or odd bytes of the 16 at pair s / 2.
#[inline(always)]
unsafe fn q3k_scales(p: *const u8, s: usize) -> __m256i {
    let raw = _mm_loadu_si128(p.add(q3k::OFF_SC + 16 * (s / 2)) as *const __m128i);
    let j = (s % 2) as i8;
    let pick = _mm_setr_epi8(
        j,
        2 + j,
        4 + j,
        6 + j,
        8 + j,
        10 + j,
        12 + j,
        14 + j,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
        -1,
    );
    _mm256_cvtepi8_epi32(_mm_shuffle_epi8(raw, pick))
}

/// Q3_Kx8: `u = low2 + 4·hbit` (0..8, `w + 4`), the signed scales `s − 32`, `d`.
/// Ranges: |Σ16 q·a| ≤ 16·4·128, times |scale| ≤ 32, 16 sub-blocks: < 2²³.
pub(super) struct Q3KStrip;
impl Strip for Q3KStrip {
    const BLOCK_BYTES: usize = Q3KX8_BLOCK_BYTES;
    const OFFSET: i32 = 4;
    /// 8 tokens 174 vs the tile's 172 GFLOP/s, 12: 204 vs 171–173.
    const MIN_TOKENS: usize = 12;
    fn tiles() -> &'static [TileFn] {
        &Q3K_VNNI
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        for n in 0..2 {
            for k in 0..4 {
                for g in 0..8 {
                    let v = 32 * n + 8 * k + g;
                    store_values(
                        dst,
                        v,
                        q3k_values(pa, n, k, g, 0),
                        q3k_values(pb, n, k, g, 0),
                    );
                }
            }
        }
        for s in 0..16 {
            store_scales(dst, s, q3k_scales(pa, s), q3k_scales(pb, s));
        }
        store_d(dst, f16x8(pa.add(q3k::OFF_D)), f16x8(pb.add(q3k::OFF_D)));
    }
}
