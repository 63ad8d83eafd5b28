//! Every architecture against the reference logits in tests/data/tiny:
//! - `--exact` (dequantized weights, f32 math) vs HF float32 (BF16 file) and vs llama.cpp's
//!   f32 run on dequantized copies (quantized files): max |Δ| ≤ 1e-3, same argmax everywhere,
//!   same 16-token greedy continuation;
//! - production kernels vs llama.cpp on the quantized files: top-1 agreement ≥ 90%.

mod common;

use common::argmax;
use common::{load, prompts};
use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};
use testutil::{data_dir, json, read_npy_f32};

/// All-position logits of one prompt processed as one batch.
fn logits_all(m: &Model, pool: &ThreadPool, mode: MatmulMode, ids: &[u32]) -> Vec<f32> {
    let mut st = RunState::new(mode);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    m.forward(pool, &mut st, &mut kv, ids, Logits::All)
        .unwrap()
        .to_vec()
}

/// Greedy continuation decoded one token at a time with the KV cache.
fn greedy(m: &Model, pool: &ThreadPool, mode: MatmulMode, ids: &[u32], n: usize) -> Vec<u32> {
    let mut st = RunState::new(mode);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    let mut next = argmax(
        m.forward(pool, &mut st, &mut kv, ids, Logits::Last)
            .unwrap(),
    ) as u32;
    let mut out = vec![next];
    while out.len() < n {
        next = argmax(
            m.forward(pool, &mut st, &mut kv, &[next], Logits::Last)
                .unwrap(),
        ) as u32;
        out.push(next);
    }
    out
}

