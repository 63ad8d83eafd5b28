//! Property tests of `quant::dot`, per weight type:
//! - the AVX2 kernels' per-block integer sums are bit-identical to the scalar reference's;
//! - the AVX2 f32 result is within 1e-5 of Σ|terms| of the scalar one;
//! - the scalar result is within 1e-5 of Σ|terms| of an independent f64 evaluation of
//!   Σ dequant(w)·dequant(a);
//! - `dot_multi` over 1..=7 activation rows is bit-identical to `dot` per row (batch
//!   invariance), on both paths.
//!
//! Rows mix ordinary data with all-zero blocks, max-magnitude quants (all-15 nibbles,
//! activations of −128 / 127) and extreme scales (±65504, f16 subnormals, 0).

mod dot_common;

use dot_common::*;
use proptest::prelude::*;
use quant::dot::{self, testing, vec_dot_with, DotError, SimdPath};
use quant::GgmlType;

const REL_TOL: f64 = 1e-5;

fn check_case(ty: GgmlType, seed: u64, mode: usize, count: usize) -> Result<(), TestCaseError> {
    let mode = MODES[mode];
    let mut rng = rng(seed);
    let act = dot::act_type_for(ty).unwrap();
    let float = matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    // `count` is blocks for quantized types, values for float ones.
    let n = count * ty.block_size();
    let w = if float {
        float_weight_row(ty, n, &mut rng, mode)
    } else {
        weight_row(ty, count, &mut rng, mode)
    };
    let acts: Vec<Vec<u8>> = (0..7).map(|_| act_row(act, n, &mut rng, mode)).collect();

    let scalar = vec_dot_with(ty, SimdPath::Scalar).unwrap();
    prop_assert_eq!(scalar.path, SimdPath::Scalar);
    // Every SIMD path this CPU has (asking for a missing one falls back to a lower path).
    let avx2 = vec_dot_with(ty, SimdPath::Avx2).unwrap();
    let vnni = vec_dot_with(ty, SimdPath::Avx512Vnni).unwrap();
    let mut simd = vec![avx2];
    if vnni.path != avx2.path {
        simd.push(vnni);
    }
    simd.retain(|vd| vd.path != SimdPath::Scalar);

    for a in &acts {
        let (exact, mag) = reference_dot(ty, act, &w, a);
        let tol = REL_TOL * mag + 1e-30;
        let s = scalar.dot(n, &w, a);
        prop_assert!(
            (s as f64 - exact).abs() <= tol,
            "{ty:?} scalar {s} vs exact {exact} (tol {tol}, mode {mode:?}, n {n})"
        );
        if !float {
            let is = testing::block_ints_scalar(ty, n, &w, a).unwrap();
            for vd in &simd {
                let ia = testing::block_ints_simd(vd.path, ty, n, &w, a).unwrap();
                prop_assert_eq!(
                    &ia,
                    &is,
                    "{:?} {:?} integer block sums, mode {:?}",
                    ty,
                    vd.path,
                    mode
                );
            }
        }
        let mut first: Option<f32> = None;
        for vd in &simd {
            let v = vd.dot(n, &w, a);
            prop_assert!(
                (v as f64 - s as f64).abs() <= tol,
                "{ty:?} {:?} {v} vs scalar {s} (tol {tol}, mode {mode:?}, n {n})",
                vd.path
            );
            // The SIMD paths share their f32 code: VNNI == AVX2 bit for bit.
            if let Some(f) = first {
                prop_assert_eq!(f.to_bits(), v.to_bits(), "{:?} {:?} vs AVX2", ty, vd.path);
            }
            first = Some(v);
        }
    }
    for vd in std::iter::once(&scalar).chain(&simd) {
        for k in 1..=acts.len() {
            let rows: Vec<&[u8]> = acts[..k].iter().map(|a| a.as_slice()).collect();
            let mut out = vec![f32::NAN; k];
            vd.dot_multi(n, &w, &rows, &mut out);
            for r in 0..k {
                let single = vd.dot(n, &w, &acts[r]);
                prop_assert_eq!(
                    out[r].to_bits(),
                    single.to_bits(),
                    "{:?} {:?} dot_multi row {} of {}: {} vs {}",
                    ty,
                    vd.path,
                    r,
                    k,
                    out[r],
                    single
                );
            }
        }
    }
    Ok(())
}

macro_rules! type_tests {
    ($($name:ident => $ty:ident, $max:expr;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $name(seed in any::<u64>(), mode in 0..MODES.len(), count in 1..=$max) {
                check_case(GgmlType::$ty, seed, mode, count)?;
            }
        }
    )*};
}

type_tests! {
    dot_q4_0_x_q8_0 => Q4_0, 17usize;
    dot_q4_1_x_q8_1 => Q4_1, 17usize;
    dot_q5_0_x_q8_0 => Q5_0, 17usize;
    dot_q5_1_x_q8_1 => Q5_1, 17usize;
    dot_q8_0_x_q8_0 => Q8_0, 17usize;
    dot_iq4_nl_x_q8_0 => IQ4_NL, 17usize;
    dot_q2_k_x_q8_k => Q2_K, 5usize;
    dot_q3_k_x_q8_k => Q3_K, 5usize;
    dot_q4_k_x_q8_k => Q4_K, 5usize;
    dot_q5_k_x_q8_k => Q5_K, 5usize;
    dot_q6_k_x_q8_k => Q6_K, 5usize;
    dot_iq4_xs_x_q8_k => IQ4_XS, 5usize;
    dot_f32_x_f32 => F32, 300usize;
    dot_f16_x_f32 => F16, 300usize;
    dot_bf16_x_f32 => BF16, 300usize;
}

