//! Property tests of the low-bit i-quant dots (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S × Q8_K),
//! as `dot_kernels.rs` does for the other types:
//! - the SIMD kernels' per-block integer sums are bit-identical to the scalar reference's;
//! - the SIMD f32 results are within 1e-5 of Σ|terms| of the scalar one, and VNNI == AVX2;
//! - the scalar result is within 1e-5 of Σ|terms| of Σ dequant(w)·dequant(a) in f64 (the
//!   dequantization is bit-identical to gguf-py: `dequant_lowbit.rs`);
//! - `dot_multi` over 1..=7 rows equals `dot` per row bit for bit (batch invariance).
//!
//! Any byte pattern is a valid block of these types except the f16 scale, so weights are
//! random bytes (or all 0 / all 0xFF) with finite scales (ordinary or extreme). To cover a new
//! type, add a line to `type_tests!`.

mod dot_common;

use dot_common::*;
use proptest::prelude::*;
use quant::dot::{self, testing, vec_dot_with, SimdPath};
use quant::GgmlType;
use rand::rngs::StdRng;
use rand::Rng;

const REL_TOL: f64 = 1e-5;

fn weight_row(ty: GgmlType, nb: usize, rng: &mut StdRng, mode: Mode) -> Vec<u8> {
    let bs = ty.type_size();
    let mut out = vec![0u8; nb * bs];
    for blk in out.chunks_exact_mut(bs) {
        for b in blk.iter_mut() {
            *b = match mode {
                Mode::Zero => 0,
                Mode::Max => 0xFF,
                Mode::Mixed => [0, 0xFF, rng.random()][rng.random_range(0..3)],
                _ => rng.random(),
            };
        }
        let d: f32 = match mode {
            Mode::ExtremeScales => {
                [65504.0, -65504.0, 5.96e-8, -1.2e-7, 0.0, 1.0][rng.random_range(0..6)]
            }
            _ => rng.random_range(1e-3..2.0) * if rng.random::<bool>() { 1.0 } else { -1.0 },
        };
        blk[..2].copy_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
    }
    out
}

/// Σ w·a in f64 from the f32 dequantization (exact here: each value is an f16 scale times
/// small integers) and Σ |w·a|.
fn reference(ty: GgmlType, w: &[u8], a: &[u8], n: usize) -> (f64, f64) {
    let mut wv = vec![0f32; n];
    quant::dequantize(ty, w, &mut wv).unwrap();
    let (av, _) = dequant_act(GgmlType::Q8_K, a);
    let dot = wv.iter().zip(&av).map(|(&x, &y)| x as f64 * y).sum();
    let mag = wv
        .iter()
        .zip(&av)
        .map(|(&x, &y)| (x as f64 * y).abs())
        .sum();
    (dot, mag)
}

fn check_case(ty: GgmlType, seed: u64, mode: usize, nb: usize) -> Result<(), TestCaseError> {
    let mode = MODES[mode];
    let mut rng = rng(seed);
    let n = nb * 256;
    let w = weight_row(ty, nb, &mut rng, mode);
    let acts: Vec<Vec<u8>> = (0..7)
        .map(|_| act_row(GgmlType::Q8_K, n, &mut rng, mode))
        .collect();
    let scalar = vec_dot_with(ty, SimdPath::Scalar).unwrap();
    prop_assert_eq!(scalar.act, GgmlType::Q8_K);
    let avx2 = vec_dot_with(ty, SimdPath::Avx2).unwrap();
    let vnni = vec_dot_with(ty, SimdPath::Avx512Vnni).unwrap();
    let mut simd = vec![avx2];
    if vnni.path != avx2.path {
        simd.push(vnni);
    }
    simd.retain(|vd| vd.path != SimdPath::Scalar);

    for a in &acts {
        let (exact, mag) = reference(ty, &w, a, n);
        let tol = REL_TOL * mag + 1e-30;
        let s = scalar.dot(n, &w, a);
        prop_assert!(
            (s as f64 - exact).abs() <= tol,
            "{ty:?} scalar {s} vs exact {exact} (tol {tol}, mode {mode:?}, nb {nb})"
        );
        let is = testing::block_ints_scalar(ty, n, &w, a).unwrap();
        let mut first: Option<f32> = None;
        for vd in &simd {
            let ia = testing::block_ints_simd(vd.path, ty, n, &w, a).unwrap();
            prop_assert_eq!(
                &ia,
                &is,
                "{:?} {:?} integer sums, mode {:?}",
                ty,
                vd.path,
                mode
            );
            let v = vd.dot(n, &w, a);
            prop_assert!(
                (v as f64 - s as f64).abs() <= tol,
                "{ty:?} {:?} {v} vs scalar {s} (tol {tol}, mode {mode:?})",
                vd.path
            );
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
                    "{:?} {:?} row {} of {}",
                    ty,
                    vd.path,
                    r,
                    k
                );
            }
        }
    }
    Ok(())
}

macro_rules! type_tests {
    ($($name:ident => $ty:ident;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $name(seed in any::<u64>(), mode in 0..MODES.len(), nb in 1..=5usize) {
                check_case(GgmlType::$ty, seed, mode, nb)?;
            }
        }
    )*};
}

type_tests! {
    dot_iq2_xxs_x_q8_k => IQ2_XXS;
    dot_iq2_xs_x_q8_k => IQ2_XS;
    dot_iq2_s_x_q8_k => IQ2_S;
    dot_iq3_xxs_x_q8_k => IQ3_XXS;
    dot_iq3_s_x_q8_k => IQ3_S;
}

/// The SIMD kernels on every SIMD path this CPU has (the proptests above cover what runs).
#[test]
fn low_bit_dots_use_the_best_path_and_q8_k() {
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::IQ2_XS,
        GgmlType::IQ2_S,
        GgmlType::IQ3_XXS,
        GgmlType::IQ3_S,
    ] {
        let vd = dot::vec_dot_for(ty).unwrap();
        assert_eq!(vd.path.name(), dot::simd_path(), "{ty}");
        assert_eq!(vd.act, GgmlType::Q8_K, "{ty}");
        assert!(dot::DOT_TYPES.contains(&ty));
    }
}
