//! Quantize → dequantize round trips: error bounds per type on Gaussian data and edge
//! cases, determinism, and ggml's exact rounding rules for the 8-bit types.

use gguf::GgmlType;
use quant::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

/// N(0, 1) samples (Box–Muller), seeded.
fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>().max(1e-300);
        let u2: f64 = rng.random();
        let r = (-2.0 * u1.ln()).sqrt();
        out.push((r * (2.0 * std::f64::consts::PI * u2).cos()) as f32);
        out.push((r * (2.0 * std::f64::consts::PI * u2).sin()) as f32);
    }
    out.truncate(n);
    out
}

fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
    let mut bytes = vec![0u8; ty.row_bytes(x.len() as u64).unwrap() as usize];
    quantize(ty, x, &mut bytes).unwrap_or_else(|e| panic!("{ty}: {e}"));
    let mut y = vec![f32::NAN; x.len()];
    match ty {
        // Activation types are not weight types: decode them through their blocks.
        GgmlType::Q8_K => {
            let blocks: Vec<BlockQ8K> = bytes
                .chunks_exact(292)
                .map(bytemuck::pod_read_unaligned)
                .collect();
            dequantize_q8_k(&blocks, &mut y).unwrap();
        }
        GgmlType::Q8_1 => dequantize_q8_1(cast_blocks(&bytes).unwrap(), &mut y).unwrap(),
        _ => dequantize(ty, &bytes, &mut y).unwrap(),
    }
    y
}

fn rms(v: impl Iterator<Item = f32>) -> f32 {
    let (s, n) = v.fold((0.0f64, 0usize), |(s, n), x| {
        (s + (x as f64) * (x as f64), n + 1)
    });
    (s / n.max(1) as f64).sqrt() as f32
}

fn rel_rms_error(x: &[f32], y: &[f32]) -> f32 {
    rms(x.iter().zip(y).map(|(a, b)| a - b)) / rms(x.iter().copied())
}

const N: usize = 256 * 64;

/// Relative RMS error bounds on N(0, 1) data (measured values in comments; the
/// quantizers reproduce llama-quantize's bytes, so these are ggml's own error levels).
const GAUSSIAN_BOUNDS: [(GgmlType, f32); 10] = [
    (GgmlType::F16, 0.0003),  // 0.00021
    (GgmlType::BF16, 0.0020), // 0.00168
    (GgmlType::Q8_0, 0.0065), // 0.00537
    (GgmlType::Q8_1, 0.0065), // 0.00537
    (GgmlType::Q8_K, 0.0085), // 0.00708
    (GgmlType::Q6_K, 0.021),  // 0.0178
    (GgmlType::Q5_K, 0.043),  // 0.0362
    (GgmlType::Q4_K, 0.085),  // 0.0713
    (GgmlType::Q5_0, 0.050),  // 0.0429
    (GgmlType::Q4_0, 0.100),  // 0.0860
];

#[test]
fn gaussian_error_within_bounds_for_every_type() {
    for seed in [1, 2] {
        let x = gaussian(N, seed);
        for (ty, bound) in GAUSSIAN_BOUNDS {
            let e = rel_rms_error(&x, &round_trip(ty, &x));
            assert!(
                e <= bound,
                "{ty} seed {seed}: relative RMS error {e} > {bound}"
            );
            // Scaling the data scales the error (no hidden absolute thresholds) as long
            // as the f16 scales stay normal.
            for scale in [1e-3f32, 1e4] {
                let xs: Vec<f32> = x.iter().map(|v| v * scale).collect();
                let e = rel_rms_error(&xs, &round_trip(ty, &xs));
                assert!(
                    e <= bound * 1.2,
                    "{ty} × {scale:e}: relative RMS error {e} > {}",
                    bound * 1.2
                );
            }
        }
    }
    // More bits, less error: the k-quants are ordered.
    let x = gaussian(N, 3);
    let e = |ty| rel_rms_error(&x, &round_trip(ty, &x));
    assert!(e(GgmlType::Q6_K) < e(GgmlType::Q5_K) / 1.8);
    assert!(e(GgmlType::Q5_K) < e(GgmlType::Q4_K) / 1.8);
    assert!(e(GgmlType::Q4_K) < e(GgmlType::Q4_0));
}

