//! IQ3_XXSx8 × Q8_K on AVX-512 VBMI + VNNI (see `iq3xxs` for the layout): the decode of
//! `iq2xxs`'s tile for 4-value grid entries.
//!
//! - IQ3_XXS's grid bytes take 8 values (4, 12, …, 52, 62), so entry k is 4 three-bit
//!   codes: those of its bytes 0, 1 as one byte (`planes[0][k]`: bits 0..3 and 3..6) and
//!   of bytes 2, 3 as another (`planes[1][k]`). A chunk's 64 indices (8 rows × 8) are
//!   looked up in both 256-byte tables (2 `vpermi2b` and a blend each).
//! - Plane j (weight j of every 4-value group) is one `vpermb` into a 64-byte table that
//!   reads the code from bits 0..3 (j even) or 3..6 (j odd) and gives `grid value + 62`
//!   (0..124 once signed, unsigned for `vpdpbusd`). (GFNI's affine decode does not apply:
//!   the 8 values are not an affine image of 3 bits.)
//! - Each lane's sign indices come out of its row's `aux` qword with one
//!   `vpmultishiftqb` per chunk (the 7-bit field of the lane's 8-value sign group, twice:
//!   one byte per 4-value index), `KSIGNS` by `vpermi2b`; plane j's signs are bit j or
//!   j + 4 of each byte (`vptestmb`), applied as a masked `124 − u`.
//! - One `vpdpbusd` per (plane, token) against the token's quants permuted once per block
//!   (`prepare`), each lane starting at `−62·Σ16` of its half chunk; `vpmulld` by the
//!   chunk's `2·ls + 1` (the row's `aux` word copied to both of its lanes, `>> 27 | 1`).
//!
//! Per 64 weights: 4 vector instructions plus ~3.5 of shared lookups, signs and scaling.
//! The integers are exactly the scalar definition's (`|62 ± v| ≤ 124`, |Σ16| ≤ 16·124·128,
//! times 31, 8 chunks: < 2³¹), and the f32 steps are the shared tile's.

use super::codebook::{self, codebook_tiles, Codebook};
use super::codebook::{add_scaled, load512, lookup256, odd_scales, permute_quants};
use super::codebook::{index_tables, rows_of_pairs, signed_plane_dot, table128, table256, Cb};
use super::iq2xxs::{sign_bytes, store_chunk_scales, strip_ctrl, strip_signed};
use super::strip::{self, store_vector, Strip};
use super::*;
use crate::iq_grids::{IQ3XXS_GRID, KSIGNS};
use crate::repack::iq3xxs::{self, aux_at, idx_at, IQ3XXSX8_BLOCK_BYTES};

/// The 8 byte values of IQ3_XXS's grid, code 0..8.
const GRID_VALUES: [u8; 8] = [4, 12, 20, 28, 36, 44, 52, 62];

/// The weight offset: `62 ± v` is 0..=124.
const OFFSET: i32 = 62;

/// The code (0..8) of a grid byte; a byte outside [`GRID_VALUES`] fails the build.
const fn code(b: u8) -> u8 {
    let mut c = 0;
    while c < 8 {
        if GRID_VALUES[c] == b {
            return c as u8;
        }
        c += 1;
    }
    panic!("IQ3XXS_GRID byte outside its eight values");
}

/// 64-byte aligned tables, for whole-vector loads.
#[repr(C, align(64))]
struct Tables {
    /// `planes[h][k]`: the codes of grid entry k's bytes 2h (bits 0..3) and 2h + 1 (3..6).
    planes: [[u8; 256]; 2],
    /// `KSIGNS` (the sign byte of each 7-bit sign index).
    ksigns: [u8; 128],
    /// `values[o][i]`: `grid value + 62` of the code in bits 3o..3o + 3 of i.
    values: [[u8; 64]; 2],
}

