//! AVX2 + FMA + F16C dot products (x86-64), chosen at run time, plain or with AVX512-VNNI.
//!
//! Technique (the facts are ggml's, the code is ours): weights are unpacked to one byte per
//! value in 256-bit registers, multiplied with the int8 activations by `vpmaddubsw`
//! (unsigned × signed bytes → pairs summed into i16) and widened by `vpmaddwd` (i16 × i16 →
//! pairs summed into i32), with the sub-block scale as the i16 multiplier where a type has
//! one. Each block leaves 8 i32 lanes whose sum is exactly the scalar reference's integer
//! (no saturation for any input in the formats' ranges, see each kernel); that integer
//! vector is converted to f32 once per block and accumulated with one FMA against the
//! broadcast block scale. The 8 f32 lanes are summed once per row.
//!
//! With AVX512-VNNI (+VL) the same block code runs with `vpdpbusd` (u8 × s8 quads summed
//! into i32, accumulating) and `vpdpwssd` (i16 pairs into i32, accumulating) in place of the
//! `vpmaddubsw`/`vpmaddwd`/`vpaddd` chains ([`Isa`]): the integers and every f32 operation
//! are the same, so the two variants give bit-identical results.
//!
//! Signed weights use `|a| · (w·sign(a))`, so an activation of −128 is exact (|−128| = 128
//! as an unsigned byte). The one input outside that: a Q8_0 *weight* of −128, which ggml's
//! quantizer never writes (it rounds to −127..=127); such a block gives a wrong (but
//! memory-safe) value.
//!
//! Every kernel handles `N` = 1..=4 activation rows per weight row: the weight block is
//! loaded and unpacked once and multiplied into each row (the GEMM path). Each row's f32
//! accumulation order is the same for every `N`, so results are batch-invariant.
//!
//! Legacy blocks alternate between two f32 accumulators (even/odd block index) so the FMA
//! latency chain does not bound their short blocks; super-blocks use one accumulator per
//! row, into which the k-quant mins are subtracted too (fewer live registers at N = 4).

// Kernel marker types are named after the ggml types they implement (Q4_0K, IQ4_XSK).
#![allow(non_camel_case_types)]
// Row loops index several parallel arrays (pointers, accumulators) by row number.
#![allow(clippy::needless_range_loop)]

use super::layout::{iq4xs_scales_u64, k4_scales_mins_u64, q3k_scales_u64};
use super::layout::{Q8K_BSUMS, Q8K_QS, Q8K_SIZE};
use super::RowsFns;
use crate::blocks::*;
use crate::GgmlType;
use std::arch::x86_64::*;
use std::mem::size_of;

/// Whether this CPU runs these kernels.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Whether this CPU also has AVX512-VNNI on 256-bit registers (`vpdpbusd`/`vpdpwssd`).
pub(super) fn vnni_available() -> bool {
    // BW is not needed by the instructions we write, but lets LLVM encode the byte
    // shuffles/ands with EVEX and so use registers 16..31 directly (no extra moves).
    available()
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
}

/// The kernels for a weight type (N = 1..=4 rows): plain AVX2, or with VNNI (only when
/// [`vnni_available`]).
pub(super) fn kernels(weight: GgmlType, vnni: bool) -> Option<&'static RowsFns> {
    use float::*;
    use kquants::*;
    use legacy::*;
    use GgmlType::*;
    let v = vnni as usize;
    Some(match weight {
        // No integer dots: one kernel serves both.
        F32 => &F32_FNS,
        F16 => &F16_FNS,
        BF16 => &BF16_FNS,
        Q4_0 => &Q4_0_FNS[v],
        Q4_1 => &Q4_1_FNS[v],
        Q5_0 => &Q5_0_FNS[v],
        Q5_1 => &Q5_1_FNS[v],
        Q8_0 => &Q8_0_FNS[v],
        IQ4_NL => &IQ4_NL_FNS[v],
        Q2_K => &Q2_K_FNS[v],
        Q3_K => &Q3_K_FNS[v],
        Q4_K => &Q4_K_FNS[v],
        Q5_K => &Q5_K_FNS[v],
        Q6_K => &Q6_K_FNS[v],
        IQ4_XS => &IQ4_XS_FNS[v],
        IQ1_S => &iq1::IQ1_S_FNS[v],
        IQ1_M => &iq1::IQ1_M_FNS[v],
        TQ1_0 => &ternary::TQ1_0_FNS[v],
        TQ2_0 => &ternary::TQ2_0_FNS[v],
        MXFP4 => &mxfp4::MXFP4_FNS[v],
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => return iq::kernels(weight, v),
        _ => return None,
    })
}

