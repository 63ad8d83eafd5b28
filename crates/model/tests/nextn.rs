//! The next-token-prediction (MTP) block of GLM-4.5's tiny model
//! (tests/data/tiny/glm4moe-tiny, random weights made with HF's Glm4Moe classes; HF does
//! not run the MTP layer, so there is no HF output to compare with):
//! - its tensors bind with the shapes the formula needs; a file without one says why;
//! - [`Model::forward_nextn`] against a reference built from parts checked elsewhere: the
//!   block's input `eh_proj · [enorm(embed(t)); hnorm(norm(h))]` and its final norm
//!   computed here in f64 from the dequantized weights, and the block itself run as the
//!   only layer of a trunk (the trunk's layers match HF float32 to 1e-3:
//!   glm4moe_minimax_m2.rs) whose "embeddings" are those inputs — at every position, fed
//!   one row at a time and all at once, from the trunk's hidden states and chained on
//!   the block's own.

mod common;

use common::{argmax, load};
use gguf::GgmlType;
use kernels::ThreadPool;
use model::weights::{Attention, Ffn, Matrix};
use model::{HiddenFrom, KvCache, KvTypes, Logits, MatmulMode, Model, RunState};

const MODEL: &str = "glm4moe-tiny";

#[test]
fn the_nextn_block_binds_with_its_shapes() {
    let m = load(MODEL, "Q8_0");
    let dim = m.config.dim;
    let n = m.nextn().expect("glm4moe-tiny carries an MTP block");
    assert_eq!((n.eh_proj.n_in, n.eh_proj.n_out), (2 * dim, dim));
    for v in [&n.enorm, &n.hnorm, &n.head_norm] {
        assert_eq!(v.len(), dim);
    }
    // This file shares the trunk's head and embeddings (as GLM-4.6 and the converted
    // DeepSeek-V3.2 files do).
    assert!(n.head.is_none() && n.embed.is_none());
    let Attention::Gqa(a) = &n.layer.attn else {
        panic!("GQA attention")
    };
    assert_eq!(a.wq.n_in, dim);
    assert!(a.bq.is_some() && a.q_norm.is_some());
    let Ffn::Moe(f) = &n.layer.ffn else {
        panic!("the MTP block's FFN is MoE")
    };
    assert!(f.selection_bias.is_some() && f.shared.is_some());
    // The block's tensors stay out of the trunk's pages until drafting reads them.
    assert!(m.is_unused_tensor("blk.2.nextn.eh_proj.weight"));

    let q = load("qwen3moe-tiny", "Q8_0");
    let err = q
        .nextn()
        .err()
        .expect("qwen3moe has no MTP block")
        .to_string();
    assert!(
        err.contains("no next-token-prediction (MTP) layers"),
        "{err}"
    );
    assert!(q.nextn_cache(KvTypes::default(), 8).is_err());
}

/// Row `row` of `m` dequantized.
fn row(m: &Matrix, row: usize) -> Vec<f32> {
    let mut out = vec![0.0; m.n_in];
    quant::dequantize_row(m.ty, m.data(), row, &mut out).unwrap();
    out
}

/// RMSNorm in f64.
fn rms(x: &[f64], w: &[f32], eps: f32) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps as f64).sqrt();
    x.iter().zip(w).map(|(v, &w)| v * s * w as f64).collect()
}

/// The block's input for `hidden` (pre-norm rows, normalised by `first_norm`) paired with
/// `tokens`, in f64 from the dequantized weights.
fn block_input(m: &Model, hidden: &[f32], first_norm: &[f32], tokens: &[u32]) -> Vec<f32> {
    let (n, w, eps) = (m.nextn().unwrap(), &m.weights, m.config.rms_eps);
    let dim = m.config.dim;
    let proj: Vec<Vec<f32>> = (0..dim).map(|j| row(&n.eh_proj, j)).collect();
    let mut out = Vec::with_capacity(tokens.len() * dim);
    for (h, &t) in hidden.chunks_exact(dim).zip(tokens) {
        let e: Vec<f64> = row(&w.token_embd, t as usize)
            .iter()
            .map(|&v| v as f64)
            .collect();
        let h: Vec<f64> = h.iter().map(|&v| v as f64).collect();
        let mut joined = rms(&e, &n.enorm, eps);
        joined.extend(rms(&rms(&h, first_norm, eps), &n.hnorm, eps));
        for p in &proj {
            out.push(
                p.iter()
                    .zip(&joined)
                    .map(|(&a, b)| a as f64 * b)
                    .sum::<f64>() as f32,
            );
        }
    }
    out
}