static TABLES: Tables = {
    let mut planes = [[0u8; 256]; 2];
    let mut k = 0;
    while k < 256 {
        let mut j = 0;
        while j < 4 {
            let b = (IQ3XXS_GRID[k] >> (8 * j)) as u8;
            planes[j / 2][k] |= code(b) << (3 * (j % 2));
            j += 1;
        }
        k += 1;
    }
    let mut values = [[0u8; 64]; 2];
    let mut i = 0;
    while i < 64 {
        values[0][i] = GRID_VALUES[i % 8] + OFFSET as u8;
        values[1][i] = GRID_VALUES[i / 8] + OFFSET as u8;
        i += 1;
    }
    Tables {
        planes,
        ksigns: KSIGNS,
        values,
    }
};

/// Bytes [`prepare`] writes per activation block: the 256 permuted quants, then the 16
/// half-chunk offsets `−62·Σ16` (i32).
pub(super) const EXTRA: usize = 256 + 64;
pub(super) const EX_OFFSETS: usize = 256;

/// The `vpermb` indices of [`prepare`]'s permutation of a chunk pair's 64 quants: byte
/// `32h' + 8j + 4h + i` ← quant `32h' + 16h + 4i + j` (plane j's activations of lane
/// `2r + h`, index i, of chunk 2p + h').
static ACT_PERM: [u8; 64] = {
    let mut m = [0u8; 64];
    let mut o = 0;
    while o < 64 {
        let (hc, j, h, i) = (o / 32, (o / 8) % 4, (o / 4) % 2, o % 4);
        m[o] = (32 * hc + 16 * h + 4 * i + j) as u8;
        o += 1;
    }
    m
};

/// A Q8_K block's quants permuted per chunk pair ([`ACT_PERM`]) and its half chunks'
/// `−62·Σ16` (the Q8_K `bsums`).
#[inline(always)]
unsafe fn prepare(blk: *const u8, dst: *mut u8) {
    prepare_offset(blk, dst, OFFSET)
}

/// [`prepare`] for a weight offset `offset` (the 4-value-group layouts: IQ3_XXSx8,
/// IQ3_Sx8).
#[inline(always)]
pub(super) unsafe fn prepare_offset(blk: *const u8, dst: *mut u8, offset: i32) {
    permute_quants(blk, dst, &ACT_PERM);
    let s16 = _mm512_cvtepi16_epi32(load(blk.add(Q8K_BSUMS)));
    let off = _mm512_mullo_epi32(s16, _mm512_set1_epi32(-offset));
    _mm512_storeu_si512(dst.add(EX_OFFSETS) as *mut __m512i, off);
}

/// One packed block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
unsafe fn block_ints<const T: usize>(pb: *const u8, ex: [*const u8; T]) -> [__m256i; T] {
    let tb = &TABLES;
    let plane_tab: [[__m512i; 4]; 2] = std::array::from_fn(|h| table256(&tb.planes[h]));
    let ks = table128(&tb.ksigns);
    let values = [
        load512(tb.values[0].as_ptr()),
        load512(tb.values[1].as_ptr()),
    ];
    // Per lane (row r, half h) of chunk 2p + h': the bit offset of the sign index of its
    // 4-value indices i (one byte each): 32h' + 7·(2h + i/2).
    let sign_fields = [
        _mm512_set1_epi64(0x1515_0e0e_0707_0000),
        _mm512_set1_epi64(0x3535_2e2e_2727_2020),
    ];
    let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
    let mut isum = [_mm512_setzero_si512(); T];
    for p in 0..4 {
        let aux = load512(pb.add(aux_at(p)));
        // Each row's `aux` of chunk 2p (dword 2r) or 2p + 1 (dword 2r + 1) in both of its
        // lanes.
        let aux_c = [
            _mm512_shuffle_epi32::<0b10_10_00_00>(aux),
            _mm512_shuffle_epi32::<0b11_11_01_01>(aux),
        ];
        for hc in 0..2 {
            let c = 2 * p + hc;
            let idx = load512(pb.add(idx_at(c)));
            let top = _mm512_movepi8_mask(idx);
            let codes: [__m512i; 2] = std::array::from_fn(|h| lookup256(&plane_tab[h], idx, top));
            let signs = _mm512_permutex2var_epi8(
                ks[0],
                _mm512_multishift_epi64_epi8(sign_fields[hc], aux),
                ks[1],
            );
            let odd = odd_scales(aux_c[hc]);
            let mut acc: [__m512i; T] = std::array::from_fn(|t| {
                _mm512_set1_epi64(std::ptr::read_unaligned(
                    ex[t].add(EX_OFFSETS + 8 * c) as *const i64
                ))
            });
            for j in 0..4 {
                let u = _mm512_permutexvar_epi8(codes[j / 2], values[j % 2]);
                // Index i's 4 values are bits 4·(i % 2).. of its sign byte.
                let bit = _mm512_set1_epi16((((1u16 << (j + 4)) << 8) | (1u16 << j)) as i16);
                let neg = _mm512_test_epi8_mask(signs, bit);
                signed_plane_dot(&mut acc, u, neg, neg_base, ex, 32 * c + 8 * j);
            }
            add_scaled(&mut isum, &acc, odd);
        }
    }
    // Lanes 2r, 2r + 1 (row r's two halves) → lane r.
    std::array::from_fn(|t| rows_of_pairs(isum[t]))
}

