//! `--experts-per-token K < k` (KTransformers' "selective experts"): the logit KL
//! divergence against the full top-k, on the tiny models.

mod common;

use common::{load, prompts};
use kernels::ThreadPool;
use model::{KvCache, Logits, MatmulMode, Model, RunState};

/// Mean over prompt positions of KL(full ‖ reduced).
fn mean_kl(model: &str, variant: &str, k: usize) -> (usize, f64) {
    let mut m = load(model, variant);
    let full_k = m.experts_per_token();
    let pool = ThreadPool::new(2);
    let prompt = prompts().swap_remove(2);
    let run = |m: &Model| {
        let mut st = RunState::new(MatmulMode::Quantized);
        let mut kv = KvCache::new(&m.config, 64).unwrap();
        m.forward(&pool, &mut st, &mut kv, &prompt, Logits::All)
            .unwrap()
            .to_vec()
    };
    let full = run(&m);
    m.set_experts_per_token(k).unwrap();
    let reduced = run(&m);
    let vocab = m.config.n_vocab;
    let mut kl = 0.0;
    for p in 0..prompt.len() {
        kl += common::kl(
            &full[p * vocab..(p + 1) * vocab],
            &reduced[p * vocab..(p + 1) * vocab],
        );
    }
    (full_k, kl / prompt.len() as f64)
}

#[test]
fn selective_experts_kl_on_tiny_models() {
    let mut report = Vec::new();
    for (model, variant, k) in [
        ("deepseek-v3-tiny", "Q6_K", 2),
        ("deepseek-v2-lite-tiny", "Q8_0", 3),
        ("deepseek-v2-lite-tiny", "Q8_0", 2),
        ("qwen2moe-tiny", "Q8_0", 3),
        ("qwen3moe-tiny", "Q8_0", 1),
        ("mixtral-tiny", "Q8_0", 1),
    ] {
        let (full_k, kl) = mean_kl(model, variant, k);
        report.push(format!(
            "{model} {variant}: {k} of {full_k} experts, mean KL {kl:.4} nats"
        ));
        // Dropping experts changes the output, but the model stays the same model.
        assert!(kl > 0.0 && kl.is_finite(), "{model}: KL {kl}");
        assert!(
            kl < 1.0,
            "{model}: KL {kl} — dropping the weakest experts should not change the model this much"
        );
    }
    eprintln!("{}", report.join("\n"));
}
