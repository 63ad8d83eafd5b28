//! DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2): which cached positions
//! each query's MLA attends to. An option of the MLA stage ([`super::mla`]), not a stage
//! of its own.
//!
//! Contract: given the attention input `xb` (`n × dim`) and the normalised compressed
//! queries `q_lora` (`n × q_lora`, the input of MLA's `attn_q_b`), stores each token's
//! indexer key in its sequence's cache and chooses, for every batch row whose position
//! `pos` is at least `top_k`, the `top_k` positions of `0..=pos` it attends to
//! ([`IndexerScratch::selection`]); a row at `pos < top_k` attends to all of `0..=pos`,
//! which is dense MLA.
//!
//! The definition (HF's `DeepseekV32Indexer`):
//! - queries `q = attn_q_b · q_lora`, `n_head` heads of `head_dim`; one key per position
//!   `k = LayerNorm(attn_k · x)` (weight, bias, ε = 1e-6); both rotated on their first
//!   `qk_rope` values with the model's RoPE in the NEOX (half-split) layout;
//! - `score(p) = Σ_h w_h · relu(q_h · k_p)` with `w = indexer.proj · x / sqrt(n_head · head_dim)`;
//! - the `top_k` highest scores over the causal positions (ties: the earlier position).
//!
//! A token's selection depends only on its own query and the cached keys, never on the
//! rest of the batch.

use kernels::indexer::{index_scores, top_k_rows, IndexShape};
use kernels::rope::{rope_heads, RopeMode};

use super::{buf, Batch, StageCtx};
use crate::forward::BatchLimits;
use crate::weights::IndexerWeights;
use crate::{Config, ModelError};

/// The indexer key's LayerNorm epsilon (HF and llama.cpp fix it; the file has no key).
const K_NORM_EPS: f32 = 1e-6;

/// Scores held at once (query rows × positions): a long prefill is scored in groups of
/// rows within it (4 MiB of scores, as much again of ranking scratch).
const SCORE_BUDGET: usize = 1 << 20;

/// The indexer's buffers (`n` = tokens in the batch, `ctx` = one sequence's positions).
#[derive(Default)]
pub struct IndexerScratch {
    /// Queries `n × n_head·head_dim`, keys `n × head_dim`, head weights `n × n_head`.
    q: Vec<f32>,
    k: Vec<f32>,
    w: Vec<f32>,
    /// A group of query rows' scores of every position, and the positions being ranked
    /// (rows × context, at most [`SCORE_BUDGET`] unless one row is longer).
    scores: Vec<f32>,
    order: Vec<u32>,
    /// Per batch row, its `top_k` selected positions in ascending order (rows at
    /// positions below `top_k` leave theirs unused).
    selected: Vec<u32>,
    top_k: usize,
    /// RoPE cos/sin of one position.
    rope_cache: Vec<f32>,
}

impl IndexerScratch {
    /// Sizes the buffers for the batches within `max` of a model shaped `c` (nothing
    /// without an indexer).
    pub fn reserve(&mut self, c: &Config, max: BatchLimits) {
        let Some((m, ix)) = c.mla.as_ref().and_then(|m| Some((m, m.indexer.as_ref()?))) else {
            return;
        };
        let n = max.tokens;
        buf(&mut self.q, n * ix.n_head * ix.head_dim);
        buf(&mut self.k, n * ix.head_dim);
        buf(&mut self.w, n * ix.n_head);
        let held = (n * max.ctx).min(SCORE_BUDGET.max(max.ctx));
        buf(&mut self.scores, held);
        buf(&mut self.order, held);
        buf(&mut self.selected, n * ix.top_k);
        buf(&mut self.rope_cache, m.qk_rope);
    }

    /// The positions batch row `t` (at position `pos`) attends to, ascending, after
    /// [`select`]; `None` when it attends to all of `0..=pos`.
    pub fn selection(&self, t: usize, pos: usize) -> Option<&[u32]> {
        (pos >= self.top_k).then(|| &self.selected[t * self.top_k..(t + 1) * self.top_k])
    }
}

/// LayerNorm of `x` in place: zero mean, unit variance (ε inside the root), then
/// `· weight + bias`.
fn layer_norm_inplace(x: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, w), b) in x.iter_mut().zip(weight).zip(bias) {
        *v = (*v - mean) * inv * w + b;
    }
}

