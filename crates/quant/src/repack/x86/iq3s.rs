//! IQ3_Sx8 × Q8_K on AVX-512 VBMI + VNNI (see `repack::iq3s` for the layout): `iq3xxs`'s
//! tile with 9-bit indices, plain sign bits and an affine decode.
//!
//! - IQ3_S's grid bytes are the odd values 1..15 = `2c + 1`, so entry k is 4 three-bit
//!   codes c: those of values 0, 1 in one byte (`planes[0][k]`: bits 0..3, 3..6) and of
//!   values 2, 3 in another. Each table has 512 entries (8 registers): a lookup of a
//!   chunk's 64 indices is 4 `vpermi2b` and 3 blends on index bits 7 (the byte's top
//!   bit) and 8 (the row's `qh` byte, which is already the `kmovq` mask) ([`lookup512`]).
//! - Plane j is one `vgf2p8affineqb`: `15 + (2c + 1) = 0x10 | c << 1` is affine over
//!   GF(2) in c's 3 bits ([`DECODE`]).
//! - The signs: the chunk's 32 sign bytes are doubled by one `vpermb` so that byte b
//!   holds index b's sign byte; plane j's are bits j (even index) or 4 + j (odd), applied
//!   as a masked `30 − u`.
//! - One `vpdpbusd` per (plane, token) against `iq3xxs`'s permuted quants, each lane
//!   starting at `−15·Σ16` of its half chunk; `vpmulld` by the chunk's `2·ls + 1`.
//!
//! The integers are exactly the scalar definition's (`|15 ± v| ≤ 30`; per lane
//! |Σ16 ±v·a| ≤ 16·15·128, times 31, 8 chunks: < 2³¹), and the f32 steps are the shared
//! tile's, so results are bit-identical to `iq3s::dot_scalar` for any number of tokens.
//!
//! Prompts (≥ `Strip::MIN_TOKENS` = 12 tokens: [`Strips`]) decode each block once per
//! strip instead, in natural position order: per pair of indices 2k, 2k + 1 of a chunk one
//! `vpermi2b` of the two code vectors puts row r's code bytes of index 2k (values 0, 1 and
//! 2, 3) in bytes 0 and 2 of dword r, those of index 2k + 1 in dword 8 + r;
//! `vpmultishiftqb` moves value m's code to bits 0..3 of byte m, [`DECODE`]`[0]` gives
//! `15 + v`, and a `vpermb` of the sign bytes (byte `4r + k` in all 4 bytes of both
//! dwords) tested against bit m (index 2k) or 4 + m (index 2k + 1) the masked `30 − u`:
//! `u = w + 15` with `w = grid·sign`, each dword one strip lane's 4 values. Both 16-value
//! halves of a chunk take its scale `2·ls + 1`, so the sums are the tile's integers.

use super::codebook::{self, codebook_tiles, index_tables, Cb, Codebook};
use super::codebook::{add_scaled, load512, lookup512, rows_of_pairs};
use super::codebook::{signed_plane_dot, tables256};
use super::iq3xxs::{prepare_offset, EXTRA, EX_OFFSETS};
use super::strip::{store_d, store_scales, store_vector, Strip};
use super::*;
use crate::iq_grids::IQ3S_GRID;
use crate::repack::iq3s::{self, hi_bits, idx, pair_at, signs, IQ3SX8_BLOCK_BYTES, SCALES};

/// The weight offset: `15 ± v` is 0..=30.
const OFFSET: i32 = 15;

/// The code c of a grid byte `2c + 1`; another byte fails the build.
const fn code(b: u8) -> u8 {
    assert!(b % 2 == 1 && b < 16, "IQ3S_GRID byte outside 1, 3, …, 15");
    b / 2
}

/// 64-byte aligned tables, for whole-vector loads.
#[repr(C, align(64))]
struct Tables {
    /// `planes[h][k]`: the codes of grid entry k's values 2h (bits 0..3), 2h + 1 (3..6).
    planes: [[u8; 512]; 2],
}