/// Test hook: per-block integer sums (see `scalar::block_ints`); lengths already checked.
/// The caller checked [`available`] (and [`vnni_available`] if `vnni`).
pub(super) fn block_ints(
    weight: GgmlType,
    vnni: bool,
    w: &[u8],
    a: &[u8],
) -> Option<Vec<[i32; 2]>> {
    use kquants::*;
    use legacy::*;
    use GgmlType::*;
    let nb = w.len() / weight.type_size();
    let (w, a) = (w.as_ptr(), a.as_ptr());
    macro_rules! pick {
        ($k:ty) => {
            if vnni {
                ints_vnni::<$k>(nb, w, a)
            } else {
                ints::<$k>(nb, w, a)
            }
        };
    }
    // SAFETY: the caller checked that `w` and `a` hold `nb` blocks each, and the CPU features.
    unsafe {
        Some(match weight {
            Q4_0 => pick!(Q4_0K),
            Q4_1 => pick!(Q4_1K),
            Q5_0 => pick!(Q5_0K),
            Q5_1 => pick!(Q5_1K),
            Q8_0 => pick!(Q8_0K),
            IQ4_NL => pick!(IQ4_NLK),
            Q2_K => pick!(Q2_KK),
            Q3_K => pick!(Q3_KK),
            Q4_K => pick!(Q4_KK),
            Q5_K => pick!(Q5_KK),
            Q6_K => pick!(Q6_KK),
            IQ4_XS => pick!(IQ4_XSK),
            IQ1_S => pick!(iq1::IQ1_SK),
            IQ1_M => pick!(iq1::IQ1_MK),
            TQ1_0 => pick!(ternary::TQ1_0K),
            TQ2_0 => pick!(ternary::TQ2_0K),
            MXFP4 => pick!(mxfp4::MXFP4K),
            IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => {
                return iq::block_ints(weight, vnni, nb, w, a)
            }
            _ => return None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers. All `#[inline(always)]`: they are only called from the
// `#[target_feature]` kernels below, into which they (and the intrinsics) inline.

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

#[inline(always)]
unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p as *const __m128i)
}

/// An f16 at `p`, converted and broadcast to 8 lanes.
#[inline(always)]
unsafe fn f16_bcast(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(p as *const i16)))
}

/// Two adjacent f16 at `p` (a, b), converted: `[a, b, a, b, a, b, a, b]`.
#[inline(always)]
unsafe fn f16x2_bcast(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi32(std::ptr::read_unaligned(p as *const i32)))
}

/// An f16 at `p`, converted at 128-bit width (one uop; the 256-bit conversion is two) in
/// all 4 lanes.
#[inline(always)]
unsafe fn f16_x4(p: *const u8) -> __m128 {
    _mm_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(p as *const i16)))
}

/// An f16 at `p` as f32.
#[inline(always)]
unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        std::ptr::read_unaligned(p as *const u16) as i32,
    )))
}

#[inline(always)]
unsafe fn f32_at(p: *const u8) -> f32 {
    std::ptr::read_unaligned(p as *const f32)
}

/// 16 bytes of packed nibbles → 32 bytes: low nibbles in bytes 0..16, high in 16..32.
#[inline(always)]
unsafe fn nibbles32(p: *const u8) -> __m256i {
    let both = _mm256_broadcastsi128_si256(load128(p));
    let shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// The 32 bits of `bits` as bytes: 0xFF where bit j is set, 0 elsewhere.
#[inline(always)]
unsafe fn bits32(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let spread = _mm256_shuffle_epi8(
        v,
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        ),
    );
    let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    _mm256_cmpeq_epi8(_mm256_and_si256(spread, sel), sel)
}

/// Signed bytes `w` (−127..=127) · signed bytes `a` (any) → 16 lanes of i16 pair sums
/// (|a|·|w|·2 ≤ 128·127·2 < 2¹⁵: never saturates).
#[inline(always)]
unsafe fn mul_s8(w: __m256i, a: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a))
}

