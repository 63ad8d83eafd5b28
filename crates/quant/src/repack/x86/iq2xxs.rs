//! IQ2_XXSx8 × Q8_K on AVX-512 VBMI + VNNI (see `iq2xxs` for the layout).
//!
//! The file-order kernel assembles each 8-value grid entry with a scalar table load, about
//! one load and one insert per 8 weights, and so runs at ~10% of the read bandwidth. Here
//! the codebook stays in registers and the weights are decoded "by plane":
//!
//! - IQ2_XXS's grid bytes take 3 values (8, 25, 43), so entry k is 8 two-bit codes: the
//!   codes of its bytes 0..4 as one byte (`PLANES[0][k]`, code j in bits 2j..2j+2) and of
//!   bytes 4..8 as another (`PLANES[1][k]`). Each 256-byte table is 4 registers; one
//!   lookup of a chunk pair's 64 grid indices is 2 `vpermi2b` (indices 0..128, 128..256)
//!   and a blend on the index's top bit.
//! - Plane j (weight j of every 8-value group, j = 0..8) of the 64 groups is then one
//!   16-bit shift (codes 2·(j % 4) down to bits 0..2) and one `vpermb` into a 64-byte table
//!   mapping the code (bits 2..6 ignored: the table repeats) to `grid value + 43`.
//! - The sign indices of a chunk pair's 16 `aux` words come out as bytes with one
//!   `vpmultishiftqb` (7-bit fields at bits 7l, 32 + 7l of each qword) and become ggml's
//!   `KSIGNS` bytes with one `vpermi2b` over the 128-byte table; plane j's signs are bit j
//!   of each (`vptestmb`), and a masked `86 − u` turns `43 + v` into `43 − v`.
//! - One `vpdpbusd` per (plane, token) then multiplies the unsigned `43 ± v` (0..86) with
//!   the activations of the same 64 positions: the token's quants permuted once per block
//!   (`prepare`: 8 bytes per plane and chunk pair, broadcast as a qword) so that lane
//!   `2r + h` meets row r's weights j of chunk 2p + h. Each lane starts at its chunk's
//!   `−43·Σ32 a` (prepared), so after the 8 planes it holds the chunk's exact
//!   `Σ grid·sign·a`; `vpmulld` by the lane's `2·ls + 1` (from `aux >> 27`) adds it to the
//!   block sum, and the two chunks of each row (lanes 2r, 2r + 1) are added at the end.
//!
//! Per 64 weights that is ~5 vector instructions (shift, `vpermb`, `vptestmb`, masked
//! subtract, `vpdpbusd`) plus ~1 of shared lookups, against ~2 per 64 for the 4-bit
//! layouts: the decode, not the memory, still bounds a cold GEMV on 2 Zen 4 cores.
//!
//! The integers are exactly the scalar definition's (`|43 ± v| ≤ 86`, |Σ32| ≤ 32·86·128,
//! times 31, 8 chunks: < 2³¹), and the f32 steps are the shared tile's, so results are
//! bit-identical to `iq2xxs::dot_scalar` for any number of tokens.

use super::*;
use crate::iq_grids::{IQ2XXS_GRID, KSIGNS};
use crate::repack::iq2xxs::{self, aux_at, idx_at, IQ2XXSX8_BLOCK_BYTES};

/// The 3 byte values of IQ2_XXS's grid, code 0..3.
const GRID_VALUES: [u8; 3] = [0x08, 0x19, 0x2b];

/// The weight offset: `43 ± v` is 0..=86, unsigned for `vpdpbusd`.
const OFFSET: i32 = 43;

/// The code (0..3) of a grid byte; a byte outside [`GRID_VALUES`] fails the build.
const fn code(b: u8) -> u8 {
    let mut c = 0;
    while c < 3 {
        if GRID_VALUES[c] == b {
            return c as u8;
        }
        c += 1;
    }
    panic!("IQ2XXS_GRID byte outside its three values");
}

/// 64-byte aligned tables, for whole-vector loads.
#[repr(C, align(64))]
struct Tables {
    /// `planes[h][k]`: the codes of grid entry k's bytes 4h..4h+4, code j at bits 2j..2j+2.
    planes: [[u8; 256]; 2],
    /// `KSIGNS` (the sign byte of each 7-bit sign index).
    ksigns: [u8; 128],
}

