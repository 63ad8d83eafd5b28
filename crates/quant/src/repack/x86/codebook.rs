//! What the AVX-512 VBMI tiles of the codebook layouts (IQ2_XXSx8, IQ3_XXSx8, IQ2_Sx8,
//! IQ2_XSx8, IQ3_Sx8) and of the ternary layouts (TQ1_0x8: trits by table lookup too;
//! TQ2_0x8) share: the
//! [`Layout`] around a layout's block code, its tile and test hook, and the vector helpers.
//! Each layout's block code leaves one i32 per (row, half): lanes `2r, 2r + 1` of a
//! 512-bit vector, added into row r's lane at the end ([`rows_of_pairs`]).

use super::*;

/// A codebook layout's block code (the rest of the [`Layout`] is shared).
pub(super) trait Codebook {
    const BLOCK_BYTES: usize;
    /// Offset of the 8 rows' f16 `d`.
    const OFF_D: usize;
    /// ggml's constant factor of the type (a power of two), folded into `d`.
    const FACTOR: f32;
    /// Prepared bytes per activation block (see [`Layout::EXTRA`]).
    const EXTRA: usize;
    /// Writes a Q8_K block's prepared bytes.
    unsafe fn prepare(blk: *const u8, dst: *mut u8);
    /// One packed block × T tokens' activation blocks (`a`) and prepared blocks (`ex`):
    /// `isum` per token, lane = row.
    unsafe fn block_ints<const T: usize>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> [__m256i; T];
}

/// The [`Layout`] of codebook layout `C`.
pub(super) struct Cb<C>(std::marker::PhantomData<C>);

impl<C: Codebook> Layout for Cb<C> {
    const BLOCK_BYTES: usize = C::BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = C::OFF_D;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = C::EXTRA;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        C::prepare(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        (C::block_ints::<T>(pb, a, ex), [_mm256_setzero_si256(); T])
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
    /// `d·factor` (exact: a power of two), as the scalar definition.
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        _mm256_mul_ps(f16x8(pb.add(C::OFF_D)), _mm256_set1_ps(C::FACTOR))
    }
}

/// The tile of codebook layout `C` for T tokens.
///
/// # Safety
/// As [`TileFn`]; the CPU has AVX-512 VBMI + VNNI and GFNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw,avx512vbmi,gfni")]
pub(super) unsafe fn tile_vbmi<C: Codebook, const T: usize>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    tile::<T, Vnni, Cb<C>>(nb, ng, w, a, out, ld)
}

/// `N` tables of 64 `vpermb` / `vpermi2b` indices, built at compile time: byte b of
/// table k is `$f` (a `const` expression of k and b). The codebook layouts' strips
/// describe their byte gathers this way.
macro_rules! index_tables {
    ($n:expr, |$k:ident, $b:ident| $f:expr) => {{
        let mut t = [[0u8; 64]; $n];
        let mut $k = 0;
        while $k < $n {
            let mut $b = 0;
            while $b < 64 {
                t[$k][$b] = ($f) as u8;
                $b += 1;
            }
            $k += 1;
        }
        t
    }};
}
pub(super) use index_tables;

/// The tiles of codebook layout `$c` for 1..=4 tokens (the tables, 4 tokens' chunk and
/// block sums and the decoded plane fill the 32 registers).
macro_rules! codebook_tiles {
    ($c:ty) => {
        [
            codebook::tile_vbmi::<$c, 1>,
            codebook::tile_vbmi::<$c, 2>,
            codebook::tile_vbmi::<$c, 3>,
            codebook::tile_vbmi::<$c, 4>,
        ]
    };
}
pub(super) use codebook_tiles;

/// Test hook: per-block integers of codebook layout `C`.
///
/// # Safety
/// `w` holds `nb` packed blocks, `a` `nb` Q8_K blocks; the CPU has AVX-512 VBMI + VNNI
/// and GFNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw,avx512vbmi,gfni")]
pub(super) unsafe fn ints_vbmi<C: Codebook>(
    nb: usize,
    w: *const u8,
    a: *const u8,
) -> Vec<[[i32; 2]; ROWS]> {
    ints_with::<Vnni, Cb<C>>(nb, w, a)
}

#[inline(always)]
pub(super) unsafe fn load512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const __m512i)
}

/// A Q8_K block's 256 quants to `dst`, each 64-value chunk pair permuted by `perm` (a
/// `vpermb` index vector): the layout's plane order.
#[inline(always)]
pub(super) unsafe fn permute_quants(blk: *const u8, dst: *mut u8, perm: &[u8; 64]) {
    let perm = load512(perm.as_ptr());
    for p in 0..4 {
        let q = load512(blk.add(Q8K_QS + 64 * p));
        _mm512_storeu_si512(
            dst.add(64 * p) as *mut __m512i,
            _mm512_permutexvar_epi8(perm, q),
        );
    }
}