/// The integer multiply-accumulate steps, as plain AVX2 or fused by AVX512-VNNI. Both
/// compute the same integers (no saturation in the formats' ranges, see the kernels).
trait Isa {
    /// `acc + Σ pairs(p · s)` over i16 lanes (`vpmaddwd` + `vpaddd`, or `vpdpwssd`).
    unsafe fn madd_add(acc: __m256i, p: __m256i, s: __m256i) -> __m256i;
    /// `Σ quads(u · s)`, unsigned × signed bytes → 8 lanes of i32 (`vpmaddubsw` +
    /// `vpmaddwd`, or `vpdpbusd`).
    unsafe fn dot_us(u: __m256i, s: __m256i) -> __m256i;
    /// `Σ quads((u − c) · s)` for unsigned bytes `u`, `c` (the Q4_0/Q5_0 offsets).
    unsafe fn dot_us_minus(u: __m256i, c: __m256i, s: __m256i) -> __m256i;
}

/// Plain AVX2.
struct Avx2;
impl Isa for Avx2 {
    #[inline(always)]
    unsafe fn madd_add(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(p, s))
    }
    #[inline(always)]
    unsafe fn dot_us(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn dot_us_minus(u: __m256i, c: __m256i, s: __m256i) -> __m256i {
        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(u, s), _mm256_maddubs_epi16(c, s));
        _mm256_madd_epi16(p, _mm256_set1_epi16(1))
    }
}

/// AVX512-VNNI on 256-bit registers (AVX512VL): the widening multiply and the accumulate
/// are one instruction.
struct Vnni;
impl Isa for Vnni {
    #[inline(always)]
    unsafe fn madd_add(acc: __m256i, p: __m256i, s: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, p, s)
    }
    #[inline(always)]
    unsafe fn dot_us(u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s)
    }
    #[inline(always)]
    unsafe fn dot_us_minus(u: __m256i, c: __m256i, s: __m256i) -> __m256i {
        let z = _mm256_setzero_si256();
        _mm256_sub_epi32(_mm256_dpbusd_epi32(z, u, s), _mm256_dpbusd_epi32(z, c, s))
    }
}

/// Signed bytes `w` (−127..=127) · signed bytes `a` (any) → 8 lanes of i32 sums.
#[inline(always)]
unsafe fn dot_s8<I: Isa>(w: __m256i, a: __m256i) -> __m256i {
    I::dot_us(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a))
}

/// Shift each 16-bit lane right by `n` (0..=7, constant after inlining).
#[inline(always)]
unsafe fn srli16(x: __m256i, n: usize) -> __m256i {
    match n {
        0 => x,
        1 => _mm256_srli_epi16::<1>(x),
        2 => _mm256_srli_epi16::<2>(x),
        3 => _mm256_srli_epi16::<3>(x),
        4 => _mm256_srli_epi16::<4>(x),
        5 => _mm256_srli_epi16::<5>(x),
        6 => _mm256_srli_epi16::<6>(x),
        _ => _mm256_srli_epi16::<7>(x),
    }
}

/// Shift each 16-bit lane left by `n` (0..=4, constant after inlining).
#[inline(always)]
unsafe fn slli16(x: __m256i, n: usize) -> __m256i {
    match n {
        0 => x,
        1 => _mm256_slli_epi16::<1>(x),
        2 => _mm256_slli_epi16::<2>(x),
        3 => _mm256_slli_epi16::<3>(x),
        _ => _mm256_slli_epi16::<4>(x),
    }
}

/// `vpshufb` masks broadcasting i16 element k (0..8) of each 128-bit lane, read with a
/// volatile load: LLVM would otherwise turn the constant shuffles into shift + broadcast
/// pairs (2 uops where `vpshufb` with a loaded mask is 1 ALU uop).
#[repr(align(32))]
struct Masks([[u8; 32]; 8]);
static BCAST16: Masks = {
    let mut m = [[0u8; 32]; 8];
    let mut k = 0;
    while k < 8 {
        let mut i = 0;
        while i < 32 {
            m[k][i] = (2 * k + (i & 1)) as u8;
            i += 1;
        }
        k += 1;
    }
    Masks(m)
};

#[inline(always)]
unsafe fn bcast16_opaque(k: usize) -> __m256i {
    std::ptr::read_volatile(BCAST16.0[k].as_ptr() as *const __m256i)
}

