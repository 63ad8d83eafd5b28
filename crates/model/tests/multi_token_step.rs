//! The multi-token step of one sequence, as speculative decoding uses it: feeding k tokens
//! in one forward pass (every position's logits) gives bit for bit the logits of k
//! one-token decode steps, and truncating the cache back past rejected tokens then
//! continuing gives bit for bit what a cache that never saw them gives. This is what
//! makes verified drafts lossless (`engine::speculate`).

mod common;

use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState, VERIFY_STEP_MAX};

/// A cache of 64 positions; gpt-oss's sliding layers get rings that wrap within the test
/// (8-position window, steps of up to [`VERIFY_STEP_MAX`] tokens: 23 rows).
fn cache(m: &Model) -> KvCache {
    KvCache::with_ring_step(&m.config, 64, VERIFY_STEP_MAX).unwrap()
}

/// Prompt, then the draft tokens: one pass vs one by one, then a rollback of `reject`
/// tokens and a different continuation vs a cache that never saw the rejected ones.
fn check_model(m: &Model, what: &str, mode: MatmulMode) {
    let pool = ThreadPool::new(2);
    let vocab = m.config.n_vocab;
    let prompts: [&[u32]; 2] = [
        &[5, 17, 300, 42, 9, 600, 13],
        // MLA's cost rule would pick the decompressed form for a 16-token step right after
        // a 1-token prompt if steps that short were not absorbed.
        &[841],
    ];
    // The longest step a draft is verified in.
    let draft: [u32; VERIFY_STEP_MAX] = [77, 78, 79, 5, 17, 300, 2, 3, 4, 9, 8, 7, 6, 5, 4, 3];
    for prompt in prompts {
        let mut st = RunState::new(mode);
        let mut one = cache(m);
        m.forward(&pool, &mut st, &mut one, prompt, Logits::Last)
            .unwrap();
        let mut many = cache(m);
        m.forward(&pool, &mut st, &mut many, prompt, Logits::Last)
            .unwrap();
        let mut want = Vec::new();
        for &t in &draft {
            let row = m
                .forward(&pool, &mut st, &mut one, &[t], Logits::Last)
                .unwrap();
            want.extend_from_slice(row);
        }
        let got = m
            .forward(&pool, &mut st, &mut many, &draft, Logits::All)
            .unwrap()
            .to_vec();
        for i in 0..draft.len() {
            assert!(
                got[i * vocab..(i + 1) * vocab] == want[i * vocab..(i + 1) * vocab],
                "{what}: prompt of {} tokens, row {i} of a {}-token step differs from the \
                 one-token step",
                prompt.len(),
                draft.len()
            );
        }
        // Keep the first 3 draft tokens, reject the rest, continue with other tokens.
        let keep = prompt.len() + 3;
        assert_eq!(many.truncate(keep), keep);
        // What decoding without drafts holds: the prompt, then one token per step.
        let mut fresh = cache(m);
        m.forward(&pool, &mut st, &mut fresh, prompt, Logits::Last)
            .unwrap();
        for &t in &draft[..3] {
            m.forward(&pool, &mut st, &mut fresh, &[t], Logits::Last)
                .unwrap();
        }
        for t in [400u32, 401, 402] {
            let a = m
                .forward(&pool, &mut st, &mut many, &[t], Logits::Last)
                .unwrap()
                .to_vec();
            let b = m
                .forward(&pool, &mut st, &mut fresh, &[t], Logits::Last)
                .unwrap();
            assert!(
                a[..] == b[..],
                "{what}: after a rollback, token {t} differs from a cache that never saw the \
                 rejected tokens"
            );
        }
    }
}

fn check(model: &str, variant: &str, mode: MatmulMode) {
    let m = common::load(model, variant);
    check_model(&m, &format!("{model} {variant} {mode:?}"), mode);
    if mode == MatmulMode::Quantized && variant == "Q4_K_M" {
        let mut packed = common::load(model, variant);
        packed.weights.repack().unwrap();
        check_model(&packed, &format!("{model} {variant} repacked"), mode);
    }
}

#[test]
fn deepseek_v3_step_equals_token_by_token() {
    check("deepseek-v3-tiny", "Q4_K_M", MatmulMode::Quantized);
    check("deepseek-v3-tiny", "Q4_K_M", MatmulMode::Exact);
}

#[test]
fn deepseek_v2_lite_step_equals_token_by_token() {
    check("deepseek-v2-lite-tiny", "Q4_K_M", MatmulMode::Quantized);
}

#[test]
fn qwen2moe_step_equals_token_by_token() {
    check("qwen2moe-tiny", "Q4_K_M", MatmulMode::Quantized);
    check("qwen2moe-tiny", "Q8_0", MatmulMode::Quantized);
}

#[test]
fn qwen3moe_and_mixtral_step_equals_token_by_token() {
    check("qwen3moe-tiny", "Q4_K_M", MatmulMode::Quantized);
    check("mixtral-tiny", "Q4_0", MatmulMode::Quantized);
    check("mixtral-tiny", "Q8_0", MatmulMode::Exact);
}

#[test]
fn gpt_oss_and_glm_step_equals_token_by_token() {
    for dir in ["gpt-oss-tiny", "glm4moe-tiny"] {
        let path = testutil::data_dir().join(format!("tiny/{dir}"));
        let file = std::fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "gguf"))
            .unwrap_or_else(|| panic!("no GGUF in {}", path.display()));
        let m = Model::load(std::sync::Arc::new(gguf::Gguf::open(&file).unwrap())).unwrap();
        check_model(&m, &file.display().to_string(), MatmulMode::Quantized);
    }
}
