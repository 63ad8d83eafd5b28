//! Grouped-query attention (Llama, Qwen2, Qwen2-MoE, Qwen3-MoE, GLM-4.5, MiniMax-M2,
//! gpt-oss).
//!
//! Contract: `xb` (`n × dim`) in; q/k/v projections (+ biases, + q/k RMSNorm per head
//! or over all heads), RoPE on the first `rope.n_dims` values of each head (all of them,
//! or a part: GLM-4.5 and MiniMax-M2), the batch's keys and values stored in each token's
//! own cache, causal attention of each token over its sequence (gpt-oss: with sinks, and a
//! sliding window on some layers, whose cache may be a ring), and the output projection
//! (+ bias) written to `out` (`n × dim`).

use kernels::attention::{attention_with, AttnOpts, AttnScratch, AttnShape};
use kernels::norm::rms_norm_inplace;
use kernels::rope::rope_heads;
use kernels::vector::add_inplace;

use super::{buf, Batch, StageCtx};
use crate::weights::GqaWeights;
use crate::{Config, ModelError};

/// The GQA stage's buffers (`n` = tokens in the batch).
#[derive(Default)]
pub struct GqaScratch {
    /// Queries, keys and values of the batch: `n × n_head·head_dim`, `n × n_kv·head_dim`,
    /// `n × n_kv·head_dim_v`.
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention output (all heads), `n × n_head·head_dim_v`.
    att_out: Vec<f32>,
    /// RoPE cos/sin of one position.
    rope_cache: Vec<f32>,
    /// Per-thread attention scores.
    attn: AttnScratch,
}

impl GqaScratch {
    /// Sizes the buffers for `n` tokens of a model shaped `c`, attending over up to
    /// `n_ctx` positions on `threads` threads.
    pub fn reserve(&mut self, c: &Config, n: usize, threads: usize, n_ctx: usize) {
        self.attn
            .reserve_for(threads, n_ctx, c.head_dim, c.head_dim_v);
        buf(&mut self.q, n * c.n_head * c.head_dim);
        buf(&mut self.k, n * c.n_head_kv * c.head_dim);
        buf(&mut self.v, n * c.n_head_kv * c.head_dim_v);
        buf(&mut self.att_out, n * c.n_head * c.head_dim_v);
        buf(&mut self.rope_cache, c.rope.n_dims);
    }
}

/// Grouped-query attention of layer `il` over each token's own cache (see the module
/// contract).
pub fn gqa_attention(
    cx: &mut StageCtx<'_>,
    s: &mut GqaScratch,
    a: &GqaWeights,
    batch: &mut Batch<'_, '_>,
    il: usize,
    xb: &[f32],
    out: &mut [f32],
) -> Result<(), ModelError> {
    let (c, pool) = (cx.config, cx.pool);
    let n = batch.rows.len();
    let (hd, hdv) = (c.head_dim, c.head_dim_v);
    let (q_w, k_w, v_w) = (c.n_head * hd, c.n_head_kv * hd, c.n_head_kv * hdv);
    let q = buf(&mut s.q, n * q_w);
    let k = buf(&mut s.k, n * k_w);
    let v = buf(&mut s.v, n * v_w);
    cx.linear.forward_multi(
        pool,
        xb,
        &mut [(&a.wq, &mut *q), (&a.wk, &mut *k), (&a.wv, &mut *v)],
    )?;
    for (m, bias, width) in [
        (&mut *q, &a.bq, q_w),
        (&mut *k, &a.bk, k_w),
        (&mut *v, &a.bv, v_w),
    ] {
        if let Some(b) = bias {
            m.chunks_exact_mut(width)
                .for_each(|row| add_inplace(row, b));
        }
    }
    // The norm spans what its weights span: one head (Qwen3, GLM-4.5) or all heads of the
    // token (MiniMax-M2); the binding checked the widths.
    if let Some(qn) = &a.q_norm {
        q.chunks_exact_mut(qn.len())
            .for_each(|h| rms_norm_inplace(h, qn, c.rms_eps));
    }
    if let Some(kn) = &a.k_norm {
        k.chunks_exact_mut(kn.len())
            .for_each(|h| rms_norm_inplace(h, kn, c.rms_eps));
    }
    // Rotate q and k.
    let rope_cache = buf(&mut s.rope_cache, c.rope.n_dims);
    for (t, &(_, pos)) in batch.rows.iter().enumerate() {
        c.rope.cache(pos as i32, None, rope_cache);
        rope_heads(
            &mut q[t * q_w..(t + 1) * q_w],
            hd,
            0,
            rope_cache,
            c.rope.mode,
        );
        rope_heads(
            &mut k[t * k_w..(t + 1) * k_w],
            hd,
            0,
            rope_cache,
            c.rope.mode,
        );
    }

    let shape = AttnShape {
        n_head: c.n_head,
        n_kv_head: c.n_head_kv,
        dk: hd,
        dv: hdv,
        k_stride: k_w,
        v_stride: v_w,
        v_offset: 0,
        k_head: hd,
        v_head: hdv,
        scale: c.kq_scale,
    };
    let opts = AttnOpts {
        window: c.window(il),
        sinks: a.sinks.as_deref(),
        origin: 0,
        int8: cx.linear.int8_attention,
    };
    let att_w = c.n_head * hdv;
    let att_out = buf(&mut s.att_out, n * att_w);
    // Per sequence: store its keys and values in its cache, then attend. A sliding
    // layer's ring takes at most RING_STEP new positions per step (see `crate::kv`).
    let mut t0 = 0;
    for seq in batch.seqs.iter_mut() {
        let m = seq.tokens.len();
        let pos0 = batch.rows[t0].1;
        let ring = seq.kv.ring(il);
        let step = match (ring, opts.window) {
            (Some(rows), Some(w)) => rows + 1 - w,
            _ => m,
        };
        for a in (0..m).step_by(step.max(1)) {
            let b = (a + step).min(m);
            for t in a..b {
                let (row, pos) = (t0 + t, pos0 + t);
                let (kr, vr) = (
                    &k[row * k_w..(row + 1) * k_w],
                    &v[row * v_w..(row + 1) * v_w],
                );
                match ring {
                    // Each position twice, so that a run of ≤ rows positions is contiguous.
                    Some(rows) => {
                        for slot in [pos % rows, pos % rows + rows] {
                            seq.kv.write_gqa(il, slot, kr, vr);
                        }
                    }
                    None => seq.kv.write_gqa(il, pos, kr, vr),
                }
            }
            // The keys the step's queries see start at `lo` (a ring: at its slot); a sliding
            // layer reads only its window, whichever cache it has.
            let first = pos0 + a;
            let lo = opts.window.map_or(0, |w| (first + 1).saturating_sub(w));
            let at = ring.map_or(lo, |rows| lo % rows);
            let (k_cache, v_cache) = seq.kv.gqa(il);
            attention_with(
                pool,
                &shape,
                AttnOpts { origin: lo, ..opts },
                &q[(t0 + a) * q_w..(t0 + b) * q_w],
                first - lo,
                k_cache.skip(at * k_w),
                v_cache.skip(at * v_w),
                &mut att_out[(t0 + a) * att_w..(t0 + b) * att_w],
                &mut s.attn,
            );
        }
        t0 += m;
    }
    cx.linear.forward(pool, &a.wo, 0, att_out, out)?;
    if let Some(bo) = &a.bo {
        out.chunks_exact_mut(c.dim)
            .for_each(|row| add_inplace(row, bo));
    }
    Ok(())
}
