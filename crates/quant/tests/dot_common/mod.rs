//! Shared helpers of the dot-product tests: random rows of every weight/activation type
//! (with the edge cases the kernels must survive), and an independent f64 dequantizer
//! written from ggml's `dequantize_row_*` layouts, for the cross-checks.
#![allow(dead_code, clippy::needless_range_loop)]

use quant::blocks::KVALUES_IQ4NL;
use quant::GgmlType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a random row is filled.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Uniform random bytes, ordinary scales.
    Random,
    /// Quant bytes all zero (scales still random).
    Zero,
    /// Max-magnitude quants: weight bytes 0xFF (all-15 nibbles, all high bits), activations
    /// all −128 or all 127 per block.
    Max,
    /// Extreme scales: ±65504, f16 subnormals, 0; random quants.
    ExtremeScales,
    /// Each byte 0, 0xFF or random.
    Mixed,
}

pub const MODES: [Mode; 5] = [
    Mode::Random,
    Mode::Zero,
    Mode::Max,
    Mode::ExtremeScales,
    Mode::Mixed,
];

fn f16_bytes(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

fn scale(rng: &mut StdRng, mode: Mode) -> f32 {
    match mode {
        Mode::ExtremeScales => {
            const S: [f32; 7] = [65504.0, -65504.0, 5.96e-8, -1.2e-7, 0.0, 1.0, 3.0e-5];
            S[rng.random_range(0..S.len())]
        }
        _ => {
            let m: f32 = rng.random_range(1e-3..2.0);
            if rng.random::<bool>() {
                m
            } else {
                -m
            }
        }
    }
}

fn byte(rng: &mut StdRng, mode: Mode) -> u8 {
    match mode {
        Mode::Zero => 0,
        Mode::Max => 0xFF,
        Mode::Mixed => match rng.random_range(0..3) {
            0 => 0,
            1 => 0xFF,
            _ => rng.random(),
        },
        _ => rng.random(),
    }
}

/// Offsets of the f16 scale fields within one weight block.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS | IQ2_XXS | IQ3_XXS | IQ1_S => &[0],
        IQ2_XS | IQ2_S | IQ3_S => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        TQ1_0 => &[52],
        TQ2_0 => &[64],
        MXFP4 => &[], // its E8M0 byte is set in `weight_row`
        IQ1_M => &[], // its f16 is spread over the scale words: set in `weight_row`
        _ => panic!("no generator for {ty:?}"),
    }
}

/// A random weight row of `nb` blocks.
pub fn weight_row(ty: GgmlType, nb: usize, rng: &mut StdRng, mode: Mode) -> Vec<u8> {
    let bs = ty.type_size();
    let mut out = vec![0u8; nb * bs];
    for blk in out.chunks_exact_mut(bs) {
        for b in blk.iter_mut() {
            *b = byte(rng, mode);
        }
        for &o in f16_fields(ty) {
            blk[o..o + 2].copy_from_slice(&f16_bytes(scale(rng, mode)));
        }
        if ty == GgmlType::MXFP4 {
            // E8M0 scale 2^(e − 128): around 1, with the extremes 0 (subnormal) and 255.
            blk[0] = match mode {
                Mode::ExtremeScales => {
                    [0, 1, 255, 120 + rng.random_range(0..16)][rng.random_range(0..4)]
                }
                _ => 120 + rng.random_range(0..16u8),
            };
        }
        if ty == GgmlType::IQ1_M {
            // d's nibbles are the top nibbles of the 4 scale words (bytes 48..56).
            let d = u16::from_le_bytes(f16_bytes(scale(rng, mode)));
            for k in 0..4 {
                let b = &mut blk[49 + 2 * k];
                *b = (*b & 0x0f) | (((d >> (4 * k)) & 0xf) as u8) << 4;
            }
        }
        if ty == GgmlType::Q8_0 {
            // The format's range is −127..=127 (ggml's quantizer never writes −128).
            for b in &mut blk[2..] {
                if *b == 0x80 {
                    *b = 0x81;
                }
            }
        }
    }
    out
}

fn act_byte(rng: &mut StdRng, mode: Mode, block_max: i8) -> i8 {
    match mode {
        Mode::Zero => 0,
        Mode::Max => block_max,
        Mode::Mixed => match rng.random_range(0..4) {
            0 => 0,
            1 => -128,
            2 => 127,
            _ => rng.random(),
        },
        _ => rng.random(),
    }
}