/// Every row's logits of the MTP block on the inputs `x` (rows of `dim`), by a trunk whose
/// only layer is `m`'s MTP block, whose embeddings are `x` and whose final norm is the
/// block's.
fn reference(m: &Model, x: &[f32], pool: &ThreadPool) -> Vec<f32> {
    let mut r = load(MODEL, "Q8_0");
    let dim = r.config.dim;
    let n = r.weights.nextn.take().unwrap();
    let bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let rows = x.len() / dim;
    r.weights.token_embd =
        Matrix::derived("mtp inputs".into(), GgmlType::F32, dim, rows, 1, bytes).unwrap();
    r.weights.layers = vec![n.layer];
    r.weights.output_norm = n.head_norm;
    r.config.n_layer = 1;
    assert_eq!(r.config.dim, m.config.dim);
    let ids: Vec<u32> = (0..rows as u32).collect();
    let mut st = RunState::new(MatmulMode::Exact);
    let mut kv = KvCache::new(&r.config, 64).unwrap();
    r.forward(pool, &mut st, &mut kv, &ids, Logits::All)
        .unwrap()
        .to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn forward_nextn_matches_the_block_run_as_a_trunk_layer() {
    let pool = ThreadPool::new(2);
    let m = load(MODEL, "Q8_0");
    let (dim, vocab) = (m.config.dim, m.config.n_vocab);
    let prompt: Vec<u32> = vec![841, 17, 503, 99, 2, 640, 311, 77, 912];
    // The trunk's hidden states at every prompt position.
    let mut st = RunState::new(MatmulMode::Exact);
    let mut kv = KvCache::new(&m.config, 64).unwrap();
    m.forward(&pool, &mut st, &mut kv, &prompt, Logits::Last)
        .unwrap();
    let hidden = st.hidden(dim).to_vec();
    assert_eq!(hidden.len(), prompt.len() * dim);
    // Position p pairs with the token at p + 1; the last with a token of our choosing.
    let mut next: Vec<u32> = prompt[1..].to_vec();
    next.push(5);

    let want = reference(
        &m,
        &block_input(&m, &hidden, &m.weights.output_norm, &next),
        &pool,
    );
    let tol = 1e-3;

    // One row at a time: each row attends to the block's cache of the rows before.
    let mut nst = RunState::new(MatmulMode::Exact);
    let mut nkv = m.nextn_cache(KvTypes::default(), 64).unwrap();
    for p in 0..prompt.len() {
        let got = m
            .forward_nextn(
                &pool,
                &mut nst,
                &mut nkv,
                &hidden[p * dim..(p + 1) * dim],
                HiddenFrom::Trunk,
                &next[p..p + 1],
            )
            .unwrap();
        let d = max_diff(got, &want[p * vocab..(p + 1) * vocab]);
        assert!(d <= tol, "position {p}: max |Δ| {d}");
    }
    assert_eq!(nkv.len(), prompt.len());

    // All rows in one pass: the last row's logits, the same.
    let mut bst = RunState::new(MatmulMode::Exact);
    let mut bkv = m.nextn_cache(KvTypes::default(), 64).unwrap();
    let got = m
        .forward_nextn(&pool, &mut bst, &mut bkv, &hidden, HiddenFrom::Trunk, &next)
        .unwrap()
        .to_vec();
    let last = prompt.len() - 1;
    let d = max_diff(&got, &want[last * vocab..]);
    assert!(d <= tol, "batched: max |Δ| {d}");

    // Chained: the block's own output at the last position, normalised by its head norm,
    // paired with the token it predicts, one position on.
    let own = bst.hidden(dim)[last * dim..].to_vec();
    let drafted = argmax(&got) as u32;
    let chained = m
        .forward_nextn(
            &pool,
            &mut bst,
            &mut bkv,
            &own,
            HiddenFrom::Nextn,
            &[drafted],
        )
        .unwrap()
        .to_vec();
    let head_norm = &m.nextn().unwrap().head_norm;
    let mut x = block_input(&m, &hidden, &m.weights.output_norm, &next);
    x.extend(block_input(&m, &own, head_norm, &[drafted]));
    let want = reference(&m, &x, &pool);
    let d = max_diff(&chained, &want[prompt.len() * vocab..]);
    assert!(d <= tol, "chained: max |Δ| {d}");

    // Bad input: hidden rows that do not match the tokens.
    let err = m
        .forward_nextn(
            &pool,
            &mut bst,
            &mut bkv,
            &own[..dim - 1],
            HiddenFrom::Nextn,
            &[drafted],
        )
        .unwrap_err();
    assert!(err.to_string().contains("hidden values"), "{err}");
}