static TABLES: Tables = {
    let mut planes = [[0u8; 512]; 2];
    let mut k = 0;
    while k < 512 {
        let mut j = 0;
        while j < 4 {
            let b = (IQ3S_GRID[k] >> (8 * j)) as u8;
            planes[j / 2][k] |= code(b) << (3 * (j % 2));
            j += 1;
        }
        k += 1;
    }
    Tables { planes }
};

/// `15 + (2c + 1)` = `0x10 | c << 1`: the affine constant.
const VALUE_BASE: u8 = 0x10;

/// `vgf2p8affineqb` matrices: `DECODE[m]` maps a code byte (c at bits 3m..3m + 3) to
/// `0x10 | c << 1` (output bit k = input bit 3m + k − 1 for k = 1..4, with the constant).
/// Row 7 − k of the matrix (byte 7 − k of the qword) selects the input bits of output
/// bit k.
const DECODE: [u64; 2] = {
    let mut d = [0u64; 2];
    let mut m = 0;
    while m < 2 {
        let mut k = 1;
        while k < 4 {
            d[m] |= (1u64 << (3 * m + k - 1)) << (8 * (7 - k));
            k += 1;
        }
        m += 1;
    }
    d
};

/// The `vpermb` indices that double a chunk's 32 sign bytes: byte b ← byte b / 2.
static SIGN_DUP: [u8; 64] = {
    let mut m = [0u8; 64];
    let mut b = 0;
    while b < 64 {
        m[b] = (b / 2) as u8;
        b += 1;
    }
    m
};

/// The codes of chunk h (0, 1) of the chunk pair at `o`: values 0, 1 and 2, 3 of each
/// index (byte `8r + i` = row r's index i), 4 `vpermi2b` and 3 blends per table.
#[inline(always)]
unsafe fn chunk_codes(o: *const u8, h: usize) -> [__m512i; 2] {
    let tb = &TABLES;
    let planes: [&[[__m512i; 4]; 2]; 2] = [tables256(&tb.planes[0]), tables256(&tb.planes[1])];
    let ix = load512(o.add(idx(h)));
    let top = _mm512_movepi8_mask(ix);
    let b8 = std::ptr::read_unaligned(o.add(hi_bits(h)) as *const u64);
    [
        lookup512(planes[0], ix, top, b8),
        lookup512(planes[1], ix, top, b8),
    ]
}

/// One packed block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
unsafe fn block_ints<const T: usize>(pb: *const u8, ex: [*const u8; T]) -> [__m256i; T] {
    let decode = [
        _mm512_set1_epi64(DECODE[0] as i64),
        _mm512_set1_epi64(DECODE[1] as i64),
    ];
    let dup = load512(SIGN_DUP.as_ptr());
    let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
    let mut isum = [_mm512_setzero_si512(); T];
    for p in 0..4 {
        let o = pb.add(pair_at(p));
        // Row r's scale byte in both of its lanes (2r, 2r + 1).
        let sc = _mm512_shuffle_epi32::<0b10_10_00_00>(_mm512_cvtepu8_epi64(_mm_loadl_epi64(
            o.add(SCALES) as *const __m128i,
        )));
        for h in 0..2 {
            let c = 2 * p + h;
            let codes = chunk_codes(o, h);
            let sg = _mm512_permutexvar_epi8(dup, _mm512_castsi256_si512(load(o.add(signs(h)))));
            // Chunk 2p + h's scale: nibble h of the byte.
            let ls = _mm512_and_si512(
                if h == 0 {
                    sc
                } else {
                    _mm512_srli_epi32::<4>(sc)
                },
                _mm512_set1_epi32(15),
            );
            let odd = _mm512_or_si512(_mm512_slli_epi32::<1>(ls), _mm512_set1_epi32(1));
            let mut acc: [__m512i; T] = std::array::from_fn(|t| {
                _mm512_set1_epi64(std::ptr::read_unaligned(
                    ex[t].add(EX_OFFSETS + 8 * c) as *const i64
                ))
            });
            for j in 0..4 {
                let u = _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(
                    codes[j / 2],
                    decode[j % 2],
                );
                // Index i's 4 signs are bits 4·(i % 2).. of its sign byte.
                let bit = _mm512_set1_epi16((((1u16 << (j + 4)) << 8) | (1u16 << j)) as i16);
                let neg = _mm512_test_epi8_mask(sg, bit);
                signed_plane_dot(&mut acc, u, neg, neg_base, ex, 32 * c + 8 * j);
            }
            add_scaled(&mut isum, &acc, odd);
        }
    }
    // Lanes 2r, 2r + 1 (row r's two halves) → lane r.
    std::array::from_fn(|t| rows_of_pairs(isum[t]))
}

