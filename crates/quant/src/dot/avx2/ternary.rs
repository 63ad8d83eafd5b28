//! AVX2 kernels of TQ1_0 and TQ2_0 × Q8_K (see the parent module). Both unpack the stored
//! q ∈ 0..=2 (TQ2_0: 0..=3) to one unsigned byte per value, multiply with the activations by
//! `vpmaddubsw`/`vpdpbusd` and subtract Σ a (the Q8_K `bsums`) for the −1 offset.
#![allow(non_camel_case_types)]

use super::kquants::kscale;
use super::*;
use crate::ternary::{BlockTQ1_0, BlockTQ2_0};

/// Σ a over a Q8_K block as 8 i32 lanes (from its 16 `bsums`).
#[inline(always)]
unsafe fn bsums_lanes(y: *const u8) -> __m256i {
    _mm256_madd_epi16(load(y.add(Q8K_BSUMS)), _mm256_set1_epi16(1))
}

pub(super) struct TQ2_0K;
fns!(TQ2_0_FNS, TQ2_0K);
impl Kernel for TQ2_0K {
    const W: usize = size_of::<BlockTQ2_0>();
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
        let x = &*(w as *const BlockTQ2_0);
        let m3 = _mm256_set1_epi8(3);
        let mut sumi = [_mm256_setzero_si256(); N];
        for h in 0..2 {
            let qv = load(x.qs.as_ptr().add(32 * h));
            for l in 0..4 {
                // q ∈ 0..4 unsigned: quads ≤ 3·128·4, no saturation.
                let q = _mm256_and_si256(srli16(qv, 2 * l), m3);
                for r in 0..N {
                    let act = load(a[r].add(Q8K_QS + 128 * h + 32 * l));
                    sumi[r] = _mm256_add_epi32(sumi[r], I::dot_us(q, act));
                }
            }
        }
        let d = f16_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let isum = _mm256_sub_epi32(sumi[r], bsums_lanes(a[r]));
            s.main(r, ib, slot, kscale(d, a[r]), isum);
        }
    }
}

/// `3·x mod 256` per byte (two byte adds: the next power of 3 of a TQ1_0 byte). The result
/// passes through an empty `asm!`, so LLVM sees an unknown value: it would otherwise fold
/// the chains of adds into 16-bit zmm multiplies with widening and narrowing (~2× slower).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn times3(x: __m256i) -> __m256i {
    let mut r = _mm256_add_epi8(_mm256_add_epi8(x, x), x);
    // SAFETY: an empty instruction sequence; it only hides the value from the optimiser.
    std::arch::asm!("/* {r} */", r = inout(ymm_reg) r, options(pure, nomem, nostack, preserves_flags));
    r
}

/// Trit of each byte q = `x·3^l mod 256`: `(q·3) >> 8` ∈ 0..=2, i.e. [q ≥ 86] + [q ≥ 171]
/// (3·85 < 256 ≤ 3·86, 3·170 < 512 ≤ 3·171). Unsigned compares as signed ones on q − 128;
/// the two masks (0 or −1) add to −trit, and `vpabsb` makes it the unsigned byte the
/// `vpmaddubsw`/`vpdpbusd` dots take.
#[inline(always)]
unsafe fn trits(q: __m256i) -> __m256i {
    let s = _mm256_xor_si256(q, _mm256_set1_epi8(-128));
    let ge86 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8((86i32 - 128 - 1) as i8));
    let ge171 = _mm256_cmpgt_epi8(s, _mm256_set1_epi8((171i32 - 128 - 1) as i8));
    _mm256_abs_epi8(_mm256_add_epi8(ge86, ge171))
}

pub(super) struct TQ1_0K;
fns!(TQ1_0_FNS, TQ1_0K);
impl Kernel for TQ1_0K {
    const W: usize = size_of::<BlockTQ1_0>();
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
        let x = &*(w as *const BlockTQ1_0);
        // q = x·3^l mod 256 for each vector, by repeated ×3 (see `BlockTQ1_0` for the
        // order): values 0..160 from qs[0..32] (l = 0..5); 160..224 from qs[32..48], two
        // powers per vector (low lane 3^l, high lane 3^(l+1)); 224..240 from its 3^4 with
        // the 16 qh values 240..256 (4 bytes × 3^0..3^4, a power per dword) in the high lane.
        let q0 = load(x.qs.as_ptr());
        let q1 = times3(q0);
        let q2 = times3(q1);
        let q3 = times3(q2);
        let q4 = times3(q3);
        let y = _mm256_broadcastsi128_si256(load128(x.qs.as_ptr().add(32)));
        let y5 = _mm256_blend_epi32::<0xf0>(y, times3(y));
        let y6 = times3(times3(y5));
        let h1 = _mm256_set1_epi32(std::ptr::read_unaligned(x.qh.as_ptr() as *const i32));
        let h3 = times3(h1);
        let h9 = times3(h3);
        let h = _mm256_blend_epi32::<0x20>(h1, h3);
        let h = _mm256_blend_epi32::<0x40>(h, h9);
        let h = _mm256_blend_epi32::<0x80>(h, times3(h9));
        let y7 = _mm256_blend_epi32::<0xf0>(times3(times3(y6)), h);
        // (Not `.map(trits)`: a closure does not inherit the target features.)
        let vecs = [
            trits(q0),
            trits(q1),
            trits(q2),
            trits(q3),
            trits(q4),
            trits(y5),
            trits(y6),
            trits(y7),
        ];
        let mut sumi = [_mm256_setzero_si256(); N];
        for (v, t) in vecs.iter().enumerate() {
            for r in 0..N {
                // t ∈ 0..=2 unsigned: no saturation.
                let act = load(a[r].add(Q8K_QS + 32 * v));
                sumi[r] = _mm256_add_epi32(sumi[r], I::dot_us(*t, act));
            }
        }
        let d = f16_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let isum = _mm256_sub_epi32(sumi[r], bsums_lanes(a[r]));
            s.main(r, ib, slot, kscale(d, a[r]), isum);
        }
    }
}
