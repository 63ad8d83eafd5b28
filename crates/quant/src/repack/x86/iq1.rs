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
//! - per chunk c (32 values of 8 rows), the 32 grid indices are computed in one 512-bit
//!   vector of u16 (the 8 rows' low bytes zero-extended, their `qh_c` words broadcast,
//!   shifted per group and masked into bits 8..11) and stored once;
//! - per group position l, one vector holds the 8 rows' grid rows from the table of
//!   `8·grid + 8` (qword r = row r), plus 2 in the rows whose delta is +1 (one masked add):
//!   the weights `u = 8·grid + 9 + δ` (0..=18, unsigned);
//! - one `vpdpbusd` per (group position, token) multiplies them with the token's 8
//!   activations of the same positions, broadcast as a qword (file order: nothing is
//!   permuted); lanes 2r, 2r + 1 are row r's two halves;
//! - each scale's sum starts at the prepared `−9·Σa` of its values (Σ u·a − 9·Σa =
//!   Σ (8·grid + δ)·a), is multiplied by the scale `ls` of its row (`vpmulld`) and added
//!   to the block sum: `8·S + S_δ`, ggml's integers exactly; lanes 2r, 2r + 1 are added
//!   at the end.
//!
//! IQ1_S has one scale and delta per chunk (in `qh_c`), IQ1_M a scale per 16 values (in
//! its scale words) and a delta per group (bit 3 of `qh_c`'s nibble l).
//!
//! Ranges: |Σ16 u·a| ≤ 16·18·128, times ls ≤ 15, 16 sums per block: < 2²³ (i32 exact).

use super::codebook::rows_of_pairs;
use super::*;
use crate::iq1::GRID_X8;
use crate::repack::iq1::{
    IQ1MX8_BLOCK_BYTES, IQ1SX8_BLOCK_BYTES, M_OFF_QH, M_OFF_QS, M_OFF_SC, S_OFF_D, S_OFF_QH,
    S_OFF_QS,
};

/// What the tile needs of a layout: where its index bytes are, how the high index bits
/// sit in `qh_c`, and the per-block scale and delta work.
pub(super) trait Iq1: 'static {
    const BLOCK_BYTES: usize;
    const OFF_QS: usize;
    const OFF_QH: usize;
    /// Bits per group in `qh_c` (IQ1_S 3, IQ1_M 4: index bits 8..11 of group l are bits
    /// `STEP·l..` of the word).
    const STEP: u32;
    /// Prepared bytes per activation block: `−9·Σa` per scale, as i64 lanes.
    const EXTRA: usize;
    /// Offset in [`Iq1::EXTRA`] of chunk c's group l's start value.
    fn ex_at(c: usize, l: usize) -> usize;
    /// Whether group l starts a new scale (IQ1_S: l = 0; IQ1_M: l = 0, 2).
    fn new_scale(l: usize) -> bool;
    /// The 8 rows whose group (c, l) has delta −1 (bit r), from the rows' `qh_c`.
    unsafe fn negative(qh: __m128i, l: usize) -> __mmask8;
    /// The scale of group (c, l) of the 8 rows, in both dwords of qword r.
    unsafe fn scales(pb: *const u8, qh: __m128i, c: usize, l: usize) -> __m512i;
    unsafe fn prepare(blk: *const u8, dst: *mut u8);
    unsafe fn row_d(pb: *const u8) -> __m256;
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
    const EXTRA: usize = 64;
    #[inline(always)]
    fn ex_at(c: usize, _l: usize) -> usize {
        8 * c
    }
    #[inline(always)]
    fn new_scale(l: usize) -> bool {
        l == 0
    }
    #[inline(always)]
    unsafe fn negative(qh: __m128i, _l: usize) -> __mmask8 {
        _mm_test_epi16_mask(qh, _mm_set1_epi16(i16::MIN))
    }
    #[inline(always)]
    unsafe fn scales(_pb: *const u8, qh: __m128i, _c: usize, _l: usize) -> __m512i {
        odd_scales(_mm_srli_epi16::<12>(qh))
    }
    /// Chunk c's `−9·Σ32` (the two `bsums` of its 16-value halves).
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        let s32 = _mm256_madd_epi16(load(blk.add(Q8K_BSUMS)), _mm256_set1_epi16(1));
        let off = _mm256_mullo_epi32(s32, _mm256_set1_epi32(-9));
        _mm512_storeu_si512(dst as *mut __m512i, _mm512_cvtepu32_epi64(off));
    }
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        _mm256_mul_ps(
            f16x8(pb.add(S_OFF_D)),
            _mm256_set1_ps(crate::repack::iq1::FACTOR),
        )
    }
}