/// The 256 entries of a code table (4 registers) at the 64 indices `idx`: 2 `vpermi2b`
/// (entries 0..128, 128..256) and a blend on each index's top bit (`top`).
#[inline(always)]
pub(super) unsafe fn lookup256(t: &[__m512i; 4], idx: __m512i, top: __mmask64) -> __m512i {
    _mm512_mask_blend_epi8(
        top,
        _mm512_permutex2var_epi8(t[0], idx, t[1]),
        _mm512_permutex2var_epi8(t[2], idx, t[3]),
    )
}

/// A 256-byte table as 4 registers.
#[inline(always)]
pub(super) unsafe fn table256(t: &[u8; 256]) -> [__m512i; 4] {
    std::array::from_fn(|q| load512(t.as_ptr().add(64 * q)))
}

/// A 128-byte table (`KSIGNS`) as the two vectors of a `vpermi2b`.
#[inline(always)]
pub(super) unsafe fn table128(t: &[u8; 128]) -> [__m512i; 2] {
    [load512(t.as_ptr()), load512(t.as_ptr().add(64))]
}

/// `2·ls + 1` of 16 `aux` words (ls in bits 28..32): bits 27..32 with bit 27 (a sign bit)
/// replaced by 1.
#[inline(always)]
pub(super) unsafe fn odd_scales(aux: __m512i) -> __m512i {
    _mm512_or_si512(_mm512_srli_epi32::<27>(aux), _mm512_set1_epi32(1))
}

/// Lanes 2r, 2r + 1 of a block sum added into lane r of 8.
#[inline(always)]
pub(super) unsafe fn rows_of_pairs(v: __m512i) -> __m256i {
    _mm512_cvtepi64_epi32(_mm512_add_epi32(v, _mm512_srli_epi64::<32>(v)))
}

/// One plane of 64 weights into each token's chunk sums: `u` holds `off + v`, the bytes
/// where `neg` is set become `2·off − u` (`neg_base` = 2·off: `off − v`), and
/// `acc[t] += Σ quads(u·a)` against token t's 8 prepared quants at `ex[t] + at`
/// (broadcast: the same 8 positions for every lane pair).
#[inline(always)]
pub(super) unsafe fn signed_plane_dot<const T: usize>(
    acc: &mut [__m512i; T],
    u: __m512i,
    neg: __mmask64,
    neg_base: __m512i,
    ex: [*const u8; T],
    at: usize,
) {
    let u = _mm512_mask_sub_epi8(u, neg, neg_base, u);
    for t in 0..T {
        let a = std::ptr::read_unaligned(ex[t].add(at) as *const i64);
        acc[t] = _mm512_dpbusd_epi32(acc[t], u, _mm512_set1_epi64(a));
    }
}

/// `isum[t] += acc[t]·odd` per lane (the chunk sums times their odd scales).
#[inline(always)]
pub(super) unsafe fn add_scaled<const T: usize>(
    isum: &mut [__m512i; T],
    acc: &[__m512i; T],
    odd: __m512i,
) {
    for t in 0..T {
        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(acc[t], odd));
    }
}

/// A 64-byte aligned table of 256·Q bytes as Q quarters of 4 vectors (for
/// [`lookup512`], [`lookup1024`]): a view, so that the lookups take the vectors as memory
/// operands (they do not fit the registers).
#[inline(always)]
pub(super) fn tables256<const Q: usize>(t: &[u8]) -> &[[__m512i; 4]; Q] {
    assert!(t.len() == 256 * Q && t.as_ptr() as usize % 64 == 0);
    // SAFETY: the bytes are exactly Q·4 vectors and 64-byte aligned (checked above); any
    // bytes are a valid `__m512i`, and the view borrows `t`.
    unsafe { &*(t.as_ptr() as *const [[__m512i; 4]; Q]) }
}

/// The 512 entries of a code table at 9-bit indices: bits 0..8 in the bytes of `idx`
/// (bit 7 also as `top`), bit 8 as the mask `b8`.
#[inline(always)]
pub(super) unsafe fn lookup512(
    t: &[[__m512i; 4]; 2],
    idx: __m512i,
    top: __mmask64,
    b8: __mmask64,
) -> __m512i {
    _mm512_mask_blend_epi8(b8, lookup256(&t[0], idx, top), lookup256(&t[1], idx, top))
}

/// The 1024 entries of a code table at 10-bit indices: as [`lookup512`], bit 9 as `b9`.
#[inline(always)]
pub(super) unsafe fn lookup1024(
    t: &[[__m512i; 4]; 4],
    idx: __m512i,
    top: __mmask64,
    (b8, b9): (__mmask64, __mmask64),
) -> __m512i {
    let lo = lookup512(&[t[0], t[1]], idx, top, b8);
    let hi = lookup512(&[t[2], t[3]], idx, top, b8);
    _mm512_mask_blend_epi8(b9, lo, hi)
}
