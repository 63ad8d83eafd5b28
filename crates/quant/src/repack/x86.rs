//! AVX2 / AVX512-VNNI tile kernels of the repacked layouts (x86-64, chosen at run time).
//!
//! A call covers T tokens (1..=8) and any number of consecutive groups: per-token work on
//! the activations (Q4_K's split min sums; Q8_0/Q5_0's `−o·Σa` and f32 `d_a`) is done once
//! per pass of up to 64 blocks for all groups of the call.
//!
//! Q4_Kx8 × T tokens: for each packed block and each 64-value chunk j, the 8
//! vectors `qs[j][g]` (8 rows × 4 bytes) are split into low nibbles (sub-block 2j) and high
//! nibbles (sub-block 2j+1) once and multiplied, per token, with the broadcast 4-byte
//! activation group of the same positions (`vpdpbusd`: u8 weights × s8 activations, 4
//! products summed per i32 lane, lane = row). Each sub-block's 8 lane sums are then scaled
//! by that sub-block's 8 row scales (`vpmulld`) into the block's `isum`. `msum` is 4
//! `vpdpbusd` of the mins (4 sub-blocks per row and vector) with the activations'
//! per-32 sums split into a low and a high signed byte. The f32 part is one FMA per
//! (block, token) for `isum` and one for `msum`, in the scalar definition's order.
//!
//! Q6_Kx8 × T tokens: per half, `ql` vector and `qh` vector give (shifts and masks) the
//! unsigned 6-bit values of 8 rows × 4 positions twice; `vpdpbusd` with the broadcast
//! activations sums each 16-value sub-block, which then loses `32·bsums` (the stored
//! offset) and is scaled by its 8 signed row scales (`vpmulld`). f32: one FMA per (block,
//! token), as the scalar definition. Calls of ≥ 12 tokens on AVX-512 VNNI (a prompt's)
//! decode the values once per strip of a pair of groups instead and run 512-bit tiles
//! over the decoded bytes (`strip`), with the same integers and f32 steps.
//!
//! Q2_Kx8 × T tokens: per 128-value half n and 2-bit field k, the 8 `qs[n][g]` vectors are
//! masked with `3 << 2k` (VNNI: values × 4^k ≤ 192 as unsigned bytes; AVX2, whose
//! `vpmaddubsw` pairs would saturate, shifts them down to 0..4 first) and multiplied per
//! token with the broadcast activations (`vpdpbusd`), g < 4 into sub-block `8n + 2k`, g ≥ 4
//! into `8n + 2k + 1`. The two sums, the 4^k shifted out exactly, become the 16-bit halves
//! of each lane ([`pair16`]) and one `vpdpwssd` applies both sub-blocks' row scales; one
//! more against the broadcast `bsums` pair gives `msum`.
//!
//! Q3_Kx8 × T tokens: as Q2_Kx8, with `u = low2 + 4·hbit` formed per value vector from the
//! `qs` and high-bit vectors (a shift, two masks and an OR: see `q3k`), each sub-block's
//! sum starting at the prepared `−4·2^e·bsums[s]` (q = u − 4), and one `vpdpwssd` per pair
//! of sub-blocks with their signed scales.
//!
//! IQ4_XSx8 × T tokens: per sub-block j, the 4 `qs[j][g]` vectors give low and high nibbles,
//! a `vpshufb` maps them to the codebook (VNNI: `KVALUES + 128`, unsigned, with each
//! sub-block's sum starting at `−128·Σ32` of its activations; AVX2: the signed values and
//! `vpmaddubsw(|a|, sign(w, a))`), and the sub-block sum is scaled by its 8 signed row
//! scales (`vpmulld`).
//!
//! Q8_0x8 / Q5_0x8 / Q4_0x8 / IQ4_NLx8 / MXFP4x8 × T tokens: the 8 unsigned weight vectors `w + o` of
//! a block (Q5_0: the nibble or'ed with the fifth bit shifted out of the block's bit plane,
//! o = 16; Q4_0: the nibble, o = 8; MXFP4: the nibble looked up in `KVALUES_MXFP4 + 12`,
//! o = 12; IQ4_NL: the nibble looked up in `KVALUES_IQ4NL + 128`, o = 128; Q8_0: the stored
//! bytes, o = 128) times the broadcast 4-byte activation groups (`vpdpbusd`), each
//! block's sums starting at `−o·Σa` (prepared once per call with `d_a` as f32). Without
//! VNNI, Q8_0 and IQ4_NL go back to the signed weights (one XOR per vector, the signed
//! codebook) and
//! `vpmaddubsw(|a|, sign(w, a))` (o = 0), since `(w + 128)·a` pairs would saturate i16.
//!
//! On AVX-512 VNNI these four layouts run two groups at once in 512-bit vectors (`zmm`:
//! 16 rows per `vpdpbusd`, the same per-lane integers and f32 steps; an odd last group and
//! calls of 1–6 tokens in the 256-bit tile).
//!
//! IQ1_Sx8 / IQ1_Mx8 × T tokens (AVX-512 VNNI only, `iq1`): per group position, the 8
//! rows' entries of the 2048-entry grid assembled from scalar loads into one 512-bit
//! vector (indices computed per block in vectors), one `vpdpbusd` per token against the
//! broadcast activations, each 16-value sum scaled per row (`vpmulld`).
//!
//! TQ1_0x8 × T tokens (AVX-512 VBMI only, `ternary`): per 64-byte chunk of 8 rows, the trits
//! of every byte from two 256-entry table lookups (2-bit fields masked in place), one
//! `vpdpbusd` per trit and token against the broadcast activations. TQ2_0x8 likewise
//! with its 2-bit fields masked in place.
//!
//! Without VNNI the k-quant integers come from `vpmaddubsw` + `vpmaddwd` (values ≤ 63, so
//! the i16 pair sums never saturate: 2·63·128 < 2¹⁵). Both variants are bit-identical to
//! the scalar definition, with one exception: a Q8_0 weight of −128 (ggml's quantizer
//! writes −127..=127; only a hand-made file holds −128) is exact with VNNI but takes the
//! wrong sign in AVX2's `sign(w, a)`.

#![allow(clippy::needless_range_loop)]

use super::iq4xs::{self, IQ4XSX8_BLOCK_BYTES};
use super::legacy::{
    self, MXFP4X8_BLOCK_BYTES, MX_OFF_QS, Q4_0X8_BLOCK_BYTES, Q4_OFF_QS, Q5_0X8_BLOCK_BYTES,
    Q5_OFF_QH, Q5_OFF_QS, Q8_0X8_BLOCK_BYTES, Q8_0_SIZE, Q8_OFF_QS,
};
use super::q2k::{self, Q2KX8_BLOCK_BYTES};
use super::q3k::{self, Q3KX8_BLOCK_BYTES};
use super::q4k::{
    OFF_D, OFF_DMIN, OFF_MN, OFF_QS, OFF_SC, Q4KX8_BLOCK_BYTES, Q8K_BSUMS, Q8K_QS, Q8K_SIZE,
};
use super::q6k::{self, Q6KX8_BLOCK_BYTES};
use super::{GemmFn, PackedType, TileFn, MAX_TOKENS, ROWS};

/// Most tokens of one 256-bit tile call (its accumulators, T per group, stay in the 16 or
/// 32 vector registers up to here).
const TOKENS_256: usize = 8;
use crate::dot::SimdPath;
use std::arch::x86_64::*;

mod codebook;
mod iq1;
mod iq2s;
mod iq2xs;
mod iq2xxs;
mod iq3s;
mod iq3xxs;
mod strip;
mod ternary;
mod zmm;

fn avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub(super) fn vnni() -> bool {
    avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512bw")
}

/// Whether this CPU also has AVX-512 VBMI (`vpermb`, `vpermi2b`, `vpmultishiftqb`) and
/// GFNI (`vgf2p8affineqb`): the codebook layouts' tiles (IQ2_XXSx8, IQ3_XXSx8, IQ2_Sx8,
/// IQ2_XSx8, IQ3_Sx8).
pub(super) fn vbmi() -> bool {
    vnni() && is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("gfni")
}

