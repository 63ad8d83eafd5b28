//! The AVX2 activation quantizers are bit-identical to the scalar definitions.

use proptest::prelude::*;
use quant::*;

/// Rows that stress the corner cases: a mix of magnitudes, exact ties in |max| with both
/// signs, values that land on .5 after scaling, zero blocks and repeated values.
fn row(n_blocks: usize, block: usize) -> impl Strategy<Value = Vec<f32>> {
    let n = n_blocks * block;
    (
        prop::collection::vec(-1000.0f32..1000.0, n),
        prop::collection::vec(0u8..8, n),
        prop::sample::select(vec![1e-6f32, 1e-2, 1.0, 127.0, 3e4]),
    )
        .prop_map(move |(mut v, kinds, scale)| {
            for (i, (x, k)) in v.iter_mut().zip(&kinds).enumerate() {
                *x = match k {
                    0 => 0.0,
                    1 => scale,  // ties in |max| ...
                    2 => -scale, // ... with both signs
                    // With scale 127 the quantizer's multiplier is exactly ±1: these are halves.
                    3 => ((*x * scale / 1000.0).trunc() + 0.5).clamp(-scale, scale),
                    4 => *x * 1e-3,
                    _ => *x * scale / 1000.0,
                };
                // Every fifth block all zeros.
                if (i / block) % 5 == 4 {
                    *x = 0.0;
                }
            }
            v
        })
}

#[cfg(target_arch = "x86_64")]
fn have_avx2() -> bool {
    let have = std::is_x86_feature_detected!("avx2");
    assert_eq!(have, activation_simd_available());
    have
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn q8_k_avx2_equals_scalar(x in row(3, QK_K)) {
        prop_assume!(have_avx2());
        let mut a = vec![BlockQ8K::zeroed(); 3];
        let mut b = vec![BlockQ8K::zeroed(); 3];
        quantize_act_q8_k_scalar(&x, &mut a).unwrap();
        // SAFETY: AVX2 checked above, sizes match.
        unsafe { quant::quantize::activation::avx2::q8_k_row(&x, &mut b) };
        prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&a), bytemuck::cast_slice::<_, u8>(&b));
        // The dispatcher takes the AVX2 path here.
        quantize_act_q8_k(&x, &mut b).unwrap();
        prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&a), bytemuck::cast_slice::<_, u8>(&b));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn q8_0_avx2_equals_scalar(x in row(9, QK)) {
        prop_assume!(have_avx2());
        let mut a = vec![BlockQ8_0::zeroed(); 9];
        let mut b = vec![BlockQ8_0::zeroed(); 9];
        quantize_act_q8_0_scalar(&x, &mut a).unwrap();
        // SAFETY: AVX2 checked above, sizes match.
        unsafe { quant::quantize::activation::avx2::q8_0_row(&x, &mut b) };
        prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&a), bytemuck::cast_slice::<_, u8>(&b));
        quantize_act_q8_0(&x, &mut b).unwrap();
        prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&a), bytemuck::cast_slice::<_, u8>(&b));
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn q8_1_avx2_equals_scalar(x in row(9, QK)) {
        prop_assume!(have_avx2());
        let mut a = vec![BlockQ8_1::zeroed(); 9];
        let mut b = vec![BlockQ8_1::zeroed(); 9];
        quantize_act_q8_1_scalar(&x, &mut a).unwrap();
        // SAFETY: AVX2 checked above, sizes match.
        unsafe { quant::quantize::activation::avx2::q8_1_row(&x, &mut b) };
        prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&a), bytemuck::cast_slice::<_, u8>(&b));
        quantize_act_q8_1(&x, &mut b).unwrap();
        prop_assert_eq!(bytemuck::cast_slice::<_, u8>(&a), bytemuck::cast_slice::<_, u8>(&b));
    }
}

#[test]
fn dispatcher_matches_scalar_on_gaussian_like_rows() {
    // Deterministic rows, whatever the CPU: the public entry points equal the definition.
    let x: Vec<f32> = (0..QK_K * 4)
        .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.013)
        .collect();
    let mut a = vec![BlockQ8K::zeroed(); 4];
    let mut b = vec![BlockQ8K::zeroed(); 4];
    quantize_act_q8_k_scalar(&x, &mut a).unwrap();
    quantize_act_q8_k(&x, &mut b).unwrap();
    assert_eq!(
        bytemuck::cast_slice::<_, u8>(&a),
        bytemuck::cast_slice::<_, u8>(&b)
    );
    let mut a = vec![BlockQ8_0::zeroed(); 32];
    let mut b = vec![BlockQ8_0::zeroed(); 32];
    quantize_act_q8_0_scalar(&x, &mut a).unwrap();
    quantize_act_q8_0(&x, &mut b).unwrap();
    assert_eq!(
        bytemuck::cast_slice::<_, u8>(&a),
        bytemuck::cast_slice::<_, u8>(&b)
    );
}

use bytemuck::Zeroable;
