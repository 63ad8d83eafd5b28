//! Dequantization against gguf-py's reference: one real tensor of each of the 15
//! supported types (tests/data/quant/blocks.gguf) and its reference values
//! (tests/data/quant/<TYPE>.npy, float32, numpy order = reversed ggml `ne`).

use gguf::{GgmlType, Gguf};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    testutil::data_dir().join("quant")
}

/// (type, tensor name in blocks.gguf), as listed in tests/data/quant/manifest.json.
const CASES: [(GgmlType, &str); 15] = [
    (GgmlType::F32, "f32.blk.0.attn_kv_a_norm.weight"),
    (GgmlType::F16, "f16.blk.0.ffn_up.weight"),
    (GgmlType::BF16, "bf16.blk.0.ffn_up.weight"),
    (GgmlType::Q4_0, "q4_0.blk.0.attn_k_b.weight"),
    (GgmlType::Q4_1, "q4_1.blk.0.ffn_up.weight"),
    (GgmlType::Q5_0, "q5_0.blk.0.attn_k_b.weight"),
    (GgmlType::Q5_1, "q5_1.blk.0.ffn_up.weight"),
    (GgmlType::Q8_0, "q8_0.blk.0.attn_k_b.weight"),
    (GgmlType::Q2_K, "q2_k.blk.0.ffn_up.weight"),
    (GgmlType::Q3_K, "q3_k.blk.0.ffn_down.weight"),
    (GgmlType::Q4_K, "q4_k.blk.0.ffn_down.weight"),
    (GgmlType::Q5_K, "q5_k.blk.0.attn_output.weight"),
    (GgmlType::Q6_K, "q6_k.output.weight"),
    (GgmlType::IQ4_NL, "iq4_nl.blk.0.ffn_up.weight"),
    (GgmlType::IQ4_XS, "iq4_xs.blk.0.ffn_up.weight"),
];

/// Distance in units in the last place between two finite f32 of the same sign
/// (or both zero), else u32::MAX.
fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        return 0;
    }
    if a.is_sign_negative() != b.is_sign_negative() {
        return u32::MAX;
    }
    a.to_bits().abs_diff(b.to_bits())
}