/// The kernels for `packed` on `path` or the best available below it.
pub(super) fn kernels(packed: PackedType, path: SimdPath) -> Option<(SimdPath, &'static [TileFn])> {
    match packed {
        PackedType::Q4Kx8 => pick(path, &Q4K_AVX2, &Q4K_VNNI),
        PackedType::Q6Kx8 => pick(path, &Q6K_AVX2, &Q6K_VNNI),
        PackedType::Q8_0x8 => pick(path, &Q8_0_AVX2, &Q8_0_ZMM),
        PackedType::Q5_0x8 => pick(path, &Q5_0_AVX2, &Q5_0_ZMM),
        PackedType::Q4_0x8 => pick(path, &Q4_0_AVX2, &Q4_0_ZMM),
        PackedType::IQ4NLx8 => pick(path, &IQ4_NL_AVX2, &IQ4_NL_ZMM),
        PackedType::Q2Kx8 => pick(path, &Q2K_AVX2, &Q2K_VNNI),
        PackedType::Q3Kx8 => pick(path, &Q3K_AVX2, &Q3K_VNNI),
        PackedType::IQ4XSx8 => pick(path, &IQ4XS_AVX2, &IQ4XS_VNNI),
        PackedType::MXFP4x8 => pick(path, &MXFP4_AVX2, &MXFP4_ZMM),
        // VBMI only (the engine repacks IQ2_XXS only where it runs: `for_type`).
        PackedType::IQ2XXSx8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &iq2xxs::IQ2XXS_VBMI[..])),
        PackedType::IQ3XXSx8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &iq3xxs::IQ3XXS_VBMI[..])),
        // AVX-512 only (likewise repacked only where it runs).
        PackedType::IQ1Sx8 => (path == SimdPath::Avx512Vnni && vnni())
            .then_some((SimdPath::Avx512Vnni, &iq1::IQ1S_ZMM[..])),
        PackedType::IQ1Mx8 => (path == SimdPath::Avx512Vnni && vnni())
            .then_some((SimdPath::Avx512Vnni, &iq1::IQ1M_ZMM[..])),
        PackedType::IQ2Sx8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &iq2s::IQ2S_VBMI[..])),
        PackedType::IQ2XSx8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &iq2xs::IQ2XS_VBMI[..])),
        PackedType::IQ3Sx8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &iq3s::IQ3S_VBMI[..])),
        PackedType::TQ1_0x8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &ternary::TQ1_0_VBMI[..])),
        PackedType::TQ2_0x8 => (path == SimdPath::Avx512Vnni && vbmi())
            .then_some((SimdPath::Avx512Vnni, &ternary::TQ2_0_VBMI[..])),
    }
}

/// The many-token kernel of `packed` on `path`, where one exists and the CPU has it:
/// the decoded-strip GEMMs on AVX-512 VNNI (`strip`).
/// With the fewest tokens of a call that take it ([`strip::Strip::MIN_TOKENS`]).
pub(super) fn wide_kernel(packed: PackedType, path: SimdPath) -> Option<(GemmFn, usize)> {
    use strip::Strip;
    fn wide<S: Strip>() -> Option<(GemmFn, usize)> {
        Some((strip::gemm_vnni::<S>, S::MIN_TOKENS))
    }
    /// The codebook layouts' strips (their decodes need VBMI and GFNI, IQ2_XXS's and
    /// IQ3_XXS's also BITALG's `vpshufbitqmb`).
    fn wide_vbmi<S: Strip>() -> Option<(GemmFn, usize)> {
        let cpu = vbmi() && is_x86_feature_detected!("avx512bitalg");
        cpu.then_some((strip::gemm_vbmi::<S>, S::MIN_TOKENS))
    }
    if path != SimdPath::Avx512Vnni || !vnni() {
        return None;
    }
    match packed {
        PackedType::Q6Kx8 => wide::<strip::Q6KStrip>(),
        PackedType::Q3Kx8 => wide::<strip::Q3KStrip>(),
        PackedType::IQ1Sx8 => wide::<iq1::Strips<iq1::S>>(),
        PackedType::IQ1Mx8 => wide::<iq1::Strips<iq1::M>>(),
        PackedType::IQ2Sx8 => wide_vbmi::<iq2s::Iq2Strips<iq2s::IQ2S>>(),
        PackedType::IQ2XSx8 => wide_vbmi::<iq2s::Iq2Strips<iq2xs::IQ2XS>>(),
        PackedType::IQ3Sx8 => wide_vbmi::<iq3s::Strips>(),
        PackedType::IQ2XXSx8 => wide_vbmi::<iq2xxs::IQ2XXS>(),
        PackedType::IQ3XXSx8 => wide_vbmi::<iq3xxs::IQ3XXS>(),
        _ => None,
    }
}

fn pick(
    path: SimdPath,
    avx2_fns: &'static [TileFn],
    vnni_fns: &'static [TileFn],
) -> Option<(SimdPath, &'static [TileFn])> {
    match path {
        SimdPath::Avx512Vnni if vnni() => Some((SimdPath::Avx512Vnni, vnni_fns)),
        SimdPath::Avx512Vnni | SimdPath::Avx2 if avx2() => Some((SimdPath::Avx2, avx2_fns)),
        _ => None,
    }
}

trait Isa {
    /// `acc + Σ quads(u·s)` (u8 × s8 → i32).
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
    /// `acc + Σ pairs(a·b)` (i16 × i16 → i32; exact, as `vpmaddwd` for all but −2¹⁵·−2¹⁵).
    unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
    /// Whether [`Isa::dpbusd`] is exact for any unsigned bytes (VNNI); the AVX2 emulation
    /// saturates when a pair `u₀s₀ + u₁s₁` leaves the i16 range (possible for u > 127).
    const VNNI: bool;
}

struct Avx2;
impl Isa for Avx2 {
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)),
        )
    }
    #[inline(always)]
    unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
    const VNNI: bool = false;
}

/// `acc + Σ quads(w·a)` for signed weights and activations without VNNI:
/// `|a| · (w·sign(a))`, pairs ≤ 128·127·2 < 2¹⁵ for weights in −127..=127 (ggml's Q8_0
/// range).
#[inline(always)]
unsafe fn dot_signed_avx2(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    let p = _mm256_maddubs_epi16(_mm256_abs_epi8(a), _mm256_sign_epi8(w, a));
    _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_set1_epi16(1)))
}

struct Vnni;
impl Isa for Vnni {
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }
    #[inline(always)]
    unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpwssd_epi32(acc, a, b)
    }
    const VNNI: bool = true;
}

#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p as *const __m256i)
}

/// 4 bytes at `p` broadcast to all 8 lanes.
#[inline(always)]
unsafe fn bcast32(p: *const u8) -> __m256i {
    _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
}