pub(super) struct IQ3S;
impl Codebook for IQ3S {
    const BLOCK_BYTES: usize = IQ3SX8_BLOCK_BYTES;
    const OFF_D: usize = iq3s::OFF_D;
    const FACTOR: f32 = 1.0;
    const EXTRA: usize = EXTRA;
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        prepare_offset(blk, dst, OFFSET)
    }
    #[inline(always)]
    unsafe fn block_ints<const T: usize>(
        pb: *const u8,
        _a: [*const u8; T],
        ex: [*const u8; T],
    ) -> [__m256i; T] {
        block_ints::<T>(pb, ex)
    }
}

pub(super) static IQ3S_VBMI: [TileFn; 4] = codebook_tiles!(IQ3S);

/// The `vpermi2b` indices of index pair k (indices 2k, 2k + 1) of a chunk, per k: byte
/// `4L + m` (dword L: index `2k + L / 8` of row `L % 8`) ← that index's code byte of
/// values 0, 1 (m < 2: the first vector) or 2, 3 (m ≥ 2: the second).
static PAIR_CODES: [[u8; 64]; 4] = index_tables!(4, |k, b| {
    let (l, m) = (b / 4, b % 4);
    8 * (l % 8) + 2 * k + l / 8 + 64 * (m / 2)
});

/// The `vpermb` indices of index pair k's sign bytes: every byte of dword L ← byte
/// `4·(L % 8) + k` of the chunk's 32 (row `L % 8`'s signs of values `8k..8k + 8`).
static PAIR_SIGNS: [[u8; 64]; 4] = index_tables!(4, |k, b| 4 * ((b / 4) % 8) + k);

/// The `vpmultishiftqb` bit offsets of value m's code in a qword of two dwords whose
/// bytes 0 and 2 are an index's code bytes: `16·(m / 2) + 3·(m % 2)` (+ 32 in the second
/// dword).
const VALUE_FIELDS: u64 = 0x3330_2320_1310_0300;

/// The 16 lanes' values `u = grid·sign + 15` (0..=30) of index pair k of chunk `codes`,
/// `sg` its 32 sign bytes: lanes 0..8 index 2k of rows 0..8, lanes 8..16 index 2k + 1.
#[inline(always)]
unsafe fn pair_values(codes: &[__m512i; 2], sg: __m512i, k: usize) -> __m512i {
    let x = _mm512_permutex2var_epi8(codes[0], load512(PAIR_CODES[k].as_ptr()), codes[1]);
    let fields = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(VALUE_FIELDS as i64), x);
    let u = _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(
        fields,
        _mm512_set1_epi64(DECODE[0] as i64),
    );
    let signs = _mm512_permutexvar_epi8(load512(PAIR_SIGNS[k].as_ptr()), sg);
    // Value m's sign: bit m of the byte for index 2k (lanes 0..8), bit 4 + m for 2k + 1.
    let bits = _mm512_inserti64x4::<1>(
        _mm512_set1_epi32(0x0804_0201),
        _mm256_set1_epi32(0x8040_2010_u32 as i32),
    );
    let neg = _mm512_test_epi8_mask(signs, bits);
    _mm512_mask_sub_epi8(u, neg, _mm512_set1_epi8(2 * OFFSET as i8), u)
}