fn reference_greedy(model: &str, reference: &str, prompt: usize) -> Vec<u32> {
    json("tiny/manifest.json")["models"][model]["references"][reference][prompt]["greedy_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// `--exact` against a reference computed with the same weights in f32.
fn check_exact(model: &str, variant: &str, ref_prefix: &str, greedy_ref: &str) {
    let m = load(model, variant);
    let pool = ThreadPool::new(2);
    let vocab = m.config.n_vocab;
    for (i, ids) in prompts().iter().enumerate() {
        let ours = logits_all(&m, &pool, MatmulMode::Exact, ids);
        let (shape, theirs) = read_npy_f32(
            &data_dir().join(format!("tiny/{model}/ref/{ref_prefix}_logits_all_p{i}.npy")),
        );
        assert_eq!(shape, vec![ids.len(), vocab]);
        let max_diff = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff <= 1e-3,
            "{model} {variant} p{i}: max |Δ| = {max_diff}"
        );
        for p in 0..ids.len() {
            assert_eq!(
                argmax(&ours[p * vocab..(p + 1) * vocab]),
                argmax(&theirs[p * vocab..(p + 1) * vocab]),
                "{model} {variant} p{i}: argmax at position {p}"
            );
        }
        let g = greedy(&m, &pool, MatmulMode::Exact, ids, 16);
        assert_eq!(
            g,
            reference_greedy(model, greedy_ref, i),
            "{model} {variant} p{i}: greedy continuation"
        );
    }
}

/// Production kernels against llama.cpp on the same quantized file.
fn check_production(model: &str, variant: &str) {
    let m = load(model, variant);
    let pool = ThreadPool::new(2);
    let vocab = m.config.n_vocab;
    let (mut agree, mut total) = (0, 0);
    for (i, ids) in prompts().iter().enumerate() {
        let ours = logits_all(&m, &pool, MatmulMode::Quantized, ids);
        let (_, theirs) = read_npy_f32(&data_dir().join(format!(
            "tiny/{model}/ref/lcpp_{variant}_logits_all_p{i}.npy"
        )));
        for p in 0..ids.len() {
            total += 1;
            agree += usize::from(
                argmax(&ours[p * vocab..(p + 1) * vocab])
                    == argmax(&theirs[p * vocab..(p + 1) * vocab]),
            );
        }
    }
    assert!(
        agree * 10 >= total * 9,
        "{model} {variant}: top-1 agreement {agree}/{total} < 90%"
    );
}

macro_rules! exact_tests {
    ($($name:ident: $model:literal, $variant:literal, $prefix:literal, $greedy:literal;)*) => {
        $( #[test] fn $name() { check_exact($model, $variant, $prefix, $greedy); } )*
    };
}

exact_tests! {
    deepseek_v3_bf16_exact_vs_hf: "deepseek-v3-tiny", "BF16", "hf", "hf_float32_eager";
    deepseek_v3_q4_k_m_exact: "deepseek-v3-tiny", "Q4_K_M", "lcpp_Q4_K_M_dequant", "llamacpp_Q4_K_M_dequant_f32";
    deepseek_v3_q5_k_m_exact: "deepseek-v3-tiny", "Q5_K_M", "lcpp_Q5_K_M_dequant", "llamacpp_Q5_K_M_dequant_f32";
    deepseek_v3_q6_k_exact: "deepseek-v3-tiny", "Q6_K", "lcpp_Q6_K_dequant", "llamacpp_Q6_K_dequant_f32";
    deepseek_v2_lite_q8_0_exact: "deepseek-v2-lite-tiny", "Q8_0", "lcpp_Q8_0_dequant", "llamacpp_Q8_0_dequant_f32";
    deepseek_v2_lite_q4_k_m_exact: "deepseek-v2-lite-tiny", "Q4_K_M", "lcpp_Q4_K_M_dequant", "llamacpp_Q4_K_M_dequant_f32";
    qwen3moe_q8_0_exact: "qwen3moe-tiny", "Q8_0", "lcpp_Q8_0_dequant", "llamacpp_Q8_0_dequant_f32";
    qwen3moe_q4_k_m_exact: "qwen3moe-tiny", "Q4_K_M", "lcpp_Q4_K_M_dequant", "llamacpp_Q4_K_M_dequant_f32";
    qwen2moe_q8_0_exact: "qwen2moe-tiny", "Q8_0", "lcpp_Q8_0_dequant", "llamacpp_Q8_0_dequant_f32";
    qwen2moe_q4_k_m_exact: "qwen2moe-tiny", "Q4_K_M", "lcpp_Q4_K_M_dequant", "llamacpp_Q4_K_M_dequant_f32";
    mixtral_q8_0_exact: "mixtral-tiny", "Q8_0", "lcpp_Q8_0_dequant", "llamacpp_Q8_0_dequant_f32";
    mixtral_q4_0_exact: "mixtral-tiny", "Q4_0", "lcpp_Q4_0_dequant", "llamacpp_Q4_0_dequant_f32";
}

macro_rules! production_tests {
    ($($name:ident: $model:literal, $variant:literal;)*) => {
        $( #[test] fn $name() { check_production($model, $variant); } )*
    };
}

production_tests! {
    deepseek_v3_q4_k_m_production: "deepseek-v3-tiny", "Q4_K_M";
    deepseek_v3_q5_k_m_production: "deepseek-v3-tiny", "Q5_K_M";
    deepseek_v3_q6_k_production: "deepseek-v3-tiny", "Q6_K";
    deepseek_v2_lite_q8_0_production: "deepseek-v2-lite-tiny", "Q8_0";
    deepseek_v2_lite_q4_k_m_production: "deepseek-v2-lite-tiny", "Q4_K_M";
    qwen3moe_q8_0_production: "qwen3moe-tiny", "Q8_0";
    qwen3moe_q4_k_m_production: "qwen3moe-tiny", "Q4_K_M";
    qwen2moe_q8_0_production: "qwen2moe-tiny", "Q8_0";
    qwen2moe_q4_k_m_production: "qwen2moe-tiny", "Q4_K_M";
    mixtral_q8_0_production: "mixtral-tiny", "Q8_0";
    mixtral_q4_0_production: "mixtral-tiny", "Q4_0";
}
