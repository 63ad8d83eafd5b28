//! KV-cache types and int8 attention against the f32 cache with f32 attention: the logits'
//! KL divergence at every position of the reference prompts on the tiny models (MLA latent
//! cache, GQA, gpt-oss's sliding window with sinks), and on the real Qwen2.5-0.5B over a
//! longer prompt. The KLs are printed (`--no-capture`); each configuration is held to a
//! bound its rounding allows, and must differ from the base at all (proving it is really
//! used).

mod common;

use std::sync::Arc;

use kernels::ThreadPool;
use model::{KvCache, KvType, KvTypes, Logits, MatmulMode, Model, RunState};

/// Every position's logits of `prompt` with a cache of these types, attention in int8 or
/// f32 (the matmuls quantized either way): the first half as one prompt, the rest one token
/// at a time, so that both of MLA's forms (decompressed for prompts, absorbed for decode)
/// and both attention shapes run.
fn logits(m: &Model, types: KvTypes, int8: bool, prompt: &[u32]) -> Vec<f32> {
    let pool = ThreadPool::new(2);
    let mut st = RunState::new(MatmulMode::Quantized);
    st.set_int8_attention(int8);
    let mut kv = KvCache::with_types(&m.config, types, prompt.len() + 1).unwrap();
    let half = prompt.len() / 2;
    let mut out = m
        .forward(&pool, &mut st, &mut kv, &prompt[..half], Logits::All)
        .unwrap()
        .to_vec();
    for t in &prompt[half..] {
        let l = m.forward(
            &pool,
            &mut st,
            &mut kv,
            std::slice::from_ref(t),
            Logits::All,
        );
        out.extend_from_slice(l.unwrap());
    }
    out
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
/// q8_KV's one scale per row follows the outliers of a whole head (on Qwen2.5 about as
/// visibly as q8_0's per-block scale); its int8 attention adds the queries' and the softmax
/// weights' rounding.
fn bound(t: KvType, tiny: bool) -> f64 {
    match (t, tiny) {
        (_, true) => 1e-2,
        (KvType::F32, false) => 0.0,
        (KvType::F16, false) => 5e-3,
        (KvType::Bf16, false) => 1e-2,
        (KvType::Q8_0, false) | (KvType::Q8Kv, false) => 1e-1,
    }
}

fn check(m: &Model, name: &str, prompt: &[u32], tiny: bool) {
    let vocab = m.config.n_vocab;
    let base = logits(m, KvTypes::default(), false, prompt);
    let int8_runs = kernels::attention::int8_available();
    let mut seen = Vec::new();
    // q8_KV's logits with f32 and with int8 attention.
    let mut q8kv: [Vec<f32>; 2] = Default::default();
    for (t, int8) in [
        (KvType::F16, false),
        (KvType::Bf16, false),
        (KvType::Q8_0, false),
        (KvType::Q8Kv, false),
        (KvType::Q8Kv, true),
    ] {
        let got = logits(m, KvTypes::both(t), int8, prompt);
        let (mean, max) = kls(&base, &got, vocab);
        let attn = if int8 && int8_runs && t == KvType::Q8Kv {
            "int8"
        } else {
            "f32"
        };
        println!(
            "{name}: cache {t}, {attn} attention: KL vs f32/f32 mean {mean:.3e}, max {max:.3e} over {} positions",
            prompt.len()
        );
        seen.push((t, int8, got != base, mean));
        if t == KvType::Q8Kv {
            q8kv[int8 as usize] = got;
        }
    }
    if int8_runs {
        assert_ne!(
            q8kv[0], q8kv[1],
            "{name}: q8_KV's int8 attention is not used"
        );
    }
    for (t, int8, differs, mean) in seen {
        assert!(
            differs,
            "{name} {t} int8 {int8}: the logits equal the base's"
        );
        let most = bound(t, tiny);
        assert!(
            mean <= most,
            "{name} {t} int8 {int8}: mean KL {mean:.3e} > {most:.0e}"
        );
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