/// Runs the indexer of layer `il` for the batch (see the module contract).
pub fn select(
    cx: &mut StageCtx<'_>,
    s: &mut IndexerScratch,
    w: &IndexerWeights,
    batch: &mut Batch<'_, '_>,
    il: usize,
    xb: &[f32],
    q_lora: &[f32],
) -> Result<(), ModelError> {
    let (c, pool) = (cx.config, cx.pool);
    let (m, ix) = c
        .mla
        .as_ref()
        .and_then(|m| Some((m, m.indexer.as_ref()?)))
        .ok_or_else(|| ModelError::Kernel("indexer weights in a model without one".into()))?;
    let n = batch.rows.len();
    let (h_n, hd, rope) = (ix.n_head, ix.head_dim, m.qk_rope);
    let q_w = h_n * hd;
    s.top_k = ix.top_k;

    let q = buf(&mut s.q, n * q_w);
    cx.linear.forward(pool, &w.q_b, 0, q_lora, q)?;
    let k = buf(&mut s.k, n * hd);
    let wts = buf(&mut s.w, n * h_n);
    cx.linear
        .forward_multi(pool, xb, &mut [(&w.k, &mut *k), (&w.proj, &mut *wts)])?;
    let w_scale = 1.0 / ((h_n * hd) as f32).sqrt();
    wts.iter_mut().for_each(|v| *v *= w_scale);

    // Rotate and cache the keys; rotate the queries.
    let rope_cache = buf(&mut s.rope_cache, rope);
    for (t, &(si, pos)) in batch.rows.iter().enumerate() {
        c.rope.cache(pos as i32, None, rope_cache);
        rope_heads(
            &mut q[t * q_w..(t + 1) * q_w],
            hd,
            0,
            rope_cache,
            RopeMode::Neox,
        );
        let key = &mut k[t * hd..(t + 1) * hd];
        layer_norm_inplace(key, &w.k_norm, &w.k_norm_bias, K_NORM_EPS);
        rope_heads(key, hd, 0, rope_cache, RopeMode::Neox);
        batch.seqs[si].kv.write_index_key(il, pos, key);
    }

    // Score and select, per run of consecutive positions of one sequence, the rows past
    // the first top_k positions, on the thread pool.
    let top = ix.top_k;
    let shape = IndexShape {
        n_head: h_n,
        head_dim: hd,
    };
    let selected = buf(&mut s.selected, n * top);
    let mut t0 = 0;
    while t0 < n {
        let (si, pos0) = batch.rows[t0];
        let mut t1 = t0 + 1;
        while t1 < n && batch.rows[t1] == (si, pos0 + t1 - t0) {
            t1 += 1;
        }
        let ctx = pos0 + t1 - t0;
        let keys = batch.seqs[si].kv.index_keys(il);
        // Rows below position top_k attend densely; the rest in groups whose scores fit
        // the budget.
        let group = (SCORE_BUDGET / ctx).max(1);
        let mut a = t0 + top.saturating_sub(pos0).min(t1 - t0);
        while a < t1 {
            let b = t1.min(a + group);
            let pos = pos0 + a - t0;
            let scores = buf(&mut s.scores, (b - a) * ctx);
            index_scores(
                pool,
                shape,
                &q[a * q_w..b * q_w],
                &wts[a * h_n..b * h_n],
                keys,
                pos,
                scores,
                ctx,
            );
            let order = buf(&mut s.order, (b - a) * ctx);
            top_k_rows(
                pool,
                scores,
                ctx,
                pos,
                b - a,
                top,
                order,
                &mut selected[a * top..b * top],
            );
            a = b;
        }
        t0 = t1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_norm_centres_scales_and_shifts() {
        let mut x = [1.0f32, 2.0, 3.0, 6.0];
        layer_norm_inplace(&mut x, &[1.0, 2.0, 1.0, 1.0], &[0.0, 0.0, 0.5, 0.0], 0.0);
        // mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5.
        let s = 1.0 / 3.5f32.sqrt();
        let want = [-2.0 * s, -2.0 * s, 0.5, 3.0 * s];
        for (a, b) in x.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{x:?} vs {want:?}");
        }
    }
}