static TABLES: Tables = {
    let mut planes = [[0u8; 256]; 2];
    let mut k = 0;
    while k < 256 {
        let mut j = 0;
        while j < 8 {
            let b = (IQ2XXS_GRID[k] >> (8 * j)) as u8;
            planes[j / 4][k] |= code(b) << (2 * (j % 4));
            j += 1;
        }
        k += 1;
    }
    Tables {
        planes,
        ksigns: KSIGNS,
    }
};

/// `grid value + 43` of code c (0..3).
const fn offset_value(c: usize) -> u8 {
    GRID_VALUES[c] + OFFSET as u8
}

/// The decoded value of code 0: the affine constant of [`DECODE`].
const VALUE_BASE: u8 = offset_value(0);

/// `vgf2p8affineqb` matrices: `DECODE[m]` maps a code byte (code of plane m in bits 2m,
/// 2m + 1) to `offset_value(code)` as `VALUE_BASE ⊕ c₀·A₀ ⊕ c₁·A₁` over GF(2), with
/// `A₀ = v(0) ⊕ v(1)`, `A₁ = v(0) ⊕ v(2)`: exact for the codes 0, 1, 2 that occur (any
/// map of 3 points is affine in the 2 code bits), and the other bits of the byte ignored.
/// Row 7 − k of the matrix (byte 7 − k of the qword) selects the input bits of output
/// bit k.
const DECODE: [u64; 4] = {
    let a0 = offset_value(0) ^ offset_value(1);
    let a1 = offset_value(0) ^ offset_value(2);
    let mut d = [0u64; 4];
    let mut m = 0;
    while m < 4 {
        let mut k = 0;
        while k < 8 {
            let row = ((a0 >> k) & 1) << (2 * m) | ((a1 >> k) & 1) << (2 * m + 1);
            d[m] |= (row as u64) << (8 * (7 - k));
            k += 1;
        }
        m += 1;
    }
    d
};

/// Bytes [`prepare`] writes per activation block: the 256 permuted quants, then the 8
/// chunk offsets `−43·Σ32` (i32).
pub(super) const EXTRA: usize = 256 + 32;
const EX_OFFSETS: usize = 256;

#[inline(always)]
unsafe fn load512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p as *const __m512i)
}

/// The `vpermb` indices of [`prepare`]'s permutation, per 64-value chunk pair: byte
/// `8j + 4h + l` ← quant `32h + 8l + j` (plane j's activations of lane `2r + h`, group l).
static ACT_PERM: [u8; 64] = {
    let mut m = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        let (j, h, l) = (i / 8, (i / 4) % 2, i % 4);
        m[i] = (32 * h + 8 * l + j) as u8;
        i += 1;
    }
    m
};

/// A Q8_K block's quants permuted per chunk pair ([`ACT_PERM`]) and its chunks' `−43·Σ32`.
#[inline(always)]
unsafe fn prepare(blk: *const u8, dst: *mut u8) {
    let perm = load512(ACT_PERM.as_ptr());
    for p in 0..4 {
        let q = load512(blk.add(Q8K_QS + 64 * p));
        _mm512_storeu_si512(
            dst.add(64 * p) as *mut __m512i,
            _mm512_permutexvar_epi8(perm, q),
        );
    }
    let s32 = _mm256_madd_epi16(load(blk.add(Q8K_BSUMS)), _mm256_set1_epi16(1));
    let off = _mm256_mullo_epi32(s32, _mm256_set1_epi32(-OFFSET));
    _mm256_storeu_si256(dst.add(EX_OFFSETS) as *mut __m256i, off);
}

