//! AVX2 kernels of IQ1_S and IQ1_M × Q8_K (see the parent module).
//!
//! The per-block integer is `8·S + S_δ` (see `dot::iq1`). Grid entries are looked up as
//! u64 (8 bytes each) from tables of *unsigned* bytes, so each 32 values need one
//! `vpmaddubsw` (no sign trick); the constant offset that makes them unsigned goes through
//! the activation sums (Q8_K `bsums`, one `vpmaddwd` per block and row):
//! - IQ1_S: bytes g + 1 ∈ 0..=2 with sub-block scale 8·ls; per 16 values the offset term
//!   is ls·(δ − 8)·Σa, since 8·ls·(g + 1) + ls·(δ − 8) = ls·(8g + δ);
//! - IQ1_M (δ per 8 values, which `bsums` cannot carry): bytes 8g + 9 + δ ∈ 0..=18, built as
//!   the table's 8g + 8 plus 2 per byte where δ = +1 (no carries between bytes), with
//!   scale ls; offset term −9·ls·Σa per 16 values.
#![allow(non_camel_case_types)]

use super::kquants::kscale;
use super::*;
use crate::iq1::{BlockIQ1M, BlockIQ1S, Grid, GRID_P1, GRID_X8};

/// Grid entry `k` (< 2048: every index is a byte | 3 bits << 8). A volatile read: LLVM
/// otherwise merges the 4 loads of a vector into a `vpgatherqq` (an explicit gather with
/// SIMD index arithmetic measured ~5% slower than 4 scalar loads, Intel Xeon host).
#[inline(always)]
unsafe fn entry(t: &Grid, k: usize) -> i64 {
    debug_assert!(k < 2048);
    // SAFETY: k < 2048 (see above), so the read is inside the table.
    std::ptr::read_volatile(t.0.as_ptr().add(k)) as i64
}

/// Σ coef·bsums over a Q8_K block as 8 i32 lanes.
#[inline(always)]
unsafe fn bsums_dot(y: *const u8, coef: __m256i) -> __m256i {
    _mm256_madd_epi16(load(y.add(Q8K_BSUMS)), coef)
}

pub(super) struct IQ1_SK;
fns!(IQ1_S_FNS, IQ1_SK);
impl Kernel for IQ1_SK {
    const W: usize = size_of::<BlockIQ1S>();
    const A: usize = Q8K_SIZE;
    const SLOTS: usize = 1;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockIQ1S);
        // The 8 qh words: ls = 2·((qh >> 12) & 7) + 1 = ((qh >> 11) & 14) | 1; δ − 8 = −7
        // or −9 (bit 15 set: δ = −1).
        let qh = load128(x.qh.as_ptr() as *const u8);
        let ls = _mm_or_si128(
            _mm_and_si128(_mm_srli_epi16::<11>(qh), _mm_set1_epi16(14)),
            _mm_set1_epi16(1),
        );
        let dm8 = _mm_sub_epi16(
            _mm_set1_epi16(-7),
            _mm_and_si128(_mm_srli_epi16::<14>(qh), _mm_set1_epi16(2)),
        );
        let off = _mm_mullo_epi16(ls, dm8); // |ls·(δ − 8)| ≤ 135
                                            // bsums j (16 values) belongs to sub-block j / 2.
        let coef = _mm256_setr_m128i(_mm_unpacklo_epi16(off, off), _mm_unpackhi_epi16(off, off));
        let ls8 = _mm256_broadcastsi128_si256(_mm_slli_epi16::<3>(ls)); // ≤ 120
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            let h = u16::from_le_bytes(x.qh[j]) as usize;
            let q = x.qs.as_ptr().add(4 * j);
            let g = _mm256_set_epi64x(
                entry(&GRID_P1, *q.add(3) as usize | (h >> 1) & 0x700),
                entry(&GRID_P1, *q.add(2) as usize | (h << 2) & 0x700),
                entry(&GRID_P1, *q.add(1) as usize | (h << 5) & 0x700),
                entry(&GRID_P1, *q as usize | (h << 8) & 0x700),
            );
            let scale = _mm256_shuffle_epi8(ls8, bcast16_opaque(j));
            for r in 0..N {
                // g + 1 ∈ 0..=2: pairs ≤ 2·128·2; scale ≤ 120: i32 sums ≤ 2²⁴.
                let p = _mm256_maddubs_epi16(g, load(a[r].add(Q8K_QS + 32 * j)));
                sumi[r] = I::madd_add(sumi[r], p, scale);
            }
        }
        let d = _mm256_mul_ps(f16_bcast(x.d.0.as_ptr()), _mm256_set1_ps(0.125));
        for r in 0..N {
            let isum = _mm256_add_epi32(sumi[r], bsums_dot(a[r], coef));
            s.main(r, ib, slot, kscale(d, a[r]), isum);
        }
    }
}