/// `vpshufb` masks for [`scale_pair`]: mask k puts i16 element 2k of each 128-bit lane in
/// the low lane and element 2k+1 in the high lane. Opaque for the same reason as
/// [`BCAST16`] (LLVM would rewrite the constant shuffle as three shuffles).
static PAIR16: Masks = {
    let mut m = [[0u8; 32]; 8];
    let mut k = 0;
    while k < 4 {
        let mut i = 0;
        while i < 32 {
            let elem = if i < 16 { 2 * k } else { 2 * k + 1 };
            m[k][i] = (2 * elem + (i & 1)) as u8;
            i += 1;
        }
        k += 1;
    }
    Masks(m)
};

/// For 16 sub-block scales of 16 values (i8, 0..16 in `sc`): the i16 multiplier vector of
/// 32-value vector `v` (0..8): scale 2v in the low lane, 2v+1 in the high lane. `lo8`/`hi8`
/// are the scales 0..8 / 8..16 as i16, broadcast to both lanes.
#[inline(always)]
unsafe fn scale_pair(lo8: __m256i, hi8: __m256i, v: usize) -> __m256i {
    let src = if v < 4 { lo8 } else { hi8 };
    let mask = std::ptr::read_volatile(PAIR16.0[v % 4].as_ptr() as *const __m256i);
    _mm256_shuffle_epi8(src, mask)
}

#[inline(always)]
unsafe fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

#[inline(always)]
unsafe fn hsum_epi32(v: __m256i) -> i32 {
    let mut l = [0i32; 8];
    _mm256_storeu_si256(l.as_mut_ptr() as *mut __m256i, v);
    l.iter().fold(0i32, |s, &x| s.wrapping_add(x))
}

// ---------------------------------------------------------------------------------------
// Where a block's results go: f32 accumulators (the real kernels) or per-block integers
// (the test hook). Both are driven by the very same block code.

trait Sink {
    /// Block `ib` (accumulator `slot`), row `r`: add `Σ lanes(isum) · d`.
    unsafe fn main(&mut self, r: usize, ib: usize, slot: usize, d: __m256, isum: __m256i);
    /// Block `ib` (accumulator `slot`), row `r`: subtract `Σ lanes(isum) · d` (the k-quant
    /// mins).
    unsafe fn mins(&mut self, r: usize, ib: usize, slot: usize, d: __m256, isum: __m256i);
    /// Accumulator `slot` of row `r`: add the lane-wise product `a·b` (the `m·s` term of
    /// Q4_1/Q5_1, with `a` zero outside lane 0). Kept in the vector accumulator rather than a
    /// scalar sum: a scalar f16 → f32 chain got a false dependency on the accumulator's
    /// register in LLVM's VNNI code, serializing the whole loop.
    unsafe fn fma(&mut self, r: usize, slot: usize, a: __m256, b: __m256);
}

struct Acc<const N: usize> {
    acc: [[__m256; 2]; N],
}

impl<const N: usize> Acc<N> {
    #[inline(always)]
    unsafe fn new() -> Self {
        let z = _mm256_setzero_ps();
        Acc { acc: [[z; 2]; N] }
    }

    #[inline(always)]
    unsafe fn finish(&self, out: *mut f32) {
        for r in 0..N {
            *out.add(r) = hsum_ps(_mm256_add_ps(self.acc[r][0], self.acc[r][1]));
        }
    }
}

impl<const N: usize> Sink for Acc<N> {
    #[inline(always)]
    unsafe fn main(&mut self, r: usize, _ib: usize, slot: usize, d: __m256, isum: __m256i) {
        let a = &mut self.acc[r][slot];
        *a = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(isum), *a);
    }
    #[inline(always)]
    unsafe fn mins(&mut self, r: usize, _ib: usize, slot: usize, d: __m256, isum: __m256i) {
        let a = &mut self.acc[r][slot];
        *a = _mm256_fnmadd_ps(d, _mm256_cvtepi32_ps(isum), *a);
    }
    #[inline(always)]
    unsafe fn fma(&mut self, r: usize, slot: usize, a: __m256, b: __m256) {
        let acc = &mut self.acc[r][slot];
        *acc = _mm256_fmadd_ps(a, b, *acc);
    }
}

struct Ints {
    out: Vec<[i32; 2]>,
}

