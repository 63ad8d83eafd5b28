//! TQ1_0x8 and TQ2_0x8 × Q8_K on AVX-512 VBMI + VNNI (see `repack::ternary` for the
//! layouts).
//!
//! TQ1_0x8: the trits of a byte are looked up, not computed. Measured first (stand-alone `rustc -O`
//! microbenchmark, 1 thread, data in L1, one 8-row tile's 240 `qs` values per block;
//! bench/RESULTS.md): the file-order AVX2 decode (×3 by byte adds, two compares, add,
//! `vpabsb`) 30–38 G weights/s; the same in 512-bit vectors with the compares into masks
//! 46–57; `vpmullw`/`vpmulhuw` on 16-bit lanes (a trit per word half) 39–45; three
//! 256-entry lookups (two trits per byte as nibbles, split by shift and mask) 52–67; two
//! lookups with 2-bit fields masked in place 73–89. So, per 64-byte chunk (8 rows × 8
//! bytes):
//!
//! - two 256-entry lookups of every byte x ([`lookup256`]: two `vpermi2b` and a blend on
//!   the top bit): `t₀ | t₁ << 2 | t₂ << 4` and `t₃ | t₄ << 2`;
//! - the fields masked in place (one `vpand` each), so trit l arrives as `4^f·t` (f = 0,
//!   1, 2) and goes to its own sum per scale: `vpdpbusd` against the broadcast qword of
//!   the 8 activations it multiplies ([`tq1_values`]), lanes 2r, 2r + 1 = row r;
//! - per block the scaled sums are combined exactly (`(S₁₆ >> 2 + S₄) >> 2 + S₁`: each a
//!   multiple of its scale) and the row halves added;
//! - the 32 `qh` bytes (4 trits each) go through the same tables in a 256-bit tail, whose
//!   sum starts at the prepared `−Σa` (the −1 of every trit).
//!
//! TQ2_0x8: the four 2-bit fields of each chunk masked in place (`4^l·q`, l = 0..4), each
//! into its own sum per scale, combined per block as TQ1_0x8's; no lookups (the tile
//! needs no VBMI, but shares the codebook layouts' VBMI tile, so it runs where they do).
//!
//! The integers are exactly ggml's (`Σ (q − 1)·a`), the f32 steps the shared tile's, so
//! results are bit-identical to `ternary::dot_scalar` for any number of tokens.
//!
//! Ranges: per lane and block |S₁₆| ≤ 6·4·32·128 (TQ1), |S₆₄| ≤ 8·4·192·128 (TQ2), i32
//! exact; the weight bytes are ≤ 192 (unsigned for `vpdpbusd`).

use super::codebook::{self, codebook_tiles, Codebook};
use super::codebook::{load512, lookup256, rows_of_pairs, table256};
use super::*;
use crate::repack::ternary::{tq1_values, tq2_values, OFF_D, OFF_QS, TQ1_CHUNKS, TQ1_OFF_QH};
use crate::repack::ternary::{TQ1, TQ1_0X8_BLOCK_BYTES, TQ2, TQ2_0X8_BLOCK_BYTES, TQ2_CHUNKS};
use crate::ternary::tq1_trit;

/// 64-byte aligned tables, for whole-vector loads.
#[repr(C, align(64))]
struct Tables {
    /// Trits 0, 1, 2 of each byte as 2-bit fields.
    low: [u8; 256],
    /// Trits 3, 4 of each byte as 2-bit fields.
    high: [u8; 256],
}

/// Trits `l0..l0 + n` of every byte as 2-bit fields.
const fn fields(l0: usize, n: usize) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut x = 0;
    while x < 256 {
        let mut f = 0;
        while f < n {
            t[x] |= tq1_trit(x as u8, l0 + f) << (2 * f);
            f += 1;
        }
        x += 1;
    }
    t
}

static TABLES: Tables = Tables {
    low: fields(0, 3),
    high: fields(3, 2),
};

/// Bytes prepared per activation block: `−Σa` as an i32.
const EXTRA: usize = 4;

#[inline(always)]
unsafe fn prepare(blk: *const u8, dst: *mut u8) {
    let b = _mm256_loadu_si256(blk.add(Q8K_BSUMS) as *const __m256i);
    let s = _mm256_madd_epi16(b, _mm256_set1_epi16(-1));
    let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
    std::ptr::write_unaligned(dst as *mut i32, _mm_cvtsi128_si32(s));
}

/// 8 bytes at `p` in every qword.
#[inline(always)]
unsafe fn bcast64(p: *const u8) -> __m512i {
    _mm512_set1_epi64(std::ptr::read_unaligned(p as *const i64))
}

/// −Σa of the prepared bytes `ex`, in all lanes.
#[inline(always)]
unsafe fn minus_sum(ex: *const u8) -> __m256i {
    _mm256_set1_epi32(std::ptr::read_unaligned(ex as *const i32))
}

/// `S₁ + S₄/4 + S₁₆/16 + …` of sums whose weights were `4^k·q` (each sum a multiple of
/// its scale: exact), with row r's halves (lanes 2r, 2r + 1) added.
#[inline(always)]
unsafe fn unscaled<const K: usize>(s: [__m512i; K]) -> __m256i {
    let mut acc = s[K - 1];
    for k in (0..K - 1).rev() {
        acc = _mm512_add_epi32(_mm512_srai_epi32::<2>(acc), s[k]);
    }
    rows_of_pairs(acc)
}