/// `vpshufb` masks spreading IQ1_M's 4 scale words over 16-bit lanes: lane j of the low
/// 128 bits gets word j / 4 (j < 8: words 0, 1), of the high 128 bits word 2 + j / 4.
static IQ1M_WORDS: Masks = {
    let mut m = [[0u8; 32]; 8];
    let mut i = 0;
    while i < 32 {
        let lane = (i % 16) / 2;
        let word = lane / 4 + if i < 16 { 0 } else { 2 };
        m[0][i] = (2 * word + (i & 1)) as u8;
        i += 1;
    }
    Masks(m)
};

/// For the 4 delta bits of an IQ1_M sub-block (bit l: group l has δ = −1): 2 in the bytes
/// of the groups with δ = +1, 0 elsewhere.
#[repr(align(32))]
struct Plus2([[u8; 32]; 16]);
static PLUS2: Plus2 = {
    let mut t = [[0u8; 32]; 16];
    let mut bits = 0;
    while bits < 16 {
        let mut i = 0;
        while i < 32 {
            t[bits][i] = if bits >> (i / 8) & 1 == 0 { 2 } else { 0 };
            i += 1;
        }
        bits += 1;
    }
    Plus2(t)
};

pub(super) struct IQ1_MK;
fns!(IQ1_M_FNS, IQ1_MK);
impl Kernel for IQ1_MK {
    const W: usize = size_of::<BlockIQ1M>();
    const A: usize = Q8K_SIZE;
    const SLOTS: usize = 1;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockIQ1M);
        // The 16 three-bit scales s_j (j = 2·ib + half; word j / 4, bits 3·(j % 4)): each
        // lane holds its word, shifted left by 13 − 3·(j % 4) (a multiply) so that the
        // field lands in bits 13..16, then shifted down.
        let words =
            _mm256_broadcastsi128_si256(_mm_loadl_epi64(x.scales.as_ptr() as *const __m128i));
        let words = _mm256_shuffle_epi8(
            words,
            std::ptr::read_volatile(IQ1M_WORDS.0[0].as_ptr() as *const __m256i),
        );
        let sh = _mm256_setr_epi16(
            8192, 1024, 128, 16, 8192, 1024, 128, 16, 8192, 1024, 128, 16, 8192, 1024, 128, 16,
        );
        let sc = _mm256_srli_epi16::<13>(_mm256_mullo_epi16(words, sh));
        let ls = _mm256_or_si256(_mm256_slli_epi16::<1>(sc), _mm256_set1_epi16(1)); // 1..=15
                                                                                    // Scales of halves 0..8 / 8..16 in both lanes, for `scale_pair`.
        let lo8 = _mm256_permute2x128_si256::<0x00>(ls, ls);
        let hi8 = _mm256_permute2x128_si256::<0x11>(ls, ls);
        let coef = _mm256_mullo_epi16(ls, _mm256_set1_epi16(-9));
        let mut sumi = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            let h = u16::from_le_bytes([x.qh[2 * j], x.qh[2 * j + 1]]) as usize;
            let q = x.qs.as_ptr().add(4 * j);
            // Group l: index bits from nibble l of h; +2 per byte where its bit 3 is clear
            // (δ = +1), added from a table indexed by the 4 delta bits.
            let g = _mm256_set_epi64x(
                entry(&GRID_X8, *q.add(3) as usize | (h >> 4) & 0x700),
                entry(&GRID_X8, *q.add(2) as usize | h & 0x700),
                entry(&GRID_X8, *q.add(1) as usize | (h << 4) & 0x700),
                entry(&GRID_X8, *q as usize | (h << 8) & 0x700),
            );
            let bits = (h >> 3) & 1 | (h >> 6) & 2 | (h >> 9) & 4 | (h >> 12) & 8;
            let g = _mm256_add_epi8(g, load(PLUS2.0[bits].as_ptr()));
            let scale = scale_pair(lo8, hi8, j);
            for r in 0..N {
                // 8g + 9 + δ ∈ 0..=18: pairs ≤ 18·128·2; scale ≤ 15.
                let p = _mm256_maddubs_epi16(g, load(a[r].add(Q8K_QS + 32 * j)));
                sumi[r] = I::madd_add(sumi[r], p, scale);
            }
        }
        let d = _mm256_mul_ps(
            _mm256_cvtph_ps(_mm_set1_epi16(u16::from_le_bytes(x.d().0) as i16)),
            _mm256_set1_ps(0.125),
        );
        for r in 0..N {
            let isum = _mm256_add_epi32(sumi[r], bsums_dot(a[r], coef));
            s.main(r, ib, slot, kscale(d, a[r]), isum);
        }
    }
}