#[test]
fn all_zeros_stay_zero() {
    let x = vec![0.0f32; N];
    for (ty, _) in GAUSSIAN_BOUNDS {
        let y = round_trip(ty, &x);
        assert!(y.iter().all(|v| *v == 0.0), "{ty}");
    }
}

#[test]
fn constants_are_reproduced() {
    for c in [0.37f32, -0.37, 1.0, -1e3, 3e-2] {
        let x = vec![c; N];
        for (ty, _) in GAUSSIAN_BOUNDS {
            // f16 scales carry 11 bits, bf16 values 8.
            let bound = if ty == GgmlType::BF16 { 4e-3 } else { 2e-3 };
            let e = rel_rms_error(&x, &round_trip(ty, &x));
            assert!(e <= bound, "{ty} constant {c}: relative error {e}");
        }
    }
}

#[test]
fn one_huge_outlier_is_kept_and_does_not_leak() {
    let mut x = gaussian(N, 4);
    x[1000] = 1e4;
    let clean = gaussian(N, 4);
    for (ty, bound) in GAUSSIAN_BOUNDS {
        let y = round_trip(ty, &x);
        assert!(y.iter().all(|v| v.is_finite()), "{ty}");
        assert!(
            (y[1000] - 1e4).abs() <= 40.0,
            "{ty}: outlier became {}",
            y[1000]
        );
        // Blocks other than the outlier's super-block are untouched.
        let y_clean = round_trip(ty, &clean);
        assert_eq!(&y[1024..], &y_clean[1024..], "{ty}");
        assert_eq!(&y[..768], &y_clean[..768], "{ty}");
        let e = rel_rms_error(&x[1024..], &y[1024..]);
        assert!(e <= bound, "{ty}: {e}");
    }
}

#[test]
fn tiny_values_stay_finite_and_bounded() {
    // The legacy and k-quant formats store f16 scales, which underflow below ~6e-8: data
    // of magnitude ~1e-5 or less loses precision or becomes zero (as in ggml), but never
    // produces non-finite or wildly scaled values. Types with f32 scales keep their bound.
    let x = gaussian(N, 5);
    for (ty, bound) in GAUSSIAN_BOUNDS {
        for scale in [1e-5f32, 1e-8, 1e-30] {
            let xs: Vec<f32> = x.iter().map(|v| v * scale).collect();
            let y = round_trip(ty, &xs);
            assert!(y.iter().all(|v| v.is_finite()), "{ty} × {scale:e}");
            let max_x = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let max_y = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(
                max_y <= 4.0 * max_x,
                "{ty} × {scale:e}: max |y| {max_y:e} vs max |x| {max_x:e}"
            );
            if matches!(ty, GgmlType::Q8_K) || (ty == GgmlType::BF16 && scale >= 1e-30) {
                let e = rel_rms_error(&xs, &y);
                assert!(e <= bound, "{ty} × {scale:e}: {e}");
            }
        }
    }
}

#[test]
fn quantizers_are_deterministic_and_blockwise() {
    let x = gaussian(N, 6);
    for (ty, _) in GAUSSIAN_BOUNDS {
        let size = ty.row_bytes(N as u64).unwrap() as usize;
        let mut a = vec![0u8; size];
        let mut b = vec![0u8; size];
        quantize(ty, &x, &mut a).unwrap();
        quantize(ty, &x, &mut b).unwrap();
        assert_eq!(a, b, "{ty}");
        // Quantizing the halves separately gives the same bytes (no state across blocks).
        let mut c = vec![0u8; size];
        let (c1, c2) = c.split_at_mut(size / 2);
        quantize(ty, &x[..N / 2], c1).unwrap();
        quantize(ty, &x[N / 2..], c2).unwrap();
        assert_eq!(a, c, "{ty}");
    }
}