pub(super) struct IQ3XXS;
impl Codebook for IQ3XXS {
    const BLOCK_BYTES: usize = IQ3XXSX8_BLOCK_BYTES;
    const OFF_D: usize = iq3xxs::OFF_D;
    const FACTOR: f32 = iq3xxs::FACTOR;
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

pub(super) static IQ3XXS_VBMI: [TileFn; 4] = codebook_tiles!(IQ3XXS);

// ---- The decoded strips (`x86::strip`), as `iq2xxs`'s: calls of ≥ 12 tokens ----

/// `vpermi2b` indices (first group's vector, then the second's) that gather a chunk's grid
/// indices `8ρ + i` (row ρ's index i) of the 16 rows, i = 4s + 2h + j (h, j = 0, 1), so
/// that the `vpunpck{l,h}bw` (h = 0, 1) of their two code lookups leave, in strip qword Q,
/// byte `4j + 2d + n` = code byte n (values 2n, 2n + 1) of index i of its row dword d: the
/// source qword 2(Q / 2) + h holds byte `2j + d` of strip qword Q at `4(Q % 2) + 2j + d`.
static GATHER: [[u8; 64]; 2] = index_tables!(2, |s, o| {
    let (h, b) = ((o / 8) % 2, o % 8);
    let q = 2 * (o / 16) + b / 4;
    let (j, d) = ((b % 4) / 2, b % 2);
    64 * (q / 4) + 8 * (2 * (q % 4) + d) + 4 * s + 2 * h + j
});

/// `vpermi2b` indices that gather the sign bytes of chunk 2p + h (`8ρ + 4h + l`: row ρ's
/// sign byte of values 8l..8l + 8) into strip qwords: qword Q, byte `4d + l`.
static SIGN_GATHER: [[u8; 64]; 2] = index_tables!(2, |h, o| {
    let (q, d, l) = (o / 8, (o % 8) / 4, o % 4);
    64 * (q / 4) + 8 * (2 * (q % 4) + d) + 4 * h + l
});

/// Code selectors of index i with i % 2 = j: value k of dword d at bits `3(k % 2)` of code
/// byte `4j + 2d + k / 2`.
const CODE_CTRL: [i64; 2] = {
    let mut c = [0i64; 2];
    let mut j = 0;
    while j < 2 {
        let mut f = [[0u8; 4]; 2];
        let mut i = 0;
        while i < 8 {
            let (d, k) = (i / 4, i % 4);
            f[d][k] = (8 * (4 * j + 2 * d + k / 2) + 3 * (k % 2)) as u8;
            i += 1;
        }
        c[j] = strip_ctrl(f);
        j += 1;
    }
    c
};

/// Sign selectors of index i (0..8): value k of dword d is bit `4(i % 2) + k` of sign byte
/// `4d + i / 2`.
const SIGN_CTRL: [i64; 8] = {
    let mut c = [0i64; 8];
    let mut ix = 0;
    while ix < 8 {
        let mut f = [[0u8; 4]; 2];
        let mut i = 0;
        while i < 8 {
            let (d, k) = (i / 4, i % 4);
            f[d][k] = (8 * (4 * d + ix / 2) + 4 * (ix % 2) + k) as u8;
            i += 1;
        }
        c[ix] = strip_ctrl(f);
        ix += 1;
    }
    c
};

/// IQ3_XXSx8 decodes into strips as `w + 62` for `w = grid·sign`, one scale `2·ls + 1`
/// per chunk (its two sub-blocks), `d·0.25`: one strip vector per grid index (4 values of
/// each row). Ranges: |Σ16 w·a| ≤ 16·62·128, times 31, 16 sub-blocks: < 2²⁶ (i32 exact).
impl Strip for IQ3XXS {
    const BLOCK_BYTES: usize = IQ3XXSX8_BLOCK_BYTES;
    const OFFSET: i32 = OFFSET;
    /// 8 tokens 206–209 vs the tile's 204–208 GFLOP/s, 12: 229–234 vs 204–209.
    const MIN_TOKENS: usize = 12;
    fn tiles() -> &'static [TileFn] {
        &IQ3XXS_VBMI
    }
    #[inline(always)]
    unsafe fn expand_pair(pa: *const u8, pb: *const u8, dst: *mut u8) {
        let tb = &TABLES;
        // (No closures: they would be compiled without the target features.)
        let plane_tab = [table256(&tb.planes[0]), table256(&tb.planes[1])];
        let ks = table128(&tb.ksigns);
        let values = load512(tb.values[0].as_ptr());
        let gather = [load512(GATHER[0].as_ptr()), load512(GATHER[1].as_ptr())];
        let sign_gather = [
            load512(SIGN_GATHER[0].as_ptr()),
            load512(SIGN_GATHER[1].as_ptr()),
        ];
        let neg_base = _mm512_set1_epi8(2 * OFFSET as i8);
        for p in 0..4 {
            let (aa, ab) = (load512(pa.add(aux_at(p))), load512(pb.add(aux_at(p))));
            let (sa, sb) = (sign_bytes(&ks, aa), sign_bytes(&ks, ab));
            for h in 0..2 {
                let c = 2 * p + h;
                let sg = _mm512_permutex2var_epi8(sa, sign_gather[h], sb);
                let (ia, ib) = (load512(pa.add(idx_at(c))), load512(pb.add(idx_at(c))));
                for (s, gather) in gather.iter().enumerate() {
                    let x = _mm512_permutex2var_epi8(ia, *gather, ib);
                    let top = _mm512_movepi8_mask(x);
                    let (c0, c1) = (
                        lookup256(&plane_tab[0], x, top),
                        lookup256(&plane_tab[1], x, top),
                    );
                    let codes = [_mm512_unpacklo_epi8(c0, c1), _mm512_unpackhi_epi8(c0, c1)];
                    for (hh, codes) in codes.iter().enumerate() {
                        for j in 0..2 {
                            let i = 4 * s + 2 * hh + j;
                            let sel = _mm512_set1_epi64(CODE_CTRL[j]);
                            let code = _mm512_multishift_epi64_epi8(sel, *codes);
                            let u = _mm512_permutexvar_epi8(code, values);
                            let sign_sel = _mm512_set1_epi64(SIGN_CTRL[i]);
                            let u = strip_signed(u, sg, sign_sel, neg_base);
                            store_vector(dst, 8 * c + i, u);
                        }
                    }
                }
                store_chunk_scales(dst, 2 * c, aa, ab, h);
            }
        }
        strip::store_d(dst, Cb::<IQ3XXS>::row_d(pa), Cb::<IQ3XXS>::row_d(pb));
    }
}
