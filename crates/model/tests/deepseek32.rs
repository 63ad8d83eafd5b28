//! DeepSeek-V3.2 (`deepseek32`: MLA + the DSA lightning indexer) against its references in
//! tests/data/tiny/deepseek32-tiny (made by its make.py; index_topk = 8, so prompts longer
//! than 8 tokens attend sparsely from position 8 on):
//! - `--exact` on the Q8_0 file vs HF float32 (the file holds exactly HF's numbers): max
//!   |Δ| ≤ 1e-3 at every position of every prompt, in both MLA forms, and HF's 16-token
//!   greedy continuation (decode steps through the cache);
//! - the reference really depends on the selection: dense MLA on the same file misses it;
//! - the indexer's key cache stays consistent when the cache is truncated and refilled;
//! - production kernels vs llama.cpp (its `deepseek32` runs the indexer too) on the same
//!   Q8_0 and Q4_K_M files: top-1 agreement ≥ 98%, KL printed and bounded;
//! - batch invariance in both modes, and what the architecture binds.

mod common;

use common::{argmax, kl, load};
use kernels::ThreadPool;
use model::{BatchSeq, KvCache, Logits, MatmulMode, MlaForm, Model, RunState};
use testutil::{data_dir, json, read_npy_f32};

const MODEL: &str = "deepseek32-tiny";
const TOP_K: usize = 8;