#[test]
fn q8_0_round_trip_error_is_at_most_half_a_step() {
    let x = gaussian(N, 7);
    let mut blocks = vec![BlockQ8_0::zeroed(); N / QK];
    let mut y = vec![0.0f32; N];
    for act in [false, true] {
        if act {
            quantize_act_q8_0(&x, &mut blocks).unwrap();
        } else {
            quantize_q8_0(&x, &mut blocks).unwrap();
        }
        dequantize_q8_0(&blocks, &mut y).unwrap();
        for (b, (xb, yb)) in blocks.iter().zip(x.chunks(QK).zip(y.chunks(QK))) {
            let d16 = b.d.to_f32();
            let d = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0;
            // Half a step, plus what rounding d to f16 moves the largest level.
            let bound = d16 / 2.0 + 127.0 * (d16 - d).abs() + 1e-7;
            for (a, b) in xb.iter().zip(yb) {
                assert!((a - b).abs() <= bound, "act {act}: {a} → {b}, d {d16}");
            }
        }
    }
}

#[test]
fn q8_k_round_trip_error_is_at_most_half_a_step() {
    let x = gaussian(N, 8);
    let mut blocks = vec![BlockQ8K::zeroed(); N / QK_K];
    let mut y = vec![0.0f32; N];
    quantize_act_q8_k(&x, &mut blocks).unwrap();
    dequantize_q8_k(&blocks, &mut y).unwrap();
    for (b, (xb, yb)) in blocks.iter().zip(x.chunks(QK_K).zip(y.chunks(QK_K))) {
        for (a, v) in xb.iter().zip(yb) {
            assert!(
                (a - v).abs() <= b.d.abs() * 0.5 * (1.0 + 1e-5),
                "{a} → {v}, d {}",
                b.d
            );
        }
        for (g, s) in b.qs.chunks(16).zip(&b.bsums) {
            assert_eq!(g.iter().map(|&q| q as i16).sum::<i16>(), *s);
        }
    }
}

/// A block of 256 whose value of largest magnitude is `max` at `at`, with some values
/// landing exactly on .5 after scaling.
fn q8_k_probe(max: f32, at: usize) -> [f32; QK_K] {
    let mut x = [0.0f32; QK_K];
    x[at] = max;
    // With |max| = 127 the scale is ±1: these sit exactly halfway between integers.
    x[1] = 2.5;
    x[2] = 3.5;
    x[3] = -0.5;
    x[4] = -1.5;
    x[5] = 10.25;
    x
}

#[test]
fn q8_k_follows_ggml_rounding_and_sign_rules() {
    // Largest magnitude positive → iscale = −127/max < 0: that value becomes −127 and d < 0.
    let b = quantize_block_q8_k_scalar(&q8_k_probe(127.0, 0));
    assert_eq!(b.d, -1.0);
    assert_eq!(b.qs[0], -127);
    // nearest_int rounds halves to even: −2.5 → −2, −3.5 → −4, 0.5 → 0, 1.5 → 2.
    assert_eq!(&b.qs[1..6], &[-2, -4, 0, 2, -10]);
    // Largest magnitude negative → d > 0, signs kept.
    let b = quantize_block_q8_k_scalar(&q8_k_probe(-127.0, 7));
    assert_eq!(b.d, 1.0);
    assert_eq!(b.qs[7], -127);
    assert_eq!(&b.qs[1..6], &[2, 4, 0, -2, 10]);
    // A tie in magnitude: the first occurrence picks the sign.
    let mut x = q8_k_probe(-127.0, 7);
    x[9] = 127.0;
    let b = quantize_block_q8_k_scalar(&x);
    assert_eq!((b.d, b.qs[7], b.qs[9]), (1.0, -127, 127));
    x[6] = 127.0;
    let b = quantize_block_q8_k_scalar(&x);
    assert_eq!((b.d, b.qs[6], b.qs[7]), (-1.0, -127, 127));
    // d is 1/iscale in f32, not max/127.
    let mut x = [0.25f32; QK_K];
    x[17] = 3.0;
    assert_eq!(quantize_block_q8_k_scalar(&x).d, 1.0 / (-127.0f32 / 3.0));
    // All zeros: d = 0, no NaN.
    let b = quantize_block_q8_k_scalar(&[0.0; QK_K]);
    assert_eq!(b.d, 0.0);
    assert!(b.qs.iter().all(|&q| q == 0) && b.bsums.iter().all(|&s| s == 0));
}