/// 8 bytes at `p`, zero-extended to 8 i32 lanes.
#[inline(always)]
unsafe fn u8x8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// 8 bytes at `p`, sign-extended to 8 i32 lanes.
#[inline(always)]
unsafe fn i8x8(p: *const u8) -> __m256i {
    _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// 8 f16 at `p` as f32.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// One packed block × T activation blocks: `[isum, msum]` per token, lane = row. `ex[t]`:
/// token t's 16 prepared bytes of this block ([`q4k_prepare`]).
#[inline(always)]
unsafe fn q4k_block_ints<const T: usize, I: Isa>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> ([__m256i; T], [__m256i; T]) {
    let m4 = _mm256_set1_epi8(0x0f);
    let mut isum = [_mm256_setzero_si256(); T];
    for j in 0..4 {
        let mut slo = [_mm256_setzero_si256(); T];
        let mut shi = [_mm256_setzero_si256(); T];
        for g in 0..8 {
            let w = load(pb.add(OFF_QS + (j * 8 + g) * 32));
            let lo = _mm256_and_si256(w, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4);
            for t in 0..T {
                let y = a[t].add(Q8K_QS + 64 * j + 4 * g);
                slo[t] = I::dpbusd(slo[t], lo, bcast32(y));
                shi[t] = I::dpbusd(shi[t], hi, bcast32(y.add(32)));
            }
        }
        let sl = u8x8(pb.add(OFF_SC + 8 * (2 * j)));
        let sh = u8x8(pb.add(OFF_SC + 8 * (2 * j + 1)));
        for t in 0..T {
            // |sub-block sum| ≤ 32·15·128, scale ≤ 63: no overflow.
            let p = _mm256_add_epi32(
                _mm256_mullo_epi32(slo[t], sl),
                _mm256_mullo_epi32(shi[t], sh),
            );
            isum[t] = _mm256_add_epi32(isum[t], p);
        }
    }
    // msum = Σ_s m_s·Σ32_s with Σ32 = lo + 256·hi: the mins of sub-blocks 0..4 and 4..8
    // (one vector each, 4 bytes per row) against the broadcast lo and hi bytes.
    let q0 = load(pb.add(OFF_MN));
    let q1 = load(pb.add(OFF_MN + 32));
    let z = _mm256_setzero_si256();
    let msum = std::array::from_fn(|t| {
        let e = ex[t];
        let ml = I::dpbusd(I::dpbusd(z, q0, bcast32(e)), q1, bcast32(e.add(4)));
        let mh = I::dpbusd(I::dpbusd(z, q0, bcast32(e.add(8))), q1, bcast32(e.add(12)));
        _mm256_add_epi32(ml, _mm256_slli_epi32::<8>(mh))
    });
    (isum, msum)
}

/// Bytes [`q4k_prepare`] writes per activation block.
const Q4K_EXTRA: usize = 16;

/// A Q8_K block's per-32 sums `Σ32_s = bsums[2s] + bsums[2s+1]` (|Σ32| ≤ 32·128) split as
/// `lo + 256·hi` into signed bytes: `lo_0..4 | lo_4..8 | hi_0..4 | hi_4..8`, the operands of
/// the 4 `vpdpbusd` of `msum`. Done once per (token, block) and pass, for all the groups.
#[inline(always)]
unsafe fn q4k_prepare(blk: *const u8, dst: *mut u8) {
    let v = _mm256_madd_epi16(load(blk.add(Q8K_BSUMS)), _mm256_set1_epi16(1));
    let lo = _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(v));
    let hi = _mm256_srai_epi32::<8>(_mm256_sub_epi32(v, lo));
    // Per 128-bit half: [lo0..4 hi0..4] (i16), then bytes [lo hi lo hi]; |hi| ≤ 16, so no
    // saturation. 32-bit elements 0, 4, 1, 5 are lo_0..4, lo_4..8, hi_0..4, hi_4..8.
    let p16 = _mm256_packs_epi32(lo, hi);
    let p8 = _mm256_packs_epi16(p16, p16);
    let r = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 3, 6, 7));
    _mm_storeu_si128(dst as *mut __m128i, _mm256_castsi256_si128(r));
}

// ---------------------------------------------------------------------------------------
// Q6_Kx8 × Q8_K (see `q6k` for the layout).

/// The unsigned 6-bit values (0..64) of 8 rows × 4 positions that step (n, g) of packed
/// Q6_Kx8 block `pb` holds, `[p][low / high nibbles]`: values `128n + 32p + 4g .. +4`
/// (sub-block `8n + 2p + g/4`) and `128n + 64 + 32p + 4g .. +4` (sub-block 4 further).
/// Reads the `qh` vector (n, g) and the two `ql` vectors after it.
#[inline(always)]
unsafe fn q6k_values(pb: *const u8, n: usize, g: usize) -> [[__m256i; 2]; 2] {
    let m4 = _mm256_set1_epi8(0x0f);
    let m30 = _mm256_set1_epi8(0x30);
    let h = load(pb.add(q6k::qh_at(n, g)));
    // The 2 high bits of each value moved to bits 4..5 (16-bit shifts: the bits that
    // cross into the neighbouring byte are masked away).
    let hb = [
        [
            _mm256_and_si256(_mm256_slli_epi16::<4>(h), m30),
            _mm256_and_si256(h, m30),
        ],
        [
            _mm256_and_si256(_mm256_slli_epi16::<2>(h), m30),
            _mm256_and_si256(_mm256_srli_epi16::<2>(h), m30),
        ],
    ];
    std::array::from_fn(|p| {
        let l = load(pb.add(q6k::ql_at(n, p, g)));
        [
            _mm256_or_si256(_mm256_and_si256(l, m4), hb[p][0]),
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(l), m4), hb[p][1]),
        ]
    })
}

/// One packed Q6_Kx8 block × T activation blocks: `isum` per token, lane = row. The
/// block is read in address order: per (n, g) its `qh` vector and the two `ql` vectors.
#[inline(always)]
unsafe fn q6k_block_ints<const T: usize, I: Isa>(pb: *const u8, a: [*const u8; T]) -> [__m256i; T] {
    let mut isum = [_mm256_setzero_si256(); T];
    for n in 0..2 {
        for gh in 0..2 {
            // Sub-block sums [p][low/high nibbles] per token: sub-blocks 8n + 2p + gh (low)
            // and 8n + 4 + 2p + gh (high).
            let mut sub = [[[_mm256_setzero_si256(); 2]; 2]; T];
            for g4 in 0..4 {
                let g = 4 * gh + g4;
                let q = q6k_values(pb, n, g);
                for p in 0..2 {
                    let [qlo, qhi] = q[p];
                    for t in 0..T {
                        let y = a[t].add(Q8K_QS + 128 * n + 32 * p + 4 * g);
                        sub[t][p][0] = I::dpbusd(sub[t][p][0], qlo, bcast32(y));
                        sub[t][p][1] = I::dpbusd(sub[t][p][1], qhi, bcast32(y.add(64)));
                    }
                }
            }
            for p in 0..2 {
                let s_lo = 8 * n + 2 * p + gh;
                let s_hi = s_lo + 4;
                let sc = |s: usize| {
                    _mm256_cvtepi8_epi32(_mm_loadl_epi64(
                        pb.add(q6k::OFF_SC + 8 * s) as *const __m128i
                    ))
                };
                let (sc_lo, sc_hi) = (sc(s_lo), sc(s_hi));
                for t in 0..T {
                    // 32·bsums[s]: the stored offset of 16 values against these activations.
                    let off = |s: usize| {
                        let b = std::ptr::read_unaligned(a[t].add(Q8K_BSUMS + 2 * s) as *const i16);
                        _mm256_set1_epi32(32 * b as i32)
                    };
                    // |Σ q·a − 32·bsum| ≤ 16·63·128 + 32·16·128, × |scale| ≤ 128, 16 sub-blocks:
                    // < 2³¹.
                    let v = _mm256_add_epi32(
                        _mm256_mullo_epi32(_mm256_sub_epi32(sub[t][p][0], off(s_lo)), sc_lo),
                        _mm256_mullo_epi32(_mm256_sub_epi32(sub[t][p][1], off(s_hi)), sc_hi),
                    );
                    isum[t] = _mm256_add_epi32(isum[t], v);
                }
            }
        }
    }
    isum
}

// ---------------------------------------------------------------------------------------
// The tile all layouts share (the legacy layouts' block code follows it): per block the
// layout's integers, then the f32 steps of the scalar definitions.