#[test]
fn all_15_types_match_gguf_py_bit_for_bit() {
    let file = Gguf::open(data_dir().join("blocks.gguf")).expect("open blocks.gguf");
    assert_eq!(
        file.tensors().len(),
        CASES.len(),
        "blocks.gguf holds one tensor per case"
    );
    let mut report = Vec::new();
    for (ty, name) in CASES {
        let t = file.tensor(name).expect("tensor present");
        assert_eq!(t.ty, ty, "{name}");
        assert!(quant::is_supported(ty));
        let (shape, want) = testutil::read_npy_f32(&data_dir().join(format!("{}.npy", ty.name())));
        let reversed: Vec<usize> = t.ne.iter().rev().map(|&n| n as usize).collect();
        assert_eq!(shape, reversed, "{ty}: npy shape = reversed ne");

        let mut got = vec![f32::NAN; want.len()];
        quant::dequantize(ty, t.data, &mut got).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let mut worst = 0u32;
        let mut inexact = 0usize;
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            let u = ulps(g, w);
            assert!(u <= 1, "{ty}: value {i}: got {g:e}, want {w:e} ({u} ulp)");
            worst = worst.max(u);
            inexact += (u != 0) as usize;
        }
        // In practice the match is exact: the same f32 operations in the same order.
        assert_eq!(inexact, 0, "{ty}: {inexact} values differ by 1 ulp");
        report.push(format!("{ty}: {} values, max {worst} ulp", got.len()));

        // Row access gives the same values.
        let n_per_row = t.ne[0] as usize;
        let n_rows = want.len() / n_per_row;
        let mut row = vec![0.0f32; n_per_row];
        for r in [0, n_rows / 2, n_rows - 1] {
            quant::dequantize_row(ty, t.data, r, &mut row).unwrap();
            assert_eq!(
                &row[..],
                &want[r * n_per_row..(r + 1) * n_per_row],
                "{ty} row {r}"
            );
        }
        let err = quant::dequantize_row(ty, t.data, n_rows, &mut row).unwrap_err();
        assert!(err.to_string().contains("out of range"), "{err}");
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn per_type_functions_agree_with_the_dispatcher() {
    use quant::*;
    let file = Gguf::open(data_dir().join("blocks.gguf")).unwrap();
    let t = file.tensor("q4_k.blk.0.ffn_down.weight").unwrap();
    let n = t.n_elements() as usize;
    let mut a = vec![0.0; n];
    let mut b = vec![0.0; n];
    dequantize(GgmlType::Q4_K, t.data, &mut a).unwrap();
    dequantize_q4_k(cast_blocks::<BlockQ4K>(t.data).unwrap(), &mut b).unwrap();
    assert_eq!(a, b);
    // Generic access through the trait, and the per-block method.
    let blocks = cast_blocks::<BlockQ4K>(t.data).unwrap();
    <BlockQ4K as Dequantize>::dequantize_slice(blocks, &mut b).unwrap();
    assert_eq!(a, b);
    let mut one = [0.0f32; QK_K];
    blocks[3].dequantize(&mut one);
    assert_eq!(&one[..], &a[3 * QK_K..4 * QK_K]);
}

#[test]
fn size_mismatches_are_errors() {
    use quant::*;
    let data = vec![0u8; 144 * 2];
    let mut out = vec![0.0f32; 512];
    assert!(dequantize(GgmlType::Q4_K, &data, &mut out).is_ok());
    // One byte short, one block too many values, a partial block.
    let e = dequantize(GgmlType::Q4_K, &data[..287], &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: 512 values take 288 bytes, but the data has 287"
    );
    let e = dequantize(GgmlType::Q4_K, &data, &mut vec![0.0; 768]).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::DataSize {
                expected: 432,
                actual: 288,
                ..
            }
        ),
        "{e}"
    );
    let e = dequantize(GgmlType::Q4_K, &data, &mut vec![0.0; 300]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Q4_K: 300 values is not a multiple of the block size 256"
    );
    let e = dequantize_q4_k(&[BlockQ4K::zeroed(); 2], &mut out[..500]).unwrap_err();
    assert!(
        matches!(
            e,
            QuantError::BlockCount {
                n_blocks: 2,
                expected: 512,
                actual: 500,
                ..
            }
        ),
        "{e}"
    );
    assert!(cast_blocks::<BlockQ4K>(&data[..200]).is_err());
    // Empty input is fine.
    assert!(dequantize(GgmlType::Q6_K, &[], &mut []).is_ok());
}

#[test]
fn unsupported_types_name_themselves_and_the_supported_list() {
    use quant::*;
    for ty in gguf::ALL_TYPES {
        let supported = is_supported(ty);
        assert_eq!(supported, DEQUANTIZE_TYPES.contains(&ty));
        let n = ty.block_size();
        let data = vec![0u8; ty.type_size()];
        let mut out = vec![0.0f32; n];
        let r = dequantize(ty, &data, &mut out);
        if supported {
            r.unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert!(
                out.iter().all(|v| *v == 0.0),
                "{ty}: zero bytes decode to zeros"
            );
        } else {
            let msg = r.unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!(
                    "unsupported tensor type {} (supported: F32, F16, Q4_0",
                    ty.name()
                )),
                "{msg}"
            );
            assert!(msg.ends_with("BF16, TQ1_0, TQ2_0, MXFP4)"), "{msg}");
        }
    }
    for ty in [GgmlType::Q8_K, GgmlType::I8, GgmlType::F64] {
        assert!(!is_supported(ty), "{ty}");
    }
}

use bytemuck::Zeroable;