pub(super) struct M;
impl Iq1 for M {
    const BLOCK_BYTES: usize = IQ1MX8_BLOCK_BYTES;
    const OFF_QS: usize = M_OFF_QS;
    const OFF_QH: usize = M_OFF_QH;
    const STEP: u32 = 4;
    const EXTRA: usize = 128;
    #[inline(always)]
    fn ex_at(c: usize, l: usize) -> usize {
        8 * (2 * c + l / 2)
    }
    #[inline(always)]
    fn new_scale(l: usize) -> bool {
        l % 2 == 0
    }
    #[inline(always)]
    unsafe fn negative(qh: __m128i, l: usize) -> __mmask8 {
        _mm_test_epi16_mask(qh, _mm_set1_epi16(1 << (4 * l + 3)))
    }
    /// Scale `s` of half l / 2 of chunk c: bits `6·(c % 2) + 3·(l / 2)` of word c / 2.
    #[inline(always)]
    unsafe fn scales(pb: *const u8, _qh: __m128i, c: usize, l: usize) -> __m512i {
        let w = _mm_loadu_si128(pb.add(M_OFF_SC + 16 * (c / 2)) as *const __m128i);
        let sh = (6 * (c % 2) + 3 * (l / 2)) as i32;
        odd_scales(_mm_srl_epi16(w, _mm_cvtsi32_si128(sh)))
    }
    /// The 16 `−9·bsums` of the block (one per 16 values).
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        let b = _mm512_cvtepi16_epi32(load(blk.add(Q8K_BSUMS)));
        let off = _mm512_mullo_epi32(b, _mm512_set1_epi32(-9));
        _mm512_storeu_si512(
            dst as *mut __m512i,
            _mm512_cvtepu32_epi64(_mm512_castsi512_si256(off)),
        );
        _mm512_storeu_si512(
            dst.add(64) as *mut __m512i,
            _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64::<1>(off)),
        );
    }
    /// `d·0.125`, `d` the f16 in the top nibbles of the 4 scale words.
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
        let d = _mm256_cvtph_ps(_mm_or_si128(lo, hi));
        _mm256_mul_ps(d, _mm256_set1_ps(crate::repack::iq1::FACTOR))
    }
}

/// Chunk c's 32 grid indices of the 8 rows, u16 `8l + r`: the low bytes or'ed with bits
/// `STEP·l..STEP·l + 3` of the rows' `qh_c`, moved to bits 8..11.
#[inline(always)]
unsafe fn chunk_indices<L: Iq1>(pb: *const u8, qh: __m128i, c: usize) -> [u16; 32] {
    let lo = _mm512_cvtepu8_epi16(load(pb.add(L::OFF_QS + 32 * c)));
    let counts = _mm512_set_epi64(
        0x0003_0003_0003_0003 * L::STEP as i64,
        0x0003_0003_0003_0003 * L::STEP as i64,
        0x0002_0002_0002_0002 * L::STEP as i64,
        0x0002_0002_0002_0002 * L::STEP as i64,
        0x0001_0001_0001_0001 * L::STEP as i64,
        0x0001_0001_0001_0001 * L::STEP as i64,
        0,
        0,
    );
    let hi = _mm512_slli_epi16::<8>(_mm512_srlv_epi16(_mm512_broadcast_i32x4(qh), counts));
    // (hi & 0x700) | lo
    let idx = _mm512_ternarylogic_epi32::<0xEA>(hi, _mm512_set1_epi16(0x700), lo);
    let mut out = [0u16; 32];
    _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, idx);
    out
}

/// One packed block × T tokens: `isum` per token, lane = row.
#[inline(always)]
unsafe fn block_ints<L: Iq1, const T: usize>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> [__m256i; T] {
    let grid = GRID_X8.0.as_ptr();
    let plus2 = _mm512_set1_epi8(2);
    let mut isum = [_mm512_setzero_si512(); T];
    for c in 0..8 {
        let qh = _mm_loadu_si128(pb.add(L::OFF_QH + 16 * c) as *const __m128i);
        let idx = chunk_indices::<L>(pb, qh, c);
        let mut acc = [_mm512_setzero_si512(); T];
        let mut ls = _mm512_setzero_si512();
        for l in 0..4 {
            if L::new_scale(l) {
                if l > 0 {
                    for t in 0..T {
                        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(acc[t], ls));
                    }
                }
                ls = L::scales(pb, qh, c, l);
                for t in 0..T {
                    acc[t] = _mm512_set1_epi64(std::ptr::read_unaligned(
                        ex[t].add(L::ex_at(c, l)) as *const i64
                    ));
                }
            }
            // Volatile reads: LLVM would otherwise merge the 8 loads into a `vpgatherqq`
            // (slower on Zen 4, see the module docs). SAFETY of the reads: each index is
            // < 2048 (a byte or'ed with 3 bits at 8..11).
            let e = |r: usize| std::ptr::read_volatile(grid.add(idx[8 * l + r] as usize)) as i64;
            let w = _mm512_set_epi64(e(7), e(6), e(5), e(4), e(3), e(2), e(1), e(0));
            // + 2 in every byte of the rows with delta +1 (bytes ≤ 16: no carries).
            let w = _mm512_mask_add_epi64(w, !L::negative(qh, l), w, plus2);
            for t in 0..T {
                let q = std::ptr::read_unaligned(a[t].add(Q8K_QS + 32 * c + 8 * l) as *const i64);
                acc[t] = _mm512_dpbusd_epi32(acc[t], w, _mm512_set1_epi64(q));
            }
        }
        for t in 0..T {
            isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(acc[t], ls));
        }
    }
    std::array::from_fn(|t| rows_of_pairs(isum[t]))
}

/// The [`Layout`] of IQ1 layout `L`.
pub(super) struct Tile<L>(std::marker::PhantomData<L>);

impl<L: Iq1> Layout for Tile<L> {
    const BLOCK_BYTES: usize = L::BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = 0;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = L::EXTRA;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        L::prepare(blk, dst)
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
