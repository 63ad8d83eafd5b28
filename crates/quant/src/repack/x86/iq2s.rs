//! IQ2_Sx8 × Q8_K on AVX-512 VBMI + VNNI (see `repack::iq2s` for the layout): the
//! decode of `iq2xxs`'s tile for 10-bit grid indices and a scale per 16 values.
//!
//! - IQ2_S's grid takes the same 3 byte values as IQ2_XXS's, so entry k is again two bytes
//!   of 2-bit codes (values 0..4, 4..8; [`plane_codes`]), in two 1024-byte tables of 16
//!   registers each. A lookup of a portion's 64 indices is 8 `vpermi2b` (128 entries each)
//!   and 7 blends on the index bits 7 (the byte's top bit), 8 and 9 (stored as `kmovq`
//!   masks) per table ([`lookup1024`]).
//! - `vpunpck{l,h}wd` of the two looked-up vectors puts one 16-value sub-block (its two
//!   groups, values j and 4 + j) in each dword, so that a lane's sum has one scale; the
//!   plane decode (`vgf2p8affineqb`, [`DECODE`]) then reads the same code bits in all 4
//!   bytes. The sign bytes are unpacked the same way, plane j's signs are bits j (bytes
//!   0, 1 of a dword) and 4 + j (bytes 2, 3), applied as `iq2xxs`'s masked `86 − u`.
//! - One `vpdpbusd` per (plane, token) against the token's quants permuted once per
//!   block, each lane starting at its sub-block's `−43·Σ16`; `vpmulld` by the lane's
//!   `2·ls + 1` (the scale bytes zero-extended to dwords, one nibble per unpack half).
//!
//! Per 64 weights: the 4 plane instructions of `iq2xxs` plus ~4 of lookups (the tables
//! are 4× IQ2_XXS's) and ~0.5 of signs and scales.
//!
//! The integers are exactly the scalar definition's (`|43 ± v| ≤ 86`; per lane
//! |Σ16 ±v·a| ≤ 16·43·128, times 31, 16 sub-blocks: < 2³¹), and the f32 steps are the
//! shared tile's, so results are bit-identical to `iq2s::dot_scalar` for any number of
//! tokens.
//!
//! Prompts (≥ `Strip::MIN_TOKENS` = 12 tokens, both 16-value-scale IQ2 layouts:
//! [`Iq2Strips`]) decode each block once per strip instead, in natural position order: two
//! `vpermi2b` per portion gather each row's code bytes (slots `slot(r, g)` of X0 and X1)
//! into qword r of the half g / 4, per group g `vpmultishiftqb` moves value j's code to
//! bits 0..2 of byte j, the plane decode's affine map (matrix [`DECODE`]`[0]`) gives `43 + v`,
//! and a `vpermb` of the sign bytes (the slot's byte in all 8 bytes of qword r) tested
//! against bit j of byte j gives the masked `86 − u`: `u = w + 43` with `w = grid·sign`,
//! qword r = row r's 8 values (`strip::store_octets`). The scales are the same odd
//! `2·ls + 1`, so each sub-block's `Σ_s scale·Σ w·a` is the tile's integer.

use super::codebook::{self, codebook_tiles, index_tables, Cb, Codebook};
use super::codebook::{add_scaled, load512, lookup1024, permute_quants};
use super::codebook::{rows_of_pairs, signed_plane_dot, tables256};
use super::iq2xxs::{plane_codes, DECODE, OFFSET, VALUE_BASE};
use super::strip::{store_d, store_octets, store_scales, Strip};
use super::*;
use crate::iq_grids::IQ2S_GRID;
use crate::repack::iq2s::{self, idx_at, slot, HI_BITS, IQ2SX8_BLOCK_BYTES, SCALES, SIGNS};

/// 64-byte aligned tables, for whole-vector loads.
#[repr(C, align(64))]
struct Tables {
    /// `planes[h][k]`: the codes of grid entry k's values 4h..4h+4.
    planes: [[u8; 1024]; 2],
}

static TABLES: Tables = Tables {
    planes: plane_codes(&IQ2S_GRID),
};