/// A packed layout's block code, for the one tile all layouts share ([`tile`]).
trait Layout {
    const BLOCK_BYTES: usize;
    /// Values per block of a row (the pass length is counted in values).
    const VALUES: usize = 256;
    /// Bytes of one activation block (Q8_K or Q8_0).
    const ACT_BYTES: usize;
    /// Offsets of the 8 f16 `d` and (layouts with mins) the 8 f16 `dmin`.
    const OFF_D: usize;
    const OFF_DMIN: Option<usize>;
    /// Bytes of prepared data per activation block (0: none; at most [`EXTRA_MAX`], the
    /// size of the tile's buffer).
    const EXTRA: usize;
    /// Writes the [`Layout::EXTRA`] prepared bytes of the activation block at `blk` to
    /// `dst`.
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8);
    /// `(isum, msum)` per token, lane = row (`msum` unused without mins); `a[t]` points to
    /// token t's activation block, `ex[t]` to its prepared bytes.
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]);
    /// The activation block's scale `d_a`.
    unsafe fn d_a(blk: *const u8, ex: *const u8) -> f32;
    /// The 8 rows' scales `d` of packed block `pb` (f16 at [`Layout::OFF_D`] unless the
    /// layout says otherwise).
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        f16x8(pb.add(Self::OFF_D))
    }
}

/// Prepared bytes per activation block of the largest layout (Q3_K's offsets).
const EXTRA_MAX: usize = 64;

struct Q4K;
impl Layout for Q4K {
    const BLOCK_BYTES: usize = Q4KX8_BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = OFF_D;
    const OFF_DMIN: Option<usize> = Some(OFF_DMIN);
    const EXTRA: usize = Q4K_EXTRA;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        q4k_prepare(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        q4k_block_ints::<T, I>(pb, a, ex)
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
}

struct Q6K;
impl Layout for Q6K {
    const BLOCK_BYTES: usize = Q6KX8_BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = q6k::OFF_D;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = 0;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(_blk: *const u8, _dst: *mut u8) {}
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        _ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        (q6k_block_ints::<T, I>(pb, a), [_mm256_setzero_si256(); T])
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
}

/// Values per pass of the tiles. A pass prepares the activation blocks of its T tokens
/// once (into a stack buffer) and then runs every group of the call over them; between
/// passes a group's accumulators wait in `out` (f32 stored and reloaded unchanged, so
/// results do not depend on the pass length). Counted in values, not blocks: a group's
/// segment of a pass is one stream of weight bytes, and the 32-value layouts' passes of
/// 64 blocks (2048 values, ~9 KiB of Q4_0x8 per group) broke a 7168-wide GEMV into short
/// streams that one core could not keep busy (Q4_0 11 GB/s per thread at 7168 × 2048
/// against 27–30 at 2048 wide; 512 blocks: bench/RESULTS.md, issue 14).
const PASS_VALUES: usize = 16384;

/// Blocks per pass of the 256-value layouts (and the unit of the pass scratch's size).
const PASS_BLOCKS: usize = PASS_VALUES / 256;

/// Blocks per pass of the 32-value layouts (Q8_0x8, Q5_0x8, Q4_0x8, MXFP4x8).
const LEGACY_PASS_BLOCKS: usize = PASS_VALUES / 32;

/// How far ahead of the block being multiplied the tiles ask for weight bytes
/// (`prefetcht0`, one per 64-byte line of a block). A GEMV from DRAM is latency-bound per
/// core: the hardware prefetchers alone kept only 60–70% of the read bandwidth busy here
/// (Xeon guest, 2 threads: Q4_Kx8 19.5–20.9 GB/s of 26–29), since the loads of the next
/// lines issue only once the arithmetic before them retires. Asking 4 KiB ahead brings
/// the same GEMVs to 25–27 GB/s (≈ 95–100%) and V2-Lite decode from 10.7 to 13.8 tok/s;
/// 2 KiB did nearly as well, 8 KiB no better (bench/RESULTS.md, 2026-12-07). A prefetch
/// never faults, so running past the matrix's end is harmless (it reads ≤ 4 KiB more).
const PREFETCH_AHEAD: usize = 4096;

/// The f32 accumulators of group output `o` (row stride `ld`): zero on the first pass,
/// else what the previous pass stored.
#[inline(always)]
unsafe fn acc_in<const T: usize>(first: bool, o: *const f32, ld: usize) -> [__m256; T] {
    std::array::from_fn(|t| {
        if first {
            _mm256_setzero_ps()
        } else {
            _mm256_loadu_ps(o.add(t * ld))
        }
    })
}

#[inline(always)]
unsafe fn acc_out<const T: usize>(acc: [__m256; T], o: *mut f32, ld: usize) {
    for t in 0..T {
        _mm256_storeu_ps(o.add(t * ld), acc[t]);
    }
}

/// The tile of every layout: per pass, the tokens' activation blocks prepared once, then
/// per group and block the layout's integers and the f32 steps of the scalar definitions
/// (`q4k::kq_dot_scalar`, `legacy::dot_scalar`): `acc = fma(d·d_a, isum, acc)`, then for
/// layouts with mins `acc = fma(−(dmin·d_a), msum, acc)`.
#[inline(always)]
unsafe fn tile<const T: usize, I: Isa, L: Layout>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    const { assert!(L::EXTRA * T <= EXTRA_MAX * PASS_BLOCKS * TOKENS_256 && T <= TOKENS_256) };
    let a0: [*const u8; T] = std::array::from_fn(|t| *a.add(t));
    let gbytes = nb * L::BLOCK_BYTES;
    // Prepared bytes of the pass (written before being read; unused without EXTRA), the
    // T tokens' shares side by side: `pass` blocks each, fewer than PASS_VALUES' worth only for
    // layouts that prepare more than EXTRA_MAX bytes per block (IQ2_XXSx8's permuted
    // activations: 64 blocks for 1 token, 28 for 4).
    let pass = const {
        let want = PASS_VALUES / L::VALUES;
        if L::EXTRA == 0 {
            want
        } else {
            let fit = EXTRA_MAX * PASS_BLOCKS * TOKENS_256 / (L::EXTRA * T);
            if fit < want {
                fit
            } else {
                want
            }
        }
    };
    let mut ex = std::mem::MaybeUninit::<[[u8; EXTRA_MAX * PASS_BLOCKS]; TOKENS_256]>::uninit();
    let ex = ex.as_mut_ptr() as *mut u8;
    let ex_at = |t: usize, k: usize| ex.add((t * pass + k) * L::EXTRA);
    let mut ib0 = 0;
    while ib0 < nb {
        let n = (nb - ib0).min(pass);
        if L::EXTRA > 0 {
            for t in 0..T {
                for k in 0..n {
                    L::prepare::<I>(a0[t].add((ib0 + k) * L::ACT_BYTES), ex_at(t, k));
                }
            }
        }
        for g in 0..ng {
            let wg = w.add(g * gbytes);
            let og = out.add(g * ROWS);
            let mut acc = acc_in::<T>(ib0 == 0, og, ld);
            for k in 0..n {
                let ib = ib0 + k;
                let pb = wg.add(ib * L::BLOCK_BYTES);
                // The byte read PREFETCH_AHEAD bytes from now: further in this group's
                // segment of the pass, or past its end in the next group's (the same
                // address when the call is one pass: the groups are contiguous).
                let ahead = if (k * L::BLOCK_BYTES) + PREFETCH_AHEAD < n * L::BLOCK_BYTES {
                    PREFETCH_AHEAD
                } else {
                    PREFETCH_AHEAD + gbytes - n * L::BLOCK_BYTES
                };
                let mut line = 0;
                while line < L::BLOCK_BYTES {
                    // SAFETY: a prefetch is a hint: it never faults, whatever the address
                    // (`wrapping_add` keeps the pointer arithmetic itself defined).
                    _mm_prefetch::<_MM_HINT_T0>(pb.wrapping_add(ahead + line) as *const i8);
                    line += 64;
                }
                let at: [*const u8; T] = std::array::from_fn(|t| a0[t].add(ib * L::ACT_BYTES));
                let et: [*const u8; T] = std::array::from_fn(|t| ex_at(t, k) as *const u8);
                let (isum, msum) = L::ints::<T, I>(pb, at, et);
                let d = L::row_d(pb);
                for t in 0..T {
                    let da = _mm256_set1_ps(L::d_a(at[t], et[t]));
                    acc[t] =
                        _mm256_fmadd_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(isum[t]), acc[t]);
                    if let Some(off) = L::OFF_DMIN {
                        let dmin = f16x8(pb.add(off));
                        acc[t] = _mm256_fnmadd_ps(
                            _mm256_mul_ps(dmin, da),
                            _mm256_cvtepi32_ps(msum[t]),
                            acc[t],
                        );
                    }
                }
            }
            acc_out(acc, og, ld);
        }
        ib0 += n;
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_avx2<L: Layout, const T: usize>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    tile::<T, Avx2, L>(nb, ng, w, a, out, ld)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw")]
unsafe fn tile_vnni<L: Layout, const T: usize>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    tile::<T, Vnni, L>(nb, ng, w, a, out, ld)
}