/// One packed block × T activation blocks: `isum` per token, lane = row. `ex[t]`: token t's
/// prepared bytes of this block.
#[inline(always)]
unsafe fn block_ints<const T: usize>(pb: *const u8, ex: [*const u8; T]) -> [__m256i; T] {
    let tb = &TABLES;
    let plane_tab: [[__m512i; 4]; 2] = std::array::from_fn(|h| {
        std::array::from_fn(|q| load512(tb.planes[h].as_ptr().add(64 * q)))
    });
    let ks = [
        load512(tb.ksigns.as_ptr()),
        load512(tb.ksigns.as_ptr().add(64)),
    ];
    let decode: [__m512i; 4] = std::array::from_fn(|m| _mm512_set1_epi64(DECODE[m] as i64));
    // Bit offsets of the 4 sign indices of each of a qword's two `aux` words.
    let sign_fields = _mm512_set1_epi64(0x352e_2720_150e_0700);
    let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
    let mut isum = [_mm512_setzero_si512(); T];
    for p in 0..4 {
        let idx = load512(pb.add(idx_at(p)));
        let aux = load512(pb.add(aux_at(p)));
        let top = _mm512_movepi8_mask(idx);
        let codes: [__m512i; 2] = std::array::from_fn(|h| {
            let t = &plane_tab[h];
            _mm512_mask_blend_epi8(
                top,
                _mm512_permutex2var_epi8(t[0], idx, t[1]),
                _mm512_permutex2var_epi8(t[2], idx, t[3]),
            )
        });
        let signs =
            _mm512_permutex2var_epi8(ks[0], _mm512_multishift_epi64_epi8(sign_fields, aux), ks[1]);
        // 2·ls + 1: aux bits 27..32 with bit 27 (a sign bit) replaced by 1.
        let odd = _mm512_or_si512(_mm512_srli_epi32::<27>(aux), _mm512_set1_epi32(1));
        let mut acc: [__m512i; T] = std::array::from_fn(|t| {
            _mm512_set1_epi64(std::ptr::read_unaligned(
                ex[t].add(EX_OFFSETS + 8 * p) as *const i64
            ))
        });
        for j in 0..8 {
            let u =
                _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(codes[j / 4], decode[j % 4]);
            let neg = _mm512_test_epi8_mask(signs, _mm512_set1_epi8(1 << j));
            let u = _mm512_mask_sub_epi8(u, neg, neg_base, u);
            for t in 0..T {
                let a = std::ptr::read_unaligned(ex[t].add(64 * p + 8 * j) as *const i64);
                acc[t] = _mm512_dpbusd_epi32(acc[t], u, _mm512_set1_epi64(a));
            }
        }
        for t in 0..T {
            isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(acc[t], odd));
        }
    }
    // Lanes 2r, 2r + 1 (row r's two chunks of each pair) → lane r.
    std::array::from_fn(|t| {
        let v = isum[t];
        _mm512_cvtepi64_epi32(_mm512_add_epi32(v, _mm512_srli_epi64::<32>(v)))
    })
}

struct IQ2XXS;
impl Layout for IQ2XXS {
    const BLOCK_BYTES: usize = IQ2XXSX8_BLOCK_BYTES;
    const ACT_BYTES: usize = Q8K_SIZE;
    const OFF_D: usize = iq2xxs::OFF_D;
    const OFF_DMIN: Option<usize> = None;
    const EXTRA: usize = EXTRA;
    #[inline(always)]
    unsafe fn prepare<I: Isa>(blk: *const u8, dst: *mut u8) {
        prepare(blk, dst)
    }
    #[inline(always)]
    unsafe fn ints<const T: usize, I: Isa>(
        pb: *const u8,
        _a: [*const u8; T],
        ex: [*const u8; T],
    ) -> ([__m256i; T], [__m256i; T]) {
        (block_ints::<T>(pb, ex), [_mm256_setzero_si256(); T])
    }
    #[inline(always)]
    unsafe fn d_a(blk: *const u8, _ex: *const u8) -> f32 {
        std::ptr::read_unaligned(blk as *const f32)
    }
    /// `d·0.125` (ggml's factor; exact).
    #[inline(always)]
    unsafe fn row_d(pb: *const u8) -> __m256 {
        _mm256_mul_ps(f16x8(pb.add(iq2xxs::OFF_D)), _mm256_set1_ps(iq2xxs::FACTOR))
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw,avx512vbmi,gfni")]
unsafe fn tile_vbmi<const T: usize>(
    nb: usize,
    ng: usize,
    w: *const u8,
    a: *const *const u8,
    out: *mut f32,
    ld: usize,
) {
    tile::<T, Vnni, IQ2XXS>(nb, ng, w, a, out, ld)
}

/// 1..=4 tokens per call (the tables, 4 tokens' chunk and block sums and the decoded
/// plane fill the 32 registers).
pub(super) static IQ2XXS_VBMI: [TileFn; 4] = [
    tile_vbmi::<1>,
    tile_vbmi::<2>,
    tile_vbmi::<3>,
    tile_vbmi::<4>,
];

/// Test hook: per-block integers.
///
/// # Safety
/// `w` holds `nb` packed blocks, `a` `nb` Q8_K blocks; the CPU has AVX-512 VBMI + VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vnni,avx512vl,avx512bw,avx512vbmi,gfni")]
pub(super) unsafe fn ints_vbmi(nb: usize, w: *const u8, a: *const u8) -> Vec<[[i32; 2]; ROWS]> {
    ints_with::<Vnni, IQ2XXS>(nb, w, a)
}