#[test]
fn dot_avx2_path_selected_when_cpu_has_it() {
    #[cfg(target_arch = "x86_64")]
    {
        let has = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c");
        let vnni = has
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw");
        let want = match (has, vnni) {
            (_, true) => SimdPath::Avx512Vnni,
            (true, false) => SimdPath::Avx2,
            _ => SimdPath::Scalar,
        };
        assert_eq!(dot::simd_path(), want.name());
        for ty in dot::DOT_TYPES {
            assert_eq!(dot::vec_dot_for(ty).unwrap().path, want, "{ty:?}");
            let avx2 = vec_dot_with(ty, SimdPath::Avx2).unwrap();
            assert_eq!(
                avx2.path,
                if has {
                    SimdPath::Avx2
                } else {
                    SimdPath::Scalar
                },
                "{ty:?}"
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    assert_eq!(dot::simd_path(), "scalar");
}

#[test]
fn dot_act_types_are_ggml_partners() {
    use GgmlType::*;
    for (w, a) in [
        (Q4_0, Q8_0),
        (Q4_1, Q8_1),
        (Q5_0, Q8_0),
        (Q5_1, Q8_1),
        (Q8_0, Q8_0),
        (IQ4_NL, Q8_0),
        (Q2_K, Q8_K),
        (Q3_K, Q8_K),
        (Q4_K, Q8_K),
        (Q5_K, Q8_K),
        (Q6_K, Q8_K),
        (IQ4_XS, Q8_K),
        (F32, F32),
        (F16, F32),
        (BF16, F32),
    ] {
        assert_eq!(dot::vec_dot_for(w).unwrap().act, a, "{w:?}");
    }
}

#[test]
fn dot_rejects_bad_types_and_lengths() {
    assert_eq!(
        dot::vec_dot_for(GgmlType::Q8_K).unwrap_err(),
        DotError::Unsupported(GgmlType::Q8_K)
    );
    assert_eq!(
        dot::vec_dot_for(GgmlType::I8).unwrap_err(),
        DotError::Unsupported(GgmlType::I8)
    );
    let vd = dot::vec_dot_for(GgmlType::Q4_K).unwrap();
    let w = vec![0u8; 144];
    let a = vec![0u8; 292];
    assert_eq!(vd.try_dot(256, &w, &a), Ok(0.0));
    assert!(matches!(
        vd.try_dot(100, &w, &a),
        Err(DotError::NotBlockMultiple {
            n: 100,
            block_size: 256,
            ..
        })
    ));
    let e = vd.try_dot(256, &w[..143], &a).unwrap_err();
    assert_eq!(
        e.to_string(),
        "weight row (Q4_K): 256 values take 144 bytes, but the row has 143"
    );
    assert!(matches!(
        vd.try_dot(256, &w, &a[..291]),
        Err(DotError::RowLength {
            which: "activation",
            expected: 292,
            actual: 291,
            ..
        })
    ));
    let mut out = [0f32; 2];
    assert_eq!(
        vd.try_dot_multi(256, &w, &[&a], &mut out),
        Err(DotError::OutputCount { rows: 1, outs: 2 })
    );
    assert!(vd
        .try_dot_multi(256, &w, &[&a, &a[..10]], &mut out)
        .is_err());
}

/// Degenerate sizes: empty rows, no activation rows, and an `n` whose byte length overflows.
#[test]
fn dot_empty_and_overflowing_lengths() {
    for ty in dot::DOT_TYPES {
        for path in [SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512Vnni] {
            let vd = vec_dot_with(ty, path).unwrap();
            assert_eq!(vd.try_dot(0, &[], &[]), Ok(0.0), "{ty:?} {path:?}");
            let mut out: [f32; 0] = [];
            assert_eq!(vd.try_dot_multi(0, &[], &[], &mut out), Ok(()));
            let huge = (usize::MAX / ty.block_size()) * ty.block_size(); // bytes overflow
            assert!(
                vd.try_dot(huge, &[0u8; 64], &[0u8; 64]).is_err(),
                "{ty:?} {path:?}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "VecDot::dot")]
fn dot_panics_on_length_mismatch() {
    let vd = dot::vec_dot_for(GgmlType::Q8_0).unwrap();
    vd.dot(32, &[0u8; 34], &[0u8; 33]);
}

/// Activation rows need no alignment (a Q8_K row at an odd address still works).
#[test]
fn dot_q4_k_unaligned_activation_row() {
    let mut rng = rng(7);
    let w = weight_row(GgmlType::Q4_K, 3, &mut rng, Mode::Random);
    let a = act_row(GgmlType::Q8_K, 768, &mut rng, Mode::Random);
    let mut shifted = vec![0u8; a.len() + 1];
    shifted[1..].copy_from_slice(&a);
    for path in [SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512Vnni] {
        let vd = vec_dot_with(GgmlType::Q4_K, path).unwrap();
        assert_eq!(
            vd.dot(768, &w, &a).to_bits(),
            vd.dot(768, &w, &shifted[1..]).to_bits()
        );
    }
}
