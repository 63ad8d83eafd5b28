//! End to end through the crate's own quantizers: f32 weights → `quant::quantize`, f32
//! activations → `quantize_act_*` (the partner type), then `VecDot::dot` on both paths
//! against (a) Σ dequantize(w)·dequant(a) in f64 (tight) and (b) the f32 dot of the
//! original values (loose: the quantization error of the type).

mod dot_common;

use dot_common::{dequant_act, quantize_act, reference_dot};
use quant::dot::{self, vec_dot_with, SimdPath};
use quant::GgmlType;
use rand::{Rng, SeedableRng};

/// Relative error allowed against the unquantized f32 dot, per weight type (of Σ|w·x|).
fn quant_tol(ty: GgmlType) -> f64 {
    use GgmlType::*;
    match ty {
        F32 => 1e-6,
        F16 | BF16 | Q8_0 | Q6_K => 0.02,
        Q5_K => 0.04,
        _ => 0.08,
    }
}

#[test]
fn dot_pipeline_all_quantizable_types() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = 1024;
    let mut checked = 0;
    for ty in dot::DOT_TYPES {
        if !quant::can_quantize(ty) {
            continue;
        }
        let act = dot::act_type_for(ty).unwrap();
        for trial in 0..4 {
            let w: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0) * (1.0 + trial as f32))
                .collect();
            let x: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0f32..3.0)).collect();
            let mut wq = vec![0u8; ty.row_bytes(n as u64).unwrap() as usize];
            quant::quantize(ty, &w, &mut wq).unwrap();
            let aq = quantize_act(act, &x);

            // Our own f64 reference, and the crate's dequantizer for the weights.
            let (exact, mag) = reference_dot(ty, act, &wq, &aq);
            let mut wd = vec![0f32; n];
            quant::dequantize(ty, &wq, &mut wd).unwrap();
            let (av, _) = dequant_act(act, &aq);
            if act != GgmlType::Q8_1 {
                let via_crate: f64 = wd.iter().zip(&av).map(|(&a, &b)| a as f64 * b).sum();
                assert!(
                    (via_crate - exact).abs() <= 1e-5 * mag,
                    "{ty:?}: crate dequant {via_crate} vs ours {exact}"
                );
            }
            let truth: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let truth_mag: f64 = w
                .iter()
                .zip(&x)
                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                .sum();

            for path in [SimdPath::Scalar, SimdPath::Avx2, SimdPath::Avx512Vnni] {
                let vd = vec_dot_with(ty, path).unwrap();
                let got = vd.dot(n, &wq, &aq) as f64;
                assert!(
                    (got - exact).abs() <= 1e-5 * mag,
                    "{ty:?} {:?}: {got} vs dequantized {exact} (mag {mag})",
                    vd.path
                );
                assert!(
                    (got - truth).abs() <= quant_tol(ty) * truth_mag,
                    "{ty:?} {:?}: {got} vs f32 truth {truth} (Σ|wx| {truth_mag})",
                    vd.path
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 8 * 4, "only {checked} cases ran");
}
