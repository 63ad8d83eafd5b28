//! AVX2 kernels of the 256-value super-blocks (k-quants, IQ4_XS) × Q8_K (see the parent
//! module).
// Kernel marker types are named after the ggml types they implement.
#![allow(non_camel_case_types)]
#![allow(clippy::needless_range_loop)]

use super::*;

// ---------------------------------------------------------------------------------------
// 256-value super-blocks × Q8_K. Activation block r: f32 d at +0, qs at +4, bsums at +260.

/// `d_w · d_a` broadcast, for a weight f16 at `wd` and a Q8_K block at `y`.
#[inline(always)]
pub(super) unsafe fn kscale(wd: __m256, y: *const u8) -> __m256 {
    _mm256_mul_ps(wd, _mm256_set1_ps(f32_at(y)))
}

pub(super) struct Q2_KK;
fns!(Q2_K_FNS, Q2_KK);
impl Kernel for Q2_KK {
    const W: usize = size_of::<BlockQ2K>();
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
        let x = &*(w as *const BlockQ2K);
        let scv = load128(x.scales.as_ptr());
        let m4 = _mm_set1_epi8(0x0f);
        let sc = _mm_and_si128(scv, m4);
        let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(scv), m4));
        let lo8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sc));
        let hi8 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128::<8>(sc)));
        let m3 = _mm256_set1_epi8(3);
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut sumb = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            let qv = load(x.qs.as_ptr().add(32 * half));
            for k in 0..4 {
                let v = 4 * half + k;
                // q ∈ 0..4: (q·a) pairs ≤ 3·128·2, scale ≤ 15.
                let q = _mm256_and_si256(srli16(qv, 2 * k), m3);
                let scale = scale_pair(lo8, hi8, v);
                for r in 0..N {
                    let p = _mm256_maddubs_epi16(q, load(a[r].add(Q8K_QS + 32 * v)));
                    // One row: odd vectors in a second chain (short `vpdpwssd` chains).
                    if N == 1 && v % 2 == 1 {
                        sumb[r] = I::madd_add(sumb[r], p, scale);
                    } else {
                        sumi[r] = I::madd_add(sumi[r], p, scale);
                    }
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb[0]);
        }
        // d and dmin are adjacent f16: one conversion gives [d, dmin, d, dmin, …].
        let ddmin = f16x2_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let both = kscale(ddmin, a[r]);
            s.main(r, ib, slot, _mm256_moveldup_ps(both), sumi[r]);
            let summs = _mm256_madd_epi16(load(a[r].add(Q8K_BSUMS)), mins);
            s.mins(r, ib, slot, _mm256_movehdup_ps(both), summs);
        }
    }
}

pub(super) struct Q3_KK;
fns!(Q3_K_FNS, Q3_KK);
impl Kernel for Q3_KK {
    const W: usize = size_of::<BlockQ3K>();
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
        let x = &*(w as *const BlockQ3K);
        // q = low2 + 4·hbit − 4: Σ sc·Σ q·a = Σ sc·Σ (low2 + 4·hbit)·a − 4·Σ sc·bsum.
        let [lo, hi] = q3k_scales_u64(&x.scales);
        let scv = _mm_sub_epi8(_mm_set_epi64x(hi as i64, lo as i64), _mm_set1_epi8(32));
        let sc16 = _mm256_cvtepi8_epi16(scv);
        let lo8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(scv));
        let hi8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128::<8>(scv)));
        let hm = load(x.hmask.as_ptr());
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm256_set1_epi8(4);
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut sumb = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            let qv = load(x.qs.as_ptr().add(32 * half));
            for k in 0..4 {
                let v = 4 * half + k;
                let low = _mm256_and_si256(srli16(qv, 2 * k), m3);
                // bit v of each hmask byte, moved to bit 2.
                let hb = if v <= 2 {
                    slli16(hm, 2 - v)
                } else {
                    srli16(hm, v - 2)
                };
                let q = _mm256_or_si256(low, _mm256_and_si256(hb, m4));
                let scale = scale_pair(lo8, hi8, v);
                for r in 0..N {
                    let p = _mm256_maddubs_epi16(q, load(a[r].add(Q8K_QS + 32 * v)));
                    // One row: odd vectors in a second chain (short `vpdpwssd` chains).
                    if N == 1 && v % 2 == 1 {
                        sumb[r] = I::madd_add(sumb[r], p, scale);
                    } else {
                        sumi[r] = I::madd_add(sumi[r], p, scale);
                    }
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb[0]);
        }
        let d = f16_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let corr = _mm256_madd_epi16(load(a[r].add(Q8K_BSUMS)), sc16);
            let isum = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32::<2>(corr));
            s.main(r, ib, slot, kscale(d, a[r]), isum);
        }
    }
}

