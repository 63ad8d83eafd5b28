//! The dot products on real llama-quantize output: `tests/data/quant/blocks.gguf` holds one
//! tensor of every supported weight type (from the tiny DeepSeek-V3 test model). For each,
//! every row against activations quantized by the crate's own activation quantizer:
//! - AVX2 per-block integer sums == scalar ones (bit for bit);
//! - AVX2 f32 ≈ scalar f32, and scalar ≈ Σ dequantize(w)·dequant(a) in f64 (1e-5 of Σ|terms|);
//! - `dot_multi` == `dot` per row.

mod dot_common;

use dot_common::{quantize_act, reference_dot};
use quant::dot::{self, testing, vec_dot_with, SimdPath};
use rand::{Rng, SeedableRng};

#[test]
fn dot_real_llama_quantize_blocks_every_type() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut seen = Vec::new();
    // The older types, then IQ1_S, IQ1_M, TQ1_0, TQ2_0, MXFP4 (quant/lowbit/, "real.*" tensors),
    // then IQ2_XXS … IQ3_S (lowbit/blocks-<TYPE>.gguf).
    let data = testutil::data_dir();
    let mut paths = vec![
        data.join("quant/blocks.gguf"),
        data.join("quant/lowbit/blocks.gguf"),
    ];
    let mut iq23: Vec<_> = std::fs::read_dir(data.join("lowbit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("blocks-") && name.ends_with(".gguf")
        })
        .collect();
    iq23.sort();
    paths.extend(iq23);
    for path in &paths {
        check_file(&gguf::Gguf::open(path).unwrap(), &mut rng, &mut seen);
    }
    seen.sort();
    seen.dedup();
    let mut want = dot::DOT_TYPES.to_vec();
    want.sort();
    assert_eq!(
        seen, want,
        "the test files should hold every type the dot products support"
    );
}

fn check_file(file: &gguf::Gguf, rng: &mut rand::rngs::StdRng, seen: &mut Vec<gguf::GgmlType>) {
    for info in file.tensors() {
        if info.name.starts_with("random.") {
            continue;
        }
        let t = file.view(info);
        let Ok(best) = dot::vec_dot_for(t.ty) else {
            continue;
        };
        let scalar = vec_dot_with(t.ty, SimdPath::Scalar).unwrap();
        let n = t.row_len();
        let row_bytes = t.row_bytes();
        let acts: Vec<Vec<u8>> = (0..3)
            .map(|_| {
                let x: Vec<f32> = (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect();
                quantize_act(best.act, &x)
            })
            .collect();
        let rows: Vec<&[u8]> = acts.iter().map(|a| a.as_slice()).collect();
        for r in 0..t.n_rows().min(64) {
            let w = &t.data[r * row_bytes..(r + 1) * row_bytes];
            let mut multi = [0f32; 3];
            best.dot_multi(n, w, &rows, &mut multi);
            for (k, a) in acts.iter().enumerate() {
                let (exact, mag) = reference_dot(t.ty, best.act, w, a);
                let s = scalar.dot(n, w, a);
                let v = best.dot(n, w, a);
                let tol = 1e-5 * mag + 1e-30;
                assert!(
                    (s as f64 - exact).abs() <= tol,
                    "{}: row {r}: scalar {s} vs {exact}",
                    t.name
                );
                assert!(
                    (v as f64 - s as f64).abs() <= tol,
                    "{}: row {r}: {v} vs scalar {s}",
                    t.name
                );
                assert_eq!(
                    multi[k].to_bits(),
                    v.to_bits(),
                    "{}: row {r}: dot_multi",
                    t.name
                );
                for path in [SimdPath::Avx2, SimdPath::Avx512Vnni] {
                    if let Some(ia) = testing::block_ints_simd(path, t.ty, n, w, a) {
                        assert_eq!(
                            Some(ia),
                            testing::block_ints_scalar(t.ty, n, w, a),
                            "{}: row {r} {path:?}",
                            t.name
                        );
                    }
                }
            }
        }
        seen.push(t.ty);
    }
}
