//! 512-bit tiles of the 32-value layouts (Q8_0x8, Q5_0x8, Q4_0x8, MXFP4x8) for AVX-512
//! VNNI: two consecutive 8-row groups side by side in one 512-bit vector (lanes 0..8 =
//! group g's rows, 8..16 = group g + 1's), so one `vpdpbusd` with a broadcast 4-byte
//! activation group advances 16 rows. Per block the pair's 8 weight vectors are decoded
//! once and kept in registers for the call's (up to 8) tokens, each token's sum one
//! `vpdpbusd` chain. A prompt's GEMM then issues half the `vpdpbusd`,
//! activation broadcasts and f32 steps per multiply-add of the 256-bit tile (gpt-oss's
//! MXFP4 experts: the bulk of its prompt time).
//!
//! The two groups' outputs are adjacent in `out` (`g·ROWS + r`), so the accumulators load
//! and store as one vector. Each lane runs exactly the 256-bit tile's computation for its
//! (row, token): the same exact integer `Σ (w + o)·a − o·Σa`, then
//! `acc = fma(d·d_a, isum, acc)` per block, so results are bit-identical to the scalar
//! definition whichever tile ran; an odd last group of a call goes through the 256-bit
//! tile, and so do calls of 1–6 tokens (see `zmm_table`).

use super::*;

/// `lo` in lanes 0..8 (as i32), `hi` in 8..16.
#[inline(always)]
pub(super) unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// `lo` in lanes 0..8, `hi` in 8..16 (f32).
#[inline(always)]
pub(super) unsafe fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4::<1>(
        _mm512_castpd256_pd512(_mm256_castps_pd(lo)),
        _mm256_castps_pd(hi),
    ))
}

/// Weight vectors g and g + 4 of blocks `pa` (lanes 0..8) and `pb` (8..16) for the nibble
/// layouts (Q4_0: `q`, MXFP4: `KVALUES_MXFP4[q] + 12`, IQ4_NL: `KVALUES_IQ4NL[q] + 128`):
/// one 512-bit load pair, mask, shift and (MXFP4, IQ4_NL) table lookup for both halves of
/// the block's bytes.
#[inline(always)]
unsafe fn nibble_weights<const K: u8>(pa: *const u8, pb: *const u8, g: usize) -> [__m512i; 2] {
    let off = if K == K_MXFP4 { MX_OFF_QS } else { Q4_OFF_QS };
    let v = join(load(pa.add(off + 32 * g)), load(pb.add(off + 32 * g)));
    let m4 = _mm512_set1_epi8(0x0f);
    let lo = _mm512_and_si512(v, m4);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
    if K == K_MXFP4 {
        // KVALUES_MXFP4 + 12 in every 128-bit lane (as the 256-bit tile's table).
        let t = _mm512_broadcast_i32x4(_mm_setr_epi8(
            12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0,
        ));
        [_mm512_shuffle_epi8(t, lo), _mm512_shuffle_epi8(t, hi)]
    } else if K == K_IQ4_NL {
        let t = _mm512_broadcast_i32x4(_mm256_castsi256_si128(iq4_table::<Vnni>()));
        [_mm512_shuffle_epi8(t, lo), _mm512_shuffle_epi8(t, hi)]
    } else {
        [lo, hi]
    }
}

/// The 8 weight vectors (g = 0..8: positions 4g..4g+4) of blocks `pa` (lanes 0..8) and
/// `pb` (lanes 8..16), as `w + o` unsigned bytes.
#[inline(always)]
unsafe fn pair_weights<const K: u8>(pa: *const u8, pb: *const u8) -> [__m512i; 8] {
    let mut w = [_mm512_setzero_si512(); 8];
    if K == K_Q4_0 || K == K_MXFP4 || K == K_IQ4_NL {
        for g in 0..4 {
            [w[g], w[g + 4]] = nibble_weights::<K>(pa, pb, g);
        }
    } else {
        let (plane_a, plane_b) = if K == K_Q5_0 {
            (load(pa.add(Q5_OFF_QH)), load(pb.add(Q5_OFF_QH)))
        } else {
            (_mm256_setzero_si256(), _mm256_setzero_si256())
        };
        for g in 0..8 {
            w[g] = join(
                legacy_weights::<K, Vnni>(pa, g, plane_a),
                legacy_weights::<K, Vnni>(pb, g, plane_b),
            );
        }
    }
    w
}

/// `Σ w·a` of one token against a pair's decoded block: the exact integers, lane = row of
/// the pair, starting at the prepared `−o·Σa` (`c`). `q`: the token's 32 quants.
#[inline(always)]
unsafe fn pair_token_ints<const T: usize>(w: &[__m512i; 8], q: *const u8, c: *const u8) -> __m512i {
    let a = |g: usize| _mm512_set1_epi32(std::ptr::read_unaligned(q.add(4 * g) as *const i32));
    let mut dp = _mm512_set1_epi32(std::ptr::read_unaligned(c as *const i32));
    if T < 4 {
        // Few tokens: two chains (even / odd g), so that `vpdpbusd` latency does not bound
        // the block; with more, the tokens' own chains overlap.
        let mut dq = _mm512_setzero_si512();
        for g in (0..8).step_by(2) {
            dp = _mm512_dpbusd_epi32(dp, w[g], a(g));
            dq = _mm512_dpbusd_epi32(dq, w[g + 1], a(g + 1));
        }
        _mm512_add_epi32(dp, dq)
    } else {
        for g in 0..8 {
            dp = _mm512_dpbusd_epi32(dp, w[g], a(g));
        }
        dp
    }
}