/// A random activation row of `n` values of `act` (Q8_0, Q8_1, Q8_K or F32), with
/// consistent sums (Q8_1's `s`, Q8_K's `bsums`), as the quantizers produce them.
pub fn act_row(act: GgmlType, n: usize, rng: &mut StdRng, mode: Mode) -> Vec<u8> {
    let mut out = Vec::new();
    let nb = n / act.block_size();
    for _ in 0..nb {
        let bm: i8 = if rng.random::<bool>() { -128 } else { 127 };
        match act {
            GgmlType::Q8_0 | GgmlType::Q8_1 => {
                let mut d = scale(rng, mode);
                let qs: Vec<i8> = (0..32).map(|_| act_byte(rng, mode, bm)).collect();
                let sum: i32 = qs.iter().map(|&q| q as i32).sum();
                let d16 = half::f16::from_f32(d).to_f32();
                if act == GgmlType::Q8_1 && !half::f16::from_f32(d16 * sum as f32).is_finite() {
                    // `s = d·Σq` must fit in f16 (it does for real activations of |x| < 2048).
                    d = 1.0;
                }
                out.extend_from_slice(&f16_bytes(d));
                if act == GgmlType::Q8_1 {
                    let d16 = half::f16::from_f32(d).to_f32();
                    out.extend_from_slice(&f16_bytes(d16 * sum as f32));
                }
                out.extend(qs.iter().map(|&q| q as u8));
            }
            GgmlType::Q8_K => {
                let d: f32 = match mode {
                    Mode::ExtremeScales => [1e-20f32, 1e10, 0.0, -3.5][rng.random_range(0..4)],
                    _ => rng.random_range(1e-4..1.0),
                };
                let qs: Vec<i8> = (0..256).map(|_| act_byte(rng, mode, bm)).collect();
                out.extend_from_slice(&d.to_le_bytes());
                out.extend(qs.iter().map(|&q| q as u8));
                for g in qs.chunks_exact(16) {
                    let s: i32 = g.iter().map(|&q| q as i32).sum();
                    out.extend_from_slice(&(s as i16).to_le_bytes());
                }
            }
            GgmlType::F32 => {
                let v: f32 = match mode {
                    Mode::Zero => 0.0,
                    Mode::ExtremeScales => [1e-30f32, 1e20, -7.5e-20, 0.0][rng.random_range(0..4)],
                    _ => rng.random_range(-4.0..4.0),
                };
                out.extend_from_slice(&v.to_le_bytes());
            }
            _ => panic!("not an activation type: {act:?}"),
        }
    }
    out
}

/// A random float weight row of `n` values.
pub fn float_weight_row(ty: GgmlType, n: usize, rng: &mut StdRng, mode: Mode) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        let v: f32 = match mode {
            Mode::Zero => 0.0,
            Mode::ExtremeScales => [65504.0f32, -6.1e-5, 1e-7, 0.0][rng.random_range(0..4)],
            _ => rng.random_range(-4.0..4.0),
        };
        match ty {
            GgmlType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            GgmlType::F16 => out.extend_from_slice(&f16_bytes(v)),
            GgmlType::BF16 => out.extend_from_slice(&((v.to_bits() >> 16) as u16).to_le_bytes()),
            _ => panic!("not a float type: {ty:?}"),
        }
    }
    out
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

// ---------------------------------------------------------------------------------------
// Independent f64 dequantization. Each weight value is `main + offset` (offset: the −m·dmin
// or +m part), kept apart so the tests can bound rounding by Σ (|main| + |offset|)·|a|.

fn h(b: &[u8], o: usize) -> f64 {
    half::f16::from_bits(u16::from_le_bytes([b[o], b[o + 1]])).to_f64()
}

