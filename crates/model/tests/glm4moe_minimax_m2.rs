//! GLM-4.5 (`glm4moe`) and MiniMax-M2 (`minimax-m2`) against their references in
//! tests/data/tiny/{glm4moe,minimax-m2}-tiny (made by tests/data/tiny/make_glm4moe_minimax_m2.py):
//! - `--exact` on the Q8_0 file vs HF float32 (the HF weights are Q8_0-representable, so the
//!   file holds exactly HF's numbers): max |Δ| ≤ 1e-3 at every position of every prompt, and
//!   HF's 16-token greedy continuation;
//! - production kernels vs llama.cpp on the same Q8_0 and Q4_K_M files: top-1 agreement
//!   ≥ 98% over all positions, KL(llama.cpp ‖ ours) printed and bounded;
//! - batch invariance in both modes;
//! - what each architecture binds: GLM's partial RoPE, biases, per-head q/k norm, dense
//!   leading layer, routing settings and its MTP block (outside the trunk: nextn.rs);
//!   MiniMax-M2's q/k norm over all heads.

mod common;

use common::{argmax, kl, load, prompts};
use kernels::ThreadPool;
use model::{BatchSeq, Gating, KvCache, Logits, MatmulMode, Model, QkNorm, RunState};
use testutil::{data_dir, json, read_npy_f32};

const MODELS: [&str; 2] = ["glm4moe-tiny", "minimax-m2-tiny"];

fn logits_all(m: &Model, pool: &ThreadPool, mode: MatmulMode, ids: &[u32]) -> Vec<f32> {
    let mut st = RunState::new(mode);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    m.forward(pool, &mut st, &mut kv, ids, Logits::All)
        .unwrap()
        .to_vec()
}

fn reference(model: &str, prefix: &str, prompt: usize) -> Vec<f32> {
    read_npy_f32(&data_dir().join(format!(
        "tiny/{model}/ref/{prefix}_logits_all_p{prompt}.npy"
    )))
    .1
}

fn greedy(m: &Model, pool: &ThreadPool, ids: &[u32], n: usize) -> Vec<u32> {
    let mut st = RunState::new(MatmulMode::Exact);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    let mut out = vec![argmax(
        m.forward(pool, &mut st, &mut kv, ids, Logits::Last)
            .unwrap(),
    ) as u32];
    while out.len() < n {
        let last = [*out.last().unwrap()];
        out.push(argmax(
            m.forward(pool, &mut st, &mut kv, &last, Logits::Last)
                .unwrap(),
        ) as u32);
    }
    out
}

#[test]
fn exact_matches_hf_float32_at_every_position() {
    let pool = ThreadPool::new(2);
    for model in MODELS {
        let m = load(model, "Q8_0");
        let meta = json(&format!("tiny/{model}/ref/meta.json"));
        for (i, ids) in prompts().iter().enumerate() {
            let ours = logits_all(&m, &pool, MatmulMode::Exact, ids);
            let hf = reference(model, "hf", i);
            assert_eq!(ours.len(), hf.len(), "{model} p{i}: logits shape");
            let max_diff = ours
                .iter()
                .zip(&hf)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max_diff <= 1e-3, "{model} p{i}: max |Δ| = {max_diff}");
            let want: Vec<u32> = meta["prompts"][i]["greedy_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                greedy(&m, &pool, ids, want.len()),
                want,
                "{model} p{i}: greedy continuation"
            );
        }
    }
}

#[test]
fn production_agrees_with_llama_cpp_on_the_same_files() {
    let pool = ThreadPool::new(2);
    for model in MODELS {
        for variant in ["Q8_0", "Q4_K_M"] {
            let m = load(model, variant);
            let vocab = m.config.n_vocab;
            let (mut agree, mut total, mut kl_sum, mut kl_max) = (0, 0, 0f64, 0f64);
            for (i, ids) in prompts().iter().enumerate() {
                let ours = logits_all(&m, &pool, MatmulMode::Quantized, ids);
                let theirs = reference(model, &format!("lcpp_{variant}"), i);
                for (a, b) in ours.chunks_exact(vocab).zip(theirs.chunks_exact(vocab)) {
                    total += 1;
                    agree += usize::from(argmax(a) == argmax(b));
                    let d = kl(b, a);
                    kl_sum += d;
                    kl_max = kl_max.max(d);
                }
            }
            let kl_mean = kl_sum / total as f64;
            eprintln!(
                "{model} {variant} vs llama.cpp: top-1 {agree}/{total}, KL mean {kl_mean:.2e} max {kl_max:.2e}"
            );
            assert!(
                agree * 100 >= total * 98,
                "{model} {variant}: top-1 agreement {agree}/{total} < 98%"
            );
            // Same file and activation quantization as llama.cpp: Q8_0 agrees up to the
            // summation order (KL ~1e-14). On glm4moe-tiny's Q4_K_M, llama.cpp's logits of
            // positions 0-3 of a prompt equal ours to 1e-6 and the later ones differ by
            // ~0.1 (KL ~3e-4): its batched path changes with the row; ours does not
            // (`batch_invariant_both_modes`).
            let bound = if variant == "Q8_0" { 1e-4 } else { 5e-3 };
            assert!(
                kl_max < bound,
                "{model} {variant}: KL max {kl_max:.2e} ≥ {bound:.0e}"
            );
        }
    }
}

