//! The hot-path rule "no allocation inside a forward pass": once the scratch buffers are
//! sized, pool ops, matmuls (GEMV, GEMM, batched expert products), the fused routed
//! experts (`kernels::moe`) and the elementwise kernels must not touch the allocator. A counting global allocator checks it; this is
//! its own test binary (one test) so nothing else allocates meanwhile.

use kernels::matmul::{
    matmul, matmul_batch, quantize_acts, ActScratch, MatmulError, MatmulOp, QMatrix,
};
use kernels::moe::{moe_experts, ExpertStack, Experts, MoeScratch, Routing};
use kernels::rope::{rope_heads, RopeMode, RopeParams};
use kernels::{activation, norm, softmax, ThreadPool};
use std::sync::atomic::Ordering;

use testutil::counting_alloc::{Counting, ALLOCS, ARMED};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Every expert of a test stack is the same matrix.
struct SameExpert<'a>(QMatrix<'a>);

impl ExpertStack for SameExpert<'_> {
    fn ty(&self) -> quant::GgmlType {
        self.0.ty
    }
    fn expert(&self, _e: usize) -> Result<QMatrix<'_>, MatmulError> {
        Ok(self.0)
    }
}

#[test]
fn hot_path_does_not_allocate() {
    let pool = ThreadPool::new(2);
    let (n_in, n_out, n_tok) = (512usize, 96usize, 9usize);
    let ty = quant::GgmlType::Q4_K;
    let src: Vec<f32> = (0..n_in * n_out)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut wb = vec![0u8; ty.row_bytes((n_in * n_out) as u64).unwrap() as usize];
    quant::quantize(ty, &src, &mut wb).unwrap();
    let w = QMatrix::new(ty, n_in, n_out, &wb).unwrap();
    let x: Vec<f32> = (0..n_in * n_tok)
        .map(|i| (i % 13) as f32 * 0.1 - 0.6)
        .collect();
    let mut out = vec![0f32; n_out * n_tok];
    let mut out_b = vec![0f32; n_out * 3];
    let mut scratch = ActScratch::new();
    scratch.reserve(ty, n_in, n_tok).unwrap();
    let mut hidden = vec![0.5f32; n_in];
    let weight = vec![1.0f32; n_in];
    let mut cache = vec![0f32; 64];
    let rope = RopeParams::new(64, RopeMode::Neox, 10000.0);
    let tokens = [0u32, 4, 8];
    // Routed experts: dim = n_in, hidden = 256, 3 tokens × 2 of 4 experts (every expert
    // the same bytes: 256 rows of n_in for gate and up, n_in rows of 256 for down).
    let ew_src: Vec<f32> = (0..n_in * 256)
        .map(|i| ((i * 7907) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut ew = vec![0u8; ty.row_bytes((n_in * 256) as u64).unwrap() as usize];
    quant::quantize(ty, &ew_src, &mut ew).unwrap();
    let gate = SameExpert(QMatrix::new(ty, n_in, 256, &ew).unwrap());
    let down = SameExpert(QMatrix::new(ty, 256, n_in, &ew).unwrap());
    // Biases and the clamped SwiGLU (gpt-oss) take the same path without allocating.
    let expert_bias = vec![0.01f32; 4 * 256.max(n_in)];
    let experts = Experts {
        gate: &gate,
        up: &gate,
        down: &down,
        dim: n_in,
        hidden: 256,
        n_expert: 4,
        act: kernels::activation::Glu::GPT_OSS,
        bias: Some(kernels::moe::ExpertBiases {
            gate: &expert_bias[..4 * 256],
            up: &expert_bias[..4 * 256],
            down: &expert_bias[..4 * n_in],
        }),
    };
    let (ids, weights) = ([0usize, 3, 2, 3, 1, 0], [0.5f32, 0.25, 0.7, 0.3, 0.6, 0.4]);
    let mut moe_scratch = MoeScratch::new();
    let mut moe_out = vec![0f32; 3 * n_in];

    let mut step = |pool: &ThreadPool, scratch: &mut ActScratch| {
        matmul(pool, &w, &x[..n_in], &mut out[..n_out], scratch).unwrap(); // GEMV
        matmul(pool, &w, &x, &mut out, scratch).unwrap(); // GEMM
        let xq = quantize_acts(pool, ty, &x, n_in, scratch).unwrap();
        let mut ops = [MatmulOp {
            w,
            xq,
            tokens: Some(&tokens),
            out: &mut out_b,
        }];
        matmul_batch(pool, &mut ops).unwrap();
        let routing = Routing {
            ids: &ids,
            weights: &weights,
            k: 2,
        };
        let x3 = &x[..3 * n_in];
        moe_experts(pool, &experts, x3, routing, &mut moe_scratch, &mut moe_out).unwrap();
        pool.run(1000, |r, _| {
            std::hint::black_box(r);
        });
        norm::rms_norm_inplace(&mut hidden, &weight, 1e-6);
        let (g, u) = hidden.split_at_mut(n_in / 2);
        activation::silu_glu_inplace(g, u);
        softmax::softmax_inplace(&mut hidden);
        rope.cache(17, None, &mut cache);
        rope_heads(&mut hidden, 128, 0, &cache, RopeMode::Neox);
    };
    // Warm up: first use may initialise lazily (feature detection, thread wake-ups).
    step(&pool, &mut scratch);
    ALLOCS.store(0, Ordering::Relaxed);
    ARMED.store(true, Ordering::SeqCst);
    for _ in 0..50 {
        step(&pool, &mut scratch);
    }
    ARMED.store(false, Ordering::SeqCst);
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the hot path"
    );
}
