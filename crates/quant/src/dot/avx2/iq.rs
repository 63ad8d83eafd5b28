//! AVX2 / AVX512-VNNI kernels of the 2- and 3-bit i-quants × Q8_K (see the parent module).
//!
//! Per 32-value chunk of a super-block: the 4 (IQ2) or 8 (IQ3) codebook entries are read
//! from the generated grids with scalar loads and assembled into one vector of unsigned
//! bytes (values ≤ 62), the chunk's signs become a byte mask (8-byte masks of the 7-bit
//! sign indices from a table derived from `KSIGNS`, or `bits32` of the plain sign bytes) that
//! negates them (`(g ^ m) − m`), and the signed weights meet the activations through `mul_s8`
//! (|a|·(w·sign a): exact for a = −128), giving i16 pairs (≤ 2·62·128) that `madd_add`
//! multiplies by the odd sub-block scales `2s + 1` (≤ 31; one per 16 values: low 128-bit lane
//! = first 16 values) into 8 i32 lanes. Their sum is exactly the scalar `bsum`; it is scaled
//! by `d_w · factor · d_a` once per super-block (factor: ggml's 0.125 / 0.25 / 1, a power of
//! two, so folding it in only moves the rounding by the usual few ulps).
//!
//! The codebook lookups are per weight, so these kernels spend more instructions per byte
//! than the k-quants: the weight decode is shared by the N activation rows of a call.

#![allow(non_camel_case_types)]

use super::*;
use crate::iq_blocks::*;
use crate::iq_grids::*;

/// How one i-quant type yields its chunks.
trait IqFormat {
    /// The block struct.
    type B;
    /// ggml's final factor (the halved scale `0.5 + s` made integral).
    const FACTOR: f32;
    /// Per-block setup: the 16 scales (per 16 values) as i16 `[lo8, hi8]` for
    /// [`scale_pair`], where the type has one scale per 16 values; unused otherwise.
    unsafe fn setup(x: &Self::B) -> [__m256i; 2];
    /// Chunk `c` (0..8): (unsigned grid bytes, sign byte mask (0xFF: negative), i16 scale
    /// multipliers).
    unsafe fn chunk(x: &Self::B, c: usize, setup: &[__m256i; 2]) -> (__m256i, __m256i, __m256i);
}

#[inline(always)]
unsafe fn u32_at(p: *const u8) -> u32 {
    std::ptr::read_unaligned(p as *const u32)
}

/// Four IQ2 entries (8 bytes each) as one vector, entry l in bytes 8l..8l+8.
#[inline(always)]
unsafe fn grid4(e: [u64; 4]) -> __m256i {
    _mm256_set_epi64x(e[3] as i64, e[2] as i64, e[1] as i64, e[0] as i64)
}

/// Eight IQ3 entries (4 bytes each) as one vector, entry k in bytes 4k..4k+4.
#[inline(always)]
unsafe fn grid8(e: [u32; 8]) -> __m256i {
    let pair = |i: usize| (e[2 * i] as u64 | (e[2 * i + 1] as u64) << 32) as i64;
    _mm256_set_epi64x(pair(3), pair(2), pair(1), pair(0))
}

/// `KSIGNS[i]` as 8 byte masks (byte j = 0xFF where bit j is set): one load per 8 values
/// instead of assembling sign bits and spreading them with `bits32`.
static KSIGN_MASKS: [u64; 128] = {
    let mut t = [0u64; 128];
    let mut i = 0;
    while i < 128 {
        let mut j = 0;
        while j < 8 {
            if KSIGNS[i] >> j & 1 != 0 {
                t[i] |= 0xFF << (8 * j);
            }
            j += 1;
        }
        i += 1;
    }
    t
};

/// The sign masks of the four 7-bit sign indices of `aux` (bits 0..28), entry l in bytes
/// 8l..8l+8.
#[inline(always)]
unsafe fn ksign_masks4(aux: u32) -> __m256i {
    let k = |l: u32| KSIGN_MASKS[((aux >> (7 * l)) & 127) as usize];
    grid4([k(0), k(1), k(2), k(3)])
}

/// `ls = 2·s + 1` broadcast as i16 (one scale for the whole chunk).
#[inline(always)]
unsafe fn odd_scale(s: u32) -> __m256i {
    _mm256_set1_epi16((2 * s + 1) as i16)
}

