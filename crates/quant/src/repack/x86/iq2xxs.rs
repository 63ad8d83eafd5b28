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
//!   `vgf2p8affineqb` (GFNI): a bit matrix that maps the code in bits 2(j % 4).. of the
//!   byte to `grid value + 43` (any map of the 3 codes is affine over GF(2) in their 2
//!   bits, see [`DECODE`]); it replaced a shift and a `vpermb` (+24%, bench/RESULTS.md).
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
//! Per 64 weights that is 4 vector instructions (affine, `vptestmb`, masked subtract,
//! `vpdpbusd`) plus ~1.5 of shared lookups, signs and scales, against ~2 per 64 for the
//! 4-bit layouts: the decode, not the memory, still bounds a cold GEMV on 2 Zen 4 cores.
//!
//! The integers are exactly the scalar definition's (`|43 ± v| ≤ 86`, |Σ32| ≤ 32·86·128,
//! times 31, 8 chunks: < 2³¹), and the f32 steps are the shared tile's, so results are
//! bit-identical to `iq2xxs::dot_scalar` for any number of tokens.

use super::codebook::{self, codebook_tiles, Codebook};
use super::codebook::{add_scaled, load512, lookup256, odd_scales, permute_quants};
use super::codebook::{index_tables, rows_of_pairs, signed_plane_dot, table128, table256, Cb};
use super::strip::{self, store_scale_vector, store_vector, Strip};
use super::*;
use crate::iq_grids::{IQ2XXS_GRID, KSIGNS};
use crate::repack::iq2xxs::{self, aux_at, idx_at, IQ2XXSX8_BLOCK_BYTES};

/// The 3 byte values of IQ2_XXS's grid, code 0..3.
const GRID_VALUES: [u8; 3] = [0x08, 0x19, 0x2b];

/// The weight offset: `43 ± v` is 0..=86, unsigned for `vpdpbusd`.
pub(super) const OFFSET: i32 = 43;

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

static TABLES: Tables = Tables {
    planes: plane_codes(&IQ2XXS_GRID),
    ksigns: KSIGNS,
};

/// The 2-bit codes of an 8-value grid over [`GRID_VALUES`] (IQ2_XXS, IQ2_XS, IQ2_S):
/// `[h][k]` holds entry k's values 4h..4h+4, value j's code at bits 2j..2j+2.
pub(super) const fn plane_codes<const N: usize>(grid: &[u64; N]) -> [[u8; N]; 2] {
    let mut planes = [[0u8; N]; 2];
    let mut k = 0;
    while k < N {
        let mut j = 0;
        while j < 8 {
            let b = (grid[k] >> (8 * j)) as u8;
            planes[j / 4][k] |= code(b) << (2 * (j % 4));
            j += 1;
        }
        k += 1;
    }
    planes
}

/// `grid value + 43` of code c (0..3).
const fn offset_value(c: usize) -> u8 {
    GRID_VALUES[c] + OFFSET as u8
}

/// The decoded value of code 0: the affine constant of [`DECODE`].
pub(super) const VALUE_BASE: u8 = offset_value(0);

/// `vgf2p8affineqb` matrices: `DECODE[m]` maps a code byte (code of plane m in bits 2m,
/// 2m + 1) to `offset_value(code)` as `VALUE_BASE ⊕ c₀·A₀ ⊕ c₁·A₁` over GF(2), with
/// `A₀ = v(0) ⊕ v(1)`, `A₁ = v(0) ⊕ v(2)`: exact for the codes 0, 1, 2 that occur (any
/// map of 3 points is affine in the 2 code bits), and the other bits of the byte ignored.
/// Row 7 − k of the matrix (byte 7 − k of the qword) selects the input bits of output
/// bit k.
pub(super) const DECODE: [u64; 4] = {
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
    permute_quants(blk, dst, &ACT_PERM);
    let s32 = _mm256_madd_epi16(load(blk.add(Q8K_BSUMS)), _mm256_set1_epi16(1));
    let off = _mm256_mullo_epi32(s32, _mm256_set1_epi32(-OFFSET));
    _mm256_storeu_si256(dst.add(EX_OFFSETS) as *mut __m256i, off);
}

