//! Our weight quantizers against llama-quantize: the tensors of tests/data/quant/blocks.gguf
//! were produced by llama-quantize (no importance matrix) from the tiny deepseek-v3 model,
//! whose original weights are in tests/data/tiny/deepseek-v3-tiny/deepseek-v3-tiny-BF16.gguf
//! (bf16-representable, so BF16 → f32 is exactly what llama-quantize saw). Quantizing the
//! same f32 values must give the same bytes.

use gguf::{GgmlType, Gguf};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn check(ty: GgmlType, quantized_name: &str) {
    let blocks = Gguf::open(root().join("tests/data/quant/blocks.gguf")).unwrap();
    let source =
        Gguf::open(root().join("tests/data/tiny/deepseek-v3-tiny/deepseek-v3-tiny-BF16.gguf"))
            .unwrap();
    let want = blocks.tensor(quantized_name).unwrap();
    assert_eq!(want.ty, ty);
    let original_name = quantized_name.split_once('.').unwrap().1;
    let src = source.tensor(original_name).unwrap();
    assert_eq!(src.ne, want.ne, "{original_name}");
    let n = src.n_elements() as usize;
    let mut x = vec![0.0f32; n];
    quant::dequantize(src.ty, src.data, &mut x).unwrap();

    let mut got = vec![0u8; want.data.len()];
    quant::quantize(ty, &x, &mut got).unwrap();
    let bs = ty.type_size();
    let differing: Vec<usize> = (0..got.len() / bs)
        .filter(|&b| got[b * bs..(b + 1) * bs] != want.data[b * bs..(b + 1) * bs])
        .collect();
    assert!(
        differing.is_empty(),
        "{ty}: {} of {} blocks differ from llama-quantize (first: block {})",
        differing.len(),
        got.len() / bs,
        differing[0]
    );
}

#[test]
fn q8_0_matches_llama_quantize() {
    check(GgmlType::Q8_0, "q8_0.blk.0.attn_k_b.weight");
}

#[test]
fn q4_0_matches_llama_quantize() {
    check(GgmlType::Q4_0, "q4_0.blk.0.attn_k_b.weight");
}

#[test]
fn q5_0_matches_llama_quantize() {
    check(GgmlType::Q5_0, "q5_0.blk.0.attn_k_b.weight");
}

#[test]
fn q4_k_matches_llama_quantize() {
    check(GgmlType::Q4_K, "q4_k.blk.0.ffn_down.weight");
}

#[test]
fn q5_k_matches_llama_quantize() {
    check(GgmlType::Q5_K, "q5_k.blk.0.attn_output.weight");
}

#[test]
fn q6_k_matches_llama_quantize() {
    check(GgmlType::Q6_K, "q6_k.output.weight");
}
