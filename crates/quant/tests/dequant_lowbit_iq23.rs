//! Dequantization of the low-bit types against gguf-py (tests/data/lowbit, made by
//! `make_blocks.py` there): per type, 64 random valid super-blocks and 32 rows of a tensor
//! quantized by llama-quantize, each with gguf-py's values. To cover a new type, add it to
//! `TYPES` and to `make_blocks.py`.

use gguf::{GgmlType, Gguf};

const TYPES: [GgmlType; 5] = {
    use GgmlType::*;
    [IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S]
};

#[test]
fn low_bit_types_match_gguf_py_bit_for_bit() {
    let dir = testutil::data_dir().join("lowbit");
    for ty in TYPES {
        let file = Gguf::open(dir.join(format!("blocks-{}.gguf", ty.name())))
            .unwrap_or_else(|e| panic!("{ty}: {e}"));
        for tag in ["random", "real"] {
            let t = file.tensor(tag).expect("tensor present");
            assert_eq!(t.ty, ty, "{tag}");
            assert!(quant::is_supported(ty));
            let (shape, want) =
                testutil::read_npy_f32(&dir.join(format!("{}.{tag}.npy", ty.name())));
            let reversed: Vec<usize> = t.ne.iter().rev().map(|&n| n as usize).collect();
            assert_eq!(shape, reversed, "{ty} {tag}: npy shape = reversed ne");
            let mut got = vec![f32::NAN; want.len()];
            quant::dequantize(ty, t.data, &mut got).unwrap_or_else(|e| panic!("{ty}: {e}"));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{ty} {tag}: value {i}: {g:e} vs {w:e}"
                );
            }
            // Row access gives the same values.
            let n = t.ne[0] as usize;
            let mut row = vec![0f32; n];
            let last = want.len() / n - 1;
            quant::dequantize_row(ty, t.data, last, &mut row).unwrap();
            assert_eq!(row, want[last * n..], "{ty} {tag}: last row");
        }
    }
}

#[test]
fn low_bit_types_reject_bad_lengths() {
    for ty in TYPES {
        let bytes = vec![0u8; ty.type_size() * 2];
        let mut out = vec![0f32; 256 * 2];
        assert!(quant::dequantize(ty, &bytes, &mut out).is_ok(), "{ty}");
        let err = quant::dequantize(ty, &bytes[1..], &mut out).unwrap_err();
        assert!(err.to_string().contains(ty.name()), "{ty}: {err}");
        let err = quant::dequantize(ty, &bytes, &mut out[..100]).unwrap_err();
        assert!(err.to_string().contains("256"), "{ty}: {err}");
    }
}