/// (main, offset) of every value of a weight row.
pub fn dequant_weights(ty: GgmlType, row: &[u8]) -> (Vec<f64>, Vec<f64>) {
    use GgmlType::*;
    let mut main = Vec::new();
    let mut off = Vec::new();
    let mut push = |m: f64, o: f64| {
        main.push(m);
        off.push(o);
    };
    match ty {
        F32 => {
            for c in row.chunks_exact(4) {
                push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64, 0.0);
            }
            return (main, off);
        }
        F16 => {
            for c in row.chunks_exact(2) {
                push(h(c, 0), 0.0);
            }
            return (main, off);
        }
        BF16 => {
            for c in row.chunks_exact(2) {
                push(
                    f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64,
                    0.0,
                );
            }
            return (main, off);
        }
        IQ1_S | IQ1_M | TQ1_0 | TQ2_0 | MXFP4 => {
            // The crate's own decoder, itself checked bit for bit against gguf-py
            // (tests/dequant_lowbit.rs).
            let n = row.len() / ty.type_size() * ty.block_size();
            let mut v = vec![0f32; n];
            quant::dequantize(ty, row, &mut v).unwrap();
            return (v.iter().map(|&x| x as f64).collect(), vec![0.0; n]);
        }
        _ => {}
    }
    for b in row.chunks_exact(ty.type_size()) {
        match ty {
            Q4_0 | IQ4_NL => {
                let d = h(b, 0);
                let qs = &b[2..18];
                for half in 0..2 {
                    for j in 0..16 {
                        let q = if half == 0 { qs[j] & 15 } else { qs[j] >> 4 };
                        let v = if ty == Q4_0 {
                            q as f64 - 8.0
                        } else {
                            KVALUES_IQ4NL[q as usize] as f64
                        };
                        push(d * v, 0.0);
                    }
                }
            }
            Q4_1 => {
                let (d, m) = (h(b, 0), h(b, 2));
                let qs = &b[4..20];
                for half in 0..2 {
                    for j in 0..16 {
                        let q = if half == 0 { qs[j] & 15 } else { qs[j] >> 4 };
                        push(d * q as f64, m);
                    }
                }
            }
            Q5_0 | Q5_1 => {
                let d = h(b, 0);
                let (m, qh_o) = if ty == Q5_1 { (h(b, 2), 4) } else { (0.0, 2) };
                let qh = u32::from_le_bytes([b[qh_o], b[qh_o + 1], b[qh_o + 2], b[qh_o + 3]]);
                let qs = &b[qh_o + 4..qh_o + 20];
                for j in 0..32 {
                    let nib = if j < 16 { qs[j] & 15 } else { qs[j - 16] >> 4 };
                    let q = nib as i32 | ((((qh >> j) & 1) as i32) << 4);
                    if ty == Q5_0 {
                        push(d * (q - 16) as f64, 0.0);
                    } else {
                        push(d * q as f64, m);
                    }
                }
            }
            Q8_0 => {
                let d = h(b, 0);
                for &q in &b[2..34] {
                    push(d * (q as i8) as f64, 0.0);
                }
            }
            Q2_K => {
                let (d, dmin) = (h(b, 80), h(b, 82));
                let (sc, qs) = (&b[0..16], &b[16..80]);
                for v in 0..256 {
                    let (half, within) = (v / 128, v % 128);
                    let (shift, l) = (2 * (within / 32), within % 32);
                    let s = sc[v / 16];
                    let q = (qs[32 * half + l] >> shift) & 3;
                    push(d * (s & 15) as f64 * q as f64, -dmin * (s >> 4) as f64);
                }
            }
            Q3_K => {
                let d = h(b, 108);
                let (hm, qs, p) = (&b[0..32], &b[32..96], &b[96..108]);
                for v in 0..256 {
                    let j = v / 16;
                    let lo = if j < 8 { p[j] & 15 } else { p[j - 8] >> 4 };
                    let hi = (p[8 + j % 4] >> (2 * (j / 4))) & 3;
                    let s = (lo | (hi << 4)) as i32 - 32;
                    let (half, within) = (v / 128, v % 128);
                    let (shift, l) = (2 * (within / 32), within % 32);
                    let low = ((qs[32 * half + l] >> shift) & 3) as i32;
                    let q = low - if hm[l] & (1 << (v / 32)) != 0 { 0 } else { 4 };
                    push(d * (s * q) as f64, 0.0);
                }
            }
            Q4_K | Q5_K => {
                let (d, dmin) = (h(b, 0), h(b, 2));
                let p = &b[4..16];
                let (qh, qs) = if ty == Q5_K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for v in 0..256 {
                    let j = v / 32;
                    let (sc, m) = if j < 4 {
                        (p[j] & 63, p[j + 4] & 63)
                    } else {
                        (
                            (p[j + 4] & 15) | ((p[j - 4] >> 6) << 4),
                            (p[j + 4] >> 4) | ((p[j] >> 6) << 4),
                        )
                    };
                    let byte = qs[32 * (v / 64) + v % 32];
                    let mut q = if (v % 64) < 32 { byte & 15 } else { byte >> 4 } as i32;
                    if let Some(qh) = qh {
                        q += (((qh[v % 32] >> j) & 1) as i32) << 4;
                    }
                    push(d * (sc as i32 * q) as f64, -dmin * m as f64);
                }
            }
            Q6_K => {
                let d = h(b, 208);
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                for v in 0..256 {
                    let (half, within) = (v / 128, v % 128);
                    let (quarter, l) = (within / 32, within % 32);
                    let lb = ql[64 * half + 32 * (quarter % 2) + l];
                    let low = if quarter < 2 { lb & 15 } else { lb >> 4 };
                    let high = (qh[32 * half + l] >> (2 * quarter)) & 3;
                    let q = (low | (high << 4)) as i32 - 32;
                    let s = sc[v / 16] as i8 as i32;
                    push(d * (s * q) as f64, 0.0);
                }
            }
            IQ4_XS => {
                let d = h(b, 0);
                let sh = u16::from_le_bytes([b[2], b[3]]);
                let (sl, qs) = (&b[4..8], &b[8..136]);
                for ib in 0..8 {
                    let ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 15) as i32
                        | ((((sh >> (2 * ib)) & 3) as i32) << 4);
                    for j in 0..32 {
                        let byte = qs[16 * ib + j % 16];
                        let q = if j < 16 { byte & 15 } else { byte >> 4 };
                        push(
                            d * ((ls - 32) * KVALUES_IQ4NL[q as usize] as i32) as f64,
                            0.0,
                        );
                    }
                }
            }
            IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S => {
                // Codebook types: the crate's dequantization (bit-identical to gguf-py,
                // tests/dequant_lowbit.rs), exact in f32 (an f16 scale times small integers).
                let mut v = [0f32; 256];
                quant::dequantize(ty, b, &mut v).unwrap();
                v.iter().for_each(|&x| push(x as f64, 0.0));
            }
            _ => panic!("no dequantizer for {ty:?}"),
        }
    }
    (main, off)
}

