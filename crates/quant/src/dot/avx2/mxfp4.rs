//! AVX2 kernel of MXFP4 × Q8_0 (see the parent module): IQ4_NL's kernel with the E2M1
//! codebook and the E8M0 block scale.
#![allow(non_camel_case_types)]

use super::*;
use crate::mxfp4::{e8m0_to_f32_half, BlockMXFP4, KVALUES_MXFP4};

/// The doubled E2M1 codebook in both 128-bit lanes, for `vpshufb` lookups.
#[inline(always)]
unsafe fn mxfp4_table() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_MXFP4.as_ptr() as *const __m128i))
}

pub(super) struct MXFP4K;
fns!(MXFP4_FNS, MXFP4K);
impl Kernel for MXFP4K {
    const W: usize = size_of::<BlockMXFP4>();
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
        let x = &*(w as *const BlockMXFP4);
        // |kvalue| ≤ 12: pairs ≤ 128·12·2, no saturation.
        let q = _mm256_shuffle_epi8(mxfp4_table(), nibbles32(x.qs.as_ptr()));
        let dx = _mm_set1_ps(e8m0_to_f32_half(x.e));
        for r in 0..N {
            let y = &*(a[r] as *const BlockQ8_0);
            let isum = dot_s8::<I>(q, load(y.qs.as_ptr() as *const u8));
            // ggml's order: d8 · 2^(e−128).
            let d = _mm256_broadcastss_ps(_mm_mul_ps(f16_x4(y.d.0.as_ptr()), dx));
            s.main(r, ib, slot, d, isum);
        }
    }
}