/// Bytes [`prepare_subblocks`] writes per activation block: the 256 permuted quants, then
/// the 16 sub-block offsets `−43·Σ16` (i32).
pub(super) const EXTRA: usize = 256 + 64;
const EX_OFFSETS: usize = 256;

/// The `vpermb` indices of the permutation of a portion's 64 quants: byte
/// `32h + 8j + 4s + b` ← quant `8g + j + 4·(b / 2)` with group `g = 2·(2h + s) + b % 2`
/// (plane j's activations of unpack half h, dword `2r + s`, byte b).
static ACT_PERM: [u8; 64] = {
    let mut m = [0u8; 64];
    let mut o = 0;
    while o < 64 {
        let (h, j, s, b) = (o / 32, (o / 8) % 4, (o / 4) % 2, o % 4);
        let g = 2 * (2 * h + s) + b % 2;
        m[o] = (8 * g + j + 4 * (b / 2)) as u8;
        o += 1;
    }
    m
};

/// A Q8_K block's quants permuted per portion ([`ACT_PERM`]) and its sub-blocks'
/// `−43·Σ16` (the Q8_K `bsums`): the prepared bytes of the 16-value-scale IQ2 layouts.
#[inline(always)]
pub(super) unsafe fn prepare_subblocks(blk: *const u8, dst: *mut u8) {
    permute_quants(blk, dst, &ACT_PERM);
    let s16 = _mm512_cvtepi16_epi32(load(blk.add(Q8K_BSUMS)));
    let off = _mm512_mullo_epi32(s16, _mm512_set1_epi32(-OFFSET));
    _mm512_storeu_si512(dst.add(EX_OFFSETS) as *mut __m512i, off);
}

/// Portion p of the 16-value-scale IQ2 layouts into `isum`: `x` the looked-up codes of
/// its 64 slots (values 0..4, 4..8), `signs` their sign bytes, `scales` the portion's 16
/// scale bytes.
#[inline(always)]
pub(super) unsafe fn portion_ints<const T: usize>(
    isum: &mut [__m512i; T],
    x: [__m512i; 2],
    signs: __m512i,
    scales: *const u8,
    ex: [*const u8; T],
    p: usize,
) {
    let decode: [__m512i; 4] = std::array::from_fn(|m| _mm512_set1_epi64(DECODE[m] as i64));
    let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
    // One sub-block per dword: bytes 0, 1 its two groups' values j, bytes 2, 3 values 4 + j.
    let y = [
        _mm512_unpacklo_epi16(x[0], x[1]),
        _mm512_unpackhi_epi16(x[0], x[1]),
    ];
    let sy = [
        _mm512_unpacklo_epi16(signs, signs),
        _mm512_unpackhi_epi16(signs, signs),
    ];
    let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(scales as *const __m128i));
    let one = _mm512_set1_epi32(1);
    let odd = [
        _mm512_or_si512(
            _mm512_slli_epi32::<1>(_mm512_and_si512(sc, _mm512_set1_epi32(15))),
            one,
        ),
        _mm512_or_si512(_mm512_slli_epi32::<1>(_mm512_srli_epi32::<4>(sc)), one),
    ];
    for h in 0..2 {
        let mut acc: [__m512i; T] = std::array::from_fn(|t| {
            _mm512_set1_epi64(std::ptr::read_unaligned(
                ex[t].add(EX_OFFSETS + 8 * (2 * p + h)) as *const i64,
            ))
        });
        for j in 0..4 {
            let u = _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(y[h], decode[j]);
            let bits = (0x0101u32 << j) | (0x0101_0000u32 << (4 + j));
            let neg = _mm512_test_epi8_mask(sy[h], _mm512_set1_epi32(bits as i32));
            signed_plane_dot(&mut acc, u, neg, neg_base, ex, 64 * p + 32 * h + 8 * j);
        }
        add_scaled(isum, &acc, odd[h]);
    }
}

/// A 64-value portion of the 16-value-scale IQ2 layouts, decoded to codes: what
/// [`portion_ints`] and the strips' [`group_values`] read.
pub(super) struct Portion {
    /// The looked-up codes of the 64 slots: values 0..4, 4..8 (code j at bits 2j..2j + 2).
    pub(super) x: [__m512i; 2],
    /// The slots' sign bytes (bit j: value j negative).
    pub(super) signs: __m512i,
    /// The portion's 16 scale bytes (see `repack::iq2s`).
    pub(super) scales: *const u8,
}

