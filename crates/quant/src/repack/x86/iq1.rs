//! IQ1_Sx8 / IQ1_Mx8 × Q8_K on AVX-512 VNNI (see `iq1` for the layouts).
//!
//! The 2048-entry grid does not fit the registers: as 2-bit codes it is 32 registers per
//! code byte. Three ways to decode it were measured first (stand-alone `rustc -O`
//! microbenchmarks, 1 thread, tables in L1, bench/RESULTS.md): 8 scalar loads of u64 grid
//! rows assembled into one 512-bit vector, 3.95 G groups of 8 per second; `vpgatherdq`
//! of the same rows, 2.35–2.84 G; the index split into 16 sub-tables of 128 (masked
//! `vpermi2b` per sub-table and code byte, 32 per 64 indices, OR-combined), 2.2–2.7 G.
//! Zen 4's gathers and its 512-bit permutes on 256-bit pipes both lose to the load ports,
//! so this tile assembles vectors from scalar loads, and the layout makes everything
//! around them vector work:
//!
//! - per block, the 256 grid indices of the 8 rows are computed first, per chunk c (32
//!   values of 8 rows) in one 512-bit vector of u16 (the rows' low bytes zero-extended,
//!   their `qh_c` words broadcast, shifted per group and masked into bits 8..11), and
//!   stored: the scalar reads then never wait on a store just made (+33% over computing
//!   them chunk by chunk, which LLVM also turned into 32 `vpextrw`);
//! - the indices are read back 4 per 64-bit load and split with shifts (the load ports
//!   bound the tile: one load per index cost another −30%);
//! - per group position l, one vector holds the 8 rows' grid rows from the table of
//!   `8·grid + 8` (qword r = row r; a 64-bit load and a `vmovhps` per pair of rows, two
//!   inserts); IQ1_M adds 2 in the rows whose group's delta is +1 (one masked add): the
//!   weights `u = 8·grid + 9 + δ` (0..=18, unsigned); IQ1_S, whose delta is per chunk,
//!   leaves them at `8·grid + 8` and takes the delta into the start values instead;
//! - one `vpdpbusd` per (group position, token) multiplies them with the token's 8
//!   activations of the same positions, broadcast as a qword (file order: nothing is
//!   permuted); lanes 2r, 2r + 1 are row r's two halves;
//! - each 16-value half's sum starts at the prepared `−9·Σa` of its values (IQ1_S with
//!   delta +1: `−7·Σa`, the weights being 2 short), so that it ends at Σ (8·grid + δ)·a;
//!   it is multiplied by its row's scale `ls` (`vpmulld`) and added to the block sum:
//!   `8·S + S_δ`, ggml's integers exactly; lanes 2r, 2r + 1 are added at the end.
//!
//! IQ1_S has one scale and delta per chunk (in `qh_c`), IQ1_M a scale per 16 values (in
//! its scale words) and a delta per group (bit 3 of `qh_c`'s nibble l).
//!
//! Per 8 groups (64 weights) that is ~11 loads and ~8 vector instructions plus the index
//! shifts: ~1 group per cycle at best, measured 6.0–6.3 GB/s on one hot Zen 4 core
//! (bench/RESULTS.md), against 2.9–3.8 for the file-order AVX2 dots.
//!
//! Ranges: |Σ16 u·a| ≤ 16·18·128, times ls ≤ 15, 16 sums per block: < 2²³ (i32 exact).

use super::codebook::rows_of_pairs;
use super::strip::{store_d, store_octets, store_scales, Strip};
use super::*;
use crate::iq1::GRID_X8;
use crate::repack::iq1::{
    FACTOR, IQ1MX8_BLOCK_BYTES, IQ1SX8_BLOCK_BYTES, M_OFF_QH, M_OFF_QS, M_OFF_SC, S_OFF_D,
    S_OFF_QH, S_OFF_QS,
};

/// What the tile needs of a layout: where its index bytes are, how the high index bits
/// sit in `qh_c`, where the deltas and scales are.
pub(super) trait Iq1: 'static {
    const BLOCK_BYTES: usize;
    const OFF_QS: usize;
    const OFF_QH: usize;
    /// Bits per group in `qh_c` (IQ1_S 3, IQ1_M 4: index bits 8..11 of group l are bits
    /// `STEP·l..` of the word).
    const STEP: u32;
    /// One delta per chunk (IQ1_S: taken into each half's start value, `−7·Σa` instead of
    /// `−9·Σa` where it is +1) rather than per group (IQ1_M: + 2 in the group's weights).
    const CHUNK_DELTA: bool;
    /// The 8 rows whose group (c, l) has delta −1 (bit r), from the rows' `qh_c`.
    unsafe fn negative(qh: __m128i, l: usize) -> __mmask8;
    /// The 8 rows' scale of half h (16 values) of chunk c, in both dwords of qword r.
    unsafe fn scales(pb: *const u8, qh: __m128i, c: usize, h: usize) -> __m512i;
    /// `d·0.125` of the 8 rows.
    unsafe fn row_d(pb: *const u8) -> __m256;
    /// The layout's tiles (1..=4 tokens).
    fn tiles() -> &'static [TileFn];
}

