//! The scalar reference dot products: the *definition* every SIMD path is tested against.
//!
//! Each follows ggml's generic C kernel (`ggml_vec_dot_*_generic`): exact integer partial
//! sums per (sub-)block, then f32 scale products accumulated in ggml's order, so results
//! track llama.cpp's CPU backend closely. (Bit-identity with a C build is not promised: C
//! compilers may contract `a*b + c` into an FMA, Rust never does.)
//!
//! The public `dot_*` functions take raw rows of whole blocks with equal block counts (they
//! panic on a partial block; [`super::VecDot`] checks lengths before calling them).
//!
//! The integer part of each block is split out (`*_ints`) so that `block_ints` can expose
//! it to the property tests; the SIMD kernels must reproduce those integers exactly.

// Loops mirror ggml's index arithmetic (q[l], q8[l + 16] …), which is the point here.
#![allow(clippy::needless_range_loop)]

use super::layout::{iq4xs_scales, k4_scales_mins, q3k_scales, Q8KView, Q8K_SIZE};
use super::ScalarFn;
use crate::blocks::*;
use crate::GgmlType;

/// The scalar kernel for a weight type (`None` if unsupported).
pub(crate) fn kernel(weight: GgmlType) -> Option<ScalarFn> {
    use GgmlType::*;
    Some(match weight {
        F32 => dot_f32,
        F16 => dot_f16,
        BF16 => dot_bf16,
        Q4_0 => dot_q4_0,
        Q4_1 => dot_q4_1,
        Q5_0 => dot_q5_0,
        Q5_1 => dot_q5_1,
        Q8_0 => dot_q8_0,
        IQ4_NL => dot_iq4_nl,
        Q2_K => dot_q2_k,
        Q3_K => dot_q3_k,
        Q4_K => dot_q4_k,
        Q5_K => dot_q5_k,
        Q6_K => dot_q6_k,
        IQ4_XS => dot_iq4_xs,
        IQ1_S => super::iq1::dot_iq1_s,
        IQ1_M => super::iq1::dot_iq1_m,
        TQ1_0 => super::ternary::dot_tq1_0,
        TQ2_0 => super::ternary::dot_tq2_0,
        MXFP4 => super::mxfp4::dot_mxfp4,
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => return super::scalar_iq::kernel(weight),
        _ => return None,
    })
}

#[inline(always)]
fn blocks<B: bytemuck::Pod>(bytes: &[u8]) -> &[B] {
    // Every weight block and Q8_0/Q8_1 have alignment 1; lengths were checked by the caller.
    bytemuck::cast_slice(bytes)
}

#[inline(always)]
fn q8k_blocks(bytes: &[u8]) -> impl Iterator<Item = Q8KView<'_>> {
    bytes.chunks_exact(Q8K_SIZE).map(Q8KView::new)
}

// ---------------------------------------------------------------------------------------
// Float weights × f32 activations. Products in f32, accumulated in f64 (as ggml's scalar
// `ggml_vec_dot_f32` with its `ggml_float` accumulator).

/// F32 × F32.
pub fn dot_f32(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.chunks_exact(4).zip(a.chunks_exact(4)) {
        let x = f32::from_le_bytes([x[0], x[1], x[2], x[3]]);
        let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        sum += (x * y) as f64;
    }
    sum as f32
}

/// F16 × F32.
pub fn dot_f16(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(4)) {
        let x = Half([x[0], x[1]]).to_f32();
        let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        sum += (x * y) as f64;
    }
    sum as f32
}

/// BF16 × F32.
pub fn dot_bf16(w: &[u8], a: &[u8]) -> f32 {
    let mut sum = 0f64;
    for (x, y) in w.chunks_exact(2).zip(a.chunks_exact(4)) {
        let x = f32::from_bits((u16::from_le_bytes([x[0], x[1]]) as u32) << 16);
        let y = f32::from_le_bytes([y[0], y[1], y[2], y[3]]);
        sum += (x * y) as f64;
    }
    sum as f32
}