/// The tile ([`TileFn`]) of legacy layout `K` for T (1..=8) tokens: pairs of groups in 512-bit
/// vectors, per pass of up to [`LEGACY_PASS_BLOCKS`] blocks as the 256-bit [`tile`] (activation
/// constants prepared once per pass, accumulators kept in `out` between passes); an odd
/// last group through the 256-bit tile.
///
/// # Safety
/// As the 256-bit [`tile`]: the CPU has AVX-512 F/BW/VL/VNNI; `w` holds `ng` groups of `nb`
/// blocks, `a` points to T activation rows of `nb` Q8_0 blocks each, and `out` to T rows of
/// stride `ld ≥ ng·ROWS` f32 that no other thread touches during the call.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw")]
pub(super) unsafe fn tile_zmm<const K: u8, const T: usize>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    // The pass scratch below holds MAX_TOKENS tokens' prepared constants.
    const { assert!(T <= MAX_TOKENS) };
    let bb = Legacy::<K>::BLOCK_BYTES;
    let a0: [*const u8; T] = std::array::from_fn(|t| *a.add(t));
    let gbytes = nb * bb;
    let pairs = ng / 2;
    // `−o·Σa` and `d_a` per token and block of the pass (written before being read).
    let mut ex =
        std::mem::MaybeUninit::<[[u8; LEGACY_EXTRA * LEGACY_PASS_BLOCKS]; MAX_TOKENS]>::uninit();
    let ex = ex.as_mut_ptr() as *mut u8;
    let ex_at = |t: usize, k: usize| ex.add((t * LEGACY_PASS_BLOCKS + k) * LEGACY_EXTRA);
    let mut ib0 = 0;
    while pairs > 0 && ib0 < nb {
        let n = (nb - ib0).min(LEGACY_PASS_BLOCKS);
        for t in 0..T {
            for k in 0..n {
                legacy_prepare::<K, Vnni>(a0[t].add((ib0 + k) * Q8_0_SIZE), ex_at(t, k));
            }
        }
        for p in 0..pairs {
            let wa = w.add(2 * p * gbytes);
            let wb = wa.add(gbytes);
            let og = out.add(2 * p * ROWS);
            let mut acc: [__m512; T] = std::array::from_fn(|t| {
                if ib0 == 0 {
                    _mm512_setzero_ps()
                } else {
                    _mm512_loadu_ps(og.add(t * ld))
                }
            });
            for k in 0..n {
                let ib = ib0 + k;
                let (pa, pb) = (wa.add(ib * bb), wb.add(ib * bb));
                // The pair's weight bytes PREFETCH_AHEAD (4 KiB) ahead in both groups'
                // streams, towards L1, as the 256-bit tile: a GEMV or a prompt's first
                // token tile over an expert chunk streams from DRAM. Past the end of the
                // pass's segment of a group, each stream goes on in the next pair's same
                // group (2·gbytes further): with short rows (n_in = 896: 5–8 KiB per
                // group) 4 KiB ahead in a group is mostly the pair's other group, already
                // loading, and half of the next pair would be left to demand misses.
                let ahead0 = if k * bb + PREFETCH_AHEAD < n * bb {
                    PREFETCH_AHEAD
                } else {
                    PREFETCH_AHEAD + 2 * gbytes - n * bb
                };
                for line in (0..bb).step_by(64) {
                    let ahead = ahead0 + line;
                    // SAFETY: a prefetch is a hint and never faults, whatever the address
                    // (`wrapping_add` keeps the pointer arithmetic itself defined).
                    _mm_prefetch::<_MM_HINT_T0>(pa.wrapping_add(ahead) as *const i8);
                    _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(ahead) as *const i8);
                }
                let q: [*const u8; T] = std::array::from_fn(|t| a0[t].add(ib * Q8_0_SIZE + 2));
                let c: [*const u8; T] = std::array::from_fn(|t| ex_at(t, k) as *const u8);
                // The block's weights decoded once for all T tokens (they and the T
                // accumulators fill the registers; each token's sum is one chain).
                let wv = pair_weights::<K>(pa, pb);
                let d = join_ps(Legacy::<K>::row_d(pa), Legacy::<K>::row_d(pb));
                for t in 0..T {
                    let isum = pair_token_ints::<T>(&wv, q[t], c[t]);
                    let da = _mm512_set1_ps(Legacy::<K>::d_a(q[t], c[t]));
                    acc[t] =
                        _mm512_fmadd_ps(_mm512_mul_ps(d, da), _mm512_cvtepi32_ps(isum), acc[t]);
                }
            }
            for t in 0..T {
                _mm512_storeu_ps(og.add(t * ld), acc[t]);
            }
        }
        ib0 += n;
    }
    if ng % 2 == 1 {
        // The odd last group: the 256-bit tile, at most 8 tokens per call.
        let g = ng - 1;
        let fns = legacy_vnni_256(K);
        let mut t0 = 0;
        while t0 < T {
            let cnt = (T - t0).min(TOKENS_256);
            fns[cnt - 1](
                nb,
                1,
                w.add(g * gbytes),
                a.add(t0),
                out.add(t0 * ld + g * ROWS),
                ld,
            );
            t0 += cnt;
        }
    }
}