/// 8 bytes of nibble pairs (low nibble: first 16 values of a 32-chunk) → the 16 odd
/// scales as i16, `[scales 0..8, scales 8..16]` each broadcast to both lanes.
#[inline(always)]
unsafe fn nibble_scales(p: *const u8) -> [__m256i; 2] {
    let b = _mm_loadl_epi64(p as *const __m128i);
    let m4 = _mm_set1_epi8(0x0f);
    let lo = _mm_and_si128(b, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), m4);
    let s = _mm_unpacklo_epi8(lo, hi);
    let odd = _mm_or_si128(_mm_add_epi8(s, s), _mm_set1_epi8(1));
    [
        _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(odd)),
        _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128::<8>(odd))),
    ]
}

struct Iq2Xxs;
impl IqFormat for Iq2Xxs {
    type B = BlockIQ2XXS;
    const FACTOR: f32 = 0.125;
    #[inline(always)]
    unsafe fn setup(_: &BlockIQ2XXS) -> [__m256i; 2] {
        [_mm256_setzero_si256(); 2]
    }
    #[inline(always)]
    unsafe fn chunk(x: &BlockIQ2XXS, c: usize, _: &[__m256i; 2]) -> (__m256i, __m256i, __m256i) {
        let p = x.qs.as_ptr().add(8 * c);
        let aux = u32_at(p.add(4));
        let e = |l: usize| IQ2XXS_GRID[*p.add(l) as usize];
        (
            grid4([e(0), e(1), e(2), e(3)]),
            ksign_masks4(aux),
            odd_scale(aux >> 28),
        )
    }
}

struct Iq2Xs;
impl IqFormat for Iq2Xs {
    type B = BlockIQ2XS;
    const FACTOR: f32 = 0.125;
    #[inline(always)]
    unsafe fn setup(x: &BlockIQ2XS) -> [__m256i; 2] {
        nibble_scales(x.scales.as_ptr())
    }
    #[inline(always)]
    unsafe fn chunk(x: &BlockIQ2XS, c: usize, s: &[__m256i; 2]) -> (__m256i, __m256i, __m256i) {
        let p = x.qs.as_ptr().add(8 * c);
        let q = |l: usize| std::ptr::read_unaligned(p.add(2 * l) as *const u16);
        let e = |l: usize| IQ2XS_GRID[(q(l) & 511) as usize];
        let sg = |l: usize| KSIGN_MASKS[(q(l) >> 9) as usize];
        let signs = grid4([sg(0), sg(1), sg(2), sg(3)]);
        (
            grid4([e(0), e(1), e(2), e(3)]),
            signs,
            scale_pair(s[0], s[1], c),
        )
    }
}

struct Iq2S;
impl IqFormat for Iq2S {
    type B = BlockIQ2S;
    const FACTOR: f32 = 0.125;
    #[inline(always)]
    unsafe fn setup(x: &BlockIQ2S) -> [__m256i; 2] {
        nibble_scales(x.scales.as_ptr())
    }
    #[inline(always)]
    unsafe fn chunk(x: &BlockIQ2S, c: usize, s: &[__m256i; 2]) -> (__m256i, __m256i, __m256i) {
        // c < 8: raw reads, no bounds checks in the unrolled chunk loop.
        let qh = *x.qh.as_ptr().add(c) as usize;
        let q = u32_at(x.qs.as_ptr().add(4 * c)) as usize;
        let e = |l: usize| IQ2S_GRID[(q >> (8 * l)) & 0xff | ((qh >> (2 * l)) & 3) << 8];
        let signs = bits32(u32_at(x.signs.as_ptr().add(4 * c)));
        (
            grid4([e(0), e(1), e(2), e(3)]),
            signs,
            scale_pair(s[0], s[1], c),
        )
    }
}

struct Iq3Xxs;
impl IqFormat for Iq3Xxs {
    type B = BlockIQ3XXS;
    const FACTOR: f32 = 0.25;
    #[inline(always)]
    unsafe fn setup(_: &BlockIQ3XXS) -> [__m256i; 2] {
        [_mm256_setzero_si256(); 2]
    }
    #[inline(always)]
    unsafe fn chunk(x: &BlockIQ3XXS, c: usize, _: &[__m256i; 2]) -> (__m256i, __m256i, __m256i) {
        let p = x.qs.as_ptr().add(8 * c);
        let aux = u32_at(x.qs.as_ptr().add(64 + 4 * c));
        let e: [u32; 8] = std::array::from_fn(|k| IQ3XXS_GRID[*p.add(k) as usize]);
        (grid8(e), ksign_masks4(aux), odd_scale(aux >> 28))
    }
}

