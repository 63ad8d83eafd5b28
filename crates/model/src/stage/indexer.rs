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

use kernels::attention::dot;
use kernels::rope::{rope_heads, RopeMode};

use super::{buf, Batch, StageCtx};
use crate::forward::BatchLimits;
use crate::weights::IndexerWeights;
use crate::{Config, ModelError};

/// The indexer key's LayerNorm epsilon (HF and llama.cpp fix it; the file has no key).
const K_NORM_EPS: f32 = 1e-6;

/// The indexer's buffers (`n` = tokens in the batch, `ctx` = one sequence's positions).
#[derive(Default)]
pub struct IndexerScratch {
    /// Queries `n × n_head·head_dim`, keys `n × head_dim`, head weights `n × n_head`.
    q: Vec<f32>,
    k: Vec<f32>,
    w: Vec<f32>,
    /// One query's score of every position, and the positions being ranked.
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
        buf(&mut self.scores, max.ctx);
        buf(&mut self.order, max.ctx);
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

    // Score and select per row past the first top_k positions.
    let top = ix.top_k;
    let selected = buf(&mut s.selected, n * top);
    for (t, &(si, pos)) in batch.rows.iter().enumerate() {
        if pos < top {
            continue;
        }
        let keys = batch.seqs[si].kv.index_keys(il);
        let scores = buf(&mut s.scores, pos + 1);
        let qt = &q[t * q_w..(t + 1) * q_w];
        let wt = &wts[t * h_n..(t + 1) * h_n];
        for (p, score) in scores.iter_mut().enumerate() {
            let kp = &keys[p * hd..(p + 1) * hd];
            *score = qt
                .chunks_exact(hd)
                .zip(wt)
                .map(|(qh, &wh)| wh * dot(qh, kp).max(0.0))
                .sum();
        }
        let order = buf(&mut s.order, pos + 1);
        order
            .iter_mut()
            .enumerate()
            .for_each(|(p, o)| *o = p as u32);
        // Highest score first; among equal scores the earlier position.
        let rank = |a: &u32, b: &u32| {
            scores[*b as usize]
                .total_cmp(&scores[*a as usize])
                .then(a.cmp(b))
        };
        order.select_nth_unstable_by(top - 1, rank);
        let chosen = &mut selected[t * top..(t + 1) * top];
        chosen.copy_from_slice(&order[..top]);
        chosen.sort_unstable();
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