/// Q4_K / Q5_K scale and min vectors: (scales 0..8 as i16 in both lanes, each min as two
/// i16 so that `madd` with the 16 bsums pairs them up).
#[inline(always)]
unsafe fn k4_vectors(packed: &[u8; 12]) -> (__m256i, __m256i) {
    let [sc, m] = k4_scales_mins_u64(packed);
    let sc = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
    let m = _mm_cvtsi64_si128(m as i64);
    (sc, _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m)))
}

pub(super) struct Q4_KK;
fns!(Q4_K_FNS, Q4_KK);
impl Kernel for Q4_KK {
    const W: usize = size_of::<BlockQ4K>();
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
        let x = &*(w as *const BlockQ4K);
        let (sc, mins) = k4_vectors(&x.scales);
        let m4 = _mm256_set1_epi8(0x0f);
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut sumb = [_mm256_setzero_si256(); N];
        for j in 0..4 {
            // 32 bytes of qs = sub-blocks 2j (low nibbles) and 2j+1 (high nibbles).
            let qv = load(x.qs.as_ptr().add(32 * j));
            let lo = _mm256_and_si256(qv, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qv), m4);
            let sl = _mm256_shuffle_epi8(sc, bcast16_opaque(2 * j));
            let sh = _mm256_shuffle_epi8(sc, bcast16_opaque(2 * j + 1));
            for r in 0..N {
                let y = a[r].add(Q8K_QS + 64 * j);
                // q ≤ 15: pairs ≤ 15·128·2; scale ≤ 63.
                let pl = _mm256_maddubs_epi16(lo, load(y));
                let ph = _mm256_maddubs_epi16(hi, load(y.add(32)));
                sumi[r] = I::madd_add(sumi[r], pl, sl);
                // One row: a second chain (short dependency chains for `vpdpwssd`);
                // several rows are independent chains already.
                if N == 1 {
                    sumb[r] = I::madd_add(sumb[r], ph, sh);
                } else {
                    sumi[r] = I::madd_add(sumi[r], ph, sh);
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb[0]);
        }
        // d and dmin are adjacent f16: one conversion gives [d, dmin, d, dmin, …].
        let ddmin = f16x2_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let both = kscale(ddmin, a[r]);
            s.main(r, ib, slot, _mm256_moveldup_ps(both), sumi[r]);
            let summs = _mm256_madd_epi16(load(a[r].add(Q8K_BSUMS)), mins);
            s.mins(r, ib, slot, _mm256_movehdup_ps(both), summs);
        }
    }
}

pub(super) struct Q5_KK;
fns!(Q5_K_FNS, Q5_KK);
impl Kernel for Q5_KK {
    const W: usize = size_of::<BlockQ5K>();
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
        let x = &*(w as *const BlockQ5K);
        let (sc, mins) = k4_vectors(&x.scales);
        let m4 = _mm256_set1_epi8(0x0f);
        let m16 = _mm256_set1_epi8(0x10);
        let hbits = load(x.qh.as_ptr());
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut sumb = [_mm256_setzero_si256(); N];
        for j in 0..4 {
            let qv = load(x.qs.as_ptr().add(32 * j));
            // Fifth bits: bit 2j of qh[l] for the low nibbles, bit 2j+1 for the high.
            let hsh = srli16(hbits, 2 * j);
            let lo = _mm256_or_si256(
                _mm256_and_si256(qv, m4),
                _mm256_and_si256(_mm256_slli_epi16::<4>(hsh), m16),
            );
            let hi = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(qv), m4),
                _mm256_and_si256(_mm256_slli_epi16::<3>(hsh), m16),
            );
            let sl = _mm256_shuffle_epi8(sc, bcast16_opaque(2 * j));
            let sh = _mm256_shuffle_epi8(sc, bcast16_opaque(2 * j + 1));
            for r in 0..N {
                let y = a[r].add(Q8K_QS + 64 * j);
                // q ≤ 31: pairs ≤ 31·128·2; scale ≤ 63.
                let pl = _mm256_maddubs_epi16(lo, load(y));
                let ph = _mm256_maddubs_epi16(hi, load(y.add(32)));
                sumi[r] = I::madd_add(sumi[r], pl, sl);
                // One row: a second chain (short dependency chains for `vpdpwssd`);
                // several rows are independent chains already.
                if N == 1 {
                    sumb[r] = I::madd_add(sumb[r], ph, sh);
                } else {
                    sumi[r] = I::madd_add(sumi[r], ph, sh);
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb[0]);
        }
        // d and dmin are adjacent f16: one conversion gives [d, dmin, d, dmin, …].
        let ddmin = f16x2_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let both = kscale(ddmin, a[r]);
            s.main(r, ib, slot, _mm256_moveldup_ps(both), sumi[r]);
            let summs = _mm256_madd_epi16(load(a[r].add(Q8K_BSUMS)), mins);
            s.mins(r, ib, slot, _mm256_movehdup_ps(both), summs);
        }
    }
}