/// The block code of a 16-value-scale IQ2 layout (IQ2_S, IQ2_XS): its portions' codes.
pub(super) trait Portions: Codebook {
    /// The layout's tiles (1..=4 tokens).
    const TILES: &'static [TileFn; 4];
    /// Portion p (0..4) of packed block `pb`.
    unsafe fn portion(pb: *const u8, p: usize) -> Portion;
}

/// One packed block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
pub(super) unsafe fn block_ints<P: Portions, const T: usize>(
    pb: *const u8,
    ex: [*const u8; T],
) -> [__m256i; T] {
    let mut isum = [_mm512_setzero_si512(); T];
    for p in 0..4 {
        let Portion { x, signs, scales } = P::portion(pb, p);
        portion_ints(&mut isum, x, signs, scales, ex, p);
    }
    // Lanes 2r, 2r + 1 (two sub-blocks of row r) → lane r.
    std::array::from_fn(|t| rows_of_pairs(isum[t]))
}

/// The `vpermi2b` indices that gather a portion's code bytes by row, per half q (groups
/// 4q..4q + 4): bytes `8r + 2e`, `8r + 2e + 1` ← X0, X1 at slot `slot(r, 4q + e)`.
static ROW_CODES: [[u8; 64]; 2] = index_tables!(2, |q, b| {
    let (r, e) = (b / 8, (b % 8) / 2);
    slot(r, 4 * q + e) + 64 * (b % 2)
});

/// The `vpermb` indices of group g's sign bytes: all 8 bytes of qword r ← slot `slot(r, g)`.
static GROUP_SIGNS: [[u8; 64]; 8] = index_tables!(8, |g, b| slot(b / 8, g));

/// The `vpmultishiftqb` bit offsets of value j's code in a qword whose bytes 0, 1 are a
/// slot's code bytes: `2j` (j < 4), `8 + 2(j − 4)` (+ 16e for the slot at bytes 2e, 2e + 1).
const VALUE_FIELDS: u64 = 0x0e0c_0a08_0604_0200;

/// Bit j in byte j of each qword (value j's sign bit of a broadcast sign byte).
const SIGN_BITS: u64 = 0x8040_2010_0804_0201;

/// A portion's code bytes by row ([`ROW_CODES`]): qword r of half q = row r's code bytes of
/// groups 4q..4q + 4.
#[inline(always)]
unsafe fn row_codes(q: &Portion) -> [__m512i; 2] {
    std::array::from_fn(|h| {
        _mm512_permutex2var_epi8(q.x[0], load512(ROW_CODES[h].as_ptr()), q.x[1])
    })
}

/// The 8 rows' values `u = grid·sign + 43` (0..=86) of group g of portion `q` (`codes`:
/// its [`row_codes`]), qword r = row r's 8 values in position order.
#[inline(always)]
unsafe fn group_values(q: &Portion, codes: &[__m512i; 2], g: usize) -> __m512i {
    // Every code byte is < 64 bits into the qword: 16·3 + 14 at most.
    let at = VALUE_FIELDS + 0x1010_1010_1010_1010 * (g % 4) as u64;
    let fields = _mm512_multishift_epi64_epi8(_mm512_set1_epi64(at as i64), codes[g / 4]);
    let u = _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(
        fields,
        _mm512_set1_epi64(DECODE[0] as i64),
    );
    let signs = _mm512_permutexvar_epi8(load512(GROUP_SIGNS[g].as_ptr()), q.signs);
    let neg = _mm512_test_epi8_mask(signs, _mm512_set1_epi64(SIGN_BITS as i64));
    _mm512_mask_sub_epi8(u, neg, _mm512_set1_epi8(2 * OFFSET as i8), u)
}

