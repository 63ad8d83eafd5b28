//! `requantized:TYPE` placement at load (`Weights::requantize_planned`) on the tiny
//! Qwen3-MoE Q4_K_M model: the converted matrices hold the file's weights in the new type
//! (to that type's rounding), are counted as memory computed at load, release the file's
//! tensors, and can then be repacked.

mod common;

use gguf::GgmlType;
use kernels::ThreadPool;

fn dequantized(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    quant::dequantize(ty, bytes, &mut v).unwrap();
    v
}

#[test]
fn requantized_matrices_hold_the_same_weights_in_the_new_type() {
    let pool = ThreadPool::new(2);
    let mut m = common::load("qwen3moe-tiny", "Q4_K_M");
    let before = m.weights.plan_items().len();
    let wq = &m.weights.layers[0].attn;
    let model::weights::Attention::Gqa(a) = wq else {
        panic!("qwen3moe has GQA attention")
    };
    let (ty, n) = (a.wq.ty, a.wq.n_in * a.wq.n_out);
    let original = dequantized(ty, a.wq.data(), n);
    assert_eq!(ty, GgmlType::Q4_K);

    // Convert the first matrix the plan sees after `output` is skipped (tied): layer 0's wq.
    let derived_before = m.weights.derived_bytes();
    let mut targets = vec![None; before];
    targets[0] = Some(GgmlType::Q8_0);
    let (tensors, bytes) = m.weights.requantize_planned(&pool, &targets).unwrap();
    let model::weights::Attention::Gqa(a) = &m.weights.layers[0].attn else {
        unreachable!()
    };
    assert_eq!((tensors, a.wq.ty), (1, GgmlType::Q8_0));
    assert_eq!(bytes as usize, a.wq.bytes());
    assert_eq!(a.wq.name(), "blk.0.attn_q.weight");
    let converted = dequantized(GgmlType::Q8_0, a.wq.data(), n);
    // Q8_0 rounds each value to a step of 1/127 of its block's largest magnitude (half a
    // step) with an f16 scale (up to 127 · its rounding, well under another half step).
    for (block_a, block_b) in original.chunks(32).zip(converted.chunks(32)) {
        let amax = block_a.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (x, y) in block_a.iter().zip(block_b) {
            assert!((x - y).abs() <= amax / 127.0 + 1e-6, "{x} vs {y}");
        }
    }
    assert_eq!(m.weights.derived_bytes(), derived_before + bytes);
    let wq_index = m
        .file
        .tensors()
        .iter()
        .position(|t| t.name == "blk.0.attn_q.weight");
    assert!(m
        .weights
        .replaced_file_tensors()
        .contains(&wq_index.unwrap()));
    // Q8_0 has a repacked layout: the converted matrix repacks.
    let outcome = m.weights.storage_outcome();
    assert_eq!(outcome[0], (GgmlType::Q8_0, false, true));
    m.weights.repack().unwrap();
    assert_eq!(m.weights.storage_outcome()[0], (GgmlType::Q8_0, true, true));
}