pub(super) struct Q6_KK;
fns!(Q6_K_FNS, Q6_KK);
impl Kernel for Q6_KK {
    const W: usize = size_of::<BlockQ6K>();
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
        let x = &*(w as *const BlockQ6K);
        // Σ sc·Σ (q − 32)·a = Σ sc·Σ q·a − 32·Σ sc·bsum, with q ∈ 0..64 unsigned.
        let scv = load128(x.scales.as_ptr() as *const u8);
        let sc16 = _mm256_cvtepi8_epi16(scv);
        let lo8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(scv));
        let hi8 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128::<8>(scv)));
        let m4 = _mm256_set1_epi8(0x0f);
        let m30 = _mm256_set1_epi8(0x30);
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut sumb = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            let ql1 = load(x.ql.as_ptr().add(64 * half));
            let ql2 = load(x.ql.as_ptr().add(64 * half + 32));
            let qh = load(x.qh.as_ptr().add(32 * half));
            let qs = [
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql2, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql2), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                ),
            ];
            for (k, &q) in qs.iter().enumerate() {
                let v = 4 * half + k;
                let scale = scale_pair(lo8, hi8, v);
                for r in 0..N {
                    // q ≤ 63: pairs ≤ 63·128·2 < 2¹⁵; |scale| ≤ 128.
                    let p = _mm256_maddubs_epi16(q, load(a[r].add(Q8K_QS + 32 * v)));
                    // One row: odd vectors in a second chain (short `vpdpwssd` chains).
                    if N == 1 && v % 2 == 1 {
                        sumb[r] = I::madd_add(sumb[r], p, scale);
                    } else {
                        sumi[r] = I::madd_add(sumi[r], p, scale);
                    }
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb[0]);
        }
        let d = f16_bcast(x.d.0.as_ptr());
        for r in 0..N {
            let corr = _mm256_madd_epi16(load(a[r].add(Q8K_BSUMS)), sc16);
            let isum = _mm256_sub_epi32(sumi[r], _mm256_slli_epi32::<5>(corr));
            s.main(r, ib, slot, kscale(d, a[r]), isum);
        }
    }
}

pub(super) struct IQ4_XSK;
fns!(IQ4_XS_FNS, IQ4_XSK);
impl Kernel for IQ4_XSK {
    const W: usize = size_of::<BlockIQ4XS>();
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
        let x = &*(w as *const BlockIQ4XS);
        let ls = iq4xs_scales_u64(x.scales_h, &x.scales_l);
        // The 8 signed scales as i16 in both lanes; sub-block j's is broadcast by a shuffle.
        let ls16 = _mm_sub_epi16(
            _mm_cvtepu8_epi16(_mm_cvtsi64_si128(ls as i64)),
            _mm_set1_epi16(32),
        );
        let ls16 = _mm256_broadcastsi128_si256(ls16);
        let table = iq4_table();
        let mut sumi = [_mm256_setzero_si256(); N];
        let mut sumb = [_mm256_setzero_si256(); N];
        for j in 0..8 {
            let q = _mm256_shuffle_epi8(table, nibbles32(x.qs.as_ptr().add(16 * j)));
            let scale = _mm256_shuffle_epi8(ls16, bcast16_opaque(j));
            for r in 0..N {
                // |kvalue| ≤ 127: pairs ≤ 128·127·2; |scale| ≤ 32.
                let p = mul_s8(q, load(a[r].add(Q8K_QS + 32 * j)));
                // One row: odd vectors in a second chain (short `vpdpwssd` chains).
                if N == 1 && j % 2 == 1 {
                    sumb[r] = I::madd_add(sumb[r], p, scale);
                } else {
                    sumi[r] = I::madd_add(sumi[r], p, scale);
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb[0]);
        }
        let d = f16_bcast(x.d.0.as_ptr());
        for r in 0..N {
            s.main(r, ib, slot, kscale(d, a[r]), sumi[r]);
        }
    }
}
