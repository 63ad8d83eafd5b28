//! Property tests of the IQ1_S, IQ1_M, TQ1_0, TQ2_0 and MXFP4 dot products (as
//! `dot_kernels.rs` does for the older types):
//! - the SIMD kernels' per-block integers equal the scalar reference's, bit for bit, on
//!   AVX2 and AVX512-VNNI, and VNNI's f32 result equals AVX2's;
//! - the SIMD f32 result is within 1e-5 of Σ|terms| of the scalar one;
//! - the scalar result is within 1e-5 of Σ|terms| of Σ dequantize(w)·dequant(a) in f64
//!   (the crate's dequantizer, itself checked against gguf-py in `dequant_lowbit.rs`);
//! - `dot_multi` over 1..=7 rows equals `dot` per row on every path.
//!
//! Weight rows are random bytes (every byte pattern is a valid block of these types) with
//! sane or extreme scales; activations mix random, zero and ±max blocks.

mod dot_common;

use dot_common::{act_row, dequant_act, rng, Mode, MODES};
use proptest::prelude::*;
use quant::dot::{self, testing, vec_dot_with, SimdPath};
use quant::GgmlType;
use rand::rngs::StdRng;
use rand::Rng;

fn f16_scale(rng: &mut StdRng, mode: Mode) -> [u8; 2] {
    let x: f32 = match mode {
        Mode::ExtremeScales => {
            [65504.0, -65504.0, 5.96e-8, -1.2e-7, 0.0, 1.0][rng.random_range(0..6)]
        }
        _ => rng.random_range(1e-3f32..2.0) * if rng.random::<bool>() { 1.0 } else { -1.0 },
    };
    half::f16::from_f32(x).to_bits().to_le_bytes()
}

fn byte(rng: &mut StdRng, mode: Mode) -> u8 {
    match mode {
        Mode::Zero => 0,
        Mode::Max => 0xff,
        Mode::Mixed => [0, 0xff, rng.random()][rng.random_range(0..3)],
        _ => rng.random(),
    }
}

/// A row of `nb` random valid blocks of `ty`.
fn weight_row(ty: GgmlType, nb: usize, rng: &mut StdRng, mode: Mode) -> Vec<u8> {
    let size = ty.type_size();
    let mut out = vec![0u8; nb * size];
    for blk in out.chunks_exact_mut(size) {
        for b in blk.iter_mut() {
            *b = byte(rng, mode);
        }
        match ty {
            GgmlType::IQ1_S => blk[0..2].copy_from_slice(&f16_scale(rng, mode)),
            GgmlType::TQ1_0 => blk[52..54].copy_from_slice(&f16_scale(rng, mode)),
            GgmlType::TQ2_0 => blk[64..66].copy_from_slice(&f16_scale(rng, mode)),
            GgmlType::IQ1_M => {
                // The f16 scale is the top nibbles of the 4 scale words (bytes 48..56).
                let d = u16::from_le_bytes(f16_scale(rng, mode));
                for k in 0..4 {
                    let nib = ((d >> (4 * k)) & 0xf) as u8;
                    let hi = &mut blk[48 + 2 * k + 1];
                    *hi = (*hi & 0x0f) | (nib << 4);
                }
            }
            GgmlType::MXFP4 => {
                // Scales 2^(e − 128): keep products finite (e = 0, 1 are f32 subnormals).
                blk[0] = match mode {
                    Mode::ExtremeScales => [0u8, 1, 2, 60, 190][rng.random_range(0..5)],
                    _ => rng.random_range(110..140),
                };
            }
            _ => unreachable!(),
        }
    }
    out
}

fn reference(ty: GgmlType, act: GgmlType, w: &[u8], a: &[u8]) -> (f64, f64) {
    let mut wf = vec![0f32; a.len() / act.type_size() * act.block_size()];
    quant::dequantize(ty, w, &mut wf).unwrap();
    let (av, _) = dequant_act(act, a);
    let (mut sum, mut mag) = (0f64, 0f64);
    for (&x, &y) in wf.iter().zip(&av) {
        sum += x as f64 * y;
        mag += (x as f64 * y).abs();
    }
    (sum, mag)
}

fn check_case(ty: GgmlType, seed: u64, mode: usize, nb: usize) -> Result<(), TestCaseError> {
    let mode = MODES[mode];
    let mut rng = rng(seed);
    let act = dot::act_type_for(ty).unwrap();
    let n = nb * ty.block_size();
    let w = weight_row(ty, nb, &mut rng, mode);
    let acts: Vec<Vec<u8>> = (0..7).map(|_| act_row(act, n, &mut rng, mode)).collect();
    let scalar = vec_dot_with(ty, SimdPath::Scalar).unwrap();
    let mut simd = vec![vec_dot_with(ty, SimdPath::Avx2).unwrap()];
    let vnni = vec_dot_with(ty, SimdPath::Avx512Vnni).unwrap();
    if vnni.path != simd[0].path {
        simd.push(vnni);
    }
    simd.retain(|v| v.path != SimdPath::Scalar);
    for a in &acts {
        let (exact, mag) = reference(ty, act, &w, a);
        let tol = 1e-5 * mag + 1e-30;
        let s = scalar.dot(n, &w, a);
        prop_assert!(
            (s as f64 - exact).abs() <= tol,
            "{ty} scalar {s} vs exact {exact} (tol {tol}, {mode:?}, n {n})"
        );
        let ints = testing::block_ints_scalar(ty, n, &w, a).unwrap();
        let mut first: Option<f32> = None;
        for vd in &simd {
            let si = testing::block_ints_simd(vd.path, ty, n, &w, a).unwrap();
            prop_assert_eq!(
                &si,
                &ints,
                "{} {:?} block integers, {:?}",
                ty,
                vd.path,
                mode
            );
            let v = vd.dot(n, &w, a);
            prop_assert!(
                (v as f64 - s as f64).abs() <= tol,
                "{ty} {:?} {v} vs scalar {s} (tol {tol}, {mode:?})",
                vd.path
            );
            if let Some(f) = first {
                prop_assert_eq!(f.to_bits(), v.to_bits(), "{} {:?} vs AVX2", ty, vd.path);
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
                    "{} {:?} row {}/{}",
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
    ($($name:ident => $ty:ident, $max:expr;)*) => {$(
        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]
            #[test]
            fn $name(seed in any::<u64>(), mode in 0..MODES.len(), nb in 1..=$max) {
                check_case(GgmlType::$ty, seed, mode, nb)?;
            }
        }
    )*};
}

type_tests! {
    dot_iq1_s_x_q8_k => IQ1_S, 5usize;
    dot_iq1_m_x_q8_k => IQ1_M, 5usize;
    dot_tq1_0_x_q8_k => TQ1_0, 5usize;
    dot_tq2_0_x_q8_k => TQ2_0, 5usize;
    dot_mxfp4_x_q8_0 => MXFP4, 17usize;
}

#[test]
fn activation_partners_are_ggmls() {
    use GgmlType::*;
    for (w, a) in [
        (IQ1_S, Q8_K),
        (IQ1_M, Q8_K),
        (TQ1_0, Q8_K),
        (TQ2_0, Q8_K),
        (MXFP4, Q8_0),
    ] {
        assert_eq!(dot::vec_dot_for(w).unwrap().act, a, "{w}");
        assert!(dot::DOT_TYPES.contains(&w));
    }
}
