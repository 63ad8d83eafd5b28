//! The portable (non-SIMD) paths of the elementwise kernels, checked against the SIMD paths
//! and an f64 reference. A separate test binary with a single test, because
//! `simd::force_scalar` switches paths for the whole process.

use kernels::{activation, norm, simd, softmax, vector};

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

struct Outputs {
    rms: Vec<f32>,
    glu: Vec<f32>,
    soft: Vec<f32>,
    axpy: Vec<f32>,
}

fn run_all(x: &[f32], w: &[f32], g: &[f32], mask: &[f32]) -> Outputs {
    let mut rms = vec![0f32; x.len()];
    norm::rms_norm(x, w, 1e-6, &mut rms);
    let mut glu = vec![0f32; x.len()];
    activation::silu_glu(g, w, &mut glu);
    let mut inplace = g.to_vec();
    activation::silu_glu_inplace(&mut inplace, w);
    assert_eq!(inplace, glu);
    let mut soft = x.to_vec();
    softmax::softmax_scaled_masked_inplace(&mut soft, 3.0, Some(mask));
    let mut axpy = x.to_vec();
    vector::axpy(&mut axpy, 0.5, w);
    vector::add_inplace(&mut axpy, g);
    vector::mul_inplace(&mut axpy, w);
    vector::scale_inplace(&mut axpy, 1.5);
    Outputs {
        rms,
        glu,
        soft,
        axpy,
    }
}

fn close(a: &[f32], b: &[f64], rel: f64, what: &str) {
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (*x as f64 - y).abs() <= rel * (1.0 + y.abs()),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn scalar_paths_match_simd_and_f64() {
    let n = 1027; // not a multiple of 8: exercises the tails
    let mut seed = 11u64;
    let x: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 4.0).collect();
    let w: Vec<f32> = (0..n).map(|_| lcg(&mut seed)).collect();
    let g: Vec<f32> = (0..n).map(|_| lcg(&mut seed) * 12.0).collect();
    let mask: Vec<f32> = (0..n)
        .map(|i| if i % 5 == 0 { f32::NEG_INFINITY } else { 0.0 })
        .collect();

    simd::force_scalar(false);
    let fast = run_all(&x, &w, &g, &mask);
    simd::force_scalar(true);
    assert!(!simd::has_avx2_fma());
    let portable = run_all(&x, &w, &g, &mask);
    simd::force_scalar(false);

    // f64 references.
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / n as f64;
    let s = 1.0 / (ms + 1e-6).sqrt();
    let rms: Vec<f64> = x
        .iter()
        .zip(&w)
        .map(|(a, b)| *a as f64 * s * *b as f64)
        .collect();
    let glu: Vec<f64> = g
        .iter()
        .zip(&w)
        .map(|(a, b)| {
            let a = *a as f64;
            a / (1.0 + (-a).exp()) * *b as f64
        })
        .collect();
    let y: Vec<f64> = x
        .iter()
        .zip(&mask)
        .map(|(a, m)| *a as f64 * 3.0 + *m as f64)
        .collect();
    let mx = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = y.iter().map(|v| (v - mx).exp()).collect();
    let se: f64 = e.iter().sum();
    let soft: Vec<f64> = e.iter().map(|v| v / se).collect();
    let axpy: Vec<f64> = (0..n)
        .map(|i| ((x[i] as f64 + 0.5 * w[i] as f64) + g[i] as f64) * w[i] as f64 * 1.5)
        .collect();

    for (name, o) in [("simd", &fast), ("scalar", &portable)] {
        close(&o.rms, &rms, 1e-5, &format!("{name} rms_norm"));
        close(&o.glu, &glu, 2e-6, &format!("{name} silu_glu"));
        close(&o.soft, &soft, 1e-6, &format!("{name} softmax"));
        close(&o.axpy, &axpy, 1e-5, &format!("{name} vector ops"));
    }
    for (i, m) in mask.iter().enumerate() {
        if *m == f32::NEG_INFINITY {
            assert_eq!(portable.soft[i], 0.0);
        }
    }
}