/// The kernels of layout `$l` for 1..=8 tokens.
macro_rules! tile_table {
    ($f:ident, $l:ty) => {
        [
            $f::<$l, 1>,
            $f::<$l, 2>,
            $f::<$l, 3>,
            $f::<$l, 4>,
            $f::<$l, 5>,
            $f::<$l, 6>,
            $f::<$l, 7>,
            $f::<$l, 8>,
        ]
    };
}

static Q4K_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Q4K);
static Q4K_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Q4K);
static Q6K_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Q6K);
static Q6K_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Q6K);
static Q8_0_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Legacy<K_Q8_0>);
static Q5_0_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Legacy<K_Q5_0>);
static Q4_0_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Legacy<K_Q4_0>);
static MXFP4_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Legacy<K_MXFP4>);
static IQ4_NL_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Legacy<K_IQ4_NL>);
static Q8_0_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Legacy<K_Q8_0>);
static Q5_0_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Legacy<K_Q5_0>);
static Q4_0_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Legacy<K_Q4_0>);
static MXFP4_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Legacy<K_MXFP4>);
static IQ4_NL_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Legacy<K_IQ4_NL>);

/// The 256-bit VNNI tiles of legacy layout `K` (the 512-bit tiles' odd last group).
fn legacy_vnni_256(k: u8) -> &'static [TileFn; TOKENS_256] {
    match k {
        K_Q8_0 => &Q8_0_VNNI,
        K_Q5_0 => &Q5_0_VNNI,
        K_Q4_0 => &Q4_0_VNNI,
        K_IQ4_NL => &IQ4_NL_VNNI,
        _ => &MXFP4_VNNI,
    }
}
/// The 32-value layouts on AVX-512 VNNI: pairs of groups in 512-bit vectors (`zmm`) for 7
/// and 8 tokens per call (a prompt's full tiles, weights mostly from cache), where sharing
/// each activation broadcast and f32 step between 16 rows pays; 1–6 tokens (decode's GEMVs
/// and the k-token steps of speculation and of several sequences, weights from DRAM) stay
/// on the 256-bit tile: cold, 4–6 tokens over the 0.5B model's 896-wide Q5_0/Q8_0
/// matrices cost 1.00–1.44× one token's time on it against 1.37–1.88× on the 512-bit tile
/// (Zen 4; bench/RESULTS.md, "k-token steps").
macro_rules! zmm_table {
    ($k:expr) => {
        [
            tile_vnni::<Legacy<{ $k }>, 1>,
            tile_vnni::<Legacy<{ $k }>, 2>,
            tile_vnni::<Legacy<{ $k }>, 3>,
            tile_vnni::<Legacy<{ $k }>, 4>,
            tile_vnni::<Legacy<{ $k }>, 5>,
            tile_vnni::<Legacy<{ $k }>, 6>,
            zmm::tile_zmm::<{ $k }, 7>,
            zmm::tile_zmm::<{ $k }, 8>,
        ]
    };
}
static Q8_0_ZMM: [TileFn; MAX_TOKENS] = zmm_table!(K_Q8_0);
static Q5_0_ZMM: [TileFn; MAX_TOKENS] = zmm_table!(K_Q5_0);
static Q4_0_ZMM: [TileFn; MAX_TOKENS] = zmm_table!(K_Q4_0);
static MXFP4_ZMM: [TileFn; MAX_TOKENS] = zmm_table!(K_MXFP4);
static IQ4_NL_ZMM: [TileFn; MAX_TOKENS] = zmm_table!(K_IQ4_NL);
static Q2K_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Q2K);
static Q2K_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Q2K);
static Q3K_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, Q3K);
static Q3K_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, Q3K);
static IQ4XS_AVX2: [TileFn; TOKENS_256] = tile_table!(tile_avx2, IQ4XS);
static IQ4XS_VNNI: [TileFn; TOKENS_256] = tile_table!(tile_vnni, IQ4XS);

// ---------------------------------------------------------------------------------------
// Q2_Kx8 × Q8_K (see `q2k` for the layout).

/// Two sub-block sums, each `2^e` times a value in −2¹⁵..2¹⁵ (exact multiples), as the
/// 16-bit halves of each lane: `[sa >> e, sb >> e]`, the operand of a `vpdpwssd` against
/// the pair's two scales. `sb << (16 − e)` is exactly `(sb >> e) << 16`.
#[inline(always)]
unsafe fn pair16(sa: __m256i, sb: __m256i, e: i32) -> __m256i {
    let lo = _mm256_sra_epi32(sa, _mm_cvtsi32_si128(e));
    let hi = _mm256_sll_epi32(sb, _mm_cvtsi32_si128(16 - e));
    _mm256_blend_epi16::<0b1010_1010>(lo, hi)
}

/// One packed Q2_Kx8 block × T activation blocks: `[isum, msum]` per token, lane = row.
#[inline(always)]
unsafe fn q2k_block_ints<const T: usize, I: Isa>(
    pb: *const u8,
    a: [*const u8; T],
) -> ([__m256i; T], [__m256i; T]) {
    let mut isum = [_mm256_setzero_si256(); T];
    let mut msum = [_mm256_setzero_si256(); T];
    for n in 0..2 {
        for k in 0..4 {
            // VNNI: the field in place (value × 4^k); AVX2: shifted down (see the module
            // docs), so the sums need no shift.
            let e = if I::VNNI { 2 * k as i32 } else { 0 };
            let mask = _mm256_set1_epi8(if I::VNNI { 3 << (2 * k) } else { 3 });
            let mut sa = [_mm256_setzero_si256(); T];
            let mut sb = [_mm256_setzero_si256(); T];
            for g in 0..8 {
                let w = load(pb.add(q2k::qs_at(n, g)));
                let w = if I::VNNI {
                    w
                } else {
                    _mm256_srl_epi16(w, _mm_cvtsi32_si128(2 * k as i32))
                };
                let q = _mm256_and_si256(w, mask);
                for t in 0..T {
                    let y = bcast32(a[t].add(Q8K_QS + 128 * n + 32 * k + 4 * g));
                    if g < 4 {
                        sa[t] = I::dpbusd(sa[t], q, y);
                    } else {
                        sb[t] = I::dpbusd(sb[t], q, y);
                    }
                }
            }
            // Pair p = 4n + k: sub-blocks 8n + 2k and 8n + 2k + 1, both bytes of each row
            // as 16-bit halves of its lane.
            let p = 4 * n + k;
            let sm = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                pb.add(q2k::OFF_SM + 16 * p) as *const __m128i
            ));
            let sc = _mm256_and_si256(sm, _mm256_set1_epi16(0x0f));
            let mn = _mm256_srli_epi16::<4>(sm);
            for t in 0..T {
                // |Σ16 q·a| ≤ 16·3·128 < 2¹⁵; scales and mins ≤ 15; |bsum| ≤ 16·128.
                isum[t] = I::dpwssd(isum[t], pair16(sa[t], sb[t], e), sc);
                let bs = bcast32(a[t].add(Q8K_BSUMS + 4 * p));
                msum[t] = I::dpwssd(msum[t], mn, bs);
            }
        }
    }
    (isum, msum)
}