// ---------------------------------------------------------------------------------------
// Legacy 32-value blocks × Q8_0 / Q8_1.

/// Q4_0 block: Σ (q − 8)·a.
#[inline(always)]
pub(crate) fn ints_q4_0(x: &BlockQ4_0, y: &BlockQ8_0) -> i32 {
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        s0 += ((x.qs[j] & 0xf) as i32 - 8) * y.qs[j] as i32;
        s1 += ((x.qs[j] >> 4) as i32 - 8) * y.qs[j + 16] as i32;
    }
    s0 + s1
}

/// Q4_0 × Q8_0.
pub fn dot_q4_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ4_0>(w).iter().zip(blocks::<BlockQ8_0>(a)) {
        sumf += ints_q4_0(x, y) as f32 * x.d.to_f32() * y.d.to_f32();
    }
    sumf
}

/// Q4_1 block: Σ q·a (q unsigned; the offset `m` goes through the activation sum `s`).
#[inline(always)]
pub(crate) fn ints_q4_1(x: &BlockQ4_1, y: &BlockQ8_1) -> i32 {
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        s0 += (x.qs[j] & 0xf) as i32 * y.qs[j] as i32;
        s1 += (x.qs[j] >> 4) as i32 * y.qs[j + 16] as i32;
    }
    s0 + s1
}

/// Q4_1 × Q8_1.
pub fn dot_q4_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ4_1>(w).iter().zip(blocks::<BlockQ8_1>(a)) {
        let sumi = ints_q4_1(x, y);
        sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sumf
}

/// The 5-bit value j of a Q5 block (0..32): nibble plus bit j of `qh`.
#[inline(always)]
fn q5_value(qs: &[u8; 16], qh: u32, j: usize) -> i32 {
    let nib = if j < 16 { qs[j] & 0xf } else { qs[j - 16] >> 4 };
    (nib as i32) | ((((qh >> j) & 1) as i32) << 4)
}

/// Q5_0 block: Σ (q − 16)·a.
#[inline(always)]
pub(crate) fn ints_q5_0(x: &BlockQ5_0, y: &BlockQ8_0) -> i32 {
    let qh = u32::from_le_bytes(x.qh);
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        s0 += (q5_value(&x.qs, qh, j) - 16) * y.qs[j] as i32;
        s1 += (q5_value(&x.qs, qh, j + 16) - 16) * y.qs[j + 16] as i32;
    }
    s0 + s1
}

/// Q5_0 × Q8_0.
pub fn dot_q5_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ5_0>(w).iter().zip(blocks::<BlockQ8_0>(a)) {
        sumf += (x.d.to_f32() * y.d.to_f32()) * ints_q5_0(x, y) as f32;
    }
    sumf
}

/// Q5_1 block: Σ q·a (q unsigned).
#[inline(always)]
pub(crate) fn ints_q5_1(x: &BlockQ5_1, y: &BlockQ8_1) -> i32 {
    let qh = u32::from_le_bytes(x.qh);
    let (mut s0, mut s1) = (0i32, 0i32);
    for j in 0..16 {
        s0 += q5_value(&x.qs, qh, j) * y.qs[j] as i32;
        s1 += q5_value(&x.qs, qh, j + 16) * y.qs[j + 16] as i32;
    }
    s0 + s1
}

/// Q5_1 × Q8_1.
pub fn dot_q5_1(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ5_1>(w).iter().zip(blocks::<BlockQ8_1>(a)) {
        let sumi = ints_q5_1(x, y);
        sumf += (x.d.to_f32() * y.d.to_f32()) * sumi as f32 + x.m.to_f32() * y.s.to_f32();
    }
    sumf
}

