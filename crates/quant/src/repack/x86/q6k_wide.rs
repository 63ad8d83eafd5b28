//! Q6_Kx8 prompt GEMM on AVX-512 VNNI: the weights decoded once per strip, then a plain
//! `vpdpbusd` GEMM over the decoded bytes for every token of the call.
//!
//! The 256-bit tile ([`q6k_block_ints`]) decodes each block's 6-bit values (a `qh` vector
//! and two `ql` vectors: 16 shifts, masks and ORs per 64 values) for every tile of 4 tokens,
//! and fetches each activation group once per 8 rows; at 4 tokens that decode costs about
//! as many instructions as the `vpdpbusd` themselves (in-cache GEMM ~118 G MAC/s per thread
//! on Zen 4 against ~180 for Q4_Kx8). For a prompt (≥ [`WIDE_MIN_TOKENS`] tokens per call),
//! each thread instead decodes a strip of [`STRIP_BLOCKS`] blocks of a *pair* of groups
//! (16 rows) once into a stack buffer that stays in L2 ([`expand_pair`]: the unsigned
//! values as bytes in the order the GEMM reads them, the scales as i32 lanes, `d` as f32),
//! and runs every 4-token tile of the call over it ([`strip_tile`]): per 4 positions one
//! 512-bit weight load serves 16 rows × 4 tokens, and each activation broadcast feeds 16
//! rows instead of 8. ik_llama.cpp's `iqk_convert_repack` does the same for its prompt
//! GEMMs, but re-quantizes; here the decode is exact, so nothing about the result changes.
//!
//! Batch invariance: each lane computes exactly the scalar definition's integers for its
//! (row, token) — each 16-value sub-block sum starts at the prepared `−32·bsums[s]`, gains
//! `Σ q·a` through `vpdpbusd`, and is multiplied by its scale — then the same f32 step per
//! block in block order, `acc = fma(d·d_a, isum, acc)`, with the accumulators stored and
//! reloaded unchanged between strips. So results are bit-identical to the 256-bit tile
//! and to `q6k::dot_scalar` whatever the token count or the strip a block falls in.

use super::zmm::{join, join_ps};
use super::*;

/// Fewest tokens of a call that take this path (fewer: the 256-bit tile, which needs no
/// decode pass; at 16 tokens the strip's decode is paid back 4 times over).
pub(in crate::repack) const WIDE_MIN_TOKENS: usize = 16;

/// Blocks per strip: 32 × [`EXP_BYTES`] = 162 KiB of decoded weights on the stack, L2-
/// resident while the call's tokens stream past (V3's `ffn_down`, 72 blocks per row, is
/// 3 strips; rows of up to 32 blocks one).
const STRIP_BLOCKS: usize = 32;

/// Tokens per strip-tile call: 4 × (2 sub-block accumulators + `isum` + `acc`) 512-bit
/// vectors, with the weights and scales, stay within the 32 registers (8 tokens measured
/// slower: 168 vs 179 G MAC/s in cache, spills).
const TILE: usize = 4;

/// Bytes of one decoded pair block (16 rows × 256 values).
const EXP_BYTES: usize = EXP_D + 64;
/// 32 steps `e = ((n·2 + gh)·2 + p)·4 + g4` of two 512-bit vectors (low, high nibbles'
/// values), each 32 bytes of group a then 32 of group b: 4096 bytes.
const EXP_SC: usize = 4096;
/// 16 sub-block scales as 16 i32 lanes (rows of group a, then b): 1024 bytes.
const EXP_D: usize = EXP_SC + 16 * 64;

/// Prepared bytes per (token, block): the 16 sub-blocks' `−32·bsums[s]` as i32.
const OFF_BYTES: usize = 64;