#[test]
fn q8_0_follows_ggml_rounding_rules() {
    let mut x = [0.0f32; QK];
    x[0] = 127.0; // d = 1 exactly
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 3.5;
    x[4] = 0.5;
    // Weights (ggml's quantize_row_q8_0_ref, roundf): halves away from zero.
    let w = quantize_block_q8_0(&x);
    assert_eq!(w.d.to_f32(), 1.0);
    assert_eq!(&w.qs[..5], &[127, 3, -3, 4, 1]);
    // Activations (ggml's x86 quantize_row_q8_0, _mm256_round_ps): halves to even.
    let a = quantize_block_act_q8_0_scalar(&x);
    assert_eq!(a.d.to_f32(), 1.0);
    assert_eq!(&a.qs[..5], &[127, 2, -2, 4, 0]);
    // Q8_1 carries s = d·Σq.
    let mut blocks = [BlockQ8_1::zeroed()];
    quantize_act_q8_1(&x, &mut blocks).unwrap();
    assert_eq!(blocks[0].qs, a.qs);
    assert_eq!(blocks[0].s.to_f32(), (127 + 2 - 2 + 4) as f32);
    // Q4_0: d = max/−8 keeps the sign of the largest value; it maps to level 0.
    let q = quantize_block_q4_0(&x);
    assert_eq!(q.d.to_f32(), -127.0 / 8.0);
    assert_eq!(q.qs[0] & 0xF, 0);
}

#[test]
fn quantize_errors_are_precise() {
    let x = vec![0.5f32; 512];
    let mut out = vec![0u8; 288];
    quantize(GgmlType::Q4_K, &x, &mut out).unwrap();
    let e = quantize(GgmlType::Q4_K, &x, &mut out[..200]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: 512 values take 288 bytes, but the data has 200"
    );
    let e = quantize(GgmlType::Q4_K, &x[..300], &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: 300 values is not a multiple of the block size 256"
    );
    let e = quantize(GgmlType::IQ2_XXS, &x, &mut out).unwrap_err();
    assert!(
        e.to_string().starts_with(
            "cannot quantize to tensor type IQ2_XXS (supported: F32, F16, Q4_0, Q5_0, Q8_0"
        ),
        "{e}"
    );
    let mut bad = x.clone();
    bad[300] = f32::NAN;
    let e = quantize(GgmlType::Q4_K, &bad, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot quantize to Q4_K: value 300 is NaN (not finite)"
    );
    let e = quantize_q6_k(&x, &mut [BlockQ6K::zeroed(); 3]).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::BlockCount {
                n_blocks: 3,
                expected: 768,
                actual: 512,
                ..
            }
        ),
        "{e}"
    );
    let e = quantize_act_q8_k(&x, &mut [BlockQ8K::zeroed(); 1]).unwrap_err();
    assert!(matches!(e, QuantError::BlockCount { .. }), "{e}");
    for ty in QUANTIZE_TYPES {
        assert!(can_quantize(ty));
    }
}

use bytemuck::Zeroable;