/// The 8 rows' `2·ls + 1` of sub-block s (0..4) of a portion (lane r), from its scale
/// bytes: the nibble `s / 2` of byte `2r + s % 2`.
#[inline(always)]
unsafe fn subblock_scales(scales: *const u8, s: usize) -> __m256i {
    // Lane r = bytes 2r, 2r + 1 as a little-endian word.
    let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(scales as *const __m128i));
    let shift = _mm_cvtsi32_si128((8 * (s % 2) + 4 * (s / 2)) as i32);
    let ls = _mm256_and_si256(_mm256_srl_epi32(w, shift), _mm256_set1_epi32(15));
    _mm256_or_si256(_mm256_slli_epi32::<1>(ls), _mm256_set1_epi32(1))
}

/// The decoded strips of 16-value-scale IQ2 layout `P` (`x86::strip`): the weights as
/// `grid·sign + 43`, the odd scales per 16 values, `d·0.125`. Ranges in the strip tile:
/// |Σ16 u·a| ≤ 16·86·128 and |−43·Σ16 a| ≤ 16·43·128 on the way, the sub-block's
/// |Σ16 w·a| ≤ 16·43·128 times ≤ 31, 16 sub-blocks: < 2²⁶ (i32 exact).
pub(super) struct Iq2Strips<P>(std::marker::PhantomData<P>);

impl<P: Portions> Strip for Iq2Strips<P> {
    const BLOCK_BYTES: usize = P::BLOCK_BYTES;
    const OFFSET: i32 = OFFSET;
    /// 8 tokens: IQ2_S 141–149 vs the tile's 124–146 GFLOP/s, IQ2_XS 166–172 vs 168–197;
    /// 12: IQ2_S 172–180 vs 127–145, IQ2_XS 205–206 vs 197.
    const MIN_TOKENS: usize = 12;
    fn tiles() -> &'static [TileFn] {
        P::TILES
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        for p in 0..4 {
            let (qa, qb) = (P::portion(pa, p), P::portion(pb, p));
            let (ca, cb) = (row_codes(&qa), row_codes(&qb));
            for g in 0..8 {
                let (a, b) = (group_values(&qa, &ca, g), group_values(&qb, &cb, g));
                store_octets(dst, 8 * p + g, a, b);
            }
            for s in 0..4 {
                let (sa, sb) = (subblock_scales(qa.scales, s), subblock_scales(qb.scales, s));
                store_scales(dst, 4 * p + s, sa, sb);
            }
        }
        store_d(dst, Cb::<P>::row_d(pa), Cb::<P>::row_d(pb));
    }
}

pub(super) struct IQ2S;
impl Codebook for IQ2S {
    const BLOCK_BYTES: usize = IQ2SX8_BLOCK_BYTES;
    const OFF_D: usize = iq2s::OFF_D;
    const FACTOR: f32 = iq2s::FACTOR;
    const EXTRA: usize = EXTRA;
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        prepare_subblocks(blk, dst)
    }
    #[inline(always)]
    unsafe fn block_ints<const T: usize>(
        pb: *const u8,
        _a: [*const u8; T],
        ex: [*const u8; T],
    ) -> [__m256i; T] {
        block_ints::<Self, T>(pb, ex)
    }
}

impl Portions for IQ2S {
    const TILES: &'static [TileFn; 4] = &IQ2S_VBMI;
    /// The 64 indices' codes: 8 `vpermi2b` and 7 blends per table ([`lookup1024`]).
    #[inline(always)]
    unsafe fn portion(pb: *const u8, p: usize) -> Portion {
        let tb = &TABLES;
        let planes: [&[[__m512i; 4]; 4]; 2] = [tables256(&tb.planes[0]), tables256(&tb.planes[1])];
        let o = pb.add(idx_at(p));
        let idx = load512(o);
        let top = _mm512_movepi8_mask(idx);
        let hi = (
            std::ptr::read_unaligned(o.add(HI_BITS) as *const u64),
            std::ptr::read_unaligned(o.add(HI_BITS + 8) as *const u64),
        );
        Portion {
            x: [
                lookup1024(planes[0], idx, top, hi),
                lookup1024(planes[1], idx, top, hi),
            ],
            signs: load512(o.add(SIGNS)),
            scales: o.add(SCALES),
        }
    }
}

pub(super) static IQ2S_VBMI: [TileFn; 4] = codebook_tiles!(IQ2S);