/// `2·x + 1` of 3-bit fields `x` at bit 0 of each u16 lane (garbage above), in both
/// dwords of qword r for lane r.
#[inline(always)]
unsafe fn odd_scales(x: __m128i) -> __m512i {
    let ls = _mm_ternarylogic_epi32::<0xEA>(
        _mm_slli_epi16::<1>(x),
        _mm_set1_epi16(14),
        _mm_set1_epi16(1),
    );
    let q = _mm512_cvtepu16_epi64(ls);
    _mm512_or_si512(q, _mm512_slli_epi64::<32>(q))
}

pub(super) struct S;
impl Iq1 for S {
    const BLOCK_BYTES: usize = IQ1SX8_BLOCK_BYTES;
    const OFF_QS: usize = S_OFF_QS;
    const OFF_QH: usize = S_OFF_QH;
    const STEP: u32 = 3;
    const CHUNK_DELTA: bool = true;
    /// Bit 15 of `qh_c` (one delta per chunk).
    #[inline(always)]
    unsafe fn negative(qh: __m128i, _l: usize) -> __mmask8 {
        _mm_test_epi16_mask(qh, _mm_set1_epi16(i16::MIN))
    }
    /// Bits 12..15 of `qh_c` (one scale per chunk).
    #[inline(always)]
    unsafe fn scales(_pb: *const u8, qh: __m128i, _c: usize, _h: usize) -> __m512i {
        odd_scales(_mm_srli_epi16::<12>(qh))
    }
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        _mm256_mul_ps(f16x8(pb.add(S_OFF_D)), _mm256_set1_ps(FACTOR))
    }
    fn tiles() -> &'static [TileFn] {
        &IQ1S_ZMM
    }
}

pub(super) struct M;
impl Iq1 for M {
    const BLOCK_BYTES: usize = IQ1MX8_BLOCK_BYTES;
    const OFF_QS: usize = M_OFF_QS;
    const OFF_QH: usize = M_OFF_QH;
    const STEP: u32 = 4;
    const CHUNK_DELTA: bool = false;
    /// Bit 3 of nibble l of `qh_c`.
    #[inline(always)]
    unsafe fn negative(qh: __m128i, l: usize) -> __mmask8 {
        _mm_test_epi16_mask(qh, _mm_set1_epi16(1 << (4 * l + 3)))
    }
    /// Scale `s` of half h of chunk c: bits `6·(c % 2) + 3·h` of scale word c / 2.
    #[inline(always)]
    unsafe fn scales(pb: *const u8, _qh: __m128i, c: usize, h: usize) -> __m512i {
        let w = _mm_loadu_si128(pb.add(M_OFF_SC + 16 * (c / 2)) as *const __m128i);
        let sh = (6 * (c % 2) + 3 * h) as i32;
        odd_scales(_mm_srl_epi16(w, _mm_cvtsi32_si128(sh)))
    }
    /// `d` is the f16 of the top nibbles of the 4 scale words.
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        let w = |k: usize| _mm_loadu_si128(pb.add(M_OFF_SC + 16 * k) as *const __m128i);
        let nib = _mm_set1_epi16(0xf0);
        let lo = _mm_or_si128(
            _mm_srli_epi16::<12>(w(0)),
            _mm_and_si128(_mm_srli_epi16::<8>(w(1)), nib),
        );
        let hi = _mm_or_si128(
            _mm_and_si128(_mm_srli_epi16::<4>(w(2)), _mm_slli_epi16::<4>(nib)),
            _mm_and_si128(w(3), _mm_slli_epi16::<8>(nib)),
        );
        _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_or_si128(lo, hi)),
            _mm256_set1_ps(FACTOR),
        )
    }
    fn tiles() -> &'static [TileFn] {
        &IQ1M_ZMM
    }
}

/// Prepared bytes per activation block (both layouts): per 16 values j (a `bsums` entry
/// b), `−9·b` then `−7·b` (the start value of a sum whose weights are `u − 2`), each as an
/// i64: a start value in dword 2r of a broadcast, 0 in dword 2r + 1.
const EXTRA: usize = 256;

/// (Once per block and token for all the call's rows: scalar is fast enough.)
#[inline(always)]
unsafe fn prepare(blk: *const u8, dst: *mut u8) {
    for j in 0..16 {
        let b = std::ptr::read_unaligned(blk.add(Q8K_BSUMS + 2 * j) as *const i16) as i32;
        for (k, m) in [-9, -7].into_iter().enumerate() {
            let v = (m * b) as u32 as u64;
            std::ptr::write_unaligned(dst.add(16 * j + 8 * k) as *mut u64, v);
        }
    }
}

