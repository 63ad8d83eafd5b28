//! IQ1_S, IQ1_M, TQ1_0, TQ2_0 and MXFP4 against gguf-py (tests/data/quant/lowbit, made by
//! scripts/gen/lowbit_b_testdata.py): random valid blocks and real llama-quantize rows of
//! each type, decoded bit for bit as gguf-py does; MXFP4's quantizer reproduces
//! llama-quantize's bytes.

use gguf::{GgmlType, Gguf};
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    testutil::data_dir().join("quant/lowbit")
}

const TYPES: [GgmlType; 5] = [
    GgmlType::IQ1_S,
    GgmlType::IQ1_M,
    GgmlType::TQ1_0,
    GgmlType::TQ2_0,
    GgmlType::MXFP4,
];

#[test]
fn lowbit_types_match_gguf_py_bit_for_bit() {
    let file = Gguf::open(data_dir().join("blocks.gguf")).expect("open blocks.gguf");
    let mut checked = 0;
    for ty in TYPES {
        assert!(quant::is_supported(ty), "{ty}");
        for kind in ["random", "real"] {
            let name = format!("{kind}.{}", ty.name());
            let t = file.tensor(&name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.ty, ty, "{name}");
            let (shape, want) = testutil::read_npy_f32(&data_dir().join(format!("{name}.npy")));
            let reversed: Vec<usize> = t.ne.iter().rev().map(|&n| n as usize).collect();
            assert_eq!(shape, reversed, "{name}");
            let mut got = vec![f32::NAN; want.len()];
            quant::dequantize(ty, t.data, &mut got).unwrap_or_else(|e| panic!("{name}: {e}"));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{name}: value {i}: {g:e} vs {w:e}"
                );
            }
            // Row access agrees.
            let n = t.ne[0] as usize;
            let mut row = vec![0f32; n];
            quant::dequantize_row(ty, t.data, 3, &mut row).unwrap();
            assert_eq!(&row[..], &want[3 * n..4 * n], "{name} row 3");
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn mxfp4_quantizer_matches_llama_quantize() {
    let file = Gguf::open(data_dir().join("blocks.gguf")).unwrap();
    let t = file.tensor("real.MXFP4").unwrap();
    let (shape, src) = testutil::read_npy_f32(&data_dir().join("mxfp4_src.npy"));
    assert_eq!(shape, [16, t.ne[0] as usize]);
    let mut bytes = vec![0u8; t.data.len()];
    quant::quantize(GgmlType::MXFP4, &src, &mut bytes).unwrap();
    assert_eq!(
        &bytes[..],
        t.data,
        "MXFP4 bytes differ from llama-quantize's"
    );
    // And through the typed function.
    let mut blocks = vec![quant::BlockMXFP4 { e: 0, qs: [0; 16] }; src.len() / 32];
    quant::quantize_mxfp4(&src, &mut blocks).unwrap();
    assert_eq!(bytemuck::cast_slice::<_, u8>(&blocks), t.data);
}

#[test]
fn mxfp4_quantizer_edge_cases() {
    use quant::mxfp4::{e8m0_to_f32_half, KVALUES_MXFP4};
    // All zeros: e = 0, all codes 0.
    let mut b = vec![0u8; 17];
    quant::quantize(GgmlType::MXFP4, &[0.0; 32], &mut b).unwrap();
    assert_eq!(b, vec![0u8; 17]);
    // Exact codebook values at scale 1 (e = 128) come back exactly.
    let src: Vec<f32> = (0..32)
        .map(|j| KVALUES_MXFP4[j % 16] as f32 * 0.5 * 2.0)
        .collect();
    quant::quantize(GgmlType::MXFP4, &src, &mut b).unwrap();
    let mut back = vec![0f32; 32];
    quant::dequantize(GgmlType::MXFP4, &b, &mut back).unwrap();
    assert_eq!(back, src);
    assert_eq!(e8m0_to_f32_half(b[0]), 1.0);
    // Non-finite input and bad lengths are errors, not panics.
    let mut nan = [1.0f32; 32];
    nan[5] = f32::NAN;
    assert!(quant::quantize(GgmlType::MXFP4, &nan, &mut b).is_err());
    assert!(quant::quantize(GgmlType::MXFP4, &[0.0; 31], &mut b[..16]).is_err());
    assert!(quant::quantize(GgmlType::MXFP4, &[0.0; 64], &mut b).is_err());
    // The E8M0 half-scale at its ends.
    assert_eq!(e8m0_to_f32_half(0), 2f32.powi(-128));
    assert_eq!(e8m0_to_f32_half(1), 2f32.powi(-127));
    assert_eq!(e8m0_to_f32_half(2), 2f32.powi(-126));
    assert_eq!(e8m0_to_f32_half(255), 2f32.powi(127));
}

#[test]
fn iq1_grid_is_ternary_and_distinct() {
    use quant::iq1::IQ1S_GRID;
    let mut seen = std::collections::HashSet::new();
    for &g in IQ1S_GRID.iter() {
        assert!(g.to_le_bytes().iter().all(|&b| matches!(b, 0 | 1 | 0xff)));
        assert!(seen.insert(g));
    }
}