/// Decodes packed blocks `pa` (rows 0..8) and `pb` (rows 8..16) into `dst` (the layout
/// of [`EXP_BYTES`]), asking for both streams' bytes `PREFETCH_AHEAD` ahead (the first
/// strip of a matrix comes from DRAM).
#[inline(always)]
unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
    for line in (0..Q6KX8_BLOCK_BYTES).step_by(64) {
        // SAFETY: a prefetch is a hint and never faults, whatever the address
        // (`wrapping_add` keeps the pointer arithmetic itself defined).
        _mm_prefetch::<_MM_HINT_T0>(pa.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(PREFETCH_AHEAD + line) as *const i8);
    }
    for n in 0..2 {
        for g in 0..8 {
            let (qa, qb) = (q6k_values(pa, n, g), q6k_values(pb, n, g));
            let (gh, g4) = (g / 4, g % 4);
            for p in 0..2 {
                let e = dst.add((((n * 2 + gh) * 2 + p) * 4 + g4) * 128);
                _mm512_storeu_si512(e as *mut __m512i, join(qa[p][0], qb[p][0]));
                _mm512_storeu_si512(e.add(64) as *mut __m512i, join(qa[p][1], qb[p][1]));
            }
        }
    }
    for s in 0..16 {
        let sc = join(
            i8x8(pa.add(q6k::OFF_SC + 8 * s)),
            i8x8(pb.add(q6k::OFF_SC + 8 * s)),
        );
        _mm512_storeu_si512(dst.add(EXP_SC + 64 * s) as *mut __m512i, sc);
    }
    let d = join_ps(f16x8(pa.add(q6k::OFF_D)), f16x8(pb.add(q6k::OFF_D)));
    _mm512_storeu_ps(dst.add(EXP_D) as *mut f32, d);
}

/// The 16 sub-blocks' `−32·bsums[s]` of the Q8_K block at `blk`, as i32, to `dst`.
#[inline(always)]
unsafe fn prepare_offsets(blk: *const u8, dst: *mut u8) {
    let b = _mm512_cvtepi16_epi32(load(blk.add(Q8K_BSUMS)));
    let off = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32::<5>(b));
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
        for nn in 0..2 {
            for gh in 0..2 {
                for p in 0..2 {
                    let s_lo = 8 * nn + 2 * p + gh;
                    let s_hi = s_lo + 4;
                    let mut sub: [[__m512i; 2]; T] = std::array::from_fn(|t| {
                        [bcast(et[t].add(4 * s_lo)), bcast(et[t].add(4 * s_hi))]
                    });
                    for g4 in 0..4 {
                        let g = 4 * gh + g4;
                        let w = pe.add((((nn * 2 + gh) * 2 + p) * 4 + g4) * 128);
                        let wl = _mm512_loadu_si512(w as *const __m512i);
                        let wh = _mm512_loadu_si512(w.add(64) as *const __m512i);
                        for t in 0..T {
                            let y = at[t].add(Q8K_QS + 128 * nn + 32 * p + 4 * g);
                            sub[t][0] = _mm512_dpbusd_epi32(sub[t][0], wl, bcast(y));
                            sub[t][1] = _mm512_dpbusd_epi32(sub[t][1], wh, bcast(y.add(64)));
                        }
                    }
                    let sl = _mm512_loadu_si512(pe.add(EXP_SC + 64 * s_lo) as *const __m512i);
                    let sh = _mm512_loadu_si512(pe.add(EXP_SC + 64 * s_hi) as *const __m512i);
                    for t in 0..T {
                        // The 256-bit tile's bound: < 2³¹ over the 16 sub-blocks.
                        let v = _mm512_add_epi32(
                            _mm512_mullo_epi32(sub[t][0], sl),
                            _mm512_mullo_epi32(sub[t][1], sh),
                        );
                        isum[t] = _mm512_add_epi32(isum[t], v);
                    }
                }
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

/// `ng` groups of `nb` packed Q6_Kx8 blocks at `w` × every activation row of `acts` →
/// `out[t·ld + g·ROWS + r]`: pairs of groups strip by strip as described above, an odd
/// last group through the 256-bit tile.
///
/// # Safety
/// As [`TileFn`] for every token of `acts` (each row `nb` Q8_K blocks as the activation
/// quantizer writes them, `ld ≥ ng·ROWS`), and the CPU has AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw")]
pub(in crate::repack) unsafe fn gemm(
    nb: usize,
    ng: usize,
    w: *const u8,
    acts: &[&[u8]],
    out: *mut f32,
    ld: usize,
) {
    let gbytes = nb * Q6KX8_BLOCK_BYTES;
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
                let off = (ib0 + k) * Q6KX8_BLOCK_BYTES;
                expand_pair(wa.add(off), wb.add(off), strip.add(k * EXP_BYTES));
            }
            for (c, chunk) in acts.chunks(TILE).enumerate() {
                let mut a = [std::ptr::null::<u8>(); TILE];
                for (t, row) in chunk.iter().enumerate() {
                    a[t] = row.as_ptr().add(ib0 * Q8K_SIZE);
                    for k in 0..n {
                        let dst = ex.add((t * STRIP_BLOCKS + k) * OFF_BYTES);
                        prepare_offsets(a[t].add(k * Q8K_SIZE), dst);
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
            Q6K_VNNI[chunk.len() - 1](
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