/// One packed block × T activation blocks: `isum` per token, lane = row. `ex[t]`: token t's
/// prepared bytes of this block.
#[inline(always)]
unsafe fn block_ints<const T: usize>(pb: *const u8, ex: [*const u8; T]) -> [__m256i; T] {
    let tb = &TABLES;
    let plane_tab: [[__m512i; 4]; 2] = std::array::from_fn(|h| table256(&tb.planes[h]));
    let ks = table128(&tb.ksigns);
    let decode: [__m512i; 4] = std::array::from_fn(|m| _mm512_set1_epi64(DECODE[m] as i64));
    // Bit offsets of the 4 sign indices of each of a qword's two `aux` words.
    let sign_fields = _mm512_set1_epi64(0x352e_2720_150e_0700);
    let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
    let mut isum = [_mm512_setzero_si512(); T];
    for p in 0..4 {
        let idx = load512(pb.add(idx_at(p)));
        let aux = load512(pb.add(aux_at(p)));
        let top = _mm512_movepi8_mask(idx);
        let codes: [__m512i; 2] = std::array::from_fn(|h| lookup256(&plane_tab[h], idx, top));
        let signs =
            _mm512_permutex2var_epi8(ks[0], _mm512_multishift_epi64_epi8(sign_fields, aux), ks[1]);
        let odd = odd_scales(aux);
        let mut acc: [__m512i; T] = std::array::from_fn(|t| {
            _mm512_set1_epi64(std::ptr::read_unaligned(
                ex[t].add(EX_OFFSETS + 8 * p) as *const i64
            ))
        });
        for j in 0..8 {
            let u =
                _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(codes[j / 4], decode[j % 4]);
            let neg = _mm512_test_epi8_mask(signs, _mm512_set1_epi8(1 << j));
            signed_plane_dot(&mut acc, u, neg, neg_base, ex, 64 * p + 8 * j);
        }
        add_scaled(&mut isum, &acc, odd);
    }
    // Lanes 2r, 2r + 1 (row r's two chunks of each pair) → lane r.
    std::array::from_fn(|t| rows_of_pairs(isum[t]))
}

pub(super) struct IQ2XXS;
impl Codebook for IQ2XXS {
    const BLOCK_BYTES: usize = IQ2XXSX8_BLOCK_BYTES;
    const OFF_D: usize = iq2xxs::OFF_D;
    const FACTOR: f32 = iq2xxs::FACTOR;
    const EXTRA: usize = EXTRA;
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        prepare(blk, dst)
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

pub(super) static IQ2XXS_VBMI: [TileFn; 4] = codebook_tiles!(IQ2XXS);

// ---- The decoded strips (`x86::strip`): calls of ≥ 16 tokens ----
//
// A strip vector holds 4 positions of the pair's 16 rows (dword i = row i: rows 0..8 of
// the first group, 8..16 of the second); the tile's lookups give bytes per (row, chunk
// half, group) instead. So the grid indices (and sign bytes) of both groups are first
// gathered with one `vpermi2b` into "strip qwords": qword Q holds only what the strip's
// qword Q (its rows ρ = 2(Q % 4) + d, d = 0, 1, of the first group for Q < 4, else of the
// second) needs. Then each strip vector is one `vpmultishiftqb` (each byte takes its
// value's code out of its qword), the decode (here `vgf2p8affineqb`), one
// `vpshufbitqmb` (each byte's sign bit out of its qword) and a masked `2·off − u`.

/// `vpermi2b` indices (first group's vector, then the second's) that gather bytes
/// `8ρ + 4s + k` (IQ2_XXS: row ρ's group k of chunk 2p + s) of the 16 rows into strip
/// qwords: qword Q, byte `2k + d`.
static GATHER: [[u8; 64]; 2] = index_tables!(2, |s, o| {
    let (q, k, d) = (o / 8, (o % 8) / 2, o % 2);
    64 * (q / 4) + 8 * (2 * (q % 4) + d) + 4 * s + k
});

/// `vpmultishiftqb` / `vpshufbitqmb` controls (the same for every qword): byte `4d + kk`
/// of qword Q takes the bits at `f(d, kk)` of the strip qword (its rows' dword d,
/// position kk of the 4).
pub(super) const fn strip_ctrl(f: [[u8; 4]; 2]) -> i64 {
    let mut c = 0u64;
    let mut i = 0;
    while i < 8 {
        c |= (f[i / 4][i % 4] as u64) << (8 * i);
        i += 1;
    }
    c as i64
}

/// Code selectors of group k, half e (values 4e..4e + 4): bits `2kk` of byte `2k + d` of
/// the codes of plane e.
const CODE_CTRL: [i64; 4] = {
    let mut c = [0i64; 4];
    let mut k = 0;
    while k < 4 {
        let mut f = [[0u8; 4]; 2];
        let mut i = 0;
        while i < 8 {
            f[i / 4][i % 4] = (8 * (2 * k + i / 4) + 2 * (i % 4)) as u8;
            i += 1;
        }
        c[k] = strip_ctrl(f);
        k += 1;
    }
    c
};

/// Sign selectors of group k, half e: bit `4e + kk` of sign byte `2k + d`.
const SIGN_CTRL: [[i64; 2]; 4] = {
    let mut c = [[0i64; 2]; 4];
    let mut k = 0;
    while k < 4 {
        let mut e = 0;
        while e < 2 {
            let mut f = [[0u8; 4]; 2];
            let mut i = 0;
            while i < 8 {
                f[i / 4][i % 4] = (8 * (2 * k + i / 4) + 4 * e + i % 4) as u8;
                i += 1;
            }
            c[k][e] = strip_ctrl(f);
            e += 1;
        }
        k += 1;
    }
    c
};

/// The `KSIGNS` bytes of the 7-bit sign fields of `aux` (qword r = row r's `aux` words
/// of chunks 2p, 2p + 1): byte `8r + 4h + l` = field l (bits 7l..) of chunk 2p + h
/// (IQ2_XXSx8 and IQ3_XXSx8 alike). `ks`: the 128-byte table as two vectors.
#[inline(always)]
pub(super) unsafe fn sign_bytes(ks: &[__m512i; 2], aux: __m512i) -> __m512i {
    let fields = _mm512_set1_epi64(0x352e_2720_150e_0700);
    _mm512_permutex2var_epi8(ks[0], _mm512_multishift_epi64_epi8(fields, aux), ks[1])
}

/// Strip values `u` (`off + v`), made `2·off − u` (`neg_base` = 2·off: `off − v`) where the
/// bit of `signs`' qword that `sel`'s byte names is set (`vpshufbitqmb`).
#[inline(always)]
pub(super) unsafe fn strip_signed(
    u: __m512i,
    signs: __m512i,
    sel: __m512i,
    neg_base: __m512i,
) -> __m512i {
    let neg = _mm512_bitshuffle_epi64_mask(signs, sel);
    _mm512_mask_sub_epi8(u, neg, neg_base, u)
}

/// The 16 rows' `2·ls + 1` of chunk 2p + h as sub-block scales s, s + 1 (s = 2(2p + h)),
/// from both groups' `aux` vectors of chunk pair p (dword `2r + h` = row r's `aux` of
/// chunk 2p + h: IQ2_XXSx8 and IQ3_XXSx8 alike).
#[inline(always)]
pub(super) unsafe fn store_chunk_scales(
    dst: *mut u8,
    s: usize,
    aux_a: __m512i,
    aux_b: __m512i,
    h: usize,
) {
    let h = h as i32;
    let idx = _mm512_add_epi32(
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30),
        _mm512_set1_epi32(h),
    );
    let odd = _mm512_permutex2var_epi32(odd_scales(aux_a), idx, odd_scales(aux_b));
    store_scale_vector(dst, s, odd);
    store_scale_vector(dst, s + 1, odd);
}

