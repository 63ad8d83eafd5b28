//! AVX2 kernels of the legacy 32-value blocks × Q8_0 / Q8_1 (see the parent module).
// Kernel marker types are named after the ggml types they implement.
#![allow(non_camel_case_types)]
#![allow(clippy::needless_range_loop)]

use super::*;

pub(super) struct Q4_0K;
fns!(Q4_0_FNS, Q4_0K);
impl Kernel for Q4_0K {
    const W: usize = size_of::<BlockQ4_0>();
    const A: usize = size_of::<BlockQ8_0>();
    const SLOTS: usize = 2;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockQ4_0);
        // Σ (q − 8)·a = Σ q·a − Σ 8·a, both as unsigned × signed byte products.
        let q = nibbles32(x.qs.as_ptr());
        let eight = _mm256_set1_epi8(8);
        let dx = f16_x4(x.d.0.as_ptr());
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_0);
            let yv = load(y.qs.as_ptr() as *const u8);
            let isum = I::dot_us_minus(q, eight, yv);
            s.main(
                r,
                ib,
                slot,
                _mm256_broadcastss_ps(_mm_mul_ps(dx, f16_x4(y.d.0.as_ptr()))),
                isum,
            );
        }
    }
}

pub(super) struct Q4_1K;
fns!(Q4_1_FNS, Q4_1K);
impl Kernel for Q4_1K {
    const W: usize = size_of::<BlockQ4_1>();
    const A: usize = size_of::<BlockQ8_1>();
    const SLOTS: usize = 2;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockQ4_1);
        let q = nibbles32(x.qs.as_ptr());
        let dx = f16_x4(x.d.0.as_ptr());
        // m in lane 0 only: the m·s term enters the 8-lane sum once.
        let mx = _mm256_blend_ps::<1>(_mm256_setzero_ps(), f16_bcast(x.m.0.as_ptr()));
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_1);
            let isum = I::dot_us(q, load(y.qs.as_ptr() as *const u8));
            s.main(
                r,
                ib,
                slot,
                _mm256_broadcastss_ps(_mm_mul_ps(dx, f16_x4(y.d.0.as_ptr()))),
                isum,
            );
            s.fma(r, slot, mx, f16_bcast(y.s.0.as_ptr()));
        }
    }
}

pub(super) struct Q5_0K;
fns!(Q5_0_FNS, Q5_0K);
impl Kernel for Q5_0K {
    const W: usize = size_of::<BlockQ5_0>();
    const A: usize = size_of::<BlockQ8_0>();
    const SLOTS: usize = 2;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockQ5_0);
        // q = nibble | bit·16 ∈ 0..32 (unsigned); Σ (q − 16)·a = Σ q·a − Σ 16·a.
        let hi = _mm256_and_si256(bits32(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles32(x.qs.as_ptr()), hi);
        let sixteen = _mm256_set1_epi8(16);
        let dx = f16_x4(x.d.0.as_ptr());
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_0);
            let yv = load(y.qs.as_ptr() as *const u8);
            let isum = I::dot_us_minus(q, sixteen, yv);
            s.main(
                r,
                ib,
                slot,
                _mm256_broadcastss_ps(_mm_mul_ps(dx, f16_x4(y.d.0.as_ptr()))),
                isum,
            );
        }
    }
}

pub(super) struct Q5_1K;
fns!(Q5_1_FNS, Q5_1K);
impl Kernel for Q5_1K {
    const W: usize = size_of::<BlockQ5_1>();
    const A: usize = size_of::<BlockQ8_1>();
    const SLOTS: usize = 2;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockQ5_1);
        let hi = _mm256_and_si256(bits32(u32::from_le_bytes(x.qh)), _mm256_set1_epi8(0x10));
        let q = _mm256_or_si256(nibbles32(x.qs.as_ptr()), hi);
        let dx = f16_x4(x.d.0.as_ptr());
        // m in lane 0 only: the m·s term enters the 8-lane sum once.
        let mx = _mm256_blend_ps::<1>(_mm256_setzero_ps(), f16_bcast(x.m.0.as_ptr()));
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_1);
            let isum = I::dot_us(q, load(y.qs.as_ptr() as *const u8));
            s.main(
                r,
                ib,
                slot,
                _mm256_broadcastss_ps(_mm_mul_ps(dx, f16_x4(y.d.0.as_ptr()))),
                isum,
            );
            s.fma(r, slot, mx, f16_bcast(y.s.0.as_ptr()));
        }
    }
}

pub(super) struct Q8_0K;
fns!(Q8_0_FNS, Q8_0K);
impl Kernel for Q8_0K {
    const W: usize = size_of::<BlockQ8_0>();
    const A: usize = size_of::<BlockQ8_0>();
    const SLOTS: usize = 2;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockQ8_0);
        let q = load(x.qs.as_ptr() as *const u8);
        let dx = f16_x4(x.d.0.as_ptr());
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_0);
            let isum = dot_s8::<I>(q, load(y.qs.as_ptr() as *const u8));
            s.main(
                r,
                ib,
                slot,
                _mm256_broadcastss_ps(_mm_mul_ps(dx, f16_x4(y.d.0.as_ptr()))),
                isum,
            );
        }
    }
}

pub(super) struct IQ4_NLK;
fns!(IQ4_NL_FNS, IQ4_NLK);
impl Kernel for IQ4_NLK {
    const W: usize = size_of::<BlockIQ4NL>();
    const A: usize = size_of::<BlockQ8_0>();
    const SLOTS: usize = 2;
    #[inline(always)]
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    ) {
        let x = &*(w as *const BlockIQ4NL);
        let q = _mm256_shuffle_epi8(iq4_table(), nibbles32(x.qs.as_ptr()));
        let dx = f16_x4(x.d.0.as_ptr());
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_0);
            let isum = dot_s8::<I>(q, load(y.qs.as_ptr() as *const u8));
            s.main(
                r,
                ib,
                slot,
                _mm256_broadcastss_ps(_mm_mul_ps(dx, f16_x4(y.d.0.as_ptr()))),
                isum,
            );
        }
    }
}