struct Q2K;
impl Layout for Q2K {
    const BLOCK_BYTES: usize = Q2KX8_BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = q2k::OFF_D;
    const OFF_DMIN: Option<usize> = Some(q2k::OFF_DMIN);
    const EXTRA: usize = 0;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(_blk: *const u8, _dst: *mut u8) {}
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        _ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        q2k_block_ints::<T, I>(pb, a)
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
}

// ---------------------------------------------------------------------------------------
// Q3_Kx8 × Q8_K (see `q3k` for the layout).

/// `v << s` for s ≥ 0, `v >> −s` (logical) otherwise, in 16-bit lanes; `s` is a constant
/// after unrolling.
#[inline(always)]
unsafe fn shift16(v: __m256i, s: i32) -> __m256i {
    if s >= 0 {
        _mm256_sll_epi16(v, _mm_cvtsi32_si128(s))
    } else {
        _mm256_srl_epi16(v, _mm_cvtsi32_si128(-s))
    }
}

/// The power of two at which (n, k)'s `u` is formed: `q3k::E` with VNNI, 0 for AVX2
/// (whose `vpmaddubsw` pairs would saturate on bytes above 127).
#[inline(always)]
fn q3k_e<I: Isa>(n: usize, k: usize) -> i32 {
    if I::VNNI {
        q3k::E[n][k] as i32
    } else {
        0
    }
}

/// A Q8_K block's per-sub-block starts `−4·2^e·bsums[s]` (16 i32), `e` of s's pair.
#[inline(always)]
unsafe fn q3k_prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
    let b = load(blk.add(Q8K_BSUMS));
    let halves = [_mm256_castsi256_si128(b), _mm256_extracti128_si256::<1>(b)];
    for (n, h) in halves.into_iter().enumerate() {
        let sh = |k: usize| 2 + q3k_e::<I>(n, k);
        let shifts = _mm256_setr_epi32(sh(0), sh(0), sh(1), sh(1), sh(2), sh(2), sh(3), sh(3));
        let v = _mm256_sllv_epi32(_mm256_cvtepi16_epi32(h), shifts);
        let v = _mm256_sub_epi32(_mm256_setzero_si256(), v);
        _mm256_storeu_si256(dst.add(32 * n) as *mut __m256i, v);
    }
}

/// One packed Q3_Kx8 block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
unsafe fn q3k_block_ints<const T: usize, I: Isa>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> [__m256i; T] {
    // One call per (n, k), each with constant shifts and masks (as a loop LLVM kept the
    // shift counts in registers and branched on their signs: half the speed).
    let mut isum = [_mm256_setzero_si256(); T];
    q3k_pair::<T, I, 0, 0>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 0, 1>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 0, 2>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 0, 3>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 1, 0>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 1, 1>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 1, 2>(pb, a, ex, &mut isum);
    q3k_pair::<T, I, 1, 3>(pb, a, ex, &mut isum);
    isum
}

/// `2^e·u` (`u = low2 + 4·hbit`, 0..8) of values `128n + 32k + 4g .. +4` of the 8 rows of
/// packed Q3_Kx8 block `pb`: the 2 low bits moved from bit 2k of `qs` vector (n, g) to bit
/// e, the high bit from [`q3k::HBIT`] of `hb` vector g to bit e + 2 (16-bit shifts; what
/// crosses into the neighbouring byte is masked away).
#[inline(always)]
unsafe fn q3k_values(pb: *const u8, n: usize, k: usize, g: usize, e: i32) -> __m256i {
    let w = shift16(load(pb.add(q3k::qs_at(n, g))), e - 2 * k as i32);
    let h = shift16(load(pb.add(q3k::hb_at(g))), e + 2 - q3k::HBIT[n][k] as i32);
    _mm256_or_si256(
        _mm256_and_si256(w, _mm256_set1_epi8(3 << e)),
        _mm256_and_si256(h, _mm256_set1_epi8(4 << e)),
    )
}

/// Sub-blocks `8n + 2k` and `8n + 2k + 1` (pair `p = 4n + k`) of a packed Q3_Kx8 block × T
/// activation blocks, added to `isum`.
#[inline(always)]
unsafe fn q3k_pair<const T: usize, I: Isa, const N: usize, const K: usize>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
    isum: &mut [__m256i; T],
) {
    let (n, k) = (N, K);
    let p = 4 * n + k;
    let e = q3k_e::<I>(n, k);
    let mut sa = [_mm256_setzero_si256(); T];
    let mut sb = [_mm256_setzero_si256(); T];
    for t in 0..T {
        sa[t] = bcast32(ex[t].add(8 * p));
        sb[t] = bcast32(ex[t].add(8 * p + 4));
    }
    for g in 0..8 {
        // 2^e·u ≤ 7·32: an unsigned byte.
        let u = q3k_values(pb, n, k, g, e);
        for t in 0..T {
            let y = bcast32(a[t].add(Q8K_QS + 128 * n + 32 * k + 4 * g));
            if g < 4 {
                sa[t] = I::dpbusd(sa[t], u, y);
            } else {
                sb[t] = I::dpbusd(sb[t], u, y);
            }
        }
    }
    let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(
        pb.add(q3k::OFF_SC + 16 * p) as *const __m128i
    ));
    for t in 0..T {
        // |Σ16 q·a| ≤ 16·4·128 < 2¹⁵ (times 2^e, exactly); |scale| ≤ 32.
        isum[t] = I::dpwssd(isum[t], pair16(sa[t], sb[t], e), sc);
    }
}

struct Q3K;
impl Layout for Q3K {
    const BLOCK_BYTES: usize = Q3KX8_BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = q3k::OFF_D;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = 64;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        q3k_prepare::<I>(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        (
            q3k_block_ints::<T, I>(pb, a, ex),
            [_mm256_setzero_si256(); T],
        )
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
}

// ---------------------------------------------------------------------------------------
// IQ4_XSx8 × Q8_K (see `iq4xs` for the layout).

/// The IQ4_NL codebook as `vpshufb` tables (both 128-bit halves): `KVALUES + 128` as
/// unsigned bytes for VNNI, the signed values for AVX2.
#[inline(always)]
unsafe fn iq4_table<I: Isa>() -> __m256i {
    let kv = crate::blocks::KVALUES_IQ4NL;
    let b: [u8; 16] = std::array::from_fn(|i| {
        if I::VNNI {
            (kv[i] as i32 + 128) as u8
        } else {
            kv[i] as u8
        }
    });
    _mm256_broadcastsi128_si256(_mm_loadu_si128(b.as_ptr() as *const __m128i))
}

/// VNNI: a Q8_K block's `−128·Σ32_j` per sub-block j (8 i32), each sub-block sum's start
/// (the codebook is stored +128); AVX2 (signed codebook): zeros.
#[inline(always)]
unsafe fn iq4xs_prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
    let v = if I::VNNI {
        let s32 = _mm256_madd_epi16(load(blk.add(Q8K_BSUMS)), _mm256_set1_epi16(1));
        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<7>(s32))
    } else {
        _mm256_setzero_si256()
    };
    _mm256_storeu_si256(dst as *mut __m256i, v);
}

/// `acc + Σ quads(w·a)` for IQ4_XS's table output: VNNI takes it unsigned (+128) as is,
/// AVX2 gets the signed codebook values (see [`iq4_table`]).
#[inline(always)]
unsafe fn signed_weight_dot<I: Isa>(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    if I::VNNI {
        I::dpbusd(acc, w, a)
    } else {
        dot_signed_avx2(acc, w, a)
    }
}