/// One TQ1_0x8 block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
unsafe fn tq1_block_ints<const T: usize>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> [__m256i; T] {
    let (low, high) = (table256(&TABLES.low), table256(&TABLES.high));
    // The 2-bit fields at bits 0, 2, 4.
    let f = [
        _mm512_set1_epi8(3),
        _mm512_set1_epi8(3 << 2),
        _mm512_set1_epi8(3 << 4),
    ];
    // Sums of trits × 1, × 4, × 16, per token.
    let mut s = [[_mm512_setzero_si512(); 3]; T];
    for c in 0..TQ1_CHUNKS {
        let x = load512(pb.add(OFF_QS + 64 * c));
        let top = _mm512_movepi8_mask(x);
        let (lo, hi) = (lookup256(&low, x, top), lookup256(&high, x, top));
        // (trit l: the looked-up byte, its field's scale)
        let w = [
            _mm512_and_si512(lo, f[0]),
            _mm512_and_si512(lo, f[1]),
            _mm512_and_si512(lo, f[2]),
            _mm512_and_si512(hi, f[0]),
            _mm512_and_si512(hi, f[1]),
        ];
        for (l, scale) in [0, 1, 2, 0, 1].into_iter().enumerate() {
            for t in 0..T {
                let q = bcast64(a[t].add(Q8K_QS + tq1_values(c, l)));
                s[t][scale] = _mm512_dpbusd_epi32(s[t][scale], w[l], q);
            }
        }
    }
    // The qh bytes (dword r = row r), zero above: byte 0 has trits 0.
    let x = _mm512_zextsi256_si512(_mm256_loadu_si256(pb.add(TQ1_OFF_QH) as *const __m256i));
    let top = _mm512_movepi8_mask(x);
    let lo = _mm512_castsi512_si256(lookup256(&low, x, top));
    let hi = _mm512_castsi512_si256(lookup256(&high, x, top));
    let m3 = _mm256_set1_epi8(3);
    let w = [
        _mm256_and_si256(lo, m3),
        _mm256_and_si256(_mm256_srli_epi16::<2>(lo), m3),
        _mm256_and_si256(_mm256_srli_epi16::<4>(lo), m3),
        _mm256_and_si256(hi, m3),
    ];
    // (A loop, not `array::from_fn`: its closure would not inherit the target features
    // and stays an out-of-line call.)
    let mut isum = [_mm256_setzero_si256(); T];
    for t in 0..T {
        let mut tail = minus_sum(ex[t]);
        for (l, wl) in w.iter().enumerate() {
            let q = _mm256_set1_epi32(std::ptr::read_unaligned(
                a[t].add(Q8K_QS + 240 + 4 * l) as *const i32
            ));
            tail = _mm256_dpbusd_epi32(tail, *wl, q);
        }
        isum[t] = _mm256_add_epi32(unscaled(s[t]), tail);
    }
    isum
}

/// One TQ2_0x8 block × T activation blocks: `isum` per token, lane = row.
#[inline(always)]
unsafe fn tq2_block_ints<const T: usize>(
    pb: *const u8,
    a: [*const u8; T],
    ex: [*const u8; T],
) -> [__m256i; T] {
    let f = [
        _mm512_set1_epi8(3),
        _mm512_set1_epi8(3 << 2),
        _mm512_set1_epi8(3 << 4),
        _mm512_set1_epi8((3u8 << 6) as i8),
    ];
    // Sums of q × 1, × 4, × 16, × 64, per token.
    let mut s = [[_mm512_setzero_si512(); 4]; T];
    for c in 0..TQ2_CHUNKS {
        let x = load512(pb.add(OFF_QS + 64 * c));
        for l in 0..4 {
            let w = _mm512_and_si512(x, f[l]);
            for t in 0..T {
                let q = bcast64(a[t].add(Q8K_QS + tq2_values(c, l)));
                s[t][l] = _mm512_dpbusd_epi32(s[t][l], w, q);
            }
        }
    }
    let mut isum = [_mm256_setzero_si256(); T];
    for t in 0..T {
        isum[t] = _mm256_add_epi32(unscaled(s[t]), minus_sum(ex[t]));
    }
    isum
}

/// Layout K (`repack::ternary::TQ1` or `TQ2`) as a [`Codebook`].
pub(super) struct Ternary<const K: u8>;
impl<const K: u8> Codebook for Ternary<K> {
    const BLOCK_BYTES: usize = if K == TQ1 {
        TQ1_0X8_BLOCK_BYTES
    } else {
        TQ2_0X8_BLOCK_BYTES
    };
    const OFF_D: usize = OFF_D;
    const FACTOR: f32 = 1.0;
    const EXTRA: usize = EXTRA;
    #[inline(always)]
    unsafe fn prepare(blk: *const u8, dst: *mut u8) {
        prepare(blk, dst)
    }
    #[inline(always)]
    unsafe fn block_ints<const T: usize>(
        pb: *const u8,
        a: [*const u8; T],
        ex: [*const u8; T],
    ) -> [__m256i; T] {
        if K == TQ1 {
            tq1_block_ints::<T>(pb, a, ex)
        } else {
            tq2_block_ints::<T>(pb, a, ex)
        }
    }
}

pub(super) static TQ1_0_VBMI: [TileFn; 4] = codebook_tiles!(Ternary<TQ1>);
pub(super) static TQ2_0_VBMI: [TileFn; 4] = codebook_tiles!(Ternary<TQ2>);
