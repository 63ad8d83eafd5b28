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

/// `vpmullw` multipliers for [`trits`]: the even and odd bytes' powers of 3 (`m_even << 8`,
/// `m_odd`) per 16-bit lane, for a 32-byte vector whose byte j is multiplied by `pow[j]`.
#[inline(always)]
unsafe fn trit_muls(pow: [u8; 32]) -> (__m256i, __m256i) {
    let even: [i16; 16] = std::array::from_fn(|k| ((pow[2 * k] as u16) << 8) as i16);
    let odd: [i16; 16] = std::array::from_fn(|k| pow[2 * k + 1] as i16);
    (
        _mm256_loadu_si256(even.as_ptr() as *const __m256i),
        _mm256_loadu_si256(odd.as_ptr() as *const __m256i),
    )
}

/// Trits of 32 TQ1_0 bytes: byte j → `((x_j·pow_j mod 256)·3) >> 8` ∈ 0..=2, with the
/// multipliers from [`trit_muls`]. In 16-bit lanes: the even byte times `m << 8` leaves
/// `(x·m mod 256) << 8`, the odd byte (in place) times m likewise; `vpmulhuw` by 3 then
/// gives `((x·m mod 256)·3) >> 8` in the low byte.
#[inline(always)]
unsafe fn trits(x: __m256i, mul: (__m256i, __m256i)) -> __m256i {
    let lo = _mm256_set1_epi16(0x00ff);
    let three = _mm256_set1_epi16(3);
    let e = _mm256_mullo_epi16(_mm256_and_si256(x, lo), mul.0);
    let o = _mm256_mullo_epi16(_mm256_andnot_si256(lo, x), mul.1);
    let te = _mm256_mulhi_epu16(e, three);
    let to = _mm256_mulhi_epu16(o, three);
    _mm256_or_si256(te, _mm256_slli_epi16::<8>(to))
}

/// The multiplier pairs of the TQ1_0 kernel: 0..5 = 3^l for all 32 bytes; 5, 6 = lanes
/// (3^l, 3^(l+1)) for l = 0, 2; 7 = low lane 3^4 (the last `qs` trit), high lane the `qh`
/// bytes repeated 4 times with 1, 3, 9, 27.
struct TritMuls([(__m256i, __m256i); 8]);

#[inline(always)]
unsafe fn tq1_muls() -> TritMuls {
    let mut m = [(_mm256_setzero_si256(), _mm256_setzero_si256()); 8];
    const P: [u8; 5] = crate::ternary::POW3;
    for (l, v) in m.iter_mut().enumerate().take(5) {
        *v = trit_muls([P[l]; 32]);
    }
    for (k, l) in [(5, 0), (6, 2)] {
        m[k] = trit_muls(std::array::from_fn(|j| P[l + j / 16]));
    }
    m[7] = trit_muls(std::array::from_fn(|j| {
        if j < 16 {
            P[4]
        } else {
            P[(j - 16) / 4]
        }
    }));
    TritMuls(m)
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
        let m = tq1_muls();
        let q0 = load(x.qs.as_ptr());
        let q1 = _mm256_broadcastsi128_si256(load128(x.qs.as_ptr().add(32)));
        let qh = std::ptr::read_unaligned(x.qh.as_ptr() as *const i32);
        let q2 = _mm256_inserti128_si256::<1>(q1, _mm_set1_epi32(qh));
        // The 8 vectors of 32 trits, in value order (see `BlockTQ1_0`): values 0..160 from
        // qs[0..32], 160..224 from qs[32..48] (two trits per vector), 224..240 from its
        // last trit with the 16 qh values 240..256 in the high lane.
        let vecs = [
            trits(q0, m.0[0]),
            trits(q0, m.0[1]),
            trits(q0, m.0[2]),
            trits(q0, m.0[3]),
            trits(q0, m.0[4]),
            trits(q1, m.0[5]),
            trits(q1, m.0[6]),
            trits(q2, m.0[7]),
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