/// One packed IQ4_XSx8 block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
unsafe fn iq4xs_block_ints<const T: usize, I: Isa>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> [__m256i; T] {
    let m4 = _mm256_set1_epi8(0x0f);
    let table = iq4_table::<I>();
    let mut isum = [_mm256_setzero_si256(); T];
    for j in 0..8 {
        let mut s0 = [_mm256_setzero_si256(); T];
        for t in 0..T {
            s0[t] = bcast32(ex[t].add(4 * j));
        }
        let mut s1 = [_mm256_setzero_si256(); T];
        for g in 0..4 {
            let w = load(pb.add(iq4xs::qs_at(j, g)));
            let lo = _mm256_shuffle_epi8(table, _mm256_and_si256(w, m4));
            let hi = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16::<4>(w), m4));
            for t in 0..T {
                let y = a[t].add(Q8K_QS + 32 * j + 4 * g);
                s0[t] = signed_weight_dot::<I>(s0[t], lo, bcast32(y));
                s1[t] = signed_weight_dot::<I>(s1[t], hi, bcast32(y.add(16)));
            }
        }
        let sc = i8x8(pb.add(iq4xs::OFF_SC + 8 * j));
        for t in 0..T {
            // |Σ32 KVALUES·a| ≤ 32·127·128, |scale| ≤ 32, 8 sub-blocks: < 2³¹.
            isum[t] = _mm256_add_epi32(
                isum[t],
                _mm256_mullo_epi32(_mm256_add_epi32(s0[t], s1[t]), sc),
            );
        }
    }
    isum
}

struct IQ4XS;
impl Layout for IQ4XS {
    const BLOCK_BYTES: usize = IQ4XSX8_BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = iq4xs::OFF_D;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = 32;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        iq4xs_prepare::<I>(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        (
            iq4xs_block_ints::<T, I>(pb, a, ex),
            [_mm256_setzero_si256(); T],
        )
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
}

// ---------------------------------------------------------------------------------------
// Q8_0x8 / Q5_0x8 / Q4_0x8 × Q8_0 (see `legacy` for the layouts).

/// The legacy layouts as a const parameter (`legacy::Kind` cannot be one on stable Rust).
const K_Q8_0: u8 = 0;
const K_Q5_0: u8 = 1;
const K_Q4_0: u8 = 2;
const K_MXFP4: u8 = 3;
const K_IQ4_NL: u8 = 4;

/// The offset `o` of the weight vectors [`legacy_weights`] returns (`u = w + o`).
#[inline(always)]
fn legacy_offset<const K: u8, I: Isa>() -> i32 {
    match (K, I::VNNI) {
        (K_Q5_0, _) => 16,
        (K_Q4_0, _) => 8,
        (K_MXFP4, _) => 12,
        // Q8_0 and IQ4_NL: unsigned +128 with VNNI, signed without.
        (_, true) => 128,
        (_, false) => 0,
    }
}

/// Weight vector g (0..8: positions 4g..4g+4 of the 8 rows) of a packed block as the
/// block's dot takes it: `w + o` unsigned ([`legacy_offset`]), or signed for Q8_0 without
/// VNNI. Q5_0: `plane` is the block's fifth-bit plane (bit g of byte 4r + i = the fifth
/// bit of row r's value 4g + i), moved to bit 4 with one shift.
#[inline(always)]
unsafe fn legacy_weights<const K: u8, I: Isa>(pb: *const u8, g: usize, plane: __m256i) -> __m256i {
    if K == K_Q4_0 || K == K_MXFP4 || K == K_IQ4_NL {
        let off = if K == K_MXFP4 { MX_OFF_QS } else { Q4_OFF_QS };
        let v = load(pb.add(off + 32 * (g % 4)));
        let m4 = _mm256_set1_epi8(0x0f);
        let nib = if g < 4 {
            _mm256_and_si256(v, m4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4)
        };
        if K == K_MXFP4 {
            // KVALUES_MXFP4 + 12 (0..=24): (u·a) pairs ≤ 24·128·2 fit AVX2's i16 too.
            let t = _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0);
            _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(t), nib)
        } else if K == K_IQ4_NL {
            // KVALUES_IQ4NL + 128 (VNNI) or signed (AVX2: the Q8_0 way, signs moved).
            _mm256_shuffle_epi8(iq4_table::<I>(), nib)
        } else {
            nib
        }
    } else if K == K_Q5_0 {
        let v = load(pb.add(Q5_OFF_QS + 32 * (g % 4)));
        let m4 = _mm256_set1_epi8(0x0f);
        let nib = if g < 4 {
            _mm256_and_si256(v, m4)
        } else {
            _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4)
        };
        // 16-bit shifts: what crosses into the neighbouring byte is masked away.
        let hb = if g < 4 {
            _mm256_sll_epi16(plane, _mm_cvtsi32_si128(4 - g as i32))
        } else {
            _mm256_srl_epi16(plane, _mm_cvtsi32_si128(g as i32 - 4))
        };
        _mm256_or_si256(nib, _mm256_and_si256(hb, _mm256_set1_epi8(0x10)))
    } else if I::VNNI {
        load(pb.add(Q8_OFF_QS + 32 * g))
    } else {
        _mm256_xor_si256(load(pb.add(Q8_OFF_QS + 32 * g)), _mm256_set1_epi8(-128))
    }
}

/// One packed block × T activation blocks: `Σ w·a` per token, lane = row. `q[t]` points
/// to token t's 32 quants, `c[t]` to its prepared `−o·Σa` (i32) of this block.
#[inline(always)]
unsafe fn legacy_block_ints<const T: usize, const K: u8, I: Isa>(
    pb: *const u8,
    q: [*const u8; T],
    c: [*const u8; T],
) -> [__m256i; T] {
    // Two chains per token (even / odd g): `vpdpbusd` latency, not throughput, would
    // otherwise bound the short legacy blocks. The even chain starts at −o·Σa.
    let mut dp: [__m256i; T] = std::array::from_fn(|t| bcast32(c[t]));
    let mut dq = [_mm256_setzero_si256(); T];
    let plane = if K == K_Q5_0 {
        load(pb.add(Q5_OFF_QH))
    } else {
        _mm256_setzero_si256()
    };
    let dot = |acc: __m256i, w: __m256i, a: __m256i| {
        if (K == K_Q8_0 || K == K_IQ4_NL) && !I::VNNI {
            dot_signed_avx2(acc, w, a)
        } else {
            I::dpbusd(acc, w, a)
        }
    };
    for g in (0..8).step_by(2) {
        let w0 = legacy_weights::<K, I>(pb, g, plane);
        let w1 = legacy_weights::<K, I>(pb, g + 1, plane);
        for t in 0..T {
            dp[t] = dot(dp[t], w0, bcast32(q[t].add(4 * g)));
            dq[t] = dot(dq[t], w1, bcast32(q[t].add(4 * g + 4)));
        }
    }
    std::array::from_fn(|t| _mm256_add_epi32(dp[t], dq[t]))
}

/// A Q8_0 activation block's per-call constants: `−o·Σa` (i32) and `d_a` (f32).
#[inline(always)]
unsafe fn legacy_prepare<const K: u8, I: Isa>(blk: *const u8, dst: *mut u8) {
    let off = legacy_offset::<K, I>();
    let sum = if off == 0 {
        0
    } else {
        // Σ of the 32 signed bytes: pairs, then 8 lanes, then one.
        let v = _mm256_madd_epi16(
            _mm256_maddubs_epi16(_mm256_set1_epi8(1), load(blk.add(2))),
            _mm256_set1_epi16(1),
        );
        let h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
        _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32::<1>(h)))
    };
    let da = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(
        blk as *const u16,
    ) as i32)));
    std::ptr::write_unaligned(dst as *mut i32, -off * sum);
    std::ptr::write_unaligned(dst.add(4) as *mut f32, da);
}

/// Bytes [`legacy_prepare`] writes per activation block.
const LEGACY_EXTRA: usize = 8;