/// IQ2_XXSx8 decodes into strips as `w + 43` for `w = grid·sign`, one scale `2·ls + 1`
/// per chunk (its two sub-blocks), `d·0.125`. Ranges: |Σ16 w·a| ≤ 16·43·128, times 31,
/// 16 sub-blocks: < 2²⁶ (i32 exact).
impl Strip for IQ2XXS {
    const BLOCK_BYTES: usize = IQ2XXSX8_BLOCK_BYTES;
    const OFFSET: i32 = OFFSET;
    /// 12 tokens 229–246 vs the tile's 242–244 GFLOP/s, 16: 255–260 vs 240–243.
    const MIN_TOKENS: usize = 16;
    fn tiles() -> &'static [TileFn] {
        &IQ2XXS_VBMI
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        let tb = &TABLES;
        // (No closures: they would be compiled without the target features.)
        let plane_tab = [table256(&tb.planes[0]), table256(&tb.planes[1])];
        let ks = table128(&tb.ksigns);
        let gather = [load512(GATHER[0].as_ptr()), load512(GATHER[1].as_ptr())];
        let decode = _mm512_set1_epi64(DECODE[0] as i64);
        let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
        for p in 0..4 {
            let (ia, ib) = (load512(pa.add(idx_at(p))), load512(pb.add(idx_at(p))));
            let (aa, ab) = (load512(pa.add(aux_at(p))), load512(pb.add(aux_at(p))));
            // Byte `8r + 4h + l`: row r's sign byte of group l of chunk 2p + h.
            let (sa, sb) = (sign_bytes(&ks, aa), sign_bytes(&ks, ab));
            for (s, gather) in gather.iter().enumerate() {
                let x = _mm512_permutex2var_epi8(ia, *gather, ib);
                let top = _mm512_movepi8_mask(x);
                let codes = [
                    lookup256(&plane_tab[0], x, top),
                    lookup256(&plane_tab[1], x, top),
                ];
                let sg = _mm512_permutex2var_epi8(sa, *gather, sb);
                for k in 0..4 {
                    let sel = _mm512_set1_epi64(CODE_CTRL[k]);
                    for (e, codes) in codes.iter().enumerate() {
                        let c = _mm512_multishift_epi64_epi8(sel, *codes);
                        let u = _mm512_gf2p8affine_epi64_epi8::<{ VALUE_BASE as i32 }>(c, decode);
                        let sign_sel = _mm512_set1_epi64(SIGN_CTRL[k][e]);
                        let u = strip_signed(u, sg, sign_sel, neg_base);
                        store_vector(dst, 16 * p + 8 * s + 2 * k + e, u);
                    }
                }
                store_chunk_scales(dst, 2 * (2 * p + s), aa, ab, s);
            }
        }
        strip::store_d(dst, Cb::<IQ2XXS>::row_d(pa), Cb::<IQ2XXS>::row_d(pb));
    }
}