/// Chunk c's 32 grid indices of the 8 rows into `out` (u16 `8l + r`): the low bytes or'ed
/// with bits `STEP·l..STEP·l + 3` of the rows' `qh_c`, moved to bits 8..11.
#[inline(always)]
unsafe fn chunk_indices<L: Iq1>(pb: *const u8, c: usize, out: &mut [u16; 32]) {
    let lo = _mm512_cvtepu8_epi16(load(pb.add(L::OFF_QS + 32 * c)));
    let qh = _mm_loadu_si128(pb.add(L::OFF_QH + 16 * c) as *const __m128i);
    // Shift counts STEP·l, l = lane / 8.
    let step = |l: i64| 0x0001_0001_0001_0001 * l * L::STEP as i64;
    let counts = _mm512_set_epi64(step(3), step(3), step(2), step(2), step(1), step(1), 0, 0);
    let hi = _mm512_slli_epi16::<8>(_mm512_srlv_epi16(_mm512_broadcast_i32x4(qh), counts));
    // (hi & 0x700) | lo
    let idx = _mm512_ternarylogic_epi32::<0xEA>(hi, _mm512_set1_epi16(0x700), lo);
    _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, idx);
}

/// The 8 rows' grid rows of group position l (qword r = row r), from scalar loads: a
/// 64-bit load and a `vmovhps` per pair of rows, then two inserts. The indices come from
/// volatile reads: LLVM would otherwise extract them from the vector with `vpextrw`, or
/// merge the grid loads into a `vpgatherqq` (both slower on Zen 4).
#[inline(always)]
unsafe fn grid_rows(grid: *const u64, idx: &[u16; 32], l: usize) -> __m512i {
    // Four indices per 64-bit read, split with shifts (two per read as u32 measured slower: 5.8–5.9 GB/s vs 6.1–6.2 hot).
    let quad = |q: usize| std::ptr::read_volatile(idx.as_ptr().add(8 * l + 4 * q) as *const u64);
    let (q0, q1) = (quad(0), quad(1));
    // SAFETY (the reads): every index is < 2048 (a byte or'ed with 3 bits at 8..11).
    let e = |r: usize| {
        let q = if r < 4 { q0 } else { q1 };
        grid.add((q >> (16 * (r % 4))) as usize & 0xffff)
    };
    let pair = |r: usize| {
        let lo = _mm_loadl_epi64(e(r) as *const __m128i);
        _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(lo), e(r + 1) as *const f64))
    };
    let y0 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(pair(0)), pair(2));
    let y1 = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(pair(4)), pair(6));
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(y0), y1)
}

/// One packed block × T tokens: `isum` per token, lane = row.
#[inline(always)]
unsafe fn block_ints<L: Iq1, const T: usize>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> [__m256i; T] {
    let grid = GRID_X8.0.as_ptr();
    // All 256 indices first: the scalar reads below then never wait on a store just made.
    let idx = block_indices::<L>(pb);
    let mut isum = [_mm512_setzero_si512(); T];
    for (c, idx) in idx.iter().enumerate() {
        let qh = _mm_loadu_si128(pb.add(L::OFF_QH + 16 * c) as *const __m128i);
        for h in 0..2 {
            let ls = L::scales(pb, qh, c, h);
            let neg = L::negative(qh, 0);
            let mut acc: [__m512i; T] = std::array::from_fn(|t| {
                let at = |k: usize| {
                    let p = ex[t].add(16 * (2 * c + h) + 8 * k);
                    _mm512_set1_epi64(std::ptr::read_unaligned(p as *const i64))
                };
                if L::CHUNK_DELTA {
                    // Delta +1: the weights are 2 short of `u`, start at −7·Σa.
                    _mm512_mask_blend_epi64(neg, at(1), at(0))
                } else {
                    at(0)
                }
            });
            for l in 2 * h..2 * h + 2 {
                // IQ1_M: `u` with its group's delta; IQ1_S: the grid rows alone (the
                // delta went into the start values).
                let w = if L::CHUNK_DELTA {
                    grid_rows(grid, idx, l)
                } else {
                    weights::<L>(grid, idx, qh, l)
                };
                for t in 0..T {
                    let q =
                        std::ptr::read_unaligned(a[t].add(Q8K_QS + 32 * c + 8 * l) as *const i64);
                    acc[t] = _mm512_dpbusd_epi32(acc[t], w, _mm512_set1_epi64(q));
                }
            }
            for t in 0..T {
                isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(acc[t], ls));
            }
        }
    }
    // Lanes 2r, 2r + 1 (row r's two halves of each group) → lane r.
    std::array::from_fn(|t| rows_of_pairs(isum[t]))
}

