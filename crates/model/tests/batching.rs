//! Batch invariance: a sequence's logits are bit-identical whether it runs alone or
//! shares a forward pass with other sequences (prompt chunks and decode steps mixed).

mod common;

use common::load;
use kernels::ThreadPool;
use model::{BatchSeq, KvCache, KvType, KvTypes, Logits, MatmulMode, RunState};

fn check(model: &str, variant: &str, mode: MatmulMode) {
    check_types(model, variant, mode, KvTypes::default());
}

fn check_types(model: &str, variant: &str, mode: MatmulMode, types: KvTypes) {
    let m = load(model, variant);
    let pool = ThreadPool::new(2);
    let prompts: [&[u32]; 3] = [
        &[5, 17, 300, 42, 9, 600, 13],
        &[841],
        &[0, 708, 40, 341, 50, 41, 55, 58, 488, 40, 355],
    ];
    // Alone: prompt, then two decode steps.
    let mut alone = Vec::new();
    for p in prompts {
        let mut st = RunState::new(mode);
        let mut kv = KvCache::with_types(&m.config, types, 32).unwrap();
        let a = m
            .forward(&pool, &mut st, &mut kv, p, Logits::All)
            .unwrap()
            .to_vec();
        let b = m
            .forward(&pool, &mut st, &mut kv, &[77], Logits::Last)
            .unwrap()
            .to_vec();
        let c = m
            .forward(&pool, &mut st, &mut kv, &[78], Logits::Last)
            .unwrap()
            .to_vec();
        alone.push((a, b, c));
    }
    // Together: all prompts in one pass; then the decode steps of sequence 0 and 2 batched
    // with sequence 1's decode steps.
    let mut st = RunState::new(mode);
    let mut kvs: Vec<KvCache> = (0..3)
        .map(|_| KvCache::with_types(&m.config, types, 32).unwrap())
        .collect();
    let vocab = m.config.n_vocab;
    let all = {
        let mut it = kvs.iter_mut();
        let mut seqs: Vec<BatchSeq> = prompts
            .iter()
            .map(|p| BatchSeq {
                kv: it.next().unwrap(),
                tokens: p,
                logits: Logits::All,
            })
            .collect();
        m.forward_batch(&pool, &mut st, &mut seqs).unwrap().to_vec()
    };
    let mut row = 0;
    for (i, p) in prompts.iter().enumerate() {
        assert!(
            all[row * vocab..(row + p.len()) * vocab] == alone[i].0[..],
            "{model} {variant} {types:?}: prompt {i} differs in a batch"
        );
        row += p.len();
    }
    for (step, tok) in [(1, 77u32), (2, 78u32)] {
        let out = {
            let mut it = kvs.iter_mut();
            let toks = [tok];
            let mut seqs: Vec<BatchSeq> = (0..3)
                .map(|_| BatchSeq {
                    kv: it.next().unwrap(),
                    tokens: &toks,
                    logits: Logits::Last,
                })
                .collect();
            m.forward_batch(&pool, &mut st, &mut seqs).unwrap().to_vec()
        };
        for i in 0..3 {
            let want = if step == 1 { &alone[i].1 } else { &alone[i].2 };
            assert!(
                out[i * vocab..(i + 1) * vocab] == want[..],
                "{model} {variant} {types:?}: decode step {step} of sequence {i} differs"
            );
        }
    }
}

#[test]
fn batch_invariant_deepseek_v3_quantized() {
    check("deepseek-v3-tiny", "Q4_K_M", MatmulMode::Quantized);
}
#[test]
fn batch_invariant_qwen2moe_quantized() {
    check("qwen2moe-tiny", "Q8_0", MatmulMode::Quantized);
}
#[test]
fn batch_invariant_mixtral_exact() {
    check("mixtral-tiny", "Q4_0", MatmulMode::Exact);
}
#[test]
fn batch_invariant_deepseek_v2_lite_quantized() {
    check("deepseek-v2-lite-tiny", "Q4_K_M", MatmulMode::Quantized);
}

/// Every cache type keeps a sequence's logits independent of its batch (MLA's latent
/// cache and GQA keys and values).
#[test]
fn batch_invariant_with_every_cache_type() {
    for t in [KvType::F16, KvType::Bf16, KvType::Q8_0, KvType::Q8Kv] {
        let types = KvTypes::both(t);
        check_types(
            "deepseek-v2-lite-tiny",
            "Q4_K_M",
            MatmulMode::Quantized,
            types,
        );
        check_types("qwen2moe-tiny", "Q8_0", MatmulMode::Quantized, types);
    }
    let mixed = KvTypes {
        k: KvType::Q8_0,
        v: KvType::F16,
    };
    check_types("qwen2moe-tiny", "Q8_0", MatmulMode::Quantized, mixed);
}