/// Q8_0x8, Q5_0x8, Q4_0x8, IQ4_NLx8 or MXFP4x8 (`K`) against Q8_0 activations.
struct Legacy<const K: u8>;
impl<const K: u8> Layout for Legacy<K> {
    const BLOCK_BYTES: usize = match K {
        K_Q5_0 => Q5_0X8_BLOCK_BYTES,
        K_Q4_0 | K_IQ4_NL => Q4_0X8_BLOCK_BYTES,
        K_MXFP4 => MXFP4X8_BLOCK_BYTES,
        _ => Q8_0X8_BLOCK_BYTES,
    };
    /// MXFP4: the E8M0 bytes as 2^(e − 128) (`mxfp4::e8m0_to_f32_half`: e = 0, 1 are the
    /// subnormals 2^−128, 2^−127).
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        if K == K_MXFP4 {
            let e = u8x8(pb);
            let normal = _mm256_slli_epi32::<23>(_mm256_sub_epi32(e, _mm256_set1_epi32(1)));
            let small = _mm256_sllv_epi32(_mm256_set1_epi32(0x0020_0000), e);
            let big = _mm256_cmpgt_epi32(e, _mm256_set1_epi32(1));
            _mm256_castsi256_ps(_mm256_blendv_epi8(small, normal, big))
        } else {
            f16x8(pb.add(Self::OFF_D))
        }
    }
    const VALUES: usize = 32;
    const ACT_BYTES: usize = Q8_0_SIZE;
    const OFF_D: usize = legacy::OFF_D;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = LEGACY_EXTRA;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        legacy_prepare::<K, I>(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        let q: [*const u8; T] = std::array::from_fn(|t| a[t].add(2));
        (
            legacy_block_ints::<T, K, I>(pb, q, ex),
            [_mm256_setzero_si256(); T],
        )
    }
    /// Prepared as f32 with `−o·Σa` ([`legacy_prepare`]).
    #[inline(always)]
    unsafe fn d_a(_blk: *const u8, ex: *const u8) -> f32 {
        std::ptr::read_unaligned(ex.add(4) as *const f32)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn ints_avx2<L: Layout>(nb: usize, w: *const u8, a: *const u8) -> Vec<[[i32; 2]; ROWS]> {
    ints_with::<Avx2, L>(nb, w, a)
}

#[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl,avx512bw")]
unsafe fn ints_vnni<L: Layout>(nb: usize, w: *const u8, a: *const u8) -> Vec<[[i32; 2]; ROWS]> {
    ints_with::<Vnni, L>(nb, w, a)
}

#[inline(always)]
unsafe fn ints_with<I: Isa, L: Layout>(
    nb: usize,
    w: *const u8,
    a: *const u8,
) -> Vec<[[i32; 2]; ROWS]> {
    let mut out = vec![[[0i32; 2]; ROWS]; nb];
    for (ib, o) in out.iter_mut().enumerate() {
        let blk = a.add(ib * L::ACT_BYTES);
        let mut ex = vec![0u8; L::EXTRA.max(1)];
        L::prepare::<I>(blk, ex.as_mut_ptr());
        let (isum, msum) = L::ints::<1, I>(w.add(ib * L::BLOCK_BYTES), [blk], [ex.as_ptr()]);
        let (mut li, mut lm) = ([0i32; 8], [0i32; 8]);
        _mm256_storeu_si256(li.as_mut_ptr() as *mut __m256i, isum[0]);
        _mm256_storeu_si256(lm.as_mut_ptr() as *mut __m256i, msum[0]);
        for r in 0..ROWS {
            *o.get_mut(r).expect("8 rows") = [li[r], lm[r]];
        }
    }
    out
}

/// The test hook of a codebook layout's VBMI block code (`None`: not a codebook layout).
type CodebookInts = unsafe fn(usize, *const u8, *const u8) -> Vec<[[i32; 2]; ROWS]>;
fn codebook_ints(packed: PackedType) -> Option<CodebookInts> {
    Some(match packed {
        PackedType::IQ2XXSx8 => codebook::ints_vbmi::<iq2xxs::IQ2XXS>,
        PackedType::IQ3XXSx8 => codebook::ints_vbmi::<iq3xxs::IQ3XXS>,
        PackedType::IQ2Sx8 => codebook::ints_vbmi::<iq2s::IQ2S>,
        PackedType::IQ2XSx8 => codebook::ints_vbmi::<iq2xs::IQ2XS>,
        PackedType::IQ3Sx8 => codebook::ints_vbmi::<iq3s::IQ3S>,
        PackedType::TQ1_0x8 => codebook::ints_vbmi::<ternary::Ternary<{ super::ternary::TQ1 }>>,
        PackedType::TQ2_0x8 => codebook::ints_vbmi::<ternary::Ternary<{ super::ternary::TQ2 }>>,
        _ => return None,
    })
}

/// Test hook: per-block integers from the SIMD block code (lengths checked by the caller).
pub(super) fn block_ints(
    packed: PackedType,
    path: SimdPath,
    nb: usize,
    group: &[u8],
    act: &[u8],
) -> Option<Vec<[[i32; 2]; ROWS]>> {
    let (w, a) = (group.as_ptr(), act.as_ptr());
    if let Some(ints) = codebook_ints(packed) {
        // SAFETY: as below; VBMI and GFNI were just detected.
        return (path == SimdPath::Avx512Vnni && vbmi()).then(|| unsafe { ints(nb, w, a) });
    }
    if matches!(packed, PackedType::IQ1Sx8 | PackedType::IQ1Mx8) {
        return (path == SimdPath::Avx512Vnni && vnni()).then(|| {
            // SAFETY: as below; AVX-512 VNNI was just detected.
            unsafe {
                if packed == PackedType::IQ1Sx8 {
                    iq1::ints_zmm::<iq1::S>(nb, w, a)
                } else {
                    iq1::ints_zmm::<iq1::M>(nb, w, a)
                }
            }
        });
    }
    let v = match path {
        SimdPath::Avx512Vnni if vnni() => true,
        SimdPath::Avx2 if avx2() => false,
        _ => return None,
    };
    // SAFETY: the caller checked that `group` holds nb packed blocks and `act` nb
    // activation blocks of the partner type; each variant runs only after its CPU features
    // were detected.
    unsafe {
        Some(match (packed, v) {
            (PackedType::Q4Kx8, true) => ints_vnni::<Q4K>(nb, w, a),
            (PackedType::Q4Kx8, false) => ints_avx2::<Q4K>(nb, w, a),
            (PackedType::Q6Kx8, true) => ints_vnni::<Q6K>(nb, w, a),
            (PackedType::Q6Kx8, false) => ints_avx2::<Q6K>(nb, w, a),
            (PackedType::Q8_0x8, true) => ints_vnni::<Legacy<K_Q8_0>>(nb, w, a),
            (PackedType::Q8_0x8, false) => ints_avx2::<Legacy<K_Q8_0>>(nb, w, a),
            (PackedType::Q5_0x8, true) => ints_vnni::<Legacy<K_Q5_0>>(nb, w, a),
            (PackedType::Q5_0x8, false) => ints_avx2::<Legacy<K_Q5_0>>(nb, w, a),
            (PackedType::Q4_0x8, true) => ints_vnni::<Legacy<K_Q4_0>>(nb, w, a),
            (PackedType::Q4_0x8, false) => ints_avx2::<Legacy<K_Q4_0>>(nb, w, a),
            (PackedType::IQ4NLx8, true) => ints_vnni::<Legacy<K_IQ4_NL>>(nb, w, a),
            (PackedType::IQ4NLx8, false) => ints_avx2::<Legacy<K_IQ4_NL>>(nb, w, a),
            (PackedType::Q2Kx8, true) => ints_vnni::<Q2K>(nb, w, a),
            (PackedType::Q2Kx8, false) => ints_avx2::<Q2K>(nb, w, a),
            (PackedType::Q3Kx8, true) => ints_vnni::<Q3K>(nb, w, a),
            (PackedType::Q3Kx8, false) => ints_avx2::<Q3K>(nb, w, a),
            (PackedType::IQ4XSx8, true) => ints_vnni::<IQ4XS>(nb, w, a),
            (PackedType::IQ4XSx8, false) => ints_avx2::<IQ4XS>(nb, w, a),
            (PackedType::MXFP4x8, true) => ints_vnni::<Legacy<K_MXFP4>>(nb, w, a),
            (PackedType::MXFP4x8, false) => ints_avx2::<Legacy<K_MXFP4>>(nb, w, a),
            (_, _) => unreachable!("the codebook layouts are handled above"),
        })
    }
}