/// The 8 rows' weights `u = 8·grid + 9 + δ` (0..=18: `w + 9` for `w = 8·grid + δ`) of
/// group position l of chunk c, qword r = row r: the grid rows of `8·grid + 8`, + 2 in the
/// rows whose delta is +1.
#[inline(always)]
unsafe fn weights<L: Iq1>(grid: *const u64, idx: &[u16; 32], qh: __m128i, l: usize) -> __m512i {
    let w = grid_rows(grid, idx, l);
    // + 2 in every byte of the rows with delta +1 (bytes ≤ 16: no carries).
    _mm512_mask_add_epi64(w, !L::negative(qh, l), w, _mm512_set1_epi8(2))
}

/// The 256 grid indices of a packed block, per chunk.
#[inline(always)]
unsafe fn block_indices<L: Iq1>(pb: *const u8) -> [[u16; 32]; 8] {
    let mut idx = [[0u16; 32]; 8];
    for (c, out) in idx.iter_mut().enumerate() {
        chunk_indices::<L>(pb, c, out);
    }
    idx
}

/// The decoded strips of IQ1 layout `L` (`x86::strip`): per 16-value sub-block the
/// definition's integers `Σ ls·Σ (8·grid + δ)·a` (= `8·S + S_δ` summed over the block),
/// the weights stored as `w + 9`.
pub(super) struct Strips<L>(std::marker::PhantomData<L>);

impl<L: Iq1> Strip for Strips<L> {
    const BLOCK_BYTES: usize = L::BLOCK_BYTES;
    const OFFSET: i32 = 9;
    /// 4 tokens 111–117 vs the tile's 122–135 GFLOP/s, 8: 163–170 vs 122–135.
    const MIN_TOKENS: usize = 8;
    fn tiles() -> &'static [TileFn] {
        L::tiles()
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        let grid = GRID_X8.0.as_ptr();
        // All indices first: the scalar reads then never wait on a store just made.
        let (ia, ib) = (block_indices::<L>(pa), block_indices::<L>(pb));
        for c in 0..8 {
            let qa = _mm_loadu_si128(pa.add(L::OFF_QH + 16 * c) as *const __m128i);
            let qb = _mm_loadu_si128(pb.add(L::OFF_QH + 16 * c) as *const __m128i);
            for l in 0..4 {
                let wa = weights::<L>(grid, &ia[c], qa, l);
                let wb = weights::<L>(grid, &ib[c], qb, l);
                store_octets(dst, 4 * c + l, wa, wb);
            }
            for h in 0..2 {
                // The scales are in both dwords of qword r: one copy per row.
                let (sa, sb) = (L::scales(pa, qa, c, h), L::scales(pb, qb, c, h));
                store_scales(
                    dst,
                    2 * c + h,
                    _mm512_cvtepi64_epi32(sa),
                    _mm512_cvtepi64_epi32(sb),
                );
            }
        }
        store_d(dst, L::row_d(pa), L::row_d(pb));
    }
}

/// The [`Layout`] of IQ1 layout `L`.
pub(super) struct Tile<L>(std::marker::PhantomData<L>);

impl<L: Iq1> Layout for Tile<L> {
    const BLOCK_BYTES: usize = L::BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = 0;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = EXTRA;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        prepare(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        (block_ints::<L, T>(pb, a, ex), [_mm256_setzero_si256(); T])
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        L::row_d(pb)
    }
}

/// The tile of IQ1 layout `L` for T tokens.
///
/// # Safety
/// As [`TileFn`]; the CPU has AVX-512 VNNI (and BW, VL).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw")]
unsafe fn tile_zmm<L: Iq1, const T: usize>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    tile::<T, Vnni, Tile<L>>(nb, ng, w, a, out, ld)
}

/// Test hook: per-block integers of IQ1 layout `L`.
///
/// # Safety
/// `w` holds `nb` packed blocks, `a` `nb` Q8_K blocks; the CPU has AVX-512 VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw")]
pub(super) unsafe fn ints_zmm<L: Iq1>(
    nb: usize,
    w: *const u8,
    a: *const u8,
) -> Vec<[[i32; 2]; ROWS]> {
    ints_with::<Vnni, Tile<L>>(nb, w, a)
}

/// 1..=4 tokens per call (T accumulators and block sums, the weights and the scales).
pub(super) static IQ1S_ZMM: [TileFn; 4] = [
    tile_zmm::<S, 1>,
    tile_zmm::<S, 2>,
    tile_zmm::<S, 3>,
    tile_zmm::<S, 4>,
];
pub(super) static IQ1M_ZMM: [TileFn; 4] = [
    tile_zmm::<M, 1>,
    tile_zmm::<M, 2>,
    tile_zmm::<M, 3>,
    tile_zmm::<M, 4>,
];