/// Q8_0 block: Σ q·a.
#[inline(always)]
pub(crate) fn ints_q8_0(x: &BlockQ8_0, y: &BlockQ8_0) -> i32 {
    x.qs.iter()
        .zip(&y.qs)
        .map(|(&p, &q)| p as i32 * q as i32)
        .sum()
}

/// Q8_0 × Q8_0.
pub fn dot_q8_0(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ8_0>(w).iter().zip(blocks::<BlockQ8_0>(a)) {
        sumf += ints_q8_0(x, y) as f32 * (x.d.to_f32() * y.d.to_f32());
    }
    sumf
}

/// IQ4_NL block: Σ KVALUES[q]·a.
#[inline(always)]
pub(crate) fn ints_iq4_nl(x: &BlockIQ4NL, y: &BlockQ8_0) -> i32 {
    let (mut s1, mut s2) = (0i32, 0i32);
    for j in 0..16 {
        s1 += y.qs[j] as i32 * KVALUES_IQ4NL[(x.qs[j] & 0xf) as usize] as i32;
        s2 += y.qs[j + 16] as i32 * KVALUES_IQ4NL[(x.qs[j] >> 4) as usize] as i32;
    }
    s1 + s2
}

/// IQ4_NL × Q8_0.
pub fn dot_iq4_nl(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockIQ4NL>(w).iter().zip(blocks::<BlockQ8_0>(a)) {
        let d = y.d.to_f32() * x.d.to_f32();
        sumf += d * ints_iq4_nl(x, y) as f32;
    }
    sumf
}

// ---------------------------------------------------------------------------------------
// 256-value super-blocks × Q8_K.

/// Q2_K super-block: `[Σ_j (sc_j & 15)·Σ q·a, Σ_j (sc_j >> 4)·bsums_j]` over the 16
/// sub-blocks of 16.
#[inline(always)]
pub(crate) fn ints_q2_k(x: &BlockQ2K, y: &Q8KView) -> [i32; 2] {
    let mut summs = 0i32;
    for j in 0..16 {
        summs += y.bsums[j] as i32 * (x.scales[j] >> 4) as i32;
    }
    let mut isum = 0i32;
    for half in 0..2 {
        let q2 = &x.qs[32 * half..32 * half + 32];
        for j in 0..4 {
            let shift = 2 * j;
            let base = 128 * half + 32 * j;
            for part in 0..2 {
                let sc = (x.scales[8 * half + 2 * j + part] & 0xf) as i32;
                let mut s = 0i32;
                for l in 16 * part..16 * part + 16 {
                    s += y.qs[base + l] as i32 * ((q2[l] >> shift) & 3) as i32;
                }
                isum += sc * s;
            }
        }
    }
    [isum, summs]
}

/// Q2_K × Q8_K.
pub fn dot_q2_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ2K>(w).iter().zip(q8k_blocks(a)) {
        let [isum, summs] = ints_q2_k(x, &y);
        let dall = y.d * x.d.to_f32();
        let dmin = y.d * x.dmin.to_f32();
        sumf += dall * isum as f32 - dmin * summs as f32;
    }
    sumf
}

/// The 8 lanes of ggml's generic k-quant kernels: lane l sums `scale·q[p]·a[p]` over the
/// positions p ≡ l (mod 8), with one scale per group of `group` (16 or 32) values. Written
/// as ggml's loop over groups of 8 so that the compiler vectorizes it.
#[inline(always)]
fn lanes8(q: &[i8; 256], a: &[i8; 256], scales: &[i32], group: usize) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (c, (q8, a8)) in q.chunks_exact(8).zip(a.chunks_exact(8)).enumerate() {
        let scale = scales[c * 8 / group];
        for l in 0..8 {
            // The i16 product of ggml's aux16 never overflows: |q| ≤ 63, |a| ≤ 128.
            let aux16 = (q8[l] as i16) * (a8[l] as i16);
            aux32[l] += scale * aux16 as i32;
        }
    }
    aux32
}

