//! KV-cache types against the f32 cache: the logits' KL divergence at every position of
//! the reference prompts on the tiny models (MLA latent cache, GQA, gpt-oss's sliding
//! window with sinks), and on the real Qwen2.5-0.5B over a longer prompt. The KLs are
//! printed (`--no-capture`); each type is held to a bound its rounding allows, and must
//! differ from f32 at all (proving the type is really used).

mod common;

use std::sync::Arc;

use kernels::ThreadPool;
use model::{KvCache, KvType, KvTypes, Logits, MatmulMode, Model, RunState};

/// Every position's logits of `prompt` with a cache of these types.
fn logits(m: &Model, types: KvTypes, prompt: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut st = RunState::new(MatmulMode::Quantized);
    let mut kv = KvCache::with_types(&m.config, types, prompt.len() + 1).unwrap();
    m.forward(&pool, &mut st, &mut kv, prompt, Logits::All)
        .unwrap()
        .to_vec()
}

/// (mean, max) KL over the positions.
fn kls(want: &[f32], got: &[f32], vocab: usize) -> (f64, f64) {
    let v: Vec<f64> = want
        .chunks_exact(vocab)
        .zip(got.chunks_exact(vocab))
        .map(|(a, b)| common::kl(a, b))
        .collect();
    (
        v.iter().sum::<f64>() / v.len() as f64,
        v.iter().cloned().fold(0.0, f64::max),
    )
}

/// The largest mean KL each type may show against f32 on a prompt: on the tiny random
/// MoE models any perturbation flips some near-tied expert choices (all types land near
/// 1e-3 there); Qwen2.5's keys have large outliers, which f16 already rounds visibly
/// (measured: the f16 cache gives exactly the logits of an f32 cache holding f16-rounded
/// values), and q8_0's per-block scale follows the outlier.
fn bound(t: KvType, tiny: bool) -> f64 {
    match (t, tiny) {
        (KvType::F32, _) => 0.0,
        (_, true) => 1e-2,
        (KvType::F16, false) => 5e-3,
        (KvType::Bf16, false) => 1e-2,
        (KvType::Q8_0, false) => 1e-1,
    }
}

fn check(m: &Model, name: &str, prompt: &[u32], tiny: bool) {
    let vocab = m.config.n_vocab;
    let base = logits(m, KvTypes::default(), prompt);
    let mut seen = Vec::new();
    for t in [KvType::F16, KvType::Bf16, KvType::Q8_0] {
        let got = logits(m, KvTypes::both(t), prompt);
        let (mean, max) = kls(&base, &got, vocab);
        println!(
            "{name}: cache {t}: KL vs f32 mean {mean:.3e}, max {max:.3e} over {} positions",
            prompt.len()
        );
        seen.push((t, got != base, mean));
    }
    for (t, differs, mean) in seen {
        assert!(differs, "{name} {t}: the logits equal the f32 cache's");
        let most = bound(t, tiny);
        assert!(mean <= most, "{name} {t}: mean KL {mean:.3e} > {most:.0e}");
    }
}

#[test]
fn tiny_models_kl_per_cache_type() {
    let prompt: Vec<u32> = common::prompts().concat();
    for (name, variant) in [
        ("deepseek-v2-lite-tiny", "Q4_K_M"),
        ("qwen2moe-tiny", "Q8_0"),
        ("qwen3moe-tiny", "Q4_K_M"),
        ("gpt-oss-tiny", "MXFP4_MOE"),
    ] {
        let m = common::load(name, variant);
        check(&m, name, &prompt, true);
    }
}

#[test]
fn real_qwen2_5_0_5b_kl_per_cache_type() {
    let m = Model::load(Arc::new(gguf::Gguf::open(testutil::demo_model()).unwrap())).unwrap();
    // 160 tokens of varied ids (a deterministic walk over the common part of the vocabulary).
    let prompt: Vec<u32> = (0..160u32).map(|i| 200 + (i * 7919) % 20000).collect();
    check(&m, "qwen2.5-coder-0.5b", &prompt, false);
}