/// Activation values, and per 32-value block the stored `s` of Q8_1 (else empty).
pub fn dequant_act(act: GgmlType, row: &[u8]) -> (Vec<f64>, Vec<f64>) {
    let mut vals = Vec::new();
    let mut sums = Vec::new();
    match act {
        GgmlType::F32 => {
            for c in row.chunks_exact(4) {
                vals.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64);
            }
        }
        GgmlType::Q8_0 => {
            for b in row.chunks_exact(34) {
                let d = h(b, 0);
                vals.extend(b[2..].iter().map(|&q| d * (q as i8) as f64));
            }
        }
        GgmlType::Q8_1 => {
            for b in row.chunks_exact(36) {
                let d = h(b, 0);
                sums.push(h(b, 2));
                vals.extend(b[4..].iter().map(|&q| d * (q as i8) as f64));
            }
        }
        GgmlType::Q8_K => {
            for b in row.chunks_exact(292) {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64;
                vals.extend(b[4..260].iter().map(|&q| d * (q as i8) as f64));
            }
        }
        _ => panic!("not an activation type: {act:?}"),
    }
    (vals, sums)
}

/// The exact dot product (f64) and the magnitude Σ (|main| + |offset|)·|a| that bounds
/// the kernels' f32 rounding.
pub fn reference_dot(weight: GgmlType, act: GgmlType, w: &[u8], a: &[u8]) -> (f64, f64) {
    let (main, off) = dequant_weights(weight, w);
    let (av, sums) = dequant_act(act, a);
    assert_eq!(main.len(), av.len());
    let mut dot = 0f64;
    let mut mag = 0f64;
    for i in 0..av.len() {
        dot += main[i] * av[i];
        mag += main[i].abs() * av[i].abs();
        if act == GgmlType::Q8_1 {
            // The offset multiplies the stored activation sum `s` (as ggml defines it).
            if i % 32 == 0 {
                let t = off[i] * sums[i / 32];
                dot += t;
                mag += t.abs();
            }
        } else {
            dot += off[i] * av[i];
            mag += off[i].abs() * av[i].abs();
        }
    }
    (dot, mag)
}

/// `x` quantized by the crate's activation quantizer for `act` (F32: the raw bytes).
pub fn quantize_act(act: GgmlType, x: &[f32]) -> Vec<u8> {
    match act {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::Q8_0 => {
            let mut b = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
            quant::quantize_act_q8_0(x, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        GgmlType::Q8_1 => {
            let mut b = vec![bytemuck::Zeroable::zeroed(); x.len() / 32];
            quant::quantize_act_q8_1(x, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        GgmlType::Q8_K => {
            let mut b: Vec<quant::BlockQ8K> = vec![bytemuck::Zeroable::zeroed(); x.len() / 256];
            quant::quantize_act_q8_k(x, &mut b).unwrap();
            bytemuck::cast_slice(&b).to_vec()
        }
        _ => unreachable!(),
    }
}