struct Iq3S;
impl IqFormat for Iq3S {
    type B = BlockIQ3S;
    const FACTOR: f32 = 1.0;
    #[inline(always)]
    unsafe fn setup(_: &BlockIQ3S) -> [__m256i; 2] {
        [_mm256_setzero_si256(); 2]
    }
    #[inline(always)]
    unsafe fn chunk(x: &BlockIQ3S, c: usize, _: &[__m256i; 2]) -> (__m256i, __m256i, __m256i) {
        // c < 8: raw reads, no bounds checks in the unrolled chunk loop.
        let qh = *x.qh.as_ptr().add(c) as usize;
        let q = std::ptr::read_unaligned(x.qs.as_ptr().add(8 * c) as *const u64) as usize;
        let e: [u32; 8] =
            std::array::from_fn(|k| IQ3S_GRID[(q >> (8 * k)) & 0xff | ((qh >> k) & 1) << 8]);
        let signs = bits32(u32_at(x.signs.as_ptr().add(4 * c)));
        let ls = (*x.scales.as_ptr().add(c / 2) >> (4 * (c % 2))) & 0xf;
        (grid8(e), signs, odd_scale(ls as u32))
    }
}

/// The kernel of format `F` (a marker type for `Kernel`).
pub(super) struct IqK<F>(std::marker::PhantomData<F>);

impl<F: IqFormat> Kernel for IqK<F> {
    const W: usize = size_of::<F::B>();
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
        let x = &*(w as *const F::B);
        let setup = F::setup(x);
        let mut sumi = [_mm256_setzero_si256(); N];
        // One row: odd chunks in a second chain (a single `vpdpwssd` chain of 8 would be
        // latency-bound). Integer lanes, so the split does not change any result.
        let mut sumb = _mm256_setzero_si256();
        for c in 0..8 {
            let (g, m, scale) = F::chunk(x, c, &setup);
            // m = 0xFF where negative: (g ^ m) − m negates those bytes; |g| ≤ 62.
            let wv = _mm256_sub_epi8(_mm256_xor_si256(g, m), m);
            for r in 0..N {
                let p = mul_s8(wv, load(a[r].add(Q8K_QS + 32 * c)));
                if N == 1 && c % 2 == 1 {
                    sumb = I::madd_add(sumb, p, scale);
                } else {
                    sumi[r] = I::madd_add(sumi[r], p, scale);
                }
            }
        }
        if N == 1 {
            sumi[0] = _mm256_add_epi32(sumi[0], sumb);
        }
        // The block's f16 `d` is its first field.
        let dw = f16_at(w) * F::FACTOR;
        for r in 0..N {
            s.main(r, ib, slot, _mm256_set1_ps(dw * f32_at(a[r])), sumi[r]);
        }
    }
}

fns!(IQ2_XXS_FNS, IqK<Iq2Xxs>);
fns!(IQ2_XS_FNS, IqK<Iq2Xs>);
fns!(IQ2_S_FNS, IqK<Iq2S>);
fns!(IQ3_XXS_FNS, IqK<Iq3Xxs>);
fns!(IQ3_S_FNS, IqK<Iq3S>);

/// The kernels of one of this module's types.
pub(super) fn kernels(weight: GgmlType, v: usize) -> Option<&'static RowsFns> {
    use GgmlType::*;
    Some(match weight {
        IQ2_XXS => &IQ2_XXS_FNS[v],
        IQ2_XS => &IQ2_XS_FNS[v],
        IQ2_S => &IQ2_S_FNS[v],
        IQ3_XXS => &IQ3_XXS_FNS[v],
        IQ3_S => &IQ3_S_FNS[v],
        _ => return None,
    })
}

/// Test hook: per-block integers (see the parent's `block_ints`).
///
/// # Safety
/// As the parent's: `w`/`a` hold `nb` blocks, the CPU has the features.
pub(super) unsafe fn block_ints(
    weight: GgmlType,
    vnni: bool,
    nb: usize,
    w: *const u8,
    a: *const u8,
) -> Option<Vec<[i32; 2]>> {
    use GgmlType::*;
    macro_rules! pick {
        ($f:ty) => {
            if vnni {
                ints_vnni::<IqK<$f>>(nb, w, a)
            } else {
                ints::<IqK<$f>>(nb, w, a)
            }
        };
    }
    Some(match weight {
        IQ2_XXS => pick!(Iq2Xxs),
        IQ2_XS => pick!(Iq2Xs),
        IQ2_S => pick!(Iq2S),
        IQ3_XXS => pick!(Iq3Xxs),
        IQ3_S => pick!(Iq3S),
        _ => return None,
    })
}