fn batch_invariant(model: &str, variant: &str, mode: MatmulMode) {
    let m = load(model, variant);
    let pool = ThreadPool::new(2);
    let vocab = m.config.n_vocab;
    let seqs: [&[u32]; 3] = [
        &[5, 17, 300, 42, 9, 600, 13],
        &[841],
        &[0, 708, 40, 341, 50],
    ];
    let alone: Vec<Vec<f32>> = seqs
        .iter()
        .map(|p| logits_all(&m, &pool, mode, p))
        .collect();
    let mut st = RunState::new(mode);
    let mut kvs: Vec<KvCache> = (0..3)
        .map(|_| KvCache::new(&m.config, 32).unwrap())
        .collect();
    let together = {
        let mut batch: Vec<BatchSeq> = kvs
            .iter_mut()
            .zip(seqs)
            .map(|(kv, tokens)| BatchSeq {
                kv,
                tokens,
                logits: Logits::All,
            })
            .collect();
        m.forward_batch(&pool, &mut st, &mut batch)
            .unwrap()
            .to_vec()
    };
    let mut row = 0;
    for (i, p) in seqs.iter().enumerate() {
        assert!(
            together[row * vocab..(row + p.len()) * vocab] == alone[i][..],
            "{model} {variant} {mode:?}: sequence {i} differs in a batch"
        );
        row += p.len();
    }
}

#[test]
fn batch_invariant_both_modes() {
    for model in MODELS {
        batch_invariant(model, "Q4_K_M", MatmulMode::Quantized);
        batch_invariant(model, "Q8_0", MatmulMode::Exact);
    }
}

#[test]
fn glm4moe_binds_its_mechanisms_and_leaves_the_mtp_block() {
    let m = load("glm4moe-tiny", "Q8_0");
    let c = &m.config;
    // block_count 3 = 2 trunk layers + 1 MTP block.
    assert_eq!((c.n_layer, c.nextn_layers), (2, 1));
    assert_eq!(m.weights.layers.len(), 2);
    assert_eq!((c.head_dim, c.rope.n_dims), (64, 32));
    assert_eq!(c.qk_norm, QkNorm::None);
    let moe = c.moe.as_ref().unwrap();
    assert_eq!(moe.gating, Gating::Sigmoid);
    assert!(moe.norm_topk);
    assert_eq!(moe.weights_scale, 2.5);
    assert_eq!((moe.n_group, moe.topk_group), (4, 2));
    assert_eq!(
        (moe.leading_dense, moe.n_shared, moe.shared_ffn),
        (1, 1, 256)
    );
    assert!(!c.is_moe_layer(0) && c.is_moe_layer(1));
    let model::weights::Attention::Gqa(a) = &m.weights.layers[1].attn else {
        panic!("GQA attention")
    };
    assert!(a.bq.is_some() && a.bk.is_some() && a.bv.is_some());
    assert_eq!(a.q_norm.as_ref().map(Vec::len), Some(64));
    assert_eq!(a.k_norm.as_ref().map(Vec::len), Some(64));
    match &m.weights.layers[1].ffn {
        model::weights::Ffn::Moe(f) => {
            assert!(f.selection_bias.is_some() && f.shared.is_some() && f.shared_gate.is_none())
        }
        _ => panic!("layer 1 is MoE"),
    }
    // The MTP block's tensors are in the file, outside the trunk (nextn.rs runs them).
    assert!(m.is_unused_tensor("blk.2.nextn.eh_proj.weight"));
    assert!(m.is_unused_tensor("blk.2.ffn_up_exps.weight"));
    assert!(!m.is_unused_tensor("blk.1.ffn_up_exps.weight"));
    assert!(!m.is_unused_tensor("output.weight"));
    assert_eq!(
        m.load_notes(),
        vec!["note: 1 next-token-prediction (MTP) layer(s) (blk.2) recognised, outside the forward pass of 2 layers; blk.2 drafts with --spec-type mtp".to_string()]
    );
}

#[test]
fn minimax_m2_normalises_q_and_k_over_all_heads() {
    let m = load("minimax-m2-tiny", "Q8_0");
    let c = &m.config;
    assert_eq!(c.qk_norm, QkNorm::AllHeads);
    assert_eq!(
        (c.n_head, c.n_head_kv, c.head_dim, c.rope.n_dims),
        (4, 2, 64, 32)
    );
    let moe = c.moe.as_ref().unwrap();
    assert_eq!(moe.gating, Gating::Sigmoid);
    assert!(moe.norm_topk);
    assert_eq!((moe.n_shared, moe.weights_scale), (0, 1.0));
    let model::weights::Attention::Gqa(a) = &m.weights.layers[0].attn else {
        panic!("GQA attention")
    };
    assert_eq!(a.q_norm.as_ref().map(Vec::len), Some(4 * 64));
    assert_eq!(a.k_norm.as_ref().map(Vec::len), Some(2 * 64));
    assert!(a.bq.is_none());
    assert!(m.load_notes().is_empty());
    assert!(!m.is_unused_tensor("blk.1.ffn_up_exps.weight"));
}