/// The prompts of the references: the three shared ones, then two longer than top-k.
fn prompts() -> Vec<Vec<u32>> {
    json(&format!("tiny/{MODEL}/ref/prompts.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn run(m: &Model, st: &mut RunState, ids: &[u32]) -> Vec<f32> {
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    m.forward(&ThreadPool::new(2), st, &mut kv, ids, Logits::All)
        .unwrap()
        .to_vec()
}

fn logits_all(m: &Model, mode: MatmulMode, ids: &[u32]) -> Vec<f32> {
    run(m, &mut RunState::new(mode), ids)
}

fn reference(prefix: &str, prompt: usize) -> Vec<f32> {
    read_npy_f32(&data_dir().join(format!(
        "tiny/{MODEL}/ref/{prefix}_logits_all_p{prompt}.npy"
    )))
    .1
}

/// Largest |a − b| per position.
fn row_diffs(a: &[f32], b: &[f32], vocab: usize) -> Vec<f32> {
    assert_eq!(a.len(), b.len(), "logits shape");
    a.chunks_exact(vocab)
        .zip(b.chunks_exact(vocab))
        .map(|(x, y)| {
            x.iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max)
        })
        .collect()
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
fn the_references_exercise_the_selection() {
    let p = prompts();
    assert_eq!(p.len(), 5);
    assert!(p.iter().filter(|ids| ids.len() > TOP_K).count() >= 3);
    assert!(p.iter().any(|ids| ids.len() > 1 && ids.len() <= TOP_K));
    // Every sparse query's 8th and 9th index scores are apart by far more than f32
    // rounding (relative to the row's largest score, as the make script measured in HF):
    // the exact comparison does not hinge on a near-tie.
    let meta = json(&format!("tiny/{MODEL}/ref/meta.json"));
    for (i, pm) in meta["prompts"].as_array().unwrap().iter().enumerate() {
        let gap = &pm["min_relative_selection_gap"];
        assert_eq!(gap.is_null(), prompts()[i].len() <= TOP_K, "p{i}");
        if let Some(gap) = gap.as_f64() {
            assert!(gap > 1e-5, "p{i}: relative selection gap {gap}");
        }
    }
}

#[test]
fn exact_matches_hf_float32_at_every_position_in_both_forms() {
    let m = load(MODEL, "Q8_0");
    let vocab = m.config.n_vocab;
    let pool = ThreadPool::new(2);
    let meta = json(&format!("tiny/{MODEL}/ref/meta.json"));
    for (i, ids) in prompts().iter().enumerate() {
        let hf = reference("hf", i);
        for form in [MlaForm::Absorbed, MlaForm::Decompressed] {
            let mut st = RunState::new(MatmulMode::Exact);
            st.set_mla_form(form);
            let worst = row_diffs(&run(&m, &mut st, ids), &hf, vocab)
                .into_iter()
                .fold(0f32, f32::max);
            assert!(worst <= 1e-3, "p{i} {form:?}: max |Δ| = {worst}");
        }
        let want: Vec<u32> = meta["prompts"][i]["greedy_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            greedy(&m, &pool, ids, want.len()),
            want,
            "p{i}: greedy continuation"
        );
    }
}

/// Dense MLA on the same file matches HF while a query has at most top-k positions and
/// misses it after: the reference depends on the selection, and the comparison above
/// would fail without it.
#[test]
fn dense_mla_misses_the_reference_past_top_k() {
    let m = load(MODEL, "Q8_0");
    let vocab = m.config.n_vocab;
    let mut worst_sparse = 0f32;
    for (i, ids) in prompts().iter().enumerate() {
        let mut st = RunState::new(MatmulMode::Exact);
        st.set_indexer_selection(false);
        let d = row_diffs(&run(&m, &mut st, ids), &reference("hf", i), vocab);
        for (pos, &x) in d.iter().enumerate() {
            if pos < TOP_K {
                assert!(x <= 1e-3, "p{i} position {pos}: dense differs by {x}");
            } else {
                worst_sparse = worst_sparse.max(x);
            }
        }
    }
    assert!(
        worst_sparse > 0.1,
        "dense MLA is within {worst_sparse} of HF past top-k: the selection does not matter"
    );
}

/// Truncating the cache (a shared prefix, a rejected draft) and feeding the rest again
/// gives the one-shot logits: the indexer keys of the kept positions are still there and
/// the dropped ones are rewritten.
#[test]
fn truncated_cache_refills_to_the_same_logits() {
    let m = load(MODEL, "Q8_0");
    let vocab = m.config.n_vocab;
    let pool = ThreadPool::new(2);
    let ids = &prompts()[4];
    let mut st = RunState::new(MatmulMode::Exact);
    st.set_mla_form(MlaForm::Absorbed);
    let whole = run(&m, &mut st, ids);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    m.forward(&pool, &mut st, &mut kv, ids, Logits::Last)
        .unwrap();
    for keep in [20, 11, 5] {
        assert_eq!(kv.truncate(keep), keep);
        let again = m
            .forward(&pool, &mut st, &mut kv, &ids[keep..], Logits::All)
            .unwrap()
            .to_vec();
        let worst = row_diffs(&again, &whole[keep * vocab..], vocab)
            .into_iter()
            .fold(0f32, f32::max);
        assert!(worst <= 1e-4, "refilled from {keep}: max |Δ| = {worst}");
    }
}

#[test]
fn production_agrees_with_llama_cpp_on_the_same_files() {
    for variant in ["Q8_0", "Q4_K_M"] {
        let m = load(MODEL, variant);
        let vocab = m.config.n_vocab;
        let (mut agree, mut total, mut kl_sum, mut kl_max) = (0, 0, 0f64, 0f64);
        for (i, ids) in prompts().iter().enumerate() {
            // llama.cpp's graph runs MLA absorbed; so do we here (the decompressed form,
            // which Auto picks for the 7-token prompt, quantizes the latents once more).
            let mut st = RunState::new(MatmulMode::Quantized);
            st.set_mla_form(MlaForm::Absorbed);
            let ours = run(&m, &mut st, ids);
            let theirs = reference(&format!("lcpp_{variant}"), i);
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
            "{MODEL} {variant} vs llama.cpp: top-1 {agree}/{total}, KL mean {kl_mean:.2e} max {kl_max:.2e}"
        );
        assert!(
            agree * 100 >= total * 98,
            "{variant}: top-1 agreement {agree}/{total} < 98%"
        );
        // Q8_0 agrees up to the summation order, the indexer's choices included. Q4_K_M:
        // llama.cpp's batched Q4_K path rounds differently per row (see
        // glm4moe_minimax_m2.rs), and a few queries' 8th and 9th index scores are within
        // 1e-4 of each other (meta.json): one such query choosing differently is the
        // largest KL (0.1 at one of 89 positions).
        let bound = if variant == "Q8_0" { 1e-3 } else { 0.2 };
        assert!(
            kl_max < bound,
            "{variant}: KL max {kl_max:.2e} ≥ {bound:.0e}"
        );
    }
}

fn batch_invariant(variant: &str, mode: MatmulMode) {
    let m = load(MODEL, variant);
    let pool = ThreadPool::new(2);
    let vocab = m.config.n_vocab;
    let p = prompts();
    let seqs: [&[u32]; 3] = [&p[3], &[841], &p[2][..12]];
    let alone: Vec<Vec<f32>> = seqs.iter().map(|s| logits_all(&m, mode, s)).collect();
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
    for (i, s) in seqs.iter().enumerate() {
        assert!(
            together[row * vocab..(row + s.len()) * vocab] == alone[i][..],
            "{variant} {mode:?}: sequence {i} differs in a batch"
        );
        row += s.len();
    }
}

#[test]
fn batch_invariant_both_modes() {
    batch_invariant("Q4_K_M", MatmulMode::Quantized);
    batch_invariant("Q8_0", MatmulMode::Exact);
}

#[test]
fn deepseek32_binds_the_indexer_and_caches_its_keys() {
    let m = load(MODEL, "Q8_0");
    let c = &m.config;
    assert_eq!(
        (c.arch, c.arch.name()),
        (model::Arch::Deepseek32, "deepseek32")
    );
    assert_eq!((c.n_layer, c.nextn_layers), (3, 0));
    let mla = c.mla.as_ref().unwrap();
    assert_eq!(mla.q_lora_rank, Some(256));
    assert_eq!(
        mla.indexer,
        Some(model::IndexerConfig {
            n_head: 8,
            head_dim: 64,
            top_k: TOP_K
        })
    );
    let moe = c.moe.as_ref().unwrap();
    assert_eq!(moe.gating, model::Gating::Sigmoid);
    assert!(!c.is_moe_layer(0) && c.is_moe_layer(1) && c.is_moe_layer(2));
    for l in &m.weights.layers {
        let model::weights::Attention::Mla(a) = &l.attn else {
            panic!("MLA attention")
        };
        let ix = a.indexer.as_ref().expect("an indexer on every layer");
        assert_eq!((ix.q_b.n_in, ix.q_b.n_out), (256, 8 * 64));
        assert_eq!((ix.k.n_out, ix.proj.n_out), (64, 8));
        assert_eq!((ix.k_norm.len(), ix.k_norm_bias.len()), (64, 64));
    }
    // The indexer keys (64 f32 per position and layer) count in the cache's bytes.
    let kv = KvCache::new(c, 40).unwrap();
    assert_eq!(kv.allocated_bytes(), kv.bytes());
    let latent = (256 + 32) * 4;
    assert_eq!(kv.bytes(), 3 * 40 * (latent + 64 * 4));
}

/// The indexer scores and selects on the thread pool: 1, 2 and 3 threads give the same
/// bits for a prompt far past top-k (scored in one pass) and for the decode steps after
/// it, in both modes. Selection by a different split would change the logits.
#[test]
fn thread_counts_give_identical_logits_past_top_k() {
    // A prompt of 150 ids from the tiny vocabulary (deterministic, no repeats nearby).
    let prompt: Vec<u32> = (0..150u32).map(|i| (i * 7919 + 13) % 997 + 2).collect();
    for (variant, mode) in [
        ("Q4_K_M", MatmulMode::Quantized),
        ("Q8_0", MatmulMode::Exact),
    ] {
        let m = load(MODEL, variant);
        let run_with = |threads: usize| {
            let pool = ThreadPool::new(threads);
            let mut st = RunState::new(mode);
            let mut kv = KvCache::new(&m.config, 160).unwrap();
            let mut out = m
                .forward(&pool, &mut st, &mut kv, &prompt, Logits::All)
                .unwrap()
                .to_vec();
            let mut next = argmax(&out[out.len() - m.config.n_vocab..]) as u32;
            for _ in 0..3 {
                let step = m
                    .forward(&pool, &mut st, &mut kv, &[next], Logits::Last)
                    .unwrap();
                next = argmax(step) as u32;
                out.extend_from_slice(step);
            }
            out.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()
        };
        let one = run_with(1);
        assert_eq!(run_with(2), one, "{variant}: 2 threads differ from 1");
        assert_eq!(run_with(3), one, "{variant}: 3 threads differ from 1");
    }
}