/// The decoded strips of IQ3_Sx8 (`x86::strip`): the weights as `grid·sign + 15`, both
/// 16-value halves of a chunk with its `2·ls + 1`, `d`. Ranges in the strip tile:
/// |Σ16 u·a| ≤ 16·30·128 on the way, the half chunk's |Σ16 w·a| ≤ 16·15·128 times ≤ 31,
/// 16 halves: < 2²⁴ (i32 exact).
pub(super) struct Strips;

impl Strip for Strips {
    const BLOCK_BYTES: usize = IQ3SX8_BLOCK_BYTES;
    const OFFSET: i32 = OFFSET;
    /// 8 tokens 172–179 vs the tile's 175–180 GFLOP/s, 12: 196–207 vs 175–182.
    const MIN_TOKENS: usize = 12;
    fn tiles() -> &'static [TileFn] {
        &IQ3S_VBMI
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        for p in 0..4 {
            let (oa, ob) = (pa.add(pair_at(p)), pb.add(pair_at(p)));
            let (sca, scb) = (scale_bytes(oa), scale_bytes(ob));
            for h in 0..2 {
                let c = 2 * p + h;
                let (ca, cb) = (chunk_codes(oa, h), chunk_codes(ob, h));
                let (sa, sb) = (sign_bytes(oa, h), sign_bytes(ob, h));
                for k in 0..4 {
                    let (a, b) = (pair_values(&ca, sa, k), pair_values(&cb, sb, k));
                    store_pair(dst, 8 * c + 2 * k, a, b);
                }
                let (a, b) = (chunk_scales(sca, h), chunk_scales(scb, h));
                store_scales(dst, 2 * c, a, b);
                store_scales(dst, 2 * c + 1, a, b);
            }
        }
        store_d(dst, Cb::<IQ3S>::row_d(pa), Cb::<IQ3S>::row_d(pb));
    }
}

// The decode helpers are functions, not closures: a closure is compiled without its
// caller's target features (main's Q3_K strip ran its intrinsics as calls that way).

/// Decoded vectors v and v + 1 from two groups' [`pair_values`]: lanes 0..8 of a and b
/// (index 2k of both groups' rows), then lanes 8..16 (index 2k + 1).
#[inline(always)]
unsafe fn store_pair(dst: *mut u8, v: usize, a: __m512i, b: __m512i) {
    store_vector(dst, v, _mm512_shuffle_i64x2::<0b01_00_01_00>(a, b));
    store_vector(dst, v + 1, _mm512_shuffle_i64x2::<0b11_10_11_10>(a, b));
}

/// Chunk h's 32 sign bytes of the chunk pair at `o` (in the low half).
#[inline(always)]
unsafe fn sign_bytes(o: *const u8, h: usize) -> __m512i {
    _mm512_castsi256_si512(load(o.add(signs(h))))
}

/// The 8 rows' scale bytes of the chunk pair at `o`, zero-extended (lane r).
#[inline(always)]
unsafe fn scale_bytes(o: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(o.add(SCALES) as *const __m128i))
}

/// Chunk h's `2·ls + 1` (nibble h of the rows' [`scale_bytes`] `sc`).
#[inline(always)]
unsafe fn chunk_scales(sc: __m256i, h: usize) -> __m256i {
    let shift = _mm_cvtsi32_si128(4 * h as i32);
    let ls = _mm256_and_si256(_mm256_srl_epi32(sc, shift), _mm256_set1_epi32(15));
    _mm256_or_si256(_mm256_slli_epi32::<1>(ls), _mm256_set1_epi32(1))
}
