//! "No allocation inside a forward pass" for matmuls over repacked weights: once the
//! activation scratch is sized, packed GEMV, GEMM and batched routed products (every packed
//! layout) must not touch the allocator. Its own test binary (one test) so nothing else
//! allocates meanwhile.

use kernels::matmul::{matmul, matmul_batch, quantize_acts, ActScratch, MatmulOp, QMatrix};
use kernels::ThreadPool;
use quant::repack::{self, PackedType};
use std::sync::atomic::Ordering;

use testutil::counting_alloc::{Counting, ALLOCS, ARMED};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn packed_matmuls_do_not_allocate() {
    let pool = ThreadPool::new(2);
    let (n_in, n_out, n_tok) = (512usize, 96usize, 9usize);
    let x: Vec<f32> = (0..n_in * n_tok)
        .map(|i| (i % 13) as f32 * 0.1 - 0.6)
        .collect();
    let tokens = [0u32, 4, 8, 4, 1];
    let mut cases = Vec::new();
    for ty in [
        quant::GgmlType::Q4_K,
        quant::GgmlType::Q6_K,
        quant::GgmlType::Q8_0,
        quant::GgmlType::Q5_0,
        quant::GgmlType::IQ2_XXS,
    ] {
        // Any bytes are valid quants for the kernels; scales set to 0.01.
        let mut file: Vec<u8> = (0..ty.row_bytes((n_in * n_out) as u64).unwrap() as usize)
            .map(|i| (i * 131 % 251) as u8)
            .collect();
        let d = quant::Half::from_f32(0.01).0;
        for blk in file.chunks_exact_mut(ty.type_size()) {
            blk[..2].copy_from_slice(&d);
        }
        let pt = PackedType::layout_of(ty).unwrap();
        let mut packed = vec![0u8; pt.matrix_bytes(n_in, n_out).unwrap()];
        repack::repack(ty, n_in, n_out, &file, &mut packed).unwrap();
        let mut scratch = ActScratch::new();
        scratch.reserve(ty, n_in, n_tok).unwrap();
        cases.push((pt, packed, scratch));
    }
    let mut out = vec![0f32; n_out * n_tok];
    let mut out_b = vec![0f32; n_out * tokens.len()];
    let mut step = |cases: &mut Vec<(PackedType, Vec<u8>, ActScratch)>| {
        for (pt, packed, scratch) in cases.iter_mut() {
            let w = QMatrix::packed(*pt, n_in, n_out, packed).unwrap();
            matmul(&pool, &w, &x[..n_in], &mut out[..n_out], scratch).unwrap(); // GEMV
            matmul(&pool, &w, &x, &mut out, scratch).unwrap(); // GEMM
            let xq = quantize_acts(&pool, pt.source(), &x, n_in, scratch).unwrap();
            let mut ops = [MatmulOp {
                w,
                xq,
                tokens: Some(&tokens),
                out: &mut out_b,
            }];
            matmul_batch(&pool, &mut ops).unwrap();
        }
    };
    // Warm up: first use may initialise lazily (feature detection, thread wake-ups).
    step(&mut cases);
    // A hot-path allocation would happen in every step, so it shows in every window of 20
    // steps. The counter is process-wide, so a window can also catch a stray allocation of
    // the test harness's own thread (seen once in many runs on a machine at load 10):
    // up to three windows are tried, and one must be clean.
    let mut counts = Vec::new();
    for _ in 0..3 {
        ALLOCS.store(0, Ordering::SeqCst);
        ARMED.store(true, Ordering::SeqCst);
        for _ in 0..20 {
            step(&mut cases);
        }
        ARMED.store(false, Ordering::SeqCst);
        counts.push(ALLOCS.load(Ordering::SeqCst));
        if counts.last() == Some(&0) {
            break;
        }
    }
    assert_eq!(
        counts.last(),
        Some(&0),
        "allocations on the packed hot path, per window of 20 steps: {counts:?}"
    );
    assert!(out.iter().chain(&out_b).all(|v| v.is_finite()));
}