/// Q3_K values (−4..4) in order: per 128-value half, 4 shifts of the same 32 `qs` bytes;
/// the high bit of value p is bit p/32 of `hmask[p % 32]` (clear means "minus 4").
#[inline(always)]
fn q3k_values(x: &BlockQ3K) -> [i8; 256] {
    let mut v = [0i8; 256];
    for half in 0..2 {
        let qs = &x.qs[32 * half..32 * half + 32];
        for k in 0..4 {
            let o = 128 * half + 32 * k;
            let bit = 4 * half + k;
            for l in 0..32 {
                let low = ((qs[l] >> (2 * k)) & 3) as i8;
                let minus4 = ((!x.hmask[l] >> bit) & 1) as i8 * 4;
                v[o + l] = low - minus4;
            }
        }
    }
    v
}

/// Q3_K super-block: 8 lanes of Σ (sc − 32)·q·a (q ∈ −4..4, 16 sub-blocks of 16).
#[inline(always)]
pub(crate) fn lanes_q3_k(x: &BlockQ3K, y: &Q8KView) -> [i32; 8] {
    let v = q3k_values(x);
    let sc = q3k_scales(&x.scales).map(|s| s as i32 - 32);
    lanes8(&v, y.qs, &sc, 16)
}

/// Q3_K × Q8_K.
pub fn dot_q3_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    for (x, y) in blocks::<BlockQ3K>(w).iter().zip(q8k_blocks(a)) {
        let aux32 = lanes_q3_k(x, &y);
        let d = x.d.to_f32() * y.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q4_K values (0..16) in order: each 32 bytes of `qs` hold 64 values, low nibbles first.
#[inline(always)]
fn q4k_values(qs: &[u8; 128]) -> [i8; 256] {
    let mut v = [0i8; 256];
    for c in 0..4 {
        for l in 0..32 {
            let b = qs[32 * c + l];
            v[64 * c + l] = (b & 0xf) as i8;
            v[64 * c + 32 + l] = (b >> 4) as i8;
        }
    }
    v
}

/// Σ mins·bsums of a Q4_K/Q5_K super-block (each min covers two 16-value bsums).
#[inline(always)]
fn mins_dot_bsums(mins: &[u8], bsums: &[i16; 16]) -> i32 {
    let mut sumi = 0i32;
    for j in 0..16 {
        sumi += bsums[j] as i32 * mins[j / 2] as i32;
    }
    sumi
}

/// Q4_K super-block: (8 lanes of Σ sc·q·a, Σ m·bsums).
#[inline(always)]
pub(crate) fn lanes_q4_k(x: &BlockQ4K, y: &Q8KView) -> ([i32; 8], i32) {
    let v = q4k_values(&x.qs);
    let sm = k4_scales_mins(&x.scales);
    let sc: [i32; 8] = std::array::from_fn(|j| sm[j] as i32);
    (
        lanes8(&v, y.qs, &sc, 32),
        mins_dot_bsums(&sm[8..], &y.bsums),
    )
}

/// Q4_K × Q8_K.
pub fn dot_q4_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ4K>(w).iter().zip(q8k_blocks(a)) {
        let (aux32, sumi) = lanes_q4_k(x, &y);
        let d = x.d.to_f32() * y.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = x.dmin.to_f32() * y.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q5_K super-block: (8 lanes of Σ sc·q·a, Σ m·bsums), q ∈ 0..32.
#[inline(always)]
pub(crate) fn lanes_q5_k(x: &BlockQ5K, y: &Q8KView) -> ([i32; 8], i32) {
    let mut v = q4k_values(&x.qs);
    for j in 0..8 {
        for l in 0..32 {
            v[32 * j + l] += (((x.qh[l] >> j) & 1) << 4) as i8;
        }
    }
    let sm = k4_scales_mins(&x.scales);
    let sc: [i32; 8] = std::array::from_fn(|j| sm[j] as i32);
    (
        lanes8(&v, y.qs, &sc, 32),
        mins_dot_bsums(&sm[8..], &y.bsums),
    )
}

/// Q5_K × Q8_K.
pub fn dot_q5_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockQ5K>(w).iter().zip(q8k_blocks(a)) {
        let (aux32, sumi) = lanes_q5_k(x, &y);
        let d = x.d.to_f32() * y.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
        let dmin = x.dmin.to_f32() * y.d;
        sumf -= dmin * sumi as f32;
    }
    for s in sums {
        sumf += s;
    }
    sumf
}

/// Q6_K values (−32..32) in order: per 128-value half, 64 bytes of `ql` and 32 of `qh`.
#[inline(always)]
fn q6k_values(x: &BlockQ6K) -> [i8; 256] {
    let mut v = [0i8; 256];
    for half in 0..2 {
        let ql = &x.ql[64 * half..64 * half + 64];
        let qh = &x.qh[32 * half..32 * half + 32];
        for l in 0..32 {
            let o = 128 * half + l;
            v[o] = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i8 - 32;
            v[o + 32] = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            v[o + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            v[o + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    v
}

/// Q6_K super-block: 8 lanes of Σ sc·(q − 32)·a (16 sub-blocks of 16, signed 8-bit scales).
#[inline(always)]
pub(crate) fn lanes_q6_k(x: &BlockQ6K, y: &Q8KView) -> [i32; 8] {
    let v = q6k_values(x);
    lanes8(&v, y.qs, &x.scales.map(|s| s as i32), 16)
}

/// Q6_K × Q8_K.
pub fn dot_q6_k(w: &[u8], a: &[u8]) -> f32 {
    let mut sums = [0f32; 8];
    for (x, y) in blocks::<BlockQ6K>(w).iter().zip(q8k_blocks(a)) {
        let aux32 = lanes_q6_k(x, &y);
        let d = x.d.to_f32() * y.d;
        for l in 0..8 {
            sums[l] += d * aux32[l] as f32;
        }
    }
    let mut sumf = 0f32;
    for s in sums {
        sumf += s;
    }
    sumf
}

/// IQ4_XS super-block: the 8 per-sub-block sums Σ KVALUES[q]·a (without scales).
#[inline(always)]
fn subs_iq4_xs(x: &BlockIQ4XS, y: &Q8KView) -> [i32; 8] {
    let mut out = [0i32; 8];
    for (ib, o) in out.iter_mut().enumerate() {
        let qs = &x.qs[16 * ib..16 * ib + 16];
        let q8 = &y.qs[32 * ib..32 * ib + 32];
        let (mut s1, mut s2) = (0i32, 0i32);
        for j in 0..16 {
            s1 += q8[j] as i32 * KVALUES_IQ4NL[(qs[j] & 0xf) as usize] as i32;
            s2 += q8[j + 16] as i32 * KVALUES_IQ4NL[(qs[j] >> 4) as usize] as i32;
        }
        *o = s1 + s2;
    }
    out
}

/// IQ4_XS × Q8_K (ggml applies the scales in f32 per sub-block of 32).
pub fn dot_iq4_xs(w: &[u8], a: &[u8]) -> f32 {
    let mut sumf = 0f32;
    for (x, y) in blocks::<BlockIQ4XS>(w).iter().zip(q8k_blocks(a)) {
        let d4d8 = x.d.to_f32() * y.d;
        let ls = iq4xs_scales(x.scales_h, &x.scales_l);
        let subs = subs_iq4_xs(x, &y);
        for ib in 0..8 {
            sumf += (d4d8 * (ls[ib] as i32 - 32) as f32) * subs[ib] as f32;
        }
    }
    sumf
}

// ---------------------------------------------------------------------------------------

/// The integer sums of every block of a row, as the SIMD kernels must reproduce them:
/// - Q4_0, Q5_0, Q8_0, IQ4_NL: `[Σ w·a, 0]` (signed weight values);
/// - Q4_1, Q5_1: `[Σ q·a, 0]` (unsigned q; the `m·s` term is pure f32);
/// - Q2_K: `[Σ (sc & 15)·Σ q·a, Σ (sc >> 4)·bsums]`;
/// - Q3_K: `[Σ (sc − 32)·Σ q·a, 0]` (q ∈ −4..4);
/// - Q4_K, Q5_K: `[Σ sc·Σ q·a, Σ m·bsums]`;
/// - Q6_K: `[Σ sc·Σ (q − 32)·a, 0]`;
/// - IQ4_XS: `[Σ (ls − 32)·Σ KVALUES[q]·a, 0]`;
/// - IQ1_S, IQ1_M: `[8·S + S_δ, 0]` (see `super::iq1`);
/// - TQ1_0, TQ2_0: `[Σ (q − 1)·a, 0]`;
/// - MXFP4: `[Σ KVALUES_MXFP4[q]·a, 0]`.
///
/// Lengths must already be checked; `None` for float types.
pub(crate) fn block_ints(weight: GgmlType, w: &[u8], a: &[u8]) -> Option<Vec<[i32; 2]>> {
    use GgmlType::*;
    fn legacy<X: bytemuck::Pod, Y: bytemuck::Pod>(
        w: &[u8],
        a: &[u8],
        f: impl Fn(&X, &Y) -> i32,
    ) -> Vec<[i32; 2]> {
        blocks::<X>(w)
            .iter()
            .zip(blocks::<Y>(a))
            .map(|(x, y)| [f(x, y), 0])
            .collect()
    }
    fn kq<X: bytemuck::Pod>(
        w: &[u8],
        a: &[u8],
        f: impl Fn(&X, &Q8KView) -> [i32; 2],
    ) -> Vec<[i32; 2]> {
        blocks::<X>(w)
            .iter()
            .zip(q8k_blocks(a))
            .map(|(x, y)| f(x, &y))
            .collect()
    }
    let sum8 = |l: [i32; 8]| l.iter().sum::<i32>();
    Some(match weight {
        Q4_0 => legacy(w, a, ints_q4_0),
        Q4_1 => legacy(w, a, ints_q4_1),
        Q5_0 => legacy(w, a, ints_q5_0),
        Q5_1 => legacy(w, a, ints_q5_1),
        Q8_0 => legacy(w, a, ints_q8_0),
        IQ4_NL => legacy(w, a, ints_iq4_nl),
        Q2_K => kq(w, a, ints_q2_k),
        Q3_K => kq(w, a, |x: &BlockQ3K, y| [sum8(lanes_q3_k(x, y)), 0]),
        Q4_K => kq(w, a, |x: &BlockQ4K, y| {
            let (l, m) = lanes_q4_k(x, y);
            [sum8(l), m]
        }),
        Q5_K => kq(w, a, |x: &BlockQ5K, y| {
            let (l, m) = lanes_q5_k(x, y);
            [sum8(l), m]
        }),
        Q6_K => kq(w, a, |x: &BlockQ6K, y| [sum8(lanes_q6_k(x, y)), 0]),
        IQ4_XS => kq(w, a, |x: &BlockIQ4XS, y| {
            let ls = iq4xs_scales(x.scales_h, &x.scales_l);
            let subs = subs_iq4_xs(x, y);
            [(0..8).map(|ib| (ls[ib] as i32 - 32) * subs[ib]).sum(), 0]
        }),
        IQ1_S => super::iq1::ints_iq1_s(w, a),
        IQ1_M => super::iq1::ints_iq1_m(w, a),
        TQ1_0 => super::ternary::ints_tq1_0(w, a),
        TQ2_0 => super::ternary::ints_tq2_0(w, a),
        MXFP4 => super::mxfp4::ints_mxfp4(w, a),
        IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => {
            return super::scalar_iq::block_ints(weight, w, a)
        }
        _ => return None,
    })
}