impl Sink for Ints {
    #[inline(always)]
    unsafe fn main(&mut self, _r: usize, ib: usize, _slot: usize, _d: __m256, isum: __m256i) {
        self.out[ib][0] = hsum_epi32(isum);
    }
    #[inline(always)]
    unsafe fn mins(&mut self, _r: usize, ib: usize, _slot: usize, _d: __m256, isum: __m256i) {
        self.out[ib][1] = hsum_epi32(isum);
    }
    unsafe fn fma(&mut self, _r: usize, _slot: usize, _a: __m256, _b: __m256) {}
}

/// One weight type's block code.
trait Kernel {
    /// Bytes per weight block.
    const W: usize;
    /// Bytes per activation block.
    const A: usize;
    /// f32 accumulators per row: 2 for the short legacy blocks (alternating even/odd blocks
    /// hides the FMA latency), 1 for the super-blocks (fewer live registers at N = 4).
    const SLOTS: usize;
    /// Processes weight block `w` against the activation blocks `a[r]`.
    unsafe fn block<const N: usize, S: Sink, I: Isa>(
        w: *const u8,
        a: [*const u8; N],
        ib: usize,
        slot: usize,
        s: &mut S,
    );
}

#[inline(always)]
unsafe fn drive<K: Kernel, const N: usize, S: Sink, I: Isa>(
    nb: usize,
    w: *const u8,
    a: [*const u8; N],
    s: &mut S,
) {
    let at = |ib: usize| -> [*const u8; N] { std::array::from_fn(|r| a[r].add(ib * K::A)) };
    let mut ib = 0;
    while ib + 2 <= nb {
        K::block::<N, S, I>(w.add(ib * K::W), at(ib), ib, 0, s);
        K::block::<N, S, I>(w.add((ib + 1) * K::W), at(ib + 1), ib + 1, K::SLOTS - 1, s);
        ib += 2;
    }
    if ib < nb {
        K::block::<N, S, I>(w.add(ib * K::W), at(ib), ib, 0, s);
    }
}

/// The real kernel, plain AVX2: `nb` blocks, `N` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows<K: Kernel, const N: usize>(
    nb: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
) {
    let a: [*const u8; N] = std::array::from_fn(|r| *a.add(r));
    let mut acc = Acc::<N>::new();
    drive::<K, N, _, Avx2>(nb, w, a, &mut acc);
    acc.finish(out);
}

/// The real kernel with AVX512-VNNI: the same integers and the same f32 operations in the
/// same order as [`rows`], so the results are bit-identical to it.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw")]
unsafe fn rows_vnni<K: Kernel, const N: usize>(
    nb: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
) {
    let a: [*const u8; N] = std::array::from_fn(|r| *a.add(r));
    let mut acc = Acc::<N>::new();
    drive::<K, N, _, Vnni>(nb, w, a, &mut acc);
    acc.finish(out);
}

/// The test hook: per-block integers for one activation row (plain AVX2).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ints<K: Kernel>(nb: usize, w: *const u8, a: *const u8) -> Vec<[i32; 2]> {
    let mut s = Ints {
        out: vec![[0, 0]; nb],
    };
    drive::<K, 1, _, Avx2>(nb, w, [a], &mut s);
    s.out
}

/// The test hook with AVX512-VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw")]
unsafe fn ints_vnni<K: Kernel>(nb: usize, w: *const u8, a: *const u8) -> Vec<[i32; 2]> {
    let mut s = Ints {
        out: vec![[0, 0]; nb],
    };
    drive::<K, 1, _, Vnni>(nb, w, [a], &mut s);
    s.out
}

/// `[plain AVX2, AVX512-VNNI]` kernels (N = 1..=4 each) of a weight type.
macro_rules! fns {
    ($name:ident, $k:ty) => {
        pub(super) static $name: [RowsFns; 2] = [
            [rows::<$k, 1>, rows::<$k, 2>, rows::<$k, 3>, rows::<$k, 4>],
            [
                rows_vnni::<$k, 1>,
                rows_vnni::<$k, 2>,
                rows_vnni::<$k, 3>,
                rows_vnni::<$k, 4>,
            ],
        ];
    };
}

/// The IQ4_NL codebook in both 128-bit lanes, for `vpshufb` lookups.
#[inline(always)]
unsafe fn iq4_table() -> __m256i {
    _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i))
}

// The kernels themselves (after `fns!`, which they use).
mod float;
mod iq;
mod iq1;
mod kquants;
mod legacy;
mod mxfp4;
mod ternary;
